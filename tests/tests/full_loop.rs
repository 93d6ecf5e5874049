//! The whole product on the local cluster's real node, as `make demo` runs it: the
//! operator provisions two tenants in a namespace that enforces PodSecurity
//! `restricted`; their runtime pods run as containers from the locally built image
//! (admitted by that policy), report status with the ServiceAccount token the kubelet
//! projects, and become Service endpoints only once their readiness probe passes;
//! `kubectl wait --for=condition=Ready` succeeds; chats through each channel, sent to
//! the tenant's Service, land in that tenant's own database and in no other; `kubectl
//! logs` shows the runtime's JSON lines; changing the system prompt rolls the pods; an
//! agent whose runtime is gone stops being RuntimeReady within the heartbeat window; the pod
//! that replaces a deleted one continues the same conversation from the database; and
//! deleting an agent with `reclaimPolicy: Delete` drops its database.
//!
//! Pods reach the host's loopback services (Postgres, the mock upstream) at the node
//! IP; see `hack/node-lib.sh`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use crds::{AgentDeployment, ChatChannel};
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use switchboard_tests::cluster::{TEST_FIELD_MANAGER, for_pods, project_image};
use switchboard_tests::mock_llm::MockLlm;
use switchboard_tests::{TestCluster, eventually};

const MINUTE: Duration = Duration::from_secs(60);

