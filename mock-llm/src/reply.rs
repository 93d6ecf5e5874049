//! What both wire formats share: recording the request, choosing the
//! behaviour, the injected failures, the reply and its streamed body.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde::Serialize;
use serde_json::Value;

use super::faults::{self, Behaviour, Fault, chunks};
use super::{MockState, RecordedRequest, anthropic, openai};

type ChunkStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// The API a request came in through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    fn path(self) -> &'static str {
        match self {
            Self::OpenAi => "/v1/chat/completions",
            Self::Anthropic => "/v1/messages",
        }
    }

    fn prompt(self, body: &Value) -> Result<Prompt, serde_json::Error> {
        match self {
            Self::OpenAi => openai::prompt(body),
            Self::Anthropic => anthropic::prompt(body),
        }
    }

    fn error_body(self, status: StatusCode, message: &str) -> String {
        match self {
            Self::OpenAi => openai::error_body(status, message),
            Self::Anthropic => anthropic::error_body(status, message),
        }
    }

    fn whole(self, reply: &Reply) -> String {
        match self {
            Self::OpenAi => openai::whole(reply),
            Self::Anthropic => anthropic::whole(reply),
        }
    }

    fn events(self, reply: &Reply) -> Vec<String> {
        match self {
            Self::OpenAi => openai::events(reply),
            Self::Anthropic => anthropic::events(reply),
        }
    }

    /// Leading events (role chunk; message and block start and ping) that
    /// carry no text; a fault's `after` counts text chunks after these.
    fn preamble_len(self) -> usize {
        match self {
            Self::OpenAi => 1,
            Self::Anthropic => 3,
        }
    }
}

/// What the mock reads from a request, whatever its format.
pub(crate) struct Prompt {
    /// The model asked for.
    pub model: String,
    /// Text of the last user message.
    pub last_user: String,
    /// A rough count of the prompt's tokens.
    pub prompt_tokens: u64,
    /// Whether to stream.
    pub stream: bool,
    /// Whether a streamed answer ends with usage (OpenAI's `stream_options`).
    pub include_usage: bool,
    /// The names of the tools offered (none when `tool_choice` is `none`).
    pub tools: Vec<String>,
    /// The tool results the conversation ends with, if it ends with some.
    pub tool_results: Option<Vec<String>>,
}

/// A tool call the mock makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MockToolCall {
    pub id: String,
    pub name: String,
    /// JSON text: `{"text": <the last user message, marker stripped>}`.
    pub arguments: String,
}

/// The answer to send.
pub(crate) struct Reply {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub text: String,
    pub prompt_tokens: u64,
    pub include_usage: bool,
    /// Tool calls instead of text (when the request offered tools).
    pub tool_calls: Vec<MockToolCall>,
    behaviour: Behaviour,
}

impl Reply {
    /// A reply of `text` to a prompt of 10 tokens.
    #[cfg(test)]
    pub fn for_test(text: &str, include_usage: bool) -> Self {
        Self {
            id: "mock-1".into(),
            created: 1,
            model: "mock-model".into(),
            text: text.into(),
            prompt_tokens: 10,
            include_usage,
            tool_calls: Vec::new(),
            behaviour: Behaviour::default(),
        }
    }

    /// Tokens of the answer: the count the request set, else one per streamed
    /// chunk (a tool call's arguments count as two pieces).
    pub fn completion_tokens(&self) -> u64 {
        if let Some(n) = self.behaviour.usage_out {
            n
        } else if self.tool_calls.is_empty() {
            chunks(&self.text).len().max(1) as u64
        } else {
            2 * self.tool_calls.len() as u64
        }
    }
}

/// The answer to a conversation that offers tools or ends with their
/// results: tool results are answered in text (`Tool results: a; b`);
/// otherwise the tools named by the behaviour (default: the first offered)
/// are called with the last user message as their `text` argument.
fn tool_turn(
    prompt: &Prompt,
    behaviour: &Behaviour,
    id: &str,
) -> (Option<String>, Vec<MockToolCall>) {
    let next = match (&prompt.tool_results, &behaviour.next_tools) {
        (Some(_), Some(next)) if !behaviour.tool_loop && !next.is_empty() => Some(next.clone()),
        _ => None,
    };
    if let Some(results) = &prompt.tool_results
        && !behaviour.tool_loop
        && next.is_none()
    {
        return (
            Some(format!("Tool results: {}", results.join("; "))),
            Vec::new(),
        );
    }
    if prompt.tools.is_empty() || behaviour.reply.is_some() {
        return (None, Vec::new());
    }
    let asked_next = next.is_some();
    let names = match (next, &behaviour.tools) {
        (Some(next), _) => next,
        (None, Some(names)) => names.clone(),
        (None, None) => prompt.tools.iter().take(1).cloned().collect(),
    };
    let text = faults::strip_marker(&prompt.last_user).trim().to_owned();
    let arguments = serde_json::json!({ "text": text }).to_string();
    let calls = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| MockToolCall {
            id: format!("call_{id}_{i}"),
            name,
            arguments: match &behaviour.tool_args {
                Some(args) if !asked_next => args
                    .get(i)
                    .or(args.last())
                    .cloned()
                    .unwrap_or_else(|| arguments.clone()),
                _ => arguments.clone(),
            },
        })
        .collect();
    (None, calls)
}

