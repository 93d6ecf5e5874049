//! The configuration file the operator renders for each agent runtime pod.
//!
//! The operator writes this as YAML into a ConfigMap and the runtime reads it at
//! start (`agent-runtime --config agent.yaml`). It never holds a secret: every
//! credential is named by the environment variable that carries it. Every field
//! has a default so a two-line file runs standalone, and unknown fields are
//! ignored so an older runtime accepts a newer operator's file.

use std::collections::BTreeMap;

// The same types as in the resources, so the rendered file and the spec cannot drift.
pub use crate::agent::{BudgetAction, ModelProvider};
pub use crate::channel::{ChannelFeatures, ChannelType, ClientKeyMode};
pub use crate::money::Micros;

use serde::{Deserialize, Serialize};

/// File in `auth.keysDir` holding the agent's client key.
pub const KEY_FILE_CLIENT: &str = "client";
/// File in `auth.keysDir` holding the admin key.
pub const KEY_FILE_ADMIN: &str = "admin";
/// Prefix of the files in `auth.keysDir` holding channel keys.
pub const KEY_FILE_CHANNEL_PREFIX: &str = "channel.";
/// Prefix of the files in `auth.keysDir` holding the keys other agents of the
/// namespace use to call this one as a tool (`agent.<caller>`).
pub const KEY_FILE_AGENT_PREFIX: &str = "agent.";

/// File in `auth.keysDir` holding channel `name`'s own key.
pub fn channel_key_file(name: &str) -> String {
    format!("{KEY_FILE_CHANNEL_PREFIX}{name}")
}

/// The whole runtime configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct RuntimeConfig {
    /// Which agent this runtime serves.
    pub agent: AgentIdentity,
    /// The primary model.
    pub model: ModelConfig,
    /// Further models tried in order when the primary fails.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<ModelConfig>,
    /// System prompt sent first on every upstream call (never stored per session).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Context window management.
    pub context: ContextConfig,
    /// Where conversations are stored.
    pub database: DatabaseConfig,
    /// Client authentication.
    pub auth: AuthConfig,
    /// Session lifecycle.
    pub sessions: SessionsConfig,
    /// Rate limits; absent means unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
    /// Message answered when every model failed, by language tag (`en`, `de`,
    /// `pt-BR`, ...). A `default` entry is used when no tag matches.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub fallback_responses: BTreeMap<String, String>,
    /// The ChatChannels pointing at this agent. Empty means every channel is served
    /// with every feature on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelConfig>,
    /// The channel the root routes (`/v1/...`, `/api/...`) belong to. Unset with
    /// channels declared (listed here or watched in a cluster): the root routes
    /// answer 404 naming the channel routes. Unset with none declared (standalone):
    /// the root routes serve one open channel, `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_channel: Option<String>,
    /// HTTP server settings.
    pub server: ServerConfig,
    /// Request and message size limits.
    pub limits: LimitsConfig,
    /// A monthly spending limit (needs prices on the models); absent means none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
    /// Server-side tools (MCP servers and other agents) the runtime offers the
    /// model and calls itself; empty means none.
    #[serde(skip_serializing_if = "ToolsConfig::is_empty")]
    pub tools: ToolsConfig,
}

/// Server-side tools: where they are and the rules for the tool loop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ToolsConfig {
    /// The sources of tools, in the order the AgentDeployment lists them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<ToolSourceConfig>,
    /// Tool names (as the model sees them) whose calls wait for a person's approval.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub require_approval: Vec<String>,
    /// Model calls one turn may make while it keeps asking for tools; the turn then
    /// ends with a final message saying so.
    pub max_steps: u32,
    /// Seconds a call waiting for approval waits before it counts as rejected.
    pub approval_timeout_seconds: u64,
}

impl ToolsConfig {
    /// No tool sources and no approvals: the section is left out of the file.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.require_approval.is_empty()
    }
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            require_approval: Vec::new(),
            max_steps: 8,
            approval_timeout_seconds: 600,
        }
    }
}

