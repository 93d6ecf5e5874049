//! A streamed turn: the model's deltas relayed to the consumer as they come,
//! ending with the stored answer ([`TurnEvent::Done`]) or, when the upstream
//! breaks, the client leaves or the runtime shuts down, with what went wrong
//! ([`TurnEvent::Failed`]; the partial answer is stored). The call is settled through the
//! same accounting as a whole turn ([`super::turn`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::ConversationError;
use super::turn::{
    Answer, Call, CallEnd, InputWrite, Turn, answer_budget_spent, build_request,
    handle_chain_failure, input_written, settle, turn_span,
};
use crate::db::{Message, NewMessage, ToolApproval};
use crate::limits::UpstreamPermit;
use crate::providers::{
    ChatProvider, ChatRequest, EventStream, ProviderError, StreamEvent, StreamVerdict, ToolCall,
    ToolCallDelta,
};
use crate::shutdown::TurnGuard;
use crate::state::SharedState;

/// What a streamed turn sends its consumer. As small as its text (the rarer
/// events are boxed): tokio's channel allocates its slots 32 at a time, and
/// every open stream holds one such block while it waits on the model.
#[derive(Debug)]
pub enum TurnEvent {
    /// More text.
    Delta(String),
    /// A piece of a tool call (the first piece of each call has its id and name).
    ToolCall(Box<ToolCallDelta>),
    /// A server-side tool call waits for a person's approval; the turn goes
    /// on once it is decided (or expired).
    ApprovalRequired(Box<ToolApproval>),
    /// Done and stored.
    Done(Box<Answer>),
    /// Failed midway, with what went wrong; the partial answer is stored
    /// with the error.
    Failed(Box<str>),
}

// A slot of the relay channel is a `String`'s size; an event added unboxed
// would grow every open stream's block (see above).
const _: () = assert!(std::mem::size_of::<TurnEvent>() == std::mem::size_of::<String>());

/// A streamed turn: the id its answer will be stored under and its events.
pub struct TurnStream {
    /// Id of the assistant message being written.
    pub message_id: String,
    /// Events, ending with [`TurnEvent::Done`] or [`TurnEvent::Failed`].
    pub events: mpsc::Receiver<TurnEvent>,
}

/// Starts a streamed turn, calling the model while `written` makes the
/// turn's input durable (the stream starts only after it). Errors before the
/// first byte (every model refusing and no fallback response) come back as an
/// error instead of a stream.
pub(super) async fn stream(
    state: &SharedState,
    turn: Turn,
    written: InputWrite<'_>,
) -> Result<TurnStream, ConversationError> {
    let span = turn_span(state, &turn, true);
    Box::pin(stream_in(state, turn, span.clone(), written))
        .instrument(span)
        .await
}

async fn stream_in(
    state: &SharedState,
    mut turn: Turn,
    span: tracing::Span,
    written: InputWrite<'_>,
) -> Result<TurnStream, ConversationError> {
    let request = match build_request(state, &turn) {
        Ok(request) => request,
        Err(err) => {
            input_written(written).await?;
            return Err(err);
        }
    };
    if let Some(spent) = state.ledger.budget_spent() {
        input_written(written).await?;
        let id = NewMessage::new_id();
        let answer = answer_budget_spent(state, &turn, &request, spent, id.clone()).await?;
        return Ok(answered_at_once(id, answer));
    }
    let turn_guard = state.lifecycle.turn();
    let call = async {
        let permit = state.gate.acquire().await?;
        let started = Instant::now();
        let result = Box::pin(state.chain.stream(&request)).await;
        Ok::<_, ConversationError>((permit, started, result))
    };
    // The input not stored: the stream (if one started) is dropped unread,
    // which closes it upstream; its verdict, unsettled, counts neither way.
    let (stored, called) = futures::future::join(input_written(written), call).await;
    stored?;
    let (permit, started, result) = called?;
    let id = NewMessage::new_id();
    let (tx, rx) = mpsc::channel(16);
    let (events, provider, verdict) = match result {
        Ok(ok) => ok,
        Err(err) => {
            let answer =
                handle_chain_failure(state, &turn, &request, &span, err, started, id.clone())
                    .await?;
            return Ok(answered_at_once(id, answer));
        }
    };
    // What the stream holds while it waits on the model: the request's
    // messages (for the usage estimate when the upstream sends none, and the
    // content log), not the options sent with them (the client's and the
    // agent's tool definitions) nor, when no server-side tool can run, the
    // turn's own copy of the history (only the tool loop rebuilds the request
    // from it). A long conversation was held twice per open stream.
    let tool_loop = state.tools.any();
    if !tool_loop {
        turn.history = Vec::new();
    }
    let mut request = request;
    request.options = Default::default();
    let streaming = Streaming {
        state: state.clone(),
        turn,
        request,
        tool_loop,
        provider,
        started,
        id: id.clone(),
        tx,
        after_tools: false,
    };
    tokio::spawn(
        streaming
            .run(events, verdict, (turn_guard, permit))
            .instrument(span),
    );
    Ok(TurnStream {
        message_id: id,
        events: rx,
    })
}

