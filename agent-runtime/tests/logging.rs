//! The real binary's logs with `SWITCHBOARD_LOG_FORMAT=json`: one JSON line per
//! request with its request id, route and status; never the client's API key,
//! the upstream key, or message text (unless `limits.logMessageContent`).

mod common;

use common::{API_KEY, RuntimeProcess};
use serde_json::{Value, json};
use switchboard_tests::mock_llm::MockLlm;

const UPSTREAM_KEY: &str = "sk-upstream-logcheck-77";
const CONTENT: &str = "my private words 4411";

async fn run(log_content: bool) -> Vec<Value> {
    let mock = MockLlm::start().await.expect("mock");
    let config = format!(
        "agent: {{name: logged}}\n\
         model: {{provider: openai, name: mock-gpt, baseUrl: \"{}\", apiKeyEnv: UPSTREAM_KEY}}\n\
         database: {{sqlitePath: \"{{dir}}/rt.db\"}}\n\
         limits: {{logMessageContent: {log_content}}}\n",
        mock.openai_base_url(),
    );
    let runtime = RuntimeProcess::spawn(
        &config,
        &[
            ("SWITCHBOARD_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("UPSTREAM_KEY", UPSTREAM_KEY),
        ],
    )
    .await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", runtime.base))
        .bearer_auth(API_KEY)
        .header("x-request-id", "req-logcheck-1")
        .json(&json!({"messages": [{"role": "user", "content": CONTENT}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(mock.request_count(), 1);
    let log = switchboard_tests::wait::eventually(
        std::time::Duration::from_secs(10),
        "the request's log line",
        || {
            let log = runtime.log();
            async move { log.contains("req-logcheck-1").then_some(log) }
        },
    )
    .await;
    assert!(!log.contains(API_KEY), "client API key logged:\n{log}");
    assert!(!log.contains(UPSTREAM_KEY), "upstream key logged:\n{log}");
    log.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request_without_keys_or_content() {
    let lines = run(false).await;
    // One line for the chat (the readiness probes that came before have their own).
    let served: Vec<String> = lines
        .iter()
        .filter(|l| l["message"] == "request served")
        .map(Value::to_string)
        .filter(|l| l.contains("req-logcheck-1"))
        .collect();
    assert_eq!(served.len(), 1, "{lines:?}");
    let line = &served[0];
    assert!(line.contains("/v1/chat/completions"), "{line}");
    assert!(line.contains("200"), "{line}");
    assert!(
        lines.iter().all(|l| !l.to_string().contains(CONTENT)),
        "message text logged: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_text_is_logged_only_when_configured() {
    let lines = run(true).await;
    assert!(
        lines.iter().any(|l| l.to_string().contains(CONTENT)),
        "message text not logged: {lines:?}"
    );
}