/// Which kind of thing offers tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ToolSourceKind {
    /// An MCP server over Streamable HTTP (a `ToolServer`).
    #[default]
    Mcp,
    /// Another agent, called as one tool through its OpenAI-compatible route.
    Agent,
}

/// One source of tools.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ToolSourceConfig {
    /// The ToolServer's or the AgentDeployment's name.
    pub name: String,
    /// MCP server or agent.
    pub kind: ToolSourceKind,
    /// The MCP endpoint, or the agent's base URL (its Service, e.g.
    /// `http://helper.team-a.svc:8080`).
    pub url: String,
    /// Headers sent with every request, each value read from an environment variable.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ToolHeaderConfig>,
    /// Seconds one tool call may take before it fails (its error goes to the model).
    pub timeout_seconds: u64,
    /// The subset of the server's tools offered to the model; empty offers all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// For an agent: what the tool does, as the model reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// For an agent: the environment variable holding the key that opens the other
    /// agent's agent-call route (provisioned by the operator for this pair).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
}

/// One header sent to a tool source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct ToolHeaderConfig {
    /// Header name.
    pub name: String,
    /// Environment variable holding the value (a secret: never logged).
    pub value_env: String,
}

/// What a model costs per million tokens; amounts are exact decimals (`"0.15"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PricingConfig {
    /// Price of one million prompt tokens.
    pub input_per_million_tokens: Micros,
    /// Price of one million generated tokens.
    pub output_per_million_tokens: Micros,
    /// ISO 4217 code, e.g. `USD`.
    #[serde(default = "default_currency")]
    pub currency: String,
}

fn default_currency() -> String {
    "USD".to_owned()
}

/// A monthly spending limit, in the models' pricing currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetConfig {
    /// Spend allowed per calendar month (UTC).
    pub monthly: Micros,
    /// What turns get once it is spent.
    #[serde(default)]
    pub when_spent: BudgetAction,
}

/// Which agent this runtime serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentIdentity {
    /// The AgentDeployment's name.
    pub name: String,
    /// The AgentDeployment's namespace; absent when run standalone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Default for AgentIdentity {
    fn default() -> Self {
        Self {
            name: "agent".to_owned(),
            namespace: None,
        }
    }
}

/// One model: the primary or a fallback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ModelConfig {
    /// Wire protocol.
    pub provider: ModelProvider,
    /// Model name sent upstream, e.g. `gpt-4o-mini` or `claude-sonnet-4-5`.
    pub name: String,
    /// Base URL; defaults per provider (OpenAI: `https://api.openai.com/v1`,
    /// Anthropic: `https://api.anthropic.com`). For OpenAI-compatible servers it
    /// ends before `/chat/completions`, e.g. `http://vllm:8000/v1`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the upstream API key (the key
    /// itself never appears in this file). Absent: no key is sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Sampling temperature.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling (`top_p`) unless the request sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Maximum tokens in one answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Timeout in seconds for the upstream to start answering, and for each gap
    /// between streamed chunks.
    pub timeout_seconds: u64,
    /// What the model costs; absent: its tokens cost nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pricing: Option<PricingConfig>,
    /// Whether the model accepts image content parts (absent: true). A prompt with
    /// an image skips a model that does not; none accepting is a 400.
    #[serde(skip_serializing_if = "is_true")]
    pub accepts_images: bool,
    /// Speak HTTP/2 to a plain-text (`http://`) upstream without asking first
    /// (h2c with prior knowledge): every call to the model shares one
    /// connection. Only for upstreams that serve h2c; `https://` upstreams
    /// negotiate HTTP/2 by themselves (ALPN), whatever this says.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub http2_prior_knowledge: bool,
}

fn is_true(value: &bool) -> bool {
    *value
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            provider: ModelProvider::Openai,
            name: "gpt-4o-mini".to_owned(),
            base_url: None,
            api_key_env: None,
            temperature: None,
            top_p: None,
            max_output_tokens: None,
            timeout_seconds: 60,
            pricing: None,
            accepts_images: true,
            http2_prior_knowledge: false,
        }
    }
}