/// A stream of an answer known at once (a fallback response): one delta, done.
fn answered_at_once(id: String, answer: Answer) -> TurnStream {
    let (tx, rx) = mpsc::channel(2);
    let _ = tx.try_send(TurnEvent::Delta(answer.message.content.clone()));
    let _ = tx.try_send(TurnEvent::Done(Box::new(answer)));
    TurnStream {
        message_id: id,
        events: rx,
    }
}

/// A streamed answer being relayed to its consumer.
struct Streaming {
    state: SharedState,
    turn: Turn,
    request: ChatRequest,
    provider: Arc<dyn ChatProvider>,
    started: Instant,
    id: String,
    tx: mpsc::Sender<TurnEvent>,
    /// Whether server-side tools were offered when the turn started: only
    /// then does it keep the history to ask the model again with their results.
    tool_loop: bool,
    /// Set once server-side tools ran in this turn: the model's later answers
    /// are read to their end and stored even when the reader has left (the
    /// tools' effects happened; the answer to them must not be cut off).
    after_tools: bool,
}

/// What relaying one model answer gave.
struct Relayed {
    end: CallEnd,
    /// Client-side call pieces held back (see [`Streaming::release`]).
    held: Vec<ToolCallDelta>,
    /// The reader left while the answer was read on to its end.
    reader_gone: bool,
}

impl Streaming {
    /// Relays the upstream's events until the answer ends, breaks, the client
    /// leaves or the runtime shuts down; settles the call and stores the
    /// answer; while the answer calls server-side tools, runs them and relays
    /// the model's next answer; sends the last event. The turn's guard and
    /// upstream permit are held until it ends.
    ///
    /// This is the task an open stream keeps while it waits on the model, so
    /// only the relay is inline: what follows an answer (storing it, running
    /// tools, asking the model again) is boxed when it runs. Inline, every
    /// idle stream's task was sized for it (5.4 KiB, 2.9 KiB without it).
    async fn run(
        mut self,
        events: EventStream,
        verdict: StreamVerdict,
        held: (TurnGuard, UpstreamPermit),
    ) {
        let state = self.state.clone();
        state.metrics.active_streams.inc();
        let mut step = 1;
        let mut next = Some((events, verdict));
        let event = loop {
            let Some((events, verdict)) = next.take() else {
                break None;
            };
            let relayed = self.relay(events).await;
            match Box::pin(self.after_answer(relayed, verdict, step)).await {
                Ok(more) => {
                    step += 1;
                    next = Some(more);
                }
                Err(event) => break event,
            }
        };
        if let Some(event) = event {
            // The last event: give a slow reader a moment, never block shutdown.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tx.send(event)).await;
        }
        state.metrics.active_streams.dec();
        drop(held);
    }

