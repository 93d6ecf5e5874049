//! Message queries: storing messages (with the session's counters), reading a
//! session's messages and its current branch, finding messages by their
//! conversation hash, and session summaries with their newest message.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::group_commit::{Entered, Write, Written, no_row};
use super::sessions::{NewSession, SESSION_COLUMNS};
use super::{
    Backend, Message, Session, SessionSummary, Store, StoreError, now, with_pool, with_writer,
};
use crate::domain::{Role, ToolCall};

pub(super) const MESSAGE_COLUMNS: &str = "id, session_id, parent_id, role, content, model, tokens_in, \
     tokens_out, latency_ms, error, chain_hash, created_at, tool_calls, tool_call_id, author";

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Id (generate with [`NewMessage::new_id`]).
    pub id: String,
    /// Session.
    pub session_id: String,
    /// Parent message.
    pub parent_id: Option<String>,
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Upstream model of an answer.
    pub model: Option<String>,
    /// Prompt tokens.
    pub tokens_in: i64,
    /// Generated tokens.
    pub tokens_out: i64,
    /// Upstream latency.
    pub latency_ms: Option<i64>,
    /// What went wrong.
    pub error: Option<String>,
    /// Conversation hash up to and including this message.
    pub chain_hash: String,
    /// The tools an assistant message called.
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
    /// The platform user who wrote a user message in a shared session (a
    /// Slack thread); `None`: the session's user.
    pub author: Option<String>,
}

impl NewMessage {
    /// A fresh, time-ordered message id.
    pub fn new_id() -> String {
        uuid::Uuid::now_v7().to_string()
    }

    /// The row this message is once stored at `at` (what a read returns:
    /// every column is written as given).
    pub(super) fn stored(&self, at: chrono::DateTime<chrono::Utc>) -> Message {
        Message {
            id: self.id.clone(),
            session_id: self.session_id.clone(),
            parent_id: self.parent_id.clone(),
            role: self.role,
            content: self.content.clone(),
            model: self.model.clone(),
            tokens_in: self.tokens_in,
            tokens_out: self.tokens_out,
            latency_ms: self.latency_ms,
            error: self.error.clone(),
            created_at: at,
            chain_hash: self.chain_hash.clone(),
            tool_calls: self.tool_calls_json(),
            tool_call_id: self.tool_call_id.clone(),
            author: self.author.clone(),
        }
    }

    /// The tool calls as stored: a JSON array, or NULL for none.
    pub(super) fn tool_calls_json(&self) -> Option<String> {
        (!self.tool_calls.is_empty())
            .then(|| serde_json::to_string(&self.tool_calls).ok())
            .flatten()
    }
}

/// One message insert with parameters `$1`..`$15` (see [`bind_one!`]), for
/// either backend.
const INSERT_ONE: &str = "INSERT INTO messages (id, session_id, parent_id, role, content, \
     model, tokens_in, tokens_out, latency_ms, error, chain_hash, created_at, tool_calls, \
     tool_call_id, author) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// Binds `$1`..`$15` of [`INSERT_ONE`] on `$query` (either backend) to message
/// `$m` stored at `$at`.
macro_rules! bind_one {
    ($query:expr, $m:expr, $at:expr) => {{
        let m: &NewMessage = $m;
        $query
            .bind(&m.id)
            .bind(&m.session_id)
            .bind(&m.parent_id)
            .bind(m.role.as_str())
            .bind(&m.content)
            .bind(&m.model)
            .bind(m.tokens_in)
            .bind(m.tokens_out)
            .bind(m.latency_ms)
            .bind(&m.error)
            .bind(&m.chain_hash)
            .bind($at)
            .bind(m.tool_calls_json())
            .bind(&m.tool_call_id)
            .bind(&m.author)
    }};
}

