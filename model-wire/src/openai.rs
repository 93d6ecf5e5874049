//! OpenAI Chat Completions (`POST /v1/chat/completions`), as spoken by OpenAI,
//! vLLM, Ollama, LiteLLM and others: the request, the whole answer, the
//! streamed chunks (`data: {chunk}` lines ending with `data: [DONE]`), the
//! error body and the model list.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The `data:` payload that ends a stream.
pub const DONE: &str = "[DONE]";

/// A chat completion request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest<'a> {
    /// The model asked for.
    pub model: Cow<'a, str>,
    /// The conversation so far.
    pub messages: Vec<ChatMessage<'a>>,
    /// Whether to stream the answer as chunks.
    #[serde(default)]
    pub stream: bool,
    /// Streaming options (usage in a last chunk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Answer length cap (the older name, still the one compatible servers read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Answer length cap, reasoning included (the newer name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    /// Where to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop<'a>>,
    /// An end-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Cow<'a, str>>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool<'a>>,
    /// Whether and which tool the model must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice<'a>>,
    /// Whether the model may call several tools in one answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// The answer's format: text, any JSON object, or JSON matching a schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat<'a>>,
    /// Seed for (best-effort) deterministic sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Penalty for tokens already present, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Penalty by token frequency, -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// Bias per token id (a JSON object of token id to -100..100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A tool the model may call (only `function` tools exist in Chat Completions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool<'a> {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: Cow<'a, str>,
    /// The function.
    pub function: FunctionDefinition<'a>,
}

/// A function tool's definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition<'a> {
    /// Its name.
    pub name: Cow<'a, str>,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
    /// Its arguments, as a JSON Schema object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    /// Whether the arguments must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: `none`, `auto`, `required`, or one named function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice<'a> {
    /// `none`, `auto` or `required`.
    Mode(Cow<'a, str>),
    /// `{"type": "function", "function": {"name": ...}}`.
    Named(NamedToolChoice<'a>),
}

/// A `tool_choice` naming one function.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedToolChoice<'a> {
    /// `function`.
    #[serde(rename = "type")]
    pub kind: Cow<'a, str>,
    /// The function.
    pub function: FunctionName<'a>,
}

/// A function, by name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionName<'a> {
    /// Its name.
    pub name: Cow<'a, str>,
}

/// `response_format`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat<'a> {
    /// Plain text (the default).
    Text,
    /// Any valid JSON object ("JSON mode").
    JsonObject,
    /// JSON matching a schema ("structured outputs").
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaFormat<'a>,
    },
}

/// The `json_schema` of a structured-output `response_format`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JsonSchemaFormat<'a> {
    /// The format's name.
    pub name: Cow<'a, str>,
    /// What the format is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Cow<'a, str>>,
    /// The JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// Whether the answer must follow the schema exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A tool call the model made (in an answer, or in an assistant message of
/// the history).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall<'a> {
    /// The call's id, which the tool's result refers to.
    pub id: Cow<'a, str>,
    /// `function`.
    #[serde(rename = "type", default = "function")]
    pub kind: Cow<'a, str>,
    /// The function and its arguments.
    pub function: FunctionCall<'a>,
}

/// A function call: its name and its arguments as JSON text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall<'a> {
    /// The function's name.
    pub name: Cow<'a, str>,
    /// The arguments, as the model wrote them (JSON text, not always valid).
    #[serde(default)]
    pub arguments: Cow<'a, str>,
}

fn function() -> Cow<'static, str> {
    Cow::Borrowed("function")
}

/// A piece of a tool call in a streamed chunk: the first piece of a call has
/// its id and name, later ones more of its arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta<'a> {
    /// Which call of the answer this piece belongs to.
    #[serde(default)]
    pub index: u32,
    /// The call's id (first piece).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Cow<'a, str>>,
    /// `function` (first piece).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Cow<'a, str>>,
    /// The function's name and more arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta<'a>>,
}

/// The function part of a [`ToolCallDelta`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallDelta<'a> {
    /// The function's name (first piece).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'a, str>>,
    /// More argument text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Cow<'a, str>>,
}

