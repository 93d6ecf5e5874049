//! Every error path answers with the right status and a JSON body
//! `{"error": {"code", "message", "type"}}`; client mistakes are 4xx, never 5xx.

mod common;

use agent_runtime::db::{NewMessage, NewSession};
use agent_runtime::domain::Role;
use common::{API_KEY, Db, Harness, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

async fn body_of(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text:?}"));
    (status, value)
}

async fn authentication_errors(db: Db) {
    let h = Harness::start(db).await;
    let missing = h
        .client
        .get(h.url("/v1/models"))
        .send()
        .await
        .expect("sent");
    assert_error(&body_of(missing).await, 401, "invalid_api_key");
    let wrong = h
        .client
        .get(h.url("/api/sessions"))
        .bearer_auth("nope")
        .send()
        .await
        .expect("sent");
    let wrong = body_of(wrong).await;
    assert_error(&wrong, 401, "invalid_api_key");
    assert_eq!(wrong.1["error"]["type"], "authentication_error");
    // Even a malformed body is refused for the key first.
    let r = h
        .client
        .post(h.url("/v1/chat/completions"))
        .body("{")
        .send()
        .await
        .expect("sent");
    assert_error(&body_of(r).await, 401, "invalid_api_key");
    // Operational endpoints stay open.
    for path in ["/healthz", "/readyz", "/metrics", "/api/openapi.json"] {
        let r = h.client.get(h.url(path)).send().await.expect("sent");
        assert_eq!(r.status(), 200, "{path}");
    }
}

