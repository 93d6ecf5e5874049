//! What the runtime knows about its channels, below the edges and the shared
//! state: the registry of channels served, readable per request without waiting
//! on anything (fed once from the config file standalone, kept current by the
//! ChatChannel watcher in a cluster, so changes apply without a restart), each
//! channel's [`activity`], webhook [`signing`], and the [`webhook`] outbox
//! handle with the answer's wire format.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crds::ChatChannel;
use crds::RespondTo;
use crds::runtime_config::{
    ChannelConfig, ChannelFeatures, ChannelRateLimitConfig, ChannelType, ClientKeyMode,
    RuntimeConfig,
};

pub mod activity;
pub mod connection;
pub mod egress;
pub mod signing;
pub mod webhook;

use activity::ChannelActivityCounter;

use crate::limits::{ChannelLimits, RateLimiter};

/// Name of the one open channel of a runtime with no channels declared
/// (standalone): the root routes serve it.
pub const DEFAULT_CHANNEL: &str = "default";

/// Why a request cannot use the channel it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// No such channel for this agent.
    #[error("this agent has no channel {0:?}")]
    NotFound(String),
    /// The channel is disabled.
    #[error(
        "channel {0:?} is disabled (spec.enabled: false); ask the operator of this agent to enable it"
    )]
    Disabled(String),
    /// Channels are declared but none is the agent's default: the root routes
    /// belong to no channel.
    #[error(
        "the root routes belong to no channel: this agent declares no default channel \
         (AgentDeployment spec.defaultChannel); use a channel's routes: {}",
        routes_of(.0)
    )]
    NoDefault(Vec<String>),
}

fn routes_of(names: &[String]) -> String {
    if names.is_empty() {
        return "none is declared yet".to_owned();
    }
    names
        .iter()
        .map(|n| format!("/channels/{n}/v1/..., /channels/{n}/api/..."))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Default replay window of a webhook channel.
const DEFAULT_TOLERANCE_SECONDS: u32 = 300;

/// Where a webhook channel's signing key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningKeySource {
    /// Given in the channel itself (not a secret: a Discord public key).
    Inline(String),
    /// An environment variable of this process (standalone).
    Env(String),
    /// A key of a Secret in the pod's namespace (in a cluster).
    Secret {
        /// Secret name.
        name: String,
        /// Key inside it.
        key: String,
    },
}

/// A webhook channel's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Where answers are POSTed.
    pub callback_url: String,
    /// The HMAC-SHA256 key's source.
    pub key: SigningKeySource,
    /// How far a signed timestamp may be from now.
    pub tolerance: Duration,
}

/// Everything the runtime needs to serve one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSettings {
    /// The ChatChannel's name.
    pub name: String,
    /// The ChatChannel's `metadata.generation` (`None` from the config file):
    /// the `observedGeneration` of the conditions the runtime writes on it.
    pub generation: Option<i64>,
    /// Kind of channel.
    pub channel_type: ChannelType,
    /// A disabled channel answers 503.
    pub enabled: bool,
    /// Language of the fallback response.
    pub language: Option<String>,
    /// First assistant message of a new session.
    pub greeting: Option<String>,
    /// Features served.
    pub features: ChannelFeatures,
    /// Per-channel request limits.
    pub rate_limit: ChannelRateLimitConfig,
    /// Browser origins allowed by CORS (`*` for any).
    pub allowed_origins: Vec<String>,
    /// Webhook settings (type `webhook` only).
    pub webhook: Option<WebhookSettings>,
    /// The chat page's settings (type `web`).
    pub web: WebSettings,
    /// Model id the OpenAI routes list, accept and echo; `None`: the agent's name.
    pub model_alias: Option<String>,
    /// Opened by a key of its own (`channel.<name>`), not the agent's key; its
    /// sessions are visible only through it.
    pub own_key: bool,
    /// Slack app settings (type `slack` only).
    pub slack: Option<SlackSettings>,
    /// Discord bot settings (type `discord` only).
    pub discord: Option<DiscordSettings>,
}

/// A Discord channel's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscordSettings {
    /// The bot token's source (Gateway and REST); channels sharing it share one
    /// Gateway connection.
    pub bot_token: SigningKeySource,
    /// Guild ids served; empty: all.
    pub guild_ids: Vec<String>,
    /// Channel ids served; empty: all of the guilds served.
    pub channel_ids: Vec<String>,
    /// In guild channels: mentions only or every message.
    pub respond_to: RespondTo,
    /// Direct messages answered.
    pub direct_messages: bool,
    /// The application's id (slash command registration, follow-up webhooks).
    pub application_id: Option<String>,
    /// The application's Ed25519 public key (hex); `None`: no Interactions endpoint.
    pub public_key: Option<SigningKeySource>,
    /// The slash command answered through the Interactions endpoint.
    pub slash_command: String,
}

