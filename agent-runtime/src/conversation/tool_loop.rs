//! The tool loop of a turn: server-side tools ([`crate::tools`]) are offered
//! to the model next to the client's own; when the model's answer calls only
//! server-side tools, the answer is stored, the calls run (in parallel, each
//! bounded by its source's timeout, arguments checked against the tool's
//! schema first), their results stored as `tool` messages with one execution
//! row each, and the model is asked again, up to `tools.maxSteps` model calls.
//! Errors, timeouts and invalid arguments go back to the model as the tool's
//! result. Client-side calls are returned to the client as before; server-side
//! calls never are. An answer calling both runs its server-side calls first:
//! the client's calls are held back (not stored, not sent) and the model,
//! asked again with the server-side results, asks for them again if it still
//! needs them; at the step limit, when no further model call is left, the
//! client's calls are returned and the server-side ones are not run.

use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::Instrument;

use super::ConversationError;
use super::record::Anchor;
use super::stream::TurnEvent;
use super::turn::{CallEnd, Turn};
use crate::db::{Message, NewMessage, ToolApproval, ToolExecution};
use crate::domain::{Role, chain_hash_with_tools};
use crate::providers::{ChatRequest, PromptMessage, ToolCall};
use crate::state::AppState;
use crate::tools::{ServerTool, ToolError, schema};

/// Adds the server-side tools to `request` (a tool the client defines itself
/// under the same name stays the client's).
pub(super) fn offer(state: &AppState, request: &mut ChatRequest) {
    for tool in state.tools.tools() {
        if !request.options.tools.iter().any(|t| t.name == tool.name) {
            request.options.tools.push(tool.spec());
        }
    }
}

/// Whether a call named `name` in the turn's answer is server-side (a tool the
/// client defines itself under the same name stays the client's).
pub(super) fn is_server_call(state: &AppState, turn: &Turn, name: &str) -> bool {
    state.tools.offers(name) && !turn.sampling.options.tools.iter().any(|t| t.name == name)
}

/// Whether an answer of this turn may call client-side and server-side tools
/// together (the client sent tools and the agent has its own): then a
/// stream holds the client's call pieces back until the answer ends.
pub(super) fn may_mix(state: &AppState, turn: &Turn) -> bool {
    !turn.sampling.options.tools.is_empty() && state.tools.any()
}

/// Decides what follows a model call: the server-side calls to run (empty:
/// the answer is final). An answer that also calls client-side tools keeps
/// only its server-side calls (the model is asked again with their results);
/// at the step limit the server-side calls are taken out of the answer
/// instead (with a closing sentence when no client-side call is left).
pub(super) fn plan(state: &AppState, turn: &Turn, end: &mut CallEnd, step: u32) -> Vec<ToolCall> {
    if end.error.is_some() || end.tool_calls.is_empty() {
        return Vec::new();
    }
    let (server, client): (Vec<ToolCall>, Vec<ToolCall>) = end
        .tool_calls
        .iter()
        .cloned()
        .partition(|c| is_server_call(state, turn, &c.name));
    if server.is_empty() {
        return Vec::new();
    }
    let max_steps = state.tools.config().max_steps.max(1);
    if !client.is_empty() {
        let names =
            |calls: &[ToolCall]| -> Vec<String> { calls.iter().map(|c| c.name.clone()).collect() };
        if step >= max_steps {
            // No model call is left to read the server-side results: the
            // client gets its calls, and its next request starts a new turn.
            tracing::warn!(
                max_steps,
                left_out = ?names(&server),
                "tool step limit reached: the answer's server-side calls are not run, its client-side calls are returned"
            );
            end.tool_calls = client;
            return Vec::new();
        }
        tracing::info!(
            server = ?names(&server),
            held_back = ?names(&client),
            "the answer calls server-side and client-side tools: the server-side calls run first, the model is asked again"
        );
        end.tool_calls.clone_from(&server);
        return server;
    }
    if step >= max_steps {
        tracing::warn!(max_steps, "tool step limit reached: the turn ends");
        end.tool_calls.clear();
        let note = format!(
            "I stopped here: this turn reached its limit of {max_steps} model calls while using tools."
        );
        if end.content.trim().is_empty() {
            end.content = note;
        } else {
            end.content = format!("{}\n\n{note}", end.content.trim_end());
        }
        end.finish_reason = Some("stop".to_owned());
        return Vec::new();
    }
    server
}

/// One call's outcome.
struct Outcome {
    call: ToolCall,
    tool: String,
    source: String,
    result: Result<String, ToolError>,
    duration: Duration,
    started_at: i64,
}

impl Outcome {
    /// The text the model gets.
    fn text(&self) -> String {
        match &self.result {
            Ok(text) => text.clone(),
            Err(e) => format!("Error: {e}"),
        }
    }
}

