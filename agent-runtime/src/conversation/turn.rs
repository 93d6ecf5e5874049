//! Running a turn: build the prompt (system prompt plus trimmed history), call
//! the model chain under an upstream slot, and store the answer before the
//! client sees its end. Whole and streamed turns ([`super::stream`]) share one
//! accounting path ([`settle`]): the call counted by outcome, its duration, the
//! tokens (metrics and the tenant's budget), the span's GenAI fields, the
//! optional content log, and the answer's record. Each turn is a `gen_ai` span
//! (OpenTelemetry GenAI semantic conventions). The cost goes to the ledger
//! ([`crate::cost`]); once the month's budget is spent a turn gets the fallback
//! response without a model call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tracing::Instrument;

use super::record::Anchor;
use super::{ConversationError, Sampling};
use crds::runtime_config::BudgetAction;

use crate::cost::BudgetSpent;
use crate::db::{Message, NewMessage};
use crate::domain::{Role, chain_hash_with_tools};
use crate::limits::TokenHold;
use crate::providers::{
    ChainError, ChatProvider, ChatRequest, PromptMessage, ProviderError, ToolCall, Usage,
};
use crate::state::{AppState, SharedState};

/// Model name recorded for an answer that is the tenant's fallback response.
pub const FALLBACK_MODEL: &str = "fallback";

/// Everything a turn needs once its input is stored.
#[derive(Clone, Debug)]
pub(super) struct Turn {
    /// Session the answer goes to.
    pub session_id: String,
    /// The stored user the turn answers (for live-sync events).
    pub user: String,
    /// Message the answer follows.
    pub anchor: Anchor,
    /// The conversation as the model should see it, newest last, without the
    /// agent's system prompt (added here).
    pub history: Vec<PromptMessage>,
    /// The client's sampling options.
    pub sampling: Sampling,
    /// Language for the fallback response.
    pub language: Option<String>,
    /// Channel the turn came in on (metrics).
    pub channel: String,
    /// Tokens reserved from the budget at admission; `None`: charged as used.
    pub tokens: Option<Arc<TokenHold>>,
}

/// The turn's input being written while the model is called (see
/// [`super::take_turn`]); `None` when it is stored already.
pub(super) type InputWrite<'a> = Option<BoxFuture<'a, Result<(), ConversationError>>>;