    /// Settles the call of the answer relayed (`step` of the turn) and stores
    /// it; when it calls server-side tools, runs them and starts the model's
    /// next answer (`Ok`); otherwise the turn ends with its last event, or
    /// `None` when that was sent already.
    async fn after_answer(
        &mut self,
        relayed: Relayed,
        verdict: StreamVerdict,
        step: u32,
    ) -> Result<(EventStream, StreamVerdict), Option<TurnEvent>> {
        let Relayed {
            mut end,
            held,
            reader_gone,
        } = relayed;
        let state = self.state.clone();
        // The model's health: a clean end closes its circuit, a break counts
        // against it; a client gone or a shutdown says nothing about it.
        match (&end.upstream_error, &end.error) {
            (Some(e), _) => verdict.failed(e),
            (None, None) => verdict.succeeded(),
            (None, Some(_)) => drop(verdict),
        }
        let calls = if self.tool_loop {
            super::tool_loop::plan(&state, &self.turn, &mut end, step)
        } else {
            Vec::new()
        };
        self.release(held, &end.tool_calls).await;
        let id = if calls.is_empty() {
            self.id.clone()
        } else {
            NewMessage::new_id()
        };
        let span = tracing::Span::current();
        let call = Call {
            state: &state,
            turn: &self.turn,
            request: &self.request,
            span: &span,
            provider: self.provider.as_ref(),
            started: self.started,
            id,
        };
        let settled = settle(call, end);
        let session = &self.turn.session_id;
        // Boxed: the write's future is large, and inline it would size this
        // step's own box for every answer, tools or not.
        let write = state
            .store
            .append_messages(std::slice::from_ref(&settled.record));
        let stored = match Box::pin(write).await {
            Ok(mut rows) => rows.pop(),
            Err(err) => {
                tracing::error!(%session, error = %err, "could not store the answer");
                None
            }
        };
        match (stored, settled.error) {
            (Some(message), None) if !calls.is_empty() => {
                match self.next_step(&message, calls).await {
                    Ok(Some(more)) => Ok(more),
                    Ok(None) => Err(None),
                    Err(event) => Err(Some(event)),
                }
            }
            (Some(message), None) => {
                if reader_gone {
                    // The page that asked is gone: its open pages learn of the
                    // answer through the live sync.
                    state.live.publish(crate::live::UserEvent {
                        user: self.turn.user.clone(),
                        kind: "message.created",
                        session_id: Some(session.clone()),
                    });
                }
                Err(Some(TurnEvent::Done(Box::new(Answer {
                    message,
                    usage: settled.usage,
                    finish_reason: settled.finish_reason.unwrap_or_else(|| "stop".to_owned()),
                }))))
            }
            (Some(_), Some(error)) => {
                tracing::warn!(%session, %error, "stream failed midway; partial answer stored");
                Err(Some(TurnEvent::Failed(error.into())))
            }
            (None, _) => Err(Some(TurnEvent::Failed(
                "the answer could not be stored".into(),
            ))),
        }
    }

    /// Runs the server-side calls of `asked` and starts the model's next answer:
    /// its events, or the last event when the turn ends here (the chain failed:
    /// the fallback response or the failure), or `None` when it was sent already.
    async fn next_step(
        &mut self,
        asked: &Message,
        calls: Vec<ToolCall>,
    ) -> Result<Option<(EventStream, StreamVerdict)>, TurnEvent> {
        let state = self.state.clone();
        let failed = |error: String| TurnEvent::Failed(error.into());
        super::tool_loop::run_calls(&state, &mut self.turn, asked, calls, Some(&self.tx))
            .await
            .map_err(|e| failed(e.to_string()))?;
        self.after_tools = true;
        self.request = build_request(&state, &self.turn).map_err(|e| failed(e.to_string()))?;
        self.started = Instant::now();
        match state.chain.stream(&self.request).await {
            Ok((events, provider, verdict)) => {
                self.provider = provider;
                // Sent: not held while the answer streams (see `stream_in`).
                self.request.options = Default::default();
                Ok(Some((events, verdict)))
            }
            Err(err) => {
                let span = tracing::Span::current();
                match handle_chain_failure(
                    &state,
                    &self.turn,
                    &self.request,
                    &span,
                    err,
                    self.started,
                    self.id.clone(),
                )
                .await
                {
                    Ok(answer) => {
                        let _ = self
                            .tx
                            .send(TurnEvent::Delta(answer.message.content.clone()))
                            .await;
                        Err(TurnEvent::Done(Box::new(answer)))
                    }
                    Err(e) => Err(failed(e.to_string())),
                }
            }
        }
    }

