//! End-to-end: with nothing changing for 60 s, the operator makes zero write requests,
//! counted by the apiserver's own `apiserver_request_total` and by the operator.

mod support;

use std::time::Duration;

use crds::ChatChannel;
use crds::conditions::AVAILABLE;
use k8s_openapi::api::events::v1::Event;
use serde_json::json;
use support::{Operator, World, apiserver_writes, eventually, grown, settled, sum_metric};

/// The operator's own count of its write requests, read from its `/metrics`. Panics
/// when the operator is not running, `/metrics` is unreachable or the counter is missing:
/// a dead operator writes nothing, and must not pass for an idle one.
async fn writes(operator: &mut Operator) -> f64 {
    assert!(
        operator.running(),
        "the operator exited; log: {}",
        operator.log.display()
    );
    let text = operator.get("/metrics").await.unwrap_or_else(|| {
        panic!(
            "the operator's /metrics is unreachable; log: {}",
            operator.log.display()
        )
    });
    assert!(
        text.lines()
            .any(|l| l.starts_with("switchboard_operator_kube_writes_total")),
        "no switchboard_operator_kube_writes_total in /metrics:\n{text}"
    );
    sum_metric(&text, "switchboard_operator_kube_writes_total", |_| true)
}

/// When an event last happened (its series' last observation, else its time).
fn last_seen(event: &Event) -> Option<k8s_openapi::jiff::Timestamp> {
    event
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(event.event_time.as_ref().map(|t| t.0))
}

#[tokio::test]
async fn an_idle_operator_writes_nothing_for_a_minute() {
    let world = World::new("op-idle").await;
    let mut operator = world.operator("idle", &[]).await;
    eventually(Duration::from_secs(30), "leadership", || async {
        operator.is_leader().await.then_some(())
    })
    .await;
    for name in ["a", "b", "c"] {
        world.apply_agent(name, json!({ "replicas": 1 })).await;
    }
    world
        .apply::<ChatChannel>(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "ChatChannel",
            "metadata": { "name": "web" },
            "spec": { "agentRef": { "name": "a" }, "type": "web" },
        }))
        .await;
    for name in ["a", "b", "c"] {
        world
            .wait_condition(name, AVAILABLE, "True", Duration::from_secs(120))
            .await;
    }
    // Let the last reactions settle: writes stop growing for 10 s.
    assert!(
        writes(&mut operator).await > 0.0,
        "the operator counted no writes though it made every child"
    );
    settled(
        "the operator's writes",
        Duration::from_secs(60),
        Duration::from_secs(10),
        async || writes(&mut operator).await,
    )
    .await;

    let apiserver_before = apiserver_writes(&world.cluster);
    let operator_before = writes(&mut operator).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let apiserver_delta = grown(&apiserver_before, &apiserver_writes(&world.cluster));
    let operator_delta = writes(&mut operator).await - operator_before;
    eprintln!("apiserver write requests during the idle minute: {apiserver_delta:?}");
    eprintln!("operator write requests during the idle minute: {operator_delta}");

    assert_eq!(operator_delta, 0.0, "the operator counted its own writes");
    // The apiserver counts writes cluster-wide, without a namespace or user label, and
    // the harness is shared (kwok node leases, controller leader election, other tests).
    // Only Switchboard writes switchboard.dev resources (no runtime runs on kwok), so
    // those must not grow at all; writes to core kinds are attributed through the
    // operator's own counter above and through this namespace's events below.
    let offending: Vec<_> = apiserver_delta
        .keys()
        .filter(|k| k.starts_with("switchboard.dev/"))
        .collect();
    assert!(
        offending.is_empty(),
        "write requests while idle: {apiserver_delta:?}"
    );
    // The operator recorded events while it made the children (so events are visible
    // here); none of them may be newer than the start of the idle minute.
    let events = world
        .api::<Event>()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Applied")),
        "no Applied event from the operator: {events:?}"
    );
    let newest = events
        .iter()
        .max_by_key(|e| last_seen(e))
        .expect("the operator recorded events while it made the children");
    let last = last_seen(newest).expect("events carry a time");
    let idle_start = k8s_openapi::jiff::Timestamp::now() - std::time::Duration::from_secs(61);
    assert!(
        last < idle_start,
        "an event was recorded while idle: {newest:?}"
    );
}