/// Waits for the turn's input to be durable.
pub(super) async fn input_written(write: InputWrite<'_>) -> Result<(), ConversationError> {
    match write {
        Some(write) => write.await,
        None => Ok(()),
    }
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

/// The span of one turn, with GenAI semantic-convention fields filled in as
/// they become known.
pub(super) fn turn_span(state: &AppState, turn: &Turn, stream: bool) -> tracing::Span {
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
        gen_ai.request.temperature = turn.sampling.temperature,
        gen_ai.request.max_tokens = turn.sampling.max_output_tokens,
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

pub(super) fn build_request(
    state: &AppState,
    turn: &Turn,
) -> Result<ChatRequest, ConversationError> {
    let mut messages = Vec::with_capacity(turn.history.len() + 1);
    if let Some(prompt) = state
        .config
        .system_prompt
        .as_deref()
        .filter(|p| !p.trim().is_empty())
    {
        messages.push(PromptMessage::text(Role::System, prompt));
    }
    messages.extend(turn.history.iter().cloned());
    let messages = crate::prompt::trim(
        &state.tokenizer,
        messages,
        state.config.context.max_tokens as usize,
    )?;
    let mut request = ChatRequest {
        messages,
        temperature: turn.sampling.temperature,
        max_output_tokens: turn.sampling.max_output_tokens,
        options: turn.sampling.options.clone(),
    };
    super::tool_loop::offer(state, &mut request);
    Ok(request)
}

fn estimate_usage(
    state: &AppState,
    request: &ChatRequest,
    content: &str,
    tool_calls: &[ToolCall],
) -> Usage {
    let calls: usize = tool_calls
        .iter()
        .map(|c| state.tokenizer.count(&c.name) + state.tokenizer.count(&c.arguments))
        .sum();
    Usage {
        prompt_tokens: state.tokenizer.prompt_tokens(&request.messages) as u64,
        completion_tokens: (state.tokenizer.count(content) + calls) as u64,
    }
}

/// An answer about to be stored.
struct AnswerDraft {
    id: String,
    content: String,
    tool_calls: Vec<ToolCall>,
    model: Option<String>,
    usage: Usage,
    latency: Duration,
    error: Option<String>,
}

impl AnswerDraft {
    /// The message to store: the answer to the turn's anchor.
    fn into_record(self, turn: &Turn) -> NewMessage {
        NewMessage {
            chain_hash: chain_hash_with_tools(
                &turn.anchor.hash,
                Role::Assistant,
                &self.content,
                &self.tool_calls,
                None,
            ),
            tool_calls: self.tool_calls,
            tool_call_id: None,
            id: self.id,
            session_id: turn.session_id.clone(),
            parent_id: Some(turn.anchor.id.clone()),
            role: Role::Assistant,
            content: self.content,
            model: self.model,
            tokens_in: self.usage.prompt_tokens as i64,
            tokens_out: self.usage.completion_tokens as i64,
            latency_ms: Some(self.latency.as_millis() as i64),
            error: self.error,
            author: None,
        }
    }
}

pub(super) async fn store_one(
    state: &AppState,
    message: NewMessage,
) -> Result<Message, ConversationError> {
    state
        .store
        .append_messages(std::slice::from_ref(&message))
        .await?
        .pop()
        .ok_or(ConversationError::NothingStored("the answer"))
}

/// Records a failed chain in the metrics and, when the tenant has a fallback
/// response for the language, stores and returns it as the answer; otherwise
/// stores the failure and returns the error.
pub(super) async fn handle_chain_failure(
    state: &AppState,
    turn: &Turn,
    request: &ChatRequest,
    span: &tracing::Span,
    err: ChainError,
    started: Instant,
    id: String,
) -> Result<Answer, ConversationError> {
    record_attempts(state, &err);
    record_error(
        span,
        err.last().map(|e| e.metric_label()).unwrap_or("unknown"),
    );
    let error = Some(err.to_string());
    let fallback = state
        .config
        .fallback_response(turn.language.as_deref())
        .filter(|_| err.invalid_request().is_none());
    let Some(text) = fallback else {
        let draft = AnswerDraft {
            id,
            content: String::new(),
            tool_calls: Vec::new(),
            model: None,
            usage: Usage::default(),
            latency: started.elapsed(),
            error,
        };
        store_one(state, draft.into_record(turn)).await?;
        return Err(ConversationError::Upstream(err));
    };
    let usage = estimate_usage(state, request, text, &[]);
    let draft = AnswerDraft {
        id,
        content: text.to_owned(),
        tool_calls: Vec::new(),
        model: Some(FALLBACK_MODEL.to_owned()),
        usage,
        latency: started.elapsed(),
        error,
    };
    Ok(Answer {
        message: store_one(state, draft.into_record(turn)).await?,
        usage,
        finish_reason: "stop".to_owned(),
    })
}

/// The answer of a turn taken when the month's budget is spent (and set to
/// answer with the fallback response): the fallback response for the language,
/// stored without calling a model; with none, the turn is refused.
pub(super) async fn answer_budget_spent(
    state: &AppState,
    turn: &Turn,
    request: &ChatRequest,
    spent: BudgetSpent,
    id: String,
) -> Result<Answer, ConversationError> {
    let Some(text) = state.config.fallback_response(turn.language.as_deref()) else {
        state.ledger.count_exhausted(BudgetAction::Reject);
        return Err(ConversationError::BudgetSpent(spent));
    };
    state.ledger.count_exhausted(BudgetAction::Fallback);
    let usage = estimate_usage(state, request, text, &[]);
    let draft = AnswerDraft {
        id,
        content: text.to_owned(),
        tool_calls: Vec::new(),
        model: Some(FALLBACK_MODEL.to_owned()),
        usage,
        latency: Duration::ZERO,
        error: Some(ConversationError::BudgetSpent(spent).to_string()),
    };
    Ok(Answer {
        message: store_one(state, draft.into_record(turn)).await?,
        usage,
        finish_reason: "stop".to_owned(),
    })
}

fn record_attempts(state: &AppState, err: &ChainError) {
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
fn count_call(state: &AppState, provider: &str, model: &str, outcome: &str) {
    state
        .metrics
        .upstream_requests
        .with_label_values(&[provider, model, outcome])
        .inc();
}

/// How a model call that started answering ended.
pub(super) struct CallEnd {
    /// The text received (all of it, or what came before the end).
    pub content: String,
    /// The tool calls received (complete, or as far as they came).
    pub tool_calls: Vec<ToolCall>,
    /// Usage, when the upstream reported it.
    pub usage: Option<Usage>,
    /// Why the model stopped, when it did.
    pub finish_reason: Option<String>,
    /// What cut the answer short, stored with it.
    pub error: Option<String>,
    /// The upstream's own failure, when it was one (a client leaving or a
    /// shutdown says nothing about the model).
    pub upstream_error: Option<ProviderError>,
}

/// The turn's call and what it is accounted under.
pub(super) struct Call<'a> {
    pub state: &'a AppState,
    pub turn: &'a Turn,
    pub request: &'a ChatRequest,
    pub span: &'a tracing::Span,
    pub provider: &'a dyn ChatProvider,
    pub started: Instant,
    pub id: String,
}

/// A settled call: the answer to store and its usage.
pub(super) struct Settled {
    pub record: NewMessage,
    pub usage: Usage,
    pub finish_reason: Option<String>,
    pub error: Option<String>,
}

/// The one accounting path of a model call that answered, whole or streamed:
/// the call counted by its outcome, its duration, the tokens (metrics and
/// budget), the span's outcome, the content log (when enabled), and the
/// answer's record.
pub(super) fn settle(call: Call<'_>, end: CallEnd) -> Settled {
    let Call {
        state,
        turn,
        request,
        span,
        provider,
        started,
        id,
    } = call;
    let (provider_name, model) = (provider.provider(), provider.model());
    match (&end.upstream_error, &end.error) {
        (Some(e), _) => count_call(state, provider_name, model, e.metric_label()),
        (None, None) => count_call(state, provider_name, model, "ok"),
        (None, Some(_)) => {}
    }
    let latency = started.elapsed();
    let usage = end
        .usage
        .unwrap_or_else(|| estimate_usage(state, request, &end.content, &end.tool_calls));
    let metrics = state.metrics.as_ref();
    metrics
        .upstream_duration
        .with_label_values(&[provider_name, model])
        .observe(latency.as_secs_f64());
    metrics.count_tokens(
        model,
        &turn.channel,
        usage.prompt_tokens,
        usage.completion_tokens,
    );
    let tokens = usage.prompt_tokens + usage.completion_tokens;
    match &turn.tokens {
        Some(hold) => hold.settle(tokens),
        None => state.limiter.charge_tokens(tokens),
    }
    state.ledger.charge(model, &turn.channel, usage);
    span.record("gen_ai.response.model", model);
    span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
    span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
    if let Some(finish) = &end.finish_reason {
        span.record("gen_ai.response.finish_reasons", finish.as_str());
    }
    if let Some(error) = &end.upstream_error {
        record_error(span, error.metric_label());
    }
    if state.config.limits.log_message_content {
        let prompt = request
            .messages
            .last()
            .map(|m| m.content.as_str())
            .unwrap_or("");
        tracing::info!(prompt, answer = end.content.as_str(), "turn content");
    }
    let draft = AnswerDraft {
        id,
        content: end.content,
        tool_calls: end.tool_calls,
        model: Some(model.to_owned()),
        usage,
        latency,
        error: end.error.clone(),
    };
    Settled {
        record: draft.into_record(turn),
        usage,
        finish_reason: end.finish_reason,
        error: end.error,
    }
}

/// Runs a turn to completion, calling the model while `written` makes the
/// turn's input durable; the answer is stored only after it.
pub(super) async fn complete(
    state: &SharedState,
    turn: &Turn,
    written: InputWrite<'_>,
) -> Result<Answer, ConversationError> {
    let span = turn_span(state, turn, false);
    Box::pin(complete_in(state, turn, &span, written))
        .instrument(span.clone())
        .await
}

async fn complete_in(
    state: &AppState,
    turn: &Turn,
    span: &tracing::Span,
    written: InputWrite<'_>,
) -> Result<Answer, ConversationError> {
    let mut turn = turn.clone();
    let mut written = written;
    let mut step = 1;
    loop {
        let request = match build_request(state, &turn) {
            Ok(request) => request,
            Err(err) => {
                input_written(written.take()).await?;
                return Err(err);
            }
        };
        if let Some(spent) = state.ledger.budget_spent() {
            input_written(written.take()).await?;
            return answer_budget_spent(state, &turn, &request, spent, NewMessage::new_id()).await;
        }
        let _turn = state.lifecycle.turn();
        let call = async {
            let permit = state.gate.acquire().await?;
            let started = Instant::now();
            let result = Box::pin(state.chain.complete(&request)).await;
            Ok::<_, ConversationError>((permit, started, result))
        };
        // The first step's model call overlaps the input's write.
        let (stored, called) = futures::future::join(input_written(written.take()), call).await;
        let id = NewMessage::new_id();
        if let Err(err) = stored {
            // The input could not be stored: no answer is stored or returned,
            // but a call the model answered is accounted for (tokens, cost).
            if let Ok((_, started, Ok((completion, provider)))) = called {
                let call = Call {
                    state,
                    turn: &turn,
                    request: &request,
                    span,
                    provider: provider.as_ref(),
                    started,
                    id,
                };
                settle(call, whole_end(completion));
            }
            return Err(err);
        }
        let (permit, started, result) = called?;
        let (completion, provider) = match result {
            Ok(ok) => ok,
            Err(err) => {
                return handle_chain_failure(state, &turn, &request, span, err, started, id).await;
            }
        };
        drop(permit);
        let mut end = whole_end(completion);
        let calls = super::tool_loop::plan(state, &turn, &mut end, step);
        let call = Call {
            state,
            turn: &turn,
            request: &request,
            span,
            provider: provider.as_ref(),
            started,
            id,
        };
        let settled = settle(call, end);
        let message = store_one(state, settled.record).await?;
        if calls.is_empty() {
            return Ok(Answer {
                message,
                usage: settled.usage,
                finish_reason: settled.finish_reason.unwrap_or_default(),
            });
        }
        super::tool_loop::run_calls(state, &mut turn, &message, calls, None).await?;
        step += 1;
    }
}

/// How a whole answer ended.
fn whole_end(completion: crate::providers::Completion) -> CallEnd {
    CallEnd {
        content: completion.content,
        tool_calls: completion.tool_calls,
        usage: completion.usage,
        finish_reason: Some(completion.finish_reason),
        error: None,
        upstream_error: None,
    }
}