/// Where a call belongs and who hears of a pause for approval.
pub(super) struct CallContext<'a> {
    /// The stored answer that asked for the calls.
    pub asked: &'a Message,
    /// A streamed turn's consumer (told of each approval asked for).
    pub events: Option<&'a tokio::sync::mpsc::Sender<TurnEvent>>,
}

/// Asks for a person's approval of `call` and waits for the decision (woken
/// in this process by the decision route, and reading the row every second so
/// that a decision taken through another pod counts too), at most
/// `tools.approvalTimeoutSeconds`: no decision by then is a rejection.
async fn await_approval(
    state: &AppState,
    call: &ToolCall,
    tool: &ServerTool,
    ctx: &CallContext<'_>,
) -> Result<(), ToolError> {
    let timeout = state.tools.config().approval_timeout_seconds;
    let now = chrono::Utc::now().timestamp_millis();
    let pending = ToolApproval {
        id: NewMessage::new_id(),
        session_id: ctx.asked.session_id.clone(),
        message_id: ctx.asked.id.clone(),
        tool_call_id: call.id.clone(),
        tool: tool.name.clone(),
        source: tool.source.clone(),
        arguments: call.arguments.clone(),
        requested_at: now,
        expires_at: now.saturating_add(i64::try_from(timeout).unwrap_or(i64::MAX / 2) * 1000),
        state: "pending".to_owned(),
        decided_by: None,
        decided_at: None,
        reason: None,
    };
    let wake = state.tools.approval_waiter(&pending.id);
    if let Err(e) = state.store.add_tool_approval(&pending).await {
        state.tools.approval_settled(&pending.id);
        tracing::error!(error = %e, "could not store an approval request");
        return Err(ToolError::Unavailable(
            "the approval could not be asked for (storage failed)".to_owned(),
        ));
    }
    tracing::info!(approval = %pending.id, tool = %tool.name, "tool call waits for a person's approval");
    if let Some(events) = ctx.events {
        // A consumer gone already reads the pending approval from the session.
        let _ = events
            .send(TurnEvent::ApprovalRequired(Box::new(pending.clone())))
            .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let decided = loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(APPROVAL_POLL) => {}
            () = tokio::time::sleep_until(deadline) => break None,
            () = state.lifecycle.cancelled() => {
                state.tools.approval_settled(&pending.id);
                return Err(ToolError::Rejected(
                    "the runtime shut down before anyone decided on this call".to_owned(),
                ));
            }
        }
        match state
            .store
            .tool_approval(&pending.session_id, &pending.id)
            .await
        {
            Ok(Some(row)) if !row.is_pending() => break Some(row),
            Ok(Some(_)) => {}
            Ok(None) => break None,
            Err(e) => tracing::warn!(error = %e, "could not read an approval: read again"),
        }
    };
    let decided = match decided {
        Some(row) => Some(row),
        None => {
            // Expire it, unless a decision came in at the last moment.
            match state
                .store
                .decide_tool_approval(&pending.id, "expired", None, None)
                .await
            {
                Ok(true) => None,
                Ok(false) => state
                    .store
                    .tool_approval(&pending.session_id, &pending.id)
                    .await
                    .ok()
                    .flatten()
                    .filter(|row| !row.is_pending()),
                Err(e) => {
                    tracing::warn!(error = %e, "could not mark an approval expired");
                    None
                }
            }
        }
    };
    state.tools.approval_settled(&pending.id);
    let outcome = decided
        .as_ref()
        .map(|row| row.state.as_str())
        .unwrap_or("expired");
    state
        .metrics
        .tool_approvals
        .with_label_values(&[tool.name.as_str(), outcome])
        .inc();
    tracing::info!(approval = %pending.id, tool = %tool.name, outcome, "approval decided");
    match decided {
        Some(row) if row.state == "approved" => Ok(()),
        Some(row) if row.state == "rejected" => Err(ToolError::Rejected(format!(
            "rejected by a person: {}",
            row.reason
                .as_deref()
                .filter(|r| !r.trim().is_empty())
                .unwrap_or("no reason given")
        ))),
        _ => Err(ToolError::Rejected(format!(
            "rejected: no one approved the call within {timeout} seconds (expired)"
        ))),
    }
}

/// How often a waiting turn reads its approval (decisions taken through
/// another pod).
const APPROVAL_POLL: Duration = Duration::from_secs(1);

