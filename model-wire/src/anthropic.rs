//! Anthropic Messages (`POST /v1/messages`, header `anthropic-version`): the
//! request, the whole answer (a message), the streamed events
//! (`event: {type}` / `data: {event}`) and the error body.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The API version this module describes (the `anthropic-version` header).
pub const API_VERSION: &str = "2023-06-01";

/// A Messages request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessagesRequest<'a> {
    /// The model asked for.
    pub model: Cow<'a, str>,
    /// The conversation: user and assistant turns, starting with the user.
    pub messages: Vec<InputMessage<'a>>,
    /// Answer length cap (required by the API).
    #[serde(default)]
    pub max_tokens: u32,
    /// Instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemPrompt<'a>>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Sample from the top K options only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Where to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<Cow<'a, str>>>,
    /// Whether to stream the answer as events.
    #[serde(default)]
    pub stream: bool,
    /// Tools the model may use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool<'a>>,
    /// Whether and which tool the model must use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice<'a>>,
    /// About the request (the end user's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata<'a>>,
}

/// A tool the model may use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool<'a> {
    /// Its name.
    pub name: Cow<'a, str>,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
    /// Its input, as a JSON Schema object (required by the API).
    pub input_schema: serde_json::Value,
}

/// `tool_choice`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice<'a> {
    /// The model decides.
    Auto {
        /// At most one tool use per answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// The model must use some tool.
    Any {
        /// At most one tool use per answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// The model must use this tool.
    Tool {
        /// The tool's name.
        name: Cow<'a, str>,
        /// At most one tool use per answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// The model must not use tools.
    None,
}

/// `metadata`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata<'a> {
    /// An opaque id of the end user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Cow<'a, str>>,
}

/// `system`: text, or text blocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SystemPrompt<'a> {
    /// Plain text.
    Text(Cow<'a, str>),
    /// Text blocks.
    Blocks(Vec<ContentBlock<'a>>),
}

impl SystemPrompt<'_> {
    /// The text: the string itself, or the text blocks joined.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Text(text) => Cow::Borrowed(text),
            Self::Blocks(blocks) => text_of(blocks).into(),
        }
    }
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The end user (tool results too).
    #[default]
    User,
    /// The model.
    Assistant,
}

/// One turn of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputMessage<'a> {
    /// Author.
    pub role: Role,
    /// What it says.
    pub content: MessageContent<'a>,
}

/// A turn's content: text, or a list of blocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent<'a> {
    /// Plain text.
    Text(Cow<'a, str>),
    /// Text and other blocks (images, tool use and results, documents).
    Blocks(Vec<ContentBlock<'a>>),
}

impl MessageContent<'_> {
    /// The text: the string itself, or the text blocks joined.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Text(text) => Cow::Borrowed(text),
            Self::Blocks(blocks) => text_of(blocks).into(),
        }
    }
}

/// The text blocks of `blocks`, joined.
pub fn text_of(blocks: &[ContentBlock<'_>]) -> String {
    blocks
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text { text } => Some(text.as_ref()),
            _ => None,
        })
        .collect()
}

/// One content block, of a request or an answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock<'a> {
    /// Text.
    Text {
        /// The text.
        text: Cow<'a, str>,
    },
    /// An image.
    Image {
        /// Where its bytes are.
        source: ImageSource<'a>,
    },
    /// The model uses a tool (in an answer, or an assistant turn of the history).
    ToolUse {
        /// The use's id, which its result refers to.
        id: Cow<'a, str>,
        /// The tool's name.
        name: Cow<'a, str>,
        /// Its input (a JSON object; empty in a streamed `content_block_start`).
        #[serde(default)]
        input: serde_json::Value,
    },
    /// A tool's result (in a user turn).
    ToolResult {
        /// The use it answers.
        tool_use_id: Cow<'a, str>,
        /// The result's text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<ToolResultContent<'a>>,
        /// Whether the tool failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    /// A kind of block not modelled here (document, thinking, ...): read and
    /// skipped; not for sending.
    #[serde(other)]
    Other,
}

/// A tool result's content: text, or text blocks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolResultContent<'a> {
    /// Plain text.
    Text(Cow<'a, str>),
    /// Blocks.
    Blocks(Vec<ContentBlock<'a>>),
}

/// An image block's `source`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource<'a> {
    /// The bytes, base64-encoded.
    Base64 {
        /// `image/jpeg`, `image/png`, `image/gif` or `image/webp`.
        media_type: Cow<'a, str>,
        /// The base64 text.
        data: Cow<'a, str>,
    },
    /// An `https:` URL the API fetches.
    Url {
        /// The URL.
        url: Cow<'a, str>,
    },
}

