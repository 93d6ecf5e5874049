//! Tenant administration queries across all users: the turns whose models
//! all failed.

use chrono::{DateTime, Utc};

use super::{Store, StoreError, with_pool};

/// A turn whose models all failed (or whose stream broke), for the admin list.
#[derive(Clone, Debug, sqlx::FromRow)]
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
    total: i64,
}

impl Store {
    /// Failed turns across all users, newest first: a page and the total.
    pub async fn failures(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<FailedTurn>, i64), StoreError> {
        let sql = "SELECT m.id AS message_id, m.session_id, s.user_id, s.channel, m.model, \
             m.error AS reason, CAST(LENGTH(m.content) AS BIGINT) AS answer_chars, m.created_at, \
             COUNT(*) OVER () AS total \
             FROM messages m JOIN sessions s ON s.id = m.session_id \
             WHERE m.role = 'assistant' AND m.error IS NOT NULL \
             ORDER BY m.seq DESC LIMIT $1 OFFSET $2";
        let _timer = self.timer("failures");
        let rows: Vec<FailedTurn> = with_pool!(self, pool => sqlx::query_as(sql)
            .bind(limit).bind(offset).fetch_all(pool).await?);
        let total = match rows.first() {
            Some(row) => row.total,
            None if offset > 0 => with_pool!(self, pool => sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM messages WHERE role = 'assistant' AND error IS NOT NULL")
                .fetch_one(pool).await?),
            None => 0,
        };
        Ok((rows, total))
    }
}
