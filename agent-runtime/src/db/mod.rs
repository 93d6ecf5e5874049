//! Conversation storage: sessions and messages in Postgres (what the operator
//! provisions) or SQLite (the standalone default), migrated at start. Queries
//! are written once in SQL both understand and run on whichever pool is open;
//! only full-text search differs (tsvector + GIN vs. FTS5). Sessions,
//! messages, search, per-user stats, admin queries, the webhook outbox, the
//! shared rate-limit counters, the live-sync channel and the cost accounting's
//! spend windows each have their own file.

mod admin;
mod checkpoint;
mod fts_batch;
mod group_commit;
mod growth;
mod kept;
mod live;
mod messages;
mod models;
mod outbox;
mod rate_windows;
mod search;
mod sessions;
mod spend;
mod sqlite_checks;
mod stats;
mod tool_approvals;
mod tool_executions;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use admin::{
    Activity, AdminConversation, AgentFigures, ConversationFilter, FailedTurn, OutboxDepth,
    OutboxEntry, OutboxFilter, OutboxState, RetryOutcome,
};
pub use live::LiveChannel;
pub use messages::NewMessage;
pub use models::{Message, Session, SessionSummary};
pub use outbox::{Delivery, GatewaySession, NewDelivery};
pub use rate_windows::{RateWindows, WindowCount};
pub use search::SearchHit;
pub use sessions::{NewSession, SessionFilter, SessionSort, SortOrder};
pub use spend::WindowSpend;
pub use stats::UserStats;
pub use tool_approvals::{AdminApproval, ApprovalFilter, ToolApproval};
pub use tool_executions::ToolExecution;

use crate::settings::DatabaseTarget;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such session for this user.
    #[error("session {0} not found")]
    NotFound(String),
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value the runtime does not understand.
    #[error("unexpected stored value: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Database(_) => "database",
            Self::Migrate(_) => "migrate",
            Self::Corrupt(_) => "corrupt",
        }
    }
}

#[derive(Clone)]
enum Backend {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to a connection taken from whichever pool
/// is open (back to the pool when the body is done); the body is type-checked
/// once per backend.
///
/// A statement run on a connection is cheaper than one run on the pool: sqlx
/// runs a statement given a pool in a boxed stream that holds the pool's
/// acquire too, ~5 KiB moved three times. The acquire here is boxed (with
/// Postgres, only when no connection is kept: see [`kept::Kept::take`]), so
/// the future of a store call stays small for the futures that await it. A
/// Postgres connection whose body ran to its end (no `?` returned early) is
/// kept for the next statement instead of going back to the pool.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::db::Backend::Postgres(pool) => {
                let mut connection = $store.kept.take(pool).await?;
                let $pool = &mut *connection;
                let done = $body;
                connection.finished();
                done
            }
            $crate::db::Backend::Sqlite(pool) => {
                let mut connection = Box::pin(pool.acquire()).await?;
                let $pool = &mut *connection;
                $body
            }
        }
    };
}
pub(crate) use with_pool;

/// As [`with_pool!`], for message writes: with a SQLite file, `$pool` is the
/// store's one writing connection (see [`Store::connect`]).
macro_rules! with_writer {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::db::Backend::Postgres($pool) => $body,
            $crate::db::Backend::Sqlite(shared) => {
                let $pool = $store.sqlite_writer.as_ref().unwrap_or(shared);
                $body
            }
        }
    };
}
pub(crate) use with_writer;

/// The conversation store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
    latency: Option<prometheus::HistogramVec>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    /// One-message writes waiting to be committed together.
    group: std::sync::Arc<group_commit::GroupCommit>,
    /// A SQLite file's connection for message writes, kept open. SQLite has
    /// one writer at a time anyway, and a connection drops its page cache
    /// whenever another connection wrote: with the writes spread over the
    /// pool's connections in turn, every batch started cold and read its
    /// pages again.
    sqlite_writer: Option<SqlitePool>,
    /// A SQLite file's WAL checkpoints, run on a connection of their own.
    checkpoints: Option<std::sync::Arc<checkpoint::Checkpoints>>,
    /// Postgres connections kept between statements (unused with SQLite).
    kept: std::sync::Arc<kept::Kept>,
    /// A young Postgres database's tables, analyzed as they grow (unused
    /// with SQLite).
    growth: std::sync::Arc<growth::Growth>,
    /// SQLite's search indexes (messages, session titles), filled in
    /// batches (unused with Postgres).
    indexer: std::sync::Arc<fts_batch::Indexer>,
}

/// How long a message write keeps retrying while the database is unreachable
/// or restarting before the request fails with 503.
pub const WRITE_RETRY_BUDGET: Duration = Duration::from_secs(20);

