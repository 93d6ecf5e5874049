//! End-to-end: with nothing changing for 60 s, the operator makes zero write requests,
//! counted by the apiserver's own `apiserver_request_total` and by the operator.

mod support;

use std::time::Duration;

use crds::ChatChannel;
use crds::conditions::AVAILABLE;
use serde_json::json;
use support::{World, apiserver_writes, eventually, grown};

#[tokio::test]
async fn an_idle_operator_writes_nothing_for_a_minute() {
    let world = World::new("op-idle").await;
    let operator = world.operator("idle", &[]).await;
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
    let mut last = operator.writes().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let now = operator.writes().await;
        if now == last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the operator's writes never settled"
        );
        last = now;
    }

    let apiserver_before = apiserver_writes(&world.cluster);
    let operator_before = operator.writes().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let apiserver_delta = grown(&apiserver_before, &apiserver_writes(&world.cluster));
    let operator_delta = operator.writes().await - operator_before;
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
    let events: k8s_openapi::api::events::v1::Event = match world
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .max_by_key(|e| {
            e.series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or(e.event_time.as_ref().map(|t| t.0))
        }) {
        Some(e) => e,
        None => return,
    };
    let last = events
        .series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or(events.event_time.as_ref().map(|t| t.0))
        .expect("events carry a time");
    let idle_start = k8s_openapi::jiff::Timestamp::now() - std::time::Duration::from_secs(61);
    assert!(
        last < idle_start,
        "an event was recorded while idle: {events:?}"
    );
}