impl ModelConfig {
    /// The configured base URL, or the provider's default, without a trailing `/`.
    pub fn effective_base_url(&self) -> String {
        self.base_url
            .as_deref()
            .unwrap_or(self.provider.default_base_url())
            .trim_end_matches('/')
            .to_owned()
    }
}

/// Context window management.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContextConfig {
    /// Upper bound, in tokens, of the prompt sent upstream (system prompt plus
    /// history). The oldest turns are dropped first; the system prompt and the
    /// newest turn are always kept.
    pub max_tokens: u32,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self { max_tokens: 8192 }
    }
}

/// Where conversations are stored. `urlEnv` wins when the variable it names is
/// set; otherwise SQLite at `sqlitePath`, or `switchboard.db` in the working
/// directory. `sqlitePath: ":memory:"` keeps everything in memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct DatabaseConfig {
    /// Name of the environment variable holding a Postgres URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_env: Option<String>,
    /// SQLite file path (or `:memory:`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlite_path: Option<String>,
}

/// Client authentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthConfig {
    /// Name of the environment variable holding the tenant's client API key,
    /// expected as `Authorization: Bearer <key>`. When the variable is unset the
    /// runtime runs open (standalone use) and says so in its log.
    pub api_key_env: String,
    /// Trusted header naming the end user (set by a gateway or the web channel).
    /// Without it the OpenAI `user` field is used, then `anonymous`.
    pub user_header: String,
    /// Name of the environment variable holding the admin key for `/api/admin/*`.
    /// Unset (and no `admin` file in `keysDir`): admin routes are refused unless
    /// the runtime runs open (no client key either).
    pub admin_key_env: String,
    /// Directory of key files, re-read every `keysReloadSeconds` (a mounted
    /// Secret volume in a cluster): `client` (the agent key, wins over
    /// `apiKeyEnv`), `admin`, and `channel.<name>` for each channel with a key of
    /// its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_dir: Option<String>,
    /// How often the key files are re-read, in seconds.
    pub keys_reload_seconds: u64,
    /// Seconds a replaced key keeps working after its file changes.
    pub key_rotation_grace_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            api_key_env: "SWITCHBOARD_API_KEY".to_owned(),
            user_header: "x-switchboard-user".to_owned(),
            admin_key_env: "SWITCHBOARD_ADMIN_KEY".to_owned(),
            keys_dir: None,
            keys_reload_seconds: 5,
            key_rotation_grace_seconds: 3600,
        }
    }
}

/// Session lifecycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionsConfig {
    /// Minutes without a message after which a session counts as idle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_minutes: Option<u32>,
    /// Days after which sessions without activity are removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// Rate limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct RateLimitConfig {
    /// Requests per minute allowed to one user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute_per_user: Option<u32>,
    /// Tokens (in plus out) per minute allowed to the whole tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u32>,
}

/// One ChatChannel pointing at this agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ChannelConfig {
    /// The ChatChannel's name; clients select it with the `x-switchboard-channel` header.
    pub name: String,
    /// Kind of channel.
    #[serde(rename = "type")]
    pub channel_type: ChannelType,
    /// A disabled channel refuses requests.
    pub enabled: bool,
    /// Language tag used to pick a fallback response, e.g. `en`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Greeting shown when a session starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// Features served on this channel.
    pub features: ChannelFeatures,
    /// Per-channel request limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<ChannelRateLimitConfig>,
    /// Browser origins allowed to call this channel's routes (CORS); `*` allows any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Webhook settings (type `webhook` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// Web chat settings (type `web` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web: Option<WebConfig>,
    /// Model id the channel's OpenAI routes list, accept and echo (default: the
    /// agent's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_alias: Option<String>,
    /// Which key opens the channel: the agent's, or its own (`channel.<name>` in
    /// `auth.keysDir`).
    pub client_key: ClientKeyMode,
    /// Slack app settings (type `slack` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackConfig>,
    /// Discord bot settings (type `discord` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordConfig>,
}

