//! The whole product on the local control plane, as `make demo` runs it: the operator
//! provisions two tenants, their runtime pods run as local processes with exactly the
//! configuration and secrets their pods get (see `switchboard_tools::pod_runner`), the
//! runtimes report in, `kubectl wait --for=condition=Ready` succeeds, chats through each
//! channel land in that tenant's own database and in no other, a stopped runtime turns
//! RuntimeReady false within the heartbeat window, and deleting an agent with
//! `reclaimPolicy: Delete` drops its database.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crds::{AgentDeployment, ChatChannel};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use switchboard_tests::cluster::TEST_FIELD_MANAGER;
use switchboard_tests::mock_llm::MockLlm;
use switchboard_tests::{TestCluster, eventually, free_port};
use switchboard_tools::pod_runner::{PodRunner, PodRunnerConfig};
use tokio::process::{Child, Command};

/// The workspace's built binaries (`make test` builds them before running tests).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

fn start_operator(cluster: &TestCluster, namespace: &str, log: &std::path::Path) -> Child {
    let file = std::fs::File::create(log).expect("operator log");
    Command::new(binary("switchboard-operator"))
        .args(["--namespace", namespace, "--lease-namespace", namespace])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--runtime-image", "registry.local/agent-runtime:test"])
        .env("KUBECONFIG", cluster.kubeconfig())
        .env(
            "SWITCHBOARD_DATABASE_ADMIN_URL",
            switchboard_tests::database::admin_url(),
        )
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(file.try_clone().expect("log fd")))
        .stderr(Stdio::from(file))
        .kill_on_drop(true)
        .spawn()
        .expect("the operator starts")
}

fn agent(name: &str, mock: &str) -> serde_json::Value {
    json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentDeployment",
        "metadata": { "name": name },
        "spec": {
            "model": { "provider": "openai", "name": "mock-model", "baseUrl": format!("http://{mock}/v1") },
            "replicas": 1,
            "database": { "mode": "Managed", "reclaimPolicy": "Delete" },
            "fallbackResponses": { "en": "unavailable" }
        }
    })
}

fn channel(name: &str, agent: &str, type_: &str) -> serde_json::Value {
    json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "ChatChannel",
        "metadata": { "name": name },
        "spec": { "agentRef": { "name": agent }, "type": type_ }
    })
}

/// The tenant's own database URL, from the Secret the operator wrote.
async fn tenant_database(secrets: &Api<Secret>, agent: &str) -> String {
    let secret = secrets
        .get(&format!("{agent}-db"))
        .await
        .expect("database Secret");
    let uri = secret
        .data
        .unwrap_or_default()
        .remove("uri")
        .expect("uri key");
    String::from_utf8(uri.0).expect("utf-8 uri")
}

/// Messages stored per channel in a database.
async fn messages_by_channel(url: &str) -> std::collections::BTreeMap<String, i64> {
    let mut conn = PgConnection::connect(url)
        .await
        .expect("tenant database connects");
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.channel, count(m.id) FROM sessions s JOIN messages m ON m.session_id = s.id GROUP BY s.channel",
    )
    .fetch_all(&mut conn)
    .await
    .expect("messages query");
    rows.into_iter().collect()
}

