//! `ToolServer` (short name `tsv`): an MCP server reached over Streamable HTTP
//! whose tools agents may use: its URL, the headers sent to it (values from
//! Secrets) and the time a tool call may take. Its status lists the tools the
//! server offers and says whether it answers (the operator lists them every 5
//! minutes, sooner with backoff while the server fails).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretKeyRef;

/// Desired state of a tool server: where it is and how to call it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "ToolServer",
    plural = "toolservers",
    singular = "toolserver",
    shortname = "tsv",
    category = "switchboard",
    namespaced,
    status = "ToolServerStatus",
    derive = "PartialEq",
    doc = "An MCP server (Streamable HTTP) whose tools Switchboard agents may use.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(name = "Tools", type_ = "integer", json_path = ".status.toolCount", description = "Tools the server offers"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label (lower-case letters, digits and '-') of at most 63 characters: agents name the server by it")
        .reason(Reason::FieldValueInvalid)
)]
#[serde(rename_all = "camelCase")]
pub struct ToolServerSpec {
    /// The server's MCP endpoint (Streamable HTTP), http or https, e.g.
    /// `http://search-tools.tools:8000/mcp`.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+([/?#][^\\\\s]*)?$')").message("spec.url must be an http:// or https:// URL, e.g. http://search-tools:8000/mcp").reason(Reason::FieldValueInvalid))]
    pub url: String,

    /// Headers sent with every request to the server, each value read from a Secret
    /// (e.g. `Authorization`). At most 16, names unique (case-insensitively).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(h, self.exists_one(o, o.name.lowerAscii() == h.name.lowerAscii()))").message("spec.headers: each header name may appear once (names are compared case-insensitively)").reason(Reason::FieldValueInvalid))]
    pub headers: Vec<ToolServerHeader>,

    /// Seconds one tool call may take before it counts as failed (its error goes
    /// back to the model). 1 to 600, default 30.
    #[serde(default = "default_timeout_seconds")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 600").message("spec.timeoutSeconds must be between 1 and 600").reason(Reason::FieldValueInvalid))]
    pub timeout_seconds: i32,
}

fn default_timeout_seconds() -> i32 {
    30
}

/// One header sent to the tool server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ToolServerHeader {
    /// Header name, e.g. `Authorization` or `X-Api-Key`. Headers that HTTP or MCP
    /// set themselves (`Host`, `Content-Type`, `Content-Length`, `Accept`,
    /// `Mcp-Session-Id`, `Mcp-Protocol-Version`, ...) cannot be set.
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9!#$%&\\'*+.^_`|~-]+$')").message("spec.headers[].name must be an HTTP header name (letters, digits and !#$%&'*+.^_`|~-)").reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("!(self.lowerAscii() in ['host', 'content-type', 'content-length', 'accept', 'connection', 'transfer-encoding', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id'])").message("spec.headers[].name names a header HTTP or MCP sets itself (Host, Content-Type, Content-Length, Accept, Connection, Transfer-Encoding, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID)").reason(Reason::FieldValueForbidden))]
    pub name: String,
    /// The Secret key holding the header's value (never written into the spec).
    pub value_from: SecretKeyRef,
}

/// Observed state of a tool server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ToolServerStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready: the server answered and listed its tools; False with reason
    /// `Unreachable`, `Unauthorized`, `ProtocolError`, `NoTools`, `SecretMissing` or
    /// `InvalidHeader` and the server's error (secrets scrubbed) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,
    /// The tools the server offers, as it last listed them (kept while it fails).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".to_owned()]))]
    pub tools: Vec<ToolInfo>,
    /// How many tools the server offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub tool_count: Option<i32>,
    /// When a listing last changed `tools` (or first listed them). The operator
    /// re-lists every 5 minutes but writes the status only when something changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_listed_time: Option<Time>,
}

/// One tool a server offers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolInfo {
    /// The tool's name.
    pub name: String,
    /// What it does, as the server describes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}
