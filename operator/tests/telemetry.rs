//! End-to-end: the operator's `--otlp-endpoint` and `--log-format` flags. With an
//! endpoint, a local OTLP/HTTP receiver gets the operator's reconcile spans (service
//! `switchboard-operator`, span `reconcile`, the agent's name as an attribute); with
//! `--log-format=text` the log has no JSON lines. Without the flags the log stays JSON
//! lines, as before they existed.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::json;
use support::{World, eventually};

/// Bodies of the OTLP export requests received.
type Received = Arc<Mutex<Vec<Bytes>>>;

async fn receive(State(received): State<Received>, body: Bytes) -> &'static str {
    received.lock().expect("lock").push(body);
    ""
}

/// Starts an OTLP/HTTP receiver; returns its base URL.
async fn start_receiver(received: Received) -> String {
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn reconcile_spans_go_to_the_otlp_endpoint_and_logs_follow_the_format() {
    let world = World::new("op-otel").await;
    let received: Received = Arc::default();
    let endpoint = start_receiver(received.clone()).await;
    let operator = world
        .operator(
            "traced",
            &[
                "--leader-elect=false",
                "--otlp-endpoint",
                &endpoint,
                "--log-format=text",
            ],
        )
        .await;
    world
        .apply_agent("traced-agent", json!({ "replicas": 1 }))
        .await;

    // The protobuf bodies carry their strings as UTF-8: the service name, the span
    // name and the agent's name, without decoding the whole message.
    eventually(
        Duration::from_secs(60),
        "a reconcile span of traced-agent",
        || async {
            let bodies = received.lock().expect("lock").clone();
            bodies
                .iter()
                .any(|b| {
                    contains(b, "switchboard-operator")
                        && contains(b, "reconcile")
                        && contains(b, "traced-agent")
                })
                .then_some(())
        },
    )
    .await;
    let log = operator.log_text();
    assert!(
        log.contains("exporting traces over OTLP"),
        "the operator says where traces go:\n{log}"
    );
    assert!(
        log.lines().all(|l| !l.trim_start().starts_with('{')),
        "--log-format=text writes no JSON lines:\n{log}"
    );
}

#[tokio::test]
async fn without_the_flags_logs_stay_json_lines() {
    let world = World::new("op-json").await;
    let operator = world.operator("plain", &["--leader-elect=false"]).await;
    let log = eventually(Duration::from_secs(30), "the operator's log", || async {
        let log = operator.log_text();
        log.contains("starting").then_some(log)
    })
    .await;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(value.get("level").is_some(), "{line}");
    }
    assert!(
        !log.contains("exporting traces over OTLP"),
        "no endpoint, no traces:\n{log}"
    );
}
