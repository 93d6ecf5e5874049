//! Rows as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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

impl SessionStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
            Self::Deleted => "deleted",
        }
    }
}

impl TryFrom<String> for SessionStatus {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "active" => Ok(Self::Active),
            "archived" => Ok(Self::Archived),
            "deleted" => Ok(Self::Deleted),
            other => Err(format!("unknown session status {other:?}")),
        }
    }
}

/// Author of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

impl Role {
    /// The stored spelling, also OpenAI's.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Assistant => "assistant",
            Self::System => "system",
            Self::Tool => "tool",
        }
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        match value.as_str() {
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            "system" => Ok(Self::System),
            "tool" => Ok(Self::Tool),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// A conversation.
#[derive(Clone, Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Session {
    /// Session id.
    pub id: String,
    /// Owner.
    #[serde(rename = "user")]
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
#[derive(Clone, Debug, Serialize, ToSchema, sqlx::FromRow)]
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
    #[serde(skip)]
    pub chain_hash: String,
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
