//! The one error type every HTTP handler returns, and the mapping of the
//! layers' own errors (conversation, storage, limits, channels) to it, rendered as
//! `{"error": {"code": ..., "message": ..., "type": ...}}` with the right status.
//! `type` mirrors OpenAI's error types so the official SDKs map it to their
//! exception classes.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::channel_registry::ChannelError;
use crate::conversation::ConversationError;
use crate::db::StoreError;
use crate::limits::{LimitScope, Overloaded, RateLimited};
use crate::providers::{ChainError, ProviderError};

/// An error answered to a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `session_not_found`.
    pub code: &'static str,
    /// What was wrong and, where it helps, what to do.
    pub message: String,
    /// Seconds to send in `Retry-After`.
    pub retry_after: Option<u64>,
    /// The request field at fault (OpenAI's `param`), when one is.
    pub param: Option<String>,
}

/// The JSON error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Details of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// OpenAI-style error type (`invalid_request_error`, `authentication_error`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, e.g. `response_format` or
    /// `messages[1].content[1]` (OpenAI's `param`); `null` when no one field
    /// is (always present, as in OpenAI's error object).
    pub param: Option<String>,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            param: None,
        }
    }

    /// 400 for a request field that is wrong or cannot be honoured, naming it.
    pub fn bad_field(
        code: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            param: Some(field.into()),
            ..Self::bad_request(code, message)
        }
    }

    /// 400 `code` when `text` holds a NUL character (U+0000), naming `field`:
    /// Postgres's `text` cannot store one, so it is refused on every backend
    /// alike, before anything is stored or sent to a model.
    pub fn refuse_nul(
        code: &'static str,
        text: &str,
        field: impl FnOnce() -> String,
    ) -> Result<(), Self> {
        if !text.contains('\0') {
            return Ok(());
        }
        let field = field();
        Err(Self::bad_field(
            code,
            field.clone(),
            format!("{field} contains a NUL character (U+0000), which cannot be stored"),
        ))
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for a session the caller does not have.
    pub fn session_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no session {id:?} for this user"),
        )
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
    }

    /// 403 for a feature the channel does not serve.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 500 without leaking internals; the cause is logged by the caller.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error; see the runtime's log",
        )
    }

    /// The OpenAI error type for this status.
    fn openai_type(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_client_error() => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                kind: self.openai_type().to_owned(),
                param: self.param.clone(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => wrong_shape(&e),
            JsonRejection::JsonSyntaxError(e) => Self::bad_request(
                "invalid_json",
                format!("request body is not valid JSON: {}", e.body_text()),
            ),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::payload_too_large(),
            other => match find_source::<BodyStalled>(&other) {
                Some(stalled) => Self::body_stalled(stalled),
                None => Self::new(other.status(), "invalid_request", other.body_text()),
            },
        }
    }
}

/// How axum's `Json` reports a body that is JSON but not the request's shape:
/// serde's error and the path to where it happened.
type PathError = serde_path_to_error::Error<serde_json::Error>;

/// A body that is JSON but not the request's shape, naming the field at fault
/// when there is one.
fn wrong_shape(e: &axum::extract::rejection::JsonDataError) -> ApiError {
    let Some(err) = find_source::<PathError>(e) else {
        return ApiError::bad_request(
            "invalid_request",
            format!("request body has a wrong field or type: {}", e.body_text()),
        );
    };
    // serde's derives also read a struct from an array, by position.
    if let Some(serde_path_to_error::Segment::Seq { .. }) = err.path().iter().next() {
        return ApiError::bad_request(
            "invalid_request",
            "request body must be a JSON object, not an array",
        );
    }
    ApiError::body_field(err)
}