/// A Slack channel's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlackSettings {
    /// The bot token's source (`chat.postMessage`).
    pub bot_token: SigningKeySource,
    /// The signing secret's source (Events API v0 signatures); `None`: no Events API.
    pub signing_secret: Option<SigningKeySource>,
    /// The app-level token's source (`xapp-...`): events arrive over Socket Mode.
    pub app_token: Option<SigningKeySource>,
    /// Only events of this workspace are answered.
    pub team_id: Option<String>,
    /// Conversation ids answered in; empty: all.
    pub channel_ids: Vec<String>,
    /// In channels: mentions only or every message.
    pub respond_to: RespondTo,
    /// Direct messages answered.
    pub direct_messages: bool,
}

/// A web channel's page settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebSettings {
    /// Page title; the channel's name when unset.
    pub title: Option<String>,
    /// Header an auth proxy sets naming the user (lower case); `None`: anonymous visitors.
    pub trusted_header: Option<String>,
}

impl ChannelSettings {
    /// A channel with every default (all features, enabled, no limits).
    pub fn open(name: &str) -> Self {
        Self::from_config(&ChannelConfig {
            name: name.to_owned(),
            ..ChannelConfig::default()
        })
    }

    /// From the runtime config file.
    pub fn from_config(config: &ChannelConfig) -> Self {
        Self {
            name: config.name.clone(),
            generation: None,
            channel_type: config.channel_type,
            enabled: config.enabled,
            language: config.language.clone(),
            greeting: config.greeting.clone(),
            features: config.features,
            rate_limit: config.rate_limit.unwrap_or_default(),
            allowed_origins: config.allowed_origins.clone(),
            webhook: config.webhook.as_ref().map(|w| WebhookSettings {
                callback_url: w.callback_url.clone(),
                key: SigningKeySource::Env(w.signing_key_env.clone()),
                tolerance: Duration::from_secs(u64::from(
                    w.timestamp_tolerance_seconds
                        .unwrap_or(DEFAULT_TOLERANCE_SECONDS),
                )),
            }),
            web: config
                .web
                .as_ref()
                .map(|w| WebSettings {
                    title: w.title.clone(),
                    trusted_header: w.trusted_header.as_ref().map(|h| h.to_ascii_lowercase()),
                })
                .unwrap_or_default(),
            model_alias: config.model_alias.clone(),
            own_key: config.client_key == ClientKeyMode::Channel,
            slack: config.slack.as_ref().map(|s| SlackSettings {
                bot_token: SigningKeySource::Env(s.bot_token_env.clone()),
                signing_secret: (!s.signing_secret_env.is_empty())
                    .then(|| SigningKeySource::Env(s.signing_secret_env.clone())),
                app_token: s.app_token_env.clone().map(SigningKeySource::Env),
                team_id: s.team_id.clone(),
                channel_ids: s.channel_ids.clone(),
                respond_to: s.respond_to,
                direct_messages: s.direct_messages,
            }),
            discord: config.discord.as_ref().map(|d| DiscordSettings {
                bot_token: SigningKeySource::Env(d.bot_token_env.clone()),
                guild_ids: d.guild_ids.clone(),
                channel_ids: d.channel_ids.clone(),
                respond_to: d.respond_to,
                direct_messages: d.direct_messages,
                application_id: d.application_id.clone(),
                public_key: d
                    .public_key
                    .clone()
                    .map(SigningKeySource::Inline)
                    .or_else(|| d.public_key_env.clone().map(SigningKeySource::Env)),
                slash_command: d.slash_command.clone(),
            }),
        }
    }

