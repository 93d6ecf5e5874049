//! A streamed turn as server-sent events in OpenAI's exact chunk format:
//! a role chunk, content chunks, a chunk with `finish_reason`, a usage chunk
//! (with `stream_options.include_usage`; otherwise usage rides on the finish
//! chunk), then `data: [DONE]`. Tool calls stream as `delta.tool_calls`
//! pieces (id and name first, then the arguments' text). A failure midway ends with an OpenAI-style
//! `data: {"error": ...}` event and no `[DONE]`. A call waiting for a
//! person's approval is an `event: approval_required`; a stream quiet for 15 s
//! gets a `: keep-alive` comment (ignored by SSE clients).

use std::collections::VecDeque;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::stream;
use serde_json::{Value, json};

use crate::conversation::{TurnEvent, TurnStream};
use crate::db::ToolApproval;
use crate::providers::ToolCallDelta;

/// How long a stream stays quiet before a keep-alive comment.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// What every chunk repeats.
#[derive(Clone, Debug)]
pub struct ChunkFormat {
    /// `id` of every chunk.
    pub id: String,
    /// `model` of every chunk.
    pub model: String,
    /// `created` of every chunk.
    pub created: i64,
    /// Send usage as its own final chunk with empty `choices`.
    pub include_usage: bool,
}

impl ChunkFormat {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>, usage: Option<Value>) -> String {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        frame(&chunk.to_string())
    }

    fn usage_chunk(&self, usage: Value) -> String {
        frame(
            &json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": null,
                "choices": [],
                "usage": usage,
            })
            .to_string(),
        )
    }
}

fn frame(data: &str) -> String {
    format!("data: {data}\n\n")
}

/// A piece of a tool call as OpenAI's `delta.tool_calls`: the first piece of
/// a call with its id, type and name, later ones with more arguments.
fn tool_call_delta(piece: &ToolCallDelta) -> Value {
    let mut call = json!({"index": piece.index, "function": {"arguments": piece.arguments}});
    if let Some(id) = &piece.id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = &piece.name {
        call["function"]["name"] = json!(name);
    }
    json!({"tool_calls": [call]})
}

/// A server-side tool call waiting for a person's approval: a chunk with no
/// choices (like OpenAI's usage chunk) carrying the approval under
/// `approval`; the turn goes on once it is decided. Sent as a plain `data:`
/// event, not a named one: OpenAI's SDKs before their 2.x Python and 5.x
/// Node releases wrap the data of a named event as `{data, event}`, which
/// breaks a chat stream's chunks there.
fn approval_event(format: &ChunkFormat, approval: &ToolApproval) -> String {
    let data = json!({
        "id": format.id,
        "object": "chat.completion.chunk",
        "created": format.created,
        "model": format.model,
        "system_fingerprint": null,
        "choices": [],
        "approval": {
            "id": approval.id,
            "session_id": approval.session_id,
            "tool": approval.tool,
            "arguments": approval.arguments,
            "expires_at": chrono::DateTime::from_timestamp_millis(approval.expires_at)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        },
    });
    frame(&data.to_string())
}

/// OpenAI's usage object.
pub fn usage_json(prompt: i64, completion: i64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// The SSE response for a streamed turn.
pub fn response(turn: TurnStream, format: ChunkFormat, session_id: &str) -> Response {
    let first = format.chunk(json!({"role": "assistant", "content": ""}), None, None);
    let state = (turn.events, format, VecDeque::from([first]), false);
    let body = stream::unfold(
        state,
        |(mut events, format, mut queue, mut ended)| async move {
            loop {
                if let Some(frame) = queue.pop_front() {
                    return Some((
                        Ok::<Bytes, std::convert::Infallible>(Bytes::from(frame)),
                        (events, format, queue, ended),
                    ));
                }
                if ended {
                    return None;
                }
                // A comment now and then keeps proxies from closing a quiet
                // stream (a turn waiting for an approval, a slow model).
                let next = match tokio::time::timeout(KEEP_ALIVE, events.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        queue.push_back(": keep-alive\n\n".to_owned());
                        continue;
                    }
                };
                match next {
                    Some(TurnEvent::Delta(text)) => {
                        queue.push_back(format.chunk(json!({"content": text}), None, None));
                    }
                    Some(TurnEvent::ToolCall(piece)) => {
                        queue.push_back(format.chunk(tool_call_delta(&piece), None, None));
                    }
                    Some(TurnEvent::ApprovalRequired(approval)) => {
                        queue.push_back(approval_event(&format, &approval));
                    }
                    Some(TurnEvent::Done(answer)) => {
                        let usage = usage_json(
                            answer.usage.prompt_tokens as i64,
                            answer.usage.completion_tokens as i64,
                        );
                        if format.include_usage {
                            queue.push_back(format.chunk(
                                json!({}),
                                Some(&answer.finish_reason),
                                None,
                            ));
                            queue.push_back(format.usage_chunk(usage));
                        } else {
                            queue.push_back(format.chunk(
                                json!({}),
                                Some(&answer.finish_reason),
                                Some(usage),
                            ));
                        }
                        queue.push_back(frame("[DONE]"));
                        ended = true;
                    }
                    Some(TurnEvent::Failed(error)) => {
                        let body = json!({"error": {
                            "code": "upstream_stream_failed",
                            "message": format!("the answer was cut off: {error}"),
                            "type": "server_error",
                            "param": null,
                        }});
                        queue.push_back(frame(&body.to_string()));
                        ended = true;
                    }
                    None => {
                        let body = json!({"error": {
                            "code": "internal_error",
                            "message": "the answer ended unexpectedly",
                            "type": "server_error",
                            "param": null,
                        }});
                        queue.push_back(frame(&body.to_string()));
                        ended = true;
                    }
                }
            }
        },
    );
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    if let Ok(value) = HeaderValue::from_str(session_id) {
        response.headers_mut().insert("x-session-id", value);
    }
    response
}
