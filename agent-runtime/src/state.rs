//! The runtime's shared state: configuration, storage, the model chain,
//! limits, channels and metrics, built once at start and shared by every
//! request and background task. Handlers and services depend on it; it
//! depends on nothing above it.

use std::sync::Arc;

use axum::http::HeaderName;
use crds::runtime_config::RuntimeConfig;

use crate::channel_registry::signing::SigningKeys;
use crate::channel_registry::webhook::WebhookDelivery;
use crate::channel_registry::{ChannelRegistry, apply_limits};
use crate::cost::CostLedger;
use crate::db::{Store, StoreError};
use crate::keys::KeyRing;
use crate::limits::{RateLimiter, UpstreamGate};
use crate::live::LiveSync;
use crate::metrics::Metrics;
use crate::prompt::Tokenizer;
use crate::providers::{
    ModelChain, build_provider, client_for, http_client, http2_prior_knowledge_client,
};
use crate::settings::Settings;
use crate::shutdown::Lifecycle;
use crate::tools::ToolRegistry;

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("cannot open the conversation database: {0}")]
    Database(#[from] StoreError),
    /// The HTTP client could not be built.
    #[error("cannot build the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The user header is not a valid header name.
    #[error("auth.userHeader {0:?} is not a valid HTTP header name")]
    UserHeader(String),
}

/// Everything handlers and services share.
pub struct AppState {
    /// The configuration file.
    pub config: RuntimeConfig,
    /// Conversations.
    pub store: Store,
    /// The models, primary first.
    pub chain: ModelChain,
    /// Token counter for the primary model.
    pub tokenizer: Tokenizer,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The keys accepted now (client, admin, channels), reloaded from files.
    pub keys: Arc<KeyRing>,
    /// Trusted header naming the user.
    pub user_header: HeaderName,
    /// Unix time the runtime started (the `created` of `/v1/models`).
    pub started_at: i64,
    /// Request and token rate limits.
    pub limiter: RateLimiter,
    /// Bounded concurrency towards the upstream.
    pub gate: UpstreamGate,
    /// Shutdown signalling and the turns still writing.
    pub lifecycle: Lifecycle,
    /// The channels served now (config file, or the ChatChannel watcher).
    pub channels: Arc<ChannelRegistry>,
    /// Webhook channels: signing keys and the answer delivery.
    pub webhooks: WebhookDelivery,
    /// Costs of model calls and the monthly budget.
    pub ledger: Arc<CostLedger>,
    /// Live sync of users' sessions to their open pages, on every pod.
    pub live: LiveSync,
    /// Server-side tools (MCP servers, other agents) offered to the model.
    pub tools: Arc<ToolRegistry>,
}

/// Shared handle on [`AppState`].
pub type SharedState = Arc<AppState>;

impl AppState {
    /// Opens the database (running migrations) and builds the providers.
    pub async fn build(settings: Settings) -> Result<SharedState, StartError> {
        let config = settings.config;
        let config_auth = config.auth.clone();
        let user_header = HeaderName::try_from(config.auth.user_header.to_ascii_lowercase())
            .map_err(|_| StartError::UserHeader(config.auth.user_header.clone()))?;
        let metrics = Arc::new(Metrics::new()?);
        let mut store = Store::connect(&settings.database).await?;
        store.observe_with(metrics.clone());
        let client = http_client()?;
        let h2c = if config.model_chain().any(|m| m.http2_prior_knowledge) {
            Some(http2_prior_knowledge_client()?)
        } else {
            None
        };
        let models = config
            .model_chain()
            .zip(settings.upstream_keys)
            .map(|(model, key)| {
                build_provider(client_for(model, &client, h2c.as_ref()), model, key)
            })
            .collect();
        let chain = ModelChain::with_policy(models, &config.limits, Some(metrics.clone()));
        let model_name = config.model.name.clone();
        // Loading the BPE tables takes a moment: do it now, not on the first request.
        let tokenizer = tokio::task::spawn_blocking(move || {
            let tokenizer = Tokenizer::for_model(&model_name);
            tokenizer.count("warm up");
            tokenizer
        })
        .await
        .unwrap_or_else(|_| Tokenizer::for_model(""));
        let channels = Arc::new(ChannelRegistry::from_config(&config));
        let webhooks = WebhookDelivery::new(
            SigningKeys::from_env(),
            crate::channel_registry::egress::client()?,
        );
        let limiter = RateLimiter::new(
            config.rate_limit.clone(),
            store.rate_windows(),
            u64::from(config.context.max_tokens),
        );
        let ledger = CostLedger::new(&config, store.clone(), &metrics)?;
        // The month's spend so far (other pods', or before a restart).
        ledger.refresh().await;
        apply_limits(&channels, &limiter, &[]);
        let lifecycle = Lifecycle::default();
        let live = LiveSync::start(&store, &lifecycle);
        let tools = Arc::new(ToolRegistry::new(
            config.tools.clone(),
            client.clone(),
            metrics.clone(),
        ));
        // The first listing before the first turn; then periodically.
        tools.refresh().await;
        tokio::spawn(tools.clone().run(lifecycle.clone()));
        Ok(Arc::new(Self {
            tools,
            live,
            channels,
            webhooks,
            ledger,
            limiter,
            gate: UpstreamGate::new(&config.limits, metrics.clone()),
            lifecycle,
            config,
            store,
            chain,
            tokenizer,
            metrics,
            keys: Arc::new(KeyRing::new(
                &config_auth,
                settings.api_key,
                settings.admin_key,
            )),
            user_header,
            started_at: chrono::Utc::now().timestamp(),
        }))
    }

    /// The upstream looks usable: some model of the chain has a closed circuit
    /// and its last call did not fail. Cheap; for the pod's status report.
    pub fn upstream_healthy(&self) -> bool {
        self.chain.healthy()
    }

    /// Messages (user and assistant) stored since start.
    pub fn messages_total(&self) -> u64 {
        self.metrics.messages_total()
    }
}
