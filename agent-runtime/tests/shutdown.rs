//! SIGTERM on the real binary during a stream: within the grace period the
//! stream finishes with its text; past it the stream ends with an error event.
//! Either way both messages are in the database when the process has exited.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{API_KEY, TempDir, sse_data};
use serde_json::{Value, json};
use sqlx::Connection;
use switchboard_tests::mock_llm::MockLlm;
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Runtime {
    child: Child,
    base: String,
    db_path: std::path::PathBuf,
    _dir: TempDir,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn start_runtime(mock: &MockLlm, grace_seconds: u64) -> Runtime {
    let dir = TempDir::new();
    let db_path = dir.0.join("rt.db");
    let config = format!(
        "agent: {{name: sigterm}}\n\
         model: {{provider: openai, name: mock-gpt, baseUrl: \"{}\", timeoutSeconds: 5}}\n\
         database: {{sqlitePath: \"{}\"}}\n\
         limits: {{shutdownGraceSeconds: {grace_seconds}}}\n",
        mock.openai_base_url(),
        db_path.display()
    );
    let config_path = dir.0.join("agent.yaml");
    std::fs::write(&config_path, config).expect("config written");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_agent-runtime"))
        .arg("--config")
        .arg(&config_path)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_API_KEY", API_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("runtime starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "runtime did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Runtime {
        child,
        base,
        db_path,
        _dir: dir,
    }
}

/// Starts a stream, sends SIGTERM once text flows, and returns the whole body.
async fn stream_through_sigterm(runtime: &mut Runtime, content: &str) -> String {
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", runtime.base))
        .bearer_auth(API_KEY)
        .header("x-switchboard-user", "alice")
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let mut body = String::new();
    while !body.contains("alpha") {
        let chunk = response.chunk().await.expect("chunk").expect("more");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let pid = runtime.child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    while let Some(chunk) = response.chunk().await.expect("stream ends cleanly") {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let status = tokio::time::timeout(Duration::from_secs(30), runtime.child.wait())
        .await
        .expect("runtime exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "exit status {status:?}");
    body
}

async fn stored_messages(path: &std::path::Path) -> Vec<(String, String, Option<String>)> {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("database opens");
    sqlx::query_as("SELECT role, content, error FROM messages ORDER BY seq")
        .fetch_all(&mut conn)
        .await
        .expect("messages")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_finish_within_the_grace_period() {
    let mock = MockLlm::start().await.expect("mock");
    let mut runtime = start_runtime(&mock, 20).await;
    let body = stream_through_sigterm(&mut runtime, "[[mock: words=20; chunk_delay=100]]").await;
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let messages = stored_messages(&runtime.db_path).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[1].0, "assistant");
    assert_eq!(messages[1].1.split(' ').count(), 20, "{messages:?}");
    assert_eq!(messages[1].2, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_ends_the_stream_with_an_error_event() {
    let mock = MockLlm::start().await.expect("mock");
    let mut runtime = start_runtime(&mock, 1).await;
    let body = stream_through_sigterm(&mut runtime, "[[mock: words=400; chunk_delay=100]]").await;
    let data = sse_data(&body);
    let last: Value = serde_json::from_str(data.last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "upstream_stream_failed", "{body}");
    let messages = stored_messages(&runtime.db_path).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[1].0, "assistant");
    assert!(messages[1].1.starts_with("alpha"), "{messages:?}");
    assert!(
        messages[1]
            .2
            .as_deref()
            .is_some_and(|e| e.contains("shut down")),
        "{messages:?}"
    );
}