/// Runs a single message's write on `$store`, each query bound by `$bind`
/// (`|q| ...`, the query `q`): with Postgres, statement `$pg` on a kept
/// connection (one statement: one round trip, atomic without BEGIN/COMMIT),
/// which must touch one row; with SQLite, the statements of `$sqlite` in one
/// execution, in a transaction on the writer (each statement sent alone is a
/// round trip to the connection's thread, a wake-up each way), which must
/// touch `$sqlite_rows` rows.
macro_rules! write_one {
    ($store:expr, $pg:expr, $sqlite:expr, $sqlite_rows:expr, |$q:ident| $bind:expr) => {{
        match &$store.backend {
            Backend::Postgres(pool) => {
                let mut connection = $store.kept.take(pool).await?;
                let $q = sqlx::query(AssertSqlSafe($pg));
                // On a connection, not the pool (see `with_pool!`).
                let done = $bind.execute(&mut *connection).await?;
                connection.finished();
                if done.rows_affected() != 1 {
                    return Err(no_row());
                }
            }
            Backend::Sqlite(shared) => {
                let pool = $store.sqlite_writer.as_ref().unwrap_or(shared);
                let mut tx = pool.begin().await?;
                let $q = sqlx::query(AssertSqlSafe($sqlite));
                let done = $bind.execute(&mut *tx).await?;
                if done.rows_affected() != $sqlite_rows {
                    return Err(no_row());
                }
                tx.commit().await?;
            }
        }
    }};
}

