//! Group commit: one-message writes (a user message opening or joining its
//! session, an answer) that arrive while another is being written wait, and
//! are then committed together: one statement and one commit for the lot with
//! Postgres, one transaction (a savepoint per write) and one commit, hence one
//! full-text segment, with SQLite. A write that finds fewer writes in flight
//! than the backend's limit (four with Postgres, one with SQLite) goes straight
//! through with its own statement: no timer waits for a batch to fill; a batch
//! is whatever queued while the writes in flight were being written.
//!
//! Each caller is answered once its row is durable, as before. A batch a row
//! makes fail is written again row by row, so a bad write fails only its own
//! caller; a batch whose connection fails answers every caller with a
//! transient error, and each caller's [`Store::retrying_write`] checks for its
//! row before writing it again (exactly once, as for a write of its own).
//!
//! [`Store::retrying_write`]: super::Store::retrying_write

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use sqlx::{PgPool, SqlitePool};
use tokio::sync::oneshot;

use super::kept::Kept;
use super::messages::{message_title, opened_session, opening_title};
use super::{Backend, Message, NewMessage, NewSession, Session, Store, StoreError, now};

/// At most this many writes share a commit (the rest wait for the next).
const MAX_BATCH: usize = 128;

/// Writes or batches in flight at once with Postgres. With one, the writes of
/// a busy runtime waited for each batch's round trip in turn: at 32 chats at
/// once the runtime spent 35 % less CPU per chat than writing each alone but
/// answered 27 % fewer chats a second, idle between round trips. SQLite has
/// one writer: one batch at a time.
pub(super) const POSTGRES_IN_FLIGHT: usize = 4;

/// A one-message write waiting for its batch.
pub(crate) enum Write {
    /// A message joining its session (the counters grow).
    Append(NewMessage),
    /// Session `id` opened with its first message.
    Open {
        id: String,
        new: NewSession,
        message: NewMessage,
    },
}

/// What a write stored.
pub(crate) enum Written {
    Append(Message),
    Open(Session, Message),
}

struct Job {
    write: Write,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// The queue of writes waiting while one (or a batch) is in flight; shared by
/// every clone of a [`Store`].
pub(super) struct GroupCommit {
    queue: Mutex<Queue>,
    /// Every write alone, as before group commit (for measuring it:
    /// `SWITCHBOARD_GROUP_COMMIT=off` in the runtime's environment).
    off: bool,
}

impl GroupCommit {
    /// On unless the environment says `SWITCHBOARD_GROUP_COMMIT=off`.
    pub(super) fn from_env() -> Self {
        Self {
            queue: Mutex::default(),
            off: std::env::var_os("SWITCHBOARD_GROUP_COMMIT").is_some_and(|v| v == "off"),
        }
    }
}

#[derive(Default)]
struct Queue {
    /// Writes or batches in flight; at the backend's limit new writes queue.
    in_flight: usize,
    jobs: Vec<Job>,
}

/// How a one-message write goes (see [`Store::enter`]).
pub(super) enum Entered<'a> {
    /// Write it now, holding the guard (if any: none when group commit is
    /// off) until it is done.
    Now(Option<InFlight<'a>>),
    /// In the next batch.
    Queued(Waiting),
}

/// The answer of a queued write.
pub(super) struct Waiting(oneshot::Receiver<Result<Written, StoreError>>);

impl Waiting {
    /// Waits until the batch holding the write is committed (or failed).
    pub(super) async fn written(self) -> Result<Written, StoreError> {
        match self.0.await {
            Ok(written) => written,
            // The batch was dropped unanswered (its task ended early).
            Err(_) => Err(transient("the batch holding this write was dropped")),
        }
    }
}

/// Held while a write or a batch is in flight; when dropped (done, failed,
/// cancelled or panicked) it hands what queued meanwhile to a new batch.
pub(super) struct InFlight<'a> {
    store: &'a Store,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.store.hand_off();
    }
}

