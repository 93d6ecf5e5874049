//! The web edge of a `web` channel (web/README.md, "Server contract"): the
//! chat page and its assets embedded in the binary with their cache and
//! security headers, `config.json`, the browser's identity without the
//! tenant's key (a signed visitor cookie, or the user named by an auth proxy's
//! header), the CSRF and `Origin` checks, and the live-sync event stream. No
//! conversation logic: an API call with a browser identity goes on to the
//! ordinary client API as that user.
//!
//! The signing key is derived from the tenant's API key (HMAC under a fixed
//! label): every replica of an agent mounts the same key Secret, so a cookie
//! issued by one replica verifies on all of them with nothing new to
//! distribute, and rotating the key signs every visitor out. A runtime without
//! a key (open, standalone) draws a random key at start.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::auth::EdgeUser;
use crate::channel_registry::ChannelSettings;
use crate::error::ApiError;
use crate::live::{LiveMessage, LiveSync};
use crate::shutdown::Lifecycle;

/// The visitor cookie: `<id>.<hex HMAC-SHA256(id)>`.
pub const VISITOR_COOKIE: &str = "switchboard_visitor";
/// The CSRF cookie the page reads and echoes in [`CSRF_HEADER`].
pub const CSRF_COOKIE: &str = "switchboard_csrf";
/// The CSRF header of state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

const INDEX_HTML: &[u8] = include_bytes!("../../../web/dist/index.html");
const APP_JS: &[u8] = include_bytes!("../../../web/dist/assets/app.js");
const STYLE_CSS: &[u8] = include_bytes!("../../../web/dist/assets/style.css");
const EMBED_JS: &[u8] = include_bytes!("../../../web/dist/assets/embed.js");

const CSP_BASE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'";
const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const YEAR: u32 = 31_536_000;
const PING: Duration = Duration::from_secs(15);

type HmacSha256 = Hmac<Sha256>;

/// The chat page's configuration (`GET /channels/{name}/config.json`).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageConfig {
    /// The ChatChannel's name.
    pub channel: String,
    /// `spec.web.title`, else the channel's name.
    pub title: String,
    /// First assistant message of a new chat.
    pub greeting: Option<String>,
    /// UI language (he and ar lay out right to left).
    pub language: String,
    /// Base path of the channel's API, e.g. `/channels/web`.
    pub api_base: String,
    /// Features the channel serves.
    pub features: PageFeatures,
    /// The visitor's live-sync event stream (`text/event-stream`).
    pub events: Option<String>,
    /// CSRF double submit: the header to send and the cookie holding its value.
    pub csrf: PageCsrf,
}

/// Features of a web channel, as the page sees them.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PageFeatures {
    /// Sessions are listed and read back.
    pub history: bool,
    /// Full-text search over sessions.
    pub search: bool,
    /// Answers are streamed.
    pub streaming: bool,
}

/// Where the page finds and sends its CSRF token.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct PageCsrf {
    /// Header of state-changing requests.
    pub header: String,
    /// Cookie (readable by the page) holding the token.
    pub cookie: String,
}

/// The route as the OpenAPI document describes it (the web edge answers it
/// before routing).
#[utoipa::path(get, path = "/channels/{name}/config.json", tag = "channels",
    params(("name" = String, Path, description = "A ChatChannel of type web")),
    security(()),
    responses(
        (status = 200, description = "The chat page's configuration; sets the visitor and CSRF cookies when absent", body = PageConfig),
        (status = 404, description = "No such channel, or not of type web", body = crate::error::ErrorBody),
    ))]
pub async fn page_config_doc() {}

/// The live-sync stream as the OpenAPI document describes it (the web edge
/// answers it before routing).
#[utoipa::path(get, path = "/channels/{name}/api/events", tag = "channels",
    params(("name" = String, Path, description = "A ChatChannel of type web")),
    security(()),
    responses(
        (status = 200, description = "The visitor's live-sync stream (server-sent events, kept open): `retry: 2000`, a `: ping` comment every 15 s, and one `data:` line per change to the visitor's sessions made on any pod of the agent, by the page or through the API with the key: `{\"type\": \"session.created\" | \"session.updated\" | \"session.deleted\" | \"message.created\", \"session_id\": \"...\"}` (`session_id` absent, `session.updated`: reload the list)", content_type = "text/event-stream", body = String),
        (status = 401, description = "No valid visitor cookie (open the chat page first), or the auth proxy's header is missing", body = crate::error::ErrorBody),
        (status = 403, description = "A foreign `Origin`", body = crate::error::ErrorBody),
        (status = 404, description = "No such channel, not of type web, or called with the API key (the stream serves the chat page only)", body = crate::error::ErrorBody),
    ))]
pub async fn events_doc() {}

