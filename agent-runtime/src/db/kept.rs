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
use std::sync::{Mutex, PoisonError};
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
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A kept connection, or one from `pool`.
    pub(super) async fn take<'a>(
        &'a self,
        pool: &PgPool,
    ) -> Result<KeptConnection<'a>, sqlx::Error> {
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
            return Ok(KeptConnection {
                kept: self,
                connection: Some(waiting.connection),
                taken: waiting.taken,
                finished: false,
            });
        }
        Ok(KeptConnection {
            kept: self,
            connection: Some(pool.acquire().await?),
            taken: Instant::now(),
            finished: false,
        })
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
        let mut idle = self.kept.lock();
        let back_to_pool = if !self.finished {
            // Failed or cancelled midway: this connection goes back to the
            // pool, and the kept ones with it. When the server went away they
            // are all dead, and the pool's ping on their return finds that
            // out at once instead of one failed statement each.
            let mut back = std::mem::take(&mut idle.connections);
            back.push(Waiting {
                connection,
                since: Instant::now(),
                taken: self.taken,
            });
            back
        } else if !idle.closed && idle.connections.len() < KEEP && self.taken.elapsed() < KEEP_FOR {
            idle.connections.push(Waiting {
                connection,
                since: Instant::now(),
                taken: self.taken,
            });
            Vec::new()
        } else {
            vec![Waiting {
                connection,
                since: Instant::now(),
                taken: self.taken,
            }]
        };
        drop(idle);
        // Outside the lock: the pool spawns their return (and ping) here.
        drop(back_to_pool);
    }
}