/// The statement growing a session's counters by one message of time `$4`.
/// With Postgres, writes to one session can commit in another order than the
/// one their times were taken in (transactions and batches run side by side),
/// so the session's last-message time only moves forward. SQLite has one
/// writer, whose writes commit in the order their times were taken.
fn session_grown_sql<DB: sqlx::Database>(_: &sqlx::Transaction<'_, DB>) -> &'static str {
    if DB::NAME == <sqlx::Postgres as sqlx::Database>::NAME {
        "UPDATE sessions SET message_count = message_count + 1, \
         tokens_in = tokens_in + $2, tokens_out = tokens_out + $3, \
         last_message_at = GREATEST(last_message_at, $4), \
         updated_at = GREATEST(updated_at, $4), title = COALESCE(title, $5) WHERE id = $1"
    } else {
        "UPDATE sessions SET message_count = message_count + 1, \
         tokens_in = tokens_in + $2, tokens_out = tokens_out + $3, \
         last_message_at = $4, updated_at = $4, title = COALESCE(title, $5) WHERE id = $1"
    }
}

/// Inserts `$messages` in order on transaction `$tx` (any backend), updating
/// each session's counters; evaluates to the stored rows (what was written:
/// nothing is read back).
macro_rules! insert_messages {
    ($tx:ident, $messages:expr) => {{
        let update = session_grown_sql(&$tx);
        let mut stored = Vec::with_capacity($messages.len());
        for m in $messages {
            let at = now();
            bind_one!(sqlx::query(INSERT_ONE), m, at)
                .execute(&mut *$tx)
                .await?;
            let title = message_title(m);
            sqlx::query(update)
                .bind(&m.session_id)
                .bind(m.tokens_in)
                .bind(m.tokens_out)
                .bind(at)
                .bind(title)
                .execute(&mut *$tx)
                .await?;
            stored.push(m.stored(at));
        }
        stored
    }};
}

impl Store {
    /// Stores messages in order, in one transaction, updating the session's
    /// counters and (when it has none) its title from the first user message.
    /// Retries through database outages (see [`Store::retrying_write`]).
    pub async fn append_messages(
        &self,
        messages: &[NewMessage],
    ) -> Result<Vec<Message>, StoreError> {
        self.retrying_write(
            "append_messages",
            || self.append_messages_once(messages),
            || async {
                let stored = self.stored_messages(messages).await?;
                if let Some(stored) = &stored {
                    self.count_stored(stored);
                }
                Ok(stored)
            },
        )
        .await
    }

    /// `messages` as stored, when (all of) their ids are in the database.
    async fn stored_messages(
        &self,
        messages: &[NewMessage],
    ) -> Result<Option<Vec<Message>>, StoreError> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1");
        let mut stored = Vec::with_capacity(messages.len());
        for m in messages {
            let row = with_pool!(self, pool => {
                sqlx::query_as::<_, Message>(AssertSqlSafe(sql.as_str()))
                    .bind(&m.id)
                    .fetch_optional(pool)
                    .await?
            });
            match row {
                Some(row) => stored.push(row),
                // One transaction wrote them all or none.
                None => return Ok(None),
            }
        }
        Ok(Some(stored))
    }

    async fn append_messages_once(
        &self,
        messages: &[NewMessage],
    ) -> Result<Vec<Message>, StoreError> {
        let _timer = self.timer("append_messages");
        // The direct writes are boxed where they are awaited: this future
        // (boxed whole by `retrying_write`) is then a few hundred bytes while a
        // write waits for its batch, not the ~15 KiB of the statements' futures
        // (1,000 streams opened at once held 15 MiB of them).
        if let [message] = messages {
            // One message: committed with the other one-message writes waiting.
            match self.enter(|| Write::Append(message.clone())) {
                Entered::Now(_in_flight) => return Box::pin(self.append_direct(messages)).await,
                Entered::Queued(waiting) => {
                    return match waiting.written().await? {
                        Written::Append(row) => Ok(vec![row]),
                        Written::Open(..) => Err(StoreError::Corrupt(
                            "group commit answered an append with a session's opening".to_owned(),
                        )),
                    };
                }
            }
        }
        Box::pin(self.append_direct(messages)).await
    }

    /// Stores `messages` with statements of their own (see
    /// [`Store::append_messages`]).
    pub(super) async fn append_direct(
        &self,
        messages: &[NewMessage],
    ) -> Result<Vec<Message>, StoreError> {
        if let [message] = messages {
            let title = message_title(message);
            let at = now();
            // The counters and the insert together.
            write_one!(
                self,
                format!(
                    "WITH upd AS (UPDATE sessions SET message_count = message_count + 1, \
                       tokens_in = tokens_in + $7, tokens_out = tokens_out + $8, \
                       last_message_at = GREATEST(last_message_at, $12), \
                       updated_at = GREATEST(updated_at, $12), title = COALESCE(title, $16) \
                       WHERE id = $2) \
                     {INSERT_ONE}"
                ),
                format!(
                    "UPDATE sessions SET message_count = message_count + 1, \
                       tokens_in = tokens_in + $7, tokens_out = tokens_out + $8, \
                       last_message_at = $12, updated_at = $12, \
                       title = COALESCE(title, $16) WHERE id = $2; \
                     {INSERT_ONE}"
                ),
                // The session's row and the message's.
                2,
                |q| bind_one!(q, message, at).bind(title)
            );
            // The row is what was written: nothing is read back.
            let row = message.stored(at);
            self.count_stored(std::slice::from_ref(&row));
            return Ok(vec![row]);
        }
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let stored = insert_messages!(tx, messages);
            tx.commit().await?;
            self.count_stored(&stored);
            Ok(stored)
        })
    }

    /// Creates a session with id `id` and stores its first messages, in one
    /// transaction (one commit where the two steps would take two).
    /// Retries through database outages (see [`Store::retrying_write`]).
    pub async fn create_session_with_messages(
        &self,
        id: &str,
        new: NewSession,
        messages: &[NewMessage],
    ) -> Result<(Session, Vec<Message>), StoreError> {
        self.retrying_write(
            "create_session",
            || self.create_session_with_messages_once(id, new.clone(), messages),
            || async {
                let Some(stored) = self.stored_messages(messages).await? else {
                    return Ok(None);
                };
                match self.get_session(&new.user_id, id).await {
                    Ok(session) => {
                        self.count_stored(&stored);
                        Ok(Some((session, stored)))
                    }
                    // Only possible without messages: the session was not created.
                    Err(StoreError::NotFound(_)) => Ok(None),
                    Err(err) => Err(err),
                }
            },
        )
        .await
    }

    async fn create_session_with_messages_once(
        &self,
        id: &str,
        new: NewSession,
        messages: &[NewMessage],
    ) -> Result<(Session, Vec<Message>), StoreError> {
        let _timer = self.timer("create_session");
        if let [message] = messages {
            // One message: committed with the other one-message writes waiting.
            let entered = self.enter(|| Write::Open {
                id: id.to_owned(),
                new: new.clone(),
                message: message.clone(),
            });
            return match entered {
                Entered::Now(_in_flight) => Box::pin(self.create_direct(id, new, messages)).await,
                Entered::Queued(waiting) => match waiting.written().await? {
                    Written::Open(session, row) => Ok((session, vec![row])),
                    Written::Append(_) => Err(StoreError::Corrupt(
                        "group commit answered a session's opening with an append".to_owned(),
                    )),
                },
            };
        }
        Box::pin(self.create_direct(id, new, messages)).await
    }

    /// Creates session `id` with `messages` with statements of their own (see
    /// [`Store::create_session_with_messages`]).
    pub(super) async fn create_direct(
        &self,
        id: &str,
        new: NewSession,
        messages: &[NewMessage],
    ) -> Result<(Session, Vec<Message>), StoreError> {
        if let [message] = messages {
            // The session (with its counters already counting the message) and
            // the message together.
            debug_assert_eq!(message.session_id, id);
            let at = now();
            let title = opening_title(&new, message);
            let session_insert = "INSERT INTO sessions (id, user_id, channel, external_id, \
                title, status, pinned, created_at, updated_at, message_count, tokens_in, \
                tokens_out, last_message_at) \
                VALUES ($2, $16, $17, $18, $19, 'active', FALSE, $12, $12, 1, $7, $8, $12)";
            write_one!(
                self,
                format!("WITH s AS ({session_insert}) {INSERT_ONE}"),
                format!("{session_insert}; {INSERT_ONE}"),
                // The session's row and the message's.
                2,
                |q| bind_one!(q, message, at)
                    .bind(&new.user_id)
                    .bind(&new.channel)
                    .bind(&new.external_id)
                    .bind(&title)
            );
            // The rows are what was written: nothing is read back.
            let row = message.stored(at);
            self.count_stored(std::slice::from_ref(&row));
            let session = opened_session(id, new, title, message, at);
            return Ok((session, vec![row]));
        }
        let sql = format!(
            "INSERT INTO sessions (id, user_id, channel, external_id, title, status, pinned, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'active', FALSE, $6, $6) \
             RETURNING {SESSION_COLUMNS}"
        );
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let session = sqlx::query_as::<_, Session>(AssertSqlSafe(sql.as_str()))
                .bind(id).bind(&new.user_id).bind(&new.channel)
                .bind(&new.external_id).bind(&new.title).bind(now())
                .fetch_one(&mut *tx).await?;
            let stored = insert_messages!(tx, messages);
            tx.commit().await?;
            self.count_stored(&stored);
            Ok((with_stored(session, &stored), stored))
        })
    }

    /// Every message of a session (which must be the user's), oldest first.
    pub async fn all_messages(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<Vec<Message>, StoreError> {
        self.get_session(user_id, session_id).await?;
        let sql =
            format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 ORDER BY seq");
        Ok(
            with_pool!(self, pool => sqlx::query_as::<_, Message>(AssertSqlSafe(sql.as_str()))
            .bind(session_id).fetch_all(pool).await?),
        )
    }

    /// A page of a session's messages, oldest first, and the total.
    pub async fn list_messages(
        &self,
        user_id: &str,
        session_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Message>, i64), StoreError> {
        let session = self.get_session(user_id, session_id).await?;
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 \
             ORDER BY seq LIMIT $2 OFFSET $3"
        );
        let rows = with_pool!(self, pool => sqlx::query_as::<_, Message>(AssertSqlSafe(sql.as_str()))
            .bind(session_id).bind(limit).bind(offset).fetch_all(pool).await?);
        Ok((rows, session.message_count))
    }

    /// The current branch of a conversation: from the newest message back to the
    /// first through the parent links, returned oldest first.
    pub async fn conversation(
        &self,
        user_id: &str,
        session_id: &str,
    ) -> Result<Vec<Message>, StoreError> {
        let all = self
            .retrying("conversation", || self.all_messages(user_id, session_id))
            .await?;
        Ok(current_branch(all))
    }

    /// The conversation leading to `message_id` (oldest first, ending with it),
    /// `None` when it is not stored. Follows the parent links from that message,
    /// wherever its branch now ends: a message that arrived before the one it
    /// follows was answered (chat apps and webhooks answer from the outbox) stays
    /// answerable, and the answers stored meanwhile to the messages before it are
    /// put back in their place, so the model reads the thread as it happened.
    pub async fn conversation_to(
        &self,
        user_id: &str,
        session_id: &str,
        message_id: &str,
    ) -> Result<Option<Vec<Message>>, StoreError> {
        let all = self
            .retrying("conversation", || self.all_messages(user_id, session_id))
            .await?;
        Ok(path_to(all, message_id))
    }

    /// Messages of `user_id` (in one session when given, else in any that is not
    /// deleted) whose conversation hash is one of `hashes`, newest first.
    pub async fn find_by_chain_hash(
        &self,
        user_id: &str,
        session_id: Option<&str>,
        hashes: &[String],
    ) -> Result<Vec<Message>, StoreError> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        self.retrying("find_by_chain_hash", || {
            self.find_by_chain_hash_once(user_id, session_id, hashes)
        })
        .await
    }

    async fn find_by_chain_hash_once(
        &self,
        user_id: &str,
        session_id: Option<&str>,
        hashes: &[String],
    ) -> Result<Vec<Message>, StoreError> {
        let placeholders: Vec<String> = (0..hashes.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "SELECT {} FROM messages m JOIN sessions s ON s.id = m.session_id \
             WHERE s.user_id = $1 AND s.status <> 'deleted' AND ($2 IS NULL OR s.id = $2) \
             AND m.chain_hash IN ({}) ORDER BY m.seq DESC",
            *MESSAGE_COLUMNS_M,
            placeholders.join(", ")
        );
        let _timer = self.timer("find_by_chain_hash");
        Ok(with_pool!(self, pool => {
            let mut query = sqlx::query_as::<_, Message>(AssertSqlSafe(sql.as_str())).bind(user_id).bind(session_id);
            for hash in hashes {
                query = query.bind(hash);
            }
            query.fetch_all(pool).await?
        }))
    }

    /// Active sessions with their newest message, most recent first.
    pub async fn summaries(
        &self,
        user_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let sessions = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND status = 'active' \
             ORDER BY pinned DESC, COALESCE(last_message_at, created_at) DESC, id DESC \
             LIMIT $2 OFFSET $3"
        );
        let last = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 ORDER BY seq DESC LIMIT 1"
        );
        with_pool!(self, pool => {
            let rows = sqlx::query_as::<_, Session>(AssertSqlSafe(sessions.as_str()))
                .bind(user_id).bind(limit).bind(offset).fetch_all(&mut *pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for session in rows {
                let last_message = sqlx::query_as::<_, Message>(AssertSqlSafe(last.as_str()))
                    .bind(&session.id).fetch_optional(&mut *pool).await?;
                out.push(SessionSummary { session, last_message });
            }
            Ok(out)
        })
    }
}

