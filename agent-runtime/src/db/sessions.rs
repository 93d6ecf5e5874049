//! Session queries. Every query is scoped by the caller's user id: one user
//! never reads or changes another's sessions.

use sqlx::AssertSqlSafe;

use super::{Session, Store, StoreError, now, with_pool};
use crate::domain::SessionStatus;

pub(super) const SESSION_COLUMNS: &str = "id, user_id, channel, external_id, title, status, pinned, \
     message_count, tokens_in, tokens_out, created_at, updated_at, last_message_at";

/// A session to create.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Owner.
    pub user_id: String,
    /// Channel.
    pub channel: String,
    /// The client's conversation id.
    pub external_id: Option<String>,
    /// Title.
    pub title: Option<String>,
}

/// Sort key of a session listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

impl SessionSort {
    fn column(self) -> &'static str {
        match self {
            Self::UpdatedAt => "updated_at",
            Self::CreatedAt => "created_at",
            Self::LastMessageAt => "COALESCE(last_message_at, created_at)",
            Self::Title => "LOWER(COALESCE(title, ''))",
            Self::MessageCount => "message_count",
        }
    }
}

/// Sort direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortOrder {
    /// Ascending.
    Asc,
    /// Descending (default).
    #[default]
    Desc,
}

/// Which sessions to list.
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    /// Only this status; `None` means active and archived (never deleted).
    pub status: Option<SessionStatus>,
    /// Only pinned (`true`) or unpinned (`false`) sessions.
    pub pinned: Option<bool>,
    /// Sort key.
    pub sort: SessionSort,
    /// Direction.
    pub order: SortOrder,
    /// Page size.
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

impl Store {
    /// Creates a session.
    pub async fn create_session(&self, new: NewSession) -> Result<Session, StoreError> {
        let id = uuid::Uuid::now_v7().to_string();
        let at = now();
        let sql = format!(
            "INSERT INTO sessions (id, user_id, channel, external_id, title, status, pinned, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'active', FALSE, $6, $6) \
             RETURNING {SESSION_COLUMNS}"
        );
        let session = with_pool!(self, pool => sqlx::query_as::<_, Session>(AssertSqlSafe(sql.as_str()))
            .bind(&id)
            .bind(&new.user_id)
            .bind(&new.channel)
            .bind(&new.external_id)
            .bind(&new.title)
            .bind(at)
            .fetch_one(pool)
            .await?);
        self.schedule_title_indexing();
        Ok(session)
    }

    /// The session with this id or client conversation id, created when missing
    /// (safe against two requests racing to create it).
    pub async fn session_for_conversation(
        &self,
        user_id: &str,
        channel: &str,
        conversation: &str,
    ) -> Result<Session, StoreError> {
        // Find-or-create is safe to repeat.
        self.retrying("session_for_conversation", || {
            self.session_for_conversation_once(user_id, channel, conversation)
        })
        .await
    }

    /// The user owning the current session of `channel`'s conversation
    /// `conversation` (the oldest when several users opened one), if any: a
    /// shared conversation (a Slack thread) continues in that session.
    pub async fn conversation_owner(
        &self,
        channel: &str,
        conversation: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(with_pool!(self, pool => sqlx::query_scalar::<_, String>(
                "SELECT user_id FROM sessions WHERE channel = $1 AND external_id = $2 \
                 AND status <> 'deleted' ORDER BY created_at, id LIMIT 1")
            .bind(channel).bind(conversation).fetch_optional(pool).await?))
    }

    /// Removes for good up to `batch` deleted sessions (their messages with
    /// them) whose deletion was before `cutoff`; returns how many went.
    pub async fn purge_sessions_before(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        Ok(with_pool!(self, pool => sqlx::query(
                "DELETE FROM sessions WHERE id IN \
                 (SELECT id FROM sessions WHERE status = 'deleted' AND updated_at < $1 LIMIT $2)")
            .bind(cutoff).bind(batch).execute(pool).await?.rows_affected()))
    }

    /// Detaches an idle session from its conversation id (the id becomes
    /// `<conversation>~<session id>`), so the next message of the conversation
    /// opens a new session; a no-op when another pod did it first.
    pub async fn retire_conversation(
        &self,
        session_id: &str,
        conversation: &str,
    ) -> Result<(), StoreError> {
        let retired = format!("{conversation}~{session_id}");
        with_pool!(self, pool => sqlx::query(
                "UPDATE sessions SET external_id = $3 WHERE id = $1 AND external_id = $2")
            .bind(session_id).bind(conversation).bind(&retired)
            .execute(pool).await.map(|_| ())?);
        Ok(())
    }

