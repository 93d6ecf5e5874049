//! The mock's Anthropic Messages side: `POST /v1/messages`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use model_wire::anthropic::{
    BlockDelta, ContentBlock, ErrorBody, Message, MessageDelta, MessageDeltaUsage,
    MessageStreamEvent, MessagesRequest, Role, Usage,
};
use serde::Deserialize;
use serde_json::Value;

use super::MockState;
use super::faults::{approx_tokens, chunks};
use super::reply::{Dialect, Prompt, Reply, handle, json};

pub(crate) async fn messages(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, headers, body, Dialect::Anthropic).await
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
    Ok(Prompt {
        model: request.model.into_owned(),
        last_user,
        prompt_tokens,
        stream: request.stream,
        include_usage: false,
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
        stop_reason: done.then(|| "end_turn".into()),
        stop_sequence: None,
        usage: Some(Usage {
            input_tokens: reply.prompt_tokens,
            output_tokens,
            ..Usage::default()
        }),
    }
}

pub(crate) fn whole(reply: &Reply) -> String {
    let text = ContentBlock::Text {
        text: reply.text.as_str().into(),
    };
    json(&message(reply, vec![text], reply.completion_tokens()))
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
    for piece in chunks(&reply.text) {
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
    events.push(event(
        "message_delta",
        &MessageStreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: Some("end_turn".into()),
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
