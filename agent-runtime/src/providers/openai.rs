//! OpenAI Chat Completions, as spoken by OpenAI, vLLM, Ollama, LiteLLM and
//! others: bearer key, `/chat/completions`, chunks ending with `[DONE]`.

use std::borrow::Cow;
use std::collections::VecDeque;

use crds::runtime_config::ModelConfig;
use model_wire::openai::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, CompletionUsage,
    ContentPart, DONE, ErrorBody, FunctionCall, FunctionDefinition, FunctionName, ImageUrl,
    JsonSchemaFormat, MessageContent, NamedToolChoice, ResponseFormat as WireFormatKind,
    Role as WireRole, Stop, StreamOptions, Tool, ToolCall as WireToolCall,
    ToolChoice as WireToolChoice,
};

use super::http::{Flow, HttpProvider, ModelSettings, WireFormat};
use super::sse::SseEvent;
use super::{
    ChatRequest, Completion, PromptMessage, ProviderError, RequestOptions, ResponseFormat,
    StreamEvent, ToolCall, ToolCallDelta, ToolChoice, Usage,
};
use crate::domain::Role;

/// An OpenAI-compatible upstream.
pub type OpenAiProvider = HttpProvider<OpenAi>;

/// The OpenAI Chat Completions wire format.
pub struct OpenAi;

/// A stream's memory: whether a finish reason came before `[DONE]`.
#[derive(Default)]
pub struct ChunkState {
    finished: bool,
}

impl WireFormat for OpenAi {
    const PROVIDER: &'static str = "openai";
    type StreamState = ChunkState;

    fn endpoint(config: &ModelConfig) -> String {
        format!("{}/chat/completions", config.effective_base_url())
    }

    fn models_endpoint(config: &ModelConfig) -> String {
        format!("{}/models", config.effective_base_url())
    }

    fn authorize(
        builder: reqwest::RequestBuilder,
        api_key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        match api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    fn request_body(
        settings: &ModelSettings,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<Vec<u8>, serde_json::Error> {
        let options = &request.options;
        let body = ChatCompletionRequest {
            model: Cow::Borrowed(&settings.model),
            messages: request.messages.iter().map(wire_message).collect(),
            stream,
            stream_options: stream.then_some(StreamOptions {
                include_usage: true,
            }),
            temperature: request.temperature.or(settings.temperature),
            max_tokens: (!options.max_completion_tokens)
                .then_some(request.max_output_tokens.or(settings.max_output_tokens))
                .flatten(),
            max_completion_tokens: options
                .max_completion_tokens
                .then_some(request.max_output_tokens)
                .flatten(),
            top_p: options.top_p.or(settings.top_p),
            stop: match options.stop.as_slice() {
                [] => None,
                stop => Some(Stop::Many(stop.iter().map(|s| s.as_str().into()).collect())),
            },
            user: options.user.as_deref().map(Cow::Borrowed),
            seed: options.seed,
            presence_penalty: options.presence_penalty,
            frequency_penalty: options.frequency_penalty,
            logit_bias: options.logit_bias.clone(),
            ..tool_fields(options)
        };
        if options.passed.is_empty() {
            return serde_json::to_vec(&body);
        }
        let mut value = serde_json::to_value(&body)?;
        if let Some(object) = value.as_object_mut() {
            for (field, passed) in &options.passed {
                object.insert(field.clone(), passed.clone());
            }
        }
        serde_json::to_vec(&value)
    }

    fn completion(body: &[u8]) -> Result<Completion, ProviderError> {
        let answer: ChatCompletion<'_> =
            serde_json::from_slice(body).map_err(|e| ProviderError::Malformed(e.to_string()))?;
        let usage = answer.usage.map(usage);
        let choice = answer
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Malformed("answer has no choices".into()))?;
        Ok(Completion {
            content: choice.message.content.unwrap_or_default().into_owned(),
            usage,
            finish_reason: choice
                .finish_reason
                .map_or_else(|| "stop".to_owned(), Cow::into_owned),
            tool_calls: choice
                .message
                .tool_calls
                .into_iter()
                .map(|call| ToolCall {
                    id: call.id.into_owned(),
                    name: call.function.name.into_owned(),
                    arguments: call.function.arguments.into_owned(),
                })
                .collect(),
        })
    }

    fn stream_event(
        state: &mut ChunkState,
        event: SseEvent<'_>,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<Flow, ProviderError> {
        let data = event.data.trim();
        if data == DONE {
            // Complete without a finish reason only if one came first.
            if !state.finished {
                out.push_back(StreamEvent::Finished {
                    finish_reason: "stop".into(),
                });
            }
            return Ok(Flow::End);
        }
        let chunk: ChatCompletionChunk<'_> = serde_json::from_str(data)
            .map_err(|e| ProviderError::Malformed(format!("chunk is not JSON: {e}")))?;
        if let Some(error) = chunk.error {
            return Err(stream_error(&error.message));
        }
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                out.push_back(StreamEvent::Delta(text.into_owned()));
            }
            for piece in choice.delta.tool_calls {
                let function = piece.function.unwrap_or_default();
                out.push_back(StreamEvent::ToolCall(ToolCallDelta {
                    index: piece.index,
                    id: piece.id.map(Cow::into_owned),
                    name: function.name.map(Cow::into_owned),
                    arguments: function.arguments.map(Cow::into_owned).unwrap_or_default(),
                }));
            }
            if let Some(reason) = choice.finish_reason {
                state.finished = true;
                out.push_back(StreamEvent::Finished {
                    finish_reason: reason.into_owned(),
                });
            }
        }
        if let Some(counts) = chunk.usage {
            out.push_back(StreamEvent::Usage(usage(counts)));
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

/// One prompt message as OpenAI's: text (with image parts after it when it
/// has images), the assistant's tool calls, the tool result's call id.
fn wire_message(m: &PromptMessage) -> ChatMessage<'_> {
    let content = if !m.images.is_empty() {
        let mut parts = Vec::with_capacity(m.images.len() + 1);
        if !m.content.is_empty() {
            parts.push(ContentPart::Text {
                text: m.content.as_str().into(),
            });
        }
        parts.extend(m.images.iter().map(|image| ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: image.url.as_str().into(),
                detail: image.detail.as_deref().map(Cow::Borrowed),
            },
        }));
        Some(MessageContent::Parts(parts))
    } else if m.role == Role::Assistant && m.content.is_empty() && !m.tool_calls.is_empty() {
        None
    } else {
        Some(MessageContent::Text(m.content.as_str().into()))
    };
    ChatMessage {
        role: wire_role(m.role),
        content,
        name: None,
        tool_calls: m
            .tool_calls
            .iter()
            .map(|call| WireToolCall {
                id: call.id.as_str().into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: call.name.as_str().into(),
                    arguments: call.arguments.as_str().into(),
                },
            })
            .collect(),
        tool_call_id: m.tool_call_id.as_deref().map(Cow::Borrowed),
    }
}

