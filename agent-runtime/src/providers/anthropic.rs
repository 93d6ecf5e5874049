//! Anthropic Messages (`POST /v1/messages`), streaming included: `x-api-key`,
//! system prompt apart, turns alternating from the user, events ending with
//! `message_stop`.

use std::borrow::Cow;
use std::collections::VecDeque;

use crds::runtime_config::ModelConfig;
use model_wire::anthropic::{
    API_VERSION, BlockDelta, ContentBlock, ErrorBody, ImageSource, InputMessage, Message,
    MessageContent, MessageStreamEvent, MessagesRequest, Metadata, Role as WireRole, SystemPrompt,
    Tool, ToolChoice as WireToolChoice, ToolResultContent, text_of,
};

use super::http::{Flow, HttpProvider, ModelSettings, WireFormat};
use super::openai::stream_error;
use super::sse::SseEvent;
use super::{
    ChatRequest, Completion, PromptMessage, ProviderError, RequestOptions, ResponseFormat,
    StreamEvent, ToolCall, ToolCallDelta, ToolChoice, Usage,
};
use crate::domain::Role;

/// Anthropic requires `max_tokens`; used when neither client nor config sets it.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// An Anthropic upstream.
pub type AnthropicProvider = HttpProvider<Anthropic>;

/// The Anthropic Messages wire format.
pub struct Anthropic;

/// A stream's memory: usage and stop reason arrive in different events, and
/// a tool use's input deltas name its block, not its place among the calls.
#[derive(Default)]
pub struct EventState {
    usage: Usage,
    stop_reason: Option<String>,
    /// Block index to tool call index, for the tool-use blocks begun.
    tool_blocks: Vec<(u32, u32)>,
}

impl WireFormat for Anthropic {
    const PROVIDER: &'static str = "anthropic";
    type StreamState = EventState;

    fn endpoint(config: &ModelConfig) -> String {
        let base = config.effective_base_url();
        let base = base.strip_suffix("/v1").unwrap_or(&base);
        format!("{base}/v1/messages")
    }

    fn models_endpoint(config: &ModelConfig) -> String {
        let base = config.effective_base_url();
        let base = base.strip_suffix("/v1").unwrap_or(&base);
        format!("{base}/v1/models")
    }

    fn authorize(
        builder: reqwest::RequestBuilder,
        api_key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let builder = builder.header("anthropic-version", API_VERSION);
        match api_key {
            Some(key) => builder.header("x-api-key", key),
            None => builder,
        }
    }

