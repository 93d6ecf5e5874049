//! Anthropic Messages (`POST /v1/messages`), streaming included: `x-api-key`,
//! system prompt apart, turns alternating from the user, events ending with
//! `message_stop`.

use std::borrow::Cow;
use std::collections::VecDeque;

use crds::runtime_config::ModelConfig;
use model_wire::anthropic::{
    API_VERSION, BlockDelta, ErrorBody, InputMessage, Message, MessageContent, MessageStreamEvent,
    MessagesRequest, Role as WireRole, SystemPrompt, text_of,
};

use super::http::{Flow, HttpProvider, ModelSettings, WireFormat};
use super::openai::stream_error;
use super::sse::SseEvent;
use super::{ChatRequest, Completion, ProviderError, StreamEvent, Usage};
use crate::domain::Role;

/// Anthropic requires `max_tokens`; used when neither client nor config sets it.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// An Anthropic upstream.
pub type AnthropicProvider = HttpProvider<Anthropic>;

/// The Anthropic Messages wire format.
pub struct Anthropic;

/// A stream's memory: usage and stop reason arrive in different events.
#[derive(Default)]
pub struct EventState {
    usage: Usage,
    stop_reason: Option<String>,
}

impl WireFormat for Anthropic {
    const PROVIDER: &'static str = "anthropic";
    type StreamState = EventState;

    fn endpoint(config: &ModelConfig) -> String {
        let base = config.effective_base_url();
        let base = base.strip_suffix("/v1").unwrap_or(&base);
        format!("{base}/v1/messages")
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

    /// System messages go to `system`; the rest must alternate user/assistant
    /// starting with the user, so same-role neighbours are merged and a leading
    /// assistant message (a greeting) is dropped.
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
            match messages.last_mut() {
                None if role == WireRole::Assistant => {}
                Some(InputMessage {
                    role: last,
                    content: MessageContent::Text(text),
                }) if *last == role => {
                    let text = text.to_mut();
                    text.push_str("\n\n");
                    text.push_str(&m.content);
                }
                _ => messages.push(InputMessage {
                    role,
                    content: MessageContent::Text(Cow::Borrowed(&m.content)),
                }),
            }
        }
        let body = MessagesRequest {
            model: Cow::Borrowed(&settings.model),
            messages,
            max_tokens: request
                .max_output_tokens
                .or(settings.max_output_tokens)
                .unwrap_or(DEFAULT_MAX_TOKENS),
            system: system.map(SystemPrompt::Text),
            temperature: request.temperature.or(settings.temperature),
            stream,
            ..MessagesRequest::default()
        };
        serde_json::to_vec(&body)
    }

    fn completion(body: &[u8]) -> Result<Completion, ProviderError> {
        let message: Message<'_> =
            serde_json::from_slice(body).map_err(|e| ProviderError::Malformed(e.to_string()))?;
        Ok(Completion {
            content: text_of(&message.content),
            usage: message.usage.map(|u| Usage {
                prompt_tokens: u.input_tokens,
                completion_tokens: u.output_tokens,
            }),
            finish_reason: finish_reason(message.stop_reason.as_deref()),
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
        _ => "stop",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
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
            max_output_tokens: None,
        };
        let msg = |role, content: &str| PromptMessage {
            role,
            content: content.into(),
        };
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
