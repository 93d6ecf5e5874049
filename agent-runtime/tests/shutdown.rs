//! SIGTERM on the real binary during a stream: within the grace period the
//! stream finishes with its text; past it the stream ends with an error event.
//! Either way both messages are in the database when the process has exited.

mod common;

use std::time::Duration;

use common::{API_KEY, RuntimeProcess, sse_data};
use serde_json::{Value, json};
use sqlx::Connection;
use switchboard_tests::mock_llm::MockLlm;

struct Runtime {
    process: RuntimeProcess,
    db_path: std::path::PathBuf,
}

async fn start_runtime(mock: &MockLlm, grace_seconds: u64) -> Runtime {
    let config = format!(
        "agent: {{name: sigterm}}\n\
         model: {{provider: openai, name: mock-gpt, baseUrl: \"{}\", timeoutSeconds: 5}}\n\
         database: {{sqlitePath: \"{{dir}}/rt.db\"}}\n\
         limits: {{shutdownGraceSeconds: {grace_seconds}}}\n",
        mock.openai_base_url(),
    );
    let process = RuntimeProcess::spawn(&config, &[]).await;
    let db_path = process.dir.0.join("rt.db");
    Runtime { process, db_path }
}

/// Starts a stream, sends SIGTERM once text flows, and returns the whole body.
async fn stream_through_sigterm(runtime: &mut Runtime, content: &str) -> String {
    let mut response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", runtime.process.base))
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
    runtime.process.terminate();
    while let Some(chunk) = response.chunk().await.expect("stream ends cleanly") {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let status = tokio::time::timeout(Duration::from_secs(30), runtime.process.child.wait())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_not_held_up_by_idle_or_silent_connections() {
    let mock = MockLlm::start().await.expect("mock");
    let mut runtime = start_runtime(&mock, 20).await;
    let base = runtime.process.base.clone();
    let addr = base.trim_start_matches("http://").to_owned();
    // A connection that never sends a byte, and one that sent half a preface.
    let _silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connects");
    let mut half = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connects");
    tokio::io::AsyncWriteExt::write_all(&mut half, b"PRI * HTTP/2.0\r\n")
        .await
        .expect("writes");
    // An HTTP/1.1 and an HTTP/2 connection, each idle after a chat.
    let h1 = reqwest::Client::new();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    for (client, version) in [
        (&h1, reqwest::Version::HTTP_11),
        (&h2, reqwest::Version::HTTP_2),
    ] {
        let answer = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(API_KEY)
            .header("x-switchboard-user", "alice")
            .json(&json!({"messages": [{"role": "user", "content": "then idle"}]}))
            .send()
            .await
            .expect("chat");
        assert_eq!(answer.version(), version);
        assert_eq!(answer.status(), 200);
    }
    runtime.process.terminate();
    let status = tokio::time::timeout(Duration::from_secs(15), runtime.process.child.wait())
        .await
        .expect("the runtime exits without waiting for the idle connections")
        .expect("wait");
    assert!(status.success(), "exit status {status:?}");
}
