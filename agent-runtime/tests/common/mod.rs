//! Test harness: the mock LLM and the runtime in-process, on SQLite (a temp
//! file) or on a fresh Postgres database created through
//! `SWITCHBOARD_DATABASE_ADMIN_URL` and dropped afterwards.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use agent_runtime::{AppState, DatabaseTarget, Settings, SharedState};
use crds::runtime_config::{ChannelConfig, ModelConfig, ModelProvider, RuntimeConfig, WebConfig};
use serde_json::Value;
use switchboard_tests::database::{TestDatabase, admin_url};
use switchboard_tests::mock_llm::MockLlm;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The client API key every harness runtime expects.
pub const API_KEY: &str = "test-key-123";
/// The admin key every harness runtime expects on `/api/admin/*`.
pub const ADMIN_KEY: &str = "test-admin-456";

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Generates one `#[tokio::test]` per backend for each async test function
/// taking a [`Db`].
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Db::Postgres).await
                }
            )*
        }
    };
}

/// A running mock upstream plus runtime.
pub struct Harness {
    pub mock: MockLlm,
    pub addr: SocketAddr,
    pub state: SharedState,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _postgres: Option<TestDatabase>,
    _dir: Option<TempDir>,
}

/// A temp directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("sbtest-rt-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The config every harness starts from: the mock as the only model.
pub fn base_config(mock: &MockLlm) -> RuntimeConfig {
    let mut config = RuntimeConfig::default();
    config.agent.name = "test-agent".into();
    config.model = ModelConfig {
        provider: ModelProvider::Openai,
        name: "mock-gpt".into(),
        base_url: Some(mock.openai_base_url()),
        api_key_env: Some("UPSTREAM_KEY".into()),
        timeout_seconds: 2,
        ..ModelConfig::default()
    };
    config.system_prompt = Some("You are the test agent.".into());
    config
}

impl Harness {
    /// Mock + runtime with the base config.
    pub async fn start(db: Db) -> Self {
        Self::start_with(db, |_, _| {}).await
    }

    /// Mock + runtime with the base config adjusted by `tweak`.
    pub async fn start_with(db: Db, tweak: impl FnOnce(&mut RuntimeConfig, &MockLlm)) -> Self {
        let postgres = match db {
            Db::Postgres => Some(TestDatabase::create_on(&admin_url()).await),
            Db::Sqlite => None,
        };
        Self::start_on(postgres, tweak).await
    }

