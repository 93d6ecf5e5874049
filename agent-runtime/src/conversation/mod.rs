//! The conversation service: the one path every way in takes through a
//! conversation (the OpenAI API, the sessions API, webhook intake and its
//! delivery; chat apps and tools later). It resolves the session, records the
//! user's message once, runs the turn against the model chain (whole or
//! streamed, one accounting path for both), stores the answer, and answers
//! with domain errors ([`ConversationError`]) that each edge maps to its own
//! wire format.
//!
//! An edge first [`admit`]s its caller (shutdown and rate limits), then builds
//! a [`TurnRequest`] and calls [`take_turn`], getting back a [`TurnReply`]: a
//! whole [`Answer`] or a [`TurnStream`] of [`TurnEvent`]s. Edges that answer
//! later (webhook delivery) [`record`] the message now and
//! [`answer_recorded`] it in the background.

mod error;
mod record;
pub mod retention;
mod stream;
mod tool_loop;
mod turn;

pub use error::ConversationError;
pub use record::{Recorded, current_history, open_session, record};
pub use stream::{TurnEvent, TurnStream};
pub use turn::{Answer, FALLBACK_MODEL};

use std::sync::Arc;

use crds::runtime_config::BudgetAction;

use crate::db::Message;
use crate::limits::TokenHold;
use crate::providers::{ChatRequest, PromptMessage, RequestOptions};
use crate::state::{AppState, SharedState};

/// Who is talking, through which channel.
#[derive(Clone, Debug)]
pub struct Participant {
    /// The end user.
    pub user: String,
    /// The channel the message came in through.
    pub channel: String,
    /// Language for the fallback response.
    pub language: Option<String>,
    /// Who wrote the message when the session is shared and `user` is its
    /// owner (a Slack thread: the user who started it); stored with the
    /// message. `None`: `user` wrote it.
    pub author: Option<String>,
}

/// A participant let in by [`admit`]: only an admitted participant can take
/// a turn. Holds the tokens reserved from the tenant's budget, settled by the
/// turn (given back if it ends before the model answered).
#[derive(Clone, Debug)]
pub struct Admitted(Participant, Option<Arc<TokenHold>>);

impl Admitted {
    /// Who was admitted.
    pub fn participant(&self) -> &Participant {
        &self.0
    }
}

/// Which session a message belongs to.
#[derive(Clone, Debug)]
pub enum SessionRef {
    /// One of the user's sessions, by id (it must exist).
    Id(String),
    /// The client's own conversation id: its session, created when missing.
    External(String),
    /// No id: the session whose stored history the client's history continues,
    /// else a new one (OpenAI clients resending the whole conversation).
    Recognised,
}

/// What the user said.
#[derive(Clone, Debug)]
pub enum Input {
    /// One new message after the session's newest.
    Message(String),
    /// The whole conversation as the client holds it, newest last: the
    /// messages not stored yet are stored.
    History(Vec<PromptMessage>),
}

/// The client's sampling options.
#[derive(Clone, Debug, Default)]
pub struct Sampling {
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Answer length cap.
    pub max_output_tokens: Option<u32>,
    /// Tools, answer format and the other request options.
    pub options: RequestOptions,
}

/// How the answer is wanted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyMode {
    /// Once complete and stored.
    Whole,
    /// As events while the model writes.
    Stream,
}

/// One turn as an edge asks for it.
#[derive(Debug)]
pub struct TurnRequest {
    /// Who, let in by [`admit`].
    pub participant: Admitted,
    /// Which session.
    pub session: SessionRef,
    /// What the user said.
    pub input: Input,
    /// Sampling options.
    pub sampling: Sampling,
    /// Whole or streamed.
    pub mode: ReplyMode,
}

/// The answer, as asked for.
pub enum Reply {
    /// Complete and stored.
    Whole(Box<Answer>),
    /// Being written; the last event carries the stored answer.
    Stream(TurnStream),
}

/// What a turn gives back.
pub struct TurnReply {
    /// The session the turn went to.
    pub session_id: String,
    /// The user message stored for an [`Input::Message`].
    pub user_message: Option<Message>,
    /// The answer.
    pub reply: Reply,
}

/// Admits `participant` before anything is stored: refused while the runtime
/// shuts down, when the monthly budget is spent and set to refuse, and over a
/// rate limit or the token budget (counted across the agent's pods, see
/// [`crate::limits`]).
pub async fn admit(
    state: &AppState,
    participant: Participant,
) -> Result<Admitted, ConversationError> {
    if state.lifecycle.is_draining() {
        return Err(ConversationError::ShuttingDown);
    }
    if let Some(spent) = state.ledger.budget_spent()
        && spent.action == BudgetAction::Reject
    {
        state.ledger.count_exhausted(spent.action);
        tracing::info!(budget = %spent.budget, currency = %spent.currency, "monthly budget spent: turn refused");
        return Err(ConversationError::BudgetSpent(spent));
    }
    let admission = state
        .limiter
        .check(&participant.channel, &participant.user)
        .await
        .map_err(|limited| {
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
            ConversationError::RateLimited(limited)
        })?;
    Ok(Admitted(participant, admission.tokens.map(Arc::new)))
}