    /// From a ChatChannel resource.
    pub fn from_resource(channel: &ChatChannel) -> Option<Self> {
        let name = channel.metadata.name.clone()?;
        let spec = &channel.spec;
        let positive = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
        let channel_type = match spec.type_ {
            crds::ChannelType::Web => ChannelType::Web,
            crds::ChannelType::Webhook => ChannelType::Webhook,
            crds::ChannelType::Openai => ChannelType::Openai,
            crds::ChannelType::Slack => ChannelType::Slack,
            crds::ChannelType::Discord => ChannelType::Discord,
        };
        Some(Self {
            name,
            generation: channel.metadata.generation,
            channel_type,
            enabled: spec.enabled,
            language: Some(spec.language.clone()),
            greeting: spec.greeting.clone(),
            features: ChannelFeatures {
                history: spec.features.history,
                search: spec.features.search,
                streaming: spec.features.streaming,
            },
            rate_limit: spec
                .rate_limit
                .as_ref()
                .map(|r| ChannelRateLimitConfig {
                    requests_per_minute: positive(r.requests_per_minute),
                    requests_per_minute_per_user: positive(r.requests_per_minute_per_user),
                })
                .unwrap_or_default(),
            allowed_origins: spec.allowed_origins.clone(),
            webhook: spec.webhook.as_ref().map(|w| WebhookSettings {
                callback_url: w.callback_url.clone(),
                key: SigningKeySource::Secret {
                    name: w.signing_secret_ref.name.clone(),
                    key: w.signing_secret_ref.key.clone(),
                },
                tolerance: Duration::from_secs(
                    u64::try_from(w.timestamp_tolerance_seconds.max(1)).unwrap_or(300),
                ),
            }),
            web: spec
                .web
                .as_ref()
                .map(|w| WebSettings {
                    title: w.title.clone(),
                    trusted_header: w
                        .auth
                        .as_ref()
                        .and_then(|a| a.trusted_header.as_ref())
                        .map(|h| h.to_ascii_lowercase()),
                })
                .unwrap_or_default(),
            model_alias: spec.openai.as_ref().and_then(|o| o.model_alias.clone()),
            own_key: spec.client_key == crds::ClientKeyMode::Channel,
            slack: spec.slack.as_ref().map(|s| SlackSettings {
                bot_token: secret_source(&s.bot_token_ref),
                signing_secret: (s.mode == crds::SlackMode::EventsApi)
                    .then(|| s.signing_secret_ref.as_ref().map(secret_source))
                    .flatten(),
                app_token: (s.mode == crds::SlackMode::SocketMode)
                    .then(|| s.app_token_ref.as_ref().map(secret_source))
                    .flatten(),
                team_id: s.team_id.clone(),
                channel_ids: s.channel_ids.clone(),
                respond_to: s.respond_to,
                direct_messages: s.direct_messages,
            }),
            discord: spec.discord.as_ref().map(|d| DiscordSettings {
                bot_token: secret_source(&d.bot_token_ref),
                guild_ids: d.guild_ids.clone(),
                channel_ids: d.channel_ids.clone(),
                respond_to: d.respond_to,
                direct_messages: d.direct_messages,
                application_id: Some(d.application_id.clone()),
                public_key: d
                    .public_key
                    .clone()
                    .map(SigningKeySource::Inline)
                    .or_else(|| d.public_key_ref.as_ref().map(secret_source)),
                slash_command: d.slash_command.clone(),
            }),
        })
    }

    /// Whether a browser at `origin` may call this channel.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

fn secret_source(r: &crds::SecretKeyRef) -> SigningKeySource {
    SigningKeySource::Secret {
        name: r.name.clone(),
        key: r.key.clone(),
    }
}

#[derive(Clone, Debug)]
struct Snapshot {
    /// No channel list given (standalone without channels): any name is served
    /// with defaults.
    open: bool,
    channels: Arc<HashMap<String, Arc<ChannelSettings>>>,
}

/// The channels served now; cheap to read from every request.
#[derive(Debug)]
pub struct ChannelRegistry {
    snapshot: RwLock<Snapshot>,
    /// Set while the channels come from a watch that has not listed them yet.
    awaiting_list: std::sync::atomic::AtomicBool,
    /// The channel the root routes belong to (`defaultChannel`).
    default_channel: Option<String>,
    /// Messages and sessions per channel, seen by this pod.
    pub activity: ChannelActivityCounter,
    /// Connection state of the `slack` and `discord` channels this pod connects.
    pub connections: connection::ConnectionStates,
}

impl ChannelRegistry {
    /// From the config file: its channels, or open (every name served with
    /// defaults) when it lists none.
    pub fn from_config(config: &RuntimeConfig) -> Self {
        let channels: HashMap<_, _> = config
            .channels
            .iter()
            .map(|c| (c.name.clone(), Arc::new(ChannelSettings::from_config(c))))
            .collect();
        let idle_minutes = config.sessions.idle_timeout_minutes.unwrap_or(30);
        Self {
            snapshot: RwLock::new(Snapshot {
                open: channels.is_empty(),
                channels: Arc::new(channels),
            }),
            awaiting_list: std::sync::atomic::AtomicBool::new(false),
            default_channel: config.default_channel.clone(),
            activity: ChannelActivityCounter::new(Duration::from_secs(
                u64::from(idle_minutes) * 60,
            )),
            connections: connection::ConnectionStates::default(),
        }
    }

