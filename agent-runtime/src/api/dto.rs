//! What the HTTP API shows and accepts, apart from storage rows: each type
//! here is converted from (or into) its storage or domain counterpart at the
//! edge, so the wire shape and the schema in the OpenAPI document can change
//! without touching the database layer, and the other way round.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db;
use crate::domain;

/// Lifecycle of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    /// In use.
    Active,
    /// Put away by the user; still searchable.
    Archived,
    /// Soft-deleted: hidden everywhere but `status=deleted` listings.
    Deleted,
}

impl From<domain::SessionStatus> for SessionStatus {
    fn from(status: domain::SessionStatus) -> Self {
        match status {
            domain::SessionStatus::Active => Self::Active,
            domain::SessionStatus::Archived => Self::Archived,
            domain::SessionStatus::Deleted => Self::Deleted,
        }
    }
}

impl From<SessionStatus> for domain::SessionStatus {
    fn from(status: SessionStatus) -> Self {
        match status {
            SessionStatus::Active => Self::Active,
            SessionStatus::Archived => Self::Archived,
            SessionStatus::Deleted => Self::Deleted,
        }
    }
}

/// Author of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// Instructions.
    System,
    /// A tool result.
    Tool,
}

impl From<domain::Role> for Role {
    fn from(role: domain::Role) -> Self {
        match role {
            domain::Role::User => Self::User,
            domain::Role::Assistant => Self::Assistant,
            domain::Role::System => Self::System,
            domain::Role::Tool => Self::Tool,
        }
    }
}

/// Sort key of a session listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionSort {
    /// Last change (default).
    #[default]
    UpdatedAt,
    /// Creation time.
    CreatedAt,
    /// Newest message time.
    LastMessageAt,
    /// Title, alphabetically.
    Title,
    /// Number of messages.
    MessageCount,
}

impl From<SessionSort> for db::SessionSort {
    fn from(sort: SessionSort) -> Self {
        match sort {
            SessionSort::UpdatedAt => Self::UpdatedAt,
            SessionSort::CreatedAt => Self::CreatedAt,
            SessionSort::LastMessageAt => Self::LastMessageAt,
            SessionSort::Title => Self::Title,
            SessionSort::MessageCount => Self::MessageCount,
        }
    }
}

/// Sort direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    /// Ascending.
    Asc,
    /// Descending (default).
    #[default]
    Desc,
}

impl From<SortOrder> for db::SortOrder {
    fn from(order: SortOrder) -> Self {
        match order {
            SortOrder::Asc => Self::Asc,
            SortOrder::Desc => Self::Desc,
        }
    }
}

/// A conversation.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Session {
    /// Session id.
    pub id: String,
    /// Owner.
    pub user: String,
    /// Channel it came in through.
    pub channel: String,
    /// The client's own conversation id, when it sent one.
    pub external_id: Option<String>,
    /// Title (the first user message unless set).
    pub title: Option<String>,
    /// Lifecycle state.
    pub status: SessionStatus,
    /// Pinned sessions list first.
    pub pinned: bool,
    /// Messages stored.
    pub message_count: i64,
    /// Prompt tokens used by the session's answers.
    pub tokens_in: i64,
    /// Tokens generated for the session.
    pub tokens_out: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change of any kind.
    pub updated_at: DateTime<Utc>,
    /// Time of the newest message.
    pub last_message_at: Option<DateTime<Utc>>,
}

impl From<db::Session> for Session {
    fn from(s: db::Session) -> Self {
        Self {
            id: s.id,
            user: crate::domain::shown_user(&s.user_id).to_owned(),
            channel: s.channel,
            external_id: s.external_id,
            title: s.title,
            status: s.status.into(),
            pinned: s.pinned,
            message_count: s.message_count,
            tokens_in: s.tokens_in,
            tokens_out: s.tokens_out,
            created_at: s.created_at,
            updated_at: s.updated_at,
            last_message_at: s.last_message_at,
        }
    }
}

