//! Switchboard API types (`switchboard.dev/v1alpha1`): the `AgentDeployment`,
//! `ChatChannel` and `ToolServer` custom resources, their shared condition helpers, and the
//! configuration file the operator renders for the agent runtime. Pure types, no I/O.

pub mod agent;
pub mod agent_tools;
pub mod channel;
pub mod common;
pub mod condition;
pub mod docs;
pub mod money;
pub mod runtime_config;
pub mod tool_server;
mod upstream_schema;

pub use agent::{
    AgentDeployment, AgentDeploymentSpec, AgentDeploymentStatus, AgentTool, BudgetAction,
    BudgetSpec, DatabaseMode, ModelPricing, ModelProvider, ModelSpec, Phase, ReclaimPolicy,
    RuntimePodStatus, ToolPolicySpec, UsageStatus,
};
pub use channel::{
    ChannelType, ChatChannel, ChatChannelSpec, ChatChannelStatus, ClientKeyMode, ConnectionState,
    DiscordChannelSpec, RespondTo, SlackChannelSpec, SlackMode,
};
pub use common::{ConfigMapKeyRef, LocalObjectRef, SecretKeyRef};
pub use tool_server::{ToolServer, ToolServerSpec, ToolServerStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every Switchboard resource.
pub const GROUP: &str = "switchboard.dev";

/// Seconds between a runtime pod's looks at its own health: a report that changed
/// (ready, upstream health, counts, usage, tools) goes into `status.runtime` at the
/// next one.
pub const RUNTIME_HEARTBEAT_SECONDS: u64 = 10;

/// Seconds after which a runtime pod repeats an unchanged report, so that its time
/// says the runtime still reports. Whether the process is alive is the kubelet's
/// word (the pod's Ready condition, which its probes keep); repeating every report
/// every 10 s made 2,000 pods more status writes than a two-core API server takes.
pub const RUNTIME_REFRESH_SECONDS: u64 = 60;

/// A runtime report older than this no longer counts: the runtime is taken as no
/// longer reporting, and RuntimeReady turns False (a pod the kubelet does not count
/// Ready stops counting at once).
pub const RUNTIME_STALE_AFTER_SECONDS: u64 = 3 * RUNTIME_REFRESH_SECONDS;

/// Condition types written into `status.conditions`.
pub mod conditions {
    /// Everything the resource needs works.
    pub const READY: &str = "Ready";
    /// The agent's database exists and its credentials Secret is written.
    pub const DATABASE_READY: &str = "DatabaseReady";
    /// The runtime Deployment has its minimum of available pods.
    pub const AVAILABLE: &str = "Available";
    /// Runtime pods report themselves ready.
    pub const RUNTIME_READY: &str = "RuntimeReady";
    /// Runtime pods report that the model upstream answers.
    pub const MODEL_REACHABLE: &str = "ModelReachable";
    /// A ServiceMonitor exists (or why none could be made).
    pub const SERVICE_MONITOR_READY: &str = "ServiceMonitorReady";
    /// A channel's spec is valid and its agent exists.
    pub const ACCEPTED: &str = "Accepted";
    /// A channel's agent is Ready.
    pub const AGENT_READY: &str = "AgentReady";
    /// A `slack` or `discord` channel's connection to its platform: reason
    /// `Connected`, `Reconnecting` or `Unauthorized` (see `channel::ConnectionState`).
    pub const CONNECTED: &str = "Connected";
    /// An agent's `spec.tools` sources exist and are Ready (written by the operator;
    /// the runtime reports what its pods reach as `ToolsAvailable`).
    pub const TOOLS_READY: &str = "ToolsReady";
    /// An agent's `spec.defaultChannel` names a ChatChannel that leads to it (present
    /// only while the field is set; False with reason `ChannelNotFound` otherwise).
    pub const DEFAULT_CHANNEL: &str = "DefaultChannel";
}

/// Every CRD, in the order they are written to `config/crd`, with descriptions
/// unwrapped (see [`unwrap_descriptions`]).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    [
        AgentDeployment::crd(),
        ChatChannel::crd(),
        ToolServer::crd(),
    ]
    .into_iter()
    .map(|crd| {
        let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
        unwrap_descriptions(&mut value);
        serde_json::from_value(value).expect("a CRD deserializes")
    })
    .collect()
}

/// Doc comments are wrapped at the source's line width; `kubectl explain` wraps text
/// itself, so every `description` is joined into paragraphs (single line breaks become
/// spaces, blank lines stay).
pub fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match v {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|para| {
                                para.split('\n')
                                    .map(str::trim)
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            })
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    other => unwrap_descriptions(other),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// The YAML document for one CRD, as committed under `config/crd`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    let header =
        "# Generated by `make crds` (crds/src/bin/crdgen.rs) from the Rust types. Do not edit.\n";
    Ok(format!("{header}{}", serde_yaml::to_string(crd)?))
}

/// File name of a CRD under `config/crd`, e.g. `switchboard.dev_agentdeployments.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}
