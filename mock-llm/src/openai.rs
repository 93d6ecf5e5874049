//! The mock's OpenAI Chat Completions side: `GET /v1/models` and
//! `POST /v1/chat/completions`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use model_wire::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, ChunkChoice,
    CompletionUsage, DONE, Delta, ErrorBody, ErrorDetail, FunctionCall, FunctionCallDelta,
    MessageContent, Model, ModelList, ResponseMessage, Role, ToolCall, ToolCallDelta, ToolChoice,
};
use serde::Deserialize;
use serde_json::Value;

use super::MockState;
use super::faults::{approx_tokens, chunks};
use super::reply::{Dialect, Prompt, Reply, handle, json};

/// The models the mock lists (it answers for any name).
const MODELS: [&str; 3] = ["mock-gpt", "mock-gpt-mini", "mock-claude"];

pub(crate) async fn list_models() -> Json<ModelList<'static>> {
    Json(ModelList {
        object: "list".into(),
        data: MODELS
            .iter()
            .map(|id| Model {
                id: (*id).into(),
                object: "model".into(),
                created: 0,
                owned_by: "mock".into(),
            })
            .collect(),
    })
}

pub(crate) async fn chat_completions(
    State(state): State<Arc<MockState>>,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(state, version, headers, body, Dialect::OpenAi).await
}

pub(crate) fn prompt(body: &Value) -> Result<Prompt, serde_json::Error> {
    let request = ChatCompletionRequest::deserialize(body)?;
    let text = |content: &Option<MessageContent<'_>>| {
        content
            .as_ref()
            .map(|c| c.text().into_owned())
            .unwrap_or_default()
    };
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| text(&m.content))
        .unwrap_or_default();
    let prompt_tokens = request
        .messages
        .iter()
        .map(|m| approx_tokens(&text(&m.content)) + 3)
        .sum::<u64>()
        + 3;
    let tool_results: Vec<String> = request
        .messages
        .iter()
        .rev()
        .take_while(|m| m.role == Role::Tool)
        .map(|m| text(&m.content))
        .collect();
    let no_tools = matches!(&request.tool_choice, Some(ToolChoice::Mode(mode)) if mode == "none");
    Ok(Prompt {
        model: request.model.into_owned(),
        last_user,
        prompt_tokens,
        stream: request.stream,
        include_usage: request.stream_options.is_some_and(|o| o.include_usage),
        tools: if no_tools {
            Vec::new()
        } else {
            request
                .tools
                .iter()
                .map(|t| t.function.name.clone().into_owned())
                .collect()
        },
        tool_results: (!tool_results.is_empty()).then(|| tool_results.into_iter().rev().collect()),
    })
}

pub(crate) fn error_body(status: StatusCode, message: &str) -> String {
    json(&ErrorBody {
        error: ErrorDetail {
            message: message.into(),
            kind: Some("mock_error".into()),
            param: None,
            code: Some(Value::String(status.as_u16().to_string())),
        },
    })
}

fn usage(reply: &Reply) -> CompletionUsage {
    CompletionUsage::new(reply.prompt_tokens, reply.completion_tokens())
}

fn finish_reason(reply: &Reply) -> &'static str {
    if reply.tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    }
}

pub(crate) fn whole(reply: &Reply) -> String {
    let calls = reply.tool_calls.iter().map(|call| ToolCall {
        id: call.id.as_str().into(),
        kind: "function".into(),
        function: FunctionCall {
            name: call.name.as_str().into(),
            arguments: call.arguments.as_str().into(),
        },
    });
    json(&ChatCompletion {
        id: reply.id.as_str().into(),
        object: "chat.completion".into(),
        created: reply.created,
        model: reply.model.as_str().into(),
        choices: vec![Choice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content: reply
                    .tool_calls
                    .is_empty()
                    .then(|| reply.text.as_str().into()),
                refusal: None,
                tool_calls: calls.collect(),
            },
            finish_reason: Some(finish_reason(reply).into()),
        }],
        usage: Some(usage(reply)),
        system_fingerprint: None,
    })
}