async fn malformed_requests_are_400s(db: Db) {
    let h = Harness::start(db).await;
    // A JSON body posted with the API key; its status and JSON answer.
    let post = |path: &str, body: &'static str| {
        let request = h
            .client
            .post(h.url(path))
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body);
        async move { body_of(request.send().await.expect("sent")).await }
    };
    let r = post("/v1/chat/completions", "{\"messages\": [").await;
    assert_error(&r, 400, "invalid_json");
    assert_eq!(r.1["error"]["type"], "invalid_request_error");
    let r = post("/v1/chat/completions", "{\"messages\": \"hi\"}").await;
    assert_error(&r, 400, "invalid_request");
    // The field at fault is named, as OpenAI's `param`, for type errors too.
    assert_eq!(r.1["error"]["param"], "messages", "{}", r.1);
    let r = post(
        "/v1/chat/completions",
        "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}",
    )
    .await;
    assert_error(&r, 400, "invalid_request");
    assert_eq!(r.1["error"]["param"], "messages[0].content", "{}", r.1);
    let r = post(
        "/v1/chat/completions",
        "{\"messages\": [], \"stream\": \"yes\"}",
    )
    .await;
    assert_error(&r, 400, "invalid_request");
    assert_eq!(r.1["error"]["param"], "stream", "{}", r.1);
    let r = post("/v1/chat/completions", "{\"model\": \"m\"}").await;
    assert_error(&r, 400, "invalid_request");
    assert_eq!(r.1["error"]["param"], "messages", "{}", r.1);
    // U+0000 is valid JSON but Postgres's text cannot hold it: refused alike on
    // both backends, naming the field (a 503 from the database before).
    let r = post(
        "/v1/chat/completions",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"a\\u0000b\"}]}",
    )
    .await;
    assert_error(&r, 400, "invalid_request");
    assert_eq!(r.1["error"]["param"], "messages[0].content", "{}", r.1);
    let r = post("/api/sessions", "{\"title\": \"a\\u0000b\"}").await;
    assert_error(&r, 400, "invalid_request");
    assert_eq!(r.1["error"]["param"], "title", "{}", r.1);
    if h.database_url().is_some() {
        // Should a NUL reach Postgres past the checks at the edge, it is still
        // the request's fault (400), not a database outage (503).
        let id = NewMessage::new_id();
        let message = NewMessage {
            id: NewMessage::new_id(),
            session_id: id.clone(),
            parent_id: None,
            role: Role::User,
            content: "a\0b".to_owned(),
            model: None,
            tokens_in: 1,
            tokens_out: 0,
            latency_ms: None,
            error: None,
            chain_hash: "hash".to_owned(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            author: None,
        };
        let session = NewSession {
            user_id: "u".to_owned(),
            channel: "api".to_owned(),
            external_id: None,
            title: None,
        };
        let err = h
            .state
            .store
            .create_session_with_messages(&id, session, &[message])
            .await
            .expect_err("Postgres refuses U+0000");
        let err = agent_runtime::error::ApiError::from(err);
        assert_eq!(err.status.as_u16(), 400, "{err}");
        assert_eq!(err.code, "invalid_request", "{err}");
    }
    let r = post("/v1/chat/completions", "[]").await;
    assert_error(&r, 400, "invalid_request");
    assert_eq!(r.1["error"].get("param"), Some(&Value::Null), "{}", r.1);
    let r = post("/v1/chat/completions", "{\"messages\": []}").await;
    assert_error(&r, 400, "invalid_request");
    let r = post(
        "/v1/chat/completions",
        "{\"messages\": [{\"role\": \"wizard\", \"content\": \"x\"}]}",
    )
    .await;
    assert_error(&r, 400, "invalid_request");
    let r = post(
        "/v1/chat/completions",
        "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}",
    )
    .await;
    assert_error(&r, 400, "unsupported_content");
    let r = post(
        "/v1/chat/completions",
        "{\"n\": 3, \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}",
    )
    .await;
    assert_error(&r, 400, "invalid_request");
    let r = post("/api/sessions", "[1, 2]").await;
    assert_error(&r, 400, "invalid_request");
    // No JSON content type.
    let r = h
        .client
        .post(h.url("/api/sessions"))
        .bearer_auth(API_KEY)
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_error(&body_of(r).await, 415, "unsupported_media_type");
    // Invalid user header value.
    let r = h
        .client
        .get(h.url("/api/sessions"))
        .bearer_auth(API_KEY)
        .header("x-switchboard-user", "")
        .send()
        .await
        .expect("sent");
    assert_error(&body_of(r).await, 400, "invalid_request");
    // Empty message to a session.
    let (_, s) = h.post("alice", "/api/sessions", json!({})).await;
    let id = s["id"].as_str().expect("id");
    assert_error(
        &h.post(
            "alice",
            &format!("/api/sessions/{id}/messages"),
            json!({"content": "  "}),
        )
        .await,
        400,
        "invalid_request",
    );
    assert_error(
        &h.post(
            "alice",
            &format!("/api/sessions/{id}/messages"),
            json!({"text": "hi"}),
        )
        .await,
        400,
        "invalid_request",
    );
    assert_error(
        &h.json(
            h.as_user(Method::PATCH, &format!("/api/sessions/{id}"), "alice")
                .json(&json!({"title": 7})),
        )
        .await,
        400,
        "invalid_request",
    );
}

async fn size_limits(db: Db) {
    let h = Harness::start_with(db, |config, _| {
        config.limits.max_request_bytes = 64 * 1024;
        config.limits.max_message_chars = 1000;
    })
    .await;
    let huge = "x".repeat(100 * 1024);
    let r = h
        .chat("alice", json!([{"role": "user", "content": huge}]))
        .await;
    assert_error(&r, 413, "payload_too_large");
    let long = "y".repeat(1001);
    let r = h
        .chat("alice", json!([{"role": "user", "content": long}]))
        .await;
    assert_error(&r, 400, "message_too_long");
    let (_, s) = h.post("alice", "/api/sessions", json!({})).await;
    let id = s["id"].as_str().expect("id");
    let r = h
        .post(
            "alice",
            &format!("/api/sessions/{id}/messages"),
            json!({"content": "z".repeat(1001)}),
        )
        .await;
    assert_error(&r, 400, "message_too_long");
    // Nothing was stored for refused requests.
    let (_, list) = h.get("alice", "/api/sessions").await;
    assert_eq!(list["pagination"]["total"], 1);
}