/// Session `id` as opened with its first message `message`, stored at `at`
/// (its counters already counting the message).
pub(super) fn opened_session(
    id: &str,
    new: NewSession,
    title: Option<String>,
    message: &NewMessage,
    at: DateTime<Utc>,
) -> Session {
    Session {
        id: id.to_owned(),
        user_id: new.user_id,
        channel: new.channel,
        external_id: new.external_id,
        title,
        status: crate::domain::SessionStatus::Active,
        pinned: false,
        message_count: 1,
        tokens_in: message.tokens_in,
        tokens_out: message.tokens_out,
        created_at: at,
        updated_at: at,
        last_message_at: Some(at),
    }
}

/// The title a session opened with `message` gets: the one asked for, else
/// the message's first line when a user wrote it.
pub(super) fn opening_title(new: &NewSession, message: &NewMessage) -> Option<String> {
    new.title.clone().or_else(|| message_title(message))
}

/// The title a message gives its session when it has none (a user's first line).
pub(super) fn message_title(message: &NewMessage) -> Option<String> {
    (message.role == Role::User).then(|| title_from(&message.content))
}

/// `session` (as inserted) with the counters and title the inserts of
/// `stored` left it with.
fn with_stored(session: Session, stored: &[Message]) -> Session {
    Session {
        message_count: session.message_count + stored.len() as i64,
        tokens_in: session.tokens_in + stored.iter().map(|m| m.tokens_in).sum::<i64>(),
        tokens_out: session.tokens_out + stored.iter().map(|m| m.tokens_out).sum::<i64>(),
        last_message_at: stored
            .last()
            .map(|m| m.created_at)
            .or(session.last_message_at),
        // Each insert set it to its message's time.
        updated_at: stored.last().map_or(session.updated_at, |m| m.created_at),
        title: session.title.or_else(|| {
            stored
                .iter()
                .find(|m| m.role == Role::User)
                .map(|m| title_from(&m.content))
        }),
        ..session
    }
}

