//! Build: an AgentDeployment spec (plus what the dereference step read) in, every
//! desired child out, as typed k8s-openapi objects. Pure and infallible: no I/O, no
//! randomness (generated values come in through [`BuildInputs`]); one file per child.

pub mod api_key_secret;
pub mod config_map;
pub mod database_secret;
pub mod deployment;
pub mod role;
pub mod role_binding;
pub mod service;
pub mod service_account;
pub mod service_monitor;

use crds::AgentDeployment;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use self::service_monitor::ServiceMonitor;
use crate::names;

/// What the builders need besides the spec: results of the dereference step, values
/// generated for objects created once, and the operator's configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildInputs {
    /// Image used when the spec sets none.
    pub default_image: String,
    /// Pull policy of the runtime container (`--runtime-image-pull-policy`).
    pub image_pull_policy: String,
    /// Secrets the runtime pods pull their image with (`--runtime-image-pull-secrets`).
    pub image_pull_secrets: Vec<String>,
    /// The rendered runtime configuration file (see [`config_map::runtime_config`]).
    pub runtime_config: String,
    /// Where the runtime's database URL lives.
    pub database_url: SecretKey,
    /// Whether to build a ServiceMonitor (enabled in the spec and the CRD is served).
    pub service_monitor: bool,
    /// Names of the ChatChannels that lead to this agent (the runtime reports their
    /// activity into their status).
    pub channels: Vec<String>,
    /// Secrets holding those channels' webhook signing keys (the runtime reads them).
    pub signing_secrets: Vec<String>,
    /// The client API key written if its Secret does not exist yet (an existing
    /// Secret is never rewritten).
    pub new_api_key: String,
    /// The admin key written if its Secret does not exist yet.
    pub new_admin_key: String,
    /// The agent's channels opened by a key of their own (`spec.clientKey:
    /// Channel`), sorted by name.
    pub own_key_channels: Vec<OwnKeyChannel>,
    /// Env vars the pods read for `spec.tools` (header values, agent-call keys).
    pub tool_env: Vec<crate::agent::tools::ToolEnv>,
    /// The agents this one calls (`spec.tools[].agent`), each with the key written
    /// if its Secret does not exist yet, sorted by name.
    pub agent_keys: Vec<AgentKey>,
    /// The agents of the namespace that call this one, sorted: their keys become
    /// files `agent.<caller>` in the keys volume.
    pub callers: Vec<String>,
}

/// The key this agent calls another one with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentKey {
    /// The agent called.
    pub callee: String,
    /// The key written if its Secret does not exist yet.
    pub new_key: String,
}

/// A channel with a key of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnKeyChannel {
    /// The ChatChannel's name.
    pub name: String,
    /// Its uid (the owner of its key Secret).
    pub uid: String,
    /// The key written if its Secret does not exist yet.
    pub new_key: String,
}

/// A key of a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretKey {
    /// Secret name.
    pub name: String,
    /// Key in the Secret.
    pub key: String,
}

/// Every child the operator makes for one agent. The apply step takes it apart
/// field by field (no `..`), so a child added here must be applied there. The
/// database Secret is not here: the database step writes it before the role exists.
#[derive(Clone, Debug)]
pub struct Children {
    /// The client API key (created once, never rewritten).
    pub api_key_secret: Secret,
    /// The admin key (created once, never rewritten).
    pub admin_key_secret: Secret,
    /// The own keys of channels with `spec.clientKey: Channel` (each created once).
    pub channel_key_secrets: Vec<Secret>,
    /// The keys this agent calls other agents with (each created once).
    pub agent_key_secrets: Vec<Secret>,
    /// Identity of the runtime pods.
    pub service_account: ServiceAccount,
    /// What the runtime may do.
    pub role: Role,
    /// Binds the Role to the ServiceAccount.
    pub role_binding: RoleBinding,
    /// The rendered runtime configuration.
    pub config_map: ConfigMap,
    /// The runtime pods.
    pub deployment: Deployment,
    /// The agent's in-cluster address.
    pub service: Service,
    /// Prometheus Operator scrape config, when wanted and possible.
    pub service_monitor: Option<ServiceMonitor>,
}

