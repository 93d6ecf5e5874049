//! The OpenAI request surface beyond the prompt, end to end against the mock
//! upstream: client-side tools (whole and streamed, OpenAI and Anthropic
//! upstreams), the fields passed through or translated, the ones refused
//! with a 400 naming the field, image parts, and stored history keeping tool
//! calls and results.

mod common;

use common::{Db, Harness, assert_error, sse_data};
use crds::runtime_config::{ModelConfig, ModelProvider, RuntimeConfig};
use reqwest::Method;
use serde_json::{Value, json};
use switchboard_tests::mock_llm::MockLlm;

fn weather_tool() -> Value {
    json!({"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }})
}

fn anthropic(config: &mut RuntimeConfig, mock: &MockLlm) {
    config.model = ModelConfig {
        provider: ModelProvider::Anthropic,
        name: "mock-claude".into(),
        base_url: Some(mock.anthropic_base_url()),
        api_key_env: Some("UPSTREAM_KEY".into()),
        timeout_seconds: 2,
        ..ModelConfig::default()
    };
}

async fn completion(h: &Harness, body: Value) -> (u16, Value) {
    h.post("alice", "/v1/chat/completions", body).await
}

/// The tool calls a streamed answer made, reassembled from its
/// `delta.tool_calls` pieces, and its finish reason.
fn streamed_tool_calls(body: &str) -> (Vec<Value>, Option<String>) {
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = None;
    for data in sse_data(body) {
        let Ok(chunk) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = Some(reason.to_owned());
        }
        for piece in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = piece["index"].as_u64().expect("index") as usize;
            if calls.len() <= index {
                calls.resize(index + 1, json!({"id": "", "name": "", "arguments": ""}));
            }
            let call = &mut calls[index];
            if let Some(id) = piece["id"].as_str() {
                call["id"] = json!(id);
                assert_eq!(piece["type"], "function", "{piece}");
            }
            if let Some(name) = piece["function"]["name"].as_str() {
                call["name"] = json!(name);
            }
            let more = piece["function"]["arguments"].as_str().unwrap_or("");
            let arguments = format!("{}{more}", call["arguments"].as_str().unwrap_or(""));
            call["arguments"] = json!(arguments);
        }
    }
    (calls, finish)
}