/// The branch ending at the newest message, oldest first.
fn current_branch(all: Vec<Message>) -> Vec<Message> {
    let Some(last) = all.last() else {
        return Vec::new();
    };
    branch_to(&all, &last.id)
}

/// The messages from the root to `id` (empty when `id` is not among `all`).
fn branch_to(all: &[Message], id: &str) -> Vec<Message> {
    let Some(last) = all.iter().find(|m| m.id == id) else {
        return Vec::new();
    };
    let by_id: std::collections::HashMap<&str, &Message> =
        all.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut branch = vec![last.clone()];
    let mut cursor = last.parent_id.as_deref();
    while let Some(id) = cursor {
        match by_id.get(id) {
            Some(m) if branch.len() <= all.len() => {
                branch.push((*m).clone());
                cursor = m.parent_id.as_deref();
            }
            _ => break,
        }
    }
    branch.reverse();
    branch
}

/// See [`Store::conversation_to`].
fn path_to(all: Vec<Message>, message_id: &str) -> Option<Vec<Message>> {
    let path = branch_to(&all, message_id);
    if path.is_empty() {
        return None;
    }
    let mut filled = Vec::with_capacity(path.len() + 2);
    for (i, message) in path.iter().enumerate() {
        filled.push(message.clone());
        let followed_by_user = path.get(i + 1).is_some_and(|next| next.role == Role::User);
        if message.role == Role::User && followed_by_user {
            // `all` is in storage order: the first answer stored to it.
            if let Some(answer) = all.iter().find(|m| {
                m.role == Role::Assistant && m.parent_id.as_deref() == Some(message.id.as_str())
            }) {
                filled.push(answer.clone());
            }
        }
    }
    Some(filled)
}