/// The request's tools, tool choice and answer format, as OpenAI's.
fn tool_fields(options: &RequestOptions) -> ChatCompletionRequest<'_> {
    ChatCompletionRequest {
        tools: options
            .tools
            .iter()
            .map(|tool| Tool {
                kind: "function".into(),
                function: FunctionDefinition {
                    name: tool.name.as_str().into(),
                    description: tool.description.as_deref().map(Cow::Borrowed),
                    parameters: tool.parameters.clone(),
                    strict: tool.strict,
                },
            })
            .collect(),
        tool_choice: options.tool_choice.as_ref().map(|choice| match choice {
            ToolChoice::None => WireToolChoice::Mode("none".into()),
            ToolChoice::Auto => WireToolChoice::Mode("auto".into()),
            ToolChoice::Required => WireToolChoice::Mode("required".into()),
            ToolChoice::Function(name) => WireToolChoice::Named(NamedToolChoice {
                kind: "function".into(),
                function: FunctionName {
                    name: name.as_str().into(),
                },
            }),
        }),
        parallel_tool_calls: options.parallel_tool_calls,
        response_format: options.response_format.as_ref().map(|format| match format {
            ResponseFormat::Text => WireFormatKind::Text,
            ResponseFormat::JsonObject => WireFormatKind::JsonObject,
            ResponseFormat::JsonSchema {
                name,
                description,
                schema,
                strict,
            } => WireFormatKind::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name: name.as_str().into(),
                    description: description.as_deref().map(Cow::Borrowed),
                    schema: schema.clone(),
                    strict: *strict,
                },
            },
        }),
        ..ChatCompletionRequest::default()
    }
}

fn wire_role(role: Role) -> WireRole {
    match role {
        Role::User => WireRole::User,
        Role::Assistant => WireRole::Assistant,
        Role::System => WireRole::System,
        Role::Tool => WireRole::Tool,
    }
}

fn usage(counts: CompletionUsage) -> Usage {
    Usage {
        prompt_tokens: counts.prompt_tokens,
        completion_tokens: counts.completion_tokens,
    }
}

