//! SQLite's WAL checkpoints, off the writer.
//!
//! SQLite appends each commit to its write-ahead log and copies the log back
//! into the database file in a checkpoint. By default the connection whose
//! commit takes the log past 1,000 pages runs that checkpoint itself, before
//! its commit returns: with a chat writing ~19 pages, every ~50th chat waited
//! for one (copying the pages the log holds, 3-5 ms here), and with one writer
//! the chats behind it waited too: an SQLite chat one at a time had a p99 of
//! ~5 ms (docs/performance.md, round twenty-nine).
//!
//! Now a connection of its own checkpoints, after every [`EVERY_MESSAGES`]
//! messages stored (about as often as before, counted the same way whatever
//! the rate; [`IDLE_AFTER`] after the last ones when writes stop short of
//! that), with
//! `PASSIVE`: it never holds up a writer, and copies what was committed when it
//! started. The log is started again from its beginning only by a commit that
//! finds every page of it copied, which under a steady stream of commits
//! seldom holds just after such a checkpoint (others committed while it ran).
//! So once the log holds [`RESTART_PAGES`], the writer's own connection
//! checkpoints too, between two of its writes: it copies only what was
//! committed during the checkpointer's run, and its next commit starts the log
//! again. A connection that commits checkpoints all by itself only when the log
//! reaches [`BACKSTOP_PAGES`] (`PRAGMA wal_autocheckpoint`), should the rest
//! fall behind.
//!
//! SQLite writes the log over from its beginning rather than shortening the
//! file, so the file keeps the largest size it reached (up to 16 MB, 40 MB if
//! the checkpoints fell behind). Once messages stop, the idle checkpoint copies
//! all of it and empties the file (`TRUNCATE`). Its connection does not wait
//! for a reader or writer using the log (busy timeout 0), so it never holds up
//! a chat that arrives meanwhile; it tries again a second later instead, ten
//! times at most (the search indexer's run, a second after the messages, may
//! be under way on a loaded machine).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::Notify;

/// Messages stored between two checkpoints (a chat is two, ~19 pages of the
/// log: ~600 pages, copied in 1-2 ms here). Fewer, larger checkpoints hold the
/// core longer at a time: with one every 100 ms (~150 chats one at a time),
/// an SQLite chat's p99 one at a time was 1.9-2.3 ms, against 1.5-1.8 ms with
/// one every 25 ms.
const EVERY_MESSAGES: usize = 64;

/// How long after the last messages stored a checkpoint copies them when
/// fewer than [`EVERY_MESSAGES`] followed.
const IDLE_AFTER: Duration = Duration::from_secs(5);

/// How long after an idle checkpoint that could not empty the log's file (a
/// reader or writer was using the log) it tries again, and how many times.
const EMPTY_RETRY: Duration = Duration::from_secs(1);
const EMPTY_TRIES: usize = 10;

/// The log's size, in pages, from which the writer copies what the
/// checkpointer left, so that the log starts again (16 MB of 4 KiB pages).
const RESTART_PAGES: i64 = 4_000;

/// The log's size, in pages, at which a connection that commits checkpoints
/// itself (`PRAGMA wal_autocheckpoint`; SQLite's default is 1,000).
pub(super) const BACKSTOP_PAGES: u32 = 10_000;

/// The checkpointer's connection, and what wakes it.
pub(super) struct Checkpoints {
    pool: SqlitePool,
    /// Messages stored since the last checkpoint started.
    stored: AtomicUsize,
    due: Notify,
}

