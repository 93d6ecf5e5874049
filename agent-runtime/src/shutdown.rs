//! Graceful shutdown: a draining phase (streams may finish), then cancellation
//! (streams end with an error event and store their partial answer), and a
//! count of turns still writing so the database is closed only after them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Inner {
    draining: CancellationToken,
    cancel: CancellationToken,
    turns: AtomicUsize,
    idle: Notify,
}

/// Shutdown state shared by the server and every turn; cheap to clone.
#[derive(Clone, Default)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

/// Held while a turn may still write; see [`Lifecycle::turn`].
pub struct TurnGuard {
    inner: Arc<Inner>,
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        if self.inner.turns.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}

impl Lifecycle {
    /// Starts draining; after `grace` every stream still running is cancelled.
    pub fn begin_shutdown(&self, grace: Duration) {
        if self.inner.draining.is_cancelled() {
            return;
        }
        self.inner.draining.cancel();
        let cancel = self.inner.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if !cancel.is_cancelled() {
                tracing::warn!("grace period over: ending the streams still running");
            }
            cancel.cancel();
        });
    }

    /// Shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.is_cancelled()
    }

    /// Running streams must end (see [`Self::cancelled`]).
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Resolves when running streams must end.
    pub async fn cancelled(&self) {
        self.inner.cancel.cancelled().await;
    }

    /// Counts a turn as in progress until the guard is dropped.
    pub fn turn(&self) -> TurnGuard {
        self.inner.turns.fetch_add(1, Ordering::AcqRel);
        TurnGuard {
            inner: self.inner.clone(),
        }
    }

    /// Turns in progress.
    pub fn turns(&self) -> usize {
        self.inner.turns.load(Ordering::Acquire)
    }

    /// Waits until no turn is in progress (cancelling them once draining has
    /// reached its deadline; they store what they have and end).
    pub async fn wait_for_turns(&self) {
        loop {
            let idle = self.inner.idle.notified();
            if self.turns() == 0 {
                return;
            }
            // Whatever happens, recheck now and then.
            let _ = tokio::time::timeout(Duration::from_millis(100), idle).await;
        }
    }
}