/// An error sent in the middle of a stream.
pub(super) fn stream_error(message: &str) -> ProviderError {
    ProviderError::Status {
        status: 502,
        message: if message.is_empty() {
            "error event in stream".to_owned()
        } else {
            message.to_owned()
        },
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::PromptMessage;
    use crate::providers::http::tests::decode_in_chunks;

    /// The streamed answer of the Chat Completions reference, usage included.
    const STREAM: &str = concat!(
        "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
        "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1694268190,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12,\"total_tokens\":21}}\n\n",
        "data: [DONE]\n\n",
    );

    fn expected() -> Vec<StreamEvent> {
        vec![
            StreamEvent::Delta("Hello".into()),
            StreamEvent::Delta(" there".into()),
            StreamEvent::Finished {
                finish_reason: "stop".into(),
            },
            StreamEvent::Usage(Usage {
                prompt_tokens: 9,
                completion_tokens: 12,
            }),
        ]
    }

    #[tokio::test]
    async fn a_stream_decodes_whatever_its_chunking() {
        for size in [1, 7, 64, STREAM.len()] {
            let events: Vec<StreamEvent> = decode_in_chunks::<OpenAi>(STREAM, size)
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .expect("no error");
            assert_eq!(events, expected(), "chunks of {size}");
        }
    }

    #[tokio::test]
    async fn streams_end_right_or_fail() {
        // Without `[DONE]` after the finish reason: complete.
        let end = STREAM.find("data: [DONE]").expect("done");
        let events = decode_in_chunks::<OpenAi>(&STREAM[..end], 64).await;
        assert!(events.iter().all(Result::is_ok));
        // Cut before the finish reason: truncated.
        let cut = STREAM.find("\"finish_reason\":\"stop\"").expect("stop");
        let cut = STREAM[..cut].rfind("data:").expect("chunk");
        let events = decode_in_chunks::<OpenAi>(&STREAM[..cut], 64).await;
        assert!(matches!(events.last(), Some(Err(ProviderError::Truncated))));
        // `[DONE]` with no finish reason: finished as `stop`.
        let events = decode_in_chunks::<OpenAi>("data: [DONE]\n\n", 64).await;
        assert!(matches!(
            events.as_slice(),
            [Ok(StreamEvent::Finished { finish_reason })] if finish_reason == "stop"
        ));
        // Not JSON: malformed, and nothing after it.
        let events = decode_in_chunks::<OpenAi>("data: {oops\n\ndata: [DONE]\n\n", 64).await;
        assert!(matches!(
            events.as_slice(),
            [Err(ProviderError::Malformed(_))]
        ));
        // An error in the stream.
        let events = decode_in_chunks::<OpenAi>(
            "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
            64,
        )
        .await;
        assert!(matches!(
            events.as_slice(),
            [Err(ProviderError::Status { status: 502, message, .. })] if message == "overloaded"
        ));
    }

    #[test]
    fn requests_carry_the_prompt_and_the_limits() {
        let settings = ModelSettings {
            model: "gpt-4o-mini".into(),
            temperature: Some(0.5),
            top_p: Some(0.9),
            max_output_tokens: Some(100),
            accepts_images: true,
        };
        let request = ChatRequest {
            messages: vec![
                PromptMessage::text(Role::System, "be brief"),
                PromptMessage::text(Role::User, "hi"),
            ],
            temperature: None,
            max_output_tokens: Some(7),
            ..ChatRequest::default()
        };
        let body = OpenAi::request_body(&settings, &request, true).expect("serialises");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                "stream": true,
                "stream_options": {"include_usage": true},
                "temperature": 0.5,
                "top_p": 0.9,
                "max_tokens": 7
            })
        );
        // The client's own top_p wins over the model config's.
        let mut request = request;
        request.options.top_p = Some(0.2);
        let body = OpenAi::request_body(&settings, &request, false).expect("serialises");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["top_p"], 0.2);
    }

    #[test]
    fn answers_and_errors_are_read() {
        let completion = OpenAi::completion(
            br#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        )
        .expect("reads");
        assert_eq!(completion.content, "Hi");
        assert_eq!(completion.finish_reason, "length");
        assert_eq!(
            completion.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 1
            })
        );
        assert!(matches!(
            OpenAi::completion(br#"{"choices":[]}"#),
            Err(ProviderError::Malformed(_))
        ));
        assert_eq!(
            OpenAi::error_message(br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#),
            Some("Incorrect API key provided".into())
        );
        assert_eq!(OpenAi::error_message(b"Bad Gateway"), None);
    }
}