    async fn session_for_conversation_once(
        &self,
        user_id: &str,
        channel: &str,
        conversation: &str,
    ) -> Result<Session, StoreError> {
        // Only "no such session" falls through: a connection error must not
        // start a new session for an existing one.
        match self.get_session(user_id, conversation).await {
            Ok(session) => return Ok(session),
            Err(StoreError::NotFound(_)) => {}
            Err(err) => return Err(err),
        }
        let find = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions \
             WHERE user_id = $1 AND channel = $2 AND external_id = $3 AND status <> 'deleted'"
        );
        let found = with_pool!(self, pool => sqlx::query_as::<_, Session>(AssertSqlSafe(find.as_str()))
            .bind(user_id).bind(channel).bind(conversation)
            .fetch_optional(pool).await?);
        if let Some(session) = found {
            return Ok(session);
        }
        let insert = format!(
            "INSERT INTO sessions (id, user_id, channel, external_id, status, pinned, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, 'active', FALSE, $5, $5) \
             ON CONFLICT (user_id, channel, external_id) WHERE external_id IS NOT NULL DO NOTHING \
             RETURNING {SESSION_COLUMNS}"
        );
        let id = uuid::Uuid::now_v7().to_string();
        let created = with_pool!(self, pool => sqlx::query_as::<_, Session>(AssertSqlSafe(insert.as_str()))
            .bind(&id).bind(user_id).bind(channel).bind(conversation).bind(now())
            .fetch_optional(pool).await?);
        match created {
            Some(session) => {
                self.schedule_title_indexing();
                Ok(session)
            }
            // Lost the race, or the id belongs to a deleted session: read what is there.
            None => with_pool!(self, pool => sqlx::query_as::<_, Session>(AssertSqlSafe(format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions \
                     WHERE user_id = $1 AND channel = $2 AND external_id = $3")))
                .bind(user_id).bind(channel).bind(conversation)
                .fetch_optional(pool).await?)
            // A deleted conversation stays deleted.
            .filter(|s| s.status != SessionStatus::Deleted)
            .ok_or_else(|| StoreError::NotFound(conversation.to_owned())),
        }
    }

    /// A session of this user that is not deleted.
    pub async fn get_session(&self, user_id: &str, id: &str) -> Result<Session, StoreError> {
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions \
             WHERE id = $1 AND user_id = $2 AND status <> 'deleted'"
        );
        let _timer = self.timer("get_session");
        with_pool!(self, pool => sqlx::query_as::<_, Session>(AssertSqlSafe(sql.as_str()))
            .bind(id).bind(user_id).fetch_optional(pool).await?)
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    /// A page of this user's sessions, pinned first, and the total matching.
    pub async fn list_sessions(
        &self,
        user_id: &str,
        filter: &SessionFilter,
    ) -> Result<(Vec<Session>, i64), StoreError> {
        let status = filter.status.map(SessionStatus::as_str);
        let condition = "user_id = $1 \
             AND (($2 IS NULL AND status <> 'deleted') OR status = $2) \
             AND ($3 IS NULL OR pinned = $3)";
        let direction = match filter.order {
            super::SortOrder::Asc => "ASC",
            super::SortOrder::Desc => "DESC",
        };
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE {condition} \
             ORDER BY pinned DESC, {} {direction}, id {direction} LIMIT $4 OFFSET $5",
            filter.sort.column()
        );
        let count = format!("SELECT COUNT(*) FROM sessions WHERE {condition}");
        with_pool!(self, pool => {
            let rows = sqlx::query_as::<_, Session>(AssertSqlSafe(sql.as_str()))
                .bind(user_id).bind(status).bind(filter.pinned)
                .bind(filter.limit).bind(filter.offset)
                .fetch_all(&mut *pool).await?;
            let (total,): (i64,) = sqlx::query_as(AssertSqlSafe(count.as_str()))
                .bind(user_id).bind(status).bind(filter.pinned)
                .fetch_one(pool).await?;
            Ok((rows, total))
        })
    }

    /// Sets the title.
    pub async fn set_title(
        &self,
        user_id: &str,
        id: &str,
        title: &str,
    ) -> Result<Session, StoreError> {
        self.update_session(user_id, id, Change::Title(title)).await
    }

    /// Sets the status (deleting is soft).
    pub async fn set_status(
        &self,
        user_id: &str,
        id: &str,
        status: SessionStatus,
    ) -> Result<Session, StoreError> {
        self.update_session(user_id, id, Change::Status(status))
            .await
    }

    /// Pins or unpins.
    pub async fn set_pinned(
        &self,
        user_id: &str,
        id: &str,
        pinned: bool,
    ) -> Result<Session, StoreError> {
        self.update_session(user_id, id, Change::Pinned(pinned))
            .await
    }

    async fn update_session(
        &self,
        user_id: &str,
        id: &str,
        change: Change<'_>,
    ) -> Result<Session, StoreError> {
        let column = match change {
            Change::Title(_) => "title",
            Change::Status(_) => "status",
            Change::Pinned(_) => "pinned",
        };
        let sql = format!(
            "UPDATE sessions SET {column} = $3, updated_at = $4 \
             WHERE id = $1 AND user_id = $2 AND status <> 'deleted' \
             RETURNING {SESSION_COLUMNS}"
        );
        let session = with_pool!(self, pool => {
            let query = sqlx::query_as::<_, Session>(AssertSqlSafe(sql.as_str())).bind(id).bind(user_id);
            let query = match change {
                Change::Title(title) => query.bind(title.to_owned()),
                Change::Status(status) => query.bind(status.as_str().to_owned()),
                Change::Pinned(pinned) => query.bind(pinned),
            };
            query.bind(now()).fetch_optional(pool).await?
        })
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        if let Change::Title(_) = change {
            self.schedule_title_indexing();
        }
        Ok(session)
    }
}

#[derive(Clone, Copy)]
enum Change<'a> {
    Title(&'a str),
    Status(SessionStatus),
    Pinned(bool),
}