    /// Options the Messages API has no counterpart for. `response_format`
    /// other than `text` is refused too: JSON output on Anthropic needs a
    /// beta feature of some models only, so it is not promised here.
    fn refuses(request: &ChatRequest) -> Option<(String, String)> {
        let options = &request.options;
        let unsupported = |field: &str| {
            Some((
                field.to_owned(),
                "the Anthropic Messages API has no such option; leave it out, or use an \
                 OpenAI-compatible model"
                    .to_owned(),
            ))
        };
        if matches!(
            options.response_format,
            Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
        ) {
            return Some((
                "response_format".to_owned(),
                "JSON mode and JSON schemas are not available for Anthropic models through \
                 this runtime; ask for JSON in the prompt, or use an OpenAI-compatible model"
                    .to_owned(),
            ));
        }
        if options.seed.is_some() {
            return unsupported("seed");
        }
        if let Some(field) = options.passed.keys().next() {
            return unsupported(field);
        }
        if options.presence_penalty.is_some() {
            return unsupported("presence_penalty");
        }
        if options.frequency_penalty.is_some() {
            return unsupported("frequency_penalty");
        }
        if options.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return unsupported("logit_bias");
        }
        // Images only in user turns, tool uses only in assistant turns, a
        // tool result only as a tool message. (The index is the client's when
        // the conversation service asks before adding the system prompt.)
        for (i, m) in request.messages.iter().enumerate() {
            if !m.images.is_empty() && m.role != Role::User {
                return Some((
                    format!("messages[{i}].content"),
                    "Anthropic models accept images in user messages only".to_owned(),
                ));
            }
            if !m.tool_calls.is_empty() && m.role != Role::Assistant {
                return Some((
                    format!("messages[{i}].tool_calls"),
                    "Anthropic models accept tool calls in assistant messages only".to_owned(),
                ));
            }
            if m.tool_call_id.is_some() && m.role != Role::Tool {
                return Some((
                    format!("messages[{i}].tool_call_id"),
                    "Anthropic models accept a tool_call_id on tool messages only".to_owned(),
                ));
            }
        }
        None
    }

    /// System messages go to `system`; the rest must alternate user/assistant
    /// starting with the user, so same-role neighbours are merged (tool
    /// results are user turns) and a leading assistant message (a greeting)
    /// is dropped.
    fn request_body(
        settings: &ModelSettings,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<Vec<u8>, serde_json::Error> {
        let mut system: Option<Cow<'_, str>> = None;
        let mut messages: Vec<InputMessage<'_>> = Vec::new();
        for m in &request.messages {
            if m.role == Role::System {
                append(&mut system, &m.content);
                continue;
            }
            let role = if m.role == Role::Assistant {
                WireRole::Assistant
            } else {
                WireRole::User
            };
            let content = content_of(m);
            match messages.last_mut() {
                None if role == WireRole::Assistant => {}
                Some(last) if last.role == role => merge(&mut last.content, content),
                _ => messages.push(InputMessage { role, content }),
            }
        }
        let options = &request.options;
        let body = MessagesRequest {
            model: Cow::Borrowed(&settings.model),
            messages,
            max_tokens: request
                .max_output_tokens
                .or(settings.max_output_tokens)
                .unwrap_or(DEFAULT_MAX_TOKENS),
            system: system.map(SystemPrompt::Text),
            temperature: request.temperature.or(settings.temperature),
            top_p: options.top_p.or(settings.top_p),
            stop_sequences: (!options.stop.is_empty())
                .then(|| options.stop.iter().map(|s| s.as_str().into()).collect()),
            stream,
            tools: options
                .tools
                .iter()
                .map(|tool| Tool {
                    name: tool.name.as_str().into(),
                    description: tool.description.as_deref().map(Cow::Borrowed),
                    input_schema: tool
                        .parameters
                        .clone()
                        .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                })
                .collect(),
            tool_choice: tool_choice(options),
            metadata: options.user.as_deref().map(|user| Metadata {
                user_id: Some(Cow::Borrowed(user)),
            }),
            ..MessagesRequest::default()
        };
        serde_json::to_vec(&body)
    }

    fn completion(body: &[u8]) -> Result<Completion, ProviderError> {
        let message: Message<'_> =
            serde_json::from_slice(body).map_err(|e| ProviderError::Malformed(e.to_string()))?;
        let tool_calls = message
            .content
            .iter()
            .filter_map(|block| match block {
                ContentBlock::ToolUse { id, name, input } => Some(ToolCall {
                    id: id.clone().into_owned(),
                    name: name.clone().into_owned(),
                    arguments: input.to_string(),
                }),
                _ => None,
            })
            .collect();
        Ok(Completion {
            content: text_of(&message.content),
            usage: message.usage.map(|u| Usage {
                prompt_tokens: u.input_tokens,
                completion_tokens: u.output_tokens,
            }),
            finish_reason: finish_reason(message.stop_reason.as_deref()),
            tool_calls,
        })
    }

    fn stream_event(
        state: &mut EventState,
        event: SseEvent<'_>,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Flow, ProviderError> {
        let event: MessageStreamEvent<'_> = serde_json::from_str(event.data)
            .map_err(|e| ProviderError::Malformed(format!("event is not JSON: {e}")))?;
        match event {
            MessageStreamEvent::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    state.usage.prompt_tokens = usage.input_tokens;
                }
            }
            MessageStreamEvent::ContentBlockDelta {
                delta: BlockDelta::TextDelta { text },
                ..
            } if !text.is_empty() => out.push_back(StreamEvent::Delta(text.into_owned())),
            MessageStreamEvent::ContentBlockStart {
                index,
                content_block: ContentBlock::ToolUse { id, name, .. },
            } => {
                let call = state.tool_blocks.len() as u32;
                state.tool_blocks.push((index, call));
                out.push_back(StreamEvent::ToolCall(ToolCallDelta {
                    index: call,
                    id: Some(id.into_owned()),
                    name: Some(name.into_owned()),
                    arguments: String::new(),
                }));
            }
            MessageStreamEvent::ContentBlockDelta {
                index,
                delta: BlockDelta::InputJsonDelta { partial_json },
            } if !partial_json.is_empty() => {
                let call = state
                    .tool_blocks
                    .iter()
                    .find(|(block, _)| *block == index)
                    .map(|(_, call)| *call)
                    .ok_or_else(|| {
                        ProviderError::Malformed(format!(
                            "input_json_delta for block {index}, which is not a tool use"
                        ))
                    })?;
                out.push_back(StreamEvent::ToolCall(ToolCallDelta {
                    index: call,
                    arguments: partial_json.into_owned(),
                    ..ToolCallDelta::default()
                }));
            }
            MessageStreamEvent::MessageDelta { delta, usage } => {
                state.usage.completion_tokens = usage.output_tokens;
                if let Some(reason) = delta.stop_reason {
                    state.stop_reason = Some(reason.into_owned());
                }
            }
            MessageStreamEvent::MessageStop => {
                out.push_back(StreamEvent::Usage(state.usage));
                out.push_back(StreamEvent::Finished {
                    finish_reason: finish_reason(state.stop_reason.as_deref()),
                });
                return Ok(Flow::End);
            }
            MessageStreamEvent::Error { error } => return Err(stream_error(&error.message)),
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn error_message(body: &[u8]) -> Option<String> {
        serde_json::from_slice::<ErrorBody<'_>>(body)
            .ok()
            .map(|body| body.error.message.into_owned())
            .filter(|message| !message.is_empty())
    }
}