impl Store {
    /// Enters a one-message write: now (fewer writes in flight than the
    /// backend's limit: the caller writes it at once, holding the returned
    /// guard while it does) or queued (`queued()` joins the next batch; await
    /// its answer with [`Waiting::written`]).
    pub(super) fn enter(&self, queued: impl FnOnce() -> Write) -> Entered<'_> {
        if self.group.off {
            return Entered::Now(None);
        }
        let limit = match self.backend {
            Backend::Postgres(_) => POSTGRES_IN_FLIGHT,
            Backend::Sqlite(_) => 1,
        };
        let mut queue = self.lock_queue();
        if queue.in_flight >= limit {
            let (reply, waiting) = oneshot::channel();
            queue.jobs.push(Job {
                write: queued(),
                reply,
            });
            return Entered::Queued(Waiting(waiting));
        }
        queue.in_flight += 1;
        drop(queue);
        self.observe_batch(1);
        Entered::Now(Some(InFlight { store: self }))
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.group
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Called when a write or batch is done: the writes that queued meanwhile
    /// go out as the next batch, on a task of their own.
    fn hand_off(&self) {
        let jobs = {
            let mut queue = self.lock_queue();
            if queue.jobs.is_empty() {
                queue.in_flight -= 1;
                return;
            }
            if queue.jobs.len() <= MAX_BATCH {
                std::mem::take(&mut queue.jobs)
            } else {
                queue.jobs.drain(..MAX_BATCH).collect()
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let store = self.clone();
                runtime.spawn(async move {
                    let _in_flight = InFlight { store: &store };
                    store.write_batch(jobs).await;
                });
            }
            // No runtime (shutting down): the callers get a transient error
            // (their senders dropped) and retry, if they still can.
            Err(_) => self.lock_queue().in_flight -= 1,
        }
    }

    fn observe_batch(&self, writes: usize) {
        if let Some(metrics) = &self.metrics {
            metrics.db_batch_size.observe(writes as f64);
        }
    }

    /// Writes `jobs` with one commit and answers each.
    async fn write_batch(&self, mut jobs: Vec<Job>) {
        self.observe_batch(jobs.len());
        let _timer = self.timer("group_commit");
        if jobs.len() == 1 {
            let job = jobs.swap_remove(0);
            let written = self.write_alone(&job.write).await;
            let _ = job.reply.send(written);
            return;
        }
        let writes: Vec<&Write> = jobs.iter().map(|job| &job.write).collect();
        let result = match &self.backend {
            Backend::Postgres(pool) => postgres_batch(&self.kept, pool, &writes).await,
            Backend::Sqlite(pool) => {
                sqlite_batch(self.sqlite_writer.as_ref().unwrap_or(pool), &writes).await
            }
        };
        match result {
            Ok(results) => {
                for (job, written) in jobs.into_iter().zip(results) {
                    if let Ok(Written::Append(row) | Written::Open(_, row)) = &written {
                        self.count_stored(std::slice::from_ref(row));
                    }
                    let _ = job.reply.send(written);
                }
            }
            // Nothing of the batch is known to be committed: each caller
            // checks for its row and writes again.
            Err(err) if err.is_transient() => {
                let reason = format!("the batch holding this write failed: {err}");
                for job in jobs {
                    let _ = job.reply.send(Err(transient(&reason)));
                }
            }
            // A row refused the statement: each write on its own, so only
            // that one fails.
            Err(err) => {
                tracing::debug!(error = %err, writes = jobs.len(), "a batch was refused: writing its rows one by one");
                for job in jobs {
                    let written = self.write_alone(&job.write).await;
                    let _ = job.reply.send(written);
                }
            }
        }
    }

