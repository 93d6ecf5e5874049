//! The runtime's shared state, its router, and serving it.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::middleware;
use crds::runtime_config::RuntimeConfig;
use tokio::net::TcpListener;

use crate::channels::ChannelRegistry;
use crate::channels::delivery::WebhookDelivery;
use crate::channels::signing::SigningKeys;
use crate::context::Tokenizer;
use crate::db::{Store, StoreError};
use crate::limits::{RateLimiter, UpstreamGate};
use crate::metrics::Metrics;
use crate::providers::{ModelChain, build_provider, http_client};
use crate::settings::Settings;
use crate::shutdown::Lifecycle;

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

/// Everything handlers share.
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
    /// The tenant's client API key; `None` runs open.
    pub api_key: Option<String>,
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
}

/// Shared handle on [`AppState`].
pub type SharedState = Arc<AppState>;

impl AppState {
    /// Opens the database (running migrations) and builds the providers.
    pub async fn build(settings: Settings) -> Result<SharedState, StartError> {
        let config = settings.config;
        let user_header = HeaderName::try_from(config.auth.user_header.to_ascii_lowercase())
            .map_err(|_| StartError::UserHeader(config.auth.user_header.clone()))?;
        let metrics = Arc::new(Metrics::new()?);
        let mut store = Store::connect(&settings.database).await?;
        store.observe_with(metrics.clone());
        let client = http_client()?;
        let models = config
            .model_chain()
            .zip(settings.upstream_keys)
            .map(|(model, key)| build_provider(client.clone(), model, key))
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
        let webhooks = WebhookDelivery::new(SigningKeys::from_env(), client.clone());
        let state = Arc::new(Self {
            channels,
            webhooks,
            limiter: RateLimiter::new(config.rate_limit.clone()),
            gate: UpstreamGate::new(&config.limits, metrics.clone()),
            lifecycle: Lifecycle::default(),
            config,
            store,
            chain,
            tokenizer,
            metrics,
            api_key: settings.api_key,
            user_header,
            started_at: chrono::Utc::now().timestamp(),
        });
        crate::channels::apply_limits(&state, &[]);
        Ok(state)
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

/// The whole HTTP surface: authenticated `/v1` and `/api` routes, open
/// operational routes, JSON errors for unknown routes and methods.
pub fn router(state: SharedState) -> Router {
    let (api, openapi) = crate::openapi::api_router().split_for_parts();
    let openapi = Arc::new(crate::openapi::document(openapi, &state.config));
    let api = api
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_api_key,
        ))
        .with_state(state.clone());
    let limit = state.config.limits.max_request_bytes;
    let per_channel = api
        .clone()
        .fallback(crate::api::ops::not_found)
        .method_not_allowed_fallback(crate::api::ops::method_not_allowed);
    Router::new()
        .merge(api)
        .merge(crate::channels::routes::webhook_router(state.clone()))
        .merge(crate::api::ops::router(state.clone(), openapi))
        .fallback_service(crate::channels::routes::fallback(
            state.clone(),
            per_channel,
        ))
        .method_not_allowed_fallback(crate::api::ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(middleware::from_fn(crate::request_log::log_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::api::ops::panic_response,
        ))
}

/// Serves until `shutdown` resolves, then drains within the configured grace
/// period (`limits.shutdownGraceSeconds`); see [`serve_with_shutdown`].
pub async fn serve(
    state: SharedState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = std::time::Duration::from_secs(state.config.limits.shutdown_grace_seconds);
    serve_with_shutdown(state, listener, shutdown, grace).await
}

/// Serves until `shutdown` resolves; then stops accepting connections, lets
/// streams finish for up to `grace` (after which they end with an error event,
/// their partial answers stored), waits for every answer to be written, and
/// closes the database.
pub async fn serve_with_shutdown(
    state: SharedState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let lifecycle = state.lifecycle.clone();
    let signalled = async move {
        shutdown.await;
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: draining streams"
        );
        lifecycle.begin_shutdown(grace);
    };
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(signalled)
        .await;
    state.lifecycle.wait_for_turns().await;
    state.store.close().await;
    tracing::info!("shut down");
    result
}