/// One stored message.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Message {
    /// Message id.
    pub id: String,
    /// Session it belongs to.
    pub session_id: String,
    /// The message it answers or follows; branches share a parent.
    pub parent_id: Option<String>,
    /// Author.
    pub role: Role,
    /// Text (partial when `error` is set on an answer).
    pub content: String,
    /// Upstream model that wrote an answer.
    pub model: Option<String>,
    /// Prompt tokens (for a user message: its own length in tokens).
    pub tokens_in: i64,
    /// Generated tokens.
    pub tokens_out: i64,
    /// Milliseconds the upstream took for an answer.
    pub latency_ms: Option<i64>,
    /// What went wrong producing an answer.
    pub error: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// The tools an assistant message called (OpenAI's shape).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<crate::api::openai_options::ToolCallItem>>,
    /// The call a tool message answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// On the result of a server-side tool call: the execution (tool, source,
    /// input, output, status, duration, error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_execution: Option<ToolExecution>,
    /// Who wrote a user message in a shared session (a Slack thread: the
    /// Slack user id); absent: the session's user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

/// A server-side tool call the runtime ran for the model.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ToolExecution {
    /// Execution id.
    pub id: String,
    /// The tool, as the model named it.
    pub tool: String,
    /// The source offering it (an MCP server or an agent).
    pub source: String,
    /// The assistant message that asked for the call.
    pub call_message_id: String,
    /// The call's id.
    pub tool_call_id: String,
    /// The arguments as the model wrote them (JSON text).
    pub input: String,
    /// What the model got back (the result, or the error).
    pub output: String,
    /// `ok`, `error`, `timeout`, `invalid_arguments`, `unavailable` or `rejected`.
    pub status: String,
    /// How long the call took, in milliseconds.
    pub duration_ms: i64,
    /// What went wrong.
    pub error: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

impl From<db::ToolExecution> for ToolExecution {
    fn from(e: db::ToolExecution) -> Self {
        Self {
            id: e.id,
            tool: e.tool,
            source: e.source,
            call_message_id: e.call_message_id,
            tool_call_id: e.tool_call_id,
            input: e.input,
            output: e.output,
            status: e.status,
            duration_ms: e.duration_ms,
            error: e.error,
            started_at: DateTime::from_timestamp_millis(e.started_at).unwrap_or_default(),
        }
    }
}

/// Where an approval stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalState {
    /// Waiting for a person's decision.
    Pending,
    /// Approved: the tool ran.
    Approved,
    /// Rejected by a person: the model got the reason.
    Rejected,
    /// Not decided in time: rejected.
    Expired,
}

/// A server-side tool call that waits (or waited) for a person's approval.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ToolApproval {
    /// Approval id (decide with `POST /api/sessions/{id}/approvals/{approval_id}`).
    pub id: String,
    /// The session.
    pub session_id: String,
    /// The assistant message that asked for the call.
    pub message_id: String,
    /// The call's id.
    pub tool_call_id: String,
    /// The tool, as the model named it.
    pub tool: String,
    /// The source offering it.
    pub source: String,
    /// The call's arguments as the model wrote them (JSON text).
    pub arguments: String,
    /// Where it stands.
    pub state: ApprovalState,
    /// When it was asked for.
    pub requested_at: DateTime<Utc>,
    /// When it expires undecided.
    pub expires_at: DateTime<Utc>,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When it was decided.
    pub decided_at: Option<DateTime<Utc>>,
    /// The reason given with a rejection.
    pub reason: Option<String>,
}

impl From<db::ToolApproval> for ToolApproval {
    fn from(a: db::ToolApproval) -> Self {
        let now = Utc::now().timestamp_millis();
        let state = match a.state.as_str() {
            "approved" => ApprovalState::Approved,
            "rejected" => ApprovalState::Rejected,
            "expired" => ApprovalState::Expired,
            // Past its time with nobody waiting any more (its pod gone): expired.
            _ if a.expires_at < now - 5_000 => ApprovalState::Expired,
            _ => ApprovalState::Pending,
        };
        Self {
            id: a.id,
            session_id: a.session_id,
            message_id: a.message_id,
            tool_call_id: a.tool_call_id,
            tool: a.tool,
            source: a.source,
            arguments: a.arguments,
            state,
            requested_at: DateTime::from_timestamp_millis(a.requested_at).unwrap_or_default(),
            expires_at: DateTime::from_timestamp_millis(a.expires_at).unwrap_or_default(),
            decided_by: a.decided_by,
            decided_at: a.decided_at.and_then(DateTime::from_timestamp_millis),
            reason: a.reason,
        }
    }
}