async fn unknown_things_are_404_and_405(db: Db) {
    let h = Harness::start(db).await;
    for path in [
        "/api/sessions/does-not-exist",
        "/api/sessions/does-not-exist/messages",
        "/api/sessions/does-not-exist/history",
    ] {
        assert_error(&h.get("alice", path).await, 404, "session_not_found");
    }
    assert_error(
        &h.post("alice", "/api/sessions/nope/archive", json!({}))
            .await,
        404,
        "session_not_found",
    );
    assert_error(
        &h.post(
            "alice",
            "/api/sessions/nope/messages",
            json!({"content": "hi"}),
        )
        .await,
        404,
        "session_not_found",
    );
    let r = h
        .client
        .get(h.url("/v2/whatever"))
        .send()
        .await
        .expect("sent");
    assert_error(&body_of(r).await, 404, "route_not_found");
    let r = h
        .client
        .delete(h.url("/v1/models"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("sent");
    assert_error(&body_of(r).await, 405, "method_not_allowed");
}

async fn upstream_failures_map_to_gateway_errors(db: Db) {
    let h = Harness::start(db).await;
    let r = h
        .chat(
            "alice",
            json!([{"role": "user", "content": "a [[mock:status=500]]"}]),
        )
        .await;
    assert_error(&r, 502, "upstream_error");
    let response = h
        .as_user(Method::POST, "/v1/chat/completions", "alice")
        .json(&json!({"messages": [{"role": "user", "content": "b [[mock:status=429; retry_after=7]]"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    assert_error(&body_of(response).await, 429, "upstream_rate_limited");
    let r = h
        .chat(
            "alice",
            json!([{"role": "user", "content": "c [[mock:fault=hang]]"}]),
        )
        .await;
    assert_error(&r, 504, "upstream_timeout");
    let r = h
        .chat(
            "alice",
            json!([{"role": "user", "content": "d [[mock:fault=malformed]]"}]),
        )
        .await;
    assert_error(&r, 502, "upstream_error");
    // A stream whose upstream refuses is an HTTP error, not a broken stream.
    let response = h
        .as_user(Method::POST, "/v1/chat/completions", "alice")
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "e [[mock:status=503]]"}]}))
        .send()
        .await
        .expect("sent");
    assert_error(&body_of(response).await, 502, "upstream_error");
    // The failures are recorded with the user's messages.
    let (_, list) = h.get("alice", "/api/sessions?limit=100").await;
    assert_eq!(list["pagination"]["total"], 5);
    for session in list["data"].as_array().expect("data") {
        let id = session["id"].as_str().expect("id");
        let (_, messages) = h
            .get("alice", &format!("/api/sessions/{id}/messages"))
            .await;
        assert_eq!(messages["data"][0]["role"], "user");
        assert!(
            messages["data"][1]["error"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{messages}"
        );
    }
}

async fn readiness_reports_the_database(db: Db) {
    let h = Harness::start(db).await;
    let r = h.client.get(h.url("/readyz")).send().await.expect("sent");
    assert_eq!(r.status(), 200);
    h.state.store.close().await;
    let r = h.client.get(h.url("/readyz")).send().await.expect("sent");
    assert_error(&body_of(r).await, 503, "database_unreachable");
    // A request needing the database is a 503 with a JSON body, not a hang or a 500.
    assert_error(
        &h.get("alice", "/api/sessions").await,
        503,
        "database_error",
    );
}

on_both_databases!(
    authentication_errors,
    malformed_requests_are_400s,
    size_limits,
    unknown_things_are_404_and_405,
    upstream_failures_map_to_gateway_errors,
    readiness_reports_the_database,
);
