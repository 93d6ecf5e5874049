//! The OpenAI and Anthropic wire formats as the mock speaks them.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use serde_json::{Value, json};

use super::faults::{Behaviour, Fault, approx_tokens, chunks};
use super::{MockState, RecordedRequest};

type ChunkStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAi,
    Anthropic,
}

pub(super) async fn list_models() -> Json<Value> {
    let models: Vec<Value> = ["mock-gpt", "mock-gpt-mini", "mock-claude"]
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "mock"}))
        .collect();
    Json(json!({"object": "list", "data": models}))
}

pub(super) async fn openai_chat(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        state,
        headers,
        body,
        "/v1/chat/completions",
        Dialect::OpenAi,
    )
    .await
}

pub(super) async fn anthropic_messages(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, headers, body, "/v1/messages", Dialect::Anthropic).await
}

/// Text of a message's `content`: a string, or the text parts of a list of blocks.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

async fn handle(
    state: Arc<MockState>,
    headers: HeaderMap,
    body: Bytes,
    path: &str,
    dialect: Dialect,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    state.record(RecordedRequest {
        path: path.to_owned(),
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
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return error_response(
            dialect,
            StatusCode::BAD_REQUEST,
            "`messages` must be an array",
            None,
        );
    };
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let mut behaviour = Behaviour::from_request(&headers, &last_user);
    let requested_model = request.get("model").and_then(Value::as_str).unwrap_or("");
    if behaviour
        .only_model
        .as_deref()
        .is_some_and(|m| m != requested_model)
    {
        behaviour = behaviour.without_faults();
    } else if let Some(times) = behaviour.times {
        let key = super::faults::marker_body(&last_user)
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

    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock-gpt")
        .to_owned();
    let mut prompt_tokens: u64 = messages
        .iter()
        .map(|m| approx_tokens(&content_text(m.get("content").unwrap_or(&Value::Null))) + 3)
        .sum::<u64>()
        + 3;
    if let Some(system) = request.get("system") {
        prompt_tokens += approx_tokens(&content_text(system));
    }
    let reply = behaviour.reply_text(&last_user);
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let ctx = Reply {
        id: format!("mock-{}", unix_nanos()),
        model,
        text: reply,
        prompt_tokens,
        include_usage,
        behaviour,
    };
    match (dialect, stream) {
        (_, false) => non_streamed(dialect, ctx).await,
        (Dialect::OpenAi, true) => sse(openai_events(&ctx), &ctx.behaviour, state),
        (Dialect::Anthropic, true) => sse(anthropic_events(&ctx), &ctx.behaviour, state),
    }
}

struct Reply {
    id: String,
    model: String,
    text: String,
    prompt_tokens: u64,
    include_usage: bool,
    behaviour: Behaviour,
}

impl Reply {
    fn completion_tokens(&self) -> u64 {
        chunks(&self.text).len().max(1) as u64
    }
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn error_response(
    dialect: Dialect,
    status: StatusCode,
    message: &str,
    retry_after: Option<&str>,
) -> Response {
    let body = match dialect {
        Dialect::OpenAi => json!({"error": {
            "message": message, "type": "mock_error", "code": status.as_u16().to_string()
        }}),
        Dialect::Anthropic => json!({"type": "error", "error": {
            "type": if status == StatusCode::TOO_MANY_REQUESTS { "rate_limit_error" } else { "api_error" },
            "message": message
        }}),
    };
    let mut response = (status, Json(body)).into_response();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn non_streamed(dialect: Dialect, ctx: Reply) -> Response {
    let body = match dialect {
        Dialect::OpenAi => json!({
            "id": ctx.id,
            "object": "chat.completion",
            "created": (unix_nanos() / 1_000_000_000) as u64,
            "model": ctx.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": ctx.text},
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": ctx.prompt_tokens,
                "completion_tokens": ctx.completion_tokens(),
                "total_tokens": ctx.prompt_tokens + ctx.completion_tokens()
            }
        }),
        Dialect::Anthropic => json!({
            "id": ctx.id,
            "type": "message",
            "role": "assistant",
            "model": ctx.model,
            "content": [{"type": "text", "text": ctx.text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": ctx.prompt_tokens, "output_tokens": ctx.completion_tokens()}
        }),
    };
    let text = body.to_string();
    let json_response = |payload: Body| {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(payload)
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
    };
    match ctx.behaviour.fault {
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

/// OpenAI chunk events (each one `data: ...\n\n` line), ending with `[DONE]`.
fn openai_events(ctx: &Reply) -> Vec<String> {
    let created = (unix_nanos() / 1_000_000_000) as u64;
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": ctx.id, "object": "chat.completion.chunk", "created": created,
            "model": ctx.model, "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
        })
        .to_string()
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    for piece in chunks(&ctx.text) {
        events.push(chunk(json!({"content": piece}), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if ctx.include_usage {
        events.push(
            json!({
                "id": ctx.id, "object": "chat.completion.chunk", "created": created,
                "model": ctx.model, "choices": [],
                "usage": {
                    "prompt_tokens": ctx.prompt_tokens,
                    "completion_tokens": ctx.completion_tokens(),
                    "total_tokens": ctx.prompt_tokens + ctx.completion_tokens()
                }
            })
            .to_string(),
        );
    }
    events.push("[DONE]".to_owned());
    events
        .into_iter()
        .map(|e| format!("data: {e}\n\n"))
        .collect()
}

/// Anthropic Messages stream events (`event: ...\ndata: ...\n\n`).
fn anthropic_events(ctx: &Reply) -> Vec<String> {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": ctx.id, "type": "message", "role": "assistant", "content": [],
                "model": ctx.model, "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": ctx.prompt_tokens, "output_tokens": 1}
            }}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    for piece in chunks(&ctx.text) {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"output_tokens": ctx.completion_tokens()}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    events
}

/// Number of leading events (role chunk, message/block start, ping) that carry
/// no text; a fault's `after` counts text chunks after these.
fn preamble_len(events: &[String]) -> usize {
    if events
        .first()
        .is_some_and(|e| e.starts_with("event: message_start"))
    {
        3
    } else {
        1
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

fn sse(events: Vec<String>, behaviour: &Behaviour, state: Arc<MockState>) -> Response {
    state
        .open_streams
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let mut guard = StreamGuard {
        state,
        finished: false,
    };
    let cut = preamble_len(&events) + behaviour.fault_after();
    let delay = behaviour.chunk_delay;
    let head = match behaviour.fault {
        None => events,
        Some(_) => events[..cut.min(events.len())].to_vec(),
    };
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
