//! The one Slack Web API call the runtime makes: `chat.postMessage`, in a
//! thread when the conversation has one, with the bot token. A `429` comes
//! back with Slack's `Retry-After` so the outbox waits exactly that long.

use std::time::Duration;

use serde_json::{Value, json};

/// Timeout of one Web API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Wait when a 429 names no `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a post did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// Slack answered 429: try again after this long.
    #[error("Slack rate limited chat.postMessage; retry after {}s", .0.as_secs_f64())]
    RateLimited(Duration),
    /// Slack could not be reached.
    #[error("Slack unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// An HTTP status other than 2xx or 429.
    #[error("Slack answered HTTP {0}")]
    Status(u16),
    /// `ok: false` with Slack's error code (`invalid_auth`, `channel_not_found`, ...).
    #[error("Slack refused chat.postMessage: {0}")]
    Refused(String),
}

/// `ok: false` codes of `chat.postMessage` after which the post may go
/// through later: Slack's side failed or was busy, or the token is refused
/// ([`AUTH_ERRORS`]: the channel shows `Unauthorized` meanwhile, and the
/// answers waiting are delivered once the Secret holds a good token). Every
/// other code (`channel_not_found`, `not_in_channel`, `is_archived`,
/// `msg_too_long`, ...) will be refused again.
pub fn is_transient_error(code: &str) -> bool {
    matches!(
        code,
        "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout"
            | "ratelimited"
    ) || AUTH_ERRORS.contains(&code)
}

/// Escapes the three characters Slack reads as control characters in message
/// text (`&`, `<`, `>`), so an answer is shown as written: a model that
/// writes `<!channel>` or `<@U123>` (asked to by whoever it talks to) does not
/// notify a channel or a person, and `a < b` is not eaten as a link.
pub fn escape_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['&', '<', '>']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The longest message text posted at once: Slack's advice for `text`
/// (it truncates beyond 40,000 characters). Longer answers go in pieces.
pub const MAX_CHARS: usize = 4000;

/// Posts one piece of an answer (at most [`MAX_CHARS`] characters: see
/// [`super::text::split`]) to `channel` (in `thread_ts` when given), escaped (see
/// [`escape_text`]): one `chat.postMessage` call.
pub async fn post_piece(
    http: &reqwest::Client,
    api_url: &str,
    token: &str,
    channel: &str,
    thread_ts: Option<&str>,
    text: &str,
) -> Result<(), PostError> {
    let mut body = json!({ "channel": channel, "text": escape_text(text) });
    if let Some(ts) = thread_ts {
        body["thread_ts"] = json!(ts);
    }
    let url = format!("{}/chat.postMessage", api_url.trim_end_matches('/'));
    let response = http
        .post(url)
        .timeout(CALL_TIMEOUT)
        .bearer_auth(token)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(body.to_string())
        .send()
        .await
        .map_err(PostError::Unreachable)?;
    let status = response.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_RETRY_AFTER);
        return Err(PostError::RateLimited(wait));
    }
    if !status.is_success() {
        return Err(PostError::Status(status.as_u16()));
    }
    let bytes = response.bytes().await.map_err(PostError::Unreachable)?;
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if answer["ok"].as_bool() == Some(true) {
        Ok(())
    } else {
        Err(PostError::Refused(
            answer["error"]
                .as_str()
                .unwrap_or("unknown_error")
                .to_owned(),
        ))
    }
}

/// Why a Web API call other than `chat.postMessage` failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Slack could not be reached or answered other than 2xx.
    #[error("Slack unreachable: {0}")]
    Unreachable(String),
    /// `ok: false` with an authentication error (`invalid_auth`, `not_authed`,
    /// `account_inactive`, `token_revoked`, ...): retrying will not help.
    #[error("{method}: {error}")]
    Unauthorized {
        /// The Web API method.
        method: &'static str,
        /// Slack's error code.
        error: String,
    },
    /// `ok: false` with any other error code.
    #[error("{method}: {error}")]
    Refused {
        /// The Web API method.
        method: &'static str,
        /// Slack's error code.
        error: String,
    },
}

/// Slack error codes that mean the token itself is refused.
const AUTH_ERRORS: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "token_expired",
    "not_allowed_token_type",
    "missing_scope",
];

/// Calls a Web API `method` with `token` and no arguments; the answer's JSON
/// when `ok: true`.
async fn call(
    http: &reqwest::Client,
    api_url: &str,
    token: &str,
    method: &'static str,
) -> Result<Value, CallError> {
    let url = format!("{}/{method}", api_url.trim_end_matches('/'));
    let response = http
        .post(url)
        .timeout(CALL_TIMEOUT)
        .bearer_auth(token)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .send()
        .await
        .map_err(|e| CallError::Unreachable(format!("{method}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(CallError::Unreachable(format!(
            "{method}: HTTP {}",
            status.as_u16()
        )));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| CallError::Unreachable(format!("{method}: {e}")))?;
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if answer["ok"].as_bool() == Some(true) {
        return Ok(answer);
    }
    let error = answer["error"]
        .as_str()
        .unwrap_or("unknown_error")
        .to_owned();
    if AUTH_ERRORS.contains(&error.as_str()) {
        Err(CallError::Unauthorized { method, error })
    } else {
        Err(CallError::Refused { method, error })
    }
}

/// `auth.test` with the bot token: whether Slack accepts it.
pub async fn auth_test(
    http: &reqwest::Client,
    api_url: &str,
    token: &str,
) -> Result<(), CallError> {
    call(http, api_url, token, "auth.test").await.map(|_| ())
}

/// `apps.connections.open` with the app-level token: a Socket Mode WebSocket URL.
pub async fn connections_open(
    http: &reqwest::Client,
    api_url: &str,
    app_token: &str,
) -> Result<String, CallError> {
    let answer = call(http, api_url, app_token, "apps.connections.open").await?;
    answer["url"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CallError::Refused {
            method: "apps.connections.open",
            error: "no url in the answer".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_as_slack_reads_it() {
        assert_eq!(escape_text("plain"), "plain");
        assert_eq!(
            escape_text("<!channel> & <@U0USER0001> say a < b > c"),
            "&lt;!channel&gt; &amp; &lt;@U0USER0001&gt; say a &lt; b &gt; c"
        );
        assert!(matches!(
            escape_text("no control"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn only_passing_and_token_errors_are_retried() {
        for code in [
            "internal_error",
            "ratelimited",
            "service_unavailable",
            "invalid_auth",
            "token_revoked",
        ] {
            assert!(is_transient_error(code), "{code}");
        }
        for code in [
            "channel_not_found",
            "not_in_channel",
            "is_archived",
            "msg_too_long",
            "no_text",
        ] {
            assert!(!is_transient_error(code), "{code}");
        }
    }
}