impl ApiError {
    /// 400 for a JSON body read with `serde_path_to_error` whose field is of the
    /// wrong type, missing or unknown, naming it in `param` (see
    /// [`field_at_fault`]); the body as a whole when no field is at fault.
    pub fn body_field(err: &PathError) -> Self {
        let field = field_at_fault(err.path(), &err.inner().to_string());
        let message = format!(
            "request body has a wrong field or type: {}: {}",
            field.as_deref().unwrap_or("the body"),
            err.inner()
        );
        match field {
            Some(field) => Self::bad_field("invalid_request", field, message),
            None => Self::bad_request("invalid_request", message),
        }
    }
}

/// The first error of type `T` in `err`'s chain of sources (axum wraps the
/// deserializer's error; its documentation reads it this way).
pub(crate) fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// The request field a deserialization error is about, as OpenAI's `param`
/// spells it (`messages[0].content`): the path serde was at (an unknown
/// field's own), and for a missing field the field itself (serde reports it
/// at its parent). `None` when the
/// fault is the body as a whole (not an object, say).
fn field_at_fault(path: &serde_path_to_error::Path, error: &str) -> Option<String> {
    let path = path.to_string();
    let parent = (path != ".").then_some(path);
    let missing = error
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned());
    match (parent, missing) {
        (Some(parent), Some(name)) => Some(format!("{parent}.{name}")),
        (None, Some(name)) => Some(name),
        (parent, None) => parent,
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        type QueryError = serde_path_to_error::Error<serde_urlencoded::de::Error>;
        match find_source::<QueryError>(&rejection)
            .map(|err| (err, field_at_fault(err.path(), &err.inner().to_string())))
        {
            Some((err, Some(field))) => Self::bad_field(
                "invalid_query",
                field.clone(),
                format!("invalid query parameter {field}: {}", err.inner()),
            ),
            _ => Self::bad_request(
                "invalid_query",
                format!("invalid query parameters: {}", rejection.body_text()),
            ),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(
            "invalid_path",
            format!("invalid path: {}", rejection.body_text()),
        )
    }
}

/// The error a request body ends with when it stops arriving
/// (`server::stalled_body`); [`ApiError::body_stalled`] answers it.
#[derive(Debug)]
pub struct BodyStalled(pub std::time::Duration);

impl std::fmt::Display for BodyStalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body stalled: nothing more of it arrived for {} s (server.clientTimeoutSeconds)",
            self.0.as_secs()
        )
    }
}

impl std::error::Error for BodyStalled {}

impl ApiError {
    /// 408 for a body that stopped arriving.
    pub fn body_stalled(stalled: &BodyStalled) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            stalled.to_string(),
        )
    }

    /// 413 for a body over the limit.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is larger than the runtime accepts (limits.maxRequestBytes)",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(id) => Self::session_not_found(&id),
            // A value Postgres cannot store (U+0000 in text or JSON) that no
            // edge check caught: the request's fault, not the database's.
            StoreError::Database(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("22021" | "22P05")) =>
            {
                tracing::warn!(error = %db, "a value the database cannot store");
                Self::bad_request(
                    "invalid_request",
                    "the request holds a character the database cannot store (U+0000)",
                )
            }
            err @ StoreError::Database(_) => {
                tracing::error!(error = %err, "database error");
                Self {
                    retry_after: Some(2),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "database_error",
                        "the conversation database is unavailable; try again shortly",
                    )
                }
            }
            other => {
                tracing::error!(error = %other, "database error");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_error",
                    "the conversation database is unavailable; try again shortly",
                )
            }
        }
    }
}

impl From<RateLimited> for ApiError {
    fn from(limited: RateLimited) -> Self {
        let message = match limited.scope {
            LimitScope::User => "too many requests from this user; slow down and retry later",
            LimitScope::Channel => "too many requests on this channel; retry later",
            LimitScope::Tokens => "this agent used its token budget for now; retry later",
        };
        Self {
            retry_after: Some(ceil_secs(limited.retry_after)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }
}

fn ceil_secs(d: std::time::Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl From<Overloaded> for ApiError {
    fn from(_: Overloaded) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the agent is at capacity; retry shortly",
            )
        }
    }
}

