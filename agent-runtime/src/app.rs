//! The runtime's shared state, its router, and serving it.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::middleware;
use crds::runtime_config::RuntimeConfig;
use tokio::net::TcpListener;

use crate::context::Tokenizer;
use crate::db::{Store, StoreError};
use crate::metrics::Metrics;
use crate::providers::{ModelChain, build_provider, http_client};
use crate::settings::Settings;

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
}

/// Shared handle on [`AppState`].
pub type SharedState = Arc<AppState>;

impl AppState {
    /// Opens the database (running migrations) and builds the providers.
    pub async fn build(settings: Settings) -> Result<SharedState, StartError> {
        let config = settings.config;
        let user_header = HeaderName::try_from(config.auth.user_header.to_ascii_lowercase())
            .map_err(|_| StartError::UserHeader(config.auth.user_header.clone()))?;
        let store = Store::connect(&settings.database).await?;
        let client = http_client()?;
        let models = config
            .model_chain()
            .zip(settings.upstream_keys)
            .map(|(model, key)| build_provider(client.clone(), model, key))
            .collect();
        let model_name = config.model.name.clone();
        // Loading the BPE tables takes a moment: do it now, not on the first request.
        let tokenizer = tokio::task::spawn_blocking(move || {
            let tokenizer = Tokenizer::for_model(&model_name);
            tokenizer.count("warm up");
            tokenizer
        })
        .await
        .unwrap_or_else(|_| Tokenizer::for_model(""));
        Ok(Arc::new(Self {
            config,
            store,
            chain: ModelChain::new(models),
            tokenizer,
            metrics: Arc::new(Metrics::new()?),
            api_key: settings.api_key,
            user_header,
            started_at: chrono::Utc::now().timestamp(),
        }))
    }
}

/// The whole HTTP surface: authenticated `/v1` and `/api` routes, open
/// operational routes, JSON errors for unknown routes and methods.
pub fn router(state: SharedState) -> Router {
    let (api, openapi) = crate::openapi::api_router().split_for_parts();
    let openapi = Arc::new(openapi);
    let api = api
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_api_key,
        ))
        .with_state(state.clone());
    let limit = state.config.limits.max_request_bytes;
    Router::new()
        .merge(api)
        .merge(crate::api::ops::router(state.clone(), openapi))
        .fallback(crate::api::ops::not_found)
        .method_not_allowed_fallback(crate::api::ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::api::ops::panic_response,
        ))
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    state: SharedState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    state.store.close().await;
    result
}