/// A whole answer (`type: message`), also the `message` of `message_start`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message<'a> {
    /// Message id.
    #[serde(default)]
    pub id: Cow<'a, str>,
    /// `message`.
    #[serde(rename = "type", default)]
    pub kind: Cow<'a, str>,
    /// `assistant`.
    #[serde(default = "assistant")]
    pub role: Role,
    /// The answer's blocks (empty in `message_start`).
    pub content: Vec<ContentBlock<'a>>,
    /// The model that answered.
    #[serde(default)]
    pub model: Cow<'a, str>,
    /// Why it stopped: `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`,
    /// ... (`null` in `message_start`).
    #[serde(default)]
    pub stop_reason: Option<Cow<'a, str>>,
    /// The stop sequence met, if one was.
    #[serde(default)]
    pub stop_sequence: Option<Cow<'a, str>>,
    /// Token usage (always sent by Anthropic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

fn assistant() -> Role {
    Role::Assistant
}

/// Token usage of an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens (beyond the cached ones).
    #[serde(default)]
    pub input_tokens: u64,
    /// Generated tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt tokens written to the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Prompt tokens read from the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
}

/// One event of a streamed answer: `message_start`, then per block
/// `content_block_start`, `content_block_delta`s and `content_block_stop`,
/// then `message_delta` and `message_stop`; `ping`s anywhere, `error` on failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageStreamEvent<'a> {
    /// The message, without content yet; its usage has the prompt tokens.
    MessageStart {
        /// The message so far.
        message: Message<'a>,
    },
    /// A content block begins.
    ContentBlockStart {
        /// Block index.
        index: u32,
        /// The block, empty.
        content_block: ContentBlock<'a>,
    },
    /// More of a block.
    ContentBlockDelta {
        /// Block index.
        index: u32,
        /// What it adds.
        delta: BlockDelta<'a>,
    },
    /// A content block ends.
    ContentBlockStop {
        /// Block index.
        index: u32,
    },
    /// Top-level changes: the stop reason and the output tokens.
    MessageDelta {
        /// The changes.
        delta: MessageDelta<'a>,
        /// Usage so far (cumulative).
        #[serde(default)]
        usage: MessageDeltaUsage,
    },
    /// The answer is complete.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// The stream failed (e.g. `overloaded_error`).
    Error {
        /// What went wrong.
        error: ErrorDetail<'a>,
    },
    /// An event type not modelled here: skipped.
    #[serde(other)]
    Other,
}

/// What a `content_block_delta` adds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta<'a> {
    /// More text.
    TextDelta {
        /// The text.
        text: Cow<'a, str>,
    },
    /// More of a tool call's JSON input.
    InputJsonDelta {
        /// A piece of JSON text.
        partial_json: Cow<'a, str>,
    },
    /// A delta kind not modelled here (thinking, signature, ...): skipped.
    #[serde(other)]
    Other,
}

/// The changes of a `message_delta`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageDelta<'a> {
    /// Why it stopped.
    #[serde(default)]
    pub stop_reason: Option<Cow<'a, str>>,
    /// The stop sequence met, if one was.
    #[serde(default)]
    pub stop_sequence: Option<Cow<'a, str>>,
}

/// The usage of a `message_delta`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDeltaUsage {
    /// Generated tokens so far.
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt tokens, when sent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
}

/// An error answer: `{"type": "error", "error": {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody<'a> {
    /// `error`.
    #[serde(rename = "type", default)]
    pub kind: Cow<'a, str>,
    /// What went wrong.
    pub error: ErrorDetail<'a>,
    /// The request's id, for support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<Cow<'a, str>>,
}

impl<'a> ErrorBody<'a> {
    /// An error body of `kind` saying `message`.
    pub fn new(kind: impl Into<Cow<'a, str>>, message: impl Into<Cow<'a, str>>) -> Self {
        Self {
            kind: "error".into(),
            error: ErrorDetail {
                kind: kind.into(),
                message: message.into(),
            },
            request_id: None,
        }
    }
}