    /// Sends the held client-side call pieces whose calls the answer kept
    /// (see [`super::tool_loop::plan`]), numbered from 0 in the order they
    /// came (the server-side calls between them are not the client's).
    async fn release(&self, held: Vec<ToolCallDelta>, kept: &[ToolCall]) {
        if held.is_empty() {
            return;
        }
        let mut ids = std::collections::HashMap::new();
        for piece in &held {
            if let Some(id) = &piece.id {
                ids.entry(piece.index).or_insert_with(|| id.clone());
            }
        }
        let mut visible = std::collections::HashMap::new();
        for mut piece in held {
            let id = ids.get(&piece.index).map_or("", String::as_str);
            if !kept.iter().any(|c| c.id == id) {
                continue;
            }
            let next = visible.len() as u32;
            piece.index = *visible.entry(piece.index).or_insert(next);
            if self
                .tx
                .send(TurnEvent::ToolCall(Box::new(piece)))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Forwards deltas until the stream ends; what it ended with, and the
    /// pieces of client-side calls held back (when the answer may also call
    /// server-side tools, see [`super::tool_loop::may_mix`]). Pieces of
    /// server-side tool calls are kept, never forwarded. A reader leaving ends
    /// the answer there, unless tools ran in this turn: then it is read on.
    async fn relay(&self, mut events: EventStream) -> Relayed {
        let (state, tx) = (&self.state, &self.tx);
        let mut reader_gone = false;
        let hold = super::tool_loop::may_mix(state, &self.turn);
        let mut held = Vec::new();
        let mut end = CallEnd {
            content: String::new(),
            tool_calls: Vec::new(),
            usage: None,
            finish_reason: None,
            error: None,
            upstream_error: None,
        };
        let mut hidden = std::collections::HashSet::new();
        let mut first_token = true;
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                () = tx.closed(), if !reader_gone => {
                    if self.after_tools {
                        reader_gone = true;
                        continue;
                    }
                    end.error = Some(CLIENT_GONE.to_owned());
                    break;
                }
                () = state.lifecycle.cancelled() => {
                    end.error = Some("the runtime shut down before the answer was complete".to_owned());
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
                            .with_label_values(&[self.provider.model()])
                            .observe(self.started.elapsed().as_secs_f64());
                    }
                    end.content.push_str(&text);
                    if reader_gone {
                        continue;
                    }
                    let sent = tokio::select! {
                        sent = tx.send(TurnEvent::Delta(text)) => sent.is_ok(),
                        () = state.lifecycle.cancelled() => false,
                    };
                    if !sent && self.after_tools && !state.lifecycle.is_cancelled() {
                        reader_gone = true;
                    } else if !sent {
                        end.error = Some(CLIENT_GONE.to_owned());
                        break;
                    }
                }
                Some(Ok(StreamEvent::ToolCall(piece))) => {
                    add_tool_call_piece(&mut end.tool_calls, &piece);
                    if let Some(name) = &piece.name
                        && super::tool_loop::is_server_call(state, &self.turn, name)
                    {
                        hidden.insert(piece.index);
                    }
                    if hidden.contains(&piece.index) {
                        continue;
                    }
                    if hold {
                        held.push(piece);
                        continue;
                    }
                    if reader_gone {
                        continue;
                    }
                    let sent = tokio::select! {
                        sent = tx.send(TurnEvent::ToolCall(Box::new(piece))) => sent.is_ok(),
                        () = state.lifecycle.cancelled() => false,
                    };
                    if !sent && self.after_tools && !state.lifecycle.is_cancelled() {
                        reader_gone = true;
                    } else if !sent {
                        end.error = Some(CLIENT_GONE.to_owned());
                        break;
                    }
                }
                Some(Ok(StreamEvent::Usage(u))) => end.usage = Some(u),
                Some(Ok(StreamEvent::Finished { finish_reason })) => {
                    end.finish_reason = Some(finish_reason);
                }
                Some(Err(e)) => {
                    end.error = Some(e.to_string());
                    end.upstream_error = Some(e);
                    break;
                }
            }
        }
        drop(events);
        if end.error.is_none() && end.finish_reason.is_none() {
            end.error = Some(ProviderError::Truncated.to_string());
            end.upstream_error = Some(ProviderError::Truncated);
        }
        Relayed {
            end,
            held,
            reader_gone,
        }
    }
}

/// Adds a streamed piece to the calls it belongs to (by index: a new index
/// starts a call, later pieces add to its arguments).
fn add_tool_call_piece(calls: &mut Vec<ToolCall>, piece: &ToolCallDelta) {
    let index = piece.index as usize;
    while calls.len() <= index {
        calls.push(ToolCall {
            id: String::new(),
            name: String::new(),
            arguments: String::new(),
        });
    }
    let call = &mut calls[index];
    if let Some(id) = &piece.id {
        call.id.clone_from(id);
    }
    if let Some(name) = &piece.name {
        call.name.push_str(name);
    }
    call.arguments.push_str(&piece.arguments);
}

const CLIENT_GONE: &str = "client disconnected before the answer was complete";