// Multi-threaded: `kubectl wait` blocks a thread while the pod runner keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_loop_two_tenants_channels_health_and_reclaim() {
    let cluster = TestCluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("full-loop").await;
    let mock = MockLlm::start().await.expect("mock upstream");
    let mock_addr = mock.addr().to_string();
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("full-loop-{}", ns.name()));
    std::fs::create_dir_all(&logs).unwrap();
    let _operator = start_operator(&cluster, ns.name(), &logs.join("operator.log"));

    let params = PatchParams::apply(TEST_FIELD_MANAGER);
    let agents: Api<AgentDeployment> = Api::namespaced(cluster.client(), ns.name());
    let channels: Api<ChatChannel> = Api::namespaced(cluster.client(), ns.name());
    for name in ["tenant-a", "tenant-b"] {
        agents
            .patch(name, &params, &Patch::Apply(agent(name, &mock_addr)))
            .await
            .unwrap();
    }
    for (name, type_) in [("a-web", "web"), ("a-openai", "openai")] {
        channels
            .patch(
                name,
                &params,
                &Patch::Apply(channel(name, "tenant-a", type_)),
            )
            .await
            .unwrap();
    }

    let runner = PodRunner::start(PodRunnerConfig {
        kubeconfig: cluster.kubeconfig().to_path_buf(),
        namespace: Some(ns.name().to_owned()),
        selector: "app.kubernetes.io/name=switchboard-agent".to_owned(),
        binary: binary("agent-runtime"),
        workdir: logs.join("pods"),
        extra_env: vec![
            ("RUST_LOG".to_owned(), "info".to_owned()),
            ("SWITCHBOARD_HEARTBEAT_SECONDS".to_owned(), "2".to_owned()),
        ],
    })
    .await
    .expect("pod runner");

    // The runtimes report in, and the agents become Ready as kubectl sees it.
    let waited = cluster.kubectl([
        "wait",
        "--for=condition=Ready",
        "agd/tenant-a",
        "agd/tenant-b",
        "-n",
        ns.name(),
        "--timeout=120s",
    ]);
    assert!(
        waited.status.success(),
        "agents not Ready: {}\nlogs in {}; pod runner errors: {:?}",
        String::from_utf8_lossy(&waited.stderr),
        logs.display(),
        runner.errors()
    );
    let a = agents.get("tenant-a").await.unwrap();
    let reports = &a.status.as_ref().unwrap().runtime;
    assert_eq!(reports.len(), 1, "one runtime pod reports: {reports:?}");
    assert!(reports[0].ready && reports[0].upstream_healthy);

    // Chat through each of tenant A's channels, at the channel's published path on the
    // tenant's pod (run locally).
    let pod = runner
        .wait_for(ns.name(), 2, Duration::from_secs(10))
        .await
        .into_iter()
        .find(|p| p.name.starts_with("tenant-a-"))
        .expect("tenant A's pod runs");
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), ns.name());
    let key_secret = secrets.get("tenant-a-api-key").await.unwrap();
    let key = String::from_utf8(key_secret.data.unwrap()["api-key"].0.clone()).unwrap();
    let http = reqwest::Client::new();
    for name in ["a-web", "a-openai"] {
        let chc = eventually(Duration::from_secs(30), "channel endpoint", || async {
            let c = channels.get(name).await.ok()?;
            c.status?.endpoint
        })
        .await;
        let path = chc
            .split_once("/channels/")
            .map(|(_, p)| p)
            .expect("endpoint has a channel path");
        let url = format!("http://{}/channels/{path}/v1/chat/completions", pod.addr);
        let resp = http
            .post(&url)
            .bearer_auth(&key)
            .json(&json!({ "model": "tenant-a", "user": "alice", "messages": [{ "role": "user", "content": format!("hello via {name}") }] }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(status.is_success(), "{url}: {status} {body}");
        assert!(body.contains(&format!("hello via {name}")), "{body}");
    }

    // Each channel's messages are in tenant A's database, none in tenant B's.
    let a_counts = messages_by_channel(&tenant_database(&secrets, "tenant-a").await).await;
    assert_eq!(
        a_counts.get("a-web"),
        Some(&2),
        "user + assistant via a-web: {a_counts:?}"
    );
    assert_eq!(
        a_counts.get("a-openai"),
        Some(&2),
        "user + assistant via a-openai: {a_counts:?}"
    );
    let b_counts = messages_by_channel(&tenant_database(&secrets, "tenant-b").await).await;
    assert!(
        b_counts.is_empty(),
        "tenant B's database holds tenant A's chats: {b_counts:?}"
    );

    // Stopping tenant A's runtime turns RuntimeReady False within the heartbeat window.
    assert!(
        runner.kill(ns.name(), &pod.name),
        "the runtime process was running"
    );
    let window = Duration::from_secs(crds::RUNTIME_STALE_AFTER_SECONDS + 20);
    eventually(
        window,
        "RuntimeReady=False after the runtime stopped",
        || async {
            let a = agents.get("tenant-a").await.ok()?;
            let c = crds::condition::find_condition(
                &a.status?.conditions,
                crds::conditions::RUNTIME_READY,
            )?
            .clone();
            (c.status == "False").then_some(())
        },
    )
    .await;

    // Deleting tenant A (reclaimPolicy Delete) drops its database.
    let a_db = tenant_database(&secrets, "tenant-a").await;
    let dbname = a_db
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    agents
        .delete("tenant-a", &DeleteParams::default())
        .await
        .unwrap();
    let admin_url = switchboard_tests::database::admin_url();
    eventually(
        Duration::from_secs(60),
        "tenant A's database dropped",
        || {
            let (admin_url, dbname) = (admin_url.clone(), dbname.clone());
            async move {
                let mut admin = PgConnection::connect(&admin_url).await.ok()?;
                let left: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
                        .bind(dbname)
                        .fetch_one(&mut admin)
                        .await
                        .ok()?;
                (left == 0).then_some(())
            }
        },
    )
    .await;

    // Tenant B is still served and still Ready.
    let b = agents.get("tenant-b").await.unwrap();
    assert!(crds::condition::is_true(
        &b.status.unwrap().conditions,
        crds::conditions::READY
    ));
    agents
        .delete("tenant-b", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "tenant B deleted", || async {
        agents
            .get_opt("tenant-b")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    runner.shutdown().await;
}
