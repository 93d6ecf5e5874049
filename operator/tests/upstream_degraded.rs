//! End-to-end: an agent whose every model is unreachable shows it in `kubectl get agd`.
//! The real runtime binary runs with the configuration the operator rendered and the
//! identity of the agent's pod (as the pod would), its primary model at a closed port
//! and its fallback behind a server that refuses the key. With no chat traffic at all
//! it reports `upstreamHealthy: false`, and the operator turns that into
//! `ModelReachable=False` and phase `Degraded`, while `Ready` stays `True` (the
//! decision documented in docs/troubleshooting.md#degraded).
//!
//! Needs the `agent-runtime` binary next to the operator's (`cargo build -p
//! agent-runtime`; `make test` builds the whole workspace first).

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crds::conditions::{AVAILABLE, DATABASE_READY, MODEL_REACHABLE, READY};
use crds::{AgentDeployment, Phase};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;
use support::{World, eventually, secret_data};

const MINUTE: Duration = Duration::from_secs(60);

/// The runtime binary built next to the operator's.
fn runtime_binary() -> PathBuf {
    let path =
        Path::new(env!("CARGO_BIN_EXE_switchboard-operator")).with_file_name("agent-runtime");
    assert!(
        path.exists(),
        "{} is missing: cargo build -p agent-runtime --bin agent-runtime",
        path.display()
    );
    path
}

/// A server that answers every request 401, as a provider does to a wrong key;
/// returns its base URL and the requests it saw (`METHOD path`).
async fn refusing_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let log = log.clone();
        async move {
            log.lock()
                .expect("lock")
                .push(format!("{} {}", request.method(), request.uri().path()));
            (
                axum::http::StatusCode::UNAUTHORIZED,
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn an_agent_whose_every_model_is_unreachable_is_degraded_and_stays_ready() {
    let runtime = runtime_binary();
    let world = World::new("op-degraded").await;
    let _operator = world.operator("solo", &["--leader-elect=false"]).await;
    let (refusing, seen) = refusing_server().await;
    let closed = switchboard_tests::ClosedPort::new();
    world
        .apply_agent(
            "support",
            json!({
                "replicas": 1,
                "model": { "baseUrl": closed.url("/v1"), "timeoutSeconds": 2 },
                "fallbacks": [{ "provider": "anthropic", "name": "claude-haiku-4-5", "baseUrl": refusing, "timeoutSeconds": 2 }],
            }),
        )
        .await;
    world
        .wait_condition("support", AVAILABLE, "True", 2 * MINUTE)
        .await;
    world
        .wait_condition("support", DATABASE_READY, "True", MINUTE)
        .await;

    // The agent's pod (on a kwok node, so it runs nothing): its runtime runs here,
    // from the configuration the operator rendered, with the pod's identity.
    let pods: Api<Pod> = world.api();
    let pod = eventually(MINUTE, "the agent's pod", || async {
        pods.list(&ListParams::default().labels("app.kubernetes.io/instance=support"))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.name_any())
    })
    .await;
    let config: ConfigMap = world.api().get("support-config").await.expect("config");
    let dir = std::env::temp_dir().join(format!("sbtest-degraded-{}", world.name()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("agent.yaml"),
        &config.data.expect("data")[operator::names::CONFIG_KEY],
    )
    .expect("config file");
    let database = secret_data(&world, "support-db").await;
    let api_key = secret_data(&world, "support-api-key").await;
    let log = dir.join("runtime.log");
    let mut child = tokio::process::Command::new(runtime)
        .arg("--config")
        .arg(dir.join("agent.yaml"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", support::free_port()))
        .current_dir(&dir)
        .env("KUBECONFIG", world.cluster.kubeconfig())
        .env("POD_NAME", &pod)
        .env("POD_NAMESPACE", world.name())
        .env(operator::names::DATABASE_URL_ENV, &database["uri"])
        .env(
            operator::names::API_KEY_ENV,
            &api_key[operator::names::API_KEY_KEY],
        )
        .env("SWITCHBOARD_HEARTBEAT_SECONDS", "1")
        .env("SWITCHBOARD_UPSTREAM_CHECK_SECONDS", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the runtime starts");

    // Its own report: ready, and no model reachable.
    let agents: Api<AgentDeployment> = world.agents();
    eventually(
        MINUTE,
        "the runtime's report with upstreamHealthy false",
        || async {
            let status = agents.get_status("support").await.ok()?.status?;
            let entry = status.runtime.into_iter().find(|r| r.name == pod)?;
            (entry.ready && !entry.upstream_healthy).then_some(())
        },
    )
    .await;

    // The operator's view: Degraded, ModelReachable=False, Ready still True.
    eventually(MINUTE, "phase Degraded", || async {
        let status = agents.get_status("support").await.ok()?.status?;
        (status.phase == Some(Phase::Degraded)).then_some(())
    })
    .await;
    assert_eq!(
        world.condition("support", MODEL_REACHABLE).await,
        Some(("False".to_owned(), "UpstreamUnreachable".to_owned()))
    );
    assert_eq!(
        world.condition("support", READY).await.map(|c| c.0),
        Some("True".to_owned()),
        "Ready stays True: database, pods and reports are fine"
    );
    let listed = world.kubectl(&["get", "agd", "support"]);
    assert!(
        listed
            .lines()
            .nth(1)
            .is_some_and(|row| row.contains("Degraded")),
        "kubectl get agd shows the phase:\n{listed}"
    );

    // Found without a chat call: the refusing server saw only models-list GETs.
    let requests = seen.lock().expect("lock").clone();
    assert!(!requests.is_empty(), "the fallback was checked");
    assert!(
        requests.iter().all(|r| r == "GET /v1/models"),
        "only reachability checks, no chat call: {requests:?}"
    );
    let _ = child.start_kill();
    let _ = child.wait().await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("model upstream unreachable") && text.contains("claude-haiku-4-5"),
        "the runtime's log names the unreachable model:\n{text}"
    );
    assert!(
        !text.contains(&api_key[operator::names::API_KEY_KEY]),
        "no key in the log"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