    /// One queued write with statements of its own.
    async fn write_alone(&self, write: &Write) -> Result<Written, StoreError> {
        let stored = match write {
            Write::Append(message) => self.append_direct(std::slice::from_ref(message)).await,
            Write::Open { id, new, message } => {
                let (session, stored) = self
                    .create_direct(id, new.clone(), std::slice::from_ref(message))
                    .await?;
                return match stored.into_iter().next() {
                    Some(row) => Ok(Written::Open(session, row)),
                    None => Err(no_row()),
                };
            }
        }?;
        stored
            .into_iter()
            .next()
            .map(Written::Append)
            .ok_or_else(no_row)
    }
}

pub(super) fn no_row() -> StoreError {
    StoreError::Corrupt("an insert stored no row".to_owned())
}

/// An error the callers' retries treat as the database being unreachable.
fn transient(reason: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        reason.to_owned(),
    )))
}

/// The batch as one statement: the messages inserted from arrays, the
/// sessions opened by some of them inserted and the counters of the others'
/// sessions grown in CTEs (a statement is atomic: one round trip, one commit).
async fn postgres_batch(
    kept: &Kept,
    pool: &PgPool,
    writes: &[&Write],
) -> Result<Vec<Result<Written, StoreError>>, StoreError> {
    let sql = "WITH input AS ( \
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::int8[], $8::int8[], $9::int8[], $10::text[], $11::text[], \
             $12::timestamptz[], $13::text[], $14::text[], $15::text[], $16::text[], $17::bool[], \
             $18::text[], $19::text[], $20::text[], $21::text[]) WITH ORDINALITY \
           AS t(id, session_id, parent_id, role, content, model, tokens_in, tokens_out, \
             latency_ms, error, chain_hash, created_at, tool_calls, tool_call_id, author, \
             title, opens, user_id, channel, external_id, session_title, ord)), \
         opened AS (INSERT INTO sessions (id, user_id, channel, external_id, title, status, \
             pinned, created_at, updated_at, message_count, tokens_in, tokens_out, \
             last_message_at) \
           SELECT session_id, user_id, channel, external_id, session_title, 'active', FALSE, \
             created_at, created_at, 1, tokens_in, tokens_out, created_at \
           FROM input WHERE opens ORDER BY ord), \
         grown AS (UPDATE sessions s SET message_count = s.message_count + g.n, \
             tokens_in = s.tokens_in + g.tokens_in, tokens_out = s.tokens_out + g.tokens_out, \
             last_message_at = GREATEST(s.last_message_at, g.at), \
             updated_at = GREATEST(s.updated_at, g.at), title = COALESCE(s.title, g.title) \
           FROM (SELECT session_id, count(*) AS n, sum(tokens_in)::int8 AS tokens_in, \
               sum(tokens_out)::int8 AS tokens_out, max(created_at) AS at, \
               (array_agg(title ORDER BY ord) FILTER (WHERE title IS NOT NULL))[1] AS title \
             FROM input WHERE NOT opens GROUP BY session_id) g \
           WHERE s.id = g.session_id) \
         INSERT INTO messages (id, session_id, parent_id, role, content, model, tokens_in, \
           tokens_out, latency_ms, error, chain_hash, created_at, tool_calls, tool_call_id, \
           author) \
         SELECT id, session_id, parent_id, role, content, model, tokens_in, tokens_out, \
           latency_ms, error, chain_hash, created_at, tool_calls, tool_call_id, author \
         FROM input ORDER BY ord";
    let n = writes.len();
    let mut columns = Columns::with_capacity(n);
    let mut opened = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    for write in writes {
        let at = now();
        times.push(at);
        let (message, session) = match write {
            Write::Append(message) => (message, None),
            Write::Open { id, new, message } => (message, Some((id, new))),
        };
        columns.push(message, at);
        match session {
            Some((id, new)) => {
                let title = opening_title(new, message);
                columns.title.push(None);
                columns.opens.push(true);
                columns.user_id.push(Some(new.user_id.as_str()));
                columns.channel.push(Some(new.channel.as_str()));
                columns.external_id.push(new.external_id.as_deref());
                columns.session_title.push(title.clone());
                opened.push(Some((id, new, title, at)));
            }
            None => {
                columns.title.push(message_title(message));
                columns.opens.push(false);
                columns.user_id.push(None);
                columns.channel.push(None);
                columns.external_id.push(None);
                columns.session_title.push(None);
                opened.push(None);
            }
        }
    }
    let mut connection = kept.take(pool).await?;
    let written = sqlx::query(sql)
        .bind(columns.id)
        .bind(columns.session_id)
        .bind(columns.parent_id)
        .bind(columns.role)
        .bind(columns.content)
        .bind(columns.model)
        .bind(columns.tokens_in)
        .bind(columns.tokens_out)
        .bind(columns.latency_ms)
        .bind(columns.error)
        .bind(columns.chain_hash)
        .bind(columns.created_at)
        .bind(columns.tool_calls)
        .bind(columns.tool_call_id)
        .bind(columns.author)
        .bind(columns.title)
        .bind(columns.opens)
        .bind(columns.user_id)
        .bind(columns.channel)
        .bind(columns.external_id)
        .bind(columns.session_title)
        // On a connection, not the pool (see `with_pool!`).
        .execute(&mut *connection)
        .await?;
    connection.finished();
    if written.rows_affected() != n as u64 {
        return Err(no_row());
    }
    // The rows are what was written: nothing is read back.
    Ok(writes
        .iter()
        .zip(opened)
        .zip(times)
        .map(|((write, opened), at)| {
            Ok(match (write, opened) {
                (Write::Open { message, .. }, Some((id, new, title, at))) => Written::Open(
                    opened_session(id, new.clone(), title, message, at),
                    message.stored(at),
                ),
                (Write::Append(message) | Write::Open { message, .. }, _) => {
                    Written::Append(message.stored(at))
                }
            })
        })
        .collect())
}

