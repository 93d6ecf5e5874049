//! One chat turn: build the prompt (system prompt plus trimmed history), call
//! the model chain, and store the answer before the client sees its end. A
//! streamed answer that fails midway is stored with its partial text and the
//! error. Both the OpenAI API and the sessions API run turns through here:
//! [`admit`] first (rate limits), then [`complete`] or [`stream`], which hold an
//! upstream slot ([`crate::limits::UpstreamGate`]) for the model call and end
//! streams with an error event on shutdown or upstream failure. Each turn is a
//! `gen_ai` span (OpenTelemetry GenAI semantic conventions).

use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::app::SharedState;
use crate::db::{Message, NewMessage};
use crate::domain::Role;
use crate::error::ApiError;
use crate::providers::{ChainError, ChatRequest, PromptMessage, ProviderError, StreamEvent, Usage};

/// Model name recorded for an answer that is the tenant's fallback response.
pub const FALLBACK_MODEL: &str = "fallback";

/// Hash of a conversation up to and including a message, given its parent's.
pub fn chain_hash(parent_hash: &str, role: Role, content: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(parent_hash.as_bytes());
    hasher.update([0]);
    hasher.update(role.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(content.as_bytes());
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The newest stored message a turn answers.
#[derive(Clone, Debug)]
pub struct Anchor {
    /// Its id (the answer's parent).
    pub id: String,
    /// Its conversation hash.
    pub hash: String,
}

/// Everything a turn needs.
#[derive(Clone, Debug)]
pub struct Turn {
    /// Session the answer goes to.
    pub session_id: String,
    /// Message the answer follows.
    pub anchor: Anchor,
    /// The conversation as the model should see it, newest last, without the
    /// agent's system prompt (added here).
    pub history: Vec<PromptMessage>,
    /// Client's temperature.
    pub temperature: Option<f64>,
    /// Client's answer length cap.
    pub max_output_tokens: Option<u32>,
    /// Language for the fallback response.
    pub language: Option<String>,
    /// Channel the turn came in on (metrics).
    pub channel: String,
}

/// A finished answer.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The stored assistant message.
    pub message: Message,
    /// Token usage.
    pub usage: Usage,
    /// Why it stopped.
    pub finish_reason: String,
}

/// What a streamed turn sends its consumer.
#[derive(Debug)]
pub enum TurnEvent {
    /// More text.
    Delta(String),
    /// Done and stored.
    Done(Box<Answer>),
    /// Failed midway; the partial answer is stored with the error.
    Failed {
        /// The stored partial answer.
        message: Box<Message>,
        /// What went wrong.
        error: String,
    },
}

/// A streamed turn: the id its answer will be stored under and its events.
pub struct TurnStream {
    /// Id of the assistant message being written.
    pub message_id: String,
    /// Events, ending with [`TurnEvent::Done`] or [`TurnEvent::Failed`].
    pub events: mpsc::Receiver<TurnEvent>,
}

/// Admits a request of `user` on `channel` before anything is stored: 503 while
/// shutting down, 429 with `Retry-After` over a rate limit or the token budget.
pub fn admit(state: &SharedState, channel: &str, user: &str) -> Result<(), ApiError> {
    if state.lifecycle.is_draining() {
        return Err(ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "this runtime is shutting down; retry (another replica will answer)",
            )
        });
    }
    state.limiter.check(channel, user).map_err(|limited| {
        state
            .metrics
            .rate_limited
            .with_label_values(&[limited.scope.as_str()])
            .inc();
        tracing::info!(
            scope = limited.scope.as_str(),
            retry_after_ms = limited.retry_after.as_millis() as u64,
            "rate limited"
        );
        ApiError::from(limited)
    })
}

/// The span of one turn, with GenAI semantic-convention fields filled in as
/// they become known.
fn turn_span(state: &SharedState, turn: &Turn, stream: bool) -> tracing::Span {
    let primary = state.chain.models().first();
    tracing::info_span!(
        "chat",
        otel.name = %format_args!("chat {}", primary.map(|p| p.model()).unwrap_or("")),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = primary.map(|p| p.provider()).unwrap_or(""),
        gen_ai.system = primary.map(|p| p.provider()).unwrap_or(""),
        gen_ai.conversation.id = %turn.session_id,
        gen_ai.request.model = primary.map(|p| p.model()).unwrap_or(""),
        gen_ai.request.temperature = turn.temperature,
        gen_ai.request.max_tokens = turn.max_output_tokens,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        error.type = tracing::field::Empty,
        channel = %turn.channel,
        stream,
    )
}

/// Marks the turn's span failed, with the error's kind (`error.type`).
fn record_error(span: &tracing::Span, kind: &str) {
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
}

