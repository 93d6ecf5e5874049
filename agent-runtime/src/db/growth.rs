//! A young Postgres database's plans, made again as it grows.
//!
//! Each pooled connection prepares its statements once and keeps their plans
//! until something invalidates them, normally autovacuum's `ANALYZE`, which
//! comes within a minute or so. Plans made while a table is a few pages are
//! right for a few pages: the group-commit batch finds its sessions with a
//! hash join over a sequential scan of `sessions`. A new agent's database
//! under load grows by thousands of rows a second, and until then every batch
//! read the whole table (21-54 million rows read in 10 s of `make bench` on a
//! fresh database, half the chats a second of an analyzed one:
//! docs/performance.md, round twenty-six). So when the tables were small at
//! start, the runtime analyzes them itself after it has stored 3,000, 30,000
//! and 300,000 messages; each `ANALYZE` makes every connection plan again.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::PgPool;

/// Below this many sessions at start, the database is young.
const YOUNG_BELOW: f32 = 30_000.0;

/// Messages stored by this process after which a young database's tables are
/// analyzed.
const MARKS: [u64; 3] = [3_000, 30_000, 300_000];

/// Messages stored since start, and whether the tables were small then.
#[derive(Default)]
pub(super) struct Growth {
    young: bool,
    stored: AtomicU64,
}

impl Growth {
    /// Reads the planner's row count of `sessions` (-1 before the first
    /// analyze, 0 when analyzed empty). A database it cannot read is taken
    /// as settled: nothing is analyzed.
    pub(super) async fn at_start(pool: &PgPool) -> Self {
        let rows: Result<f32, sqlx::Error> =
            sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'sessions'::regclass")
                .fetch_one(pool)
                .await;
        Self {
            young: rows.is_ok_and(|rows| rows < YOUNG_BELOW),
            stored: AtomicU64::new(0),
        }
    }

    /// Counts `n` stored messages; at a mark, analyzes the tables in the
    /// background (a failure is logged and changes nothing else).
    pub(super) fn stored(&self, n: usize, pool: &PgPool) {
        if !self.young || n == 0 {
            return;
        }
        let n = n as u64;
        let before = self.stored.fetch_add(n, Ordering::Relaxed);
        if !MARKS
            .iter()
            .any(|&mark| before < mark && before + n >= mark)
        {
            return;
        }
        let pool = pool.clone();
        let stored = before + n;
        tokio::spawn(async move {
            match sqlx::query("ANALYZE sessions, messages")
                .execute(&pool)
                .await
            {
                Ok(_) => tracing::debug!(stored, "young database analyzed"),
                Err(err) => {
                    tracing::warn!(error = %err, stored, "analyzing a young database failed")
                }
            }
        });
    }
}
