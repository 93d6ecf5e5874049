//! The mock's Anthropic Messages side: `POST /v1/messages`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use model_wire::anthropic::{
    BlockDelta, ContentBlock, ErrorBody, Message, MessageContent, MessageDelta, MessageDeltaUsage,
    MessageStreamEvent, MessagesRequest, Role, ToolChoice, ToolResultContent, Usage, text_of,
};
use serde::Deserialize;
use serde_json::Value;

use super::MockState;
use super::faults::{approx_tokens, chunks};
use super::reply::{Dialect, Prompt, Reply, handle, json};

pub(crate) async fn messages(
    State(state): State<Arc<MockState>>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, version, headers, body, Dialect::Anthropic).await
}

pub(crate) fn prompt(body: &Value) -> Result<Prompt, serde_json::Error> {
    let request = MessagesRequest::deserialize(body)?;
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.text().into_owned())
        .unwrap_or_default();
    let mut prompt_tokens = request
        .messages
        .iter()
        .map(|m| approx_tokens(&m.content.text()) + 3)
        .sum::<u64>()
        + 3;
    if let Some(system) = &request.system {
        prompt_tokens += approx_tokens(&system.text());
    }
    // Tool results: the blocks of a last user turn that holds some.
    let tool_results: Vec<String> = match request.messages.last() {
        Some(m) if m.role == Role::User => match &m.content {
            MessageContent::Blocks(blocks) => blocks
                .iter()
                .filter_map(|block| match block {
                    ContentBlock::ToolResult { content, .. } => Some(match content {
                        Some(ToolResultContent::Text(text)) => text.clone().into_owned(),
                        Some(ToolResultContent::Blocks(blocks)) => text_of(blocks),
                        None => String::new(),
                    }),
                    _ => None,
                })
                .collect(),
            MessageContent::Text(_) => Vec::new(),
        },
        _ => Vec::new(),
    };
    // The last user turn with text holds the marker (tool results have none).
    let last_user = request
        .messages
        .iter()
        .rev()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.text().into_owned())
        .find(|text| !text.is_empty())
        .unwrap_or(last_user);
    let no_tools = matches!(request.tool_choice, Some(ToolChoice::None));
    Ok(Prompt {
        model: request.model.into_owned(),
        last_user,
        prompt_tokens,
        stream: request.stream,
        include_usage: false,
        tools: if no_tools {
            Vec::new()
        } else {
            request
                .tools
                .iter()
                .map(|t| t.name.clone().into_owned())
                .collect()
        },
        tool_results: (!tool_results.is_empty()).then_some(tool_results),
    })
}

pub(crate) fn error_body(status: StatusCode, message: &str) -> String {
    let kind = if status == StatusCode::TOO_MANY_REQUESTS {
        "rate_limit_error"
    } else {
        "api_error"
    };
    json(&ErrorBody::new(kind, message))
}

fn message<'a>(
    reply: &'a Reply,
    content: Vec<ContentBlock<'a>>,
    output_tokens: u64,
) -> Message<'a> {
    let done = !content.is_empty();
    Message {
        id: reply.id.as_str().into(),
        kind: "message".into(),
        role: Role::Assistant,
        content,
        model: reply.model.as_str().into(),
        stop_reason: done.then(|| stop_reason(reply).into()),
        stop_sequence: None,
        usage: Some(Usage {
            input_tokens: reply.prompt_tokens,
            output_tokens,
            ..Usage::default()
        }),
    }
}

fn stop_reason(reply: &Reply) -> &'static str {
    if reply.tool_calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    }
}

pub(crate) fn whole(reply: &Reply) -> String {
    let blocks = if reply.tool_calls.is_empty() {
        vec![ContentBlock::Text {
            text: reply.text.as_str().into(),
        }]
    } else {
        reply
            .tool_calls
            .iter()
            .map(|call| ContentBlock::ToolUse {
                id: call.id.as_str().into(),
                name: call.name.as_str().into(),
                input: serde_json::from_str(&call.arguments).unwrap_or_default(),
            })
            .collect()
    };
    json(&message(reply, blocks, reply.completion_tokens()))
}

