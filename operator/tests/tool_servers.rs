//! End-to-end: ToolServers and `spec.tools`. A live MCP server (the official Python
//! SDK's FastMCP, tests/mcp/server.py, behind a bearer token) is listed into its
//! ToolServer's status; one at a dead port and one called with the wrong token say
//! why in Ready False, without the token. An agent naming both gets the live source
//! rendered into its runtime configuration and a ToolsReady condition naming the
//! dead one; an agent naming another agent gets a key Secret whose value reaches the
//! caller's pods as an env var and the callee's as the file `agent.<caller>`, and
//! loses both when the entry goes. A header Secret fixed or created after the
//! server is acted on at once (not at the 5-minute re-list): the server turns Ready,
//! the agent's ToolsReady follows and its pods roll to the new value. No token ever
//! shows in a status, an event or the operator's log. Needs `SWITCHBOARD_PYTHON` with
//! `mcp` installed (hack/python-env.sh makes it).

mod support;

use std::process::Stdio;
use std::time::Duration;

use crds::runtime_config::{RuntimeConfig, ToolSourceKind};
use crds::{ToolServer, condition::find_condition};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{World, eventually, free_port};
use switchboard_tests::cluster::TEST_FIELD_MANAGER;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TOKEN: &str = "tok-e2e-5ecret-value";
const WAIT: Duration = Duration::from_secs(90);
/// How long a Secret change may take to show: well under the 5-minute re-list (and
/// a server refused for its headers is not retried with backoff meanwhile).
const SECRET_PICKUP: Duration = Duration::from_secs(45);

/// The FastMCP test server on a free loopback port, stopped when dropped.
struct McpServer {
    _child: Child,
    url: String,
}

async fn mcp_server(token: &str) -> McpServer {
    let python = std::env::var("SWITCHBOARD_PYTHON").unwrap_or_else(|_| {
        panic!(
            "SWITCHBOARD_PYTHON must name a Python with `mcp` installed: run \
             hack/python-env.sh and export SWITCHBOARD_PYTHON=$PWD/.switchboard/venv/bin/python"
        )
    });
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/mcp/server.py");
    let mut child = Command::new(&python)
        .args([script, &port.to_string(), "--token", token])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("mcp server ready on ") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(ready, Ok(true), "the MCP test server did not start");
    McpServer {
        _child: child,
        url: format!("http://127.0.0.1:{port}/mcp"),
    }
}

async fn tool_server(world: &World, name: &str, url: &str, secret_key: &str) {
    tool_server_reading(world, name, url, "tools-token", secret_key).await;
}

async fn tool_server_reading(world: &World, name: &str, url: &str, secret: &str, key: &str) {
    world
        .apply::<ToolServer>(json!({
            "apiVersion": "switchboard.dev/v1alpha1", "kind": "ToolServer",
            "metadata": { "name": name },
            "spec": {
                "url": url,
                "timeoutSeconds": 5,
                "headers": [{ "name": "Authorization",
                              "valueFrom": { "name": secret, "key": key } }],
            },
        }))
        .await;
}

/// The ToolServer's Ready condition as (status, reason, message), once it has one.
async fn ready(world: &World, name: &str) -> Option<(String, String, String)> {
    let server = world.api::<ToolServer>().get_opt(name).await.ok()??;
    let c = find_condition(&server.status?.conditions, "Ready")?.clone();
    Some((c.status, c.reason, c.message))
}

async fn wait_ready(world: &World, name: &str, status: &str) -> (String, String, String) {
    wait_ready_within(world, name, status, WAIT).await
}

async fn wait_ready_within(
    world: &World,
    name: &str,
    status: &str,
    within: Duration,
) -> (String, String, String) {
    eventually(
        within,
        &format!("ToolServer {name} Ready={status}"),
        || async { ready(world, name).await.filter(|r| r.0 == status) },
    )
    .await
}

