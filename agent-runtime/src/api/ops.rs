//! Operational endpoints: liveness, readiness (database reachable), Prometheus
//! metrics and the OpenAPI document; plus JSON answers for unknown routes,
//! wrong methods and panics.

use std::any::Any;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::error::{ApiError, ErrorBody};
use crate::state::SharedState;

/// Routes that need no API key.
pub fn router(state: SharedState, openapi: Arc<serde_json::Value>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/openapi.json", get(openapi_json))
        .layer(Extension(openapi))
        .with_state(state)
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the conversation database answers and, in a cluster, the agent's
/// ChatChannels have been listed (before that every channel route would 404).
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Ready"), (status = 503, body = ErrorBody)))]
pub async fn readyz(State(state): State<SharedState>) -> Response {
    if state.channels.awaiting_list() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "channels_not_listed",
            "this agent's ChatChannels have not been read from the cluster yet",
        )
        .into_response();
    }
    match state.store.ping().await {
        Ok(()) => Json(json!({"status": "ready", "database": state.store.kind()})).into_response(),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unreachable",
                "the conversation database does not answer",
            )
            .into_response()
        }
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<SharedState>) -> Response {
    match state.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "cannot render metrics");
            ApiError::internal().into_response()
        }
    }
}

/// This OpenAPI document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "OpenAPI 3.1 document")))]
pub async fn openapi_json(
    Extension(doc): Extension<Arc<serde_json::Value>>,
) -> Json<serde_json::Value> {
    Json(doc.as_ref().clone())
}

/// 404 for any path without a route.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!(
            "no route for {method} {}; see /api/openapi.json",
            uri.path()
        ),
    )
}

/// 405 for a known path with the wrong method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not accept {method}", uri.path()),
    )
}

/// 500 with a JSON body when a handler panics.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %detail, "handler panicked");
    ApiError::internal().into_response()
}
