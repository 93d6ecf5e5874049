//! `ChatChannel` (short name `chc`): one way in to an agent (a web chat, a signed
//! webhook, an OpenAI-compatible endpoint, a Slack app or a Discord bot), with its own
//! language, limits and features.

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
    doc = "A way in to a Switchboard agent: web chat, signed webhook, OpenAI-compatible endpoint, Slack app or Discord bot.",
    printcolumn(name = "Agent", type_ = "string", json_path = ".spec.agentRef.name", description = "The AgentDeployment this channel leads to"),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Connected", type_ = "string", json_path = ".status.conditions[?(@.type==\"Connected\")].reason", description = "slack and discord channels: Connected, Reconnecting or Unauthorized, as the runtime pod holding the connection reports it"),
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
    validation = Rule::new("self.type != 'slack' || has(self.slack)")
        .message("spec.slack is required when spec.type is slack")
        .field_path(".slack")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.slack) || self.type == 'slack'")
        .message("spec.slack is only allowed when spec.type is slack")
        .field_path(".slack")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("self.type != 'discord' || has(self.discord)")
        .message("spec.discord is required when spec.type is discord")
        .field_path(".discord")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.discord) || self.type == 'discord'")
        .message("spec.discord is only allowed when spec.type is discord")
        .field_path(".discord")
        .reason(Reason::FieldValueForbidden),
)]
#[serde(rename_all = "camelCase")]
pub struct ChatChannelSpec {
    /// The AgentDeployment in this namespace that answers this channel. Cannot change
    /// after creation: make a new channel instead.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.agentRef is immutable: create a new ChatChannel to point at another agent").reason(Reason::FieldValueForbidden))]
    pub agent_ref: AgentRef,

    /// How clients reach the agent: `web` (browser chat), `webhook` (signed HTTP
    /// callbacks), `openai` (an OpenAI-compatible endpoint for SDKs and chat UIs),
    /// `slack` (a Slack app) or `discord` (a Discord bot).
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

    /// Settings of a `slack` channel (required for that type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackChannelSpec>,

    /// Settings of a `discord` channel (required for that type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordChannelSpec>,

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
    /// Name of the AgentDeployment in the channel's namespace (an agent's name: a
    /// DNS-1035 label of at most 50 characters).
    #[schemars(length(max = 50))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("spec.agentRef.name must not be empty").reason(Reason::FieldValueRequired))]
    #[x_kube(validation = Rule::new("self.size() == 0 || self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("spec.agentRef.name must name an AgentDeployment: a DNS-1035 label (lower-case letters, digits and '-', starting with a letter) of at most 50 characters").reason(Reason::FieldValueInvalid))]
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
    /// A Slack app: Events API or Socket Mode in, `chat.postMessage` out.
    Slack,
    /// A Discord bot: Gateway messages and the Interactions endpoint in, REST out.
    Discord,
}

impl ChannelType {
    /// The wire name used in manifests and URL paths.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelType::Web => "web",
            ChannelType::Webhook => "webhook",
            ChannelType::Openai => "openai",
            ChannelType::Slack => "slack",
            ChannelType::Discord => "discord",
        }
    }
}

/// Per-channel limits. Every limit set must be positive.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRateLimit {
    /// Requests the whole channel accepts per minute (1 to 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self > 0").message("rateLimit.requestsPerMinute must be positive").reason(Reason::FieldValueInvalid),
        validation = Rule::new("self <= 1000000").message("rateLimit.requestsPerMinute must be at most 1000000").reason(Reason::FieldValueInvalid),
    )]
    pub requests_per_minute: Option<i32>,
    /// Requests one user may make per minute on this channel (1 to 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self > 0").message("rateLimit.requestsPerMinutePerUser must be positive").reason(Reason::FieldValueInvalid),
        validation = Rule::new("self <= 1000000").message("rateLimit.requestsPerMinutePerUser must be at most 1000000").reason(Reason::FieldValueInvalid),
    )]
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
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebAuthSpec {
    /// Header set by the auth proxy (oauth2-proxy style, e.g.
    /// `x-forwarded-user`) naming the user; requests without it are refused
    /// and no visitor cookie is issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9!#$%&\\'*+.^_`|~-]+$')").message("spec.web.auth.trustedHeader must be an HTTP header name (letters, digits and !#$%&'*+.^_`|~-), e.g. X-Forwarded-User").reason(Reason::FieldValueInvalid))]
    pub trusted_header: Option<String>,
}

