//! The Postgres channel that carries live-sync events between the agent's
//! pods (`NOTIFY`/`LISTEN`); see `crate::live`. SQLite has none: one process
//! fans out in memory.

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::{Backend, Store, StoreError};

/// The notification channel's name.
pub const LIVE_CHANNEL: &str = "switchboard_live";

/// Sends and receives live-sync notifications on the agent's database.
#[derive(Clone, Debug)]
pub struct LiveChannel {
    pool: PgPool,
}

impl Store {
    /// The live-sync channel, when the database is shared by pods (Postgres).
    pub fn live_channel(&self) -> Option<LiveChannel> {
        match &self.backend {
            Backend::Postgres(pool) => Some(LiveChannel { pool: pool.clone() }),
            Backend::Sqlite(_) => None,
        }
    }
}

impl LiveChannel {
    /// Sends `payload` (at most 8000 bytes) to every listening pod.
    pub async fn notify(&self, payload: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(LIVE_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A connection listening on the channel (it reconnects by itself).
    pub async fn listen(&self) -> Result<PgListener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(LIVE_CHANNEL).await?;
        Ok(listener)
    }
}
