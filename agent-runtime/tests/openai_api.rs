//! The OpenAI-compatible API end to end, against the mock upstream, on SQLite
//! and on Postgres.

mod common;

use common::{Db, Harness, sse_data, streamed_text};
use crds::runtime_config::{ModelConfig, ModelProvider};
use reqwest::Method;
use serde_json::{Value, json};

async fn models_lists_the_agent(db: Db) {
    let h = Harness::start(db).await;
    let (status, body) = h.get("alice", "/v1/models").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["id"], "test-agent");
    assert_eq!(body["data"][0]["object"], "model");
}

async fn non_streamed_chat_answers_and_stores_both_messages(db: Db) {
    let h = Harness::start(db).await;
    let (status, body) = h
        .chat("alice", json!([{"role": "user", "content": "hello there"}]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "test-agent");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Echo: hello there"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let usage = &body["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().is_some_and(|n| n > 0),
        "{usage}"
    );
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap_or(0)
                + usage["completion_tokens"].as_u64().unwrap_or(0)
        )
    );

    // Upstream got the system prompt first and the upstream key, never the client's.
    let sent = h.mock.requests().pop().expect("mock called");
    assert_eq!(sent.body["messages"][0]["role"], "system");
    assert_eq!(
        sent.body["messages"][0]["content"],
        "You are the test agent."
    );
    assert_eq!(sent.body["model"], "mock-gpt");
    assert_eq!(
        sent.headers.get("authorization").map(String::as_str),
        Some("Bearer sk-upstream-secret")
    );

    let (_, sessions) = h.get("alice", "/api/sessions").await;
    assert_eq!(sessions["pagination"]["total"], 1);
    let id = sessions["data"][0]["id"].as_str().expect("id");
    let (_, messages) = h
        .get("alice", &format!("/api/sessions/{id}/messages"))
        .await;
    let roles: Vec<&str> = messages["data"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["user", "assistant"]);
    assert_eq!(messages["data"][1]["model"], "mock-gpt");
    assert!(messages["data"][1]["latency_ms"].as_i64().is_some());
}

async fn streamed_chat_uses_openai_chunks_and_ends_with_done(db: Db) {
    let h = Harness::start(db).await;
    let request = h
        .as_user(Method::POST, "/v1/chat/completions", "alice")
        .json(&json!({"model": "test-agent", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "stream this please"}]}));
    let response = request.send().await.expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let body = response.text().await.expect("body");
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("chunk is JSON"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Echo: stream this please");
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    let finish = chunks
        .iter()
        .find(|c| c["choices"][0]["finish_reason"] == "stop");
    assert!(finish.is_some(), "a finish chunk: {body}");
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert!(
        usage["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{usage}"
    );
    // Stored with its usage once the stream is done.
    let (_, sessions) = h.get("alice", "/api/sessions").await;
    let id = sessions["data"][0]["id"].as_str().expect("id");
    let (_, messages) = h
        .get("alice", &format!("/api/sessions/{id}/messages"))
        .await;
    assert_eq!(messages["data"][1]["content"], "Echo: stream this please");
    assert!(messages["data"][1]["error"].is_null());

    // Without include_usage the usage rides on the finish chunk; still ends with [DONE].
    let (_, body) = h
        .stream_text(h.as_user(Method::POST, "/v1/chat/completions", "alice").json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "again"}]}),
        ))
        .await;
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let finish: Value = serde_json::from_str(&data[data.len() - 2]).expect("json");
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert!(finish["usage"]["total_tokens"].as_u64().is_some());
}

