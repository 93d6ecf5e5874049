//! OpenAI Chat Completions, as spoken by OpenAI, vLLM, Ollama, LiteLLM and others.

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

/// An OpenAI-compatible upstream.
pub struct OpenAiProvider {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    temperature: Option<f64>,
    max_output_tokens: Option<u32>,
    timeout: Duration,
}

impl OpenAiProvider {
    /// A provider for `config`, sending `api_key` as a bearer token.
    pub fn new(client: reqwest::Client, config: &ModelConfig, api_key: Option<String>) -> Self {
        Self {
            client,
            url: format!("{}/chat/completions", config.effective_base_url()),
            model: config.name.clone(),
            api_key,
            temperature: config.temperature,
            max_output_tokens: config.max_output_tokens,
            timeout: Duration::from_secs(config.timeout_seconds.max(1)),
        }
    }

    fn body(&self, request: &ChatRequest, stream: bool) -> Value {
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect();
        let mut body = json!({"model": self.model, "messages": messages, "stream": stream});
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(t) = request.temperature.or(self.temperature) {
            body["temperature"] = json!(t);
        }
        if let Some(n) = request.max_output_tokens.or(self.max_output_tokens) {
            body["max_tokens"] = json!(n);
        }
        body
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let builder = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        match &self.api_key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }
}

fn usage_of(value: &Value) -> Option<Usage> {
    let usage = value.get("usage").filter(|u| u.is_object())?;
    Some(Usage {
        prompt_tokens: usage.get("prompt_tokens")?.as_u64()?,
        completion_tokens: usage
            .get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

/// Events carried by one OpenAI chunk; `Ok(None)` marks `[DONE]`.
fn chunk_events(event: &SseEvent) -> Result<Option<Vec<StreamEvent>>, ProviderError> {
    let data = event.data.trim();
    if data == "[DONE]" {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(data)
        .map_err(|e| ProviderError::Malformed(format!("chunk is not JSON: {e}")))?;
    if let Some(error) = value.get("error") {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error event in stream");
        return Err(ProviderError::Status {
            status: 502,
            message: message.to_owned(),
            retry_after: None,
        });
    }
    let mut out = Vec::new();
    if let Some(choice) = value.pointer("/choices/0") {
        if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str)
            && !text.is_empty()
        {
            out.push(StreamEvent::Delta(text.to_owned()));
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            out.push(StreamEvent::Finished {
                finish_reason: reason.to_owned(),
            });
        }
    }
    if let Some(usage) = usage_of(&value) {
        out.push(StreamEvent::Usage(usage));
    }
    Ok(Some(out))
}

impl ChatProvider for OpenAiProvider {
    fn provider(&self) -> &'static str {
        "openai"
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
            let choice = value
                .pointer("/choices/0")
                .ok_or_else(|| ProviderError::Malformed("answer has no choices".into()))?;
            let content = match choice.pointer("/message/content") {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Null) | None => String::new(),
                Some(_) => return Err(ProviderError::Malformed("content is not text".into())),
            };
            Ok(Completion {
                content,
                usage: usage_of(&value),
                finish_reason: choice
                    .get("finish_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("stop")
                    .to_owned(),
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
            // State: (events, finished seen, done).
            let stream = futures::stream::unfold(
                (events, false, false),
                |(mut events, mut finished, done)| async move {
                    if done {
                        return None;
                    }
                    let mut batch: Vec<Result<StreamEvent, ProviderError>> = Vec::new();
                    loop {
                        match events.next().await {
                            Some(Ok(event)) => match chunk_events(&event) {
                                Ok(Some(items)) => {
                                    for item in items {
                                        finished |= matches!(item, StreamEvent::Finished { .. });
                                        batch.push(Ok(item));
                                    }
                                    if !batch.is_empty() {
                                        return Some((batch, (events, finished, false)));
                                    }
                                }
                                // `[DONE]`: complete only if a finish reason came first.
                                Ok(None) if finished => return None,
                                Ok(None) => {
                                    batch.push(Ok(StreamEvent::Finished {
                                        finish_reason: "stop".into(),
                                    }));
                                    return Some((batch, (events, true, true)));
                                }
                                Err(err) => {
                                    batch.push(Err(err));
                                    return Some((batch, (events, finished, true)));
                                }
                            },
                            Some(Err(err)) => {
                                batch.push(Err(err));
                                return Some((batch, (events, finished, true)));
                            }
                            // The body ended without `[DONE]`.
                            None if finished => return None,
                            None => {
                                batch.push(Err(ProviderError::Truncated));
                                return Some((batch, (events, finished, true)));
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

    #[test]
    fn chunks_become_events() {
        let event = |data: &str| SseEvent {
            event: None,
            data: data.to_owned(),
        };
        let items = chunk_events(&event(
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
        ))
        .expect("parses")
        .expect("not done");
        assert_eq!(items, vec![StreamEvent::Delta("Hi".into())]);
        let items = chunk_events(&event(
            r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#,
        ))
        .expect("parses")
        .expect("not done");
        assert_eq!(
            items,
            vec![StreamEvent::Usage(Usage {
                prompt_tokens: 5,
                completion_tokens: 2
            })]
        );
        assert!(chunk_events(&event("[DONE]")).expect("parses").is_none());
        assert!(matches!(
            chunk_events(&event("{oops")),
            Err(ProviderError::Malformed(_))
        ));
    }
}