fn record_outcome(span: &tracing::Span, model: &str, usage: Usage, finish: Option<&str>) {
    span.record("gen_ai.response.model", model);
    span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
    span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
    if let Some(finish) = finish {
        span.record("gen_ai.response.finish_reasons", finish);
    }
}

/// Logs the prompt's newest message and the answer when the tenant enabled it.
fn log_content(state: &SharedState, request: &ChatRequest, answer: &str) {
    if state.config.limits.log_message_content {
        let prompt = request
            .messages
            .last()
            .map(|m| m.content.as_str())
            .unwrap_or("");
        tracing::info!(prompt, answer, "turn content");
    }
}

/// Counts a finished turn's tokens and charges them to the tenant's budget.
fn account_tokens(state: &SharedState, turn: &Turn, model: &str, usage: Usage) {
    state.metrics.count_tokens(
        model,
        &turn.channel,
        usage.prompt_tokens,
        usage.completion_tokens,
    );
    state
        .limiter
        .charge_tokens(usage.prompt_tokens + usage.completion_tokens);
}

fn build_request(state: &SharedState, turn: &Turn) -> Result<ChatRequest, ApiError> {
    let mut messages = Vec::with_capacity(turn.history.len() + 1);
    if let Some(prompt) = state
        .config
        .system_prompt
        .as_deref()
        .filter(|p| !p.trim().is_empty())
    {
        messages.push(PromptMessage {
            role: Role::System,
            content: prompt.to_owned(),
        });
    }
    messages.extend(turn.history.iter().cloned());
    let messages = crate::context::trim(
        &state.tokenizer,
        messages,
        state.config.context.max_tokens as usize,
    )
    .map_err(|e| ApiError::bad_request("context_length_exceeded", e.to_string()))?;
    Ok(ChatRequest {
        messages,
        temperature: turn.temperature,
        max_output_tokens: turn.max_output_tokens,
    })
}

fn estimate_usage(state: &SharedState, request: &ChatRequest, content: &str) -> Usage {
    Usage {
        prompt_tokens: state.tokenizer.prompt_tokens(&request.messages) as u64,
        completion_tokens: state.tokenizer.count(content) as u64,
    }
}

/// The HTTP error for a chain that failed with no fallback response.
fn chain_error_response(err: &ChainError) -> ApiError {
    match err.last() {
        Some(ProviderError::Timeout(_)) => ApiError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "the model did not answer in time; try again",
        ),
        Some(ProviderError::Status {
            status: 429,
            retry_after,
            ..
        }) => ApiError {
            retry_after: retry_after.map(|d| d.as_secs().max(1)),
            ..ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "upstream_rate_limited",
                "the model provider is rate limiting this agent; try again later",
            )
        },
        _ => ApiError::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("the model could not answer: {err}"),
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn answer_message(
    turn: &Turn,
    id: String,
    content: String,
    model: Option<String>,
    usage: Usage,
    latency: Duration,
    error: Option<String>,
) -> NewMessage {
    NewMessage {
        chain_hash: chain_hash(&turn.anchor.hash, Role::Assistant, &content),
        id,
        session_id: turn.session_id.clone(),
        parent_id: Some(turn.anchor.id.clone()),
        role: Role::Assistant,
        content,
        model,
        tokens_in: usage.prompt_tokens as i64,
        tokens_out: usage.completion_tokens as i64,
        latency_ms: Some(latency.as_millis() as i64),
        error,
    }
}

async fn store_one(state: &SharedState, message: NewMessage) -> Result<Message, ApiError> {
    let mut stored = state
        .store
        .append_messages(std::slice::from_ref(&message))
        .await?;
    stored.pop().ok_or_else(ApiError::internal)
}

/// Records a failed chain in the metrics and, when the tenant has a fallback
/// response for the language, stores and returns it as the answer; otherwise
/// stores the failure and returns the HTTP error.
async fn handle_chain_failure(
    state: &SharedState,
    turn: &Turn,
    request: &ChatRequest,
    err: ChainError,
    started: Instant,
    id: String,
) -> Result<Answer, ApiError> {
    let error_text = err.to_string();
    match state.config.fallback_response(turn.language.as_deref()) {
        Some(text) => {
            let usage = estimate_usage(state, request, text);
            let message = answer_message(
                turn,
                id,
                text.to_owned(),
                Some(FALLBACK_MODEL.to_owned()),
                usage,
                started.elapsed(),
                Some(error_text),
            );
            let message = store_one(state, message).await?;
            Ok(Answer {
                message,
                usage,
                finish_reason: "stop".to_owned(),
            })
        }
        None => {
            let message = answer_message(
                turn,
                id,
                String::new(),
                None,
                Usage::default(),
                started.elapsed(),
                Some(error_text),
            );
            store_one(state, message).await?;
            Err(chain_error_response(&err))
        }
    }
}

