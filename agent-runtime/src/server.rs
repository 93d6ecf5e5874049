//! The HTTP surface and serving it: the router over every edge (the
//! authenticated API, the per-channel routes, webhook intake, the operational
//! endpoints) and a graceful shutdown that lets answers finish and be stored.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use tokio::net::TcpListener;

use crate::api::ops;
use crate::channels::routes as channel_routes;
use crate::state::SharedState;

mod connections;
mod stalled_body;

/// The whole HTTP surface: authenticated `/v1` and `/api` routes, open
/// operational routes, JSON errors for unknown routes and methods.
pub fn router(state: SharedState) -> Router {
    let (api, openapi) = crate::openapi::api_router().split_for_parts();
    let openapi = Arc::new(crate::openapi::document(openapi, &state.config));
    let api = api
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::api::live::announce_changes,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_api_key,
        ))
        .with_state(state.clone());
    let limit = state.config.limits.max_request_bytes;
    let per_channel = api
        .clone()
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed);
    // Other agents calling this one as a tool: one route, its own keys.
    let agent_calls = Router::new()
        .route(
            crate::auth::AGENT_CALL_PATH,
            axum::routing::post(crate::api::openai::chat_completions),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::require_agent_key,
        ))
        .with_state(state.clone());
    let router = Router::new()
        .merge(api)
        .merge(agent_calls)
        .merge(channel_routes::webhook_router(state.clone()))
        .merge(ops::router(state.clone(), openapi))
        .fallback_service(channel_routes::fallback(state.clone(), per_channel))
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::track,
        ))
        .layer(middleware::from_fn(crate::request_log::log_request))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            ops::panic_response,
        ));
    match state.config.server.client_timeout() {
        Some(limit) => router.layer(tower::util::MapRequestLayer::new(move |request| {
            stalled_body::limit(request, limit)
        })),
        None => router,
    }
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
    // Every route turned into a service once, here, and each connection given
    // a clone of the one router (an `Arc`): serving a bare `Router` rebuilds its
    // route table for every connection, ~20 KiB held for the connection's life
    // (heaptrack, 1,000 idle HTTP/1.1 streams; docs/performance.md).
    let app = router(state.clone()).with_state(());
    let lifecycle = state.lifecycle.clone();
    // Key files are re-read while serving, so a rotated Secret needs no restart.
    let stop_reloader = tokio_util::sync::CancellationToken::new();
    let reloader = tokio::spawn(crate::keys::run_reloader(
        state.keys.clone(),
        std::time::Duration::from_secs(state.config.auth.keys_reload_seconds.max(1)),
        stop_reloader.clone(),
    ));
    let signalled = async move {
        shutdown.await;
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "shutting down: draining streams"
        );
        lifecycle.begin_shutdown(grace);
    };
    let head_timeout = state.config.server.client_timeout();
    connections::serve(listener, app, signalled, head_timeout).await;
    stop_reloader.cancel();
    let _ = reloader.await;
    state.lifecycle.wait_for_turns().await;
    // Costs not yet added to the shared budget window.
    state.ledger.flush().await;
    state.store.close().await;
    tracing::info!("shut down");
    Ok(())
}