/// The web edge's own state: the cookie key and the live-sync fan-out.
#[derive(Clone)]
pub struct WebEdge {
    key: Arc<[u8; 32]>,
    live: LiveSync,
    lifecycle: Lifecycle,
}

/// What the edge does with a request under `/channels/{name}/` of a web channel.
pub enum Intercept {
    /// Answered here.
    Answer(Response),
    /// Goes on to the client API, as the user of `EdgeUser` when one was set
    /// (a successful change is announced to the user's pages by the API's
    /// `crate::api::live` layer).
    Forward(Request),
}

impl WebEdge {
    /// The key from the tenant's API key, else random (see the module doc).
    pub fn new(api_key: Option<&str>, live: LiveSync, lifecycle: Lifecycle) -> Self {
        let key: [u8; 32] = match api_key {
            Some(secret) => {
                let mut mac = hmac_with(secret.as_bytes());
                mac.update(b"switchboard web visitor cookies v1");
                mac.finalize().into_bytes().into()
            }
            None => {
                let mut key = [0u8; 32];
                key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                key
            }
        };
        Self {
            key: Arc::new(key),
            live,
            lifecycle,
        }
    }

    fn sign(&self, label: &str, value: &str) -> String {
        let mut mac = hmac_with(&self.key[..]);
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn visitor_cookie_value(&self, id: &str) -> String {
        format!("{id}.{}", self.sign("visitor", id))
    }

    /// The visitor id of a correctly signed cookie value.
    fn verify_visitor(&self, value: &str) -> Option<String> {
        let (id, signature) = value.split_once('.')?;
        let valid_id = (16..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        (valid_id && constant_time_eq(signature.as_bytes(), self.sign("visitor", id).as_bytes()))
            .then(|| id.to_owned())
    }

    /// The CSRF token bound to `user` (a planted cookie of another value fails).
    fn csrf_token(&self, user: &str) -> String {
        self.sign("csrf", user)[..32].to_owned()
    }

    /// Handles the page, its assets, `config.json` and the event stream, and
    /// checks a browser's API call; anything else is forwarded untouched.
    pub fn intercept(&self, channel: &ChannelSettings, rest: &str, request: Request) -> Intercept {
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let base = format!("/channels/{}", channel.name);
        let get = request.method() == Method::GET || request.method() == Method::HEAD;
        match path {
            "/" | "/index.html" if get => {
                return Intercept::Answer(self.page(channel, &base, request.headers()));
            }
            "/config.json" if get => {
                return Intercept::Answer(self.config(channel, &base, request.headers()));
            }
            _ if path.starts_with("/assets/") => {
                return Intercept::Answer(if get {
                    asset(path, query)
                } else {
                    ApiError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method_not_allowed",
                        "assets are read with GET",
                    )
                    .into_response()
                });
            }
            _ => {}
        }
        let is_api = path.starts_with("/api/") || path.starts_with("/v1/");
        if path == "/api/events" && request.headers().contains_key(header::AUTHORIZATION) {
            return Intercept::Answer(events_not_served().into_response());
        }
        // The tenant's key (server-to-server calls) is accepted as before.
        // So is a CORS preflight (answered by the routes).
        if !is_api
            || request.method() == Method::OPTIONS
            || request.headers().contains_key(header::AUTHORIZATION)
        {
            return Intercept::Forward(request);
        }
        let user = match self.browser_user(channel, request.headers()) {
            Ok(Some(user)) => user,
            // No browser identity at all on a runtime without a key: open as before.
            Ok(None) => return Intercept::Forward(request),
            Err(err) => return Intercept::Answer(err.into_response()),
        };
        if let Err(err) = self.check_request(channel, &user, &request) {
            return Intercept::Answer(err.into_response());
        }
        if path == "/api/events" && get {
            // Events carry the stored user: scoped to the channel when it is
            // opened by its own key, as its sessions are.
            let stored =
                crate::domain::scoped_user(channel.own_key.then_some(channel.name.as_str()), user);
            return Intercept::Answer(self.events(stored));
        }
        let mut request = request;
        request.extensions_mut().insert(EdgeUser(user));
        Intercept::Forward(request)
    }

    /// The browser's user: the proxy's header, or the signed visitor cookie.
    /// `Ok(None)`: neither is expected (no key, no cookie, no proxy mode).
    fn browser_user(
        &self,
        channel: &ChannelSettings,
        headers: &HeaderMap,
    ) -> Result<Option<String>, ApiError> {
        if let Some(name) = &channel.web.trusted_header {
            return match proxy_user(headers, name) {
                Some(user) => Ok(Some(user)),
                None => Err(ApiError::unauthorized(format!(
                    "this chat needs the {name} header of the auth proxy in front"
                ))),
            };
        }
        match cookie(headers, VISITOR_COOKIE) {
            Some(value) => match self.verify_visitor(value) {
                Some(id) => Ok(Some(format!("visitor:{id}"))),
                None => Err(no_visitor()),
            },
            None if headers.contains_key(header::COOKIE)
                || headers.contains_key(header::ORIGIN) =>
            {
                Err(no_visitor())
            }
            None => Ok(None),
        }
    }

    /// Foreign `Origin` and, on state changes, the CSRF token.
    fn check_request(
        &self,
        channel: &ChannelSettings,
        user: &str,
        request: &Request,
    ) -> Result<(), ApiError> {
        let headers = request.headers();
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            if !same_origin(headers, origin) && !embeds(channel, origin) {
                return Err(ApiError::forbidden(
                    "cross_origin",
                    "requests from other sites are refused",
                ));
            }
        }
        if !is_safe(request.method()) {
            let expected = self.csrf_token(user);
            let sent = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let cookie = cookie(headers, CSRF_COOKIE).unwrap_or_default();
            let ok = constant_time_eq(sent.as_bytes(), expected.as_bytes())
                && constant_time_eq(cookie.as_bytes(), expected.as_bytes());
            if !ok {
                return Err(ApiError::forbidden(
                    "csrf_failed",
                    "missing or wrong CSRF token; reload the page",
                ));
            }
        }
        Ok(())
    }