async fn multi_turn_history_is_stored_once_per_message(db: Db) {
    let h = Harness::start(db).await;
    let mut history = vec![json!({"role": "user", "content": "first question"})];
    for turn in 0..3 {
        let (status, body) = h.chat("alice", Value::Array(history.clone())).await;
        assert_eq!(status, 200, "turn {turn}: {body}");
        history.push(body["choices"][0]["message"].clone());
        history.push(json!({"role": "user", "content": format!("follow-up {turn}")}));
    }
    let (status, _) = h.chat("alice", Value::Array(history.clone())).await;
    assert_eq!(status, 200);
    let (_, sessions) = h.get("alice", "/api/sessions").await;
    assert_eq!(
        sessions["pagination"]["total"], 1,
        "one session: {sessions}"
    );
    let session = &sessions["data"][0];
    assert_eq!(
        session["message_count"], 8,
        "4 user + 4 assistant messages: {session}"
    );
    assert_eq!(session["title"], "first question");
    let id = session["id"].as_str().expect("id");
    let (_, hist) = h.get("alice", &format!("/api/sessions/{id}/history")).await;
    let contents: Vec<&str> = hist["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(contents[0], "first question");
    assert_eq!(contents[6], "follow-up 2");
    assert_eq!(contents[7], "Echo: follow-up 2");

    // The upstream saw the whole history every turn.
    let last = h.mock.requests().pop().expect("called");
    assert_eq!(last.body["messages"].as_array().map(Vec::len), Some(8));

    // A brand-new chat that starts with the same words is a new session.
    let (status, _) = h
        .chat(
            "alice",
            json!([{"role": "user", "content": "first question"}]),
        )
        .await;
    assert_eq!(status, 200);
    let (_, sessions) = h.get("alice", "/api/sessions").await;
    assert_eq!(sessions["pagination"]["total"], 2);
}

async fn conversation_id_maps_requests_to_one_session(db: Db) {
    let h = Harness::start(db).await;
    let send = |messages: Value| {
        h.as_user(Method::POST, "/v1/chat/completions", "bob")
            .header("x-conversation-id", "conv-42")
            .json(&json!({"model": "m", "messages": messages}))
    };
    let (status, first) = h
        .json(send(json!([{"role": "user", "content": "hi"}])))
        .await;
    assert_eq!(status, 200, "{first}");
    // Regenerate: same history again stores no new user message.
    let (status, _) = h
        .json(send(json!([{"role": "user", "content": "hi"}])))
        .await;
    assert_eq!(status, 200);
    let (status, _) = h
        .json(send(json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Echo: hi"},
            {"role": "user", "content": "and more"}
        ])))
        .await;
    assert_eq!(status, 200);
    // Metadata names the conversation too.
    let (status, _) = h
        .post("bob", "/v1/chat/completions", json!({"model": "m", "metadata": {"conversation_id": "conv-42"},
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Echo: hi"},
                         {"role": "user", "content": "and more"}, {"role": "assistant", "content": "Echo: and more"},
                         {"role": "user", "content": "last"}]}))
        .await;
    assert_eq!(status, 200);
    let (_, sessions) = h.get("bob", "/api/sessions").await;
    assert_eq!(sessions["pagination"]["total"], 1, "{sessions}");
    let session = &sessions["data"][0];
    assert_eq!(session["external_id"], "conv-42");
    // hi, 2 answers to hi, and more, its answer, last, its answer.
    assert_eq!(session["message_count"], 7, "{session}");
}

async fn users_are_kept_apart_by_header_and_user_field(db: Db) {
    let h = Harness::start(db).await;
    let (status, _) = h
        .chat(
            "alice",
            json!([{"role": "user", "content": "alice secret"}]),
        )
        .await;
    assert_eq!(status, 200);
    // The OpenAI `user` field names the user when the trusted header is absent.
    let (status, _) = h
        .json(
            h.client
                .post(h.url("/v1/chat/completions"))
                .bearer_auth(common::API_KEY)
                .json(&json!({"model": "m", "user": "carol", "messages": [{"role": "user", "content": "carol secret"}]})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, alice) = h.get("alice", "/api/sessions").await;
    let (_, carol) = h.get("carol", "/api/sessions").await;
    assert_eq!(alice["pagination"]["total"], 1);
    assert_eq!(carol["pagination"]["total"], 1);
    assert_eq!(carol["data"][0]["title"], "carol secret");
    // Alice continuing Carol's history does not land in Carol's session.
    let (status, _) = h
        .chat(
            "alice",
            json!([{"role": "user", "content": "carol secret"},
                              {"role": "assistant", "content": "Echo: carol secret"},
                              {"role": "user", "content": "more"}]),
        )
        .await;
    assert_eq!(status, 200);
    let (_, carol_after) = h.get("carol", "/api/sessions").await;
    assert_eq!(carol_after["data"][0]["message_count"], 2);
}

async fn history_is_trimmed_to_the_context_budget(db: Db) {
    let h = Harness::start_with(db, |config, _| config.context.max_tokens = 120).await;
    let long = "lorem ipsum dolor sit amet ".repeat(20);
    let messages = json!([
        {"role": "user", "content": format!("oldest {long}")},
        {"role": "assistant", "content": format!("old answer {long}")},
        {"role": "user", "content": "recent question"},
        {"role": "assistant", "content": "recent answer"},
        {"role": "user", "content": "newest"}
    ]);
    let (status, body) = h.chat("alice", messages).await;
    assert_eq!(status, 200, "{body}");
    let sent = h.mock.requests().pop().expect("called");
    let contents: Vec<&str> = sent.body["messages"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["content"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        contents,
        [
            "You are the test agent.",
            "recent question",
            "recent answer",
            "newest"
        ]
    );
    // A single message over the budget is refused with a clear error.
    let (status, body) = h
        .chat(
            "alice",
            json!([{"role": "user", "content": long.repeat(3)}]),
        )
        .await;
    common::assert_error(&(status, body), 400, "context_length_exceeded");
}

async fn anthropic_upstream_works_streamed_and_not(db: Db) {
    let h = Harness::start_with(db, |config, mock| {
        config.model = ModelConfig {
            provider: ModelProvider::Anthropic,
            name: "mock-claude".into(),
            base_url: Some(mock.anthropic_base_url()),
            api_key_env: Some("UPSTREAM_KEY".into()),
            timeout_seconds: 2,
            ..ModelConfig::default()
        };
    })
    .await;
    let (status, body) = h
        .chat("alice", json!([{"role": "user", "content": "bonjour"}]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: bonjour");
    let sent = h.mock.requests().pop().expect("called");
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.body["system"], "You are the test agent.");
    assert_eq!(
        sent.headers.get("x-api-key").map(String::as_str),
        Some("sk-upstream-secret")
    );
    let (status, text) = h
        .stream_text(h.as_user(Method::POST, "/v1/chat/completions", "alice").json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "salut toi"}]}),
        ))
        .await;
    assert_eq!(status, 200);
    let joined = streamed_text(&text);
    assert_eq!(joined, "Echo: salut toi");
    assert!(text.trim_end().ends_with("data: [DONE]"));
}

