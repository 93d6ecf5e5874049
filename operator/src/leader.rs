//! Leader election on a Lease (kube-lease-manager): the controllers run only while this
//! process holds the Lease, so two replicas never both write. Losing the Lease ends the
//! process, so a fresh start rejoins as a standby with clean caches.

use std::future::Future;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tracing::{error, info};

use crate::config::Config;
use crate::names;

/// Result of [`run_when_leader`].
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Shut down on request (the Lease was released).
    ShutDown,
    /// The Lease was lost while leading.
    LostLease,
}

/// Waits for the Lease, then runs `controllers` while holding it. Returns when
/// `shutdown` resolves (after `controllers` finished and the Lease was released) or
/// when the Lease is lost.
pub async fn run_when_leader<C, S>(
    client: Client,
    config: &Config,
    on_leader: impl FnOnce(),
    controllers: C,
    shutdown: S,
) -> Result<Outcome, LeaseManagerError>
where
    C: Future<Output = ()>,
    S: Future<Output = ()> + Clone,
{
    let duration = config.lease_duration_seconds.max(3);
    let grace = (duration / 3).max(1);
    let identity = config.identity();
    let manager = LeaseManagerBuilder::new(client, &config.lease_name)
        .with_namespace(config.lease_namespace())
        .with_identity(identity.clone())
        .with_duration(duration)
        .with_grace(grace)
        .with_field_manager(format!("{}-lease-{identity}", names::FIELD_MANAGER))
        .build()
        .await?;
    let (mut leading, task) = manager.watch().await;
    info!(lease = %config.lease_name, %identity, duration, "waiting for the leader Lease");

    let acquired = tokio::select! {
        acquired = wait_for(&mut leading, true) => acquired,
        () = shutdown.clone() => false,
    };
    if !acquired {
        drop(leading);
        let _ = task.await;
        return Ok(Outcome::ShutDown);
    }
    info!(%identity, "acquired the leader Lease; starting controllers");
    on_leader();

    let outcome = tokio::select! {
        () = controllers => Outcome::ShutDown,
        _ = wait_for(&mut leading, false) => Outcome::LostLease,
    };
    if outcome == Outcome::LostLease {
        error!(%identity, "lost the leader Lease; stopping");
    }
    // Closing the channel makes the manager release the Lease.
    drop(leading);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    Ok(outcome)
}

/// Resolves with `true` once the channel says `want`, `false` if it closes first.
async fn wait_for(rx: &mut watch::Receiver<bool>, want: bool) -> bool {
    loop {
        if *rx.borrow_and_update() == want {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}
