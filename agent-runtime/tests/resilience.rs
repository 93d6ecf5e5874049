//! The runtime under upstream faults and load: retries (500, 429 with
//! Retry-After, timeout, reset, truncated and malformed streams), the fallback
//! chain, the circuit breaker opening and closing, the all-failed fallback answer
//! in two languages with the failures listed, rate limits, queue overflow, and
//! client disconnects cancelling the upstream call. Attempts are counted in the
//! mock's request log; no test asserts how long anything took except that a
//! retry did not come before the upstream's Retry-After.

mod common;

use std::time::{Duration, Instant};

use common::{Db, Harness, assert_error, sse_data};
use crds::runtime_config::{ModelConfig, RateLimitConfig, RuntimeConfig};
use reqwest::Method;
use serde_json::{Value, json};
use switchboard_tests::mock_llm::MockLlm;

/// Fast retries so tests do not wait on backoff.
fn fast_retries(config: &mut RuntimeConfig) {
    config.limits.retry_base_delay_ms = 10;
    config.limits.retry_max_delay_ms = 2000;
}

/// A second model `dead-gpt` first in the chain, the base `mock-gpt` after it.
fn dead_primary(config: &mut RuntimeConfig, mock: &MockLlm) {
    let fallback = config.model.clone();
    config.model = ModelConfig {
        name: "dead-gpt".into(),
        base_url: Some(mock.openai_base_url()),
        ..fallback.clone()
    };
    config.fallbacks = vec![fallback];
}

fn requests_for(mock: &MockLlm, model: &str) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r.model() == Some(model))
        .count()
}

async fn metric(h: &Harness, name_and_labels: &str) -> f64 {
    h.metric_sum(name_and_labels).await
}

async fn stored_answer(h: &Harness, user: &str) -> Value {
    let (_, list) = h.get(user, "/api/sessions?limit=100").await;
    let id = list["data"][0]["id"]
        .as_str()
        .expect("a session")
        .to_owned();
    let (_, messages) = h.get(user, &format!("/api/sessions/{id}/messages")).await;
    messages["data"]
        .as_array()
        .and_then(|m| m.last().cloned())
        .expect("messages")
}