/// What went wrong.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail<'a> {
    /// Category: `invalid_request_error`, `rate_limit_error`, `api_error`,
    /// `overloaded_error`, ...
    #[serde(rename = "type", default)]
    pub kind: Cow<'a, str>,
    /// For people.
    #[serde(default)]
    pub message: Cow<'a, str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Sample payloads from the Messages API reference and its streaming guide.

    #[test]
    fn request_parses_and_skips_what_is_not_set() {
        let sample = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Hello, world"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hi!"}]},
                {"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "..."}},
                    {"type": "text", "text": "What is this?"}
                ]}
            ],
            "metadata": {"user_id": "u-1"}
        });
        let request: MessagesRequest<'_> = serde_json::from_value(sample).expect("parses");
        assert_eq!(request.max_tokens, 1024);
        assert_eq!(
            request.system.as_ref().map(|s| s.text()),
            Some("Be brief.".into())
        );
        assert_eq!(request.messages[1].role, Role::Assistant);
        assert_eq!(request.messages[2].content.text(), "What is this?");
        assert!(!request.stream);

        let request = MessagesRequest {
            model: "claude-sonnet-4-5".into(),
            messages: vec![InputMessage {
                role: Role::User,
                content: MessageContent::Text("Hello, world".into()),
            }],
            max_tokens: 1024,
            ..MessagesRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&request).expect("serialises"),
            json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "stream": false,
                   "messages": [{"role": "user", "content": "Hello, world"}]})
        );
    }

    #[test]
    fn whole_answer_parses() {
        let sample = r#"{"content":[{"text":"Hi! My name is Claude.","type":"text"},{"type":"thinking","thinking":"...","signature":"x"}],"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","model":"claude-3-7-sonnet-20250219","role":"assistant","stop_reason":"end_turn","stop_sequence":null,"type":"message","usage":{"input_tokens":2095,"output_tokens":503}}"#;
        let message: Message<'_> = serde_json::from_str(sample).expect("parses");
        assert_eq!(text_of(&message.content), "Hi! My name is Claude.");
        assert_eq!(message.content[1], ContentBlock::Other);
        assert_eq!(message.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(
            message.usage.map(|u| (u.input_tokens, u.output_tokens)),
            Some((2095, 503))
        );
    }

    #[test]
    fn stream_events_parse_in_order() {
        let sample = [
            r#"{"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-opus-4-6", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}"#,
            r#"{"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}"#,
            r#"{"type": "ping"}"#,
            r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}"#,
            r#"{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}"#,
            r#"{"type": "content_block_stop", "index": 0}"#,
            r#"{"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence":null}, "usage": {"output_tokens": 15}}"#,
            r#"{"type": "message_stop"}"#,
        ];
        let events: Vec<MessageStreamEvent<'_>> = sample
            .iter()
            .map(|data| serde_json::from_str(data).expect("event parses"))
            .collect();
        assert!(matches!(
            &events[0],
            MessageStreamEvent::MessageStart { message } if message.usage.is_some_and(|u| u.input_tokens == 25)
        ));
        assert!(matches!(
            &events[1],
            MessageStreamEvent::ContentBlockStart { index: 0, content_block: ContentBlock::Text { text } } if text.is_empty()
        ));
        assert_eq!(events[2], MessageStreamEvent::Ping);
        assert_eq!(
            events[3],
            MessageStreamEvent::ContentBlockDelta {
                index: 0,
                delta: BlockDelta::TextDelta {
                    text: "Hello".into()
                }
            }
        );
        assert_eq!(events[5], MessageStreamEvent::ContentBlockStop { index: 0 });
        assert_eq!(
            events[6],
            MessageStreamEvent::MessageDelta {
                delta: MessageDelta {
                    stop_reason: Some("end_turn".into()),
                    stop_sequence: None
                },
                usage: MessageDeltaUsage {
                    output_tokens: 15,
                    input_tokens: None
                }
            }
        );
        assert_eq!(events[7], MessageStreamEvent::MessageStop);
        let unknown: MessageStreamEvent<'_> =
            serde_json::from_str(r#"{"type": "something_new", "x": 1}"#).expect("parses");
        assert_eq!(unknown, MessageStreamEvent::Other);
        let thinking: MessageStreamEvent<'_> = serde_json::from_str(
            r#"{"type": "content_block_delta", "index": 1, "delta": {"type": "thinking_delta", "thinking": "hm"}}"#,
        )
        .expect("parses");
        assert!(matches!(
            thinking,
            MessageStreamEvent::ContentBlockDelta {
                delta: BlockDelta::Other,
                ..
            }
        ));
    }

    #[test]
    fn tool_use_and_results_round_trip() {
        let sample = json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "messages": [
                {"role": "user", "content": "Weather in SF?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"location": "SF"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "15 C"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}
            ],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-1"},
            "stream": true
        });
        let request: MessagesRequest<'_> = serde_json::from_value(sample.clone()).expect("parses");
        assert!(matches!(
            &request.messages[1].content,
            MessageContent::Blocks(blocks) if matches!(&blocks[0], ContentBlock::ToolUse { name, .. } if name == "get_weather")
        ));
        assert_eq!(serde_json::to_value(&request).expect("serialises"), sample);
        let start: MessageStreamEvent<'_> = serde_json::from_str(
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}}"#,
        )
        .expect("parses");
        assert!(matches!(
            start,
            MessageStreamEvent::ContentBlockStart {
                index: 1,
                content_block: ContentBlock::ToolUse { .. }
            }
        ));
    }

    #[test]
    fn errors_parse_in_a_body_and_in_a_stream() {
        let body = r#"{"type":"error","error":{"type":"not_found_error","message":"The requested resource could not be found."},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}"#;
        let body: ErrorBody<'_> = serde_json::from_str(body).expect("parses");
        assert_eq!(body.error.kind, "not_found_error");
        assert_eq!(
            body.error.message,
            "The requested resource could not be found."
        );
        let event =
            r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
        let event: MessageStreamEvent<'_> = serde_json::from_str(event).expect("parses");
        assert!(matches!(
            event,
            MessageStreamEvent::Error { error } if error.kind == "overloaded_error" && error.message == "Overloaded"
        ));
        assert_eq!(
            serde_json::to_value(ErrorBody::new("rate_limit_error", "slow down"))
                .expect("serialises"),
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
        );
    }
}