/// A prompt message's content as Anthropic's: plain text when it is only
/// text, else blocks (text, images, tool uses, a tool result).
fn content_of(m: &PromptMessage) -> MessageContent<'_> {
    if m.images.is_empty() && m.tool_calls.is_empty() && m.tool_call_id.is_none() {
        return MessageContent::Text(Cow::Borrowed(&m.content));
    }
    let mut blocks = Vec::new();
    if let Some(id) = &m.tool_call_id {
        blocks.push(ContentBlock::ToolResult {
            tool_use_id: id.as_str().into(),
            content: Some(ToolResultContent::Text(Cow::Borrowed(&m.content))),
            is_error: None,
        });
        return MessageContent::Blocks(blocks);
    }
    if !m.content.is_empty() {
        blocks.push(ContentBlock::Text {
            text: Cow::Borrowed(&m.content),
        });
    }
    for image in &m.images {
        blocks.push(ContentBlock::Image {
            source: image_source(&image.url),
        });
    }
    for call in &m.tool_calls {
        // The API wants an object; arguments that are not one (the model's
        // own malformed output, sent back) go as an empty input.
        let input = serde_json::from_str::<serde_json::Value>(&call.arguments)
            .ok()
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}));
        blocks.push(ContentBlock::ToolUse {
            id: call.id.as_str().into(),
            name: call.name.as_str().into(),
            input,
        });
    }
    MessageContent::Blocks(blocks)
}

/// A `data:` URL as base64 bytes, anything else as a URL to fetch.
fn image_source(url: &str) -> ImageSource<'_> {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media_type, data)) = rest.split_once(";base64,")
    {
        return ImageSource::Base64 {
            media_type: media_type.into(),
            data: data.into(),
        };
    }
    ImageSource::Url { url: url.into() }
}

/// Appends `next` to a turn of the same role: text to text a blank line
/// apart, anything else as blocks.
fn merge<'a>(content: &mut MessageContent<'a>, next: MessageContent<'a>) {
    match (&mut *content, next) {
        (MessageContent::Text(text), MessageContent::Text(more)) => {
            let text = text.to_mut();
            text.push_str("\n\n");
            text.push_str(&more);
        }
        (current, next) => {
            let mut blocks = match std::mem::replace(current, MessageContent::Blocks(Vec::new())) {
                MessageContent::Text(text) => vec![ContentBlock::Text { text }],
                MessageContent::Blocks(blocks) => blocks,
            };
            match next {
                MessageContent::Text(text) => blocks.push(ContentBlock::Text { text }),
                MessageContent::Blocks(more) => blocks.extend(more),
            }
            // Tool results lead a user turn, as the API requires.
            blocks.sort_by_key(|b| !matches!(b, ContentBlock::ToolResult { .. }));
            *current = MessageContent::Blocks(blocks);
        }
    }
}

/// OpenAI's `tool_choice` and `parallel_tool_calls` as Anthropic's one
/// `tool_choice` (`required` is `any`; no parallel calls is
/// `disable_parallel_tool_use`).
fn tool_choice(options: &RequestOptions) -> Option<WireToolChoice<'_>> {
    let disable = (options.parallel_tool_calls == Some(false)).then_some(true);
    match (&options.tool_choice, disable) {
        (Some(ToolChoice::None), _) => Some(WireToolChoice::None),
        (Some(ToolChoice::Auto), _) | (None, Some(_)) if !options.tools.is_empty() => {
            Some(WireToolChoice::Auto {
                disable_parallel_tool_use: disable,
            })
        }
        (Some(ToolChoice::Required), _) => Some(WireToolChoice::Any {
            disable_parallel_tool_use: disable,
        }),
        (Some(ToolChoice::Function(name)), _) => Some(WireToolChoice::Tool {
            name: name.as_str().into(),
            disable_parallel_tool_use: disable,
        }),
        _ => None,
    }
}

/// Adds a system message to the system prompt, a blank line apart.
fn append<'a>(system: &mut Option<Cow<'a, str>>, text: &'a str) {
    match system {
        None => *system = Some(Cow::Borrowed(text)),
        Some(prompt) => {
            let prompt = prompt.to_mut();
            prompt.push_str("\n\n");
            prompt.push_str(text);
        }
    }
}

