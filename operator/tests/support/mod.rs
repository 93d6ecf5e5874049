//! Shared helpers of the operator's end-to-end tests: run the real operator binary as a
//! child process against the harness, apply agents, poll for conditions, read the
//! operator's and the apiserver's metrics, and clean up finalizers and databases.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crds::{AgentDeployment, ChatChannel};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::postgres::PgConnection;
use switchboard_tests::cluster::TEST_FIELD_MANAGER;
use switchboard_tests::{TestCluster, TestNamespace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub use switchboard_tests::{eventually, free_port};

/// Lease duration the tests run the operator with.
pub const LEASE_SECONDS: u64 = 6;

/// One test's world: the cluster, a fresh namespace, and a guard that strips the
/// operator's finalizers before the namespace is deleted (so a failed test cannot leave
/// a namespace stuck terminating).
pub struct World {
    pub cluster: TestCluster,
    _finalizers: FinalizerGuard,
    pub ns: TestNamespace,
}

impl World {
    pub async fn new(test: &str) -> World {
        let cluster = TestCluster::connect().await;
        cluster.install_crds().await;
        let ns = cluster.namespace(test).await;
        World {
            _finalizers: FinalizerGuard {
                cluster: cluster.clone(),
                namespace: ns.name().to_owned(),
            },
            cluster,
            ns,
        }
    }

    pub fn client(&self) -> Client {
        self.cluster.client()
    }

    pub fn name(&self) -> &str {
        self.ns.name()
    }

    pub fn agents(&self) -> Api<AgentDeployment> {
        Api::namespaced(self.client(), self.name())
    }

    pub fn channels(&self) -> Api<ChatChannel> {
        Api::namespaced(self.client(), self.name())
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client(), self.name())
    }

    /// Server-side applies a manifest (as a test fixture manager).
    pub async fn apply<K>(&self, manifest: Value)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(manifest).expect("manifest decodes");
        let name = object.meta().name.clone().expect("named");
        self.api::<K>()
            .patch(
                &name,
                &PatchParams::apply(TEST_FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap_or_else(|e| panic!("applying {name}: {e}"));
    }

    /// Applies an agent with a small spec; `extra` is merged into `spec`.
    pub async fn apply_agent(&self, name: &str, extra: Value) {
        let mut spec = json!({
            "model": { "provider": "openai", "name": "gpt-4o-mini", "baseUrl": "http://mock-llm:8080/v1" },
            "systemPrompt": "You are a test agent.",
            "database": { "mode": "Managed", "reclaimPolicy": "Delete" },
            // The operator's tests need pods scheduled and Running, not a runtime: they
            // go to the harness's kwok nodes (tainted for exactly such tests), since the
            // image named here runs nowhere.
            "scheduling": {
                "nodeSelector": { "type": "kwok" },
                "tolerations": [{ "key": "switchboard.dev/kwok", "operator": "Exists", "effect": "NoSchedule" }],
            },
        });
        merge(&mut spec, extra);
        self.apply::<AgentDeployment>(json!({
            "apiVersion": "switchboard.dev/v1alpha1",
            "kind": "AgentDeployment",
            "metadata": { "name": name },
            "spec": spec,
        }))
        .await;
    }

    /// The agent's status condition `type_` status, if any.
    pub async fn condition(&self, agent: &str, type_: &str) -> Option<(String, String)> {
        let a = self.agents().get_opt(agent).await.ok()??;
        let c = crds::condition::find_condition(&a.status?.conditions, type_)?.clone();
        Some((c.status, c.reason))
    }

    /// Waits until the agent's condition has `status`.
    pub async fn wait_condition(&self, agent: &str, type_: &str, status: &str, timeout: Duration) {
        eventually(timeout, &format!("{agent} {type_}={status}"), || async {
            (self.condition(agent, type_).await?.0 == status).then_some(())
        })
        .await
    }

    /// Reports a runtime pod's health into the agent's status, as the runtime does:
    /// server-side apply of its own entry under its own field manager.
    /// Its heartbeat lies in the future, so the report never goes stale.
    pub async fn report_runtime(&self, agent: &str, pod: &str, ready: bool, upstream: bool) {
        let future = "2030-01-01T00:00:00Z".parse().unwrap();
        self.heartbeat(agent, pod, ready, upstream, 0, future).await;
    }

    /// One heartbeat of a runtime pod, as the runtime sends it every 10 s: its report
    /// made at `at`, with `messages` handled since its start.
    pub async fn heartbeat(
        &self,
        agent: &str,
        pod: &str,
        ready: bool,
        upstream: bool,
        messages: i64,
        at: k8s_openapi::jiff::Timestamp,
    ) {
        let body = json!({
            "apiVersion": "switchboard.dev/v1alpha1",
            "kind": "AgentDeployment",
            "status": { "runtime": [{
                "name": pod, "ready": ready, "upstreamHealthy": upstream,
                "activeSessions": 0, "messagesTotal": messages,
                "lastHeartbeat": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at),
                "version": "test",
            }]},
        });
        self.agents()
            .patch_status(
                agent,
                &PatchParams::apply(&format!("runtime-{pod}")).force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap_or_else(|e| panic!("reporting runtime {pod}: {e}"));
    }

    /// Kubectl in this namespace, asserting success.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name()];
        all.extend_from_slice(args);
        self.cluster.kubectl_ok(all)
    }

    /// Starts an operator watching only this namespace.
    pub async fn operator(&self, identity: &str, extra_args: &[&str]) -> Operator {
        Operator::start(self.name(), identity, extra_args).await
    }
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

struct FinalizerGuard {
    cluster: TestCluster,
    namespace: String,
}

impl Drop for FinalizerGuard {
    fn drop(&mut self) {
        let out = self.cluster.kubectl([
            "-n",
            &self.namespace,
            "get",
            "agentdeployments",
            "-o",
            "name",
        ]);
        for name in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = self.cluster.kubectl([
                "-n",
                &self.namespace,
                "patch",
                name,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
        }
    }
}

/// A running `switchboard-operator` process, killed when dropped.
pub struct Operator {
    child: Child,
    pub metrics_port: u16,
    pub identity: String,
    pub log: PathBuf,
}

impl Operator {
    pub async fn start(namespace: &str, identity: &str, extra_args: &[&str]) -> Operator {
        let port = free_port();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("{namespace}-{identity}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let lease = LEASE_SECONDS.to_string();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard-operator"));
        cmd.args([
            "--namespace",
            namespace,
            "--metrics-addr",
            &addr,
            "--runtime-image",
            "registry.local/agent-runtime:test",
            "--lease-namespace",
            namespace,
            "--lease-duration-seconds",
            &lease,
            "--identity",
            identity,
        ])
        .args(extra_args)
        .env("RUST_LOG", "info,operator=debug")
        .env(
            "SWITCHBOARD_DATABASE_ADMIN_URL",
            switchboard_tests::database::admin_url(),
        )
        .stdout(Stdio::from(file.try_clone().expect("log fd")))
        .stderr(Stdio::from(file))
        .kill_on_drop(true);
        let child = cmd.spawn().expect("the operator binary starts");
        let operator = Operator {
            child,
            metrics_port: port,
            identity: identity.to_owned(),
            log,
        };
        eventually(
            Duration::from_secs(20),
            "the operator's /healthz",
            || async { operator.get("/healthz").await.filter(|b| b.contains("ok")) },
        )
        .await;
        operator
    }

    /// SIGKILL, no chance to clean up.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GET a path of the operator's HTTP server; the body on 200.
    pub async fn get(&self, path: &str) -> Option<String> {
        http_get(self.metrics_port, path).await
    }

    /// A metric's value summed over its label sets (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.get("/metrics").await.unwrap_or_default();
        sum_metric(&text, name, |_| true)
    }

    /// Write requests the operator has sent.
    pub async fn writes(&self) -> f64 {
        self.metric("switchboard_operator_kube_writes_total").await
    }

    /// Whether it currently holds the leader Lease.
    pub async fn is_leader(&self) -> bool {
        self.metric("switchboard_operator_leader").await >= 1.0
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

/// Sums the samples of `name` whose label text satisfies `filter`.
pub fn sum_metric(text: &str, name: &str, filter: impl Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric == name && filter(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The apiserver's create, update and patch requests (`apiserver_request_total`) by
/// `group/resource[/subresource]`.
pub fn apiserver_writes(cluster: &TestCluster) -> BTreeMap<String, f64> {
    let text = cluster.kubectl_ok(["get", "--raw", "/metrics"]);
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let labels = label_map(series);
        let verb = labels.get("verb").map(String::as_str).unwrap_or("");
        // DELETE is left out: the operator never deletes (children go by garbage
        // collection), while the namespace and garbage collectors keep deleting
        // whatever earlier tests left in their namespaces, across every resource.
        if !matches!(
            verb,
            "POST" | "PUT" | "PATCH" | "APPLY" | "CREATE" | "UPDATE"
        ) {
            continue;
        }
        let key = format!(
            "{}/{}{}",
            labels.get("group").cloned().unwrap_or_default(),
            labels.get("resource").cloned().unwrap_or_default(),
            labels
                .get("subresource")
                .filter(|s| !s.is_empty())
                .map(|s| format!("/{s}"))
                .unwrap_or_default()
        );
        *out.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

fn label_map(series: &str) -> BTreeMap<String, String> {
    let inner = series
        .split_once('{')
        .map(|(_, r)| r.trim_end_matches('}'))
        .unwrap_or("");
    let mut map = BTreeMap::new();
    // Label values here never contain commas or quotes.
    for pair in inner.split(',') {
        if let Some((k, v)) = pair.split_once('=') {
            map.insert(k.trim().to_owned(), v.trim_matches('"').to_owned());
        }
    }
    map
}

/// Differences between two write snapshots (only keys that grew).
pub fn grown(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

/// A superuser connection to the harness's Postgres.
pub async fn admin_db() -> PgConnection {
    PgConnection::connect(&switchboard_tests::database::admin_url())
        .await
        .expect("connecting to the harness Postgres")
}

/// Databases whose name starts with `prefix`.
pub async fn databases_like(prefix: &str) -> Vec<String> {
    let mut conn = admin_db().await;
    sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
    )
    .bind(prefix)
    .fetch_all(&mut conn)
    .await
    .expect("listing databases")
}

/// Roles whose name starts with `prefix`.
pub async fn roles_like(prefix: &str) -> Vec<String> {
    let mut conn = admin_db().await;
    sqlx::query_scalar(
        "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1) ORDER BY 1",
    )
    .bind(prefix)
    .fetch_all(&mut conn)
    .await
    .expect("listing roles")
}

/// Drops databases and roles with `prefix` (cleanup of Retain tests).
pub async fn drop_like(prefix: &str) {
    let mut conn = admin_db().await;
    for db in databases_like(prefix).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
    for role in roles_like(prefix).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS \"{role}\""
        )))
        .execute(&mut conn)
        .await;
    }
}

/// The database identifier prefix of agents in `namespace`.
pub fn db_prefix(namespace: &str) -> String {
    format!("sb_{}_", namespace.replace('-', "_"))
}

/// A Secret's data as strings.
pub async fn secret_data(world: &World, name: &str) -> BTreeMap<String, String> {
    let secret: k8s_openapi::api::core::v1::Secret =
        world.api().get(name).await.expect("secret exists");
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).expect("utf-8")))
        .collect()
}

/// Reads `count` every `every` until it gives the same value twice in a row, and
/// returns that value; panics saying `what` never settled after `timeout`.
pub async fn settled(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut count: impl AsyncFnMut() -> f64,
) -> f64 {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = count().await;
    loop {
        tokio::time::sleep(every).await;
        let now = count().await;
        if now == last {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never settled"
        );
        last = now;
    }
}