async fn fallback_models_and_fallback_responses(db: Db) {
    let h = Harness::start_with(db, |config, mock| {
        config.model.base_url = Some(format!("http://{}/broken/v1", mock.addr()));
        config.fallbacks = vec![ModelConfig {
            name: "mock-gpt-mini".into(),
            base_url: Some(mock.openai_base_url()),
            timeout_seconds: 2,
            ..ModelConfig::default()
        }];
        config
            .fallback_responses
            .insert("en".into(), "Sorry, try later.".into());
        config
            .fallback_responses
            .insert("de".into(), "Bitte später.".into());
    })
    .await;
    // The primary 404s; the fallback answers.
    let (status, body) = h
        .chat("alice", json!([{"role": "user", "content": "hi"}]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Echo: hi");
    // Both fail: the tenant's fallback response in the caller's language.
    let (status, body) = h
        .json(
            h.as_user(Method::POST, "/v1/chat/completions", "alice")
                .header("accept-language", "de-DE,de;q=0.9")
                .json(&json!({"model": "m", "messages": [{"role": "user", "content": "x [[mock:status=500]]"}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "Bitte später.");
    let metrics = h.metrics().await;
    assert!(metrics.contains("switchboard_runtime_upstream_requests_total{model=\"mock-gpt\",outcome=\"client_error\",provider=\"openai\"}"), "{metrics}");
}

/// `GET /v1/models/{model}` (the SDKs' `models.retrieve`): the agent's card
/// under its id, a 404 `model_not_found` naming `model` otherwise.
async fn a_model_is_retrieved_by_its_id(db: Db) {
    let h = Harness::start(db).await;
    let (status, body) = h.get("alice", "/v1/models/test-agent").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "test-agent");
    assert_eq!(body["object"], "model");
    assert_eq!(body["owned_by"], "switchboard");
    let (status, body) = h.get("alice", "/v1/models/gpt-4o").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");
}

/// Request fields as OpenAI documents them: `stream: null` is `false`;
/// `stream_options` without `stream` refused naming it; `n`, `temperature`
/// and `user` refusals name their field; every error carries `param` (null
/// when no field is at fault); `max_completion_tokens` reaches the model
/// under that name; `reasoning_effort` and the other fields OpenAI models
/// read are passed on as sent; and nothing of a refused request is counted
/// or stored.
async fn request_fields_are_honoured_or_refused_by_name(db: Db) {
    let h = Harness::start(db).await;
    let messages = json!([{"role": "user", "content": "hi"}]);
    let (status, body) = h
        .post(
            "alice",
            "/v1/chat/completions",
            json!({"messages": messages, "stream": null}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    for (extra, param) in [
        (
            json!({"stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (
            json!({"stream": false, "stream_options": {"include_usage": true}}),
            "stream_options",
        ),
        (json!({"n": 2}), "n"),
        (json!({"temperature": 3}), "temperature"),
        (json!({"user": ""}), "user"),
        (
            json!({"metadata": {"conversation_id": 7}}),
            "metadata.conversation_id",
        ),
    ] {
        let mut request = json!({"messages": messages});
        for (k, v) in extra.as_object().expect("object") {
            request[k] = v.clone();
        }
        let (status, body) = h.post("bob", "/v1/chat/completions", request).await;
        assert_eq!(status, 400, "{extra}: {body}");
        assert_eq!(body["error"]["param"], param, "{extra}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    let (_, sessions) = h.get("bob", "/api/sessions").await;
    assert_eq!(
        sessions["data"],
        json!([]),
        "refused requests store nothing"
    );
    let (status, body) = h
        .post("bob", "/v1/chat/completions", json!({"messages": []}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], Value::Null, "{body}");
    assert!(
        body["error"]
            .as_object()
            .is_some_and(|e| e.contains_key("param")),
        "param present, as null: {body}"
    );

    let (status, body) = h
        .post(
            "alice",
            "/v1/chat/completions",
            json!({"messages": messages, "max_completion_tokens": 50,
                   "reasoning_effort": "low", "service_tier": "flex", "store": false,
                   "prompt_cache_key": "k1", "safety_identifier": "hash-1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sent = last_upstream_body(&h);
    assert_eq!(sent["max_completion_tokens"], 50, "{sent}");
    assert!(sent.get("max_tokens").is_none(), "{sent}");
    assert_eq!(sent["reasoning_effort"], "low", "{sent}");
    assert_eq!(sent["service_tier"], "flex", "{sent}");
    assert_eq!(sent["prompt_cache_key"], "k1", "{sent}");
    assert_eq!(sent["safety_identifier"], "hash-1", "{sent}");
    assert!(
        sent.get("store").is_none(),
        "store: false is the default: {sent}"
    );
    let (status, _) = h
        .post(
            "alice",
            "/v1/chat/completions",
            json!({"messages": messages, "max_tokens": 40}),
        )
        .await;
    assert_eq!(status, 200);
    let sent = last_upstream_body(&h);
    assert_eq!(sent["max_tokens"], 40, "{sent}");
    assert!(sent.get("max_completion_tokens").is_none(), "{sent}");
}

/// The body of the last request the runtime sent the model.
fn last_upstream_body(h: &Harness) -> Value {
    h.mock
        .requests()
        .last()
        .expect("upstream request")
        .body
        .clone()
}

/// A request the model's API refuses as invalid (400) is the client's to fix:
/// answered 400 with the model's words, not 502 (which the SDKs retry), and
/// never with the fallback response.
async fn a_request_the_model_refuses_is_a_400(db: Db) {
    let h = Harness::start_with(db, |config, _| {
        config
            .fallback_responses
            .insert("en".into(), "Sorry, try later.".into());
    })
    .await;
    let (status, body) = h
        .chat(
            "alice",
            json!([{"role": "user", "content": "x [[mock: status=400]]"}]),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "upstream_invalid_request", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    // A model that fails is still the fallback response's case.
    let (status, body) = h
        .chat(
            "alice",
            json!([{"role": "user", "content": "x [[mock: status=500]]"}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Sorry, try later."
    );
}

/// An Anthropic model has no `reasoning_effort`: refused naming it, not dropped.
async fn fields_an_anthropic_model_cannot_take_are_refused(db: Db) {
    let h = Harness::start_with(db, |config, mock| {
        config.model = ModelConfig {
            provider: ModelProvider::Anthropic,
            name: "claude-test".into(),
            base_url: Some(mock.anthropic_base_url()),
            ..ModelConfig::default()
        };
    })
    .await;
    let (status, body) = h
        .post(
            "alice",
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "high"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "reasoning_effort", "{body}");
}

on_both_databases!(
    a_model_is_retrieved_by_its_id,
    request_fields_are_honoured_or_refused_by_name,
    a_request_the_model_refuses_is_a_400,
    fields_an_anthropic_model_cannot_take_are_refused,
    models_lists_the_agent,
    non_streamed_chat_answers_and_stores_both_messages,
    streamed_chat_uses_openai_chunks_and_ends_with_done,
    multi_turn_history_is_stored_once_per_message,
    conversation_id_maps_requests_to_one_session,
    users_are_kept_apart_by_header_and_user_field,
    history_is_trimmed_to_the_context_budget,
    anthropic_upstream_works_streamed_and_not,
    fallback_models_and_fallback_responses,
);