/// `stream_options`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage (and no choices) before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one sequence or several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop<'a> {
    /// One stop sequence.
    One(Cow<'a, str>),
    /// Up to four stop sequences.
    Many(Vec<Cow<'a, str>>),
}

/// Who wrote a message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions (older models).
    System,
    /// Instructions (newer models).
    Developer,
    /// The end user.
    #[default]
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
    /// A function's result (deprecated form of `tool`).
    Function,
}

/// One message of a request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage<'a> {
    /// Author.
    pub role: Role,
    /// What it says (absent or `null` for an assistant message that only calls tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent<'a>>,
    /// The author's name, to tell participants of one role apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'a, str>>,
    /// The tools an assistant message called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall<'a>>,
    /// The call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<Cow<'a, str>>,
}

impl<'a> ChatMessage<'a> {
    /// A message of plain text.
    pub fn text(role: Role, text: impl Into<Cow<'a, str>>) -> Self {
        Self {
            role,
            content: Some(MessageContent::Text(text.into())),
            ..Self::default()
        }
    }
}

/// A message's content: text, or a list of parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent<'a> {
    /// Plain text.
    Text(Cow<'a, str>),
    /// Text and other parts (images, audio, files).
    Parts(Vec<ContentPart<'a>>),
}

impl MessageContent<'_> {
    /// The text: the string itself, or the text parts joined.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Self::Text(text) => Cow::Borrowed(text),
            Self::Parts(parts) => parts
                .iter()
                .filter_map(|part| match part {
                    ContentPart::Text { text } => Some(text.as_ref()),
                    _ => None,
                })
                .collect::<String>()
                .into(),
        }
    }
}

/// One part of a message's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart<'a> {
    /// Text.
    Text {
        /// The text.
        text: Cow<'a, str>,
    },
    /// An image, by URL or `data:` URL.
    ImageUrl {
        /// Where the image is.
        image_url: ImageUrl<'a>,
    },
    /// A kind of part not modelled here (audio, file, ...): read and skipped;
    /// not for sending.
    #[serde(other)]
    Other,
}

/// `image_url` of an image part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUrl<'a> {
    /// `https:` or `data:` URL.
    pub url: Cow<'a, str>,
    /// `low`, `high` or `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Cow<'a, str>>,
}

/// A whole answer (`object: chat.completion`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion<'a> {
    /// Answer id.
    #[serde(default)]
    pub id: Cow<'a, str>,
    /// `chat.completion`.
    #[serde(default)]
    pub object: Cow<'a, str>,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    #[serde(default)]
    pub model: Cow<'a, str>,
    /// The answers (one unless `n` asked for more).
    #[serde(default)]
    pub choices: Vec<Choice<'a>>,
    /// Token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
    /// Backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<Cow<'a, str>>,
}

/// One answer of a [`ChatCompletion`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Choice<'a> {
    /// Its index.
    #[serde(default)]
    pub index: u32,
    /// The message.
    pub message: ResponseMessage<'a>,
    /// Why it stopped: `stop`, `length`, `tool_calls`, `content_filter`.
    #[serde(default)]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// The model's message in a whole answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage<'a> {
    /// `assistant`.
    #[serde(default = "assistant")]
    pub role: Role,
    /// The text (`null` when the model only calls tools).
    #[serde(default)]
    pub content: Option<Cow<'a, str>>,
    /// A refusal, when the model refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Cow<'a, str>>,
    /// The tools the model calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall<'a>>,
}

fn assistant() -> Role {
    Role::Assistant
}

/// Token usage of an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionUsage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Generated tokens.
    #[serde(default)]
    pub completion_tokens: u64,
    /// Both.
    #[serde(default)]
    pub total_tokens: u64,
}

impl CompletionUsage {
    /// Usage with its total.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// One streamed chunk (`object: chat.completion.chunk`). The identifiers
/// borrow from the decoded text when they hold no escapes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk<'a> {
    /// Answer id, the same in every chunk.
    #[serde(default, borrow)]
    pub id: Cow<'a, str>,
    /// `chat.completion.chunk`.
    #[serde(default, borrow)]
    pub object: Cow<'a, str>,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    #[serde(default, borrow)]
    pub model: Cow<'a, str>,
    /// Backend configuration fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<Cow<'a, str>>,
    /// The deltas (empty in the usage chunk).
    #[serde(default)]
    pub choices: Vec<ChunkChoice<'a>>,
    /// Usage, in the last chunk when `stream_options.include_usage` was set
    /// (some servers send `null` in the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
    /// An error in the middle of a stream (sent by OpenAI and compatible
    /// servers, though not part of the chunk schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail<'a>>,
}