    /// Mock + runtime on database `postgres` (SQLite in a temp dir when none).
    pub async fn start_on(
        postgres: Option<TestDatabase>,
        tweak: impl FnOnce(&mut RuntimeConfig, &MockLlm),
    ) -> Self {
        let mock = MockLlm::start().await.expect("mock starts");
        let mut config = base_config(&mock);
        tweak(&mut config, &mock);
        let dir = postgres.is_none().then(TempDir::new);
        let database = match (&postgres, &dir) {
            (Some(pg), _) => DatabaseTarget::Postgres(pg.url().to_owned()),
            (None, Some(dir)) => DatabaseTarget::Sqlite(dir.0.join("rt.db").display().to_string()),
            (None, None) => unreachable!(),
        };
        config.database.url_env = None;
        let mut settings = Settings::resolve(config, |name| match name {
            "SWITCHBOARD_API_KEY" => Some(API_KEY.to_owned()),
            "SWITCHBOARD_ADMIN_KEY" => Some(ADMIN_KEY.to_owned()),
            "UPSTREAM_KEY" => Some("sk-upstream-secret".to_owned()),
            _ => None,
        })
        .expect("settings resolve");
        settings.database = database;
        let state = AppState::build(settings).await.expect("runtime starts");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let serve_state = state.clone();
        let task = tokio::spawn(async move {
            let _ = agent_runtime::serve(serve_state, listener, async {
                let _ = rx.await;
            })
            .await;
        });
        Self {
            mock,
            addr,
            state,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
            _postgres: postgres,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The URL of the runtime's Postgres database (`None` with SQLite).
    pub fn database_url(&self) -> Option<&str> {
        self._postgres.as_ref().map(TestDatabase::url)
    }

    /// The runtime's `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The sum of a metric's samples whose line starts with `name_and_labels`
    /// (0 when there are none).
    pub async fn metric_sum(&self, name_and_labels: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(name_and_labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// A request with the API key and `user` in the trusted header.
    pub fn as_user(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(API_KEY)
            .header("x-switchboard-user", user)
    }

    /// Sends JSON and returns status and JSON body.
    pub async fn json(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// GET with the admin key.
    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.json(self.client.get(self.url(path)).bearer_auth(ADMIN_KEY))
            .await
    }

    pub async fn get(&self, user: &str, path: &str) -> (u16, Value) {
        self.json(self.as_user(reqwest::Method::GET, path, user))
            .await
    }

    pub async fn post(&self, user: &str, path: &str, body: Value) -> (u16, Value) {
        self.json(self.as_user(reqwest::Method::POST, path, user).json(&body))
            .await
    }

    /// One non-streamed chat completion for `user` with `messages`.
    pub async fn chat(&self, user: &str, messages: Value) -> (u16, Value) {
        self.post(
            user,
            "/v1/chat/completions",
            serde_json::json!({"model": "test-agent", "messages": messages}),
        )
        .await
    }

    /// A streamed request's raw SSE body.
    pub async fn stream_text(&self, request: reqwest::RequestBuilder) -> (u16, String) {
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A web channel behind an auth proxy that names the user in `X-Forwarded-User`.
pub fn trusted_header_channel(name: &str) -> ChannelConfig {
    ChannelConfig {
        name: name.into(),
        web: Some(WebConfig {
            title: None,
            trusted_header: Some("X-Forwarded-User".into()),
        }),
        ..ChannelConfig::default()
    }
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// The text of an OpenAI-format stream: its chunks' content deltas joined.
pub fn streamed_text(body: &str) -> String {
    sse_data(body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// Asserts an error answer: status, JSON body with `error.code` and a message.
#[track_caller]
pub fn assert_error(result: &(u16, Value), status: u16, code: &str) {
    let (got, body) = result;
    assert_eq!(*got, status, "status; body: {body}");
    assert_eq!(body["error"]["code"], code, "error code; body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error message present; body: {body}"
    );
}

/// The real `agent-runtime` binary, started with a config file written to a
/// temp directory, its log (stdout) in `runtime.log` there; killed when dropped.
pub struct RuntimeProcess {
    pub child: tokio::process::Child,
    pub base: String,
    pub dir: TempDir,
}

impl Drop for RuntimeProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl RuntimeProcess {
    /// Writes `config` (YAML) and starts the binary with `env` added, waiting
    /// until `/readyz` answers. `{dir}` in the config is replaced by the temp
    /// directory.
    pub async fn spawn(config: &str, env: &[(&str, &str)]) -> Self {
        Self::start(
            config,
            &[
                ("SWITCHBOARD_API_KEY", API_KEY),
                ("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY),
            ],
            env,
        )
        .await
    }

    /// Two processes of agent `slacky` on one Postgres database (`database_url`)
    /// with the mock model and one Slack channel `support-slack` (`slack`: the
    /// channel's `slack:` settings, YAML flow style), each given `env` next to
    /// the upstream key and `DATABASE_URL`: replicas behind one Slack app.
    pub async fn slack_replicas(
        mock: &MockLlm,
        database_url: &str,
        slack: &str,
        env: &[(&str, &str)],
    ) -> (Self, Self) {
        let config = format!(
            "agent: {{name: slacky}}\n\
             model: {{provider: openai, name: mock-gpt, baseUrl: \"{}\", apiKeyEnv: UPSTREAM_KEY, timeoutSeconds: 5}}\n\
             database: {{urlEnv: DATABASE_URL}}\n\
             channels:\n\
             - name: support-slack\n  type: slack\n  slack: {slack}\n",
            mock.openai_base_url(),
        );
        let mut all = vec![
            ("UPSTREAM_KEY", "sk-upstream"),
            ("DATABASE_URL", database_url),
        ];
        all.extend_from_slice(env);
        (
            Self::spawn(&config, &all).await,
            Self::spawn(&config, &all).await,
        )
    }

    /// Starts the binary as a pod of `namespace` would run (its ChatChannels
    /// watched and its status written through `cluster`), open (no key), its
    /// health reported every second.
    pub async fn spawn_in_cluster(
        config: &str,
        cluster: &switchboard_tests::TestCluster,
        namespace: &str,
        pod: &str,
    ) -> Self {
        let kubeconfig = cluster.kubeconfig().display().to_string();
        Self::start(
            config,
            &[],
            &[
                ("KUBECONFIG", kubeconfig.as_str()),
                ("POD_NAME", pod),
                ("POD_NAMESPACE", namespace),
                ("SWITCHBOARD_HEARTBEAT_SECONDS", "1"),
            ],
        )
        .await
    }

    async fn start(config: &str, keys: &[(&str, &str)], env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new();
        let config = config.replace("{dir}", &dir.0.display().to_string());
        let config_path = dir.0.join("agent.yaml");
        std::fs::write(&config_path, config).expect("config written");
        let port = switchboard_tests::wait::free_port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-runtime"))
            .arg("--config")
            .arg(&config_path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(&dir.0)
            .envs(keys.iter().copied())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(dir.0.join("runtime.log")).expect("log file"))
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("runtime starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "runtime did not become ready; its log:\n{}",
                std::fs::read_to_string(dir.0.join("runtime.log")).unwrap_or_default()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self { child, base, dir }
    }

    /// What the runtime has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("runtime.log")).unwrap_or_default()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("pid").to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(killed.success());
    }
}

/// Rate limits count per unix minute (see `agent_runtime::limits`): waits for
/// the next minute to begin when less than `margin` of this one is left, so
/// that a short sequence of requests falls in one window.
pub async fn within_one_rate_window(margin: std::time::Duration) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    let left = std::time::Duration::from_secs((since.as_secs() / 60 + 1) * 60) - since;
    if left < margin {
        tokio::time::sleep(left + std::time::Duration::from_millis(50)).await;
    }
}

/// The next `data:` payload of an event stream (10 s at most), `buffer`
/// keeping what was read past it.
pub async fn next_event(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    buffer: &mut String,
) -> Value {
    use futures::StreamExt as _;
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                return serde_json::from_str(data).expect("event JSON");
            }
            continue;
        }
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .expect("chunk");
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
    }
}
