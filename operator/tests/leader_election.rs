//! End-to-end: two operator replicas share one Lease; only the leader writes, and when
//! the leader is killed the other takes over within the lease duration.

mod support;

use std::time::{Duration, Instant};

use crds::conditions::AVAILABLE;
use serde_json::json;
use support::{LEASE_SECONDS, World, eventually};

#[tokio::test]
async fn only_the_leader_writes_and_the_standby_takes_over() {
    let world = World::new("op-leader").await;
    let mut a = world.operator("replica-a", &[]).await;
    let mut b = world.operator("replica-b", &[]).await;
    let leader_is_a = eventually(Duration::from_secs(30), "a leader", || async {
        match (a.is_leader().await, b.is_leader().await) {
            (true, false) => Some(true),
            (false, true) => Some(false),
            (true, true) => panic!("both replicas lead"),
            _ => None,
        }
    })
    .await;
    let (leader, standby) = if leader_is_a {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    world.apply_agent("one", json!({ "replicas": 1 })).await;
    world
        .wait_condition("one", AVAILABLE, "True", Duration::from_secs(120))
        .await;
    assert!(leader.writes().await > 0.0, "the leader wrote");
    assert_eq!(standby.writes().await, 0.0, "the standby never writes");
    assert!(!standby.is_leader().await);

    // Kill the leader without a chance to release the Lease.
    leader.kill9().await;
    let killed = Instant::now();
    eventually(
        Duration::from_secs(3 * LEASE_SECONDS),
        "the standby to lead",
        || async { standby.is_leader().await.then_some(()) },
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover after {takeover:?} (lease {LEASE_SECONDS}s)");
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 2),
        "takeover took {takeover:?}, lease is {LEASE_SECONDS}s"
    );

    // The new leader reconciles: a second agent becomes Available.
    world.apply_agent("two", json!({ "replicas": 1 })).await;
    world
        .wait_condition("two", AVAILABLE, "True", Duration::from_secs(120))
        .await;
    assert!(standby.writes().await > 0.0);
    assert!(standby.running());
}