fn chunk<'a>(
    reply: &'a Reply,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
) -> ChatCompletionChunk<'a> {
    ChatCompletionChunk {
        id: reply.id.as_str().into(),
        object: "chat.completion.chunk".into(),
        created: reply.created,
        model: reply.model.as_str().into(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish_reason.map(Into::into),
        }],
        ..ChatCompletionChunk::default()
    }
}

/// The chunk events (`data: {chunk}`), ending with `data: [DONE]`.
pub(crate) fn events(reply: &Reply) -> Vec<String> {
    let data = |payload: &str| format!("data: {payload}\n\n");
    let mut events = vec![data(&json(&chunk(
        reply,
        Delta {
            role: Some(Role::Assistant),
            content: Some("".into()),
            ..Delta::default()
        },
        None,
    )))];
    let pieces = if reply.tool_calls.is_empty() {
        chunks(&reply.text)
    } else {
        Vec::new()
    };
    for piece in pieces {
        let delta = Delta {
            content: Some(piece.into()),
            ..Delta::default()
        };
        events.push(data(&json(&chunk(reply, delta, None))));
    }
    // Each call: its id and name, then its arguments in two pieces.
    for (index, call) in reply.tool_calls.iter().enumerate() {
        let (head, tail) = call.arguments.split_at(call.arguments.len() / 2);
        let first = ToolCallDelta {
            index: index as u32,
            id: Some(call.id.as_str().into()),
            kind: Some("function".into()),
            function: Some(FunctionCallDelta {
                name: Some(call.name.as_str().into()),
                arguments: Some("".into()),
            }),
        };
        for piece in [first]
            .into_iter()
            .chain([head, tail].map(|text| ToolCallDelta {
                index: index as u32,
                function: Some(FunctionCallDelta {
                    name: None,
                    arguments: Some(text.into()),
                }),
                ..ToolCallDelta::default()
            }))
        {
            let delta = Delta {
                tool_calls: vec![piece],
                ..Delta::default()
            };
            events.push(data(&json(&chunk(reply, delta, None))));
        }
    }
    events.push(data(&json(&chunk(
        reply,
        Delta::default(),
        Some(finish_reason(reply)),
    ))));
    if reply.include_usage {
        events.push(data(&json(&ChatCompletionChunk {
            choices: Vec::new(),
            usage: Some(usage(reply)),
            ..chunk(reply, Delta::default(), None)
        })));
    }
    events.push(data(DONE));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_back_as_the_format() {
        let reply = Reply::for_test("Echo: hello there", true);
        let answer: ChatCompletion<'_> = serde_json::from_str(&whole(&reply)).expect("answer");
        assert_eq!(
            answer.choices[0].message.content.as_deref(),
            Some("Echo: hello there")
        );
        assert_eq!(answer.usage, Some(CompletionUsage::new(10, 3)));

        let events = events(&reply);
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]\n\n"));
        let chunks: Vec<ChatCompletionChunk<'_>> = events[..events.len() - 1]
            .iter()
            .map(|e| {
                let data = e.strip_prefix("data: ").expect("data line");
                serde_json::from_str(data.trim_end()).expect("chunk")
            })
            .collect();
        let text: String = chunks
            .iter()
            .flat_map(|c| c.choices.iter())
            .filter_map(|c| c.delta.content.as_deref())
            .collect();
        assert_eq!(text, "Echo: hello there");
        let finish: Vec<_> = chunks
            .iter()
            .flat_map(|c| c.choices.iter())
            .filter_map(|c| c.finish_reason.as_deref())
            .collect();
        assert_eq!(finish, ["stop"]);
        assert_eq!(
            chunks.last().and_then(|c| c.usage),
            Some(CompletionUsage::new(10, 3))
        );
    }
}
