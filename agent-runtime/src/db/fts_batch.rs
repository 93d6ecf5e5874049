//! SQLite's search indexes (messages, session titles), filled in batches.
//!
//! FTS5 writes a new segment of its index whenever a transaction that added
//! rows ends, and at every statement boundary inside one (its savepoints
//! flush), then merges the segments as they pile up. Kept by a trigger per
//! message, that was a quarter of the instructions of a chat stored in SQLite
//! (`make bench-instructions`: `sqlite3Fts5FlushToDisk` 24.8 % inclusive,
//! merges 11.5 %; docs/performance.md, round twenty-seven). So a message is
//! indexed shortly after it is stored, together with the others stored
//! meanwhile: [`Store::count_stored`] schedules a run, which starts [`DELAY`]
//! later or as soon as [`BATCH`] messages wait, and indexes everything pending
//! in chunks of at most [`CHUNK`] messages, each one transaction, so the writer
//! is never held for long. `messages_fts_indexed.seq` (migration 0019) is the
//! last message indexed and moves in the same transaction as the index's rows,
//! so a crash loses nothing: what is left is indexed when the store opens
//! again. A search first indexes whatever is pending, so it finds every stored
//! message, as before; under load that is up to a second's messages (4-12 ms
//! per [`CHUNK`] of ~200-character messages, measured with the `sqlite3` CLI on
//! the bench's machine). Session titles go the same way, in the same runs and
//! transactions (migration 0020): a new session wrote a segment of its own,
//! 11 % of an SQLite chat's instructions once the messages were batched.
//! Postgres indexes each row in its own statement (a generated `tsvector`
//! column and GIN's pending list) and is not concerned.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::SqlitePool;
use tokio::sync::Notify;

use super::{Store, StoreError};

/// How long after a message is stored a run starts at the latest: the
/// messages stored meanwhile share its segment.
const DELAY: Duration = Duration::from_secs(1);

/// Messages stored since the last run that start the next one at once. Runs
/// much more often than [`DELAY`] cost more than they save under load: with
/// 256, chats/s at 32 fell 6-8 % and CPU per chat rose 7-12 % against the
/// trigger, as each run read its rows back in transactions of its own; with
/// 4,096 (one run about a second at 2,000 chats/s), chats/s rose 9-13 %.
const BATCH: u64 = 4096;

/// Messages (and session titles) indexed per transaction at most: [`CHUNK`],
/// and the `LIMIT` of [`index_chunk`]'s statements, which take no parameters.
macro_rules! chunk {
    () => {
        512
    };
}

/// Messages (and session titles) indexed per transaction at most.
const CHUNK: u64 = chunk!();

/// Whether a run is scheduled, and what was stored since the last one.
#[derive(Default)]
pub(super) struct Indexer {
    scheduled: AtomicBool,
    stored: AtomicU64,
    full: Notify,
}