/// The message columns of a Postgres batch, one array each.
struct Columns<'a> {
    id: Vec<&'a str>,
    session_id: Vec<&'a str>,
    parent_id: Vec<Option<&'a str>>,
    role: Vec<&'static str>,
    content: Vec<&'a str>,
    model: Vec<Option<&'a str>>,
    tokens_in: Vec<i64>,
    tokens_out: Vec<i64>,
    latency_ms: Vec<Option<i64>>,
    error: Vec<Option<&'a str>>,
    chain_hash: Vec<&'a str>,
    created_at: Vec<DateTime<Utc>>,
    tool_calls: Vec<Option<String>>,
    tool_call_id: Vec<Option<&'a str>>,
    author: Vec<Option<&'a str>>,
    /// The title a message gives its session when it has none.
    title: Vec<Option<String>>,
    /// The message opens its session.
    opens: Vec<bool>,
    user_id: Vec<Option<&'a str>>,
    channel: Vec<Option<&'a str>>,
    external_id: Vec<Option<&'a str>>,
    session_title: Vec<Option<String>>,
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            session_id: Vec::with_capacity(n),
            parent_id: Vec::with_capacity(n),
            role: Vec::with_capacity(n),
            content: Vec::with_capacity(n),
            model: Vec::with_capacity(n),
            tokens_in: Vec::with_capacity(n),
            tokens_out: Vec::with_capacity(n),
            latency_ms: Vec::with_capacity(n),
            error: Vec::with_capacity(n),
            chain_hash: Vec::with_capacity(n),
            created_at: Vec::with_capacity(n),
            tool_calls: Vec::with_capacity(n),
            tool_call_id: Vec::with_capacity(n),
            author: Vec::with_capacity(n),
            title: Vec::with_capacity(n),
            opens: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            channel: Vec::with_capacity(n),
            external_id: Vec::with_capacity(n),
            session_title: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, m: &'a NewMessage, at: DateTime<Utc>) {
        self.id.push(&m.id);
        self.session_id.push(&m.session_id);
        self.parent_id.push(m.parent_id.as_deref());
        self.role.push(m.role.as_str());
        self.content.push(&m.content);
        self.model.push(m.model.as_deref());
        self.tokens_in.push(m.tokens_in);
        self.tokens_out.push(m.tokens_out);
        self.latency_ms.push(m.latency_ms);
        self.error.push(m.error.as_deref());
        self.chain_hash.push(&m.chain_hash);
        self.created_at.push(at);
        self.tool_calls.push(m.tool_calls_json());
        self.tool_call_id.push(m.tool_call_id.as_deref());
        self.author.push(m.author.as_deref());
    }
}