/// Whether an error means the database could not be reached, is restarting or
/// is busy with another writer (worth retrying), as opposed to refusing the
/// statement.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Postgres: class 08, connection exception; 57P01-03, admin or
            // crash shutdown, cannot connect now (starting up); 40001/40P01,
            // serialization failure, deadlock. SQLite: 5 (SQLITE_BUSY, also
            // returned at once, without the busy timeout, when a write would
            // deadlock), 6 (SQLITE_LOCKED), 517 (SQLITE_BUSY_SNAPSHOT).
            code.starts_with("08")
                || matches!(
                    &*code,
                    "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "5" | "6" | "517"
                )
        }),
        _ => false,
    }
}

impl StoreError {
    /// See [`is_transient`].
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Database(err) if is_transient(err))
    }

    /// A unique constraint refused the row (it is there already).
    fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(db)) if db.is_unique_violation())
    }
}

/// Observes one operation's latency when dropped.
pub(crate) struct Timer<'a> {
    latency: Option<&'a prometheus::HistogramVec>,
    operation: &'static str,
    start: std::time::Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        if let Some(latency) = self.latency {
            latency
                .with_label_values(&[self.operation])
                .observe(self.start.elapsed().as_secs_f64());
        }
    }
}

/// A pooled Postgres connection idle at least this long is pinged (one round
/// trip) before it is handed out; one used more recently is not. sqlx pings
/// every connection it hands out unless told otherwise, and pings it again
/// when it comes back: before this, each statement of a chat cost three round
/// trips, the first of them on the chat's path (docs/performance.md, "Round
/// seven"). A connection that comes back was pinged then, so one reused within
/// this time was answering a moment ago; should the server have gone in
/// between, the statement fails as a transient error, which writes retry
/// ([`Store::retrying_write`]), and the broken connection is dropped.
pub(super) const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

