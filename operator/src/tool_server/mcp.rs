//! Listing an MCP server's tools over Streamable HTTP (`initialize`, then
//! `tools/list`) with the rmcp client. Header values are secrets: they go on the
//! requests only, and every error message is scrubbed of them before it leaves.

use std::time::Duration;

use crds::tool_server::ToolInfo;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::common::client_side_sse::NeverRetry;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

/// Why a listing failed; each carries a message for the user, without secrets.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// Nothing answered at the URL (refused, unresolvable, timed out).
    #[error("{0}")]
    Unreachable(String),
    /// The server refused the credentials (401 or 403).
    #[error("{0}")]
    Unauthorized(String),
    /// The server answered, but not as an MCP server should.
    #[error("{0}")]
    Protocol(String),
    /// A header could not be sent (its name or value is not valid in HTTP).
    #[error("{0}")]
    InvalidHeader(String),
}

impl ListError {
    /// The Ready condition's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ListError::Unreachable(_) => "Unreachable",
            ListError::Unauthorized(_) => "Unauthorized",
            ListError::Protocol(_) => "ProtocolError",
            ListError::InvalidHeader(_) => "InvalidHeader",
        }
    }
}

/// Connects to `url` with `headers` (name, secret value), lists every tool, and
/// closes the session; gives up after `timeout`.
pub async fn list_tools(
    url: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<Vec<ToolInfo>, ListError> {
    let secrets: Vec<&str> = headers.iter().map(|(_, v)| v.as_str()).collect();
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ListError::InvalidHeader(format!("header {name} is not a valid HTTP header name"))
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            ListError::InvalidHeader(format!(
                "the value of header {name} (from its Secret) is not a valid HTTP header value"
            ))
        })?;
        value.set_sensitive(true);
        map.insert(header, value);
    }
    let http = reqwest::Client::builder()
        .default_headers(map)
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| {
            ListError::Protocol(scrub(&format!("building the HTTP client: {e}"), &secrets))
        })?;
    let config = StreamableHttpClientTransportConfig {
        retry_config: std::sync::Arc::new(NeverRetry),
        ..StreamableHttpClientTransportConfig::with_uri(url)
    };
    let transport = StreamableHttpClientTransport::with_client(http.clone(), config);
    let listing = async {
        let client = ()
            .serve(transport)
            .await
            .map_err(|e| classify(&format!("initialize failed: {e}"), &secrets))?;
        let tools = client
            .list_all_tools()
            .await
            .map_err(|e| classify(&format!("tools/list failed: {e}"), &secrets));
        let _ = client.cancel().await;
        tools
    };
    let listed = tokio::time::timeout(timeout, listing).await.map_err(|_| {
        ListError::Unreachable(format!(
            "no answer within {}s (spec.timeoutSeconds)",
            timeout.as_secs()
        ))
    })?;
    let tools = match listed {
        Ok(tools) => tools,
        // The SDK reports a refusal without `WWW-Authenticate` as an undecodable
        // body: ask once more in plain HTTP for the status the server answered.
        Err(ListError::Protocol(message)) => {
            return Err(http_refusal(&http, url, &secrets)
                .await
                .unwrap_or(ListError::Protocol(message)));
        }
        Err(e) => return Err(e),
    };
    Ok(tools
        .into_iter()
        .map(|t| ToolInfo {
            name: t.name.into_owned(),
            description: t.description.map(|d| truncate(&d, 1024)),
        })
        .collect())
}

/// The server's answer to a plain `initialize` POST when it is an HTTP error,
/// or that nothing answered it.
async fn http_refusal(http: &reqwest::Client, url: &str, secrets: &[&str]) -> Option<ListError> {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "switchboard-operator", "version": env!("CARGO_PKG_VERSION")}},
    });
    let response = http
        .post(url)
        .header(
            reqwest::header::ACCEPT,
            "application/json, text/event-stream",
        )
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        // However the SDK worded it, nothing answered.
        Err(e) if e.is_connect() || e.is_timeout() => {
            return Some(ListError::Unreachable(truncate(
                &scrub(&format!("nothing answered at {url}: {e}"), secrets),
                1024,
            )));
        }
        Err(_) => return None,
    };
    let status = response.status();
    if status.is_success() {
        return None;
    }
    let text = response.text().await.unwrap_or_default();
    let message = truncate(
        &scrub(
            &format!("the server answered HTTP {status}: {}", text.trim()),
            secrets,
        ),
        1024,
    );
    Some(match status.as_u16() {
        401 | 403 => ListError::Unauthorized(message),
        _ => ListError::Protocol(message),
    })
}

