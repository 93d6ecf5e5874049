//! Per-channel routes (`/channels/{name}/...`): the channel comes from the path;
//! unknown channels answer 404, disabled ones 503; features, greeting, language
//! and CORS follow the channel.

mod common;

use common::{API_KEY, Db, Harness};
use crds::runtime_config::{ChannelConfig, ChannelFeatures};
use reqwest::Method;
use serde_json::json;

async fn start(db: Db) -> Harness {
    Harness::start_with(db, |config, _| {
        config.fallback_responses = [
            ("de".to_owned(), "Entschuldigung, gerade nicht.".to_owned()),
            ("en".to_owned(), "Sorry, not right now.".to_owned()),
        ]
        .into_iter()
        .collect();
        config.channels = vec![
            ChannelConfig {
                name: "web".into(),
                language: Some("de".into()),
                greeting: Some("Hallo! Wie kann ich helfen?".into()),
                allowed_origins: vec!["https://chat.example.com".into()],
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
                name: "off".into(),
                enabled: false,
                ..ChannelConfig::default()
            },
        ];
    })
    .await
}

fn chat(text: &str, stream: bool) -> serde_json::Value {
    json!({"model": "test-agent", "stream": stream, "messages": [{"role": "user", "content": text}]})
}

async fn per_channel_routes_serve_the_api(db: Db) {
    let h = start(db).await;
    let (status, body) = h.get("alice", "/channels/web/v1/models").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["id"], "test-agent");

    let (status, body) = h
        .json(
            h.as_user(Method::POST, "/channels/web/v1/chat/completions", "alice")
                .json(&chat("hello there", false)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let session = h.get("alice", "/channels/web/api/sessions").await.1["data"][0].clone();
    assert_eq!(
        session["channel"], "web",
        "the session belongs to the path's channel: {session}"
    );

    // No API key: refused like the root routes.
    let response = h
        .client
        .get(h.url("/channels/web/v1/models"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 401);
    // Unknown sub-route of a known channel: JSON 404.
    let (status, body) = h.get("alice", "/channels/web/v1/nothing").await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
}

async fn unknown_and_disabled_channels_are_refused(db: Db) {
    let h = start(db).await;
    let (status, body) = h.get("alice", "/channels/nope/v1/models").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "channel_not_found");

    let (status, body) = h
        .json(
            h.as_user(Method::POST, "/channels/off/v1/chat/completions", "alice")
                .json(&chat("hi", false)),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "channel_disabled");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("disabled"),
        "{body}"
    );
    // The header on the root routes says the same.
    let (status, body) = h
        .json(
            h.as_user(Method::POST, "/v1/chat/completions", "alice")
                .header("x-switchboard-channel", "off")
                .json(&chat("hi", false)),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(h.mock.request_count(), 0, "nothing reached the model");
}

async fn channel_features_are_enforced(db: Db) {
    let h = start(db).await;
    let (status, body) = h
        .json(
            h.as_user(
                Method::POST,
                "/channels/locked/v1/chat/completions",
                "alice",
            )
            .json(&chat("hi", true)),
        )
        .await;
    assert_eq!(status, 403, "streaming off: {body}");
    assert_eq!(body["error"]["code"], "feature_disabled");
    let (status, body) = h.get("alice", "/channels/locked/api/sessions").await;
    assert_eq!(status, 403, "history off: {body}");
    let (status, body) = h
        .get("alice", "/channels/locked/api/sessions/search?q=hi")
        .await;
    assert_eq!(status, 403, "search off: {body}");
    // The same routes on a channel with every feature work.
    assert_eq!(h.get("alice", "/channels/web/api/sessions").await.0, 200);
    assert_eq!(
        h.get("alice", "/channels/web/api/sessions/search?q=hi")
            .await
            .0,
        200
    );
}

async fn greeting_and_language_follow_the_channel(db: Db) {
    let h = start(db).await;
    let (status, session) = h
        .json(
            h.as_user(Method::POST, "/channels/web/api/sessions", "bob")
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().expect("id");
    let (_, messages) = h
        .get("bob", &format!("/channels/web/api/sessions/{id}/messages"))
        .await;
    assert_eq!(messages["data"][0]["role"], "assistant", "{messages}");
    assert_eq!(
        messages["data"][0]["content"],
        "Hallo! Wie kann ich helfen?"
    );
    // A channel without a greeting starts empty.
    let (_, plain) = h
        .json(
            h.as_user(Method::POST, "/channels/locked/api/sessions", "bob")
                .json(&json!({})),
        )
        .await;
    assert_eq!(plain["message_count"], 0, "{plain}");

    // Every model fails: the fallback response is in the channel's language.
    let failing = chat("help [[mock: status=500]]", false);
    let (status, body) = h
        .json(
            h.as_user(Method::POST, "/channels/web/v1/chat/completions", "bob")
                .json(&failing),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Entschuldigung, gerade nicht."
    );
    let (_, body) = h
        .json(
            h.as_user(Method::POST, "/v1/chat/completions", "bob")
                .header("accept-language", "en")
                .json(&chat("again [[mock: status=500]]", false)),
        )
        .await;
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Sorry, not right now."
    );
}

async fn allowed_origins_get_cors_headers(db: Db) {
    let h = start(db).await;
    let preflight = h
        .client
        .request(Method::OPTIONS, h.url("/channels/web/v1/chat/completions"))
        .header("origin", "https://chat.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(preflight.status(), 204);
    let headers = preflight.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://chat.example.com"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .expect("text")
            .contains("POST")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .expect("text")
            .contains("authorization")
    );

    let other = h
        .client
        .request(Method::OPTIONS, h.url("/channels/web/v1/chat/completions"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("sent");
    assert_eq!(other.status(), 403);
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let actual = h
        .client
        .get(h.url("/channels/web/v1/models"))
        .bearer_auth(API_KEY)
        .header("origin", "https://chat.example.com")
        .send()
        .await
        .expect("sent");
    assert_eq!(actual.status(), 200);
    assert_eq!(
        actual.headers()["access-control-allow-origin"],
        "https://chat.example.com"
    );
    let not_listed = h
        .client
        .get(h.url("/channels/locked/v1/models"))
        .bearer_auth(API_KEY)
        .header("origin", "https://chat.example.com")
        .send()
        .await
        .expect("sent");
    assert!(
        not_listed
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

on_both_databases!(
    per_channel_routes_serve_the_api,
    unknown_and_disabled_channels_are_refused,
    channel_features_are_enforced,
    greeting_and_language_follow_the_channel,
    allowed_origins_get_cors_headers,
);

#[tokio::test]
async fn the_openapi_document_lists_the_channel_routes() {
    let h = Harness::start(Db::Sqlite).await;
    let (status, doc) = h.json(h.client.get(h.url("/api/openapi.json"))).await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    for path in [
        "/channels/{name}/v1/chat/completions",
        "/channels/{name}/v1/models",
        "/channels/{name}/api/sessions",
        "/channels/{name}/api/sessions/{id}/messages",
        "/channels/{name}/webhook",
    ] {
        assert!(paths.contains_key(path), "{path} missing from the document");
    }
    let params = &doc["paths"]["/channels/{name}/v1/models"]["get"]["parameters"];
    let has_name = params
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["name"] == "name")
        || doc["paths"]["/channels/{name}/v1/models"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "name");
    assert!(
        has_name,
        "the name parameter is described: {}",
        doc["paths"]["/channels/{name}/v1/models"]
    );
}