/// The batch as one transaction of at most three statements whatever its
/// size (the sessions some writes open, every message, the counters of the
/// other writes' sessions), the rows passed as JSON arrays read with
/// `json_each` (SQLite's `unnest`): a statement per write and a savepoint
/// around each cost a round trip to the connection's thread apiece, most of a
/// batch's time. A row that refuses its statement fails the batch, which the
/// caller then writes row by row.
async fn sqlite_batch(
    pool: &SqlitePool,
    writes: &[&Write],
) -> Result<Vec<Result<Written, StoreError>>, StoreError> {
    let batch = SqliteBatch::new(writes);
    let mut tx = pool.begin().await?;
    if !batch.opened.is_empty() {
        sqlx::query(
            "INSERT INTO sessions (id, user_id, channel, external_id, title, status, pinned, \
               created_at, updated_at, message_count, tokens_in, tokens_out, last_message_at) \
             SELECT value ->> 'id', value ->> 'user_id', value ->> 'channel', \
               value ->> 'external_id', value ->> 'title', 'active', FALSE, value ->> 'at', \
               value ->> 'at', 1, value ->> 'tokens_in', value ->> 'tokens_out', value ->> 'at' \
             FROM json_each($1) ORDER BY key",
        )
        .bind(serde_json::to_string(&batch.opened).map_err(corrupt)?)
        .execute(&mut *tx)
        .await?;
    }
    let sql = "INSERT INTO messages (id, session_id, parent_id, role, content, model, tokens_in, \
           tokens_out, latency_ms, error, chain_hash, created_at, tool_calls, tool_call_id, \
           author) \
         SELECT value ->> 'id', value ->> 'session_id', value ->> 'parent_id', \
           value ->> 'role', value ->> 'content', value ->> 'model', value ->> 'tokens_in', \
           value ->> 'tokens_out', value ->> 'latency_ms', value ->> 'error', \
           value ->> 'chain_hash', value ->> 'created_at', value ->> 'tool_calls', \
           value ->> 'tool_call_id', value ->> 'author' \
         FROM json_each($1) ORDER BY key";
    let inserted = sqlx::query(sql)
        .bind(serde_json::to_string(&batch.messages).map_err(corrupt)?)
        .execute(&mut *tx)
        .await?;
    if inserted.rows_affected() != writes.len() as u64 {
        return Err(no_row());
    }
    if !batch.grown.is_empty() {
        sqlx::query(
            "UPDATE sessions SET message_count = message_count + g.n, \
               tokens_in = sessions.tokens_in + g.tokens_in, \
               tokens_out = sessions.tokens_out + g.tokens_out, \
               last_message_at = g.at, updated_at = g.at, title = COALESCE(sessions.title, g.title) \
             FROM (SELECT value ->> 'id' AS id, value ->> 'n' AS n, \
                 value ->> 'tokens_in' AS tokens_in, value ->> 'tokens_out' AS tokens_out, \
                 value ->> 'at' AS at, value ->> 'title' AS title FROM json_each($1)) AS g \
             WHERE sessions.id = g.id",
        )
        .bind(serde_json::to_string(&batch.grown).map_err(corrupt)?)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    // The rows are what was written: nothing is read back.
    Ok(writes
        .iter()
        .zip(batch.at)
        .map(|(write, at)| {
            Ok(match write {
                Write::Append(message) => Written::Append(message.stored(at)),
                Write::Open { id, new, message } => {
                    let title = opening_title(new, message);
                    Written::Open(
                        opened_session(id, new.clone(), title, message, at),
                        message.stored(at),
                    )
                }
            })
        })
        .collect())
}

fn corrupt(err: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("a batch could not be encoded: {err}"))
}