fn record_attempts(state: &SharedState, err: &ChainError) {
    for (model, e) in &err.attempts {
        let provider = state
            .chain
            .models()
            .iter()
            .find(|p| p.model() == model)
            .map(|p| p.provider())
            .unwrap_or("unknown");
        count_call(state, provider, model, e.metric_label());
    }
}

/// Counts one model call by its outcome (`ok` or the error's label).
fn count_call(state: &SharedState, provider: &str, model: &str, outcome: &str) {
    state
        .metrics
        .upstream_requests
        .with_label_values(&[provider, model, outcome])
        .inc();
}

/// Runs a turn to completion.
pub async fn complete(state: &SharedState, turn: &Turn) -> Result<Answer, ApiError> {
    let span = turn_span(state, turn, false);
    complete_in(state, turn, &span)
        .instrument(span.clone())
        .await
}

async fn complete_in(
    state: &SharedState,
    turn: &Turn,
    span: &tracing::Span,
) -> Result<Answer, ApiError> {
    let request = build_request(state, turn)?;
    let _turn = state.lifecycle.turn();
    let _permit = state.gate.acquire().await?;
    let started = Instant::now();
    let id = NewMessage::new_id();
    match state.chain.complete(&request).await {
        Ok((completion, provider)) => {
            let latency = started.elapsed();
            let usage = completion
                .usage
                .unwrap_or_else(|| estimate_usage(state, &request, &completion.content));
            count_call(state, provider.provider(), provider.model(), "ok");
            let m = state.metrics.as_ref();
            m.upstream_duration
                .with_label_values(&[provider.provider(), provider.model()])
                .observe(latency.as_secs_f64());
            account_tokens(state, turn, provider.model(), usage);
            record_outcome(
                span,
                provider.model(),
                usage,
                Some(&completion.finish_reason),
            );
            log_content(state, &request, &completion.content);
            let message = answer_message(
                turn,
                id,
                completion.content,
                Some(provider.model().to_owned()),
                usage,
                latency,
                None,
            );
            let message = store_one(state, message).await?;
            Ok(Answer {
                message,
                usage,
                finish_reason: completion.finish_reason,
            })
        }
        Err(err) => {
            record_attempts(state, &err);
            record_error(
                span,
                err.last().map(|e| e.metric_label()).unwrap_or("unknown"),
            );
            handle_chain_failure(state, turn, &request, err, started, id).await
        }
    }
}

/// Starts a streamed turn. Errors before the first byte (every model refusing
/// and no fallback response) come back as an HTTP error instead of a stream.
pub async fn stream(state: &SharedState, turn: Turn) -> Result<TurnStream, ApiError> {
    let span = turn_span(state, &turn, true);
    stream_in(state, turn, span.clone()).instrument(span).await
}

