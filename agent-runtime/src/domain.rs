//! The conversation's own vocabulary, shared by storage, providers and the
//! conversation service: who wrote a message, where a session stands, and the
//! hash that identifies a conversation up to a message. Neither HTTP nor SQL
//! shapes live here.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// Hash of a conversation up to and including a message, given its parent's
/// (empty for the first message): how a resent history is recognised.
pub fn chain_hash(parent_hash: &str, role: Role, content: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(parent_hash.as_bytes());
    hasher.update([0]);
    hasher.update(role.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(content.as_bytes());
    let digest = hasher.finalize();
    hex::encode(&digest[..16])
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
        // Stored hashes stay recognisable: the first 16 bytes of SHA-256 in
        // lowercase hex, as written since the first release.
        assert_eq!(a, "1be150df66301e99c994f187d7ffac00");
    }
}