async fn client_side_tools_round_trip_and_are_stored(db: Db) {
    let h = Harness::start(db).await;
    let question = json!({"role": "user", "content": "Weather in Paris?"});
    let (status, body) = completion(
        &h,
        json!({"model": "test-agent", "messages": [question], "tools": [weather_tool()],
               "tool_choice": "auto", "parallel_tool_calls": false}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert_eq!(choice["message"]["content"], Value::Null, "{body}");
    let call = choice["message"]["tool_calls"][0].clone();
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        call["function"]["arguments"],
        json!({"text": "Weather in Paris?"}).to_string()
    );
    let sent = h.mock.requests().pop().expect("called");
    assert_eq!(sent.body["tools"], json!([weather_tool()]));
    assert_eq!(sent.body["tool_choice"], "auto");
    assert_eq!(sent.body["parallel_tool_calls"], false);

    // The client runs the tool and sends the result with the whole history.
    let call_id = call["id"].as_str().expect("id").to_owned();
    let history = json!([
        question,
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "Sunny, 21 C"}
    ]);
    let (status, body) = completion(
        &h,
        json!({"model": "test-agent", "messages": history, "tools": [weather_tool()]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Tool results: Sunny, 21 C"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let sent = h.mock.requests().pop().expect("called");
    let upstream = sent.body["messages"].as_array().expect("messages");
    assert_eq!(upstream[2]["tool_calls"][0]["id"], call_id.as_str());
    assert_eq!(upstream[3]["role"], "tool");
    assert_eq!(upstream[3]["tool_call_id"], call_id.as_str());

    // One session (the resent history was recognised, tool call included),
    // whose messages show the call and the result.
    let (_, sessions) = h.get("alice", "/api/sessions").await;
    assert_eq!(sessions["pagination"]["total"], 1, "{sessions}");
    let id = sessions["data"][0]["id"].as_str().expect("id");
    let (_, messages) = h
        .get("alice", &format!("/api/sessions/{id}/messages"))
        .await;
    let messages = messages["data"].as_array().expect("messages");
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(messages[1]["tool_calls"][0]["id"], call_id.as_str());
    assert_eq!(
        messages[1]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert_eq!(messages[2]["tool_call_id"], call_id.as_str());
    assert!(messages[3].get("tool_calls").is_none(), "{:?}", messages[3]);
    // Tool-call turns report usage like any other.
    assert!(messages[1]["tokens_out"].as_i64().is_some_and(|n| n > 0));
    // The history in OpenAI's format carries them too, ready to resend.
    let (status, history) = h.get("alice", &format!("/api/sessions/{id}/history")).await;
    assert_eq!(status, 200, "{history}");
    let history = history["messages"].as_array().expect("messages");
    assert_eq!(history[1]["tool_calls"][0]["id"], call_id.as_str());
    assert_eq!(history[2]["tool_call_id"], call_id.as_str());
}

async fn streamed_tool_calls_arrive_as_deltas_and_are_stored(db: Db) {
    let h = Harness::start(db).await;
    let request = json!({"model": "test-agent", "stream": true,
        "stream_options": {"include_usage": true},
        "tools": [weather_tool(), {"type": "function", "function": {"name": "get_time"}}],
        "messages": [{"role": "user", "content": "Weather and time? [[mock: tools=get_weather,get_time]]"}]});
    let (status, text) = h
        .stream_text(
            h.as_user(Method::POST, "/v1/chat/completions", "alice")
                .json(&request),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let (calls, finish) = streamed_tool_calls(&text);
    assert_eq!(finish.as_deref(), Some("tool_calls"), "{text}");
    let names: Vec<&str> = calls.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["get_weather", "get_time"], "{text}");
    let arguments: Value =
        serde_json::from_str(calls[1]["arguments"].as_str().expect("text")).expect("JSON");
    assert_eq!(arguments, json!({"text": "Weather and time?"}));
    let usage = sse_data(&text)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|c| c["usage"].is_object())
        .expect("usage chunk");
    assert!(
        usage["usage"]["completion_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );

    let (_, sessions) = h.get("alice", "/api/sessions").await;
    let id = sessions["data"][0]["id"].as_str().expect("id");
    let (_, messages) = h
        .get("alice", &format!("/api/sessions/{id}/messages"))
        .await;
    let stored = &messages["data"][1];
    assert_eq!(stored["role"], "assistant");
    assert_eq!(stored["tool_calls"][0]["id"], calls[0]["id"]);
    assert_eq!(
        stored["tool_calls"][1]["function"]["arguments"],
        calls[1]["arguments"]
    );
}

async fn sampling_and_format_fields_reach_an_openai_upstream(db: Db) {
    let h = Harness::start(db).await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}},
                        "required": ["answer"], "additionalProperties": false});
    let response_format = json!({"type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": true}});
    let (status, body) = completion(
        &h,
        json!({"model": "test-agent", "messages": [{"role": "user", "content": "hi"}],
               "response_format": response_format, "stop": ["\n\n", "END"], "top_p": 0.5,
               "seed": 7, "presence_penalty": 0.25, "frequency_penalty": -0.5,
               "logit_bias": {"50256": -100}, "user": "alice-ext",
               "chat_id": "ignored: OpenAI does not document it"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sent = h.mock.requests().pop().expect("called").body;
    assert_eq!(sent["response_format"], response_format);
    assert_eq!(sent["stop"], json!(["\n\n", "END"]));
    assert_eq!(sent["top_p"], 0.5);
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["presence_penalty"], 0.25);
    assert_eq!(sent["frequency_penalty"], -0.5);
    assert_eq!(sent["logit_bias"], json!({"50256": -100}));
    assert_eq!(sent["user"], "alice-ext");
    assert!(sent.get("chat_id").is_none(), "{sent}");
    // json_object too, and a single stop string.
    let (status, _) = completion(
        &h,
        json!({"model": "test-agent", "messages": [{"role": "user", "content": "hi"}],
               "response_format": {"type": "json_object"}, "stop": "END"}),
    )
    .await;
    assert_eq!(status, 200);
    let sent = h.mock.requests().pop().expect("called").body;
    assert_eq!(sent["response_format"], json!({"type": "json_object"}));
    assert_eq!(sent["stop"], json!(["END"]));
}

async fn anthropic_translates_tools_whole_and_streamed(db: Db) {
    let h = Harness::start_with(db, anthropic).await;
    let question = json!({"role": "user", "content": "Weather in Oslo?"});
    let (status, body) = completion(
        &h,
        json!({"model": "m", "messages": [question], "tools": [weather_tool()],
               "tool_choice": "required", "parallel_tool_calls": false,
               "stop": "END", "top_p": 0.9, "user": "alice-ext"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls", "{body}");
    let call = body["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().expect("text")).expect("JSON");
    assert_eq!(arguments, json!({"text": "Weather in Oslo?"}));
    let sent = h.mock.requests().pop().expect("called").body;
    assert_eq!(
        sent["tools"],
        json!([{"name": "get_weather", "description": "The weather in a city",
                "input_schema": weather_tool()["function"]["parameters"]}])
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(sent["top_p"], 0.9);
    assert_eq!(sent["metadata"], json!({"user_id": "alice-ext"}));

    // The result goes back as a tool_result block after the tool_use block.
    let call_id = call["id"].as_str().expect("id").to_owned();
    let history = json!([
        question,
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "Snow"}
    ]);
    let (status, text) = h
        .stream_text(h.as_user(Method::POST, "/v1/chat/completions", "alice").json(
            &json!({"model": "m", "stream": true, "messages": history, "tools": [weather_tool()]}),
        ))
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(common::streamed_text(&text), "Tool results: Snow");
    let sent = h.mock.requests().pop().expect("called").body;
    assert_eq!(
        sent["messages"][1],
        json!({"role": "assistant", "content": [{"type": "tool_use", "id": call_id,
               "name": "get_weather", "input": {"text": "Weather in Oslo?"}}]})
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id,
               "content": "Snow"}]})
    );

    // A streamed tool call: content_block_start tool_use + input_json_delta.
    let (status, text) = h
        .stream_text(
            h.as_user(Method::POST, "/v1/chat/completions", "alice")
                .json(
                    &json!({"model": "m", "stream": true, "tools": [weather_tool()],
                    "messages": [{"role": "user", "content": "Weather in Rome?"}]}),
                ),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let (calls, finish) = streamed_tool_calls(&text);
    assert_eq!(finish.as_deref(), Some("tool_calls"), "{text}");
    assert_eq!(calls.len(), 1, "{text}");
    assert_eq!(calls[0]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(calls[0]["arguments"].as_str().expect("text")).expect("JSON");
    assert_eq!(arguments, json!({"text": "Weather in Rome?"}));
}

async fn fields_a_model_cannot_honour_are_refused_by_name(db: Db) {
    let h = Harness::start_with(db, anthropic).await;
    let messages = json!([{"role": "user", "content": "hi"}]);
    for (field, value) in [
        (
            "response_format",
            json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}),
        ),
        ("response_format", json!({"type": "json_object"})),
        ("seed", json!(1)),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(0.5)),
        ("logit_bias", json!({"1": 5})),
    ] {
        let mut body = json!({"model": "m", "messages": messages});
        body[field] = value;
        let result = completion(&h, body).await;
        assert_error(&result, 400, "unsupported_parameter");
        assert_eq!(result.1["error"]["param"], field, "{}", result.1);
        assert_eq!(result.1["error"]["type"], "invalid_request_error");
    }
    // Nothing reached the upstream and nothing was stored.
    assert_eq!(h.mock.request_count(), 0);
    let (_, sessions) = h.get("alice", "/api/sessions").await;
    assert_eq!(sessions["pagination"]["total"], 0, "{sessions}");
    // `response_format: text` is honoured everywhere.
    let (status, body) = completion(
        &h,
        json!({"model": "m", "messages": messages, "response_format": {"type": "text"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Documented OpenAI fields the runtime carries to no model, and wrong values.
    for (field, value, code) in [
        ("logprobs", json!(true), "unsupported_parameter"),
        (
            "audio",
            json!({"voice": "alloy", "format": "wav"}),
            "unsupported_parameter",
        ),
        ("functions", json!([{"name": "f"}]), "unsupported_parameter"),
        ("tool_choice", json!("always"), "invalid_request"),
        ("top_p", json!(1.5), "invalid_request"),
        ("stop", json!(["a", "b", "c", "d", "e"]), "invalid_request"),
    ] {
        let mut body = json!({"model": "m", "messages": messages});
        body[field] = value;
        let result = completion(&h, body).await;
        assert_error(&result, 400, code);
        assert_eq!(result.1["error"]["param"], field, "{}", result.1);
    }
    let mut body = json!({"model": "m", "messages": messages, "tools": [weather_tool()]});
    body["tools"][0]["type"] = json!("code_interpreter");
    let result = completion(&h, body).await;
    assert_error(&result, 400, "invalid_request");
    assert_eq!(result.1["error"]["param"], "tools[0].type");
}

async fn a_fallback_that_cannot_honour_a_field_is_skipped(db: Db) {
    let h = Harness::start_with(db, |config, mock| {
        config.fallbacks = vec![
            ModelConfig {
                provider: ModelProvider::Anthropic,
                name: "mock-claude".into(),
                base_url: Some(mock.anthropic_base_url()),
                timeout_seconds: 2,
                ..ModelConfig::default()
            },
            ModelConfig {
                name: "mock-gpt-mini".into(),
                base_url: Some(mock.openai_base_url()),
                timeout_seconds: 2,
                ..ModelConfig::default()
            },
        ];
    })
    .await;
    // The primary fails; the Anthropic fallback cannot honour `seed`, so the
    // next one answers.
    let (status, body) = completion(
        &h,
        json!({"model": "m", "seed": 3,
               "messages": [{"role": "user", "content": "hi [[mock: status=500; model=mock-gpt]]"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let models: Vec<String> = h
        .mock
        .requests()
        .iter()
        .filter_map(|r| r.model().map(str::to_owned))
        .collect();
    assert!(!models.iter().any(|m| m == "mock-claude"), "{models:?}");
    assert_eq!(models.last().map(String::as_str), Some("mock-gpt-mini"));
    let sent = h.mock.requests().pop().expect("called").body;
    assert_eq!(sent["seed"], 3);
}

async fn image_parts_pass_through_or_are_refused_by_name(db: Db) {
    let h = Harness::start(db).await;
    let image = "data:image/png;base64,iVBORw0KGgo=";
    let messages = json!([{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": image, "detail": "low"}}
    ]}]);
    let (status, body) = completion(&h, json!({"model": "m", "messages": messages})).await;
    assert_eq!(status, 200, "{body}");
    let sent = h.mock.requests().pop().expect("called").body;
    assert_eq!(sent["messages"][1]["content"], messages[0]["content"]);
    // Anthropic: an image block.
    let h = Harness::start_with(db, anthropic).await;
    let (status, body) = completion(&h, json!({"model": "m", "messages": messages})).await;
    assert_eq!(status, 200, "{body}");
    let sent = h.mock.requests().pop().expect("called").body;
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
    );
    // Not an image URL, or an image where none is accepted: refused by name.
    let bad = json!([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]);
    let result = completion(&h, json!({"model": "m", "messages": bad})).await;
    assert_eq!(result.0, 400, "{}", result.1);
    assert_eq!(
        result.1["error"]["param"],
        "messages[0].content[0].image_url.url"
    );
    let bad = json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": [
        {"type": "image_url", "image_url": {"url": image}}]}]);
    let result = completion(&h, json!({"model": "m", "messages": bad})).await;
    assert_error(&result, 400, "unsupported_parameter");
    assert_eq!(result.1["error"]["param"], "messages[1].content");
}

on_both_databases!(
    client_side_tools_round_trip_and_are_stored,
    streamed_tool_calls_arrive_as_deltas_and_are_stored,
    sampling_and_format_fields_reach_an_openai_upstream,
    anthropic_translates_tools_whole_and_streamed,
    fields_a_model_cannot_honour_are_refused_by_name,
    a_fallback_that_cannot_honour_a_field_is_skipped,
    image_parts_pass_through_or_are_refused_by_name,
);
