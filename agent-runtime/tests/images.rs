//! Image parts and the models that accept them (`acceptsImages` on each model of
//! the chain): a prompt carrying an image (in this request's message or earlier in
//! the history sent) skips a model that does not accept images for the next one
//! that does, counted as a skip, whole and streamed; when no model of the agent
//! accepts images the request is a 400 naming the first image part, and nothing is
//! sent upstream or stored.

mod common;

use common::{Db, Harness, assert_error};
use crds::runtime_config::{ModelConfig, RuntimeConfig};
use reqwest::Method;
use serde_json::{Value, json};
use switchboard_tests::mock_llm::MockLlm;

const IMAGE: &str = "data:image/png;base64,iVBORw0KGgo=";

/// The primary (`mock-gpt`) does not accept images; a fallback `mock-vision`
/// accepts them when `vision_fallback`, else a text-only `mock-text` follows.
fn chain(vision_fallback: bool) -> impl FnOnce(&mut RuntimeConfig, &MockLlm) {
    move |config, mock| {
        config.model.accepts_images = false;
        config.fallbacks = vec![ModelConfig {
            name: if vision_fallback {
                "mock-vision"
            } else {
                "mock-text"
            }
            .into(),
            base_url: Some(mock.openai_base_url()),
            timeout_seconds: 2,
            accepts_images: vision_fallback,
            ..ModelConfig::default()
        }];
    }
}

fn with_image(text: &str) -> Value {
    json!({"role": "user", "content": [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": IMAGE}}
    ]})
}

async fn whole(h: &Harness, messages: Value) -> (u16, Value) {
    h.post(
        "alice",
        "/v1/chat/completions",
        json!({"model": "m", "messages": messages}),
    )
    .await
}

async fn streamed(h: &Harness, messages: Value) -> (u16, String) {
    h.stream_text(
        h.as_user(Method::POST, "/v1/chat/completions", "alice")
            .json(&json!({"model": "m", "stream": true, "messages": messages})),
    )
    .await
}

/// The models the mock was asked since the last look, in order.
fn models_asked(h: &Harness, seen: &mut usize) -> Vec<String> {
    let requests = h.mock.requests();
    let new = requests
        .iter()
        .skip(*seen)
        .filter_map(|r| r.model().map(str::to_owned))
        .collect();
    *seen = requests.len();
    new
}

async fn skips(h: &Harness, model: &str) -> f64 {
    h.metric_sum(&format!(
        "switchboard_runtime_upstream_skips_total{{model=\"{model}\",reason=\"images\"}}"
    ))
    .await
}

async fn a_model_that_does_not_accept_images_is_skipped(db: Db) {
    let h = Harness::start_with(db, chain(true)).await;
    let mut seen = 0;
    // Text only: the primary answers.
    let (status, body) = whole(&h, json!([{"role": "user", "content": "hi"}])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(models_asked(&h, &mut seen), ["mock-gpt"]);

    // An image in this request's message: the primary is skipped, whole...
    let (status, body) = whole(&h, json!([with_image("What is this?")])).await;
    assert_eq!(status, 200, "{body}");
    let sent = h.mock.requests().pop().expect("called").body;
    assert_eq!(sent["messages"][1]["content"][1]["image_url"]["url"], IMAGE);
    assert_eq!(models_asked(&h, &mut seen), ["mock-vision"]);
    assert_eq!(skips(&h, "mock-gpt").await, 1.0);

    // ...and streamed.
    let (status, text) = streamed(&h, json!([with_image("And this?")])).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(models_asked(&h, &mut seen), ["mock-vision"]);
    assert_eq!(skips(&h, "mock-gpt").await, 2.0);

    // An image earlier in the history sent counts too, though the last message
    // is text.
    let history = json!([
        with_image("What is this?"),
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "What colour is it?"}
    ]);
    let (status, body) = whole(&h, history).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(models_asked(&h, &mut seen), ["mock-vision"]);
    assert_eq!(skips(&h, "mock-gpt").await, 3.0);
    assert_eq!(skips(&h, "mock-vision").await, 0.0);
}

async fn no_model_accepting_images_is_a_400_naming_the_first_image(db: Db) {
    let h = Harness::start_with(db, chain(false)).await;
    let mut seen = 0;
    let messages = json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [
            {"type": "text", "text": "Look:"},
            {"type": "text", "text": "this one"},
            {"type": "image_url", "image_url": {"url": IMAGE}},
            {"type": "image_url", "image_url": {"url": IMAGE}}
        ]}
    ]);
    let result = whole(&h, messages.clone()).await;
    assert_error(&result, 400, "unsupported_content");
    assert_eq!(
        result.1["error"]["param"], "messages[2].content[2]",
        "{}",
        result.1
    );
    let message = result.1["error"]["message"].as_str().expect("a message");
    assert!(
        message.contains("no model of this agent accepts images"),
        "{message}"
    );

    // Streamed: refused the same way, before any stream begins.
    let (status, text) = streamed(&h, messages).await;
    assert_eq!(status, 400, "{text}");
    let body: Value = serde_json::from_str(&text).expect("a JSON error body");
    assert_eq!(body["error"]["param"], "messages[2].content[2]", "{body}");

    // Nothing went upstream, nothing was stored; text still answers.
    assert!(models_asked(&h, &mut seen).is_empty());
    let (_, sessions) = h.get("alice", "/api/sessions").await;
    assert_eq!(sessions["pagination"]["total"], 0, "{sessions}");
    let (status, body) = whole(&h, json!([{"role": "user", "content": "hi"}])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(models_asked(&h, &mut seen), ["mock-gpt"]);
}

on_both_databases!(
    a_model_that_does_not_accept_images_is_skipped,
    no_model_accepting_images_is_a_400_naming_the_first_image,
);
