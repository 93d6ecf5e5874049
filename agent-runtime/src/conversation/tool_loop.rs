//! The tool loop of a turn: server-side tools ([`crate::tools`]) are offered
//! to the model next to the client's own; when the model's answer calls only
//! server-side tools, the answer is stored, the calls run (in parallel, each
//! bounded by its source's timeout, arguments checked against the tool's
//! schema first), their results stored as `tool` messages with one execution
//! row each, and the model is asked again, up to `tools.maxSteps` model calls.
//! Errors, timeouts and invalid arguments go back to the model as the tool's
//! result. Client-side calls are returned to the client as before; server-side
//! calls never are (in an answer calling both, the server-side ones are left
//! out).

use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::Instrument;

use super::ConversationError;
use super::record::Anchor;
use super::turn::{CallEnd, Turn};
use crate::db::{Message, NewMessage, ToolExecution};
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
    state.tools.find(name).is_some() && !turn.sampling.options.tools.iter().any(|t| t.name == name)
}

/// Decides what follows a model call: the server-side calls to run (empty:
/// the answer is final). At the step limit, or when the answer also calls
/// client-side tools, the server-side calls are taken out of the answer (and
/// at the limit a closing sentence is added).
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
    if !client.is_empty() {
        tracing::info!(
            server = server.len(),
            "the answer calls client-side and server-side tools: the server-side calls are left out"
        );
        end.tool_calls = client;
        return Vec::new();
    }
    let max_steps = state.tools.config().max_steps.max(1);
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

/// Runs one call under an `execute_tool` span.
async fn execute(state: &AppState, call: ToolCall, tool: Option<ServerTool>) -> Outcome {
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
    let started_at = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let source = tool.as_ref().map(|t| t.source.clone()).unwrap_or_default();
    let result = async {
        let Some(tool) = tool else {
            return Err(ToolError::Unavailable(format!(
                "no tool named {} is available now",
                call.name
            )));
        };
        let arguments =
            schema::check(&tool.schema, &call.arguments).map_err(ToolError::InvalidArguments)?;
        // Approvals are not asked for yet: a tool that needs one never runs.
        if state.tools.needs_approval(&tool.name) {
            return Err(ToolError::Rejected(
                "this tool needs a person's approval, which this runtime cannot ask for yet"
                    .to_owned(),
            ));
        }
        state.tools.call(&tool, arguments).await
    }
    .instrument(span.clone())
    .await;
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
) -> Result<(), ConversationError> {
    let outcomes = join_all(calls.into_iter().map(|call| {
        let tool = state.tools.find(&call.name);
        execute(state, call, tool)
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
