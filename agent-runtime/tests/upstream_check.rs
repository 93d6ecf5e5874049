//! The upstream reachability check that keeps an idle agent's reported health
//! honest: a model at a closed port or behind a refused key is found unreachable
//! without a chat call, an agent whose every model is unreachable reports
//! `upstreamHealthy: false` (which the operator turns into `ModelReachable=False`
//! and phase `Degraded`, see operator/src/agent/status.rs), and a reachable model
//! costs a GET of its models list, never a chat completion.

use std::sync::Arc;
use std::time::Duration;

use agent_runtime::providers::{ChatProvider, ModelChain, build_provider, http_client};
use agent_runtime::status_report::{Health, ReporterConfig, Transitions, status_patch};
use axum::http::StatusCode;
use crds::runtime_config::{ModelConfig, ModelProvider};
use switchboard_tests::ClosedPort;
use switchboard_tests::mock_llm::MockLlm;

/// A server that refuses every key, as a provider does with a wrong one.
async fn refusing_server() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#,
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

fn model(provider: ModelProvider, name: &str, base_url: String) -> Arc<dyn ChatProvider> {
    let config = ModelConfig {
        provider,
        name: name.to_owned(),
        base_url: Some(base_url),
        timeout_seconds: 5,
        ..ModelConfig::default()
    };
    build_provider(
        http_client().expect("client"),
        &config,
        Some("sk-test".to_owned()),
    )
}

fn reported(chain: &ModelChain) -> serde_json::Value {
    let config = ReporterConfig::from_env("support", |name| match name {
        "POD_NAME" => Some("support-0".to_owned()),
        "POD_NAMESPACE" => Some("tenant-a".to_owned()),
        _ => None,
    })
    .expect("pod identity");
    let health = Health {
        ready: true,
        upstream_healthy: chain.healthy(),
        active_sessions: 0,
        messages_total: 0,
        usage: None,
        tool_problems: None,
    };
    status_patch(
        &config,
        health,
        k8s_openapi::jiff::Timestamp::now(),
        &mut Transitions::default(),
    )["status"]["runtime"][0]
        .clone()
}

#[tokio::test]
async fn an_agent_whose_every_model_is_unreachable_reports_it() {
    let closed = ClosedPort::new();
    let chain = ModelChain::new(vec![
        model(ModelProvider::Openai, "gpt-4o-mini", closed.url("/v1")),
        model(
            ModelProvider::Anthropic,
            "claude-haiku-4-5",
            refusing_server().await,
        ),
    ]);
    assert!(chain.healthy(), "healthy until something says otherwise");
    assert_eq!(reported(&chain)["upstreamHealthy"], true);

    let unreachable = chain.check_reachability(Duration::ZERO).await;
    let names: Vec<&str> = unreachable.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        names,
        ["gpt-4o-mini", "claude-haiku-4-5"],
        "{unreachable:?}"
    );
    let why: Vec<String> = unreachable.iter().map(|(_, e)| e.to_string()).collect();
    assert!(why[0].contains("connection"), "{why:?}");
    assert!(why[1].contains("401"), "{why:?}");
    assert!(
        why.iter().all(|w| !w.contains("sk-test")),
        "no key in a message: {why:?}"
    );
    assert!(!chain.healthy());
    assert_eq!(reported(&chain)["upstreamHealthy"], false);
}

#[tokio::test]
async fn one_reachable_model_keeps_the_agent_healthy_without_a_chat_call() {
    let closed = ClosedPort::new();
    let mock = MockLlm::start().await.expect("mock");
    let chain = ModelChain::new(vec![
        model(ModelProvider::Openai, "gpt-4o-mini", closed.url("/v1")),
        model(ModelProvider::Openai, "mock-gpt", mock.openai_base_url()),
        model(
            ModelProvider::Anthropic,
            "mock-claude",
            mock.anthropic_base_url(),
        ),
    ]);
    let unreachable = chain.check_reachability(Duration::ZERO).await;
    assert_eq!(unreachable.len(), 1, "{unreachable:?}");
    assert!(chain.healthy(), "the fallbacks answer");
    assert_eq!(reported(&chain)["upstreamHealthy"], true);
    assert!(
        mock.requests().is_empty(),
        "a check spends no tokens: {:?}",
        mock.requests()
    );
}

#[tokio::test]
async fn a_model_judged_recently_is_not_checked_again() {
    let closed = ClosedPort::new();
    let chain = ModelChain::new(vec![model(
        ModelProvider::Openai,
        "gpt-4o-mini",
        closed.url("/v1"),
    )]);
    assert_eq!(
        chain
            .check_reachability(Duration::from_secs(3600))
            .await
            .len(),
        1
    );
    // Within the interval the verdict stands: no second check, still unhealthy.
    assert!(
        chain
            .check_reachability(Duration::from_secs(3600))
            .await
            .is_empty()
    );
    assert!(!chain.healthy());
}
