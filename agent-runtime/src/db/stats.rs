//! Per-user figures: sessions by state, messages by author, tokens.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, with_pool};

/// Figures for one user.
#[derive(Clone, Debug, Default, sqlx::FromRow)]
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

impl Store {
    /// Figures for one user.
    pub async fn stats(&self, user_id: &str) -> Result<UserStats, StoreError> {
        let sql = "SELECT \
             COUNT(*) AS sessions, \
             CAST(COALESCE(SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END), 0) AS BIGINT) AS active_sessions, \
             CAST(COALESCE(SUM(CASE WHEN status = 'archived' THEN 1 ELSE 0 END), 0) AS BIGINT) AS archived_sessions, \
             CAST(COALESCE(SUM(CASE WHEN pinned THEN 1 ELSE 0 END), 0) AS BIGINT) AS pinned_sessions, \
             CAST(COALESCE(SUM(message_count), 0) AS BIGINT) AS messages, \
             CAST(0 AS BIGINT) AS user_messages, CAST(0 AS BIGINT) AS assistant_messages, \
             CAST(COALESCE(SUM(tokens_in), 0) AS BIGINT) AS tokens_in, \
             CAST(COALESCE(SUM(tokens_out), 0) AS BIGINT) AS tokens_out, \
             MIN(created_at) AS first_session_at, MAX(last_message_at) AS last_message_at \
             FROM sessions WHERE user_id = $1 AND status <> 'deleted'";
        let by_role = "SELECT m.role, COUNT(*) FROM messages m JOIN sessions s ON s.id = m.session_id \
             WHERE s.user_id = $1 AND s.status <> 'deleted' GROUP BY m.role";
        with_pool!(self, pool => {
            let mut stats: UserStats = sqlx::query_as(sql).bind(user_id).fetch_one(&mut *pool).await?;
            let roles: Vec<(String, i64)> = sqlx::query_as(by_role).bind(user_id).fetch_all(pool).await?;
            for (role, count) in roles {
                match role.as_str() {
                    "user" => stats.user_messages = count,
                    "assistant" => stats.assistant_messages = count,
                    _ => {}
                }
            }
            Ok(stats)
        })
    }
}