fn agent(name: &str, mock: &str, prompt: &str) -> serde_json::Value {
    json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentDeployment",
        "metadata": { "name": name },
        "spec": {
            "model": { "provider": "openai", "name": "mock-model", "baseUrl": format!("http://{mock}/v1") },
            "systemPrompt": prompt,
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

async fn sessions_of_channel(url: &str, channel: &str) -> i64 {
    let mut conn = PgConnection::connect(url)
        .await
        .expect("tenant database connects");
    sqlx::query_scalar("SELECT count(*) FROM sessions WHERE channel = $1")
        .bind(channel)
        .fetch_one(&mut conn)
        .await
        .expect("sessions query")
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The agent's live (not terminating) pods.
async fn agent_pods(pods: &Api<Pod>, agent: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={agent}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The one Ready pod of `agent` other than `not`, once there is exactly one live pod.
async fn the_ready_pod(pods: &Api<Pod>, agent: &str, not: Option<&str>) -> Pod {
    eventually(2 * MINUTE, &format!("one Ready pod of {agent}"), || async {
        let live = agent_pods(pods, agent).await;
        let [pod] = live.as_slice() else { return None };
        (is_ready(pod) && pod.metadata.name.as_deref() != not).then(|| pod.clone())
    })
    .await
}

/// Pod names whose endpoint is Ready in the Service's EndpointSlices.
async fn ready_endpoints(slices: &Api<EndpointSlice>, service: &str) -> BTreeSet<String> {
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.into_iter()
        .flat_map(|s| s.endpoints.unwrap_or_default())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .filter_map(|e| e.target_ref.and_then(|r| r.name))
        .collect()
}

/// Waits until `pod` is Ready and a Ready endpoint of `service`, checking on the way
/// that the Service never lists it as ready while its readiness probe has not passed.
async fn probe_gates_endpoint(
    pods: &Api<Pod>,
    slices: &Api<EndpointSlice>,
    service: &str,
    pod: &str,
) {
    eventually(2 * MINUTE, &format!("{pod} a ready endpoint"), || async {
        // Endpoints first: a Ready endpoint read before the pod means the pod was Ready.
        let endpoints = ready_endpoints(slices, service).await;
        let current = pods.get(pod).await.ok()?;
        let listed = endpoints.contains(pod);
        assert!(
            !listed || is_ready(&current),
            "{pod} is a ready endpoint of {service} before its readiness probe passed"
        );
        (listed && is_ready(&current)).then_some(())
    })
    .await;
}

/// One chat turn at `url`; returns the assistant's answer.
async fn chat(http: &reqwest::Client, url: &str, key: &str, messages: serde_json::Value) -> String {
    let body = json!({ "model": "tenant-a", "user": "alice", "messages": messages });
    // kube-proxy programs a Service's new endpoints a moment after the EndpointSlice
    // lists them: until then the connection is refused.
    let resp = eventually(
        Duration::from_secs(30),
        &format!("{url} to answer"),
        || async {
            // Each try bounded: a pooled connection to a pod that is gone (after a
            // rollout) gets no answer at all; the next try opens a new one.
            http.post(url)
                .bearer_auth(key)
                .timeout(Duration::from_secs(10))
                .json(&body)
                .send()
                .await
                .ok()
        },
    )
    .await;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.expect("a JSON answer");
    assert!(status.is_success(), "{url}: {status} {body}");
    body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no answer in {body}"))
        .to_owned()
}

/// Uncordons the real node again, however the test ends.
struct Uncordon<'a>(&'a TestCluster, String);

impl Drop for Uncordon<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(["uncordon", &self.1]);
    }
}

// Multi-threaded: `kubectl wait` blocks a thread while other tasks keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_loop_on_real_pods() {
    let cluster = TestCluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("full-loop").await;
    cluster.kubectl_ok([
        "label",
        "namespace",
        ns.name(),
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    ]);
    let mock = MockLlm::start().await.expect("mock upstream");
    let mock_addr = for_pods(mock.addr());
    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("full-loop-{}", ns.name()));
    std::fs::create_dir_all(&logs).unwrap();
    let _operator = cluster.start_operator(ns.name(), &logs.join("operator.log"));

    let params = PatchParams::apply(TEST_FIELD_MANAGER);
    let agents: Api<AgentDeployment> = Api::namespaced(cluster.client(), ns.name());
    let channels: Api<ChatChannel> = Api::namespaced(cluster.client(), ns.name());
    let pods: Api<Pod> = Api::namespaced(cluster.client(), ns.name());
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.client(), ns.name());
    let services: Api<Service> = Api::namespaced(cluster.client(), ns.name());
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), ns.name());
    for name in ["tenant-a", "tenant-b"] {
        agents
            .patch(
                name,
                &params,
                &Patch::Apply(agent(name, &mock_addr, "You are tenant one.")),
            )
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

    // The restricted namespace refuses what the profile forbids, and admitted the
    // runtime pods (they run, below).
    let privileged: Pod = serde_json::from_value(json!({
        "metadata": { "name": "privileged" },
        "spec": { "containers": [{
            "name": "c", "image": project_image("SWITCHBOARD_AGENT_RUNTIME_IMAGE"),
            "securityContext": { "privileged": true }
        }]}
    }))
    .unwrap();
    let refused = pods
        .create(&PostParams::default(), &privileged)
        .await
        .expect_err("a privileged pod is refused")
        .to_string();
    assert!(refused.contains("violates PodSecurity"), "{refused}");

    // The runtimes report in (with their projected ServiceAccount tokens), and the
    // agents become Ready as kubectl sees it.
    cluster.wait_agents_ready(
        ns.name(),
        &["tenant-a", "tenant-b"],
        &logs.join("operator.log"),
    );
    let a = agents.get("tenant-a").await.unwrap();
    let reports = &a.status.as_ref().unwrap().runtime;
    assert_eq!(reports.len(), 1, "one runtime pod reports: {reports:?}");
    assert!(reports[0].ready && reports[0].upstream_healthy);

    // Tenant B stays idle: its runtime looks at its health every 10 s but writes its
    // report only when it changed, and repeats an unchanged one once a minute. Its
    // report times, sampled while tenant A chats: at most one refresh in 25 s (every
    // look wrote one before, 3 or more).
    let idle_b = {
        let agents = agents.clone();
        tokio::spawn(async move {
            let start = std::time::Instant::now();
            let mut times = BTreeSet::new();
            while start.elapsed() < Duration::from_secs(25) {
                let report = agents
                    .get_status("tenant-b")
                    .await
                    .ok()
                    .and_then(|b| b.status?.runtime.into_iter().next());
                if let Some(report) = report {
                    times.insert(report.last_heartbeat.0.as_second());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            times
        })
    };

    // A real container on the real node, probed, and a Ready endpoint of its Service.
    let pod = the_ready_pod(&pods, "tenant-a", None).await;
    let pod_name = pod.metadata.name.clone().unwrap();
    let spec = pod.spec.clone().unwrap();
    assert!(
        !spec
            .node_name
            .clone()
            .unwrap_or_default()
            .starts_with("kwok-"),
        "{pod_name} runs on {:?}",
        spec.node_name
    );
    let container = &spec.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some(project_image("SWITCHBOARD_AGENT_RUNTIME_IMAGE").as_str())
    );
    assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
    assert_eq!(reports[0].name, pod_name, "the report names the pod");
    probe_gates_endpoint(&pods, &slices, "tenant-a", &pod_name).await;

    // Chat through each of tenant A's channels, at the channel's published path on the
    // tenant's Service (its ClusterIP, which kube-proxy serves on this machine).
    let svc = services.get("tenant-a").await.unwrap();
    let cluster_ip = svc.spec.unwrap().cluster_ip.unwrap();
    let key_secret = secrets.get("tenant-a-api-key").await.unwrap();
    let key = String::from_utf8(key_secret.data.unwrap()["api-key"].0.clone()).unwrap();
    let http = reqwest::Client::new();
    let mut urls = std::collections::BTreeMap::new();
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
        let url = format!("http://{cluster_ip}:8080/channels/{path}/v1/chat/completions");
        let answer = chat(
            &http,
            &url,
            &key,
            json!([{ "role": "user", "content": format!("hello via {name}") }]),
        )
        .await;
        assert!(answer.contains(&format!("hello via {name}")), "{answer}");
        urls.insert(name, (url, answer));
    }
    let system_prompts = |mock: &MockLlm| -> Vec<String> {
        mock.requests()
            .iter()
            .filter_map(|r| {
                let first = &r.body["messages"][0];
                (first["role"] == "system")
                    .then(|| first["content"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    };
    assert!(
        system_prompts(&mock)
            .iter()
            .all(|p| p.contains("You are tenant one.")),
        "{:?}",
        system_prompts(&mock)
    );

    // Each channel's messages are in tenant A's database, none in tenant B's.
    let a_db = tenant_database(&secrets, "tenant-a").await;
    let a_counts = messages_by_channel(&a_db).await;
    assert_eq!(a_counts.get("a-web"), Some(&2), "{a_counts:?}");
    assert_eq!(a_counts.get("a-openai"), Some(&2), "{a_counts:?}");
    let b_counts = messages_by_channel(&tenant_database(&secrets, "tenant-b").await).await;
    assert!(
        b_counts.is_empty(),
        "tenant B's database holds tenant A's chats: {b_counts:?}"
    );

    // `kubectl logs` shows the runtime's log as JSON lines.
    let log = cluster.kubectl_ok(["logs", "-n", ns.name(), &pod_name]);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
    }

    // Changing the system prompt rolls the pods: a new pod, probed into the Service,
    // and the model hears the new prompt.
    agents
        .patch(
            "tenant-a",
            &params,
            &Patch::Apply(agent(
                "tenant-a",
                &mock_addr,
                "You are tenant one, version two.",
            )),
        )
        .await
        .unwrap();
    let rolled = the_ready_pod(&pods, "tenant-a", Some(&pod_name)).await;
    let rolled_name = rolled.metadata.name.clone().unwrap();
    probe_gates_endpoint(&pods, &slices, "tenant-a", &rolled_name).await;
    // Until the old pod leaves the Service, a chat may land on either pod (one run
    // of make test did, and the model heard the old prompt); and a pooled
    // connection would still reach the old pod while it drains: a new client.
    eventually(
        2 * MINUTE,
        &format!("{pod_name} out of the Service"),
        || async {
            (!ready_endpoints(&slices, "tenant-a")
                .await
                .contains(&pod_name))
            .then_some(())
        },
    )
    .await;
    let http = reqwest::Client::new();
    let (web_url, _) = &urls["a-web"];
    chat(
        &http,
        web_url,
        &key,
        json!([{ "role": "user", "content": "after the rollout" }]),
    )
    .await;
    let prompts = system_prompts(&mock);
    assert!(
        prompts.last().is_some_and(|p| p.contains("version two")),
        "{prompts:?}"
    );

    let times = idle_b.await.expect("tenant B's sampler");
    assert!(
        !times.is_empty() && times.len() <= 2,
        "tenant B's idle runtime wrote reports at {times:?} within 25 s"
    );

    // With the node cordoned, deleting the pod leaves tenant A without a runtime: the
    // replacement stays Pending (the kwok nodes are tainted) and RuntimeReady stops
    // being True (False from the runtime's last report and its pod no longer Ready,
    // then Unknown: no pod left to report; a runtime that stops reporting turns it
    // False too, see the operator's tests).
    let node = rolled.spec.and_then(|s| s.node_name).expect("scheduled");
    let uncordon = Uncordon(&cluster, node.clone());
    cluster.kubectl_ok(["cordon", &node]);
    pods.delete(&rolled_name, &DeleteParams::default())
        .await
        .unwrap();
    let window = Duration::from_secs(60);
    eventually(
        window,
        "RuntimeReady not True after the runtime went away",
        || async {
            let a = agents.get("tenant-a").await.ok()?;
            let c = crds::condition::find_condition(
                &a.status?.conditions,
                crds::conditions::RUNTIME_READY,
            )?
            .clone();
            (c.status != "True").then_some(())
        },
    )
    .await;
    let a = agents.get("tenant-a").await.unwrap();
    assert!(!crds::condition::is_true(
        &a.status.unwrap().conditions,
        crds::conditions::READY
    ));

    // The successor continues the same conversation from the database: the client
    // resends the history, and the turn lands in the same session.
    drop(uncordon);
    let successor = the_ready_pod(&pods, "tenant-a", Some(&rolled_name)).await;
    let successor_name = successor.metadata.name.clone().unwrap();
    probe_gates_endpoint(&pods, &slices, "tenant-a", &successor_name).await;
    let (openai_url, first_answer) = &urls["a-openai"];
    chat(
        &http,
        openai_url,
        &key,
        json!([
            { "role": "user", "content": "hello via a-openai" },
            { "role": "assistant", "content": first_answer },
            { "role": "user", "content": "still there?" }
        ]),
    )
    .await;
    let a_counts = messages_by_channel(&a_db).await;
    assert_eq!(a_counts.get("a-openai"), Some(&4), "{a_counts:?}");
    assert_eq!(sessions_of_channel(&a_db, "a-openai").await, 1);

    // Deleting tenant A (reclaimPolicy Delete) drops its database.
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
    eventually(MINUTE, "tenant A's database dropped", || {
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
    })
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
    eventually(MINUTE, "tenant B deleted", || async {
        agents
            .get_opt("tenant-b")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
