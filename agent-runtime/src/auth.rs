//! Client authentication (the bearer key that opens the request's channel, or the
//! admin key) and who is calling: the user from the trusted header (or the OpenAI
//! `user` field), and the channel. Whoever holds a channel's key is trusted to
//! name users on that channel (see docs/security.md).

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use crds::runtime_config::ChannelFeatures;

use crate::channel_registry::ChannelSettings;
use crate::conversation::Participant;
use crate::error::ApiError;
use crate::keys::{KeyCheck, KeyKind};
use crate::state::SharedState;

pub use crate::channel_registry::DEFAULT_CHANNEL;

/// Header selecting the channel a request comes through.
pub const CHANNEL_HEADER: &str = "x-switchboard-channel";
/// User id used when neither the trusted header nor the body names one.
pub const ANONYMOUS: &str = "anonymous";
/// Longest user or conversation id, in characters.
pub const MAX_ID_LEN: usize = 256;

/// Middleware: settles the request's channel (the path's, else the
/// `x-switchboard-channel` header's, else the agent's default channel; refused
/// when unknown, disabled or when no default is declared) and refuses requests
/// without the key that opens it: the channel's own key for a channel with one,
/// else the agent's client key; `/api/admin/*` needs the admin key. A browser
/// identified by the web edge needs no key. A runtime with no key at all runs
/// open.
pub async fn require_api_key(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let admin = path == "/api/admin" || path.starts_with("/api/admin/");
    // A browser on a web channel, already identified by the web edge.
    let from_edge = request.extensions().get::<EdgeUser>().is_some();
    let open = state.keys.is_open();
    // No key at all: refused before anything about channels is told.
    if !open && !from_edge && bearer_token(request.headers()).is_none() {
        return ApiError::unauthorized("missing API key: send `Authorization: Bearer <key>`")
            .into_response();
    }
    let kind = if admin {
        KeyKind::Admin
    } else {
        let channel = match request.extensions().get::<PathChannel>() {
            Some(from_path) => from_path.0.clone(),
            None => match root_channel(&state, request.headers()) {
                Ok(channel) => channel,
                Err(err) => return err.into_response(),
            },
        };
        let kind = if channel.own_key {
            KeyKind::Channel(channel.name.clone())
        } else {
            KeyKind::Client
        };
        request.extensions_mut().insert(PathChannel(channel));
        kind
    };
    if (from_edge && !admin) || open {
        return next.run(request).await;
    }
    let presented = bearer_token(request.headers());
    let refusal = match (state.keys.check(&kind, presented), &kind) {
        (KeyCheck::Accepted, _) => return next.run(request).await,
        (KeyCheck::Missing, _) => {
            ApiError::unauthorized("missing API key: send `Authorization: Bearer <key>`")
        }
        (KeyCheck::Wrong, KeyKind::Admin) => {
            ApiError::unauthorized("invalid API key: admin routes need the agent's admin key")
        }
        (KeyCheck::Wrong, KeyKind::Channel(name)) => ApiError::unauthorized(format!(
            "invalid API key: channel {name:?} is opened by its own key (its ChatChannel's status.clientKeySecret)"
        )),
        (KeyCheck::Wrong, KeyKind::Client) => ApiError::unauthorized("invalid API key"),
        (KeyCheck::Unavailable, KeyKind::Admin) => ApiError::forbidden(
            "admin_key_not_configured",
            "admin routes need the admin key, and this runtime has none (auth.adminKeyEnv, or `admin` in auth.keysDir)",
        ),
        (KeyCheck::Unavailable, KeyKind::Channel(name)) => ApiError::unauthorized(format!(
            "channel {name:?} is opened by its own key, which this runtime has not received yet; retry shortly"
        )),
        (KeyCheck::Unavailable, KeyKind::Client) => ApiError::unauthorized(
            "this channel is opened by the agent's client key, which this runtime has not received yet",
        ),
    };
    refusal.into_response()
}

/// The route other agents call this one on as a tool, opened only by their
/// `agent.<caller>` keys (see [`require_agent_key`]).
pub const AGENT_CALL_PATH: &str = "/agents/v1/chat/completions";
/// The internal channel agent calls come in through.
pub const AGENTS_CHANNEL: &str = "agents";

/// Middleware of [`AGENT_CALL_PATH`]: only a key from an `agent.<caller>` file of
/// `auth.keysDir` opens it (the client, admin and channel keys do not), whatever
/// the default channel; the call is served on the internal channel `agents`
/// (its sessions visible only there) as user `agent:<caller>`.
pub async fn require_agent_key(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(presented) = bearer_token(request.headers()) else {
        return ApiError::unauthorized("missing API key: send `Authorization: Bearer <key>`")
            .into_response();
    };
    let Some(caller) = state.keys.agent_caller(presented) else {
        return ApiError::unauthorized(
            "invalid API key: this route is opened only by the key another agent was given to call this one",
        )
        .into_response();
    };
    let mut channel = ChannelSettings::open(AGENTS_CHANNEL);
    channel.own_key = true;
    request
        .extensions_mut()
        .insert(PathChannel(std::sync::Arc::new(channel)));
    request
        .extensions_mut()
        .insert(EdgeUser(format!("agent:{caller}")));
    next.run(request).await
}