/// Webhook settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookChannelSpec {
    /// Where answers are POSTed (http or https).
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#\\\\s]+([/?#][^\\\\s]*)?$')").message("spec.webhook.callbackUrl must be an http:// or https:// URL").reason(Reason::FieldValueInvalid))]
    #[x_kube(validation = Rule::new("!self.matches('(?i)^https?://([^/?#@]*@)?(169[.]254[.]|0[.]0[.]0[.]0([:/?#]|$)|\\\\[(fe[89ab][0-9a-fA-F]:|fd00:ec2::254\\\\]|::\\\\]|::ffff:169[.]254[.]))')").message("spec.webhook.callbackUrl must not be a link-local address (169.254.0.0/16, fe80::/10, fd00:ec2::254: where clouds serve instance metadata)").reason(Reason::FieldValueForbidden))]
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

/// How a Slack app receives events.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SlackMode {
    /// Slack POSTs signed events to the channel's endpoint (needs a public HTTPS URL).
    #[default]
    EventsApi,
    /// The runtime opens a websocket to Slack with an app-level token (`xapp-`); no
    /// public endpoint needed.
    SocketMode,
}

/// Which messages a bot answers in the channels it serves.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RespondTo {
    /// Only messages that mention the bot (and replies in threads it answered).
    #[default]
    Mentions,
    /// Every message in the channels served.
    AllMessages,
}

/// Slack app settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.mode != 'SocketMode' || has(self.appTokenRef)")
        .message("spec.slack.appTokenRef is required when spec.slack.mode is SocketMode")
        .field_path(".appTokenRef")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.appTokenRef) || self.mode == 'SocketMode'")
        .message("spec.slack.appTokenRef is only allowed when spec.slack.mode is SocketMode")
        .field_path(".appTokenRef")
        .reason(Reason::FieldValueForbidden),
    validation = Rule::new("self.mode != 'EventsApi' || has(self.signingSecretRef)")
        .message("spec.slack.signingSecretRef is required when spec.slack.mode is EventsApi")
        .field_path(".signingSecretRef")
        .reason(Reason::FieldValueRequired),
)]
pub struct SlackChannelSpec {
    /// `EventsApi` (Slack POSTs to the channel's endpoint, default) or `SocketMode`
    /// (the runtime connects out to Slack; needs `appTokenRef`).
    #[serde(default)]
    pub mode: SlackMode,
    /// Secret key with the bot token (`xoxb-...`) used for `chat.postMessage`.
    pub bot_token_ref: SecretKeyRef,
    /// Secret key with the app's signing secret, which verifies the Events API's
    /// request signatures (v0). Required in `EventsApi` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeyRef>,
    /// Secret key with the app-level token (`xapp-...`, scope `connections:write`).
    /// Required in, and only allowed in, `SocketMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_token_ref: Option<SecretKeyRef>,
    /// The Slack workspace (team id, e.g. `T0123ABCD`) this app serves; events of other
    /// workspaces are refused. Unset: whatever workspace the tokens belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^T[A-Z0-9]{8,30}$')").message("spec.slack.teamId must be a Slack team id such as T0123ABCD").reason(Reason::FieldValueInvalid))]
    pub team_id: Option<String>,
    /// Conversation ids (e.g. `C0123ABCD`) the app answers in. Empty: every channel it
    /// is a member of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500), inner(length(max = 32)))]
    #[x_kube(validation = Rule::new("self.all(id, id.matches('^[CG][A-Z0-9]{8,30}$'))").message("spec.slack.channelIds entries must be Slack channel ids such as C0123ABCD").reason(Reason::FieldValueInvalid))]
    pub channel_ids: Vec<String>,
    /// In channels: `Mentions` (only `app_mention` events, default) or `AllMessages`.
    #[serde(default)]
    pub respond_to: RespondTo,
    /// Answer every message sent to the app in a direct message (default true).
    #[serde(default = "default_true")]
    pub direct_messages: bool,
}