impl From<ChannelError> for ApiError {
    fn from(err: ChannelError) -> Self {
        match &err {
            ChannelError::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "channel_not_found", err.to_string())
            }
            ChannelError::NoDefault(_) => {
                Self::new(StatusCode::NOT_FOUND, "no_default_channel", err.to_string())
            }
            ChannelError::Disabled(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "channel_disabled",
                err.to_string(),
            ),
        }
    }
}

/// The HTTP error for a chain that failed with no fallback response.
fn upstream_error(err: &ChainError) -> ApiError {
    match err.last() {
        Some(ProviderError::Timeout(_)) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "the model did not answer in time; try again",
        ),
        Some(ProviderError::Status {
            status: 429,
            retry_after,
            ..
        }) => ApiError {
            retry_after: retry_after.map(|d| d.as_secs().max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "upstream_rate_limited",
                "the model provider is rate limiting this agent; try again later",
            )
        },
        // The model's API refused the request itself (a field it does not
        // take, a value out of its range): the client's to fix, so a 400
        // with the model's words, not a 502 an SDK would retry.
        _ if let Some(message) = err.invalid_request() => ApiError::bad_request(
            "upstream_invalid_request",
            format!("the model refused the request as invalid: {message}"),
        ),
        _ => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("the model could not answer: {err}"),
        ),
    }
}

impl From<ConversationError> for ApiError {
    fn from(err: ConversationError) -> Self {
        match err {
            ConversationError::ShuttingDown => Self {
                retry_after: Some(1),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "this runtime is shutting down; retry (another replica will answer)",
                )
            },
            ConversationError::RateLimited(limited) => limited.into(),
            ConversationError::Overloaded(overloaded) => overloaded.into(),
            ConversationError::Store(err) => err.into(),
            ConversationError::ContextTooLong(err) => {
                Self::bad_field("context_length_exceeded", "messages", err.to_string())
            }
            ConversationError::Upstream(err) => upstream_error(&err),
            ConversationError::BudgetSpent(spent) => Self {
                retry_after: Some(spent.retry_after().as_secs().max(1)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "budget_exceeded",
                    format!(
                        "this agent's monthly budget ({} {}) is spent; it renews at {} (spec.budget)",
                        spent.budget,
                        spent.currency,
                        spent.resets_at.format("%Y-%m-%dT%H:%M:%SZ")
                    ),
                )
            },
            ConversationError::Unsupported(refusal) => Self::bad_field(
                "unsupported_parameter",
                refusal.field.clone(),
                refusal.to_string(),
            ),
            ConversationError::ImagesNotAccepted { field } => Self::bad_field(
                "unsupported_content",
                field.clone(),
                format!(
                    "{field} is an image, and no model of this agent accepts images; \
                     send the message without image parts"
                ),
            ),
            err @ (ConversationError::MessageGone | ConversationError::NothingStored(_)) => {
                tracing::error!(error = %err, "conversation error");
                Self::internal()
            }
        }
    }
}

/// Extractors whose rejections answer with [`ApiError`] bodies.
pub mod extract {
    use axum::extract::{FromRequest, FromRequestParts};

    use super::ApiError;

    /// `axum::Json` answering bad bodies with JSON errors.
    #[derive(FromRequest)]
    #[from_request(via(axum::Json), rejection(ApiError))]
    pub struct Json<T>(pub T);

    /// `axum::extract::Query` answering bad queries with JSON errors.
    #[derive(FromRequestParts)]
    #[from_request(via(axum::extract::Query), rejection(ApiError))]
    pub struct Query<T>(pub T);

    /// `axum::extract::Path` answering bad paths with JSON errors.
    #[derive(FromRequestParts)]
    #[from_request(via(axum::extract::Path), rejection(ApiError))]
    pub struct Path<T>(pub T);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::FromRequest;