/// [`MESSAGE_COLUMNS`] of the table named `m` (made once: it was a sixth of
/// a follow-up's work in the store).
static MESSAGE_COLUMNS_M: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| prefixed(MESSAGE_COLUMNS, "m"));

pub(super) fn prefixed(columns: &str, alias: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A title from the first user message.
fn title_from(content: &str) -> String {
    let line = content
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    truncate_chars(line, 80)
}

pub(super) fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_are_the_first_line_cut_at_80_chars() {
        assert_eq!(title_from("\n  hello world \nmore"), "hello world");
        let long = "é".repeat(100);
        assert_eq!(title_from(&long).chars().count(), 81);
    }

    fn message(id: &str, parent: Option<&str>, role: Role) -> Message {
        Message {
            id: id.into(),
            session_id: "s".into(),
            parent_id: parent.map(Into::into),
            role,
            content: id.into(),
            model: None,
            tokens_in: 0,
            tokens_out: 0,
            latency_ms: None,
            error: None,
            created_at: Utc::now(),
            chain_hash: String::new(),
            tool_calls: None,
            tool_call_id: None,
            author: None,
        }
    }

    fn ids(path: Option<Vec<Message>>) -> Vec<String> {
        path.expect("found").into_iter().map(|m| m.id).collect()
    }

    #[test]
    fn a_message_that_came_before_the_previous_answer_stays_answerable_in_order() {
        // m2 arrived before m1 was answered; a1 was stored after m2.
        let all = vec![
            message("m1", None, Role::User),
            message("m2", Some("m1"), Role::User),
            message("a1", Some("m1"), Role::Assistant),
        ];
        assert_eq!(current_branch(all.clone()).len(), 2, "m2 is off the branch");
        assert_eq!(ids(path_to(all.clone(), "m2")), ["m1", "a1", "m2"]);
        assert_eq!(ids(path_to(all.clone(), "m1")), ["m1"]);
        assert!(path_to(all, "gone").is_none());
    }
}