/// Runs one call under an `execute_tool` span (after its approval when the
/// tool needs one; the duration leaves the wait out).
async fn execute(
    state: &AppState,
    call: ToolCall,
    tool: Option<ServerTool>,
    ctx: &CallContext<'_>,
) -> Outcome {
    let span = tracing::info_span!(
        "execute_tool",
        otel.name = %format_args!("execute_tool {}", call.name),
        otel.kind = "internal",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %call.name,
        gen_ai.tool.call.id = %call.id,
        gen_ai.tool.type = "function",
        error.type = tracing::field::Empty,
        tool.source = tool.as_ref().map(|t| t.source.as_str()).unwrap_or(""),
    );
    let source = tool.as_ref().map(|t| t.source.clone()).unwrap_or_default();
    let ready = async {
        let Some(tool) = tool.as_ref() else {
            return Err(ToolError::Unavailable(format!(
                "no tool named {} is available now",
                call.name
            )));
        };
        let arguments =
            schema::check(&tool.schema, &call.arguments).map_err(ToolError::InvalidArguments)?;
        if state.tools.needs_approval(&tool.name) {
            await_approval(state, &call, tool, ctx).await?;
        }
        Ok((tool, arguments))
    }
    .instrument(span.clone())
    .await;
    let started_at = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let result = match ready {
        Ok((tool, arguments)) => {
            state
                .tools
                .call(tool, arguments)
                .instrument(span.clone())
                .await
        }
        Err(e) => Err(e),
    };
    let duration = started.elapsed();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => {
            span.record("error.type", e.outcome());
            span.record("otel.status_code", "ERROR");
            tracing::info!(parent: &span, tool = %call.name, error = %e, "tool call failed: the error goes to the model");
            e.outcome()
        }
    };
    let metrics = &state.metrics;
    metrics
        .tool_calls
        .with_label_values(&[call.name.as_str(), source.as_str(), outcome])
        .inc();
    metrics
        .tool_duration
        .with_label_values(&[call.name.as_str(), source.as_str()])
        .observe(duration.as_secs_f64());
    Outcome {
        tool: call.name.clone(),
        call,
        source,
        result,
        duration,
        started_at,
    }
}

/// Runs `calls` (asked for by the stored `asked`), stores their results and
/// executions, and moves the turn on: its history gains the answer and the
/// results, its anchor becomes the last result.
pub(super) async fn run_calls(
    state: &AppState,
    turn: &mut Turn,
    asked: &Message,
    calls: Vec<ToolCall>,
    events: Option<&tokio::sync::mpsc::Sender<TurnEvent>>,
) -> Result<(), ConversationError> {
    let ctx = CallContext { asked, events };
    let outcomes = join_all(calls.into_iter().map(|call| {
        let tool = state.tools.find(&call.name);
        execute(state, call, tool, &ctx)
    }))
    .await;
    let mut parent = Anchor::of(asked);
    let mut records = Vec::with_capacity(outcomes.len());
    let mut executions = Vec::with_capacity(outcomes.len());
    for outcome in &outcomes {
        let content = outcome.text();
        let record = NewMessage {
            id: NewMessage::new_id(),
            session_id: turn.session_id.clone(),
            parent_id: Some(parent.id.clone()),
            role: Role::Tool,
            chain_hash: chain_hash_with_tools(
                &parent.hash,
                Role::Tool,
                &content,
                &[],
                Some(&outcome.call.id),
            ),
            content: content.clone(),
            model: None,
            tokens_in: state.tokenizer.count(&content) as i64,
            tokens_out: 0,
            latency_ms: Some(outcome.duration.as_millis() as i64),
            error: outcome.result.as_ref().err().map(ToString::to_string),
            tool_calls: Vec::new(),
            tool_call_id: Some(outcome.call.id.clone()),
            author: None,
        };
        parent = Anchor {
            id: record.id.clone(),
            hash: record.chain_hash.clone(),
        };
        executions.push(ToolExecution {
            id: NewMessage::new_id(),
            session_id: turn.session_id.clone(),
            call_message_id: asked.id.clone(),
            result_message_id: record.id.clone(),
            tool_call_id: outcome.call.id.clone(),
            tool: outcome.tool.clone(),
            source: outcome.source.clone(),
            input: outcome.call.arguments.clone(),
            output: content,
            status: match &outcome.result {
                Ok(_) => "ok".to_owned(),
                Err(e) => e.outcome().to_owned(),
            },
            duration_ms: outcome.duration.as_millis() as i64,
            error: outcome.result.as_ref().err().map(ToString::to_string),
            started_at: outcome.started_at,
        });
        records.push(record);
    }
    let stored = state.store.append_messages(&records).await?;
    state.store.add_tool_executions(&executions).await?;
    turn.history.push(PromptMessage {
        tool_calls: asked.tool_calls(),
        ..PromptMessage::text(Role::Assistant, asked.content.clone())
    });
    for message in &stored {
        turn.history.push(PromptMessage {
            tool_call_id: message.tool_call_id.clone(),
            ..PromptMessage::text(Role::Tool, message.content.clone())
        });
    }
    if let Some(last) = stored.last() {
        turn.anchor = Anchor::of(last);
    }
    // Later model calls are charged as used (the admission's hold is settled once).
    turn.tokens = None;
    Ok(())
}