async fn runtime_config(world: &World, agent: &str) -> Option<RuntimeConfig> {
    let map = world
        .api::<ConfigMap>()
        .get_opt(&format!("{agent}-config"))
        .await
        .ok()??;
    RuntimeConfig::from_yaml(map.data?.get("agent.yaml")?).ok()
}

#[tokio::test]
async fn tool_servers_are_listed_and_agents_get_their_tools_and_keys() {
    let world = World::new("op-tools").await;
    let server = mcp_server(TOKEN).await;
    let operator = world.operator("solo", &["--leader-elect=false"]).await;
    world
        .apply::<Secret>(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "tools-token" },
            "stringData": { "good": format!("Bearer {TOKEN}"), "bad": "Bearer wr0ng-t0ken-value" },
        }))
        .await;
    tool_server(&world, "live", &server.url, "good").await;
    let dead = switchboard_tests::ClosedPort::new();
    tool_server(&world, "dead", &dead.url("/mcp"), "good").await;
    tool_server(&world, "wrong-token", &server.url, "bad").await;

    // The live server is listed with its tools.
    let (_, reason, message) = wait_ready(&world, "live", "True").await;
    assert_eq!(reason, "Listed", "{message}");
    let live = world.api::<ToolServer>().get("live").await.unwrap();
    let status = live.status.unwrap();
    let names: Vec<&str> = status.tools.iter().map(|t| t.name.as_str()).collect();
    for tool in ["add", "echo", "slow", "fail", "delete_file"] {
        assert!(names.contains(&tool), "{tool} not listed: {names:?}");
    }
    assert_eq!(status.tool_count, Some(names.len() as i32));
    assert!(status.last_listed_time.is_some());
    assert_eq!(status.observed_generation, live.metadata.generation);
    let add = status.tools.iter().find(|t| t.name == "add").unwrap();
    assert_eq!(add.description.as_deref(), Some("Add two integers."));

    // The dead one and the refused one say why, without the token.
    let (_, reason, message) = wait_ready(&world, "dead", "False").await;
    assert_eq!(reason, "Unreachable", "{message}");
    let (_, reason, message) = wait_ready(&world, "wrong-token", "False").await;
    assert_eq!(reason, "Unauthorized", "{message}");
    assert!(!message.contains("wr0ng-t0ken-value"), "{message}");
    for shown in [
        world.kubectl(&["get", "toolservers", "-o", "yaml"]),
        world.kubectl(&["get", "events", "-o", "yaml"]),
    ] {
        assert!(
            !shown.contains(TOKEN) && !shown.contains("wr0ng-t0ken"),
            "{shown}"
        );
    }

    // Two agents: `caller` uses both servers and asks `callee`.
    world.apply_agent("callee", json!({ "replicas": 1 })).await;
    world
        .apply_agent(
            "caller",
            json!({
                "replicas": 1,
                "tools": [
                    { "toolServer": "live", "tools": ["add", "echo"] },
                    { "toolServer": "dead" },
                    { "agent": "callee", "description": "Knows everything about the callee." },
                ],
                "toolPolicy": { "requireApproval": ["delete_file"], "maxSteps": 4 },
            }),
        )
        .await;
    let config = eventually(WAIT, "the caller's tools rendered", || async {
        runtime_config(&world, "caller")
            .await
            .filter(|c| c.tools.sources.len() == 3)
    })
    .await;
    let tools = &config.tools;
    let live_source = tools.sources.iter().find(|s| s.name == "live").unwrap();
    assert_eq!(live_source.kind, ToolSourceKind::Mcp);
    assert_eq!(live_source.url, server.url);
    assert_eq!(live_source.tools, ["add", "echo"]);
    assert_eq!(live_source.timeout_seconds, 5);
    assert_eq!(live_source.headers[0].name, "Authorization");
    let header_env = live_source.headers[0].value_env.clone();
    let agent_source = tools.sources.iter().find(|s| s.name == "callee").unwrap();
    assert_eq!(agent_source.kind, ToolSourceKind::Agent);
    assert!(
        agent_source
            .url
            .starts_with(&format!("http://callee.{}.svc", world.name())),
        "{}",
        agent_source.url
    );
    let key_env = agent_source.key_env.clone().expect("a key env");
    assert_eq!(tools.require_approval, ["delete_file"]);
    assert_eq!(tools.max_steps, 4);

    // ToolsReady names the dead server, not the live one; the agent is not held back.
    let condition = eventually(WAIT, "ToolsReady False naming dead", || async {
        let agent = world.agents().get_opt("caller").await.ok()??;
        let c = find_condition(&agent.status?.conditions, "ToolsReady")?.clone();
        (c.status == "False" && c.message.contains("dead")).then_some(c)
    })
    .await;
    assert!(
        !condition.message.contains("toolServer live"),
        "{}",
        condition.message
    );

    // The key: one Secret owned by the caller, env in the caller, file in the callee.
    let key_secret = "caller-calls-callee";
    let secret = eventually(WAIT, "the agent-call key Secret", || async {
        world.api::<Secret>().get_opt(key_secret).await.ok()?
    })
    .await;
    let key = String::from_utf8(secret.data.unwrap()["api-key"].0.clone()).unwrap();
    assert!(key.len() >= 24, "a generated key");
    assert_eq!(
        secret.metadata.owner_references.unwrap()[0].name,
        "caller",
        "owned by the caller"
    );
    assert!(
        !operator.log_text().contains(&key),
        "the key is never logged"
    );
    assert!(
        !operator.log_text().contains(TOKEN),
        "the token is never logged"
    );
    let caller_env = eventually(WAIT, "the caller's tool env", || async {
        let d: Deployment = world.api().get_opt("caller").await.ok()??;
        let env = d.spec.template.spec?.containers[0].env.clone()?;
        let key_ref = env
            .iter()
            .find(|e| e.name == key_env)?
            .value_from
            .clone()?
            .secret_key_ref?;
        let header_ref = env
            .iter()
            .find(|e| e.name == header_env)?
            .value_from
            .clone()?
            .secret_key_ref?;
        Some((key_ref, header_ref))
    })
    .await;
    assert_eq!(
        (caller_env.0.name.as_str(), caller_env.0.key.as_str()),
        (key_secret, "api-key")
    );
    assert_eq!(
        (caller_env.1.name.as_str(), caller_env.1.key.as_str()),
        ("tools-token", "good")
    );
    let projected = |d: Deployment| -> Option<(String, String)> {
        let volumes = d.spec.template.spec?.volumes?;
        let keys = volumes.into_iter().find(|v| v.name == "keys")?;
        keys.projected?.sources?.into_iter().find_map(|s| {
            let s = s.secret?;
            (s.name == key_secret).then(|| {
                let item = &s.items.as_ref().unwrap()[0];
                (item.key.clone(), item.path.clone())
            })
        })
    };
    let file = eventually(WAIT, "the callee's agent.caller file", || async {
        projected(world.api().get_opt("callee").await.ok()??)
    })
    .await;
    assert_eq!(file, ("api-key".to_owned(), "agent.caller".to_owned()));

    // The entry goes: so do the Secret and the file.
    world
        .agents()
        .patch(
            "caller",
            &PatchParams::apply(TEST_FIELD_MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentDeployment",
                "metadata": { "name": "caller" },
                "spec": {
                    "model": { "provider": "openai", "name": "gpt-4o-mini", "baseUrl": "http://mock-llm:8080/v1" },
                    "database": { "mode": "Managed", "reclaimPolicy": "Delete" },
                    "replicas": 1,
                    "scheduling": {
                        "nodeSelector": { "type": "kwok" },
                        "tolerations": [{ "key": "switchboard.dev/kwok", "operator": "Exists", "effect": "NoSchedule" }],
                    },
                    "tools": [{ "toolServer": "live" }],
                },
            })),
        )
        .await
        .unwrap();
    eventually(WAIT, "the key Secret deleted", || async {
        world
            .api::<Secret>()
            .get_opt(key_secret)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    eventually(WAIT, "the callee's file gone", || async {
        let d: Deployment = world.api().get_opt("callee").await.ok()??;
        projected(d).is_none().then_some(())
    })
    .await;
    world
        .wait_condition("caller", "ToolsReady", "True", WAIT)
        .await;
}

/// The secrets digest on the agent's pod template.
async fn secrets_digest(world: &World, agent: &str) -> Option<String> {
    let d: Deployment = world.api().get_opt(agent).await.ok()??;
    d.spec
        .template
        .metadata?
        .annotations?
        .get("switchboard.dev/secrets-hash")
        .cloned()
}

async fn set_secret(world: &World, name: &str, key: &str, value: &str) {
    world
        .apply::<Secret>(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": name },
            "stringData": { key: value },
        }))
        .await;
}

