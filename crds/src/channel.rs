//! `ChatChannel` (short name `chc`): one way in to an agent (a web chat, a signed
//! webhook, an OpenAI-compatible endpoint), with its own language, limits and features.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::SecretKeyRef;

/// Desired state of a channel: which agent it leads to and how it behaves.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "ChatChannel",
    plural = "chatchannels",
    singular = "chatchannel",
    shortname = "chc",
    category = "switchboard",
    namespaced,
    status = "ChatChannelStatus",
    derive = "PartialEq",
    doc = "A way in to a Switchboard agent: web chat, signed webhook or OpenAI-compatible endpoint.",
    printcolumn(name = "Agent", type_ = "string", json_path = ".spec.agentRef.name", description = "The AgentDeployment this channel leads to"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS label (lower-case letters, digits and '-') of at most 63 characters: it is part of the channel's URL path")
        .reason(Reason::FieldValueInvalid)
)]
#[x_kube(
    validation = Rule::new("self.type != 'webhook' || has(self.webhook)")
        .message("spec.webhook is required when spec.type is webhook")
        .field_path(".webhook")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.webhook) || self.type == 'webhook'")
        .message("spec.webhook is only allowed when spec.type is webhook")
        .field_path(".webhook")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.web) || self.type == 'web'")
        .message("spec.web is only allowed when spec.type is web")
        .field_path(".web")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.openai) || self.type == 'openai'")
        .message("spec.openai is only allowed when spec.type is openai")
        .field_path(".openai")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct ChatChannelSpec {
    /// The AgentDeployment in this namespace that answers this channel. Cannot change
    /// after creation: make a new channel instead.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.agentRef is immutable: create a new ChatChannel to point at another agent").reason(Reason::FieldValueForbidden))]
    pub agent_ref: AgentRef,

    /// How clients reach the agent: `web` (browser chat), `webhook` (signed HTTP
    /// callbacks) or `openai` (an OpenAI-compatible endpoint for SDKs and chat UIs).
    #[serde(rename = "type")]
    pub type_: ChannelType,

    /// A disabled channel refuses new messages with 503 and keeps its history.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// BCP 47 language tag of the channel (e.g. `en`, `de`, `pt-BR`); picks the
    /// agent's fallback response.
    #[serde(default = "default_language")]
    #[schemars(length(max = 35))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$')").message("spec.language must be a BCP 47 language tag such as en, de or pt-BR").reason(Reason::FieldValueInvalid))]
    pub language: String,

    /// First message shown to a new session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub greeting: Option<String>,

    /// Limits for this channel, on top of the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<ChannelRateLimit>,

    /// What clients of this channel may use.
    #[serde(default)]
    pub features: ChannelFeatures,

    /// Browser origins allowed to call this channel (CORS), e.g.
    /// `https://chat.example.com`; `*` allows any. Empty: same-origin only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 512)))]
    #[x_kube(validation = Rule::new("self.all(o, o == '*' || (o.size() <= 512 && o.matches('^https?://[^/?#\\\\s]+$')))").message("spec.allowedOrigins entries must be '*' or an origin such as https://chat.example.com (scheme and host, no path)").reason(Reason::FieldValueInvalid))]
    pub allowed_origins: Vec<String>,

    /// Settings of a `web` channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebChannelSpec>,

    /// Settings of a `webhook` channel (required for that type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookChannelSpec>,

    /// Settings of an `openai` channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai: Option<OpenAiChannelSpec>,

    /// Which bearer key opens this channel's routes: `Agent` (default) the agent's
    /// client key; `Channel` a key of its own, in a Secret the operator creates
    /// (named in `status.clientKeySecret`); the agent key then no longer opens it,
    /// and its sessions are visible only through it.
    #[serde(default)]
    pub client_key: ClientKeyMode,
}

/// Which key opens a channel.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClientKeyMode {
    /// The agent's client key.
    #[default]
    Agent,
    /// A key of the channel's own.
    Channel,
}

fn default_true() -> bool {
    true
}

fn default_language() -> String {
    "en".to_owned()
}

