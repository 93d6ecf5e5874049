//! Rate-limit counters shared by every pod of an agent (Postgres only; the
//! embedded SQLite default serves one process, whose limiter counts in
//! memory). One row per limit key and unix minute in the UNLOGGED table
//! `rate_windows`; the limiter in `crate::limits` decides what to count.

use sqlx::PgPool;

use super::{Backend, Store, StoreError};

/// One key a request is counted against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowCount {
    /// The limit's key.
    pub key: String,
    /// The limit: the count must be below it for the request to be counted.
    pub limit: i64,
    /// What the request adds (1 for a request, the reserved tokens for the budget).
    pub add: i64,
}

/// The shared counters of the agent's database.
#[derive(Clone, Debug)]
pub struct RateWindows {
    pool: PgPool,
}

impl Store {
    /// The shared rate-limit counters, when the database is shared by pods
    /// (Postgres); `None` on SQLite.
    pub fn rate_windows(&self) -> Option<RateWindows> {
        match &self.backend {
            Backend::Postgres(pool) => Some(RateWindows { pool: pool.clone() }),
            Backend::Sqlite(_) => None,
        }
    }
}

impl RateWindows {
    /// Counts one request against each of `counts` in `minute`, in one
    /// statement: a key whose count has reached its limit is left as it is.
    /// Returns the keys counted (a request is admitted when all were).
    /// Keys are locked in the order given: pass them sorted, so that two
    /// requests sharing keys never wait on each other in a cycle.
    pub async fn count(
        &self,
        minute: i64,
        counts: &[WindowCount],
    ) -> Result<Vec<String>, StoreError> {
        let keys: Vec<&str> = counts.iter().map(|c| c.key.as_str()).collect();
        let limits: Vec<i64> = counts.iter().map(|c| c.limit).collect();
        let adds: Vec<i64> = counts.iter().map(|c| c.add).collect();
        let counted = sqlx::query_scalar(
            "INSERT INTO rate_windows AS r (key, minute, count, lim) \
             SELECT k.key, $4, k.add, k.lim \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) WITH ORDINALITY AS k(key, lim, add, n) \
             ORDER BY k.n \
             ON CONFLICT (key, minute) DO UPDATE \
             SET count = r.count + EXCLUDED.count, lim = EXCLUDED.lim \
             WHERE r.count < EXCLUDED.lim \
             RETURNING r.key",
        )
        .bind(&keys)
        .bind(&limits)
        .bind(&adds)
        .bind(minute)
        .fetch_all(&self.pool)
        .await?;
        Ok(counted)
    }

    /// Adds `delta` (negative to give back) to `key`'s count in `minute`,
    /// never below zero; nothing when the row is gone.
    pub async fn adjust(&self, key: &str, minute: i64, delta: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE rate_windows SET count = GREATEST(count + $3, 0) \
             WHERE key = $1 AND minute = $2",
        )
        .bind(key)
        .bind(minute)
        .bind(delta)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The per-user keys (`user…`, `channel-user…`) whose count reached their
    /// limit in `minute` or later, with their minute: the users being refused.
    pub async fn keys_at_limit(&self, minute: i64) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query_as(
            "SELECT minute, key FROM rate_windows \
             WHERE minute >= $1 AND count >= lim AND (key LIKE $2 OR key LIKE $3)",
        )
        .bind(minute)
        .bind("user\u{1f}%")
        .bind("channel-user\u{1f}%")
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Deletes the counters of minutes before `minute`.
    pub async fn forget_before(&self, minute: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM rate_windows WHERE minute < $1")
            .bind(minute)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
