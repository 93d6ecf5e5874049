//! The conversation's own vocabulary, shared by storage, providers and the
//! conversation service: who wrote a message, where a session stands, and the
//! hash that identifies a conversation up to a message. Neither HTTP nor SQL
//! shapes live here.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Separates a channel from a user in the stored user id of a channel opened by
/// its own key (`<channel>\u{1f}<user>`): such a channel's users are its own,
/// apart from everyone else's. Clients cannot send it (ids refuse control
/// characters).
pub const SCOPE_SEPARATOR: char = '\u{1f}';

/// The stored user id of `user` on a channel scoped to `scope` (none: as is).
pub fn scoped_user(scope: Option<&str>, user: String) -> String {
    match scope {
        Some(channel) => format!("{channel}{SCOPE_SEPARATOR}{user}"),
        None => user,
    }
}

/// The user as clients named it, from a stored user id.
pub fn shown_user(stored: &str) -> &str {
    stored
        .split_once(SCOPE_SEPARATOR)
        .map_or(stored, |(_, user)| user)
}

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

/// A tool call the model made: stored with its answer, sent back upstream in
/// the history, answered by a `tool` message naming its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id.
    pub id: String,
    /// The function called.
    pub name: String,
    /// Its arguments as the model wrote them (JSON text).
    pub arguments: String,
}

/// [`chain_hash`] of a message that may carry tool calls (an assistant's) or
/// answer one (a tool result's): with neither, the same as [`chain_hash`].
pub fn chain_hash_with_tools(
    parent_hash: &str,
    role: Role,
    content: &str,
    tool_calls: &[ToolCall],
    tool_call_id: Option<&str>,
) -> String {
    if tool_calls.is_empty() && tool_call_id.is_none() {
        return chain_hash(parent_hash, role, content);
    }
    let mut text = String::from(content);
    for call in tool_calls {
        for part in [
            call.id.as_str(),
            call.name.as_str(),
            call.arguments.as_str(),
        ] {
            text.push('\0');
            text.push_str(part);
        }
    }
    if let Some(id) = tool_call_id {
        text.push_str("\0tool_call_id\0");
        text.push_str(id);
    }
    chain_hash(parent_hash, role, &text)
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

    #[test]
    fn tool_calls_and_results_change_the_hash_only_when_present() {
        let plain = chain_hash("", Role::Assistant, "");
        assert_eq!(
            chain_hash_with_tools("", Role::Assistant, "", &[], None),
            plain
        );
        let call = ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: "{}".into(),
        };
        let with_call = chain_hash_with_tools("", Role::Assistant, "", &[call], None);
        assert_ne!(with_call, plain);
        assert_ne!(
            chain_hash_with_tools("", Role::Tool, "sunny", &[], Some("call_1")),
            chain_hash("", Role::Tool, "sunny")
        );
    }
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    #[test]
    fn scoped_users_show_as_named() {
        let stored = scoped_user(Some("api"), "alice".to_owned());
        assert_ne!(stored, "alice");
        assert_eq!(shown_user(&stored), "alice");
        assert_eq!(scoped_user(None, "bob".to_owned()), "bob");
        assert_eq!(shown_user("bob"), "bob");
    }
}