async fn transient_faults_are_retried(db: Db) {
    let h = Harness::start_with(db, |c, _| fast_retries(c)).await;
    // 500 twice, then an answer: three attempts.
    let (status, body) = h
        .chat(
            "a",
            json!([{"role": "user", "content": "one [[mock: status=500; times=2]]"}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"], "Echo: one",
        "{body}"
    );
    assert_eq!(h.mock.request_count(), 3);
    // A timeout (no response headers), then an answer.
    let (status, body) = h
        .chat(
            "b",
            json!([{"role": "user", "content": "two [[mock: fault=hang; times=1]]"}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.mock.request_count(), 5);
    // A malformed body, then an answer.
    let (status, _) = h
        .chat(
            "c",
            json!([{"role": "user", "content": "three [[mock: fault=malformed; times=1]]"}]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(h.mock.request_count(), 7);
    // A client error is not retried, and is the client's: a 400.
    let (status, _) = h
        .chat(
            "d",
            json!([{"role": "user", "content": "four [[mock: status=400]]"}]),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(h.mock.request_count(), 8);
    assert!(
        metric(
            &h,
            "switchboard_runtime_upstream_retries_total{model=\"mock-gpt\",reason=\"server_error\"}"
        )
        .await
            >= 2.0
    );
}

async fn retry_waits_for_retry_after(db: Db) {
    let h = Harness::start_with(db, |c, _| fast_retries(c)).await;
    let (status, body) = h
        .chat(
            "a",
            json!([{"role": "user", "content": "hi [[mock: status=429; retry_after=1; times=1]]"}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let log = h.mock.requests();
    assert_eq!(log.len(), 2, "one refusal, one retry");
    let gap = log[1].received_at.duration_since(log[0].received_at);
    assert!(
        gap >= Duration::from_secs(1),
        "the retry came {gap:?} after a Retry-After of 1s"
    );
    // A Retry-After longer than the runtime will hold a client is not waited
    // for: the 429 goes back with the upstream's Retry-After.
    let response = h
        .as_user(Method::POST, "/v1/chat/completions", "b")
        .json(&json!({"messages": [{"role": "user", "content": "x [[mock: status=429; retry_after=7]]"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    assert_eq!(h.mock.request_count(), 3);
}

async fn streams_failing_before_the_first_token_are_retried(db: Db) {
    let h = Harness::start_with(db, |c, _| fast_retries(c)).await;
    for (i, fault) in ["reset", "truncate", "malformed"].iter().enumerate() {
        let before = h.mock.request_count();
        let content = format!("s{i} [[mock: fault={fault}; after=0; times=1]]");
        let (status, body) =
            h.stream_text(h.as_user(Method::POST, "/v1/chat/completions", "a").json(
                &json!({"stream": true, "messages": [{"role": "user", "content": content}]}),
            ))
            .await;
        assert_eq!(status, 200, "{fault}");
        let data = sse_data(&body);
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{fault}: {body}"
        );
        assert!(body.contains(&format!("s{i}")), "{fault}: {body}");
        assert_eq!(h.mock.request_count() - before, 2, "{fault}");
    }
}

async fn fallback_chain_answers_when_the_primary_fails(db: Db) {
    let h = Harness::start_with(db, |c, m| {
        fast_retries(c);
        c.limits.retry_max_attempts = 2;
        dead_primary(c, m);
    })
    .await;
    let (status, body) = h
        .chat(
            "a",
            json!([{"role": "user", "content": "hello [[mock: status=503; model=dead-gpt]]"}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(requests_for(&h.mock, "dead-gpt"), 2);
    assert_eq!(requests_for(&h.mock, "mock-gpt"), 1);
    let answer = stored_answer(&h, "a").await;
    assert_eq!(answer["model"], "mock-gpt", "{answer}");
    assert_eq!(answer["content"], "Echo: hello");
    assert_eq!(
        metric(
            &h,
            "switchboard_runtime_upstream_fallbacks_total{from_model=\"dead-gpt\",to_model=\"mock-gpt\"}"
        )
        .await,
        1.0
    );
}

/// Each model's own sampling settings (`temperature`, `topP`, `maxOutputTokens`)
/// reach its upstream, the fallback's included, and a client's own value wins.
async fn each_model_sends_its_own_sampling_settings(db: Db) {
    let h = Harness::start_with(db, |c, m| {
        fast_retries(c);
        c.limits.retry_max_attempts = 1;
        dead_primary(c, m);
        c.model.temperature = Some(0.3);
        c.model.top_p = Some(0.9);
        c.model.max_output_tokens = Some(64);
        c.fallbacks[0].temperature = Some(0.7);
        c.fallbacks[0].top_p = Some(0.5);
        c.fallbacks[0].max_output_tokens = Some(32);
    })
    .await;
    let (status, body) = h
        .chat(
            "a",
            json!([{"role": "user", "content": "hi [[mock: status=503; model=dead-gpt]]"}]),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sent = |model: &str| {
        h.mock
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.model() == Some(model))
            .map(|r| r.body)
            .expect("the model was called")
    };
    let primary = sent("dead-gpt");
    assert_eq!(
        (
            &primary["temperature"],
            &primary["top_p"],
            &primary["max_tokens"]
        ),
        (&json!(0.3), &json!(0.9), &json!(64)),
        "{primary}"
    );
    let fallback = sent("mock-gpt");
    assert_eq!(
        (
            &fallback["temperature"],
            &fallback["top_p"],
            &fallback["max_tokens"]
        ),
        (&json!(0.7), &json!(0.5), &json!(32)),
        "{fallback}"
    );

    let (status, body) = h
        .post(
            "a",
            "/v1/chat/completions",
            json!({"model": "test-agent", "top_p": 0.2, "temperature": 1.5, "max_tokens": 5,
                   "messages": [{"role": "user", "content": "again [[mock: status=503; model=dead-gpt]]"}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let fallback = sent("mock-gpt");
    assert_eq!(
        (
            &fallback["temperature"],
            &fallback["top_p"],
            &fallback["max_tokens"]
        ),
        (&json!(1.5), &json!(0.2), &json!(5)),
        "{fallback}"
    );
}

async fn circuit_opens_then_probes_and_closes(db: Db) {
    let h = Harness::start_with(db, |c, m| {
        c.limits.retry_max_attempts = 1;
        c.limits.circuit_failure_threshold = 2;
        c.limits.circuit_open_seconds = 1;
        dead_primary(c, m);
    })
    .await;
    for i in 0..2 {
        let content = format!("q{i} [[mock: status=500; model=dead-gpt]]");
        let (status, _) = h
            .chat("a", json!([{"role": "user", "content": content}]))
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(requests_for(&h.mock, "dead-gpt"), 2);
    assert_eq!(
        metric(
            &h,
            "switchboard_runtime_upstream_circuit_state{model=\"dead-gpt\"}"
        )
        .await,
        2.0
    );
    // Open: the dead model is skipped without a request.
    for i in 2..5 {
        let content = format!("q{i} [[mock: status=500; model=dead-gpt]]");
        let (status, _) = h
            .chat("a", json!([{"role": "user", "content": content}]))
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(requests_for(&h.mock, "dead-gpt"), 2, "skipped while open");
    assert_eq!(requests_for(&h.mock, "mock-gpt"), 5);
    // After the open period one probe goes through; it succeeds and closes it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _) = h
        .chat("b", json!([{"role": "user", "content": "recovered"}]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(requests_for(&h.mock, "dead-gpt"), 3, "the probe");
    assert_eq!(stored_answer(&h, "b").await["model"], "dead-gpt");
    assert_eq!(
        metric(
            &h,
            "switchboard_runtime_upstream_circuit_state{model=\"dead-gpt\"}"
        )
        .await,
        0.0
    );
    assert!(h.state.upstream_healthy());
}

/// A model whose streams break after the first token counts as failing: its
/// circuit opens and later streams go to the next model.
async fn streams_breaking_midway_open_the_circuit(db: Db) {
    let h = Harness::start_with(db, |c, m| {
        c.limits.retry_max_attempts = 1;
        c.limits.circuit_failure_threshold = 2;
        c.limits.circuit_open_seconds = 3600;
        dead_primary(c, m);
    })
    .await;
    let stream = |content: String| {
        h.stream_text(
            h.as_user(Method::POST, "/v1/chat/completions", "a")
                .json(&json!({"stream": true, "messages": [{"role": "user", "content": content}]})),
        )
    };
    for (i, fault) in ["reset", "malformed"].iter().enumerate() {
        let (status, body) = stream(format!(
            "m{i} [[mock: fault={fault}; after=2; model=dead-gpt]]"
        ))
        .await;
        assert_eq!(status, 200);
        let last: Value =
            serde_json::from_str(sse_data(&body).last().expect("events")).expect("json");
        assert_eq!(last["error"]["code"], "upstream_stream_failed", "{body}");
    }
    assert_eq!(requests_for(&h.mock, "dead-gpt"), 2);
    assert_eq!(
        metric(
            &h,
            "switchboard_runtime_upstream_circuit_state{model=\"dead-gpt\"}"
        )
        .await,
        2.0
    );
    let (status, body) = stream("m2 [[mock: fault=reset; after=2; model=dead-gpt]]".into()).await;
    assert_eq!(status, 200);
    assert_eq!(
        sse_data(&body).last().map(String::as_str),
        Some("[DONE]"),
        "{body}"
    );
    assert_eq!(requests_for(&h.mock, "dead-gpt"), 2, "skipped while open");
    assert_eq!(requests_for(&h.mock, "mock-gpt"), 1);
    assert!(h.state.upstream_healthy(), "the fallback model is healthy");
}

/// A half-open probe that is a stream closes the circuit once the model
/// answers, not when the stream ends: a long (here: stalled) probe stream
/// does not keep other calls off the recovered model.
async fn a_long_probe_stream_does_not_hold_the_circuit_half_open(db: Db) {
    let h = Harness::start_with(db, |c, m| {
        c.limits.retry_max_attempts = 1;
        c.limits.circuit_failure_threshold = 1;
        c.limits.circuit_open_seconds = 1;
        dead_primary(c, m);
    })
    .await;
    let (status, _) = h
        .chat(
            "a",
            json!([{"role": "user", "content": "down [[mock: status=500; model=dead-gpt]]"}]),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &h,
            "switchboard_runtime_upstream_circuit_state{model=\"dead-gpt\"}"
        )
        .await,
        2.0
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The probe: a stream whose upstream sends its first chunk and then stalls.
    let mut probe = h
        .as_user(Method::POST, "/v1/chat/completions", "b")
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "probe [[mock: fault=hang; after=1; model=dead-gpt]]"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(probe.status(), 200);
    probe.chunk().await.expect("chunk").expect("first chunk");
    assert_eq!(
        requests_for(&h.mock, "dead-gpt"),
        2,
        "the probe went through"
    );
    // While it is still open, the recovered model takes other calls.
    let (status, _) = h
        .chat("c", json!([{"role": "user", "content": "meanwhile"}]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(stored_answer(&h, "c").await["model"], "dead-gpt");
    drop(probe);
}

async fn all_models_failing_answers_the_fallback_in_the_callers_language(db: Db) {
    let h = Harness::start_with(db, |c, m| {
        fast_retries(c);
        c.limits.retry_max_attempts = 1;
        dead_primary(c, m);
        c.fallback_responses = [
            ("en".to_owned(), "Sorry, try again later.".to_owned()),
            ("de".to_owned(), "Entschuldigung, bitte später.".to_owned()),
        ]
        .into();
    })
    .await;
    for (user, lang, expected) in [
        ("anna", "de-DE", "Entschuldigung, bitte später."),
        ("bob", "en", "Sorry, try again later."),
    ] {
        let (status, body) = h
            .json(
                h.as_user(Method::POST, "/v1/chat/completions", user)
                    .header("accept-language", lang)
                    .json(&json!({"messages": [{"role": "user", "content": "hi [[mock: status=500]]"}]})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], expected);
        let answer = stored_answer(&h, user).await;
        assert_eq!(answer["content"], expected);
        assert_eq!(answer["model"], "fallback");
    }
    // Both failures are listed, newest first, with the reason; the admin key is
    // required (the client key is refused).
    let (status, body) = h.get("admin", "/api/admin/failures?limit=1").await;
    assert_eq!(status, 401, "the client key opens no admin route: {body}");
    let (status, page) = h.admin_get("/api/admin/failures?limit=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["pagination"]["total"], 2, "{page}");
    assert_eq!(page["pagination"]["has_more"], true);
    let failure = &page["data"][0];
    assert_eq!(failure["user_id"], "bob");
    assert_eq!(failure["model"], "fallback");
    assert!(
        failure["reason"]
            .as_str()
            .is_some_and(|r| r.contains("dead-gpt") && r.contains("500")),
        "{failure}"
    );
    let (_, page) = h.admin_get("/api/admin/failures?limit=1&offset=1").await;
    assert_eq!(page["data"][0]["user_id"], "anna");
    let r = h
        .client
        .get(h.url("/api/admin/failures"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 401);
}

async fn rate_limits_answer_429_with_retry_after(db: Db) {
    let h = Harness::start_with(db, |c, _| {
        c.rate_limit = Some(RateLimitConfig {
            requests_per_minute_per_user: Some(2),
            tokens_per_minute: None,
        });
    })
    .await;
    common::within_one_rate_window(std::time::Duration::from_secs(15)).await;
    for i in 0..2 {
        let (status, _) = h
            .chat("a", json!([{"role": "user", "content": format!("m{i}")}]))
            .await;
        assert_eq!(status, 200);
    }
    let response = h
        .as_user(Method::POST, "/v1/chat/completions", "a")
        .json(&json!({"messages": [{"role": "user", "content": "third"}]}))
        .send()
        .await
        .expect("sent");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    assert_error(&(status, body.clone()), 429, "rate_limited");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // The refused message was not stored; other users are not limited.
    let (_, list) = h.get("a", "/api/sessions?limit=100").await;
    assert_eq!(list["pagination"]["total"], 2);
    let (status, _) = h
        .chat("b", json!([{"role": "user", "content": "hi"}]))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &h,
            "switchboard_runtime_rate_limited_requests_total{scope=\"user\"}"
        )
        .await,
        1.0
    );
}

async fn token_budget_answers_429(db: Db) {
    let h = Harness::start_with(db, |c, _| {
        c.rate_limit = Some(RateLimitConfig {
            requests_per_minute_per_user: None,
            tokens_per_minute: Some(20),
        });
    })
    .await;
    common::within_one_rate_window(std::time::Duration::from_secs(15)).await;
    let (status, _) = h
        .chat(
            "a",
            json!([{"role": "user", "content": "a long one [[mock: words=60]]"}]),
        )
        .await;
    assert_eq!(status, 200);
    let result = h
        .chat("b", json!([{"role": "user", "content": "next"}]))
        .await;
    assert_error(&result, 429, "rate_limited");
}

async fn a_full_queue_answers_503_with_retry_after(db: Db) {
    let h = Harness::start_with(db, |c, _| {
        c.limits.upstream_concurrency = 1;
        c.limits.upstream_queue = 1;
    })
    .await;
    let mut pending = Vec::new();
    for i in 0..3 {
        let request = h
            .as_user(Method::POST, "/v1/chat/completions", &format!("u{i}"))
            .json(&json!({"messages": [{"role": "user", "content": format!("slow {i} [[mock: latency=1500]]")}]}));
        pending.push(tokio::spawn(async move {
            let response = request.send().await.expect("sent");
            let retry_after = response.headers().get("retry-after").cloned();
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("json");
            (status, retry_after, body)
        }));
        // Let each request reach the gate before the next.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut statuses = Vec::new();
    for task in pending {
        let (status, retry_after, body) = task.await.expect("joined");
        if status == 503 {
            assert!(retry_after.is_some(), "503 without Retry-After");
            assert_eq!(body["error"]["code"], "overloaded", "{body}");
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503]);
    assert_eq!(
        h.mock.request_count(),
        2,
        "the refused turn never went upstream"
    );
}

async fn client_disconnect_cancels_the_upstream_stream(db: Db) {
    let h = Harness::start(db).await;
    let mut response = h
        .as_user(Method::POST, "/v1/chat/completions", "a")
        .json(&json!({"stream": true, "messages": [{"role": "user", "content": "[[mock: words=400; chunk_delay=50]]"}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    // Read until some text arrived, then go away.
    let mut seen = String::new();
    while !seen.contains("alpha") {
        let chunk = response.chunk().await.expect("chunk").expect("more");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(h.mock.open_streams(), 1);
    drop(response);
    let deadline = Instant::now() + Duration::from_secs(10);
    while (h.mock.open_streams() > 0 || h.state.metrics.active_streams.get() > 0)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.mock.open_streams(), 0, "upstream stream still open");
    assert_eq!(h.mock.abandoned_streams(), 1, "upstream stream not cut");
    assert_eq!(h.state.metrics.active_streams.get(), 0);
    // The partial answer is stored with the reason.
    let mut answer = Value::Null;
    while Instant::now() < deadline {
        answer = stored_answer(&h, "a").await;
        if answer["role"] == "assistant" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answer["role"], "assistant", "{answer}");
    assert!(
        answer["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("alpha")),
        "{answer}"
    );
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("disconnected")),
        "{answer}"
    );
}

on_both_databases!(
    transient_faults_are_retried,
    retry_waits_for_retry_after,
    streams_failing_before_the_first_token_are_retried,
    fallback_chain_answers_when_the_primary_fails,
    each_model_sends_its_own_sampling_settings,
    circuit_opens_then_probes_and_closes,
    streams_breaking_midway_open_the_circuit,
    a_long_probe_stream_does_not_hold_the_circuit_half_open,
    all_models_failing_answers_the_fallback_in_the_callers_language,
    rate_limits_answer_429_with_retry_after,
    token_budget_answers_429,
    a_full_queue_answers_503_with_retry_after,
    client_disconnect_cancels_the_upstream_stream,
);