/// A Discord channel's settings when run standalone (in a cluster they come from the
/// ChatChannel, the token from its Secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DiscordConfig {
    /// Environment variable holding the bot token.
    pub bot_token_env: String,
    /// Guild ids served; empty: every guild the bot is in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guild_ids: Vec<String>,
    /// Channel (or thread) ids served; empty: every channel of those guilds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channel_ids: Vec<String>,
    /// In guild channels: `Mentions` (default) or `AllMessages`.
    pub respond_to: crate::channel::RespondTo,
    /// Answer direct messages (default true).
    pub direct_messages: bool,
    /// The application's id: registers the slash command and answers it through
    /// the follow-up webhook.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_id: Option<String>,
    /// The application's Ed25519 public key (64 hex digits) verifying requests to
    /// the Interactions endpoint; or `publicKeyEnv`. Neither: no Interactions endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Environment variable holding the public key instead of `publicKey`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_env: Option<String>,
    /// The slash command answered (default `ask`).
    pub slash_command: String,
}

impl Default for DiscordConfig {
    fn default() -> Self {
        Self {
            bot_token_env: String::new(),
            guild_ids: Vec::new(),
            channel_ids: Vec::new(),
            respond_to: crate::channel::RespondTo::default(),
            direct_messages: true,
            application_id: None,
            public_key: None,
            public_key_env: None,
            slash_command: "ask".to_owned(),
        }
    }
}

/// A Slack channel's settings when run standalone (in a cluster they come from the
/// ChatChannel, the token and secret from its Secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SlackConfig {
    /// Environment variable holding the bot token (`xoxb-...`).
    pub bot_token_env: String,
    /// Environment variable holding the signing secret (Events API, v0 signatures);
    /// empty: no Events API endpoint.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub signing_secret_env: String,
    /// Environment variable holding the app-level token (`xapp-...`): the channel
    /// receives its events over Socket Mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_token_env: Option<String>,
    /// Only events of this workspace are answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Conversation ids answered in; empty: every channel the app is in.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channel_ids: Vec<String>,
    /// In channels: `Mentions` (default) or `AllMessages`.
    pub respond_to: crate::channel::RespondTo,
    /// Answer direct messages (default true).
    pub direct_messages: bool,
}

impl Default for SlackConfig {
    fn default() -> Self {
        Self {
            bot_token_env: String::new(),
            signing_secret_env: String::new(),
            app_token_env: None,
            team_id: None,
            channel_ids: Vec::new(),
            respond_to: crate::channel::RespondTo::default(),
            direct_messages: true,
        }
    }
}

/// A web channel's page settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebConfig {
    /// Title of the chat page (default: the channel's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Header an auth proxy sets naming the user; without it the visitor is
    /// anonymous (a signed cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_header: Option<String>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            channel_type: ChannelType::Web,
            enabled: true,
            language: None,
            greeting: None,
            features: ChannelFeatures::default(),
            rate_limit: None,
            allowed_origins: Vec::new(),
            webhook: None,
            web: None,
            model_alias: None,
            client_key: ClientKeyMode::Agent,
            slack: None,
            discord: None,
        }
    }
}

/// Per-channel request limits (requests per minute).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ChannelRateLimitConfig {
    /// Requests the whole channel accepts per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// Requests one user may make per minute on this channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute_per_user: Option<u32>,
}

/// A webhook channel's settings when run standalone (in a cluster they come from
/// the ChatChannel, the key from its signing Secret).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhookConfig {
    /// Where answers are POSTed.
    pub callback_url: String,
    /// Environment variable holding the HMAC-SHA256 signing key.
    pub signing_key_env: String,
    /// How old (seconds) a signed timestamp may be; default 300.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_tolerance_seconds: Option<u32>,
}

