//! Postgres connections kept between statements, outside the pool.
//!
//! sqlx's pool pings every connection that comes back to it (a `Sync` and its
//! `ReadyForQuery`, on a task spawned for it): a chat's two statements cost
//! four round trips and two task spawns, two of the round trips only to learn
//! that a connection which had just answered still answers, and each waking a
//! Postgres backend. The store keeps a few connections checked out instead: a
//! statement that ran to its end leaves its connection here, and the next
//! statement takes it with no round trip. One idle for [`PING_AFTER_IDLE`] or
//! more is pinged first, as the pool's own are.
//!
//! A connection whose statement failed or was cancelled midway goes back to
//! the pool, which pings it (flushing what the statement left unread) and
//! closes it if it does not answer, and the kept ones go with it (when the
//! server went away, they are dead too); so does one kept for [`KEEP_FOR`],
//! so the pool's lifetime rules still apply, and every one beyond [`KEEP`].

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use super::PING_AFTER_IDLE;

/// At most this many connections wait here; the rest go back to the pool.
/// Twice the Postgres writes in flight at once (group commit's limit), for
/// the reads alongside them.
const KEEP: usize = 2 * super::group_commit::POSTGRES_IN_FLIGHT;

/// A connection goes back to the pool (and its lifetime and idle rules) once
/// it has been out of it this long.
const KEEP_FOR: Duration = Duration::from_secs(300);

/// A kept connection unused this long goes back to the pool, whose idle
/// timeout then closes it: a quiet runtime holds no connections open.
const IDLE_FOR: Duration = Duration::from_secs(60);

/// The connections kept; shared by every clone of a [`super::Store`].
#[derive(Default)]
pub(super) struct Kept {
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Last kept on top: the connection used most recently is used next, so
    /// the ones a quiet runtime does not need stay idle and age out.
    connections: Vec<Waiting>,
    /// The store is closing: nothing is kept any more.
    closed: bool,
}

struct Waiting {
    connection: PoolConnection<Postgres>,
    /// When it was kept.
    since: Instant,
    /// When it was taken from the pool.
    taken: Instant,
}

impl Kept {
    /// Kept connections that go back to the pool after [`IDLE_FOR`] unused
    /// (checked by a task that ends with the store).
    pub(super) fn new() -> Arc<Self> {
        Self::idle_for(IDLE_FOR)
    }

    fn idle_for(limit: Duration) -> Arc<Self> {
        let kept = Arc::new(Self::default());
        let watched = Arc::downgrade(&kept);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(limit / 2);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(kept) = watched.upgrade() else {
                    return;
                };
                if !kept.release_idle(limit) {
                    return;
                }
            }
        });
        kept
    }

    /// Hands the connections kept but unused for `limit` back to the pool;
    /// false once the store is closed.
    fn release_idle(&self, limit: Duration) -> bool {
        let stale: Vec<Waiting> = {
            let mut idle = self.lock();
            if idle.closed {
                return false;
            }
            // Oldest at the bottom: the stale ones are a prefix.
            let fresh = idle
                .connections
                .iter()
                .position(|waiting| waiting.since.elapsed() < limit)
                .unwrap_or(idle.connections.len());
            idle.connections.drain(..fresh).collect()
        };
        drop(stale);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A kept connection, or one from `pool`.
    ///
    /// The usual case, a connection kept a moment ago, takes no future: the
    /// pool's acquire future is ~15 KiB (it holds the path that opens a
    /// connection inline), and a future that awaits it inline is that large
    /// and moved whole wherever it goes (docs/performance.md, round eight).
    pub(super) async fn take<'a>(
        &'a self,
        pool: &PgPool,
    ) -> Result<KeptConnection<'a>, sqlx::Error> {
        match self.take_fresh() {
            Some(connection) => Ok(connection),
            None => Box::pin(self.take_checked(pool)).await,
        }
    }

    /// The connection kept last, when it was kept less than
    /// [`PING_AFTER_IDLE`] ago.
    fn take_fresh(&self) -> Option<KeptConnection<'_>> {
        let mut idle = self.lock();
        let last = idle.connections.last()?;
        if last.since.elapsed() >= PING_AFTER_IDLE {
            return None;
        }
        let waiting = idle.connections.pop()?;
        Some(self.lend(waiting.connection, waiting.taken))
    }

    fn lend(&self, connection: PoolConnection<Postgres>, taken: Instant) -> KeptConnection<'_> {
        KeptConnection {
            kept: self,
            connection: Some(connection),
            taken,
            finished: false,
        }
    }

    /// A kept connection pinged first, or one from `pool`.
    async fn take_checked<'a>(&'a self, pool: &PgPool) -> Result<KeptConnection<'a>, sqlx::Error> {
        loop {
            let Some(mut waiting) = self.lock().connections.pop() else {
                break;
            };
            if waiting.since.elapsed() >= PING_AFTER_IDLE
                && let Err(error) = waiting.connection.ping().await
            {
                tracing::debug!(%error, "a kept database connection did not answer: closing it");
                waiting.connection.close_on_drop();
                continue;
            }
            return Ok(self.lend(waiting.connection, waiting.taken));
        }
        Ok(self.lend(pool.acquire().await?, Instant::now()))
    }

    /// Hands every kept connection back to the pool and keeps none from now
    /// on (the pool's `close` waits for the connections out of it).
    pub(super) fn close(&self) {
        let connections = {
            let mut idle = self.lock();
            idle.closed = true;
            std::mem::take(&mut idle.connections)
        };
        drop(connections);
    }
}

