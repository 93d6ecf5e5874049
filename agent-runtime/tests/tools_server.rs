//! Server-side tools end to end: the runtime lists a real MCP server (the
//! official MCP Python SDK's server in tests/mcp/server.py, started here),
//! offers its tools to the mock model, runs the calls the model asks for and
//! sends the results back, whole and streamed, OpenAI and Anthropic upstreams;
//! executions are stored and shown in the sessions API; errors, timeouts and
//! invalid arguments go back to the model; the step limit ends a looping turn;
//! a dead source leaves the turn without its tools and says so.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{Db, Harness, sse_data, streamed_text};
use crds::runtime_config::{
    ModelConfig, ModelProvider, RuntimeConfig, ToolHeaderConfig, ToolSourceConfig, ToolSourceKind,
};
use serde_json::{Value, json};
use switchboard_tests::mock_llm::MockLlm;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The MCP test server, killed when dropped.
struct McpServer {
    _child: Child,
    url: String,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

impl McpServer {
    /// Starts the server (the venv is made by hack/python-env.sh when missing)
    /// and waits for its ready line. With `token`, requests need it as a bearer token.
    async fn start(token: Option<&str>) -> Self {
        let root = repo_root();
        let venv = Command::new("bash")
            .arg(root.join("hack/python-env.sh"))
            .status()
            .await
            .expect("hack/python-env.sh runs");
        assert!(venv.success(), "hack/python-env.sh failed");
        let port = switchboard_tests::free_port();
        let mut command = Command::new(root.join(".switchboard/venv/bin/python"));
        command
            .arg(root.join("tests/mcp/server.py"))
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        let mut child = command.spawn().expect("the MCP server starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("mcp server ready on ") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "the MCP server printed no ready line");
        Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

fn mcp_source(name: &str, url: &str, timeout_seconds: u64) -> ToolSourceConfig {
    ToolSourceConfig {
        name: name.into(),
        kind: ToolSourceKind::Mcp,
        url: url.into(),
        timeout_seconds,
        ..ToolSourceConfig::default()
    }
}

fn anthropic(config: &mut RuntimeConfig, mock: &MockLlm) {
    config.model = ModelConfig {
        provider: ModelProvider::Anthropic,
        name: "mock-claude".into(),
        base_url: Some(mock.anthropic_base_url()),
        api_key_env: Some("UPSTREAM_KEY".into()),
        timeout_seconds: 5,
        ..ModelConfig::default()
    };
}

async fn with_tools(db: Db, server: &McpServer, upstream: ModelProvider) -> Harness {
    with_approval_timeout(db, server, upstream, 600).await
}

async fn with_approval_timeout(
    db: Db,
    server: &McpServer,
    upstream: ModelProvider,
    approval_timeout_seconds: u64,
) -> Harness {
    let url = server.url.clone();
    Harness::start_with(db, move |config, mock| {
        if upstream == ModelProvider::Anthropic {
            anthropic(config, mock);
        } else {
            config.model.timeout_seconds = 5;
        }
        config.tools.sources = vec![mcp_source("calc", &url, 3)];
        config.tools.max_steps = 3;
        config.tools.require_approval = vec!["delete_file".into()];
        config.tools.approval_timeout_seconds = approval_timeout_seconds;
    })
    .await
}

async fn ask(h: &Harness, text: &str) -> (u16, Value) {
    h.post(
        "alice",
        "/v1/chat/completions",
        json!({"model": "m", "messages": [{"role": "user", "content": text}]}),
    )
    .await
}

/// The stored messages of alice's only session.
async fn stored_messages(h: &Harness) -> Vec<Value> {
    let (status, sessions) = h.get("alice", "/api/sessions").await;
    assert_eq!(status, 200, "{sessions}");
    let id = sessions["data"][0]["id"]
        .as_str()
        .expect("a session")
        .to_owned();
    let (status, page) = h
        .get("alice", &format!("/api/sessions/{id}/messages"))
        .await;
    assert_eq!(status, 200, "{page}");
    page["data"].as_array().expect("messages").clone()
}

async fn a_server_tool_call_is_run_stored_and_listed(db: Db) {
    let server = McpServer::start(None).await;
    for upstream in [ModelProvider::Openai, ModelProvider::Anthropic] {
        let h = with_tools(db, &server, upstream).await;
        let (status, body) = ask(&h, r#"Add them [[mock: tools=add; args={"a":2,"b":3}]]"#).await;
        assert_eq!(status, 200, "{body}");
        let message = &body["choices"][0]["message"];
        assert_eq!(message["content"], "Tool results: 5", "{body}");
        assert!(
            message.get("tool_calls").is_none_or(Value::is_null),
            "{body}"
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        // The model was offered the server's tools, then got the result.
        let requests = h.mock.requests();
        assert_eq!(requests.len(), 2, "one call, then the answer");
        let offered = requests[0].body["tools"].to_string();
        for tool in ["add", "echo", "slow", "fail", "delete_file"] {
            assert!(offered.contains(&format!("\"{tool}\"")), "{offered}");
        }
        assert!(
            requests[1].body.to_string().contains("\"5\""),
            "{}",
            requests[1].body
        );
        // Stored: the call, its result with the execution, the answer.
        let messages = stored_messages(&h).await;
        let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
        assert_eq!(
            roles,
            ["user", "assistant", "tool", "assistant"],
            "{messages:?}"
        );
        assert_eq!(messages[1]["tool_calls"][0]["function"]["name"], "add");
        let execution = &messages[2]["tool_execution"];
        assert_eq!(execution["tool"], "add", "{execution}");
        assert_eq!(execution["source"], "calc");
        assert_eq!(execution["status"], "ok");
        assert_eq!(execution["output"], "5");
        assert_eq!(execution["input"], r#"{"a":2,"b":3}"#);
        assert_eq!(execution["call_message_id"], messages[1]["id"]);
        assert!(execution["duration_ms"].as_i64().is_some());
        assert_eq!(
            h.metric_sum(
                r#"switchboard_runtime_tool_calls_total{outcome="ok",source="calc",tool="add"}"#
            )
            .await,
            1.0
        );
        // The next turn sees the calls and results in the stored history.
        let id = messages[0]["session_id"]
            .as_str()
            .expect("session")
            .to_owned();
        let (status, body) = h
            .post(
                "alice",
                &format!("/api/sessions/{id}/messages"),
                json!({"content": "thanks [[mock: tools=none]]"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let last = h.mock.requests().pop().expect("called").body.to_string();
        assert!(last.contains("\"5\"") && last.contains("add"), "{last}");
    }
}

async fn parallel_calls_errors_and_timeouts_go_back_to_the_model(db: Db) {
    let server = McpServer::start(None).await;
    let h = with_tools(db, &server, ModelProvider::Openai).await;
    let (status, body) = ask(
        &h,
        r#"Several [[mock: tools=add,echo,fail,slow; args={"a":1,"b":2}|{"text":"hi"}|{"message":"boom"}|{"seconds":10}]]"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert!(
        content.starts_with("Tool results: 3; hi; Error: the tool failed: "),
        "{content}"
    );
    assert!(content.contains("boom"), "{content}");
    assert!(
        content.contains("did not answer within 3 seconds"),
        "{content}"
    );
    let messages = stored_messages(&h).await;
    let statuses: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["tool_execution"]["status"].as_str())
        .collect();
    assert_eq!(statuses, ["ok", "ok", "error", "timeout"], "{messages:?}");
    // The four ran at once: all started before the slow one timed out (3 s).
    let starts: Vec<i64> = messages
        .iter()
        .filter_map(|m| m["tool_execution"]["started_at"].as_str())
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .expect("time")
                .timestamp_millis()
        })
        .collect();
    let spread = starts.iter().max().expect("starts") - starts.iter().min().expect("starts");
    assert!(spread < 3000, "{starts:?}");
    for outcome in ["error", "timeout"] {
        assert_eq!(
            h.metric_sum(&format!(
                "switchboard_runtime_tool_calls_total{{outcome=\"{outcome}\""
            ))
            .await,
            1.0,
            "{outcome}"
        );
    }
}

async fn invalid_arguments_and_the_step_limit(db: Db) {
    let server = McpServer::start(None).await;
    let h = with_tools(db, &server, ModelProvider::Openai).await;
    let (status, body) = ask(&h, r#"Bad [[mock: tools=add; args={"a":"two","b":1}]]"#).await;
    assert_eq!(status, 200, "{body}");
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert!(content.contains("invalid arguments"), "{content}");
    assert!(
        content.contains("arguments.a must be of type integer"),
        "{content}"
    );
    // A model that keeps asking stops at maxSteps (3) model calls.
    let before = h.mock.requests().len();
    let (status, body) = h
        .post(
            "bob",
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": r#"Loop [[mock: tools=echo; args={"text":"again"}; loop=true]]"#}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.mock.requests().len() - before, 3);
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert!(content.contains("limit of 3 model calls"), "{content}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

async fn streamed_turns_run_server_tools_without_showing_them(db: Db) {
    let server = McpServer::start(None).await;
    for upstream in [ModelProvider::Openai, ModelProvider::Anthropic] {
        let h = with_tools(db, &server, upstream).await;
        let request = h.as_user(reqwest::Method::POST, "/v1/chat/completions", "alice").json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": r#"Add [[mock: tools=add; args={"a":20,"b":22}]]"#}]}),
        );
        let (status, body) = h.stream_text(request).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            !body.contains("tool_calls"),
            "server-side calls are not shown: {body}"
        );
        let text: String = sse_data(&body)
            .iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, "Tool results: 42", "{body}");
        let messages = stored_messages(&h).await;
        assert_eq!(
            messages[2]["tool_execution"]["output"], "42",
            "{messages:?}"
        );
    }
}

async fn a_dead_source_leaves_turns_without_its_tools(db: Db) {
    let server = McpServer::start(None).await;
    let closed = switchboard_tests::ClosedPort::new();
    let dead = closed.url("/mcp");
    let live = server.url.clone();
    let h = Harness::start_with(db, move |config, _| {
        let mut subset = mcp_source("subset", &live, 5);
        subset.tools = vec!["echo".into()];
        // A header whose variable is not set: the source is left out, and the
        // problem names the variable.
        let mut guarded = mcp_source("guarded", &live, 5);
        guarded.headers = vec![ToolHeaderConfig {
            name: "Authorization".into(),
            value_env: "TOOLS_TEST_UNSET_AUTH".into(),
        }];
        config.tools.sources = vec![mcp_source("gone", &dead, 2), subset, guarded];
    })
    .await;
    let problems = h.state().tools.problems();
    let named: Vec<&str> = problems.iter().map(|p| p.source.as_str()).collect();
    assert_eq!(named, ["gone", "guarded"], "{problems:?}");
    assert!(
        problems[1].error.contains("TOOLS_TEST_UNSET_AUTH"),
        "{problems:?}"
    );
    assert_eq!(
        h.metric_sum(r#"switchboard_runtime_tool_source_up{source="gone"}"#)
            .await,
        0.0
    );
    assert_eq!(
        h.metric_sum(r#"switchboard_runtime_tool_source_up{source="subset"}"#)
            .await,
        1.0
    );
    let (status, body) = ask(&h, "Hello [[mock: tools=none]]").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: Hello");
    let offered = h.mock.requests().pop().expect("called").body["tools"].to_string();
    assert!(offered.contains("\"echo\""), "{offered}");
    assert!(
        !offered.contains("\"add\""),
        "only the subset is offered: {offered}"
    );
}

/// Waits until one of alice's sessions has a pending approval: the session's
/// id and the approval.
async fn pending_approval(h: &Harness) -> (String, Value) {
    for _ in 0..400 {
        let (status, sessions) = h.get("alice", "/api/sessions").await;
        assert_eq!(status, 200, "{sessions}");
        for session in sessions["data"].as_array().into_iter().flatten() {
            let id = session["id"].as_str().expect("id");
            let (status, list) = h
                .get("alice", &format!("/api/sessions/{id}/approvals"))
                .await;
            assert_eq!(status, 200, "{list}");
            if let Some(pending) = list["data"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["state"] == "pending")
            {
                return (id.to_owned(), pending.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no approval was asked for");
}

const DELETE: &str = r#"Delete [[mock: tools=delete_file; args={"path":"/tmp/x"}]]"#;

async fn an_approved_call_runs(db: Db) {
    let server = McpServer::start(None).await;
    let h = with_tools(db, &server, ModelProvider::Openai).await;
    let decide = async {
        let (session, pending) = pending_approval(&h).await;
        // Listing while pending shows the call and its arguments.
        assert_eq!(pending["tool"], "delete_file", "{pending}");
        assert_eq!(pending["source"], "calc", "{pending}");
        assert_eq!(pending["arguments"], r#"{"path":"/tmp/x"}"#, "{pending}");
        assert!(pending["expires_at"].is_string(), "{pending}");
        let approval = pending["id"].as_str().expect("id").to_owned();
        let path = format!("/api/sessions/{session}/approvals/{approval}");
        // Someone who cannot see the session cannot decide.
        let (status, body) = h.post("bob", &path, json!({"approve": true})).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "session_not_found", "{body}");
        let (status, body) = h
            .post(
                "alice",
                &format!("/api/sessions/{session}/approvals/nope"),
                json!({"approve": true}),
            )
            .await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["code"], "approval_not_found", "{body}");
        let (status, body) = h.post("alice", &path, json!({"approve": true})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "approved", "{body}");
        assert_eq!(body["decided_by"], "alice", "{body}");
        // Deciding twice is a conflict.
        let (status, body) = h
            .post("alice", &path, json!({"approve": false, "reason": "late"}))
            .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["code"], "approval_decided", "{body}");
    };
    let ((status, body), ()) = tokio::join!(ask(&h, DELETE), decide);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"], "Tool results: deleted /tmp/x",
        "{body}"
    );
    let messages = stored_messages(&h).await;
    let execution = &messages[2]["tool_execution"];
    assert_eq!(execution["status"], "ok", "{messages:?}");
    assert_eq!(execution["output"], "deleted /tmp/x", "{messages:?}");
    assert_eq!(
        h.metric_sum(
            r#"switchboard_runtime_tool_approvals_total{outcome="approved",tool="delete_file"}"#
        )
        .await,
        1.0
    );
}

async fn a_rejected_call_tells_the_model_why(db: Db) {
    let server = McpServer::start(None).await;
    let h = with_tools(db, &server, ModelProvider::Openai).await;
    let decide = async {
        let (session, pending) = pending_approval(&h).await;
        let approval = pending["id"].as_str().expect("id");
        let (status, body) = h
            .post(
                "alice",
                &format!("/api/sessions/{session}/approvals/{approval}"),
                json!({"approve": false, "reason": "not that file"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "rejected", "{body}");
        assert_eq!(body["reason"], "not that file", "{body}");
    };
    let ((status, body), ()) = tokio::join!(ask(&h, DELETE), decide);
    assert_eq!(status, 200, "{body}");
    let last = h.mock.requests().pop().expect("called").body.to_string();
    assert!(
        last.contains("rejected by a person: not that file"),
        "{last}"
    );
    let messages = stored_messages(&h).await;
    assert_eq!(
        messages[2]["tool_execution"]["status"], "rejected",
        "{messages:?}"
    );
    assert_eq!(
        h.metric_sum(
            r#"switchboard_runtime_tool_approvals_total{outcome="rejected",tool="delete_file"}"#
        )
        .await,
        1.0
    );
}

async fn an_undecided_call_expires(db: Db) {
    let server = McpServer::start(None).await;
    let h = with_approval_timeout(db, &server, ModelProvider::Openai, 2).await;
    let (status, body) = ask(&h, DELETE).await;
    assert_eq!(status, 200, "{body}");
    let last = h.mock.requests().pop().expect("called").body.to_string();
    assert!(last.contains("within 2 seconds (expired)"), "{last}");
    let messages = stored_messages(&h).await;
    let session = messages[0]["session_id"].as_str().expect("session");
    let (status, list) = h
        .get("alice", &format!("/api/sessions/{session}/approvals"))
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"][0]["state"], "expired", "{list}");
    let approval = list["data"][0]["id"].as_str().expect("id");
    let (status, body) = h
        .post(
            "alice",
            &format!("/api/sessions/{session}/approvals/{approval}"),
            json!({"approve": true}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        h.metric_sum(
            r#"switchboard_runtime_tool_approvals_total{outcome="expired",tool="delete_file"}"#
        )
        .await,
        1.0
    );
}

async fn a_decision_taken_elsewhere_resumes_the_turn(db: Db) {
    let server = McpServer::start(None).await;
    let h = with_tools(db, &server, ModelProvider::Openai).await;
    let decide = async {
        let (_, pending) = pending_approval(&h).await;
        // Written to the database only, as another pod would: no in-process wake-up.
        let decided = h
            .state()
            .store
            .decide_tool_approval(
                pending["id"].as_str().expect("id"),
                "approved",
                Some("bob"),
                None,
            )
            .await
            .expect("decided");
        assert!(decided);
    };
    let ((status, body), ()) = tokio::join!(ask(&h, DELETE), decide);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"], "Tool results: deleted /tmp/x",
        "{body}"
    );
}

/// Reads a stream until its approval event: the body so far and the approval.
async fn read_to_approval(response: &mut reqwest::Response) -> (String, Value) {
    assert_eq!(response.status().as_u16(), 200);
    let mut body = String::new();
    while !body.contains("\"approval\":") {
        let chunk = response
            .chunk()
            .await
            .expect("read")
            .expect("more before the pause");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let frame = body
        .split("\n\n")
        .find(|f| f.contains("\"approval\":"))
        .expect("frame");
    let chunk: Value = serde_json::from_str(
        frame
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data"),
    )
    .expect("json");
    // A plain data event (no `event:` name, which older SDKs mishandle), a
    // chunk with no choices.
    assert!(frame.starts_with("data: "), "{frame}");
    assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
    assert_eq!(chunk["choices"], json!([]), "{chunk}");
    let event = chunk["approval"].clone();
    assert_eq!(event["tool"], "delete_file", "{event}");
    assert!(event["expires_at"].is_string(), "{event}");
    (body, event)
}

/// Reads the rest of a stream after `body`.
async fn read_to_end(response: &mut reqwest::Response, mut body: String) -> String {
    while let Some(chunk) = response.chunk().await.expect("read") {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    body
}

async fn a_stream_shows_the_pause_then_the_answer(db: Db) {
    let server = McpServer::start(None).await;
    let h = with_tools(db, &server, ModelProvider::Openai).await;
    // The OpenAI route.
    let mut response = h
        .as_user(reqwest::Method::POST, "/v1/chat/completions", "alice")
        .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": DELETE}]}))
        .send()
        .await
        .expect("sent");
    let (mut body, event) = read_to_approval(&mut response).await;
    assert_eq!(event["arguments"], r#"{"path":"/tmp/x"}"#, "{event}");
    // A quiet stream gets a keep-alive comment (every 15 s).
    while !body.contains("\n: keep-alive\n\n") {
        let chunk = response.chunk().await.expect("read").expect("still open");
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let session = event["session_id"].as_str().expect("session").to_owned();
    let approval = event["id"].as_str().expect("id");
    // A client reading the session meanwhile sees the pending approval.
    let (_, list) = h
        .get("alice", &format!("/api/sessions/{session}/approvals"))
        .await;
    assert_eq!(list["data"][0]["state"], "pending", "{list}");
    assert_eq!(list["data"][0]["id"], approval, "{list}");
    let (status, decided) = h
        .post(
            "alice",
            &format!("/api/sessions/{session}/approvals/{approval}"),
            json!({"approve": true}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    let body = read_to_end(&mut response, body).await;
    assert_eq!(
        streamed_text(&body),
        "Tool results: deleted /tmp/x",
        "{body}"
    );
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    // The sessions API's stream, rejected this time.
    let mut response = h
        .as_user(
            reqwest::Method::POST,
            &format!("/api/sessions/{session}/messages"),
            "alice",
        )
        .json(&json!({"stream": true, "content": r#"Again [[mock: tools=delete_file; args={"path":"/tmp/y"}]]"#}))
        .send()
        .await
        .expect("sent");
    let (body, event) = read_to_approval(&mut response).await;
    assert_eq!(event["arguments"], r#"{"path":"/tmp/y"}"#, "{event}");
    assert_eq!(event["session_id"], session.as_str(), "{event}");
    let approval = event["id"].as_str().expect("id");
    let (status, decided) = h
        .post(
            "alice",
            &format!("/api/sessions/{session}/approvals/{approval}"),
            json!({"approve": false, "reason": "keep it"}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    let body = read_to_end(&mut response, body).await;
    assert!(
        streamed_text(&body).contains("rejected by a person: keep it"),
        "{body}"
    );
    let (_, list) = h
        .get("alice", &format!("/api/sessions/{session}/approvals"))
        .await;
    let states: Vec<&str> = list["data"]
        .as_array()
        .expect("approvals")
        .iter()
        .filter_map(|a| a["state"].as_str())
        .collect();
    assert_eq!(states, ["approved", "rejected"], "{list}");
}

async fn a_reader_gone_during_an_approval_still_gets_the_whole_answer(db: Db) {
    let server = McpServer::start(None).await;
    let h = with_tools(db, &server, ModelProvider::Openai).await;
    // The page that asked reloads while the call waits: its stream is dropped.
    let mut response = h
        .as_user(reqwest::Method::POST, "/v1/chat/completions", "alice")
        .json(&json!({"model": "m", "stream": true, "messages": [{"role": "user",
            "content": r#"Delete [[mock: tools=delete_file; args={"path":"/tmp/x"}; chunk_delay_ms=50]]"#}]}))
        .send()
        .await
        .expect("sent");
    let (_, event) = read_to_approval(&mut response).await;
    drop(response);
    let session = event["session_id"].as_str().expect("session").to_owned();
    let approval = event["id"].as_str().expect("id");
    let (status, decided) = h
        .post(
            "alice",
            &format!("/api/sessions/{session}/approvals/{approval}"),
            json!({"approve": true}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    // The tool ran; the model's answer to it is read to its end and stored
    // whole (not cut off as "client disconnected").
    let last = switchboard_tests::eventually(Duration::from_secs(30), "the answer stored", || {
        let h = &h;
        async move {
            let messages = stored_messages(h).await;
            let last = messages.last()?.clone();
            (last["role"] == "assistant" && messages.len() >= 4).then_some(last)
        }
    })
    .await;
    assert_eq!(last["content"], "Tool results: deleted /tmp/x", "{last}");
    assert!(last["error"].is_null(), "{last}");
}

/// The client's own `get_weather` tool.
fn client_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
    }}])
}

/// The `tool_calls` pieces of a stream: (index, name if any).
fn streamed_calls(body: &str) -> Vec<(u64, Option<String>)> {
    sse_data(body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array().cloned())
        .flatten()
        .map(|t| {
            (
                t["index"].as_u64().expect("index"),
                t["function"]["name"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Asks as `user` with the client's own tools, whole or streamed; the answer
/// must end with `tool_calls` and show no server-side call. The client's calls
/// as (index, name) pieces (a whole answer's calls by position).
async fn client_calls(
    h: &Harness,
    user: &str,
    content: &str,
    stream: bool,
) -> Vec<(u64, Option<String>)> {
    let ask = json!({"model": "m", "stream": stream, "tools": client_tools(),
        "messages": [{"role": "user", "content": content}]});
    let request = h
        .as_user(reqwest::Method::POST, "/v1/chat/completions", user)
        .json(&ask);
    if stream {
        let (status, body) = h.stream_text(request).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            !body.contains("\"add\""),
            "server-side calls stay hidden: {body}"
        );
        assert!(body.contains(r#""finish_reason":"tool_calls""#), "{body}");
        return streamed_calls(&body);
    }
    let response = request.send().await.expect("sent");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .expect("tool calls")
        .iter()
        .enumerate()
        .map(|(i, t)| (i as u64, t["function"]["name"].as_str().map(str::to_owned)))
        .collect()
}

/// The stored messages of `user`'s only session.
async fn messages_of(h: &Harness, user: &str) -> Vec<Value> {
    let (_, sessions) = h.get(user, "/api/sessions").await;
    let id = sessions["data"][0]["id"]
        .as_str()
        .expect("session")
        .to_owned();
    let (_, page) = h.get(user, &format!("/api/sessions/{id}/messages")).await;
    page["data"].as_array().expect("messages").clone()
}

async fn an_answer_calling_both_kinds_runs_the_server_calls_first(db: Db) {
    let server = McpServer::start(None).await;
    for upstream in [ModelProvider::Openai, ModelProvider::Anthropic] {
        let h = with_tools(db, &server, upstream).await;
        for stream in [false, true] {
            // The model asks for `add` (the agent's) and `get_weather` (the
            // client's) at once; having read add's result, it asks for the
            // weather again.
            let user = if stream { "bob" } else { "alice" };
            let before = h.mock.requests().len();
            let calls = client_calls(
                &h,
                user,
                r#"Sum and weather [[mock: tools=add,get_weather; args={"a":20,"b":22}|{"city":"Oslo"}; next=get_weather]]"#,
                stream,
            )
            .await;
            let named: Vec<_> = calls
                .iter()
                .filter(|(_, name)| name.is_some())
                .cloned()
                .collect();
            assert_eq!(
                named,
                [(0, Some("get_weather".to_owned()))],
                "upstream {upstream:?}, stream {stream}"
            );
            assert!(calls.iter().all(|(i, _)| *i == 0), "{calls:?}");
            // Two model calls: the second saw add's result and no call of the client's.
            let requests = h.mock.requests();
            assert_eq!(requests.len() - before, 2, "{upstream:?} stream {stream}");
            let second = requests[requests.len() - 1].body["messages"].to_string();
            assert!(second.contains("42"), "{second}");
            assert!(
                !second.contains("\"get_weather\""),
                "the held-back call is not in the history: {second}"
            );
            // Stored: the server-side call and its result, then the client's call.
            let messages = messages_of(&h, user).await;
            let shape: Vec<(String, Vec<String>)> = messages
                .iter()
                .map(|m| {
                    let names = m["tool_calls"]
                        .as_array()
                        .map(|calls| {
                            calls
                                .iter()
                                .filter_map(|c| c["function"]["name"].as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default();
                    (m["role"].as_str().unwrap_or_default().to_owned(), names)
                })
                .collect();
            assert_eq!(
                shape,
                [
                    ("user".to_owned(), vec![]),
                    ("assistant".to_owned(), vec!["add".to_owned()]),
                    ("tool".to_owned(), vec![]),
                    ("assistant".to_owned(), vec!["get_weather".to_owned()]),
                ],
                "{messages:?}"
            );
            assert_eq!(messages[2]["tool_execution"]["output"], "42");
        }
    }
}

async fn at_the_step_limit_a_mixed_answer_returns_the_client_calls(db: Db) {
    let server = McpServer::start(None).await;
    let h = with_tools(db, &server, ModelProvider::Openai).await;
    for stream in [false, true] {
        let user = if stream { "bob" } else { "alice" };
        // A model that always asks for both: add runs at steps 1 and 2; at
        // step 3 (maxSteps) the client gets its call, add is not run again.
        let calls = client_calls(
            &h,
            user,
            r#"Loop both [[mock: tools=add,get_weather; args={"a":1,"b":1}|{"city":"Oslo"}; loop=true]]"#,
            stream,
        )
        .await;
        assert!(
            calls.iter().all(|(i, _)| *i == 0),
            "numbered from 0: {calls:?}"
        );
        let names: Vec<String> = calls.into_iter().filter_map(|(_, name)| name).collect();
        assert_eq!(names, ["get_weather"], "stream {stream}");
        let runs = messages_of(&h, user)
            .await
            .iter()
            .filter(|m| m["tool_execution"]["tool"] == "add")
            .count();
        assert_eq!(runs, 2, "stream {stream}");
    }
}

async fn an_admin_decides_a_waiting_call(db: Db) {
    let server = McpServer::start(None).await;
    let h = with_tools(db, &server, ModelProvider::Openai).await;
    let decide = async {
        let (session, pending) = pending_approval(&h).await;
        let approval = pending["id"].as_str().expect("id");
        // The admin sees it among every session's pending calls.
        let (status, page) = h.admin_get("/api/admin/approvals?user=alice").await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["data"][0]["id"], approval, "{page}");
        assert_eq!(page["data"][0]["session_id"], session.as_str(), "{page}");
        let (status, body) = h
            .json(
                h.client
                    .post(h.url(&format!("/api/admin/approvals/{approval}")))
                    .bearer_auth(common::ADMIN_KEY)
                    .json(&json!({"approve": true})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["decided_by"], "admin", "{body}");
    };
    let ((status, body), ()) = tokio::join!(ask(&h, DELETE), decide);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"], "Tool results: deleted /tmp/x",
        "{body}"
    );
}

on_both_databases!(
    an_approved_call_runs,
    an_answer_calling_both_kinds_runs_the_server_calls_first,
    at_the_step_limit_a_mixed_answer_returns_the_client_calls,
    an_admin_decides_a_waiting_call,
    a_reader_gone_during_an_approval_still_gets_the_whole_answer,
    a_rejected_call_tells_the_model_why,
    an_undecided_call_expires,
    a_stream_shows_the_pause_then_the_answer,
    a_decision_taken_elsewhere_resumes_the_turn,
    a_server_tool_call_is_run_stored_and_listed,
    parallel_calls_errors_and_timeouts_go_back_to_the_model,
    invalid_arguments_and_the_step_limit,
    streamed_turns_run_server_tools_without_showing_them,
    a_dead_source_leaves_turns_without_its_tools,
);

/// Two runtime processes: the caller offers the callee as the tool
/// `ask_helper_bot`; the callee's `agent.caller` key file opens its agent-call
/// route, and nothing else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_agent_answers_as_a_tool() {
    use common::{API_KEY, RuntimeProcess, TempDir};
    const AGENT_KEY: &str = "agent-key-for-caller";
    let mock = MockLlm::start().await.expect("mock starts");
    let keys = TempDir::new();
    std::fs::write(keys.0.join("agent.caller"), AGENT_KEY).expect("key file");
    let model = format!(
        "model: {{provider: openai, name: mock-gpt, baseUrl: \"{}\", apiKeyEnv: UPSTREAM_KEY, timeoutSeconds: 5}}\n\
         database: {{sqlitePath: \"{{dir}}/rt.db\"}}\n",
        mock.openai_base_url()
    );
    let callee = RuntimeProcess::spawn(
        &format!(
            "agent: {{name: helper-bot}}\n{model}auth: {{keysDir: \"{}\"}}\n",
            keys.0.display()
        ),
        &[("UPSTREAM_KEY", "sk-upstream")],
    )
    .await;
    let caller = RuntimeProcess::spawn(
        &format!(
            "agent: {{name: caller}}\n{model}tools:\n  sources:\n  - {{name: helper-bot, kind: Agent, url: \"{}\", keyEnv: CALLEE_KEY, timeoutSeconds: 10, description: \"Knows everything\"}}\n",
            callee.base
        ),
        &[("UPSTREAM_KEY", "sk-upstream"), ("CALLEE_KEY", AGENT_KEY)],
    )
    .await;
    let client = reqwest::Client::new();
    let answer: Value = client
        .post(format!("{}/v1/chat/completions", caller.base))
        .bearer_auth(API_KEY)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": r#"Ask [[mock: tools=ask_helper_bot; args={"message":"What is 2+2?"}]]"#}]}))
        .send()
        .await
        .expect("caller answers")
        .json()
        .await
        .expect("json");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Tool results: Echo: What is 2+2?",
        "{answer}\ncaller log:\n{}\ncallee log:\n{}",
        caller.log(),
        callee.log()
    );
    let offered = mock.requests()[0].body["tools"].to_string();
    assert!(offered.contains("Knows everything"), "{offered}");
    // The agent-call route: only the agent key opens it; the agent key opens nothing else.
    let call = |key: &'static str, path: &'static str| {
        client
            .post(format!("{}{path}", callee.base))
            .bearer_auth(key)
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    for (key, path, status) in [
        (AGENT_KEY, "/agents/v1/chat/completions", 200),
        (API_KEY, "/agents/v1/chat/completions", 401),
        ("wrong-key", "/agents/v1/chat/completions", 401),
        (AGENT_KEY, "/v1/chat/completions", 401),
    ] {
        let response = call(key, path).await.expect("callee answers");
        assert_eq!(response.status().as_u16(), status, "{path} with {key}");
    }
}