/// One choice of a chunk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice<'a> {
    /// Its index.
    #[serde(default)]
    pub index: u32,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta<'a>,
    /// Set in the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<Cow<'a, str>>,
}

/// What a chunk adds to the message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta<'a> {
    /// The author, in the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// More text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Cow<'a, str>>,
    /// More refusal text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Cow<'a, str>>,
    /// Pieces of tool calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta<'a>>,
}

/// An error answer: `{"error": {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody<'a> {
    /// What went wrong.
    pub error: ErrorDetail<'a>,
}

/// What went wrong.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail<'a> {
    /// For people.
    #[serde(default)]
    pub message: Cow<'a, str>,
    /// Category, e.g. `invalid_request_error`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Cow<'a, str>>,
    /// The request parameter at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<Cow<'a, str>>,
    /// Machine-readable code: a string at OpenAI, a number at some compatible
    /// servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<serde_json::Value>,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList<'a> {
    /// `list`.
    pub object: Cow<'a, str>,
    /// The models.
    pub data: Vec<Model<'a>>,
}

/// One model of a [`ModelList`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model<'a> {
    /// Its name.
    pub id: Cow<'a, str>,
    /// `model`.
    pub object: Cow<'a, str>,
    /// Unix seconds.
    #[serde(default)]
    pub created: u64,
    /// Its owner.
    #[serde(default)]
    pub owned_by: Cow<'a, str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Sample payloads from the Chat Completions API reference.

    #[test]
    fn request_with_text_and_parts_round_trips() {
        let sample = json!({
            "model": "gpt-4.1",
            "messages": [
                {"role": "developer", "content": "You are a helpful assistant."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                    {"type": "input_audio", "input_audio": {"data": "...", "format": "wav"}}
                ]},
                {"role": "assistant", "content": null},
                {"role": "user", "content": "Hello!"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "stop": ["\n\n", "END"],
            "seed": 7
        });
        let request: ChatCompletionRequest<'_> =
            serde_json::from_value(sample).expect("request parses");
        assert_eq!(request.model, "gpt-4.1");
        assert_eq!(request.messages[0].role, Role::Developer);
        assert_eq!(
            request.messages[1].content.as_ref().map(|c| c.text()),
            Some("What is in this image?".into())
        );
        assert!(matches!(
            &request.messages[1].content,
            Some(MessageContent::Parts(parts)) if parts.len() == 3 && parts[2] == ContentPart::Other
        ));
        assert_eq!(request.messages[2].content, None);
        assert!(request.stream);
        assert_eq!(
            request.stream_options,
            Some(StreamOptions {
                include_usage: true
            })
        );
        assert_eq!(
            request.stop,
            Some(Stop::Many(vec!["\n\n".into(), "END".into()]))
        );
    }

    #[test]
    fn request_output_skips_what_is_not_set() {
        let request = ChatCompletionRequest {
            model: "gpt-4o-mini".into(),
            messages: vec![ChatMessage::text(Role::User, "Hello!")],
            max_tokens: Some(5),
            ..ChatCompletionRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&request).expect("serialises"),
            json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Hello!"}],
                "stream": false,
                "max_tokens": 5
            })
        );
    }

    #[test]
    fn whole_answer_parses() {
        let sample = r#"{
          "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
          "object": "chat.completion",
          "created": 1741569952,
          "model": "gpt-4.1-2025-04-14",
          "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I assist you today?", "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
          }],
          "usage": {
            "prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
          },
          "service_tier": "default"
        }"#;
        let answer: ChatCompletion<'_> = serde_json::from_str(sample).expect("answer parses");
        assert_eq!(answer.choices.len(), 1);
        assert_eq!(
            answer.choices[0].message.content.as_deref(),
            Some("Hello! How can I assist you today?")
        );
        assert_eq!(answer.choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(answer.usage, Some(CompletionUsage::new(19, 10)));
    }

    #[test]
    fn streamed_chunks_parse_in_order() {
        let sample = [
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb", "choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#,
            r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21}}"#,
        ];
        let chunks: Vec<ChatCompletionChunk<'_>> = sample
            .iter()
            .map(|data| serde_json::from_str(data).expect("chunk parses"))
            .collect();
        // Identifiers without escapes are borrowed, not copied.
        assert!(matches!(chunks[0].id, Cow::Borrowed("chatcmpl-123")));
        assert_eq!(chunks[0].choices[0].delta.role, Some(Role::Assistant));
        assert_eq!(chunks[1].choices[0].delta.content.as_deref(), Some("Hello"));
        assert_eq!(chunks[1].choices[0].finish_reason, None);
        assert_eq!(chunks[2].choices[0].finish_reason.as_deref(), Some("stop"));
        assert!(chunks[3].choices.is_empty());
        assert_eq!(chunks[3].usage, Some(CompletionUsage::new(9, 12)));
        let null_usage: ChatCompletionChunk<'_> =
            serde_json::from_str(r#"{"choices":[],"usage":null}"#).expect("null usage parses");
        assert_eq!(null_usage.usage, None);
    }

    #[test]
    fn chunk_output_keeps_a_null_finish_reason() {
        let chunk = ChatCompletionChunk {
            id: "c1".into(),
            object: "chat.completion.chunk".into(),
            created: 1,
            model: "m".into(),
            choices: vec![ChunkChoice {
                delta: Delta {
                    content: Some("Hi".into()),
                    ..Delta::default()
                },
                ..ChunkChoice::default()
            }],
            ..ChatCompletionChunk::default()
        };
        assert_eq!(
            serde_json::to_value(&chunk).expect("serialises"),
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}]})
        );
    }

    #[test]
    fn tools_and_tool_calls_round_trip() {
        let sample = json!({
            "model": "gpt-4.1",
            "messages": [
                {"role": "user", "content": "Weather in Boston?"},
                {"role": "assistant", "tool_calls": [{"id": "call_abc", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"location\":\"Boston\"}"}}]},
                {"role": "tool", "tool_call_id": "call_abc", "content": "Sunny"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
            "seed": 3,
            "logit_bias": {"50256": -100},
            "stream": false
        });
        let request: ChatCompletionRequest<'_> =
            serde_json::from_value(sample.clone()).expect("parses");
        assert_eq!(
            request.messages[1].tool_calls[0].function.name,
            "get_weather"
        );
        assert_eq!(
            request.messages[2].tool_call_id.as_deref(),
            Some("call_abc")
        );
        assert!(matches!(request.tool_choice, Some(ToolChoice::Named(_))));
        assert!(matches!(
            request.response_format,
            Some(ResponseFormat::JsonSchema { .. })
        ));
        assert_eq!(serde_json::to_value(&request).expect("serialises"), sample);

        let chunk: ChatCompletionChunk<'_> = serde_json::from_str(
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#,
        )
        .expect("chunk parses");
        let piece = &chunk.choices[0].delta.tool_calls[0];
        assert_eq!(piece.id.as_deref(), Some("call_1"));
        assert_eq!(
            piece.function.as_ref().and_then(|f| f.name.as_deref()),
            Some("get_weather")
        );
    }

    #[test]
    fn error_bodies_parse() {
        let sample = r#"{"error": {"message": "Incorrect API key provided: sk-abc.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#;
        let body: ErrorBody<'_> = serde_json::from_str(sample).expect("error parses");
        assert_eq!(body.error.message, "Incorrect API key provided: sk-abc.");
        assert_eq!(body.error.kind.as_deref(), Some("invalid_request_error"));
        assert_eq!(body.error.code, Some(json!("invalid_api_key")));
        let numeric: ErrorBody<'_> =
            serde_json::from_str(r#"{"error": {"message": "bad", "code": 400}}"#)
                .expect("numeric code parses");
        assert_eq!(numeric.error.code, Some(json!(400)));
        let in_stream: ChatCompletionChunk<'_> =
            serde_json::from_str(r#"{"error": {"message": "overloaded", "type": "server_error"}}"#)
                .expect("stream error parses");
        assert_eq!(
            in_stream.error.map(|e| e.message),
            Some("overloaded".into())
        );
    }
}