impl Store {
    /// Counts `n` stored messages and schedules a run of the indexer (SQLite)
    /// unless one is scheduled already.
    pub(super) fn schedule_indexing(&self, n: usize) {
        if n == 0 {
            return;
        }
        let stored = self.indexer.stored.fetch_add(n as u64, Ordering::AcqRel) + n as u64;
        if stored >= BATCH {
            self.indexer.full.notify_one();
        }
        if self.indexer.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime (shutting down): indexed when the store opens again.
            self.indexer.scheduled.store(false, Ordering::Release);
            return;
        };
        let store = self.clone();
        runtime.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(DELAY) => {}
                () = store.indexer.full.notified() => {}
            }
            // Cleared before the run: a message stored from now on schedules
            // the next one, and one stored before is committed and seen by
            // this one.
            store.indexer.stored.store(0, Ordering::Release);
            store.indexer.scheduled.store(false, Ordering::Release);
            match store.index_pending().await {
                // The store was closed meanwhile: indexed when it opens again.
                Ok(_) | Err(StoreError::Database(sqlx::Error::PoolClosed)) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "indexing messages and session titles for search failed; retried with the next write or search");
                }
            }
        });
    }

    /// Schedules a run for a session's title written without a message
    /// (SQLite; nothing with Postgres).
    pub(super) fn schedule_title_indexing(&self) {
        if matches!(self.backend, super::Backend::Sqlite(_)) {
            self.schedule_indexing(1);
        }
    }

    /// Indexes every message and session title not indexed yet (SQLite;
    /// nothing with Postgres).
    /// Returns how many were indexed.
    pub(crate) async fn index_pending(&self) -> Result<u64, StoreError> {
        let super::Backend::Sqlite(pool) = &self.backend else {
            return Ok(0);
        };
        // Read first, on the shared pool: a search with nothing pending does
        // not wait for the writer.
        let pending: bool = sqlx::query_scalar(
            "SELECT coalesce((SELECT max(seq) FROM messages), 0) > \
             (SELECT seq FROM messages_fts_indexed) \
             OR EXISTS (SELECT 1 FROM sessions_fts_pending)",
        )
        .fetch_one(pool)
        .await?;
        if !pending {
            return Ok(0);
        }
        let writer = self.sqlite_writer.as_ref().unwrap_or(pool);
        let mut indexed = 0;
        loop {
            let (messages, sessions) = index_chunk(writer).await?;
            indexed += messages + sessions;
            if messages < CHUNK && sessions < CHUNK {
                return Ok(indexed);
            }
        }
    }
}

/// Indexes the next [`CHUNK`] messages not indexed yet, and the titles of the
/// next [`CHUNK`] sessions pending, in one transaction (`BEGIN IMMEDIATE`:
/// nothing else writes between the read of what is pending and the index's
/// rows). Returns how many of each.
///
/// The statements take no parameters: SQLite plans with a bound `LIMIT` (and,
/// built with STAT4 as here, with a range's bounds), and prepares a statement
/// again whenever such a value changes (331 times over 200 chats under
/// callgrind when the chunk's bounds were bound). The mark moves first, its
/// old place kept in `prev`, and the insert takes the rows between the two.
/// A session is listed in `sessions_fts_pending` (migration 0020) while its
/// current title is not in the index; the chunk's sessions are indexed with
/// the title they have now and leave the list.
async fn index_chunk(writer: &SqlitePool) -> Result<(u64, u64), StoreError> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(concat!(
        "UPDATE messages_fts_indexed SET prev = seq, seq = coalesce( \
           (SELECT max(seq) FROM (SELECT seq FROM messages \
              WHERE seq > messages_fts_indexed.seq ORDER BY seq LIMIT ",
        chunk!(),
        ")), seq)"
    ))
    .execute(&mut *tx)
    .await?;
    let messages = sqlx::query(
        "INSERT INTO messages_fts (rowid, content) \
         SELECT seq, content FROM messages \
         WHERE seq > (SELECT prev FROM messages_fts_indexed) \
           AND seq <= (SELECT seq FROM messages_fts_indexed) ORDER BY seq",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(concat!(
        "INSERT INTO sessions_fts (rowid, title) \
         SELECT rid, coalesce(title, '') FROM sessions WHERE rid IN \
           (SELECT rid FROM sessions_fts_pending ORDER BY rid LIMIT ",
        chunk!(),
        ")"
    ))
    .execute(&mut *tx)
    .await?;
    // The same rows: nothing else wrote since, and every session listed exists
    // (deleting one takes it off the list).
    let sessions = sqlx::query(concat!(
        "DELETE FROM sessions_fts_pending WHERE rid IN \
           (SELECT rid FROM sessions_fts_pending ORDER BY rid LIMIT ",
        chunk!(),
        ")"
    ))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if messages == 0 && sessions == 0 {
        // Nothing pending: the transaction changed nothing worth a commit.
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok((messages, sessions))
}