#[tokio::test]
async fn a_header_secret_fixed_or_created_later_is_acted_on_at_once() {
    let world = World::new("op-tools-secret").await;
    let server = mcp_server(TOKEN).await;
    let operator = world.operator("solo", &["--leader-elect=false"]).await;
    const WRONG: &str = "Bearer wr0ng-rotated-t0ken";

    // A wrong token: Unauthorized, and the agent naming the server says so.
    set_secret(&world, "rotated-token", "value", WRONG).await;
    tool_server_reading(&world, "rotated", &server.url, "rotated-token", "value").await;
    world
        .apply_agent(
            "user",
            json!({ "replicas": 1, "tools": [{ "toolServer": "rotated" }] }),
        )
        .await;
    let (_, reason, message) = wait_ready(&world, "rotated", "False").await;
    assert_eq!(reason, "Unauthorized", "{message}");
    let before = eventually(WAIT, "ToolsReady False and a secrets digest", || async {
        let (status, _) = world.condition("user", "ToolsReady").await?;
        if status != "False" {
            return None;
        }
        secrets_digest(&world, "user").await
    })
    .await;

    // The token fixed: Ready within seconds, ToolsReady follows, the pods roll.
    set_secret(&world, "rotated-token", "value", &format!("Bearer {TOKEN}")).await;
    let (_, reason, message) = wait_ready_within(&world, "rotated", "True", SECRET_PICKUP).await;
    assert_eq!(reason, "Listed", "{message}");
    world
        .wait_condition("user", "ToolsReady", "True", SECRET_PICKUP)
        .await;
    let after = eventually(SECRET_PICKUP, "a new secrets digest", || async {
        secrets_digest(&world, "user")
            .await
            .filter(|d| *d != before)
    })
    .await;
    assert!(!after.contains(TOKEN));

    // A ToolServer made before its Secret: SecretMissing, then Ready once it exists.
    tool_server_reading(&world, "late", &server.url, "late-token", "value").await;
    let (_, reason, message) = wait_ready(&world, "late", "False").await;
    assert_eq!(reason, "SecretMissing", "{message}");
    assert!(message.contains("late-token"), "{message}");
    set_secret(&world, "late-token", "value", &format!("Bearer {TOKEN}")).await;
    let (_, reason, message) = wait_ready_within(&world, "late", "True", SECRET_PICKUP).await;
    assert_eq!(reason, "Listed", "{message}");

    // No token anywhere a user or an operator reads.
    let shown = [
        world.kubectl(&["get", "toolservers", "-o", "yaml"]),
        world.kubectl(&["get", "agentdeployments", "-o", "yaml"]),
        world.kubectl(&["get", "events", "-o", "yaml"]),
        operator.log_text(),
    ];
    for text in &shown {
        assert!(
            !text.contains(TOKEN) && !text.contains("wr0ng-rotated"),
            "a token shows: {text}"
        );
    }
}