impl Message {
    /// Attaches each execution to the tool message holding its result.
    pub fn with_executions(messages: &mut [Message], executions: Vec<db::ToolExecution>) {
        let mut by_result: std::collections::HashMap<String, db::ToolExecution> = executions
            .into_iter()
            .map(|e| (e.result_message_id.clone(), e))
            .collect();
        for message in messages {
            if let Some(e) = by_result.remove(&message.id) {
                message.tool_execution = Some(e.into());
            }
        }
    }
}

impl From<db::Message> for Message {
    fn from(m: db::Message) -> Self {
        Self {
            tool_execution: None,
            tool_calls: Some(m.tool_calls())
                .filter(|calls| !calls.is_empty())
                .map(|calls| calls.iter().map(Into::into).collect()),
            tool_call_id: m.tool_call_id.clone(),
            author: m.author.clone(),
            id: m.id,
            session_id: m.session_id,
            parent_id: m.parent_id,
            role: m.role.into(),
            content: m.content,
            model: m.model,
            tokens_in: m.tokens_in,
            tokens_out: m.tokens_out,
            latency_ms: m.latency_ms,
            error: m.error,
            created_at: m.created_at,
        }
    }
}

/// A session with its newest message, for sidebars.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SessionSummary {
    /// The session.
    #[serde(flatten)]
    pub session: Session,
    /// Its newest message, if any.
    pub last_message: Option<Message>,
}

impl From<db::SessionSummary> for SessionSummary {
    fn from(s: db::SessionSummary) -> Self {
        Self {
            session: s.session.into(),
            last_message: s.last_message.map(Into::into),
        }
    }
}

/// One search result.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SearchHit {
    /// The matching session.
    pub session: Session,
    /// Relevance; higher is better.
    pub score: f64,
    /// The best-matching text (a message or the title).
    pub snippet: String,
}

impl From<db::SearchHit> for SearchHit {
    fn from(h: db::SearchHit) -> Self {
        Self {
            session: h.session.into(),
            score: h.score,
            snippet: h.snippet,
        }
    }
}

/// A turn whose models all failed (or whose stream broke), for the admin list.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FailedTurn {
    /// The stored answer (empty, partial, or the fallback response).
    pub message_id: String,
    /// Its session.
    pub session_id: String,
    /// The session's user.
    pub user_id: String,
    /// The session's channel.
    pub channel: String,
    /// `fallback` when the tenant's fallback response was answered, else the
    /// model whose stream broke, or none.
    pub model: Option<String>,
    /// Why it failed.
    pub reason: String,
    /// Characters of answer text stored.
    pub answer_chars: i64,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<db::FailedTurn> for FailedTurn {
    fn from(f: db::FailedTurn) -> Self {
        Self {
            message_id: f.message_id,
            session_id: f.session_id,
            user_id: crate::domain::shown_user(&f.user_id).to_owned(),
            channel: f.channel,
            model: f.model,
            reason: f.reason,
            answer_chars: f.answer_chars,
            created_at: f.created_at,
        }
    }
}

/// Figures for one user.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct UserStats {
    /// Sessions that are not deleted.
    pub sessions: i64,
    /// Active sessions.
    pub active_sessions: i64,
    /// Archived sessions.
    pub archived_sessions: i64,
    /// Pinned sessions.
    pub pinned_sessions: i64,
    /// Messages in sessions that are not deleted.
    pub messages: i64,
    /// Of which written by the user.
    pub user_messages: i64,
    /// Of which answers.
    pub assistant_messages: i64,
    /// Prompt tokens.
    pub tokens_in: i64,
    /// Generated tokens.
    pub tokens_out: i64,
    /// Oldest session.
    pub first_session_at: Option<DateTime<Utc>>,
    /// Newest message.
    pub last_message_at: Option<DateTime<Utc>>,
}

impl From<db::UserStats> for UserStats {
    fn from(s: db::UserStats) -> Self {
        Self {
            sessions: s.sessions,
            active_sessions: s.active_sessions,
            archived_sessions: s.archived_sessions,
            pinned_sessions: s.pinned_sessions,
            messages: s.messages,
            user_messages: s.user_messages,
            assistant_messages: s.assistant_messages,
            tokens_in: s.tokens_in,
            tokens_out: s.tokens_out,
            first_session_at: s.first_session_at,
            last_message_at: s.last_message_at,
        }
    }
}

/// Converts each row of a page into its API shape.
pub fn convert<R, T: From<R>>(rows: Vec<R>) -> Vec<T> {
    rows.into_iter().map(T::from).collect()
}
