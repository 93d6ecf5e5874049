//! The runtime pods' ServiceAccount.

use crds::AgentDeployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt;

use super::metadata;

/// The ServiceAccount named like the agent.
pub fn build(agent: &AgentDeployment) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(agent, &agent.name_any()),
        ..Default::default()
    }
}
