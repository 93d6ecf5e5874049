//! Binds the runtime's Role to its ServiceAccount.

use crds::AgentDeployment;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::ResourceExt;

use super::metadata;

/// The RoleBinding named like the agent.
pub fn build(agent: &AgentDeployment) -> RoleBinding {
    let name = agent.name_any();
    RoleBinding {
        metadata: metadata(agent, &name),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Role".to_owned(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name,
            namespace: agent.namespace(),
            ..Default::default()
        }]),
    }
}