/// Anthropic stop reasons in OpenAI's words.
fn finish_reason(stop_reason: Option<&str>) -> String {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        // The model declined to answer (Anthropic's safety classifiers).
        Some("refusal") => "content_filter",
        _ => "stop",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_read_as_openai_finish_reasons() {
        for (stop, finish) in [
            (Some("end_turn"), "stop"),
            (Some("stop_sequence"), "stop"),
            (Some("max_tokens"), "length"),
            (Some("tool_use"), "tool_calls"),
            (Some("refusal"), "content_filter"),
            (None, "stop"),
        ] {
            assert_eq!(finish_reason(stop), finish, "{stop:?}");
        }
    }
    use crate::providers::PromptMessage;
    use crate::providers::http::tests::decode_in_chunks;

    /// The streamed answer of the Messages streaming guide.
    const STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\", \"type\": \"message\", \"role\": \"assistant\", \"content\": [], \"model\": \"claude-opus-4-6\", \"stop_reason\": null, \"stop_sequence\": null, \"usage\": {\"input_tokens\": 25, \"output_tokens\": 1}}}\n\n",
        "event: content_block_start\ndata: {\"type\": \"content_block_start\", \"index\": 0, \"content_block\": {\"type\": \"text\", \"text\": \"\"}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"Hello\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"!\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\": \"content_block_stop\", \"index\": 0}\n\n",
        "event: message_delta\ndata: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"max_tokens\", \"stop_sequence\":null}, \"usage\": {\"output_tokens\": 15}}\n\n",
        "event: message_stop\ndata: {\"type\": \"message_stop\"}\n\n",
    );

    #[tokio::test]
    async fn a_stream_decodes_whatever_its_chunking() {
        for size in [1, 13, 100, STREAM.len()] {
            let events: Vec<StreamEvent> = decode_in_chunks::<Anthropic>(STREAM, size)
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .expect("no error");
            assert_eq!(
                events,
                vec![
                    StreamEvent::Delta("Hello".into()),
                    StreamEvent::Delta("!".into()),
                    StreamEvent::Usage(Usage {
                        prompt_tokens: 25,
                        completion_tokens: 15
                    }),
                    StreamEvent::Finished {
                        finish_reason: "length".into()
                    },
                ],
                "chunks of {size}"
            );
        }
    }

    #[tokio::test]
    async fn streams_end_right_or_fail() {
        let stop = STREAM.find("event: message_stop").expect("stop");
        let events = decode_in_chunks::<Anthropic>(&STREAM[..stop], 64).await;
        assert!(matches!(events.last(), Some(Err(ProviderError::Truncated))));
        let overloaded = format!(
            "{}event: error\ndata: {{\"type\": \"error\", \"error\": {{\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}}}\n\n",
            &STREAM[..stop]
        );
        let events = decode_in_chunks::<Anthropic>(&overloaded, 64).await;
        assert!(matches!(
            events.last(),
            Some(Err(ProviderError::Status { status: 502, message, .. })) if message == "Overloaded"
        ));
        assert_eq!(events.iter().filter(|e| e.is_ok()).count(), 2);
    }

    #[test]
    fn system_goes_apart_and_turns_alternate() {
        let settings = ModelSettings {
            model: "claude".into(),
            temperature: None,
            top_p: None,
            max_output_tokens: None,
            accepts_images: true,
        };
        let msg = |role, content: &str| PromptMessage::text(role, content);
        let request = ChatRequest {
            messages: vec![
                msg(Role::System, "be brief"),
                msg(Role::Assistant, "Hello! How can I help?"),
                msg(Role::User, "a"),
                msg(Role::User, "b"),
                msg(Role::Assistant, "c"),
            ],
            ..ChatRequest::default()
        };
        let body = Anthropic::request_body(&settings, &request, true).expect("serialises");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "model": "claude",
                "system": "be brief",
                "messages": [{"role": "user", "content": "a\n\nb"}, {"role": "assistant", "content": "c"}],
                "max_tokens": 4096,
                "stream": true
            })
        );
    }

    #[test]
    fn answers_and_errors_are_read() {
        let completion = Anthropic::completion(
            br#"{"content":[{"text":"Hi! My name is Claude.","type":"text"}],"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","model":"claude-3-7-sonnet-20250219","role":"assistant","stop_reason":"end_turn","stop_sequence":null,"type":"message","usage":{"input_tokens":2095,"output_tokens":503}}"#,
        )
        .expect("reads");
        assert_eq!(completion.content, "Hi! My name is Claude.");
        assert_eq!(completion.finish_reason, "stop");
        assert_eq!(
            completion.usage,
            Some(Usage {
                prompt_tokens: 2095,
                completion_tokens: 503
            })
        );
        assert!(matches!(
            Anthropic::completion(br#"{"type":"message"}"#),
            Err(ProviderError::Malformed(_))
        ));
        assert_eq!(
            Anthropic::error_message(
                br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#
            ),
            Some("slow down".into())
        );
    }
}
