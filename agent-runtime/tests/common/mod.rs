//! Test harness: the mock LLM and the runtime in-process, on SQLite (a temp
//! file) or on a fresh Postgres database created through
//! `SWITCHBOARD_DATABASE_ADMIN_URL` and dropped afterwards.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use agent_runtime::{AppState, DatabaseTarget, Settings, SharedState};
use crds::runtime_config::{ModelConfig, ModelProvider, RuntimeConfig};
use serde_json::Value;
use switchboard_tests::mock_llm::MockLlm;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The client API key every harness runtime expects.
pub const API_KEY: &str = "test-key-123";
/// Env var for the Postgres admin DSN.
pub const ADMIN_URL_ENV: &str = "SWITCHBOARD_DATABASE_ADMIN_URL";

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

/// A fresh Postgres database, dropped (forcefully) when this is dropped.
pub struct TempPostgres {
    admin_url: String,
    name: String,
    pub url: String,
}

impl TempPostgres {
    pub async fn create() -> Self {
        let admin_url = std::env::var(ADMIN_URL_ENV).unwrap_or_else(|_| {
            panic!(
                "{ADMIN_URL_ENV} is not set: the Postgres tests need a superuser DSN, e.g. \
                 postgres://postgres@127.0.0.1:5432/postgres (make test / hack/ sets it)"
            )
        });
        let name = format!("sbtest_rt_{}", uuid::Uuid::new_v4().simple());
        let mut admin = connect_admin(&admin_url).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let url = with_database(&admin_url, &name);
        Self {
            admin_url,
            name,
            url,
        }
    }
}

async fn connect_admin(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {ADMIN_URL_ENV}: {e}"))
}

/// `url` pointing at database `name` (path replaced, query kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let mut admin = connect_admin(&admin_url).await;
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
            });
        })
        .join();
    }
}

/// A running mock upstream plus runtime.
pub struct Harness {
    pub mock: MockLlm,
    pub addr: SocketAddr,
    pub state: SharedState,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _postgres: Option<TempPostgres>,
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
        let mock = MockLlm::start().await.expect("mock starts");
        let mut config = base_config(&mock);
        tweak(&mut config, &mock);
        let (postgres, dir) = match db {
            Db::Postgres => (Some(TempPostgres::create().await), None),
            Db::Sqlite => (None, Some(TempDir::new())),
        };
        let database = match (&postgres, &dir) {
            (Some(pg), _) => DatabaseTarget::Postgres(pg.url.clone()),
            (None, Some(dir)) => DatabaseTarget::Sqlite(dir.0.join("rt.db").display().to_string()),
            (None, None) => unreachable!(),
        };
        config.database.url_env = None;
        let mut settings = Settings::resolve(config, |name| match name {
            "SWITCHBOARD_API_KEY" => Some(API_KEY.to_owned()),
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

/// The `data:` payloads of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(str::to_owned)
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

#[test]
fn database_urls_are_rewritten() {
    assert_eq!(
        with_database("postgres://u:p@h:5/postgres?sslmode=disable", "x"),
        "postgres://u:p@h:5/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}