    /// The cookies to set: a visitor (unless proxied or present and valid)
    /// and the CSRF token bound to the user.
    fn identity_cookies(
        &self,
        channel: &ChannelSettings,
        base: &str,
        headers: &HeaderMap,
    ) -> Vec<String> {
        let https = headers
            .get("x-forwarded-proto")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        // Embedded on another site over https: third-party cookies, partitioned (CHIPS).
        let embedded = https && !channel.allowed_origins.is_empty();
        let attrs = |strict: bool| {
            let same_site = match (embedded, strict) {
                (true, _) => "SameSite=None; Secure; Partitioned",
                (false, true) => "SameSite=Strict",
                (false, false) => "SameSite=Lax",
            };
            let secure = if https && !embedded { "; Secure" } else { "" };
            format!("Path={base}/; {same_site}{secure}; Max-Age={YEAR}")
        };
        let mut out = Vec::new();
        let user = match &channel.web.trusted_header {
            Some(name) => match proxy_user(headers, name) {
                Some(user) => user,
                None => return out,
            },
            None => match cookie(headers, VISITOR_COOKIE).and_then(|v| self.verify_visitor(v)) {
                Some(id) => format!("visitor:{id}"),
                None => {
                    let id = uuid::Uuid::new_v4().simple().to_string();
                    out.push(format!(
                        "{VISITOR_COOKIE}={}; HttpOnly; {}",
                        self.visitor_cookie_value(&id),
                        attrs(false)
                    ));
                    format!("visitor:{id}")
                }
            },
        };
        let token = self.csrf_token(&user);
        if cookie(headers, CSRF_COOKIE) != Some(token.as_str()) {
            out.push(format!("{CSRF_COOKIE}={token}; {}", attrs(true)));
        }
        out
    }

    fn page(&self, channel: &ChannelSettings, base: &str, headers: &HeaderMap) -> Response {
        let mut response = (StatusCode::OK, INDEX_HTML).into_response();
        let out = response.headers_mut();
        security_headers(out, &frame_ancestors(channel), false);
        out.insert(header::CONTENT_TYPE, HeaderValue::from_static(HTML));
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        set_cookies(out, self.identity_cookies(channel, base, headers));
        response
    }

    fn config(&self, channel: &ChannelSettings, base: &str, headers: &HeaderMap) -> Response {
        let body = PageConfig {
            channel: channel.name.clone(),
            title: channel
                .web
                .title
                .clone()
                .unwrap_or_else(|| channel.name.clone()),
            greeting: channel.greeting.clone(),
            language: channel.language.clone().unwrap_or_else(|| "en".to_owned()),
            api_base: base.to_owned(),
            features: PageFeatures {
                history: channel.features.history,
                search: channel.features.search,
                streaming: channel.features.streaming,
            },
            events: Some(format!("{base}/api/events")),
            csrf: PageCsrf {
                header: CSRF_HEADER.to_owned(),
                cookie: CSRF_COOKIE.to_owned(),
            },
        };
        let mut response = axum::Json(body).into_response();
        let out = response.headers_mut();
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        out.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        set_cookies(out, self.identity_cookies(channel, base, headers));
        response
    }

