//! Agents as tools on the local cluster's real node: AgentDeployment `caller` lists
//! AgentDeployment `helper` in `spec.tools`; the operator provisions the key the
//! caller calls with (Secret `caller-calls-helper`, an env var in the caller's pods,
//! a key file in the helper's); both run as real pods; a chat with the caller, sent
//! to its Service, makes the model ask `ask_helper`, the caller's runtime calls the
//! helper through its Service name (resolved by the cluster's DNS), and the helper's
//! answer goes back to the caller's model. Each tenant's database shows its side: the
//! caller's stores the tool execution, the helper's a session of channel `agents` for
//! user `agent:caller`. Also: the cluster's DNS answers Service names and refuses
//! every other name at once (nothing is forwarded off the machine).

use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use crds::{AgentDeployment, ChatChannel};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use switchboard_tests::cluster::{TEST_FIELD_MANAGER, for_pods, node_ip};
use switchboard_tests::mock_llm::MockLlm;
use switchboard_tests::{TestCluster, eventually};

fn agent(name: &str, mock: &str, tools: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentDeployment",
        "metadata": { "name": name },
        "spec": {
            "model": { "provider": "openai", "name": "mock-model", "baseUrl": format!("http://{mock}/v1") },
            "systemPrompt": format!("You are {name}."),
            "replicas": 1,
            "database": { "mode": "Managed", "reclaimPolicy": "Delete" },
            "tools": tools
        }
    })
}

async fn secret_value(secrets: &Api<Secret>, name: &str, key: &str) -> String {
    let secret = secrets.get(name).await.expect("Secret");
    let value = secret
        .data
        .unwrap_or_default()
        .remove(key)
        .unwrap_or_else(|| panic!("{name} has no {key}"));
    String::from_utf8(value.0).expect("utf-8")
}

