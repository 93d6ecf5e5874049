//! OTLP traces from the real binary: with `OTEL_EXPORTER_OTLP_ENDPOINT` set,
//! a local OTLP/HTTP receiver gets the request's server span (continuing the
//! caller's `traceparent`) and the turn's GenAI client span as its child, with
//! the semantic-convention attributes; a failing turn's span carries
//! `error.type`. With `OTEL_SDK_DISABLED=true` nothing is sent.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::{API_KEY, RuntimeProcess};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message as _;
use serde_json::json;
use switchboard_tests::mock_llm::MockLlm;
use switchboard_tests::wait::eventually;

/// Spans received, with the service name of their resource.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>);

impl Received {
    fn spans(&self) -> Vec<(String, Span)> {
        self.0.lock().expect("lock").clone()
    }
}

async fn receive(State(received): State<Received>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
    let mut spans = received.0.lock().expect("lock");
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| attribute(&r.attributes, "service.name"))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
        }
    }
    ""
}

/// Starts an OTLP/HTTP receiver; returns its base URL.
async fn start_receiver(received: Received) -> String {
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn value_string(value: &AnyValue) -> Option<String> {
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn attribute(
    attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(value_string)
}

fn config(mock: &MockLlm) -> String {
    format!(
        "agent: {{name: traced}}\n\
         model: {{provider: openai, name: mock-gpt, baseUrl: \"{}\", timeoutSeconds: 5}}\n\
         database: {{sqlitePath: \"{{dir}}/rt.db\"}}\n\
         limits: {{retryMaxAttempts: 1}}\n",
        mock.openai_base_url(),
    )
}

/// The mock, a receiver and the runtime binary exporting to it (batches every
/// 100 ms), with `env` added.
async fn traced_runtime(env: &[(&str, &str)]) -> (MockLlm, Received, RuntimeProcess) {
    let mock = MockLlm::start().await.expect("mock");
    let received = Received::default();
    let endpoint = start_receiver(received.clone()).await;
    let mut vars = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    vars.extend_from_slice(env);
    let runtime = RuntimeProcess::spawn(&config(&mock), &vars).await;
    (mock, received, runtime)
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_turns_are_exported_as_genai_spans_over_otlp() {
    let (_mock, received, runtime) = traced_runtime(&[("OTEL_SERVICE_NAME", "traced-agent")]).await;
    let client = reqwest::Client::new();
    let ok = client
        .post(format!("{}/v1/chat/completions", runtime.base))
        .bearer_auth(API_KEY)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(
            &json!({"messages": [{"role": "user", "content": "hello traces"}], "temperature": 0.5}),
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
    // Every model fails: the turn's span records why.
    let failed = client
        .post(format!("{}/v1/chat/completions", runtime.base))
        .bearer_auth(API_KEY)
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "[[mock: status=500]] down"}]}))
        .send()
        .await
        .expect("sent");
    assert!(failed.status().is_server_error(), "{}", failed.status());

    let spans = eventually(
        Duration::from_secs(20),
        "both turns' spans exported",
        || {
            let received = received.clone();
            async move {
                let spans = received.spans();
                let turns = spans
                    .iter()
                    .filter(|(_, s)| s.name == "chat mock-gpt")
                    .count();
                (turns >= 2).then_some(spans)
            }
        },
    )
    .await;
    assert!(spans.iter().all(|(service, _)| service == "traced-agent"));
    let trace_id = hex_bytes(TRACE_ID);
    let server = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "POST /v1/chat/completions" && s.trace_id == trace_id)
        .expect("server span in the caller's trace");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(server.parent_span_id, hex_bytes(CALLER_SPAN));
    assert_eq!(
        attribute(&server.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(&server.attributes, "http.route").as_deref(),
        Some("/v1/chat/completions")
    );

    let turn = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "chat mock-gpt" && s.trace_id == trace_id)
        .expect("turn span in the caller's trace");
    assert_eq!(
        turn.parent_span_id, server.span_id,
        "turn is the request's child"
    );
    assert_eq!(turn.kind, SpanKind::Client as i32);
    let attr = |key: &str| attribute(&turn.attributes, key);
    assert_eq!(attr("gen_ai.operation.name").as_deref(), Some("chat"));
    assert_eq!(attr("gen_ai.provider.name").as_deref(), Some("openai"));
    assert_eq!(attr("gen_ai.request.model").as_deref(), Some("mock-gpt"));
    assert_eq!(attr("gen_ai.response.model").as_deref(), Some("mock-gpt"));
    assert_eq!(attr("gen_ai.request.temperature").as_deref(), Some("0.5"));
    assert_eq!(
        attr("gen_ai.response.finish_reasons").as_deref(),
        Some("stop")
    );
    assert!(attr("gen_ai.conversation.id").is_some_and(|id| !id.is_empty()));
    let input: u64 = attr("gen_ai.usage.input_tokens")
        .and_then(|v| v.parse().ok())
        .expect("input tokens");
    let output: u64 = attr("gen_ai.usage.output_tokens")
        .and_then(|v| v.parse().ok())
        .expect("output tokens");
    assert!(input > 0 && output > 0, "{input} {output}");
    // Message content is not an attribute.
    assert!(
        turn.attributes.iter().all(|kv| kv
            .value
            .as_ref()
            .and_then(value_string)
            .is_none_or(|v| !v.contains("hello traces"))),
        "{:?}",
        turn.attributes
    );

    let failed_turn = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "chat mock-gpt" && s.trace_id != trace_id)
        .expect("failed turn span");
    assert_eq!(
        attribute(&failed_turn.attributes, "error.type").as_deref(),
        Some("server_error")
    );
    assert_eq!(
        failed_turn.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_are_execute_tool_spans_under_the_turn() {
    let mock = MockLlm::start().await.expect("mock");
    let received = Received::default();
    let endpoint = start_receiver(received.clone()).await;
    // An agent source nobody answers: the call fails fast, its error goes to the model.
    let closed = switchboard_tests::ClosedPort::new();
    let nobody = closed.url("");
    let config = format!(
        "{}tools:\n  sources:\n  - {{name: nobody, kind: Agent, url: \"{nobody}\", timeoutSeconds: 5}}\n",
        config(&mock)
    );
    let runtime = RuntimeProcess::spawn(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", runtime.base))
        .bearer_auth(API_KEY)
        .json(&json!({"messages": [{"role": "user", "content": r#"[[mock: tools=ask_nobody; args={"message":"hi"}]] ask"#}]}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let content = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("");
    assert!(content.contains("could not be reached"), "{answer}");
    let spans = eventually(Duration::from_secs(20), "the tool span exported", || {
        let received = received.clone();
        async move {
            let spans = received.spans();
            let done = spans
                .iter()
                .any(|(_, s)| s.name == "execute_tool ask_nobody")
                && spans.iter().any(|(_, s)| s.name == "chat mock-gpt");
            done.then_some(spans)
        }
    })
    .await;
    let tool = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "execute_tool ask_nobody")
        .expect("tool span");
    let turn = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "chat mock-gpt")
        .expect("turn span");
    assert_eq!(
        tool.parent_span_id, turn.span_id,
        "the call is the turn's child"
    );
    let attr = |key: &str| attribute(&tool.attributes, key);
    assert_eq!(
        attr("gen_ai.operation.name").as_deref(),
        Some("execute_tool")
    );
    assert_eq!(attr("gen_ai.tool.name").as_deref(), Some("ask_nobody"));
    assert!(attr("gen_ai.tool.call.id").is_some_and(|id| id.starts_with("call_")));
    assert_eq!(attr("error.type").as_deref(), Some("unavailable"));
    assert_eq!(
        tool.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_exported_when_the_sdk_is_disabled() {
    // The endpoint is set and the receiver runs; OTEL_SDK_DISABLED=true wins.
    let (_mock, received, mut runtime) = traced_runtime(&[("OTEL_SDK_DISABLED", "true")]).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", runtime.base))
        .bearer_auth(API_KEY)
        .json(&json!({"messages": [{"role": "user", "content": "quiet"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    // On SIGTERM the runtime flushes its spans before it exits: once it has exited,
    // everything it would have sent has arrived.
    runtime.terminate();
    let exit = tokio::time::timeout(Duration::from_secs(20), runtime.child.wait())
        .await
        .expect("the runtime exits after SIGTERM")
        .expect("exit status");
    assert!(exit.success(), "{exit:?}; log:\n{}", runtime.log());
    assert!(received.spans().is_empty(), "{:?}", received.spans());
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}
