//! Anthropic Messages (`POST /v1/messages`), streaming included.

use std::time::Duration;

use crds::runtime_config::ModelConfig;
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::sse::{self, SseEvent};
use super::{
    ChatProvider, ChatRequest, Completion, EventStream, ProviderError, StreamEvent, Usage,
    read_json, send,
};
use crate::domain::Role;

const API_VERSION: &str = "2023-06-01";
/// Anthropic requires `max_tokens`; used when neither client nor config sets it.
const DEFAULT_MAX_TOKENS: u32 = 4096;

/// An Anthropic upstream.
pub struct AnthropicProvider {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    temperature: Option<f64>,
    max_output_tokens: Option<u32>,
    timeout: Duration,
}

impl AnthropicProvider {
    /// A provider for `config`, sending `api_key` as `x-api-key`.
    pub fn new(client: reqwest::Client, config: &ModelConfig, api_key: Option<String>) -> Self {
        let base = config.effective_base_url();
        let base = base.strip_suffix("/v1").unwrap_or(&base);
        Self {
            client,
            url: format!("{base}/v1/messages"),
            model: config.name.clone(),
            api_key,
            temperature: config.temperature,
            max_output_tokens: config.max_output_tokens,
            timeout: Duration::from_secs(config.timeout_seconds.max(1)),
        }
    }

    /// System messages go to `system`; the rest must alternate user/assistant
    /// starting with the user, so same-role neighbours are merged and a leading
    /// assistant message (a greeting) is dropped.
    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        let mut turns: Vec<(&'static str, String)> = Vec::new();
        for m in request.messages.iter().filter(|m| m.role != Role::System) {
            let role = if m.role == Role::Assistant {
                "assistant"
            } else {
                "user"
            };
            if turns.is_empty() && role == "assistant" {
                continue;
            }
            match turns.last_mut() {
                Some((last, text)) if *last == role => {
                    text.push_str("\n\n");
                    text.push_str(&m.content);
                }
                _ => turns.push((role, m.content.clone())),
            }
        }
        let messages: Vec<Value> = turns
            .into_iter()
            .map(|(role, content)| json!({"role": role, "content": content}))
            .collect();
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "max_tokens": request.max_output_tokens.or(self.max_output_tokens).unwrap_or(DEFAULT_MAX_TOKENS),
            "stream": stream,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if let Some(t) = request.temperature.or(self.temperature) {
            body["temperature"] = json!(t);
        }
        body
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let builder = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("anthropic-version", API_VERSION)
            .body(body.to_string());
        match &self.api_key {
            Some(key) => builder.header("x-api-key", key),
            None => builder,
        }
    }
}

/// Tracks a stream's usage across events.
#[derive(Default)]
struct StreamState {
    usage: Usage,
    stop_reason: Option<String>,
}

/// Events carried by one Anthropic stream event; `message_stop` yields the usage
/// and [`StreamEvent::Finished`].
fn stream_events(
    event: &SseEvent,
    state: &mut StreamState,
) -> Result<Vec<StreamEvent>, ProviderError> {
    let value: Value = serde_json::from_str(&event.data)
        .map_err(|e| ProviderError::Malformed(format!("event is not JSON: {e}")))?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .or(event.event.as_deref())
        .unwrap_or("");
    let mut out = Vec::new();
    match kind {
        "message_start" => {
            if let Some(n) = value
                .pointer("/message/usage/input_tokens")
                .and_then(Value::as_u64)
            {
                state.usage.prompt_tokens = n;
            }
        }
        "content_block_delta" => {
            if let Some(text) = value.pointer("/delta/text").and_then(Value::as_str)
                && !text.is_empty()
            {
                out.push(StreamEvent::Delta(text.to_owned()));
            }
        }
        "message_delta" => {
            if let Some(n) = value
                .pointer("/usage/output_tokens")
                .and_then(Value::as_u64)
            {
                state.usage.completion_tokens = n;
            }
            if let Some(reason) = value.pointer("/delta/stop_reason").and_then(Value::as_str) {
                state.stop_reason = Some(reason.to_owned());
            }
        }
        "message_stop" => {
            out.push(StreamEvent::Usage(state.usage));
            out.push(StreamEvent::Finished {
                finish_reason: finish_reason(state.stop_reason.as_deref()),
            });
            return Ok(out);
        }
        "error" => {
            let message = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("error event in stream");
            return Err(ProviderError::Status {
                status: 502,
                message: message.to_owned(),
                retry_after: None,
            });
        }
        _ => {}
    }
    Ok(out)
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

impl ChatProvider for AnthropicProvider {
    fn provider(&self) -> &'static str {
        "anthropic"
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn complete<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let response = send(self.post(&self.body(request, false)), self.timeout).await?;
            let value = read_json(response, self.timeout).await?;
            let blocks = value
                .get("content")
                .and_then(Value::as_array)
                .ok_or_else(|| ProviderError::Malformed("answer has no content".into()))?;
            let content: String = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            let usage = value.get("usage").map(|u| Usage {
                prompt_tokens: u.get("input_tokens").and_then(Value::as_u64).unwrap_or(0),
                completion_tokens: u.get("output_tokens").and_then(Value::as_u64).unwrap_or(0),
            });
            Ok(Completion {
                content,
                usage,
                finish_reason: finish_reason(value.get("stop_reason").and_then(Value::as_str)),
            })
        })
    }

    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let response = send(self.post(&self.body(request, true)), self.timeout).await?;
            let events = sse::events(response, self.timeout);
            let stream = futures::stream::unfold(
                (events, StreamState::default(), false),
                |(mut events, mut state, done)| async move {
                    if done {
                        return None;
                    }
                    loop {
                        match events.next().await {
                            Some(Ok(event)) => match stream_events(&event, &mut state) {
                                Ok(items)
                                    if items
                                        .iter()
                                        .any(|i| matches!(i, StreamEvent::Finished { .. })) =>
                                {
                                    let items = items.into_iter().map(Ok).collect::<Vec<_>>();
                                    return Some((items, (events, state, true)));
                                }
                                Ok(items) if !items.is_empty() => {
                                    let items = items.into_iter().map(Ok).collect::<Vec<_>>();
                                    return Some((items, (events, state, false)));
                                }
                                Ok(_) => {}
                                Err(err) => return Some((vec![Err(err)], (events, state, true))),
                            },
                            Some(Err(err)) => return Some((vec![Err(err)], (events, state, true))),
                            None => {
                                return Some((
                                    vec![Err(ProviderError::Truncated)],
                                    (events, state, true),
                                ));
                            }
                        }
                    }
                },
            )
            .flat_map(futures::stream::iter)
            .boxed();
            Ok(stream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::PromptMessage;

    #[test]
    fn system_goes_apart_and_turns_alternate() {
        let provider = AnthropicProvider::new(
            crate::providers::http_client().expect("client"),
            &ModelConfig {
                name: "claude".into(),
                ..ModelConfig::default()
            },
            None,
        );
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
        let body = provider.body(&request, true);
        assert_eq!(body["system"], "be brief");
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "a\n\nb"}, {"role": "assistant", "content": "c"}])
        );
        assert_eq!(body["max_tokens"], 4096);
    }
}