/// HTTP server settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ServerConfig {
    /// Socket address to listen on.
    pub listen: String,
    /// Seconds the runtime waits on a client: for a new connection's first
    /// request head (its line and headers), counted from the connection's
    /// opening, and for each next part of a request's body. A connection
    /// without a whole head by then is closed (HTTP/2: after a `GOAWAY`); a
    /// body that stalls is answered 408. Slow or silent clients so cannot hold
    /// connections open. A kept-alive connection that has served a request is
    /// not timed while idle (proxies reuse theirs). Unset:
    /// [`ServerConfig::DEFAULT_CLIENT_TIMEOUT_SECONDS`]; 0: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_timeout_seconds: Option<u64>,
}

impl ServerConfig {
    /// [`ServerConfig::client_timeout_seconds`] when unset (nginx allows 60 s
    /// for a head and between two reads of a body).
    pub const DEFAULT_CLIENT_TIMEOUT_SECONDS: u64 = 30;

    /// The client timeout in effect; `None` for no limit.
    pub fn client_timeout(&self) -> Option<std::time::Duration> {
        match self
            .client_timeout_seconds
            .unwrap_or(Self::DEFAULT_CLIENT_TIMEOUT_SECONDS)
        {
            0 => None,
            seconds => Some(std::time::Duration::from_secs(seconds)),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".to_owned(),
            client_timeout_seconds: None,
        }
    }
}

/// Request and message size limits (exceeding one is a 413 or 400 with a JSON
/// body), upstream concurrency and its queue, retries, the circuit breaker,
/// shutdown and logging knobs. Every field has a working default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LimitsConfig {
    /// Largest accepted request body, in bytes.
    pub max_request_bytes: usize,
    /// Largest accepted message content, in characters.
    pub max_message_chars: usize,
    /// Most messages accepted in one chat completion request.
    pub max_messages: usize,
    /// Model calls in flight at once; further turns wait in the queue.
    pub upstream_concurrency: usize,
    /// Turns allowed to wait for a model call slot; beyond it, 503 with Retry-After.
    pub upstream_queue: usize,
    /// Longest wait in the queue before a 503, in seconds.
    pub queue_timeout_seconds: u64,
    /// Attempts per model before the next model in the chain (1 = no retry).
    pub retry_max_attempts: u32,
    /// First retry delay in milliseconds; doubles per attempt, with jitter.
    pub retry_base_delay_ms: u64,
    /// Longest retry delay in milliseconds; a longer `Retry-After` moves on to
    /// the next model instead of waiting.
    pub retry_max_delay_ms: u64,
    /// Consecutive failed calls that open a model's circuit.
    pub circuit_failure_threshold: u32,
    /// Seconds an open circuit skips its model before one probe is let through.
    pub circuit_open_seconds: u64,
    /// Seconds streams get to finish on shutdown before they end with an error event.
    pub shutdown_grace_seconds: u64,
    /// Log message text (prompts and answers); off by default.
    pub log_message_content: bool,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 1024 * 1024,
            max_message_chars: 32 * 1024,
            max_messages: 1000,
            upstream_concurrency: 256,
            upstream_queue: 1024,
            queue_timeout_seconds: 30,
            retry_max_attempts: 3,
            retry_base_delay_ms: 200,
            retry_max_delay_ms: 5000,
            circuit_failure_threshold: 5,
            circuit_open_seconds: 30,
            shutdown_grace_seconds: 20,
            log_message_content: false,
        }
    }
}

