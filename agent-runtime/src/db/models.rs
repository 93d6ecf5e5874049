//! Rows as stored. The HTTP API shows them through its own types,
//! converted at the edge.

use chrono::{DateTime, Utc};

use crate::domain::{Role, SessionStatus, ToolCall};

/// A conversation.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Session {
    /// Session id.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Channel it came in through.
    pub channel: String,
    /// The client's own conversation id, when it sent one.
    pub external_id: Option<String>,
    /// Title (the first user message unless set).
    pub title: Option<String>,
    /// Lifecycle state.
    #[sqlx(try_from = "String")]
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

/// One stored message.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Message {
    /// Message id.
    pub id: String,
    /// Session it belongs to.
    pub session_id: String,
    /// The message it answers or follows; branches share a parent.
    pub parent_id: Option<String>,
    /// Author.
    #[sqlx(try_from = "String")]
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
    /// Hash of the conversation up to and including this message.
    pub chain_hash: String,
    /// The tools an assistant message called, as a JSON array (see
    /// [`Message::tool_calls`]).
    pub tool_calls: Option<String>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
    /// The platform user who wrote a user message in a shared session (a
    /// Slack thread); `None`: the session's user.
    pub author: Option<String>,
}

impl Message {
    /// The tools an assistant message called (none when the stored JSON is
    /// absent or unreadable).
    pub fn tool_calls(&self) -> Vec<ToolCall> {
        self.tool_calls
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default()
    }
}

/// A session with its newest message, for sidebars.
#[derive(Clone, Debug)]
pub struct SessionSummary {
    /// The session.
    pub session: Session,
    /// Its newest message, if any.
    pub last_message: Option<Message>,
}
