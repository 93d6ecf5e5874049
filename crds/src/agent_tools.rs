//! The tools of an AgentDeployment (`spec.tools`, `spec.toolPolicy`): ToolServers
//! (MCP servers) and other agents of the namespace the model may call, and the rules
//! of the tool loop (approvals, step limit).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// One source of tools: a ToolServer (all its tools or a subset) or another agent
/// (called as one tool). Exactly one of `toolServer` and `agent` is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.toolServer) != has(self.agent)")
        .message("spec.tools[]: set exactly one of toolServer or agent")
        .reason(Reason::FieldValueInvalid),
    validation = Rule::new("!has(self.tools) || has(self.toolServer)")
        .message("spec.tools[].tools selects tools of a toolServer; an agent entry is one tool")
        .field_path(".tools")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.description) || has(self.agent)")
        .message("spec.tools[].description describes an agent entry; a toolServer's tools describe themselves")
        .field_path(".description")
        .reason(Reason::FieldValueForbidden),
)]
pub struct AgentTool {
    /// A ToolServer in the agent's namespace, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("spec.tools[].toolServer must name a ToolServer (a DNS label)").reason(Reason::FieldValueInvalid))]
    pub tool_server: Option<String>,
    /// With `toolServer`: the names of the server's tools offered to the model
    /// (unset: all of them), each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub tools: Vec<String>,
    /// Another AgentDeployment in this namespace, by name: the model may ask it
    /// (tool `ask_<name>`); the operator provisions the key it is called with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 50))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("spec.tools[].agent must name an AgentDeployment (a DNS-1035 label)").reason(Reason::FieldValueInvalid))]
    pub agent: Option<String>,
    /// With `agent`: what the other agent does, as the model reads it when choosing
    /// the tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
}

impl AgentTool {
    /// The key naming this entry among the agent's tools (`toolServer/<name>` or
    /// `agent/<name>`).
    pub fn key(&self) -> String {
        match (&self.tool_server, &self.agent) {
            (Some(server), _) => format!("toolServer/{server}"),
            (None, Some(agent)) => format!("agent/{agent}"),
            (None, None) => String::new(),
        }
    }
}

/// Rules of the tool loop.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ToolPolicySpec {
    /// Tool names (as the model sees them, e.g. `delete_ticket` or `ask_billing`)
    /// whose calls wait for a person's approval through the sessions API, each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(min = 1, max = 128)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub require_approval: Vec<String>,
    /// Model calls one turn may make while the model keeps asking for tools (1 to
    /// 50, default 8); the turn then ends with a message saying so.
    #[serde(default = "default_max_steps")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 50").message("spec.toolPolicy.maxSteps must be between 1 and 50").reason(Reason::FieldValueInvalid))]
    pub max_steps: i32,
    /// Seconds a call waits for approval before it counts as rejected (10 to
    /// 86400, default 600).
    #[serde(default = "default_approval_timeout_seconds")]
    #[x_kube(validation = Rule::new("self >= 10 && self <= 86400").message("spec.toolPolicy.approvalTimeoutSeconds must be between 10 and 86400 (a day)").reason(Reason::FieldValueInvalid))]
    pub approval_timeout_seconds: i32,
}

fn default_max_steps() -> i32 {
    8
}

fn default_approval_timeout_seconds() -> i32 {
    600
}

impl Default for ToolPolicySpec {
    fn default() -> Self {
        Self {
            require_approval: Vec::new(),
            max_steps: default_max_steps(),
            approval_timeout_seconds: default_approval_timeout_seconds(),
        }
    }
}