impl Checkpoints {
    /// Starts the checkpointer on `pool` (its own connection), with `writer`
    /// the connection message writes go through; it ends when `pool` is
    /// closed.
    pub(super) fn start(pool: SqlitePool, writer: SqlitePool) -> Arc<Self> {
        let checkpoints = Arc::new(Self {
            pool,
            stored: AtomicUsize::new(0),
            due: Notify::new(),
        });
        let woken = checkpoints.clone();
        tokio::spawn(async move {
            let pool = &woken.pool;
            loop {
                // The first message stored since the last checkpoint...
                tokio::select! {
                    () = woken.due.notified() => {}
                    () = pool.close_event() => return,
                }
                // ...then [`EVERY_MESSAGES`] of them, or [`IDLE_AFTER`] with
                // none stored (writes stopped).
                let mut idle = false;
                let mut seen = woken.stored.load(Ordering::Acquire);
                while seen < EVERY_MESSAGES {
                    tokio::select! {
                        () = woken.due.notified() => break,
                        () = tokio::time::sleep(IDLE_AFTER) => {}
                        () = pool.close_event() => return,
                    }
                    let now = woken.stored.load(Ordering::Acquire);
                    if now == seen {
                        idle = true;
                        break;
                    }
                    seen = now;
                }
                if woken.stored.swap(0, Ordering::AcqRel) == 0 {
                    continue;
                }
                let checkpointed = if idle {
                    tokio::select! {
                        emptied = empty(pool, &woken.stored) => emptied,
                        () = pool.close_event() => return,
                    }
                } else {
                    match checkpoint(pool, PASSIVE).await {
                        Ok(log) if log.pages >= RESTART_PAGES => checkpoint(&writer, PASSIVE).await,
                        done => done,
                    }
                };
                match checkpointed {
                    Ok(_) => {}
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(err) => {
                        tracing::warn!(error = %err, "SQLite checkpoint failed; retried after the next writes");
                    }
                }
            }
        });
        checkpoints
    }

    /// `messages` were stored: the first since the last checkpoint starts the
    /// wait for [`IDLE_AFTER`] without any, and a checkpoint runs once
    /// [`EVERY_MESSAGES`] have been.
    pub(super) fn stored(&self, messages: usize) {
        let before = self.stored.fetch_add(messages, Ordering::AcqRel);
        if before == 0 || (before < EVERY_MESSAGES && before + messages >= EVERY_MESSAGES) {
            self.due.notify_one();
        }
    }

    /// Ends the checkpointer; the last connection to the file to close
    /// checkpoints what is left.
    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

/// The log as a checkpoint left it.
struct Log {
    /// Pages in it.
    pages: i64,
    /// Pages of it copied into the database file.
    copied: i64,
}

/// Copies what it can without waiting for readers or writers.
const PASSIVE: &str = "PRAGMA wal_checkpoint(PASSIVE)";
/// Copies all, then empties the log's file (gives up if a reader or writer
/// is using the log and the connection's busy timeout is 0).
const TRUNCATE: &str = "PRAGMA wal_checkpoint(TRUNCATE)";

/// Writes stopped: copies all of the log into the database file and empties
/// the log's file (which starts the log again too, however long it was). A
/// reader or writer using the log makes a try give up at once (the
/// connection's busy timeout is 0); the next try follows [`EMPTY_RETRY`]
/// later, until the file is empty, a message is stored (the next idle
/// checkpoint takes over) or [`EMPTY_TRIES`] were made.
async fn empty(pool: &SqlitePool, stored: &AtomicUsize) -> Result<Log, sqlx::Error> {
    let mut tries = 0;
    loop {
        // `TRUNCATE` alone would copy too, but holding the writer's lock all
        // the while: `PASSIVE` first copies without it, and `TRUNCATE` then
        // holds it only to empty the file.
        let log = checkpoint(pool, PASSIVE).await?;
        if log.copied == log.pages {
            let after = checkpoint(pool, TRUNCATE).await?;
            if after.pages == 0 {
                return Ok(after);
            }
        }
        tries += 1;
        if tries == EMPTY_TRIES || stored.load(Ordering::Acquire) > 0 {
            return Ok(log);
        }
        tokio::time::sleep(EMPTY_RETRY).await;
    }
}

/// Checkpoint `sql` ([`PASSIVE`] or [`TRUNCATE`]) on `pool`'s connection.
async fn checkpoint(pool: &SqlitePool, sql: &'static str) -> Result<Log, sqlx::Error> {
    // (busy, pages in the log, pages of it copied)
    let (_, pages, copied): (i64, i64, i64) = sqlx::query_as(sql).fetch_one(pool).await?;
    Ok(Log { pages, copied })
}