/// Sorts an error message into a [`ListError`], secrets scrubbed.
pub fn classify(message: &str, secrets: &[&str]) -> ListError {
    let message = truncate(&scrub(message, secrets), 1024);
    let lower = without_urls(&message.to_ascii_lowercase());
    // Status codes as whole words: a port such as 40133 is not a 401.
    let status = |code: &str| {
        lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == code)
    };
    if status("401")
        || status("403")
        || lower.contains("unauthorized")
        || lower.contains("forbidden")
        || lower.contains("auth required")
    {
        ListError::Unauthorized(message)
    } else if lower.contains("error sending request")
        || lower.contains("connect")
        || lower.contains("dns")
        || lower.contains("timed out")
        || lower.contains("transport channel closed")
    {
        ListError::Unreachable(message)
    } else {
        ListError::Protocol(message)
    }
}

/// `text` without the URLs in it (an address's host, port or path is not a status),
/// however they are quoted or bracketed: each word holding `://` goes.
fn without_urls(text: &str) -> String {
    text.split(' ')
        .map(|word| if word.contains("://") { "<url>" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` with every occurrence of each (non-trivial) secret replaced.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        // Also the value without a scheme prefix such as `Bearer `.
        let bare = secret.rsplit(' ').next().unwrap_or(secret);
        for s in [*secret, bare] {
            if s.len() >= 4 {
                out = out.replace(s, "[redacted]");
            }
        }
    }
    out
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_and_never_carry_a_secret() {
        let secrets = ["Bearer s3cr3t-token"];
        let e = classify(
            "initialize failed: HTTP status client error (401 Unauthorized) for token s3cr3t-token",
            &secrets,
        );
        assert_eq!(e.reason(), "Unauthorized");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        assert!(e.to_string().contains("[redacted]"), "{e}");
        let e = classify(
            "initialize failed: error sending request for url (http://127.0.0.1:1/mcp)",
            &[],
        );
        assert_eq!(e.reason(), "Unreachable");
        let e = classify("tools/list failed: unexpected response", &[]);
        assert_eq!(e.reason(), "ProtocolError");
    }

    #[test]
    fn an_address_that_holds_401_or_403_is_not_a_refusal() {
        // The SDK's words for a refused connection to a port such as 40133 (a CI
        // run's random port): it was sorted as Unauthorized for the "401" in it.
        for url in [
            "http://127.0.0.1:40133/mcp",
            "http://tools.team-403.svc:8080/mcp",
            "https://h/401/mcp",
        ] {
            let e = classify(
                &format!(
                    "initialize failed: Send message error Transport [rmcp::transport::worker::WorkerTransport] \
                     error: Client error: error sending request for url ({url}), when send initialize request"
                ),
                &[],
            );
            assert_eq!(e.reason(), "Unreachable", "{url}: {e}");
            assert!(
                e.to_string().contains(url),
                "the message keeps the address: {e}"
            );
        }
        let e = classify("initialize failed: HTTP 403 from http://h:40100/mcp", &[]);
        assert_eq!(e.reason(), "Unauthorized", "{e}");
    }

    #[tokio::test]
    async fn the_plain_http_check_finds_a_closed_port_unreachable() {
        // Whatever the SDK said first, the second look says nothing answered.
        let closed = switchboard_tests::ClosedPort::new();
        let url = closed.url("/mcp");
        let e = http_refusal(&reqwest::Client::new(), &url, &["hush-hush"])
            .await
            .expect("a verdict");
        assert_eq!(e.reason(), "Unreachable", "{e}");
        assert!(e.to_string().contains(&url), "{e}");
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_with_the_reason_in_words() {
        let closed = switchboard_tests::ClosedPort::new();
        let e = list_tools(
            &closed.url("/mcp"),
            &[("Authorization".to_owned(), "Bearer hush-hush".to_owned())],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(e.reason(), "Unreachable", "{e}");
        assert!(!e.to_string().contains("hush-hush"), "{e}");
    }
}
