//! The conversation's own vocabulary, shared by storage, providers and the
//! conversation service: who wrote a message and where a session stands.
//! Neither HTTP nor SQL shapes live here.

use serde::{Deserialize, Serialize};

/// Lifecycle of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
