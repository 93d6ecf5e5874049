//! Client authentication (the tenant's bearer API key) and who is calling: the
//! user from the trusted header (or the OpenAI `user` field), and the channel.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use crds::runtime_config::ChannelFeatures;

use crate::channel_registry::ChannelSettings;
use crate::conversation::Participant;
use crate::error::ApiError;
use crate::state::SharedState;

pub use crate::channel_registry::DEFAULT_CHANNEL;

/// Header selecting the channel a request comes through.
pub const CHANNEL_HEADER: &str = "x-switchboard-channel";
/// User id used when neither the trusted header nor the body names one.
pub const ANONYMOUS: &str = "anonymous";
/// Longest user or conversation id, in characters.
pub const MAX_ID_LEN: usize = 256;

/// Middleware: refuses requests without the tenant's API key (when one is set).
pub async fn require_api_key(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    // A browser on a web channel, already identified by the web edge.
    let from_edge = request.extensions().get::<EdgeUser>().is_some();
    if let Some(expected) = state.api_key.as_ref().filter(|_| !from_edge) {
        let presented = bearer_token(request.headers());
        let ok = presented.is_some_and(|p| constant_time_eq(p.as_bytes(), expected.as_bytes()));
        if !ok {
            let message = if presented.is_none() {
                "missing API key: send `Authorization: Bearer <key>`"
            } else {
                "invalid API key"
            };
            return ApiError::unauthorized(message).into_response();
        }
    }
    next.run(request).await
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a user or conversation id supplied by a client.
pub fn valid_id(value: &str, what: &str) -> Result<String, ApiError> {
    let too_long = value.chars().count() > MAX_ID_LEN;
    let value = value.trim();
    if value.is_empty() || too_long || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("{what} must be 1 to {MAX_ID_LEN} printable characters"),
        ));
    }
    Ok(value.to_owned())
}

/// The channel a request came in through, resolved from its path
/// (`/channels/{name}/...`) before the handler runs.
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
}

impl Caller {
    /// The user: trusted header first, then `body_user` (the OpenAI `user` field,
    /// checked whenever it is sent), then `anonymous`.
    pub fn user(&self, body_user: Option<&str>) -> Result<String, ApiError> {
        let body_user = body_user.map(|u| valid_id(u, "`user`")).transpose()?;
        match (&self.header_user, body_user) {
            (Some(user), _) => Ok(user.clone()),
            (None, Some(user)) => Ok(user),
            (None, None) => Ok(ANONYMOUS.to_owned()),
        }
    }

    /// `user` talking through the caller's channel, for the conversation service.
    pub fn participant(&self, user: String) -> Participant {
        Participant {
            user,
            channel: self.channel.clone(),
            language: self.language.clone(),
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
        let (channel, features, language) = (
            settings.name.clone(),
            settings.features,
            settings.language.clone(),
        );
        Ok(Self {
            header_user,
            channel,
            features,
            language: language.or(accept_language),
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
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("alice", "user").is_ok());
        assert!(valid_id("", "user").is_err());
        assert!(valid_id("a\u{7}b", "user").is_err());
        assert!(valid_id(&"x".repeat(300), "user").is_err());
    }
}