/// Builds every child of `agent`.
pub fn build_children(agent: &AgentDeployment, inputs: &BuildInputs) -> Children {
    Children {
        api_key_secret: api_key_secret::build(agent, &inputs.new_api_key),
        admin_key_secret: api_key_secret::build_admin(agent, &inputs.new_admin_key),
        channel_key_secrets: inputs
            .own_key_channels
            .iter()
            .map(|c| api_key_secret::build_channel(agent, c))
            .collect(),
        agent_key_secrets: inputs
            .agent_keys
            .iter()
            .map(|k| api_key_secret::build_agent_call(agent, k))
            .collect(),
        service_account: service_account::build(agent),
        role: role::build(agent, inputs),
        role_binding: role_binding::build(agent),
        config_map: config_map::build(agent, &inputs.runtime_config),
        deployment: deployment::build(agent, inputs),
        service: service::build(agent),
        service_monitor: inputs
            .service_monitor
            .then(|| service_monitor::build(agent)),
    }
}

/// Metadata common to every child: name, namespace, labels, owner reference.
pub fn metadata(agent: &AgentDeployment, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: agent.namespace(),
        labels: Some(names::labels(&agent.name_any())),
        owner_references: Some(vec![owner_reference(agent)]),
        ..Default::default()
    }
}

/// The controller owner reference pointing at `agent`.
pub fn owner_reference(agent: &AgentDeployment) -> OwnerReference {
    OwnerReference {
        api_version: AgentDeployment::api_version(&()).into_owned(),
        kind: AgentDeployment::kind(&()).into_owned(),
        name: agent.name_any(),
        uid: agent.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `words` as owned strings.
fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|&w| w.to_owned()).collect()
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! The YAML fixtures and inputs the builder tests share.

    use super::*;

    fn fixture(text: &str) -> AgentDeployment {
        serde_yaml::from_str(text).expect("fixture parses as an AgentDeployment")
    }

    pub fn full() -> AgentDeployment {
        fixture(include_str!("../../../fixtures/agent-full.yaml"))
    }

    pub fn minimal() -> AgentDeployment {
        fixture(include_str!("../../../fixtures/agent-minimal.yaml"))
    }

    pub fn inputs_for(agent: &AgentDeployment, service_monitor: bool) -> BuildInputs {
        BuildInputs {
            default_image: "registry.local/agent-runtime:1.0".to_owned(),
            image_pull_policy: "IfNotPresent".to_owned(),
            image_pull_secrets: Vec::new(),
            runtime_config: config_map::runtime_config(agent, None, Default::default())
                .to_yaml()
                .expect("renders"),
            database_url: SecretKey {
                name: "support-db".to_owned(),
                key: "uri".to_owned(),
            },
            service_monitor,
            channels: Vec::new(),
            signing_secrets: Vec::new(),
            new_api_key: "sb-key".to_owned(),
            new_admin_key: "sb-admin".to_owned(),
            own_key_channels: Vec::new(),
            tool_env: Vec::new(),
            agent_keys: Vec::new(),
            callers: Vec::new(),
        }
    }

    pub fn inputs(service_monitor: bool) -> BuildInputs {
        inputs_for(&full(), service_monitor)
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn every_child_is_owned_by_the_agent_and_labelled() {
        let agent = full();
        let children = build_children(&agent, &inputs(true));
        let Children {
            api_key_secret,
            admin_key_secret,
            channel_key_secrets,
            agent_key_secrets,
            service_account,
            role,
            role_binding,
            config_map,
            deployment,
            service,
            service_monitor,
        } = &children;
        assert!(channel_key_secrets.is_empty());
        assert!(agent_key_secrets.is_empty());
        let metas = [
            &api_key_secret.metadata,
            &admin_key_secret.metadata,
            &service_account.metadata,
            &role.metadata,
            &role_binding.metadata,
            &config_map.metadata,
            &deployment.metadata,
            &service.metadata,
            &service_monitor.as_ref().unwrap().metadata,
        ];
        for meta in metas {
            let owners = meta.owner_references.as_ref().expect("owner references");
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "AgentDeployment");
            assert_eq!(owners[0].uid, "6f1c2f4e-0000-4000-8000-000000000001");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("tenant-a"));
            assert_eq!(
                meta.labels.as_ref().unwrap()[names::MANAGED_BY_LABEL],
                names::MANAGED_BY
            );
        }
    }

    #[test]
    fn the_service_monitor_is_built_only_when_wanted_and_possible() {
        assert!(
            build_children(&full(), &inputs(false))
                .service_monitor
                .is_none()
        );
        assert!(
            build_children(&full(), &inputs(true))
                .service_monitor
                .is_some()
        );
    }
}