/// Discord bot settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.publicKey) && has(self.publicKeyRef))")
        .message("spec.discord.publicKey and spec.discord.publicKeyRef are mutually exclusive: set one")
        .field_path(".publicKeyRef")
        .reason(Reason::FieldValueForbidden),
)]
pub struct DiscordChannelSpec {
    /// Secret key with the bot token, used for the Gateway and the REST API.
    pub bot_token_ref: SecretKeyRef,
    /// The application's id (a snowflake, e.g. `1234567890123456789`), from the
    /// developer portal. With a public key, the pod holding the bot's Gateway
    /// connection registers `slashCommand` for this application, and answers arrive
    /// through the interaction's follow-up webhook.
    #[schemars(length(max = 20))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{17,20}$')").message("spec.discord.applicationId must be a Discord snowflake id of 17 to 20 digits").reason(Reason::FieldValueInvalid))]
    pub application_id: String,
    /// The application's Ed25519 public key (64 hex digits) that verifies requests to
    /// the Interactions endpoint (`POST <endpoint>/discord/interactions`, the
    /// application's Interactions Endpoint URL; a bad signature is refused with 401).
    /// Set this or `publicKeyRef` to serve the slash command; neither: no
    /// Interactions endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{64}$')").message("spec.discord.publicKey must be 64 hexadecimal digits (the application's Ed25519 public key)").reason(Reason::FieldValueInvalid))]
    pub public_key: Option<String>,
    /// The public key from a Secret key instead of `publicKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_ref: Option<SecretKeyRef>,
    /// Guild (server) ids served. Empty: every guild the bot is in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500), inner(length(max = 20)))]
    #[x_kube(validation = Rule::new("self.all(id, id.matches('^[0-9]{17,20}$'))").message("spec.discord.guildIds entries must be Discord snowflake ids of 17 to 20 digits").reason(Reason::FieldValueInvalid))]
    pub guild_ids: Vec<String>,
    /// Channel (or thread) ids served. Empty: every channel of the guilds served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 500), inner(length(max = 20)))]
    #[x_kube(validation = Rule::new("self.all(id, id.matches('^[0-9]{17,20}$'))").message("spec.discord.channelIds entries must be Discord snowflake ids of 17 to 20 digits").reason(Reason::FieldValueInvalid))]
    pub channel_ids: Vec<String>,
    /// In guild channels: `Mentions` (default) or `AllMessages` (needs the privileged
    /// Message Content intent).
    #[serde(default)]
    pub respond_to: RespondTo,
    /// Answer direct messages to the bot (default true).
    #[serde(default = "default_true")]
    pub direct_messages: bool,
    /// Name of the slash command answered through the Interactions endpoint (default
    /// `ask`): 1 to 32 lower-case letters, digits, `-` or `_`. Registered with one
    /// required string option, `question`, in each of `guildIds` (globally when none
    /// are listed); answered deferred, then with the agent's answer.
    #[serde(default = "default_slash_command")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^[-_a-z0-9]{1,32}$')").message("spec.discord.slashCommand must be 1 to 32 lower-case letters, digits, '-' or '_'").reason(Reason::FieldValueInvalid))]
    pub slash_command: String,
}

fn default_slash_command() -> String {
    "ask".to_owned()
}

/// Connection state of a `slack` or `discord` channel, reported by the runtime pod that
/// holds the connection as the `Connected` condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// The platform accepted the bot's credentials and events flow (`True`).
    Connected,
    /// The connection dropped or the platform is unreachable; retrying (`False`).
    Reconnecting,
    /// The platform refused the credentials (`False`; the message carries the
    /// platform's own words, never the token).
    Unauthorized,
}

impl ConnectionState {
    /// The condition's `status`.
    pub fn status(self) -> &'static str {
        match self {
            ConnectionState::Connected => crate::condition::TRUE,
            ConnectionState::Reconnecting | ConnectionState::Unauthorized => {
                crate::condition::FALSE
            }
        }
    }

    /// The condition's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            ConnectionState::Connected => "Connected",
            ConnectionState::Reconnecting => "Reconnecting",
            ConnectionState::Unauthorized => "Unauthorized",
        }
    }

    /// The `Connected` condition for this state.
    pub fn condition(
        self,
        message: impl Into<String>,
        observed_generation: Option<i64>,
    ) -> Condition {
        crate::condition::new_condition(
            crate::conditions::CONNECTED,
            self.status(),
            self.reason(),
            message,
            observed_generation,
        )
    }
}

/// Observed state of a channel.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChatChannelStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, AgentReady and Ready; `Connected` on `slack` and `discord` channels
    /// (see [`ConnectionState`]).
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