    /// `text/event-stream` of `user`'s changes (made on any pod): `retry`, a
    /// ping every 15 s, one `data:` line per change; ends when the runtime
    /// shuts down.
    fn events(&self, user: String) -> Response {
        let receiver = self.live.subscribe();
        let lifecycle = self.lifecycle.clone();
        let changes = futures::stream::unfold(receiver, move |mut receiver| {
            let user = user.clone();
            async move {
                loop {
                    match receiver.recv().await {
                        Ok(LiveMessage::Event(event)) if event.user == user => {
                            let line = json!({"type": event.kind, "session_id": event.session_id});
                            return Some((format!("data: {line}\n\n"), receiver));
                        }
                        Ok(LiveMessage::Event(_)) => {}
                        // Missed some: a list-only event makes the page reload.
                        Ok(LiveMessage::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            return Some((
                                "data: {\"type\":\"session.updated\"}\n\n".to_owned(),
                                receiver,
                            ));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        let pings = futures::stream::unfold((), |()| async {
            tokio::time::sleep(PING).await;
            Some((": ping\n\n".to_owned(), ()))
        });
        let live = self.live.clone();
        let body = futures::stream::once(async move {
            // Connected once the other pods' changes arrive here too.
            live.listening(Duration::from_secs(3)).await;
            "retry: 2000\n: connected\n\n".to_owned()
        })
        .chain(futures::stream::select(changes, pings))
        .take_until(async move { lifecycle.cancelled().await })
        .map(Ok::<_, std::convert::Infallible>);
        let mut response = Response::new(Body::from_stream(body));
        let out = response.headers_mut();
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        out.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }
}

fn asset(path: &str, query: &str) -> Response {
    let (bytes, content_type, widget) = match path {
        "/assets/app.js" => (APP_JS, JS, false),
        "/assets/style.css" => (STYLE_CSS, CSS, false),
        "/assets/embed.js" => (EMBED_JS, JS, true),
        _ => {
            return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such asset")
                .into_response();
        }
    };
    let current = version(path, bytes);
    let pinned = !widget
        && query
            .split('&')
            .any(|pair| pair.strip_prefix("v=") == Some(current.as_str()));
    let mut response = (StatusCode::OK, bytes).into_response();
    let out = response.headers_mut();
    security_headers(out, "'none'", widget);
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if pinned {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    response
}

/// First 12 hex digits of the file's sha256 (the `?v=` of `index.html`).
fn version(path: &str, bytes: &[u8]) -> String {
    static VERSIONS: OnceLock<[String; 3]> = OnceLock::new();
    let versions = VERSIONS.get_or_init(|| {
        [APP_JS, STYLE_CSS, EMBED_JS].map(|b| hex::encode(Sha256::digest(b))[..12].to_owned())
    });
    match path {
        "/assets/app.js" => versions[0].clone(),
        "/assets/style.css" => versions[1].clone(),
        _ => hex::encode(Sha256::digest(bytes))[..12].to_owned(),
    }
}

fn security_headers(out: &mut HeaderMap, frame_ancestors: &str, cross_origin: bool) {
    let csp = format!("{CSP_BASE}; frame-ancestors {frame_ancestors}");
    if let Ok(value) = HeaderValue::from_str(&csp) {
        out.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    out.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    out.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static(if cross_origin {
            "cross-origin"
        } else {
            "same-origin"
        }),
    );
    out.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
}

/// `'none'`, or `'self'` and each allowed origin (a `*` never embeds).
fn frame_ancestors(channel: &ChannelSettings) -> String {
    let origins: Vec<&str> = channel
        .allowed_origins
        .iter()
        .map(|o| o.trim_end_matches('/'))
        .filter(|o| *o != "*" && valid_origin(o))
        .collect();
    if origins.is_empty() {
        "'none'".to_owned()
    } else {
        format!("'self' {}", origins.join(" "))
    }
}

/// `scheme://host[:port]` with nothing that could end or extend a CSP directive.
fn valid_origin(origin: &str) -> bool {
    (origin.starts_with("https://") || origin.starts_with("http://"))
        && origin
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":/.-[]".contains(&b))
}

/// An origin listed in `allowedOrigins` (`*` excluded: it never carries a browser identity).
fn embeds(channel: &ChannelSettings, origin: &str) -> bool {
    channel
        .allowed_origins
        .iter()
        .any(|o| o != "*" && o.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

fn same_origin(headers: &HeaderMap, origin: &str) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

fn proxy_user(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::auth::valid_id(v, name).ok())
}

/// `/api/events` asked for with the API key, or on a channel that is not of
/// type web.
pub fn events_not_served() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "events_not_served",
        "the live-sync stream /api/events serves the chat page of a web channel (visitor cookie or auth proxy), not API-key callers",
    )
}

fn no_visitor() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "no_visitor",
        "no valid visitor cookie: open the chat page first",
    )
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn set_cookies(out: &mut HeaderMap, cookies: Vec<String>) {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            out.append(header::SET_COOKIE, value);
        }
    }
}

fn hmac_with(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(_) => unreachable!("HMAC accepts every key length"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