impl RuntimeConfig {
    /// Parses the YAML file; unknown fields are ignored.
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }

    /// Renders the file as the operator writes it.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(self)
    }

    /// Every model in the order they are tried: the primary, then the fallbacks.
    pub fn model_chain(&self) -> impl Iterator<Item = &ModelConfig> {
        std::iter::once(&self.model).chain(self.fallbacks.iter())
    }

    /// Problems that make the file unusable, each as a sentence; empty when valid.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, model) in self.model_chain().enumerate() {
            let which = if i == 0 {
                "model".to_owned()
            } else {
                format!("fallbacks[{}]", i - 1)
            };
            if model.name.trim().is_empty() {
                problems.push(format!("{which}.name must not be empty"));
            }
            if model.timeout_seconds == 0 {
                problems.push(format!("{which}.timeoutSeconds must be at least 1"));
            }
            if let Some(url) = &model.base_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                problems.push(format!(
                    "{which}.baseUrl must start with http:// or https://, got {url:?}"
                ));
            }
        }
        if self.context.max_tokens < 16 {
            problems.push("context.maxTokens must be at least 16".to_owned());
        }
        if self.auth.user_header.trim().is_empty() {
            problems.push("auth.userHeader must not be empty".to_owned());
        }
        if self.auth.keys_reload_seconds == 0 {
            problems.push("auth.keysReloadSeconds must be at least 1".to_owned());
        }
        if self.limits.max_request_bytes == 0 || self.limits.max_message_chars == 0 {
            problems.push("limits must be positive".to_owned());
        }
        if self.limits.upstream_concurrency == 0 {
            problems.push("limits.upstreamConcurrency must be at least 1".to_owned());
        }
        let currencies: std::collections::BTreeSet<&str> = self
            .model_chain()
            .filter_map(|m| m.pricing.as_ref().map(|p| p.currency.as_str()))
            .collect();
        if currencies.len() > 1 {
            problems.push(format!(
                "every model's pricing.currency must be the same, got {currencies:?}"
            ));
        }
        if self.budget.is_some() && currencies.is_empty() {
            problems.push("budget needs prices: set pricing on a model".to_owned());
        }
        let mut names = std::collections::BTreeSet::new();
        for channel in &self.channels {
            if !names.insert(channel.name.as_str()) {
                problems.push(format!("channel {:?} is listed twice", channel.name));
            }
        }
        problems
    }

    /// The fallback response for a language tag: the exact tag, then its primary
    /// subtag (`pt` for `pt-BR`), then `default`, then `en`.
    pub fn fallback_response(&self, language: Option<&str>) -> Option<&str> {
        let map = &self.fallback_responses;
        let mut candidates: Vec<String> = Vec::new();
        if let Some(tag) = language {
            let tag = tag.trim().to_ascii_lowercase();
            if let Some(primary) = tag.split(['-', '_']).next() {
                candidates.push(tag.clone());
                candidates.push(primary.to_owned());
            }
        }
        candidates.push("default".to_owned());
        candidates.push("en".to_owned());
        candidates.iter().find_map(|want| {
            map.iter()
                .find(|(k, _)| k.to_ascii_lowercase() == *want)
                .map(|(_, v)| v.as_str())
        })
    }

    /// The currency the models are priced in (`None` when no model has a price).
    pub fn pricing_currency(&self) -> Option<&str> {
        self.model_chain()
            .find_map(|m| m.pricing.as_ref().map(|p| p.currency.as_str()))
    }

    /// The channel with this name, if configured.
    pub fn channel(&self, name: &str) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_timeout_defaults_to_30_seconds_and_0_means_none() {
        let server = |client_timeout_seconds| ServerConfig {
            client_timeout_seconds,
            ..ServerConfig::default()
        };
        let seconds = std::time::Duration::from_secs;
        assert_eq!(server(None).client_timeout(), Some(seconds(30)));
        assert_eq!(server(Some(5)).client_timeout(), Some(seconds(5)));
        assert_eq!(server(Some(0)).client_timeout(), None);
        // Unset, it is not written: files rendered before it existed stay the same.
        let yaml = serde_yaml::to_string(&server(None)).expect("renders");
        assert!(!yaml.contains("clientTimeoutSeconds"), "{yaml}");
        let parsed: ServerConfig =
            serde_yaml::from_str("listen: 0.0.0.0:1\nclientTimeoutSeconds: 7\n").expect("parses");
        assert_eq!(parsed.client_timeout(), Some(seconds(7)));
    }

    const FULL: &str = r#"
agent:
  name: support
  namespace: tenant-a