    fn read(&self) -> Snapshot {
        match self.snapshot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The channels are to come from a watch: none is served, and the runtime is
    /// not ready, until its first list ([`Self::replace_all`]).
    pub fn await_list(&self) {
        self.replace_all(Vec::new());
        self.awaiting_list
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the channels' first list is still awaited.
    pub fn awaiting_list(&self) -> bool {
        self.awaiting_list.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Replaces every channel (the watcher's view); the registry is closed from
    /// now on: names not listed are unknown.
    pub fn replace_all(&self, channels: impl IntoIterator<Item = ChannelSettings>) {
        self.awaiting_list
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let channels: HashMap<_, _> = channels
            .into_iter()
            .map(|c| (c.name.clone(), Arc::new(c)))
            .collect();
        let next = Snapshot {
            open: false,
            channels: Arc::new(channels),
        };
        match self.snapshot.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// The channel's settings, if it is known.
    pub fn get(&self, name: &str) -> Option<Arc<ChannelSettings>> {
        let snapshot = self.read();
        match snapshot.channels.get(name) {
            Some(c) => Some(c.clone()),
            None if snapshot.open => Some(Arc::new(ChannelSettings::open(name))),
            None => None,
        }
    }

    /// Every known channel.
    pub fn all(&self) -> Vec<Arc<ChannelSettings>> {
        let mut all: Vec<_> = self.read().channels.values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The channel's request limits (for the rate limiter), if it is known.
    pub fn limits(&self, name: &str) -> Option<ChannelRateLimitConfig> {
        self.get(name).map(|c| c.rate_limit)
    }

    /// The channel a request names, refused when unknown (404) or disabled (503).
    pub fn resolve(&self, name: &str) -> Result<Arc<ChannelSettings>, ChannelError> {
        let channel = self
            .get(name)
            .ok_or_else(|| ChannelError::NotFound(name.to_owned()))?;
        if !channel.enabled {
            return Err(ChannelError::Disabled(name.to_owned()));
        }
        Ok(channel)
    }

    /// The channel of the root routes when no channel is named: the declared
    /// default channel (refused like any channel when unknown or disabled); with
    /// none declared, the open `default` channel of a runtime without channels,
    /// else [`ChannelError::NoDefault`].
    pub fn resolve_default(&self) -> Result<Arc<ChannelSettings>, ChannelError> {
        if let Some(name) = &self.default_channel {
            return self.resolve(name);
        }
        let snapshot = self.read();
        if snapshot.open {
            return Ok(Arc::new(ChannelSettings::open(DEFAULT_CHANNEL)));
        }
        let mut names: Vec<String> = snapshot.channels.keys().cloned().collect();
        names.sort();
        Err(ChannelError::NoDefault(names))
    }

    /// The declared default channel's name, if any.
    pub fn default_channel(&self) -> Option<&str> {
        self.default_channel.as_deref()
    }
}

/// Hands every channel's rate limits to the limiter, clearing those of
/// channels no longer served (`previous`: the names served before).
pub fn apply_limits(registry: &ChannelRegistry, limiter: &RateLimiter, previous: &[String]) {
    let current = registry.all();
    for name in previous {
        if !current.iter().any(|c| &c.name == name) {
            limiter.set_channel_limits(name, None);
        }
    }
    for channel in current {
        let l = channel.rate_limit;
        let limits = (l.requests_per_minute.is_some() || l.requests_per_minute_per_user.is_some())
            .then_some(ChannelLimits {
                requests_per_minute: l.requests_per_minute,
                requests_per_minute_per_user: l.requests_per_minute_per_user,
            });
        limiter.set_channel_limits(&channel.name, limits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> RuntimeConfig {
        serde_yaml::from_str(yaml).expect("config parses")
    }

    #[test]
    fn without_channels_every_name_is_served_with_defaults() {
        let registry = ChannelRegistry::from_config(&RuntimeConfig::default());
        let c = registry.resolve("anything").expect("open");
        assert!(c.enabled && c.features.streaming);
        assert!(registry.all().is_empty());
    }

    #[test]
    fn a_registry_awaiting_its_list_serves_nothing_until_listed() {
        let registry = ChannelRegistry::from_config(&config(""));
        assert!(!registry.awaiting_list());
        registry.await_list();
        assert!(registry.awaiting_list());
        assert_eq!(
            registry.resolve("default").expect_err("nothing served"),
            ChannelError::NotFound("default".to_owned())
        );
        registry.replace_all(Vec::new());
        assert!(!registry.awaiting_list(), "an empty list is a list");
    }

    #[test]
    fn listed_channels_are_the_only_ones_and_disabled_ones_refuse() {
        let registry = ChannelRegistry::from_config(&config(
            "channels:\n- name: web\n  language: de\n- name: off\n  enabled: false\n",
        ));
        assert_eq!(
            registry.resolve("web").expect("known").language.as_deref(),
            Some("de")
        );
        assert_eq!(
            registry.resolve("nope").expect_err("unknown"),
            ChannelError::NotFound("nope".to_owned())
        );
        let err = registry.resolve("off").expect_err("disabled");
        assert_eq!(err, ChannelError::Disabled("off".to_owned()));
        assert!(err.to_string().contains("disabled"));
        let err = registry.resolve_default().expect_err("no default declared");
        assert!(
            err.to_string().contains("/channels/web/v1/"),
            "names the routes: {err}"
        );
    }

    #[test]
    fn the_root_routes_belong_to_the_declared_default_only() {
        let registry = ChannelRegistry::from_config(&config(
            "defaultChannel: off\nchannels:\n- name: web\n- name: off\n  enabled: false\n",
        ));
        assert_eq!(
            registry.resolve_default().expect_err("disabled default"),
            ChannelError::Disabled("off".to_owned())
        );
        let standalone = ChannelRegistry::from_config(&RuntimeConfig::default());
        assert_eq!(
            standalone.resolve_default().expect("open").name,
            DEFAULT_CHANNEL
        );
    }

    #[test]
    fn the_watchers_view_replaces_everything_and_closes_the_registry() {
        let registry = ChannelRegistry::from_config(&RuntimeConfig::default());
        registry.replace_all([ChannelSettings {
            rate_limit: ChannelRateLimitConfig {
                requests_per_minute: Some(5),
                requests_per_minute_per_user: None,
            },
            ..ChannelSettings::open("support")
        }]);
        assert!(registry.get("other").is_none(), "closed after the watcher");
        assert_eq!(
            registry
                .limits("support")
                .and_then(|l| l.requests_per_minute),
            Some(5)
        );
    }

    #[test]
    fn chat_channel_resources_become_settings() {
        let channel: ChatChannel = serde_yaml::from_str(
            r#"
apiVersion: switchboard.dev/v1alpha1
kind: ChatChannel
metadata: {name: hooks}
spec:
  agentRef: {name: support}
  type: webhook
  language: fr
  allowedOrigins: ["https://a.example"]
  rateLimit: {requestsPerMinutePerUser: 3}
  features: {streaming: false}
  webhook:
    callbackUrl: http://cb.example/x
    signingSecretRef: {name: hook-key, key: key}
"#,
        )
        .expect("channel parses");
        let settings = ChannelSettings::from_resource(&channel).expect("named");
        assert_eq!(settings.channel_type, ChannelType::Webhook);
        assert_eq!(settings.language.as_deref(), Some("fr"));
        assert!(settings.allows_origin("https://A.example"));
        assert!(!settings.allows_origin("https://b.example"));
        let webhook = settings.webhook.expect("webhook settings");
        assert_eq!(
            webhook.key,
            SigningKeySource::Secret {
                name: "hook-key".into(),
                key: "key".into()
            }
        );
        assert_eq!(webhook.tolerance, Duration::from_secs(300));
        assert!(!settings.own_key && settings.model_alias.is_none());

        let channel: ChatChannel = serde_yaml::from_str(
            r#"
apiVersion: switchboard.dev/v1alpha1
kind: ChatChannel
metadata: {name: partners}
spec:
  agentRef: {name: support}
  type: openai
  clientKey: Channel
  openai: {modelAlias: helper-v2}
"#,
        )
        .expect("channel parses");
        let settings = ChannelSettings::from_resource(&channel).expect("named");
        assert!(settings.own_key);
        assert_eq!(settings.model_alias.as_deref(), Some("helper-v2"));
    }
}
