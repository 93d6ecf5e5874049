//! Channels are total: every request belongs to a declared channel. The root
//! routes belong to the declared default channel (`defaultChannel`) and answer
//! 404 naming the channel routes when there is none; a disabled, rate-limited
//! or feature-restricted channel cannot be reached another way (root, header,
//! channel routes, web page, webhook). And `modelAlias` names the model a
//! channel's OpenAI routes list, accept and echo.

mod common;

use common::{API_KEY, Db, Harness};
use crds::runtime_config::{
    ChannelConfig, ChannelFeatures, ChannelRateLimitConfig, ChannelType, WebhookConfig,
};
use reqwest::Method;
use serde_json::{Value, json};

fn chat(text: &str, stream: bool) -> Value {
    json!({"stream": stream, "messages": [{"role": "user", "content": text}]})
}

fn channels() -> Vec<ChannelConfig> {
    vec![
        ChannelConfig {
            name: "only".into(),
            enabled: false,
            ..ChannelConfig::default()
        },
        ChannelConfig {
            name: "tight".into(),
            channel_type: ChannelType::Openai,
            rate_limit: Some(ChannelRateLimitConfig {
                requests_per_minute: Some(2),
                requests_per_minute_per_user: None,
            }),
            model_alias: Some("helper-v2".into()),
            ..ChannelConfig::default()
        },
        ChannelConfig {
            name: "locked".into(),
            features: ChannelFeatures {
                history: false,
                search: false,
                streaming: false,
            },
            ..ChannelConfig::default()
        },
        ChannelConfig {
            name: "hooks".into(),
            channel_type: ChannelType::Webhook,
            enabled: false,
            webhook: Some(WebhookConfig {
                callback_url: "http://127.0.0.1:9/callback".into(),
                signing_key_env: "HOOK_KEY".into(),
                timestamp_tolerance_seconds: None,
            }),
            ..ChannelConfig::default()
        },
    ]
}

async fn start(db: Db, default_channel: Option<&str>) -> Harness {
    let default_channel = default_channel.map(str::to_owned);
    Harness::start_with(db, move |config, _| {
        config.channels = channels();
        config.default_channel = default_channel;
    })
    .await
}

async fn without_a_default_the_root_routes_belong_to_no_channel(db: Db) {
    let h = start(db, None).await;
    for (method, path) in [
        (Method::POST, "/v1/chat/completions"),
        (Method::GET, "/v1/models"),
        (Method::GET, "/api/sessions"),
        (Method::POST, "/api/sessions"),
    ] {
        let (status, body) = h
            .json(
                h.as_user(method.clone(), path, "alice")
                    .json(&chat("hi", false)),
            )
            .await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "no_default_channel", "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("/channels/tight/v1/") && message.contains("defaultChannel"),
            "the message names the channel routes: {message}"
        );
    }
    // The disabled only-channel of the issue: 503 on its route, 404 (not 200) on the root.
    let (status, _) = h
        .post(
            "alice",
            "/channels/only/v1/chat/completions",
            chat("hi", false),
        )
        .await;
    assert_eq!(status, 503);
    // Without a key the answer is 401 whatever the route: nothing about channels leaks.
    let r = h
        .client
        .get(h.url("/v1/models"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 401);
    assert_eq!(h.mock.request_count(), 0, "nothing reached the model");
}

async fn a_disabled_default_channel_closes_the_root_routes(db: Db) {
    let h = start(db, Some("only")).await;
    for path in ["/v1/chat/completions", "/channels/only/v1/chat/completions"] {
        let (status, body) = h.post("alice", path, chat("hi", false)).await;
        assert_eq!(status, 503, "{path}: {body}");
        assert_eq!(body["error"]["code"], "channel_disabled");
    }
    // Naming another channel by header does not reopen it either.
    let (status, _) = h
        .json(
            h.as_user(Method::POST, "/v1/chat/completions", "alice")
                .header("x-switchboard-channel", "only")
                .json(&chat("hi", false)),
        )
        .await;
    assert_eq!(status, 503);
    assert_eq!(h.mock.request_count(), 0, "nothing reached the model");
}

async fn a_restricted_default_channel_restricts_the_root_routes(db: Db) {
    let h = start(db, Some("locked")).await;
    let (status, body) = h
        .post("alice", "/v1/chat/completions", chat("hi", true))
        .await;
    assert_eq!(status, 403, "streaming off on the root too: {body}");
    assert_eq!(body["error"]["code"], "feature_disabled");
    assert_eq!(h.get("alice", "/api/sessions").await.0, 403, "history off");
    assert_eq!(
        h.get("alice", "/api/sessions/search?q=hi").await.0,
        403,
        "search off"
    );
    let (status, body) = h
        .post("alice", "/v1/chat/completions", chat("hi", false))
        .await;
    assert_eq!(status, 200, "what the channel allows works: {body}");
}

async fn a_rate_limited_default_channel_counts_root_and_channel_requests_together(db: Db) {
    let h = start(db, Some("tight")).await;
    let (status, body) = h
        .post("alice", "/v1/chat/completions", chat("one", false))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = h
        .post(
            "bob",
            "/channels/tight/v1/chat/completions",
            chat("two", false),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for path in [
        "/v1/chat/completions",
        "/channels/tight/v1/chat/completions",
    ] {
        let (status, body) = h.post("carol", path, chat("three", false)).await;
        assert_eq!(
            status, 429,
            "{path}: the channel's 2 per minute are used: {body}"
        );
    }
}

async fn model_alias_names_the_channels_model(db: Db) {
    let h = start(db, Some("tight")).await;
    for path in ["/v1/models", "/channels/tight/v1/models"] {
        let (status, body) = h.get("alice", path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"][0]["id"], "helper-v2", "{path}: {body}");
        assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    }
    // A channel without an alias shows the agent's name.
    let (_, body) = h.get("alice", "/channels/locked/v1/models").await;
    assert_eq!(body["data"][0]["id"], "test-agent", "{body}");
    // The alias is accepted in `model` and echoed; without `model`, the alias.
    let (status, body) = h
        .post(
            "alice",
            "/channels/tight/v1/chat/completions",
            json!({"model": "helper-v2", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "helper-v2");
    let (status, body) = h
        .post("alice", "/v1/chat/completions", chat("again", false))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "helper-v2");
}

async fn a_disabled_webhook_channel_refuses_signed_messages(db: Db) {
    let h = start(db, None).await;
    // Refused before any signature is looked at: the channel is off.
    let r = h
        .client
        .post(h.url("/channels/hooks/webhook"))
        .json(&json!({"conversationId": "c1", "user": "u1", "text": "hi"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "channel_disabled", "{body}");
    // Its client routes are closed too, with the agent key.
    let r = h
        .client
        .post(h.url("/channels/hooks/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .json(&chat("hi", false))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 503);
    assert_eq!(h.mock.request_count(), 0);
}

on_both_databases!(
    without_a_default_the_root_routes_belong_to_no_channel,
    a_disabled_default_channel_closes_the_root_routes,
    a_restricted_default_channel_restricts_the_root_routes,
    a_rate_limited_default_channel_counts_root_and_channel_requests_together,
    model_alias_names_the_channels_model,
    a_disabled_webhook_channel_refuses_signed_messages,
);