model:
  provider: anthropic
  name: claude-sonnet-4-5
  apiKeyEnv: ANTHROPIC_API_KEY
  temperature: 0.2
  maxOutputTokens: 1024
  timeoutSeconds: 30
fallbacks:
  - provider: openai
    name: gpt-4o-mini
    baseUrl: http://litellm:4000/v1/
    apiKeyEnv: OPENAI_API_KEY
systemPrompt: You are helpful.
context:
  maxTokens: 4096
database:
  urlEnv: DATABASE_URL
auth:
  apiKeyEnv: TENANT_KEY
  userHeader: x-user
sessions:
  idleTimeoutMinutes: 30
  retentionDays: 90
rateLimit:
  requestsPerMinutePerUser: 20
  tokensPerMinute: 100000
fallbackResponses:
  en: Sorry, try again later.
  de: Entschuldigung, bitte später erneut versuchen.
channels:
  - name: web
    type: web
    enabled: true
    language: de
    greeting: Hallo!
    features: {history: true, search: false, streaming: true}
server:
  listen: 127.0.0.1:9000
someFutureField: ignored
"#;

    #[test]
    fn full_file_parses_and_round_trips() {
        let config = RuntimeConfig::from_yaml(FULL).expect("parses");
        assert_eq!(config.agent.namespace.as_deref(), Some("tenant-a"));
        assert_eq!(config.model.provider, ModelProvider::Anthropic);
        assert_eq!(config.model.timeout_seconds, 30);
        assert_eq!(config.fallbacks[0].timeout_seconds, 60, "default applies");
        assert_eq!(
            config.fallbacks[0].effective_base_url(),
            "http://litellm:4000/v1"
        );
        assert_eq!(
            config.model.effective_base_url(),
            "https://api.anthropic.com"
        );
        assert_eq!(config.channels[0].channel_type, ChannelType::Web);
        assert!(!config.channels[0].features.search);
        assert_eq!(
            config.rate_limit.as_ref().and_then(|r| r.tokens_per_minute),
            Some(100000)
        );
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        let again = RuntimeConfig::from_yaml(&config.to_yaml().expect("renders")).expect("parses");
        assert_eq!(again, config);
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let config = RuntimeConfig::from_yaml("model:\n  name: llama3\n").expect("parses");
        assert_eq!(config.model.name, "llama3");
        assert_eq!(config.model.provider, ModelProvider::Openai);
        assert_eq!(config.context.max_tokens, 8192);
        assert_eq!(config.auth.api_key_env, "SWITCHBOARD_API_KEY");
        assert_eq!(config.auth.user_header, "x-switchboard-user");
        assert_eq!(config.server.listen, "0.0.0.0:8080");
        assert!(config.channels.is_empty());
        assert!(config.validate().is_empty());
        let empty = RuntimeConfig::from_yaml("{}").expect("empty object parses");
        assert_eq!(empty, RuntimeConfig::default());
    }

    #[test]
    fn bad_values_are_reported() {
        let config = RuntimeConfig::from_yaml(
            "model: {name: '', timeoutSeconds: 0, baseUrl: 'ftp://x'}\ncontext: {maxTokens: 1}\n",
        )
        .expect("parses");
        let problems = config.validate();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(RuntimeConfig::from_yaml("model: {provider: gemini}").is_err());
        assert!(RuntimeConfig::from_yaml("context: {maxTokens: lots}").is_err());
    }

    #[test]
    fn fallback_response_picks_the_closest_language() {
        let config = RuntimeConfig::from_yaml(
            "fallbackResponses: {en: sorry, pt: desculpe, default: oops}\n",
        )
        .expect("parses");
        assert_eq!(config.fallback_response(Some("pt-BR")), Some("desculpe"));
        assert_eq!(config.fallback_response(Some("EN")), Some("sorry"));
        assert_eq!(config.fallback_response(Some("fr")), Some("oops"));
        assert_eq!(config.fallback_response(None), Some("oops"));
        assert_eq!(RuntimeConfig::default().fallback_response(Some("en")), None);
    }
}