/// The stream events (`event: {type}` / `data: {event}`), ending with `message_stop`.
pub(crate) fn events(reply: &Reply) -> Vec<String> {
    let event = |name: &str, event: &MessageStreamEvent<'_>| {
        format!("event: {name}\ndata: {}\n\n", json(event))
    };
    let mut events = vec![
        event(
            "message_start",
            &MessageStreamEvent::MessageStart {
                message: message(reply, Vec::new(), 1),
            },
        ),
        event(
            "content_block_start",
            &MessageStreamEvent::ContentBlockStart {
                index: 0,
                content_block: ContentBlock::Text { text: "".into() },
            },
        ),
        event("ping", &MessageStreamEvent::Ping),
    ];
    let pieces = if reply.tool_calls.is_empty() {
        chunks(&reply.text)
    } else {
        Vec::new()
    };
    for piece in pieces {
        events.push(event(
            "content_block_delta",
            &MessageStreamEvent::ContentBlockDelta {
                index: 0,
                delta: BlockDelta::TextDelta { text: piece.into() },
            },
        ));
    }
    events.push(event(
        "content_block_stop",
        &MessageStreamEvent::ContentBlockStop { index: 0 },
    ));
    // Each call a tool_use block after the (empty) text block, its input in
    // two pieces.
    for (i, call) in reply.tool_calls.iter().enumerate() {
        let index = i as u32 + 1;
        events.push(event(
            "content_block_start",
            &MessageStreamEvent::ContentBlockStart {
                index,
                content_block: ContentBlock::ToolUse {
                    id: call.id.as_str().into(),
                    name: call.name.as_str().into(),
                    input: serde_json::json!({}),
                },
            },
        ));
        let (head, tail) = call.arguments.split_at(call.arguments.len() / 2);
        for piece in [head, tail] {
            events.push(event(
                "content_block_delta",
                &MessageStreamEvent::ContentBlockDelta {
                    index,
                    delta: BlockDelta::InputJsonDelta {
                        partial_json: piece.into(),
                    },
                },
            ));
        }
        events.push(event(
            "content_block_stop",
            &MessageStreamEvent::ContentBlockStop { index },
        ));
    }
    events.push(event(
        "message_delta",
        &MessageStreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: Some(stop_reason(reply).into()),
                stop_sequence: None,
            },
            usage: MessageDeltaUsage {
                output_tokens: reply.completion_tokens(),
                input_tokens: None,
            },
        },
    ));
    events.push(event("message_stop", &MessageStreamEvent::MessageStop));
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_wire::anthropic::text_of;

    #[test]
    fn answers_read_back_as_the_format() {
        let reply = Reply::for_test("Echo: hello there", false);
        let answer: Message<'_> = serde_json::from_str(&whole(&reply)).expect("answer");
        assert_eq!(text_of(&answer.content), "Echo: hello there");
        assert_eq!(answer.stop_reason.as_deref(), Some("end_turn"));

        let mut text = String::new();
        let mut names = Vec::new();
        for event in events(&reply) {
            let (name, data) = event
                .trim_end()
                .split_once("\ndata: ")
                .expect("event and data lines");
            names.push(name.strip_prefix("event: ").expect("event line").to_owned());
            let parsed: MessageStreamEvent<'_> = serde_json::from_str(data).expect("event");
            if let MessageStreamEvent::ContentBlockDelta {
                delta: BlockDelta::TextDelta { text: piece },
                ..
            } = parsed
            {
                text.push_str(&piece);
            }
            // The `event:` name is the data's `type`.
            let kind: serde_json::Value = serde_json::from_str(data).expect("json");
            assert_eq!(kind["type"], names[names.len() - 1].as_str());
        }
        assert_eq!(text, "Echo: hello there");
        assert_eq!(names.first().map(String::as_str), Some("message_start"));
        assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    }
}