/// The channel of a root route: the one `x-switchboard-channel` names, else the
/// agent's default channel.
fn root_channel(
    state: &SharedState,
    headers: &HeaderMap,
) -> Result<std::sync::Arc<ChannelSettings>, ApiError> {
    match headers.get(CHANNEL_HEADER) {
        Some(value) => {
            let name = value.to_str().map_err(|_| {
                ApiError::bad_request(
                    "invalid_header",
                    format!("header {CHANNEL_HEADER} is not text"),
                )
            })?;
            Ok(state.channels.resolve(&valid_id(name, CHANNEL_HEADER)?)?)
        }
        None => Ok(state.channels.resolve_default()?),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks a user or conversation id supplied by a client.
pub fn valid_id(value: &str, what: &str) -> Result<String, ApiError> {
    let too_long = value.chars().count() > MAX_ID_LEN;
    let value = value.trim();
    if value.is_empty() || too_long || value.chars().any(char::is_control) {
        let message = format!("{what} must be 1 to {MAX_ID_LEN} printable characters");
        // A body field is named in `param` (`user`, `metadata.conversation_id`);
        // a header is named in the message only.
        return Err(match what.trim_matches('`') {
            field if !field.contains(' ') && !field.starts_with("x-") => {
                ApiError::bad_field("invalid_request", field, message)
            }
            _ => ApiError::bad_request("invalid_request", message),
        });
    }
    Ok(value.to_owned())
}

/// The channel a request came in through, resolved from its path
/// (`/channels/{name}/...`) or, on the root routes, by the key check, before the
/// handler runs.
#[derive(Clone, Debug)]
pub struct PathChannel(pub std::sync::Arc<ChannelSettings>);

/// The user a browser was identified as by the web edge (its signed visitor
/// cookie or its auth proxy's header), in place of the tenant's key and the
/// trusted user header. Only the server sets it.
#[derive(Clone, Debug)]
pub struct EdgeUser(pub String);

/// Who is calling and through which channel.
#[derive(Clone, Debug)]
pub struct Caller {
    /// User named by the trusted header.
    pub header_user: Option<String>,
    /// Channel name.
    pub channel: String,
    /// Features the channel serves.
    pub features: ChannelFeatures,
    /// Language for fallback responses: the channel's, else `Accept-Language`.
    pub language: Option<String>,
    /// Model id the OpenAI routes list and echo (the channel's alias).
    pub model_alias: Option<String>,
    /// Sessions are scoped to this channel (one opened by its own key).
    pub session_scope: Option<String>,
}

impl Caller {
    /// The user: trusted header first, then `body_user` (the OpenAI `user` field,
    /// checked whenever it is sent), then `anonymous`; on a channel opened by its
    /// own key, scoped to that channel (see [`crate::domain::scoped_user`]).
    pub fn user(&self, body_user: Option<&str>) -> Result<String, ApiError> {
        let body_user = body_user.map(|u| valid_id(u, "`user`")).transpose()?;
        let user = match (&self.header_user, body_user) {
            (Some(user), _) => user.clone(),
            (None, Some(user)) => user,
            (None, None) => ANONYMOUS.to_owned(),
        };
        Ok(crate::domain::scoped_user(
            self.session_scope.as_deref(),
            user,
        ))
    }

    /// `user` talking through the caller's channel, for the conversation service.
    pub fn participant(&self, user: String) -> Participant {
        Participant {
            user,
            channel: self.channel.clone(),
            language: self.language.clone(),
            author: None,
        }
    }

    /// Refuses when the channel does not serve history.
    pub fn require_history(&self) -> Result<(), ApiError> {
        if self.features.history {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                "feature_disabled",
                format!("channel {:?} does not serve session history", self.channel),
            ))
        }
    }
}

impl FromRequestParts<SharedState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        let header_text = |name: &str| -> Result<Option<String>, ApiError> {
            match parts.headers.get(name) {
                None => Ok(None),
                Some(v) => v.to_str().map(|s| Some(s.to_owned())).map_err(|_| {
                    ApiError::bad_request("invalid_header", format!("header {name} is not text"))
                }),
            }
        };
        let header_user = match parts.extensions.get::<EdgeUser>() {
            Some(EdgeUser(user)) => Some(user.clone()),
            None => header_text(state.user_header.as_str())?
                .map(|u| valid_id(&u, &format!("header {}", state.user_header)))
                .transpose()?,
        };
        let accept_language = header_text(header::ACCEPT_LANGUAGE.as_str())?
            .and_then(|v| v.split([',', ';']).next().map(|s| s.trim().to_owned()))
            .filter(|s| !s.is_empty() && s != "*");
        // The channel: from the path (`/channels/{name}/...`, already resolved),
        // else the header, else the default channel.
        let settings = match parts.extensions.get::<PathChannel>() {
            Some(from_path) => from_path.0.clone(),
            None => match header_text(CHANNEL_HEADER)? {
                Some(name) => state.channels.resolve(&valid_id(&name, CHANNEL_HEADER)?)?,
                None => state.channels.resolve_default()?,
            },
        };
        Ok(Self {
            header_user,
            channel: settings.name.clone(),
            features: settings.features,
            language: settings.language.clone().or(accept_language),
            model_alias: settings.model_alias.clone(),
            session_scope: settings.own_key.then(|| settings.name.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_parsed_and_compared() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "Bearer  sk-1 ".parse().expect("header"),
        );
        assert_eq!(bearer_token(&headers), Some("sk-1"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("alice", "user").is_ok());
        assert!(valid_id("", "user").is_err());
        assert!(valid_id("a\u{7}b", "user").is_err());
        assert!(valid_id(&"x".repeat(300), "user").is_err());
    }
}