/// Reference to the agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentRef {
    /// Name of the AgentDeployment in the channel's namespace.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.agentRef.name must not be empty").reason(Reason::FieldValueRequired))]
    pub name: String,
}

/// Channel types.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelType {
    /// Browser chat (served by the agent's web chat page and sessions API).
    #[default]
    Web,
    /// Signed inbound HTTP messages, answers delivered to a callback URL.
    Webhook,
    /// OpenAI-compatible `/v1/chat/completions`.
    Openai,
}

impl ChannelType {
    /// The wire name used in manifests and URL paths.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Web => "web",
            ChannelType::Webhook => "webhook",
            ChannelType::Openai => "openai",
        }
    }
}

/// Per-channel limits. Every limit set must be positive.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRateLimit {
    /// Requests the whole channel accepts per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("rateLimit.requestsPerMinute must be positive").reason(Reason::FieldValueInvalid))]
    pub requests_per_minute: Option<i32>,
    /// Requests one user may make per minute on this channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("rateLimit.requestsPerMinutePerUser must be positive").reason(Reason::FieldValueInvalid))]
    pub requests_per_minute_per_user: Option<i32>,
}

/// Feature switches.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelFeatures {
    /// Clients may list and reopen earlier sessions.
    #[serde(default = "default_true")]
    pub history: bool,
    /// Clients may search their sessions.
    #[serde(default = "default_true")]
    pub search: bool,
    /// Answers may stream (SSE).
    #[serde(default = "default_true")]
    pub streaming: bool,
}

impl Default for ChannelFeatures {
    fn default() -> Self {
        Self {
            history: true,
            search: true,
            streaming: true,
        }
    }
}

/// Web chat settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebChannelSpec {
    /// Title shown above the chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 200))]
    pub title: Option<String>,
    /// Who the visitor is: anonymous (a signed cookie) unless an auth proxy
    /// in front names the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<WebAuthSpec>,
}

/// Web chat identity behind an auth proxy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebAuthSpec {
    /// Header set by the auth proxy (oauth2-proxy style, e.g.
    /// `x-forwarded-user`) naming the user; requests without it are refused
    /// and no visitor cookie is issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub trusted_header: Option<String>,
}

/// Webhook settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookChannelSpec {
    /// Where answers are POSTed (http or https).
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+([/?#][^\\\\s]*)?$')").message("spec.webhook.callbackUrl must be an http:// or https:// URL").reason(Reason::FieldValueInvalid))]
    pub callback_url: String,
    /// Secret key with the HMAC-SHA256 signing key for inbound and outbound messages.
    pub signing_secret_ref: SecretKeyRef,
    /// How old (in seconds) a signed timestamp may be before the message counts as a
    /// replay. 1 to 3600, default 300.
    #[serde(default = "default_tolerance")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 3600").message("spec.webhook.timestampToleranceSeconds must be between 1 and 3600").reason(Reason::FieldValueInvalid))]
    pub timestamp_tolerance_seconds: i32,
}

fn default_tolerance() -> i32 {
    300
}

/// OpenAI-compatible endpoint settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenAiChannelSpec {
    /// Model id this channel lists in `/v1/models`, accepts in `model` and echoes in
    /// answers (defaults to the agent's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub model_alias: Option<String>,
}

/// Observed state of a channel.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChatChannelStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, AgentReady and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".to_owned()]))]
    pub conditions: Vec<Condition>,
    /// URL of this channel: the agent's endpoint plus the channel's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret with this channel's own client key (key `api-key`), when
    /// `spec.clientKey` is `Channel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_secret: Option<String>,
    /// Activity per runtime pod, written by the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["pod".to_owned()]))]
    pub activity: Vec<ChannelActivity>,
}

/// What one runtime pod saw on this channel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelActivity {
    /// Pod name.
    pub pod: String,
    /// Messages received on this channel since the pod started.
    #[serde(default)]
    pub messages_total: i64,
    /// Sessions of this channel active within the idle timeout.
    #[serde(default)]
    pub active_sessions: i64,
    /// When the last message arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_time: Option<Time>,
}