impl Store {
    /// Connects and runs the migrations.
    pub async fn connect(target: &DatabaseTarget) -> Result<Self, StoreError> {
        let mut sqlite_writer = None;
        let mut checkpoints = None;
        let mut kept = std::sync::Arc::default();
        let mut growth = growth::Growth::default();
        let backend = match target {
            DatabaseTarget::Postgres(url) => {
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .test_before_acquire(false)
                    .before_acquire(|conn, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= PING_AFTER_IDLE {
                                sqlx::Connection::ping(conn).await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect(url)
                    .await?;
                sqlx::migrate!("./migrations/postgres").run(&pool).await?;
                kept = kept::Kept::new();
                growth = growth::Growth::at_start(&pool).await;
                Backend::Postgres(pool)
            }
            DatabaseTarget::Sqlite(path) => {
                let memory = path == ":memory:";
                let options = if memory {
                    SqliteConnectOptions::from_str("sqlite::memory:")?
                } else {
                    SqliteConnectOptions::new()
                        .filename(path)
                        .create_if_missing(true)
                        .journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        // A commit checkpoints only a log grown this far: the
                        // checkpointer's connection does it (checkpoint.rs).
                        .pragma("wal_autocheckpoint", checkpoint::BACKSTOP_PAGES.to_string())
                }
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
                // An in-memory database lives in one connection: keep exactly one forever.
                let writer_options = options.clone();
                let pool = if memory {
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                } else {
                    SqlitePoolOptions::new().max_connections(4)
                }
                // A file has no server to lose: nothing to test before each use.
                .test_before_acquire(false)
                .connect_with(options)
                .await?;
                sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
                // Not needed for correctness: a file it cannot edit keeps
                // working, with slower inserts.
                match sqlite_checks::rewrite(&mut *pool.acquire().await?).await {
                    Ok(tables) if tables.is_empty() => {}
                    Ok(tables) => tracing::info!(
                        ?tables,
                        "rewrote the tables' CHECK lists as comparisons (no temporary b-tree per insert)"
                    ),
                    Err(err) => tracing::warn!(
                        error = %err,
                        "cannot rewrite the tables' CHECK lists; inserts keep a temporary b-tree each"
                    ),
                }
                if !memory {
                    // One connection kept open for good.
                    let kept_open = || {
                        SqlitePoolOptions::new()
                            .max_connections(1)
                            .min_connections(1)
                            .idle_timeout(None)
                            .max_lifetime(None)
                            .test_before_acquire(false)
                    };
                    let writer = kept_open().connect_with(writer_options.clone()).await?;
                    // The checkpointer waits for no one: a checkpoint that
                    // would (emptying the log) gives way to the chats instead.
                    let checkpointer = writer_options.busy_timeout(Duration::ZERO);
                    checkpoints = Some(checkpoint::Checkpoints::start(
                        kept_open().connect_with(checkpointer).await?,
                        writer.clone(),
                    ));
                    sqlite_writer = Some(writer);
                }
                Backend::Sqlite(pool)
            }
        };
        let store = Self {
            backend,
            latency: None,
            metrics: None,
            group: std::sync::Arc::new(group_commit::GroupCommit::from_env()),
            sqlite_writer,
            checkpoints,
            kept,
            growth: std::sync::Arc::new(growth),
            indexer: std::sync::Arc::default(),
        };
        // What an earlier process stored and did not index yet (SQLite).
        store.index_pending().await?;
        Ok(store)
    }

    /// Records operation latency and stored messages in `metrics`.
    pub fn observe_with(&mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) {
        self.latency = Some(metrics.db_duration.clone());
        self.metrics = Some(metrics);
    }

    /// Runs a message write, retrying with backoff while the database is
    /// unreachable or restarting (up to [`WRITE_RETRY_BUDGET`]). Before each
    /// retry `committed` checks whether the failed attempt committed after all
    /// (the connection can drop between commit and reply), so nothing is
    /// stored twice.
    pub(crate) async fn retrying_write<T, W, WF, C, CF>(
        &self,
        operation: &'static str,
        mut write: W,
        mut committed: C,
    ) -> Result<T, StoreError>
    where
        W: FnMut() -> WF,
        WF: Future<Output = Result<T, StoreError>>,
        C: FnMut() -> CF,
        CF: Future<Output = Result<Option<T>, StoreError>>,
    {
        let deadline = std::time::Instant::now() + WRITE_RETRY_BUDGET;
        let mut delay = Duration::from_millis(50);
        // The attempts are boxed: a database call's future is large, and
        // inline it would be copied with every future that awaits a write.
        let mut result = Box::pin(write()).await;
        let mut retried = false;
        loop {
            match result {
                // The attempt that failed was still committing when the check
                // looked: the row is there now.
                Err(err) if retried && err.is_unique_violation() => {
                    return match Box::pin(committed()).await {
                        Ok(Some(done)) => Ok(done),
                        _ => Err(err),
                    };
                }
                Err(err) if err.is_transient() && std::time::Instant::now() + delay < deadline => {
                    tracing::warn!(operation, error = %err, retry_in_ms = delay.as_millis() as u64, "database unavailable: retrying the write");
                    if let Some(metrics) = &self.metrics {
                        metrics.db_retries.with_label_values(&[operation]).inc();
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                    retried = true;
                    result = match Box::pin(committed()).await {
                        Ok(Some(done)) => return Ok(done),
                        Ok(None) => Box::pin(write()).await,
                        // Still unreachable: go round again.
                        Err(err) => Err(err),
                    };
                }
                other => return other,
            }
        }
    }

    /// Runs an idempotent operation (a read, or a write safe to repeat) with
    /// the same retries as [`Store::retrying_write`].
    pub(crate) async fn retrying<T, W, WF>(
        &self,
        operation: &'static str,
        run: W,
    ) -> Result<T, StoreError>
    where
        W: FnMut() -> WF,
        WF: Future<Output = Result<T, StoreError>>,
    {
        self.retrying_write(operation, run, || async { Ok(None) })
            .await
    }

    pub(crate) fn count_stored(&self, stored: &[Message]) {
        match &self.backend {
            Backend::Postgres(pool) => self.growth.stored(stored.len(), pool),
            Backend::Sqlite(_) => {
                self.schedule_indexing(stored.len());
                if let Some(checkpoints) = &self.checkpoints {
                    checkpoints.stored(stored.len());
                }
            }
        }
        if let Some(metrics) = &self.metrics {
            for m in stored {
                metrics.count_messages(m.role, 1);
            }
        }
    }

    pub(crate) fn timer(&self, operation: &'static str) -> Timer<'_> {
        Timer {
            latency: self.latency.as_ref(),
            operation,
            start: std::time::Instant::now(),
        }
    }

    /// `postgres` or `sqlite`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Postgres(_) => "postgres",
            Backend::Sqlite(_) => "sqlite",
        }
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
            Ok(())
        })
    }

    /// Closes the pool (and the writing connection, when there is one).
    pub async fn close(&self) {
        if let Some(writer) = &self.sqlite_writer {
            writer.close().await;
        }
        if let Some(checkpoints) = &self.checkpoints {
            checkpoints.close().await;
        }
        self.kept.close();
        match &self.backend {
            Backend::Postgres(pool) => pool.close().await,
            Backend::Sqlite(pool) => pool.close().await,
        }
    }
}

/// Now, truncated to microseconds (what Postgres stores).
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