/// A connection taken for a statement (or a few): kept when dropped after
/// [`KeptConnection::finished`], back to the pool otherwise.
pub(crate) struct KeptConnection<'a> {
    kept: &'a Kept,
    connection: Option<PoolConnection<Postgres>>,
    taken: Instant,
    finished: bool,
}

impl KeptConnection<'_> {
    /// The statements ran to their end: the connection has read every answer
    /// and can serve the next statement as it is. (One that failed midway,
    /// its error returned with `?`, or was cancelled is not marked.)
    pub(crate) fn finished(&mut self) {
        self.finished = true;
    }
}

impl Deref for KeptConnection<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.connection.as_ref().expect("taken until dropped")
    }
}

impl DerefMut for KeptConnection<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.connection.as_mut().expect("taken until dropped")
    }
}

impl Drop for KeptConnection<'_> {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else {
            return;
        };
        let waiting = Waiting {
            connection,
            since: Instant::now(),
            taken: self.taken,
        };
        let mut idle = self.kept.lock();
        let back_to_pool = if !self.finished {
            // Failed or cancelled midway: this connection goes back to the
            // pool, and the kept ones with it. When the server went away they
            // are all dead, and the pool's ping on their return finds that
            // out at once instead of one failed statement each.
            let mut back = std::mem::take(&mut idle.connections);
            back.push(waiting);
            back
        } else if !idle.closed && idle.connections.len() < KEEP && self.taken.elapsed() < KEEP_FOR {
            idle.connections.push(waiting);
            Vec::new()
        } else {
            vec![waiting]
        };
        drop(idle);
        // Outside the lock: the pool spawns their return (and ping) here.
        drop(back_to_pool);
    }
}

#[cfg(test)]
mod tests {
    /// Against the harness's Postgres (`make test`; `make unit` skips the
    /// `postgres::` tests).
    mod postgres {
        use std::time::Duration;

        use sqlx::postgres::PgPoolOptions;
        use switchboard_tests::database::TestDatabase;

        use super::super::Kept;

        #[tokio::test]
        async fn a_statement_leaves_its_connection_kept_until_it_sits_idle() {
            let db = TestDatabase::create().await;
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .connect(db.url())
                .await
                .expect("pool");
            let kept = Kept::idle_for(Duration::from_millis(400));
            for _ in 0..3 {
                let mut connection = kept.take(&pool).await.expect("connection");
                sqlx::query("SELECT 1")
                    .execute(&mut *connection)
                    .await
                    .expect("statement");
                connection.finished();
            }
            // One connection served the three statements, and stays out of the pool.
            assert_eq!(kept.lock().connections.len(), 1);
            assert_eq!((pool.size(), pool.num_idle()), (1, 0));
            // A statement that fails midway (`finished` not reached) hands it back.
            {
                let mut connection = kept.take(&pool).await.expect("connection");
                let failed = sqlx::query("SELECT * FROM no_such_table")
                    .execute(&mut *connection)
                    .await;
                assert!(failed.is_err());
            }
            assert_eq!(kept.lock().connections.len(), 0);
            let mut connection = kept.take(&pool).await.expect("connection");
            connection.finished();
            drop(connection);
            assert_eq!(kept.lock().connections.len(), 1);
            // Unused past the limit, it goes back to the pool.
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            assert_eq!(kept.lock().connections.len(), 0);
            // Its return to the pool (a ping) runs on a task of its own.
            for _ in 0..50 {
                if pool.num_idle() as u32 == pool.size() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                pool.num_idle() as u32,
                pool.size(),
                "every connection back in the pool"
            );
            kept.close();
            pool.close().await;
        }
    }
}