/// One DNS question (type A) to the node's DNS over UDP: the answer's rcode and
/// its A records.
fn resolve(name: &str) -> (u8, Vec<Ipv4Addr>) {
    let mut query = vec![0x5b, 0x0d, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let socket = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket
        .send_to(&query, (node_ip().as_str(), 53))
        .expect("query sent");
    let mut buf = [0u8; 1500];
    let (n, _) = socket.recv_from(&mut buf).expect("the node's DNS answers");
    let answer = &buf[..n];
    assert_eq!(&answer[..2], &query[..2], "the answer's id");
    let rcode = answer[3] & 0x0f;
    let count = u16::from_be_bytes([answer[6], answer[7]]);
    // Skip the question (echoed as sent), then read each record.
    let mut at = query.len();
    let mut ips = Vec::new();
    for _ in 0..count {
        // A name: a pointer (2 bytes) or labels ending in 0.
        if answer[at] & 0xc0 == 0xc0 {
            at += 2;
        } else {
            while answer[at] != 0 {
                at += answer[at] as usize + 1;
            }
            at += 1;
        }
        let kind = u16::from_be_bytes([answer[at], answer[at + 1]]);
        let len = u16::from_be_bytes([answer[at + 8], answer[at + 9]]) as usize;
        at += 10;
        if kind == 1 && len == 4 {
            ips.push(Ipv4Addr::new(
                answer[at],
                answer[at + 1],
                answer[at + 2],
                answer[at + 3],
            ));
        }
        at += len;
    }
    (rcode, ips)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_asks_another_through_its_service() {
    let cluster = TestCluster::connect().await;
    cluster.install_crds().await;
    let ns = cluster.namespace("agent-tools").await;
    let mock = MockLlm::start().await.expect("mock upstream");
    let mock_addr = for_pods(mock.addr());
    let logs =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("agent-tools-{}", ns.name()));
    std::fs::create_dir_all(&logs).expect("log dir");
    let _operator = cluster.start_operator(ns.name(), &logs.join("operator.log"));

    let params = PatchParams::apply(TEST_FIELD_MANAGER);
    let agents: Api<AgentDeployment> = Api::namespaced(cluster.client(), ns.name());
    let services: Api<Service> = Api::namespaced(cluster.client(), ns.name());
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), ns.name());
    agents
        .patch(
            "helper",
            &params,
            &Patch::Apply(agent("helper", &mock_addr, json!([]))),
        )
        .await
        .expect("helper applied");
    let tools =
        json!([{ "agent": "helper", "description": "Answers questions about the weather." }]);
    agents
        .patch(
            "caller",
            &params,
            &Patch::Apply(agent("caller", &mock_addr, tools)),
        )
        .await
        .expect("caller applied");

    let channels: Api<ChatChannel> = Api::namespaced(cluster.client(), ns.name());
    let channel = json!({
        "apiVersion": "switchboard.dev/v1alpha1", "kind": "ChatChannel",
        "metadata": { "name": "caller-api" },
        "spec": { "agentRef": { "name": "caller" }, "type": "openai" }
    });
    channels
        .patch("caller-api", &params, &Patch::Apply(channel))
        .await
        .expect("channel applied");

    cluster.wait_agents_ready(ns.name(), &["caller", "helper"], &logs.join("operator.log"));
    let caller = agents.get("caller").await.expect("caller");
    let conditions = caller.status.expect("status").conditions;
    assert!(
        crds::condition::is_true(&conditions, crds::conditions::TOOLS_READY),
        "{conditions:?}"
    );
    // The key the caller calls with exists (its value is never printed).
    let call_key = secret_value(&secrets, "caller-calls-helper", "api-key").await;
    assert!(call_key.len() >= 32);

    // The cluster's DNS: Service names resolve; any other name is NXDOMAIN.
    let helper_ip = services
        .get("helper")
        .await
        .expect("helper Service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("ClusterIP");
    let (rcode, ips) = resolve(&format!("helper.{}.svc.cluster.local", ns.name()));
    assert_eq!(rcode, 0);
    assert_eq!(
        ips,
        [helper_ip.parse::<Ipv4Addr>().expect("IPv4")],
        "helper's Service"
    );
    let (rcode, ips) = resolve("example.com");
    assert_eq!((rcode, ips.len()), (3, 0), "NXDOMAIN, nothing forwarded");

    // A chat with the caller, through its Service: its model asks the helper.
    let caller_ip = services
        .get("caller")
        .await
        .expect("caller Service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("ClusterIP");
    let key = secret_value(&secrets, "caller-api-key", "api-key").await;
    let http = reqwest::Client::new();
    let endpoint = eventually(
        Duration::from_secs(30),
        "the channel's endpoint",
        || async { channels.get("caller-api").await.ok()?.status?.endpoint },
    )
    .await;
    let path = endpoint
        .split_once("/channels/")
        .map(|(_, p)| p.to_owned())
        .expect("a channel path");
    let url = format!("http://{caller_ip}:8080/channels/{path}/v1/chat/completions");
    let body = json!({ "model": "caller", "user": "alice", "messages": [{ "role": "user",
        "content": r#"What is the weather? [[mock: tools=ask_helper; args={"message":"weather in Oslo"}]]"# }] });
    let answer = eventually(Duration::from_secs(60), "the caller to answer", || async {
        let resp = http
            .post(&url)
            .bearer_auth(&key)
            .timeout(Duration::from_secs(30))
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.ok()?;
        assert!(status.is_success(), "{status} {body}");
        body["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    assert_eq!(answer, "Tool results: Echo: weather in Oslo");

    // The caller's database: the execution, answered by the helper.
    let caller_db = secret_value(&secrets, "caller-db", "uri").await;
    let mut conn = PgConnection::connect(&caller_db)
        .await
        .expect("caller's database");
    let (tool, status, output): (String, String, String) =
        sqlx::query_as("SELECT tool, status, output FROM tool_executions")
            .fetch_one(&mut conn)
            .await
            .expect("one execution");
    assert_eq!(
        (tool.as_str(), status.as_str(), output.as_str()),
        ("ask_helper", "ok", "Echo: weather in Oslo")
    );
    // The helper's database: the caller's question, in a session of its own.
    let helper_db = secret_value(&secrets, "helper-db", "uri").await;
    let mut conn = PgConnection::connect(&helper_db)
        .await
        .expect("helper's database");
    let sessions: Vec<(String, String)> = sqlx::query_as("SELECT channel, user_id FROM sessions")
        .fetch_all(&mut conn)
        .await
        .expect("sessions");
    // (Stored users are scoped by channel: `<channel>\u{1f}<user>`.)
    assert_eq!(
        sessions,
        [("agents".to_owned(), "agents\u{1f}agent:caller".to_owned())]
    );
    let asked: String =
        sqlx::query_scalar("SELECT content FROM messages WHERE role = 'user' ORDER BY seq LIMIT 1")
            .fetch_one(&mut conn)
            .await
            .expect("the question");
    assert_eq!(asked, "weather in Oslo");
}
