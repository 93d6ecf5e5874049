//! Durability: the user's message is stored while the upstream is called,
//! durable before anything of the answer is returned; a stream that fails
//! midway (upstream cut, reset, garbage, or the client leaving) leaves the
//! user message and the partial answer with its error.

mod common;

use std::time::Duration;

use common::{Db, Harness, sse_data};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use switchboard_tests::wait::eventually;

async fn only_session_messages(h: &Harness, user: &str) -> Vec<Value> {
    let (_, list) = h.get(user, "/api/sessions").await;
    let id = list["data"][0]["id"]
        .as_str()
        .expect("a session")
        .to_owned();
    let (_, messages) = h.get(user, &format!("/api/sessions/{id}/messages")).await;
    messages["data"].as_array().expect("messages").clone()
}

async fn user_message_is_stored_before_the_upstream_answers(db: Db) {
    let h = Harness::start(db).await;
    let request = h
        .as_user(Method::POST, "/v1/chat/completions", "alice")
        .json(
            &json!({"messages": [{"role": "user", "content": "slow one [[mock:latency=1500]]"}]}),
        );
    let pending = tokio::spawn(request.send());
    // The model has the request: the mock records it on arrival, then thinks for 1.5 s.
    eventually(Duration::from_secs(10), "the upstream call", || async {
        h.mock
            .requests()
            .iter()
            .any(|r| r.body.to_string().contains("slow one"))
            .then_some(())
    })
    .await;
    // The message is written alongside the model call: stored while the
    // model still thinks.
    let during = eventually(
        Duration::from_secs(10),
        "the user message stored",
        || async {
            let (_, list) = h.get("alice", "/api/sessions").await;
            if list["data"].as_array().is_none_or(|s| s.is_empty()) {
                return None;
            }
            Some(only_session_messages(&h, "alice").await)
        },
    )
    .await;
    assert!(
        !pending.is_finished(),
        "the model answered before the messages were read: {during:?}"
    );
    assert_eq!(
        during.len(),
        1,
        "only the user message while the model thinks: {during:?}"
    );
    assert_eq!(during[0]["role"], "user");
    let response = pending.await.expect("joined").expect("answered");
    assert_eq!(response.status(), 200);
    assert_eq!(only_session_messages(&h, "alice").await.len(), 2);
}

async fn stream_failing_midway_keeps_partial_answer_and_error(db: Db) {
    let h = Harness::start(db).await;
    for (user, fault) in [
        ("t", "truncate"),
        ("r", "reset"),
        ("m", "malformed"),
        ("h", "hang"),
    ] {
        let content = format!("one two three four [[mock:fault={fault}; after=2]]");
        let (status, body) =
            h.stream_text(h.as_user(Method::POST, "/v1/chat/completions", user).json(
                &json!({"stream": true, "messages": [{"role": "user", "content": content}]}),
            ))
            .await;
        assert_eq!(status, 200, "{fault}");
        let data = sse_data(&body);
        assert_ne!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{fault}: a failed stream must not claim success: {body}"
        );
        let last: Value = serde_json::from_str(data.last().expect("events")).expect("json");
        assert_eq!(
            last["error"]["code"], "upstream_stream_failed",
            "{fault}: {body}"
        );

        let messages = only_session_messages(&h, user).await;
        assert_eq!(messages.len(), 2, "{fault}: {messages:?}");
        assert_eq!(messages[0]["role"], "user");
        assert_eq!(messages[0]["content"], content);
        assert_eq!(messages[1]["role"], "assistant");
        // Two chunks made it: "Echo: " and "one ".
        assert_eq!(messages[1]["content"], "Echo: one ", "{fault}");
        let error = messages[1]["error"].as_str().unwrap_or("");
        assert!(!error.is_empty(), "{fault}: error recorded");
    }
}

async fn client_leaving_midway_keeps_partial_answer(db: Db) {
    let h = Harness::start(db).await;
    let response = h
        .as_user(Method::POST, "/v1/chat/completions", "alice")
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "[[mock:words=50; chunk_delay=50]]"}]}))
        .send()
        .await
        .expect("sent");
    let mut body = response.bytes_stream();
    let mut received = 0;
    while received < 3 {
        let chunk = body.next().await.expect("more").expect("bytes");
        received += String::from_utf8_lossy(&chunk).matches("data: ").count();
    }
    drop(body);
    let messages = eventually(
        Duration::from_secs(5),
        "the partial answer stored",
        || async {
            let messages = only_session_messages(&h, "alice").await;
            (messages.len() == 2).then_some(messages)
        },
    )
    .await;
    let partial = messages[1]["content"].as_str().unwrap_or("");
    assert!(
        partial.starts_with("alpha") && partial.split(' ').count() < 50,
        "{partial:?}"
    );
    assert!(
        messages[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("client disconnected")),
        "{:?}",
        messages[1]
    );
}

on_both_databases!(
    user_message_is_stored_before_the_upstream_answers,
    stream_failing_midway_keeps_partial_answer_and_error,
    client_leaving_midway_keeps_partial_answer,
);