/// A time as sqlx binds it to SQLite (so rows a batch writes compare and
/// decode like rows written alone).
fn sqlite_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// The rows of a SQLite batch, serialised as JSON arrays.
struct SqliteBatch<'a> {
    /// Sessions opened by a write, in write order.
    opened: Vec<OpenedRow<'a>>,
    /// Every write's message, in write order.
    messages: Vec<MessageRow<'a>>,
    /// The sessions the other writes join, with what they add.
    grown: Vec<GrownRow>,
    /// Each write's time.
    at: Vec<DateTime<Utc>>,
}

#[derive(serde::Serialize)]
struct OpenedRow<'a> {
    id: &'a str,
    user_id: &'a str,
    channel: &'a str,
    external_id: Option<&'a str>,
    title: Option<String>,
    at: String,
    tokens_in: i64,
    tokens_out: i64,
}

#[derive(serde::Serialize)]
struct MessageRow<'a> {
    id: &'a str,
    session_id: &'a str,
    parent_id: Option<&'a str>,
    role: &'static str,
    content: &'a str,
    model: Option<&'a str>,
    tokens_in: i64,
    tokens_out: i64,
    latency_ms: Option<i64>,
    error: Option<&'a str>,
    chain_hash: &'a str,
    created_at: String,
    tool_calls: Option<String>,
    tool_call_id: Option<&'a str>,
    author: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct GrownRow {
    id: String,
    n: i64,
    tokens_in: i64,
    tokens_out: i64,
    /// The newest of its messages' times.
    at: String,
    /// The first title one of its messages gives (a user's first line).
    title: Option<String>,
}

impl<'a> SqliteBatch<'a> {
    fn new(writes: &[&'a Write]) -> Self {
        let mut batch = Self {
            opened: Vec::new(),
            messages: Vec::with_capacity(writes.len()),
            grown: Vec::new(),
            at: Vec::with_capacity(writes.len()),
        };
        let mut grown_at: HashMap<&str, usize> = HashMap::new();
        for write in writes {
            let at = now();
            let created_at = sqlite_time(at);
            let message = match write {
                Write::Append(message) => {
                    let slot = *grown_at.entry(&message.session_id).or_insert_with(|| {
                        batch.grown.push(GrownRow {
                            id: message.session_id.clone(),
                            n: 0,
                            tokens_in: 0,
                            tokens_out: 0,
                            at: String::new(),
                            title: None,
                        });
                        batch.grown.len() - 1
                    });
                    let grown = &mut batch.grown[slot];
                    grown.n += 1;
                    grown.tokens_in += message.tokens_in;
                    grown.tokens_out += message.tokens_out;
                    grown.at.clone_from(&created_at);
                    if grown.title.is_none() {
                        grown.title = message_title(message);
                    }
                    message
                }
                Write::Open { id, new, message } => {
                    batch.opened.push(OpenedRow {
                        id,
                        user_id: &new.user_id,
                        channel: &new.channel,
                        external_id: new.external_id.as_deref(),
                        title: opening_title(new, message),
                        at: created_at.clone(),
                        tokens_in: message.tokens_in,
                        tokens_out: message.tokens_out,
                    });
                    message
                }
            };
            batch.messages.push(MessageRow {
                id: &message.id,
                session_id: &message.session_id,
                parent_id: message.parent_id.as_deref(),
                role: message.role.as_str(),
                content: &message.content,
                model: message.model.as_deref(),
                tokens_in: message.tokens_in,
                tokens_out: message.tokens_out,
                latency_ms: message.latency_ms,
                error: message.error.as_deref(),
                chain_hash: &message.chain_hash,
                created_at,
                tool_calls: message.tool_calls_json(),
                tool_call_id: message.tool_call_id.as_deref(),
                author: message.author.as_deref(),
            });
            batch.at.push(at);
        }
        batch
    }
}