/// `value` as JSON text (these plain structs always serialise).
pub(crate) fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// Answers one chat request in `dialect`.
pub(crate) async fn handle(
    state: Arc<MockState>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Bytes,
    dialect: Dialect,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    state.record(RecordedRequest {
        path: dialect.path().to_owned(),
        headers: [
            "authorization",
            "x-api-key",
            "anthropic-version",
            "content-type",
        ]
        .iter()
        .filter_map(|name| {
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .map(|v| ((*name).to_owned(), v.to_owned()))
        })
        .collect(),
        body: parsed.clone().unwrap_or(Value::Null),
        version,
        received_at: std::time::Instant::now(),
    });
    let Some(request) = parsed.filter(Value::is_object) else {
        return error_response(
            dialect,
            StatusCode::BAD_REQUEST,
            "request body is not a JSON object",
            None,
        );
    };
    let prompt = match dialect.prompt(&request) {
        Ok(prompt) => prompt,
        Err(err) => {
            return error_response(
                dialect,
                StatusCode::BAD_REQUEST,
                &format!("invalid request: {err}"),
                None,
            );
        }
    };
    let mut behaviour = Behaviour::from_request(&headers, &prompt.last_user);
    if behaviour
        .only_model
        .as_deref()
        .is_some_and(|m| m != prompt.model)
    {
        behaviour = behaviour.without_faults();
    } else if let Some(times) = behaviour.times {
        let key = faults::marker_body(&prompt.last_user)
            .unwrap_or("headers")
            .to_owned();
        let seen = state
            .marker_counts
            .lock()
            .map(|mut counts| {
                let count = counts.entry(key).or_insert(0);
                *count += 1;
                *count
            })
            .unwrap_or(1);
        if seen > times {
            behaviour = behaviour.without_faults();
        }
    }

    if !behaviour.latency.is_zero() {
        tokio::time::sleep(behaviour.latency).await;
    }
    if let Some(status) = behaviour.status.filter(|s| *s != 200) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(
            dialect,
            status,
            "injected failure",
            behaviour.retry_after.as_deref(),
        );
    }

    let now = unix_nanos();
    let (tool_text, tool_calls) =
        tool_turn(&prompt, &behaviour, &format!("{:x}", now % 0xffff_ffff));
    let reply = Reply {
        id: format!("mock-{now}"),
        created: (now / 1_000_000_000) as u64,
        text: match tool_text {
            Some(text) => text,
            None if !tool_calls.is_empty() => String::new(),
            None => behaviour.reply_text(&prompt.last_user),
        },
        model: prompt.model,
        prompt_tokens: behaviour.usage_in.unwrap_or(prompt.prompt_tokens),
        include_usage: prompt.include_usage,
        tool_calls,
        behaviour,
    };
    if prompt.stream {
        sse(dialect, &reply, state)
    } else {
        whole(dialect, reply).await
    }
}

fn error_response(
    dialect: Dialect,
    status: StatusCode,
    message: &str,
    retry_after: Option<&str>,
) -> Response {
    let mut response = json_response(Body::from(dialect.error_body(status, message)));
    *response.status_mut() = status;
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn json_response(body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn whole(dialect: Dialect, reply: Reply) -> Response {
    let text = dialect.whole(&reply);
    match reply.behaviour.fault {
        None => json_response(Body::from(text)),
        Some(Fault::Truncate) => json_response(Body::from(text[..text.len() / 2].to_owned())),
        Some(Fault::Malformed) => json_response(Body::from("{\"id\": oops, not json")),
        Some(Fault::Hang) => {
            std::future::pending::<()>().await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Some(Fault::Reset) => {
            let body: ChunkStream = stream::once(async {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected reset",
                ))
            })
            .boxed();
            json_response(Body::from_stream(body))
        }
    }
}

/// Counts a streamed body as open while it lives; dropped before its end, it
/// counts as abandoned.
struct StreamGuard {
    state: Arc<MockState>,
    finished: bool,
}

impl StreamGuard {
    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        self.state.open_streams.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            self.state.abandoned_streams.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn sse(dialect: Dialect, reply: &Reply, state: Arc<MockState>) -> Response {
    let events = dialect.events(reply);
    let behaviour = &reply.behaviour;
    state
        .open_streams
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut guard = StreamGuard {
        state,
        finished: false,
    };
    let cut = dialect.preamble_len() + behaviour.fault_after();
    let delay = behaviour.chunk_delay;
    let mut head = events;
    if behaviour.fault.is_some() {
        head.truncate(cut);
    }
    // The delay separates chunks: the first one goes out at once.
    let head = stream::iter(head.into_iter().enumerate()).then(move |(i, event)| async move {
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<Bytes, std::io::Error>(Bytes::from(event))
    });
    let tail: ChunkStream = match behaviour.fault {
        None | Some(Fault::Truncate) => stream::empty().boxed(),
        Some(Fault::Malformed) => stream::iter([Ok(Bytes::from_static(
            b"data: {\"choices\": [{\"delta\": {\"content\": oops\n\n",
        ))])
        .boxed(),
        Some(Fault::Hang) => stream::pending().boxed(),
        Some(Fault::Reset) => stream::once(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "injected reset",
            ))
        })
        .boxed(),
    };
    let end = stream::poll_fn(move |_| {
        guard.finish();
        std::task::Poll::Ready(None::<Result<Bytes, std::io::Error>>)
    });
    let body: ChunkStream = head.chain(tail).chain(end).boxed();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