/// Records the user's input in its session (resolved or created), then
/// answers it, whole or streamed. A client history's new messages are written
/// while the model is called: the answer is stored, and the reply (or the
/// stream) begins, only once they are durable. Errors before the first byte
/// (every model refusing with no fallback response, limits, storage) come
/// back as errors, not as a stream.
pub async fn take_turn(
    state: &SharedState,
    request: TurnRequest,
) -> Result<TurnReply, ConversationError> {
    let TurnRequest {
        participant,
        session,
        input,
        sampling,
        mode,
    } = request;
    refuse_unsupported(state, &sampling, &input)?;
    // The large inner futures are boxed where they are awaited: inline, every
    // move of the enclosing futures would copy them (see docs/performance.md).
    let recorded = Box::pin(record::record_input(state, &participant.0, session, input)).await?;
    tracing::debug!(session = %recorded.session_id, user = %participant.0.user, stream = mode == ReplyMode::Stream, "turn");
    // The input's messages are written while the model is called; the answer
    // is stored and returned only once they are durable.
    let written: turn::InputWrite<'_> = recorded
        .pending
        .map(|write| Box::pin(write.run(state)) as futures::future::BoxFuture<'_, _>);
    let turn = turn::Turn {
        session_id: recorded.session_id.clone(),
        user: participant.0.user.clone(),
        anchor: recorded.anchor,
        history: recorded.history,
        sampling,
        language: participant.0.language,
        channel: participant.0.channel,
        tokens: participant.1,
    };
    let reply = match mode {
        ReplyMode::Whole => Reply::Whole(Box::new(
            Box::pin(turn::complete(state, &turn, written)).await?,
        )),
        ReplyMode::Stream => Reply::Stream(Box::pin(stream::stream(state, turn, written)).await?),
    };
    Ok(TurnReply {
        session_id: recorded.session_id,
        user_message: recorded.user_message,
        reply,
    })
}

/// Refuses, before anything is stored, a request with images when no model of
/// the chain accepts images, and a request the first model that would take it
/// (the primary, or with images the first accepting them) cannot honour (a
/// field it has no counterpart for). Later models that cannot honour it are
/// skipped by the chain instead.
fn refuse_unsupported(
    state: &AppState,
    sampling: &Sampling,
    input: &Input,
) -> Result<(), ConversationError> {
    let image = match input {
        Input::History(history) => crate::providers::first_image_field(history),
        Input::Message(_) => None,
    };
    let models = state.chain.models();
    let first = match &image {
        Some(field) => match models.iter().find(|m| m.accepts_images()) {
            Some(model) => Some(model),
            None if models.is_empty() => None,
            None => {
                return Err(ConversationError::ImagesNotAccepted {
                    field: field.clone(),
                });
            }
        },
        None => models.first(),
    };
    let Some(first) = first else {
        return Ok(());
    };
    let probe = ChatRequest {
        messages: match input {
            Input::History(history) => history.clone(),
            Input::Message(_) => Vec::new(),
        },
        temperature: sampling.temperature,
        max_output_tokens: sampling.max_output_tokens,
        options: sampling.options.clone(),
    };
    match first.refuses(&probe) {
        Some(refusal) => Err(ConversationError::Unsupported(refusal)),
        None => Ok(()),
    }
}

/// Answers a user message stored before (by [`record`]), whole: the
/// conversation up to that message is the prompt, the answer follows it.
pub async fn answer_recorded(
    state: &SharedState,
    participant: &Participant,
    session_id: &str,
    message_id: &str,
) -> Result<Answer, ConversationError> {
    // The conversation up to the message being answered.
    let branch = state
        .store
        .conversation_to(&participant.user, session_id, message_id)
        .await?
        .ok_or(ConversationError::MessageGone)?;
    let last = branch.last().ok_or(ConversationError::MessageGone)?;
    let turn = turn::Turn {
        session_id: session_id.to_owned(),
        user: participant.user.clone(),
        anchor: record::Anchor::of(last),
        history: record::prompt_from_stored(&branch),
        sampling: Sampling::default(),
        language: participant.language.clone(),
        channel: participant.channel.clone(),
        tokens: None,
    };
    turn::complete(state, &turn, None).await
}