    /// What the runtime answers for `body` sent as the request `T`.
    async fn refusal<T: serde::de::DeserializeOwned>(body: &str) -> ApiError {
        let request = axum::http::Request::builder()
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_owned()))
            .unwrap();
        match Json::<T>::from_request(request, &()).await {
            Ok(_) => panic!("{body} was accepted"),
            Err(rejection) => rejection.into(),
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Chat {
        messages: Vec<Message>,
        max_tokens: Option<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Message {
        role: String,
        content: String,
    }

    #[tokio::test]
    async fn a_body_of_the_wrong_shape_names_the_field_at_fault() {
        for (body, field, says) in [
            (r#"{"messages":"hi"}"#, "messages", "invalid type: string"),
            (
                r#"{"messages":[],"max_tokens":-1}"#,
                "max_tokens",
                "invalid value: integer `-1`",
            ),
            (
                r#"{"messages":[{"role":"user","content":7}]}"#,
                "messages[0].content",
                "invalid type: integer `7`",
            ),
            (
                r#"{"max_tokens":3}"#,
                "messages",
                "missing field `messages`",
            ),
            (
                r#"{"messages":[{"content":"x"}]}"#,
                "messages[0].role",
                "missing field `role`",
            ),
        ] {
            let err = refusal::<Chat>(body).await;
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(err.code, "invalid_request", "{body}");
            assert_eq!(err.param.as_deref(), Some(field), "{body}: {}", err.message);
            assert!(
                err.message.starts_with(&format!(
                    "request body has a wrong field or type: {field}: "
                )),
                "{body}: {}",
                err.message
            );
            assert!(err.message.contains(says), "{body}: {}", err.message);
            assert_eq!(err.body().error.param.as_deref(), Some(field));
        }
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Search {
        q: String,
        limit: Option<i64>,
    }

    #[tokio::test]
    async fn a_query_parameter_of_the_wrong_type_or_missing_is_named() {
        use axum::extract::{FromRequestParts, Query};
        for (query, field, says) in [
            ("q=x&limit=abc", "limit", "invalid digit"),
            ("limit=3", "q", "missing field `q`"),
        ] {
            let (mut parts, ()) = axum::http::Request::builder()
                .uri(format!("/search?{query}"))
                .body(())
                .unwrap()
                .into_parts();
            let Err(rejection) = Query::<Search>::from_request_parts(&mut parts, &()).await else {
                panic!("{query} was accepted");
            };
            let err = ApiError::from(rejection);
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(err.code, "invalid_query", "{query}");
            assert_eq!(
                err.param.as_deref(),
                Some(field),
                "{query}: {}",
                err.message
            );
            assert!(
                err.message
                    .starts_with(&format!("invalid query parameter {field}: ")),
                "{query}: {}",
                err.message
            );
            assert!(err.message.contains(says), "{query}: {}", err.message);
        }
    }

    #[tokio::test]
    async fn a_body_that_is_not_an_object_names_no_field() {
        let err = refusal::<Chat>("7").await;
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(err.param, None, "{}", err.message);
        assert!(
            err.message.starts_with(
                "request body has a wrong field or type: the body: invalid type: integer `7`"
            ),
            "{}",
            err.message
        );
        // (An array whose first element fails: serde's derives read a struct
        // from an array by position, so the error's path starts at `[0]`.)
        for array in ["[1]", r#"[{"role":"user","content":"hi"}]"#] {
            let err = refusal::<Chat>(array).await;
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{array}");
            assert_eq!(err.param, None, "{array}: {}", err.message);
            assert_eq!(
                err.message, "request body must be a JSON object, not an array",
                "{array}"
            );
        }
        let syntax = refusal::<Chat>(r#"{"messages":"#).await;
        assert_eq!(syntax.code, "invalid_json");
        assert_eq!(syntax.param, None);
    }
}