async fn stream_in(
    state: &SharedState,
    turn: Turn,
    span: tracing::Span,
) -> Result<TurnStream, ApiError> {
    let request = build_request(state, &turn)?;
    let turn_guard = state.lifecycle.turn();
    let permit = state.gate.acquire().await?;
    let started = Instant::now();
    let id = NewMessage::new_id();
    let (tx, rx) = mpsc::channel(16);
    let (events, provider, verdict) = match state.chain.stream(&request).await {
        Ok(ok) => ok,
        Err(err) => {
            record_attempts(state, &err);
            record_error(
                &span,
                err.last().map(|e| e.metric_label()).unwrap_or("unknown"),
            );
            let answer =
                handle_chain_failure(state, &turn, &request, err, started, id.clone()).await?;
            // The fallback response, streamed as one delta.
            let _ = tx.try_send(TurnEvent::Delta(answer.message.content.clone()));
            let _ = tx.try_send(TurnEvent::Done(Box::new(answer)));
            return Ok(TurnStream {
                message_id: id,
                events: rx,
            });
        }
    };
    let state = state.clone();
    let message_id = id.clone();
    let task_span = span.clone();
    tokio::spawn(async move {
        let _turn = turn_guard;
        let _permit = permit;
        let span = task_span;
        state.metrics.active_streams.inc();
        let mut events = events;
        let mut content = String::new();
        let mut usage: Option<Usage> = None;
        let mut finish_reason: Option<String> = None;
        let mut error: Option<String> = None;
        let mut upstream_error: Option<ProviderError> = None;
        let mut first_token = true;
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                () = tx.closed() => {
                    error = Some("client disconnected before the answer was complete".to_owned());
                    break;
                }
                () = state.lifecycle.cancelled() => {
                    error = Some("the runtime shut down before the answer was complete".to_owned());
                    break;
                }
            };
            match next {
                None => break,
                Some(Ok(StreamEvent::Delta(text))) => {
                    if first_token {
                        first_token = false;
                        state
                            .metrics
                            .time_to_first_token
                            .with_label_values(&[provider.model()])
                            .observe(started.elapsed().as_secs_f64());
                    }
                    content.push_str(&text);
                    let sent = tokio::select! {
                        sent = tx.send(TurnEvent::Delta(text)) => sent.is_ok(),
                        () = state.lifecycle.cancelled() => false,
                    };
                    if !sent {
                        error =
                            Some("client disconnected before the answer was complete".to_owned());
                        break;
                    }
                }
                Some(Ok(StreamEvent::Usage(u))) => usage = Some(u),
                Some(Ok(StreamEvent::Finished { finish_reason: r })) => finish_reason = Some(r),
                Some(Err(e)) => {
                    error = Some(e.to_string());
                    upstream_error = Some(e);
                    break;
                }
            }
        }
        drop(events);
        if error.is_none() && finish_reason.is_none() {
            error = Some(ProviderError::Truncated.to_string());
            upstream_error = Some(ProviderError::Truncated);
        }
        // The call's outcome and the model's health: a clean end closes its
        // circuit, a break counts against it; a client gone or a shutdown
        // says nothing about it.
        match (&upstream_error, &error) {
            (Some(e), _) => {
                count_call(&state, provider.provider(), provider.model(), e.metric_label());
                verdict.failed(e);
            }
            (None, None) => {
                count_call(&state, provider.provider(), provider.model(), "ok");
                verdict.succeeded();
            }
            (None, Some(_)) => drop(verdict),
        }
        let latency = started.elapsed();
        let usage = usage.unwrap_or_else(|| estimate_usage(&state, &request, &content));
        let m = state.metrics.as_ref();
        m.upstream_duration
            .with_label_values(&[provider.provider(), provider.model()])
            .observe(latency.as_secs_f64());
        account_tokens(&state, &turn, provider.model(), usage);
        record_outcome(&span, provider.model(), usage, finish_reason.as_deref());
        // A client leaving or a shutdown is no failure of the model call.
        if let Some(error) = &upstream_error {
            record_error(&span, error.metric_label());
        }
        log_content(&state, &request, &content);
        let record = answer_message(
            &turn,
            message_id,
            content,
            Some(provider.model().to_owned()),
            usage,
            latency,
            error.clone(),
        );
        // Boxed: the write's future is large and would otherwise sit inline
        // in every idle stream's task.
        let stored = match Box::pin(state.store.append_messages(std::slice::from_ref(&record)))
            .await
        {
            Ok(mut rows) => rows.pop(),
            Err(err) => {
                tracing::error!(session = %turn.session_id, error = %err, "could not store the answer");
                None
            }
        };
        let event = match (stored, error) {
            (Some(message), None) => TurnEvent::Done(Box::new(Answer {
                message,
                usage,
                finish_reason: finish_reason.unwrap_or_else(|| "stop".to_owned()),
            })),
            (Some(message), Some(error)) => {
                tracing::warn!(session = %turn.session_id, %error, "stream failed midway; partial answer stored");
                TurnEvent::Failed {
                    message: Box::new(message),
                    error,
                }
            }
            (None, _) => TurnEvent::Failed {
                message: Box::new(placeholder(record)),
                error: "the answer could not be stored".to_owned(),
            },
        };
        // The last event: give a slow reader a moment, never block shutdown.
        let _ = tokio::time::timeout(Duration::from_secs(5), tx.send(event)).await;
        state.metrics.active_streams.dec();
    }.instrument(span.clone()));
    Ok(TurnStream {
        message_id: id,
        events: rx,
    })
}

/// A message that was not stored, shaped as if it were (for the last event).
fn placeholder(record: NewMessage) -> Message {
    Message {
        id: record.id,
        session_id: record.session_id,
        parent_id: record.parent_id,
        role: record.role,
        content: record.content,
        model: record.model,
        tokens_in: record.tokens_in,
        tokens_out: record.tokens_out,
        latency_ms: record.latency_ms,
        error: record.error,
        created_at: chrono::Utc::now(),
        chain_hash: record.chain_hash,
    }
}

/// The stored conversation as prompt messages, skipping failed empty answers.
pub fn prompt_from_stored(messages: &[Message]) -> Vec<PromptMessage> {
    messages
        .iter()
        .filter(|m| !(m.role == Role::Assistant && m.error.is_some() && m.content.is_empty()))
        .map(|m| PromptMessage {
            role: m.role,
            content: m.content.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_hashes_depend_on_the_whole_prefix() {
        let a = chain_hash("", Role::User, "hi");
        let b = chain_hash(&a, Role::Assistant, "hello");
        assert_eq!(a, chain_hash("", Role::User, "hi"));
        assert_ne!(b, chain_hash("", Role::Assistant, "hello"));
        assert_ne!(a, chain_hash("", Role::System, "hi"));
        assert_eq!(a.len(), 32);
    }
}
