//! Per-channel routes: the whole client API again under `/channels/{name}/`
//! (the channel endpoint the operator publishes), with the channel taken from
//! the path, plus the webhook receiver. Unknown channels answer 404, disabled
//! ones 503; a browser origin listed in `allowedOrigins` gets CORS headers
//! (preflight included).

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tower::ServiceExt as _;
use utoipa::OpenApi as _;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, OpenApi, Required, Type};

use crate::auth::PathChannel;
use crate::channels::web::{Intercept, WebEdge};
use crate::error::ApiError;
use crate::state::SharedState;
use crds::runtime_config::ChannelType;

/// Prefix of every per-channel route.
pub const PREFIX: &str = "/channels/";

#[derive(Clone)]
struct Dispatch {
    state: SharedState,
    api: Router,
    web: WebEdge,
}

/// `/channels/{name}/webhook`.
pub fn webhook_router(state: SharedState) -> Router {
    Router::new()
        .route("/channels/{name}/webhook", post(super::webhook::receive))
        .route("/channels/{name}/slack/events", post(super::slack::receive))
        .route(
            "/channels/{name}/discord/interactions",
            post(super::discord_interactions::receive),
        )
        .with_state(state)
}

/// The fallback of the whole router: `/channels/{name}/...` served by `api` (the
/// authenticated client API with its own fallbacks), anything else a JSON 404.
/// A fallback rather than a route so that no path parameters of the outer match
/// reach the API's handlers.
pub fn fallback(state: SharedState, api: Router) -> Router {
    let web = WebEdge::new(
        state.keys.client_key().as_deref(),
        state.live.clone(),
        state.lifecycle.clone(),
    );
    Router::new()
        .fallback(dispatch)
        .with_state(Dispatch { state, api, web })
}

/// `/channels/<name>/<rest>?q` → (`name`, `/<rest>?q`).
fn split_path(uri: &Uri) -> Option<(&str, String)> {
    let tail = uri.path().strip_prefix(PREFIX)?;
    let (name, rest) = tail.split_once('/')?;
    let rest = match uri.query() {
        Some(q) => format!("/{rest}?{q}"),
        None => format!("/{rest}"),
    };
    Some((name, rest))
}

async fn dispatch(State(d): State<Dispatch>, request: Request) -> Response {
    // `/channels/{name}` of a web channel: the page, whose URLs are relative.
    if let Some(name) = request.uri().path().strip_prefix(PREFIX)
        && !name.contains('/')
        && d.state
            .channels
            .get(name)
            .is_some_and(|c| c.channel_type == ChannelType::Web)
    {
        let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
        if let Ok(location) = HeaderValue::from_str(&format!("{PREFIX}{name}/")) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return response;
    }
    let uri = request.uri().clone();
    let Some((name, rest)) = split_path(&uri) else {
        let (method, uri) = (request.method().clone(), request.uri().clone());
        return crate::api::ops::not_found(method, uri)
            .await
            .into_response();
    };
    // The web edge: the page (served even when the channel is disabled: the
    // page then shows the API's 503), and browser identity on API calls.
    let mut request = match d.state.channels.get(name) {
        Some(web) if web.channel_type == ChannelType::Web => {
            match d.web.intercept(&web, &rest, request) {
                Intercept::Answer(response) => return response,
                Intercept::Forward(request) => request,
            }
        }
        // The live-sync stream is the web edge's alone.
        _ if rest.split('?').next() == Some("/api/events") => {
            return crate::channels::web::events_not_served().into_response();
        }
        _ => request,
    };
    let channel = match d.state.channels.resolve(name) {
        Ok(channel) => channel,
        Err(err) => return ApiError::from(err).into_response(),
    };
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| channel.allows_origin(o))
        .map(str::to_owned);
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(origin.as_deref(), request.headers());
    }
    let Ok(uri) = rest.parse::<Uri>() else {
        return ApiError::bad_request("invalid_path", "the path after the channel is not valid")
            .into_response();
    };
    *request.uri_mut() = uri;
    request.extensions_mut().insert(PathChannel(channel));
    let mut response = match d.api.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if let Some(origin) = origin {
        allow_origin(response.headers_mut(), &origin);
    }
    response
}

fn allow_origin(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("x-session-id, retry-after"),
        );
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// Answers a CORS preflight: 204 with the allowances for a listed origin, 403
/// for any other.
fn preflight(origin: Option<&str>, request: &HeaderMap) -> Response {
    let Some(origin) = origin else {
        return ApiError::forbidden(
            "origin_not_allowed",
            "this origin is not in the channel's allowedOrigins",
        )
        .into_response();
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    allow_origin(headers, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    let requested = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("authorization, content-type"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(600));
    response
}

/// Adds a `/channels/{name}` copy of every client API path (`/v1/...`,
/// `/api/...` except the open ones) to the OpenAPI document, with the `name`
/// path parameter.
pub fn add_channel_paths(openapi: &mut OpenApi) {
    let copies: Vec<_> = openapi
        .paths
        .paths
        .iter()
        .filter(|(path, _)| {
            (path.starts_with("/v1/") || path.starts_with("/api/")) && *path != "/api/openapi.json"
        })
        .map(|(path, item)| {
            let mut item = item.clone();
            let name: Parameter = ParameterBuilder::new()
                .name("name")
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .description(Some("The ChatChannel the request comes in through"))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1)),
                ))
                .build();
            let params = item.parameters.get_or_insert_with(Vec::new);
            params.insert(0, name.into());
            (format!("/channels/{{name}}{path}"), item)
        })
        .collect();
    for (path, item) in copies {
        openapi.paths.paths.insert(path, item);
    }
    openapi.merge(WebhookDoc::openapi());
}

#[derive(utoipa::OpenApi)]
#[openapi(
    paths(super::webhook::receive, super::slack::receive, super::discord_interactions::receive, super::web::page_config_doc, super::web::events_doc),
    components(schemas(crate::channel_registry::webhook::WebhookAnswer)),
    tags((name = "channels", description = "Webhook and chat-app channels: signed messages in; answers POSTed signed to the callback URL or posted in the Slack thread or on Discord"))
)]
struct WebhookDoc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_channel_and_rest() {
        let uri: Uri = "/channels/web/api/sessions?limit=5".parse().expect("uri");
        assert_eq!(
            split_path(&uri),
            Some(("web", "/api/sessions?limit=5".to_owned()))
        );
        let uri: Uri = "/channels/web".parse().expect("uri");
        assert_eq!(split_path(&uri), None);
    }
}
