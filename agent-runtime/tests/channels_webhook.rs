//! The webhook channel: signed inbound messages (bad signatures, stale
//! timestamps and replays refused), answers POSTed signed to the callback URL,
//! retried with backoff while the callback fails, across a runtime restart,
//! delivered exactly once.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_runtime::SharedState;
use agent_runtime::channel_registry::signing::sign;
use agent_runtime::channels::ChannelTasks;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::{Db, Harness};
use crds::runtime_config::{ChannelConfig, ChannelType, RuntimeConfig, WebhookConfig};
use serde_json::{Value, json};
use switchboard_tests::mock_llm::MockLlm;
use switchboard_tests::wait::eventually;

const KEY: &str = "whsec-test-key";
const KEY_ENV: &str = "HOOK_SIGNING_KEY";

/// A callback receiver: records what it gets; answers 500 while `failing`.
#[derive(Clone, Default)]
struct Callback {
    received: Arc<Mutex<Vec<(HeaderMap, Bytes, u16)>>>,
    failing: Arc<AtomicBool>,
}

impl Callback {
    async fn start(failing: bool) -> (Self, String) {
        let callback = Self::default();
        callback.failing.store(failing, Ordering::SeqCst);
        let state = callback.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let status = if state.failing.load(Ordering::SeqCst) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    state
                        .received
                        .lock()
                        .expect("lock")
                        .push((headers, body, status.as_u16()));
                    status
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (callback, url)
    }

    fn accepted(&self) -> Vec<(HeaderMap, Bytes)> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, _, status)| *status == 200)
            .map(|(h, b, _)| (h.clone(), b.clone()))
            .collect()
    }

    fn attempts(&self) -> usize {
        self.received.lock().expect("lock").len()
    }

    /// Waits up to `seconds` until the callback has accepted at least `answers`
    /// answers (the tests count them exactly afterwards).
    async fn answered(&self, answers: usize, seconds: u64, what: &str) {
        eventually(Duration::from_secs(seconds), what, || {
            let n = self.accepted().len();
            async move { (n >= answers).then_some(()) }
        })
        .await;
    }
}

fn webhook_channel(config: &mut RuntimeConfig, callback_url: &str) {
    config.channels = vec![
        ChannelConfig {
            name: "hooks".into(),
            channel_type: ChannelType::Webhook,
            webhook: Some(WebhookConfig {
                callback_url: callback_url.to_owned(),
                signing_key_env: KEY_ENV.into(),
                timestamp_tolerance_seconds: Some(60),
            }),
            ..ChannelConfig::default()
        },
        ChannelConfig {
            name: "web".into(),
            ..ChannelConfig::default()
        },
    ];
}

async fn start(db: Db, callback_url: &str) -> (Harness, ChannelTasks) {
    let url = callback_url.to_owned();
    let h = Harness::start_with(db, move |config, _| webhook_channel(config, &url)).await;
    h.state
        .webhooks
        .keys
        .set_lookup(|name| (name == KEY_ENV).then(|| KEY.to_owned()));
    let tasks = ChannelTasks::start(&h.state, |_| None).await;
    (h, tasks)
}

/// Waits until the outbox holds exactly `delivered` delivered rows and nothing pending
/// or failed: a delivered row has no lease and is never sent again. Callers then stop
/// the delivery workers (which waits for them to exit), after which the callback has
/// received everything it ever will, and count.
async fn outbox_settled(state: &SharedState, delivered: i64) {
    eventually(
        Duration::from_secs(15),
        &format!("{delivered} delivered and nothing pending in the outbox"),
        || async {
            let counts = (
                state.store.count_deliveries("delivered").await.ok()?,
                state.store.count_deliveries("pending").await.ok()?,
                state.store.count_deliveries("failed").await.ok()?,
            );
            (counts == (delivered, 0, 0)).then_some(())
        },
    )
    .await
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    timestamp: i64,
    signature: Option<String>,
) -> (u16, Value) {
    let raw = serde_json::to_vec(body).expect("json");
    let signature = signature.unwrap_or_else(|| sign(KEY.as_bytes(), timestamp, &raw));
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-switchboard-timestamp", timestamp.to_string())
        .header("x-switchboard-signature", signature)
        .body(raw)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn message(text: &str) -> Value {
    json!({"conversationId": "conv-1", "user": "carol", "text": text})
}

/// Checks one delivery's signature and returns its JSON.
fn verified(headers: &HeaderMap, body: &Bytes) -> Value {
    let timestamp: i64 = headers["x-switchboard-timestamp"]
        .to_str()
        .expect("text")
        .parse()
        .expect("unix seconds");
    assert_eq!(
        headers["x-switchboard-signature"].to_str().expect("text"),
        sign(KEY.as_bytes(), timestamp, body),
        "the callback is signed with the channel's key"
    );
    assert!((now() - timestamp).abs() < 60);
    serde_json::from_slice(body).expect("json answer")
}

async fn a_signed_message_is_answered_at_the_callback(db: Db) {
    let (callback, url) = Callback::start(false).await;
    let (h, tasks) = start(db, &url).await;
    let (status, accepted) = send(
        &h.client,
        &h.url("/channels/hooks/webhook"),
        &message("what are your opening hours?"),
        now(),
        None,
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    let delivery_id = accepted["deliveryId"]
        .as_str()
        .expect("delivery id")
        .to_owned();
    let delivered = eventually(
        Duration::from_secs(15),
        "the answer at the callback",
        || {
            let got = callback.accepted();
            async move { got.into_iter().next() }
        },
    )
    .await;
    let answer = verified(&delivered.0, &delivered.1);
    assert_eq!(answer["deliveryId"], delivery_id.as_str());
    assert_eq!(delivered.0["x-switchboard-delivery"], delivery_id.as_str());
    assert_eq!(answer["conversationId"], "conv-1");
    assert_eq!(answer["user"], "carol");
    assert_eq!(answer["inReplyTo"], accepted["messageId"]);
    assert!(
        answer["text"]
            .as_str()
            .is_some_and(|t| t.contains("opening hours")),
        "the mock echoes the question: {answer}"
    );
    // The conversation is stored under the channel and the sender's user.
    let (_, sessions) = h.get("carol", "/channels/web/api/sessions").await;
    assert_eq!(sessions["data"][0]["channel"], "hooks", "{sessions}");
    assert_eq!(sessions["data"][0]["message_count"], 2, "{sessions}");
    // The same conversation id continues the same session.
    let (status, second) = send(
        &h.client,
        &h.url("/channels/hooks/webhook"),
        &message("and on Sundays?"),
        now(),
        None,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(second["sessionId"], accepted["sessionId"]);
    callback.answered(2, 15, "the second answer").await;
    outbox_settled(&h.state, 2).await;
    tasks.stop().await;
    assert_eq!(callback.accepted().len(), 2, "each answer delivered once");
}

/// An attempt that outlasts the lease (here 0.6 s, a model taking 1.5 s; the
/// outbox is polled every second) keeps it: the next poll does not claim the row
/// again and answer the message a second time.
async fn a_slow_answer_keeps_its_lease_and_is_given_once(db: Db) {
    let (callback, h, tasks) = a_slow_message_with_a_short_lease(db).await;
    callback.answered(1, 15, "the answer at the callback").await;
    outbox_settled(&h.state, 1).await;
    // Time for a second attempt, had the row been claimed again, to finish (stopping
    // the workers would cut it short).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    answered_once(&callback, &h, tasks).await;
}

/// A runtime whose outbox leases last 0.6 s, sent a message the model takes 1.5 s
/// to answer.
async fn a_slow_message_with_a_short_lease(db: Db) -> (Callback, Harness, ChannelTasks) {
    let (callback, url) = Callback::start(false).await;
    let (h, tasks) = start(db, &url).await;
    h.state.webhooks.set_lease(Duration::from_millis(600));
    let (status, accepted) = send(
        &h.client,
        &h.url("/channels/hooks/webhook"),
        &message("a slow one [[mock: latency=1500]]"),
        now(),
        None,
    )
    .await;
    assert_eq!(status, 202, "{accepted}");
    (callback, h, tasks)
}

/// Stops the delivery workers, then checks that the callback got one answer and one
/// answer was stored.
async fn answered_once(callback: &Callback, h: &Harness, tasks: ChannelTasks) {
    tasks.stop().await;
    assert_eq!(callback.accepted().len(), 1, "answered once");
    let (_, sessions) = h.get("carol", "/channels/web/api/sessions").await;
    assert_eq!(
        sessions["data"][0]["message_count"], 2,
        "one answer stored: {sessions}"
    );
}

/// A worker that finds its lease taken by another (it could not reach the database
/// for a whole lease, and another pod claimed the row) stops its attempt: the
/// message is answered once, by the holder, never also by the worker that lost it.
/// Here the test takes the lease itself, as another pod's claim would, while the
/// model takes 1.5 s; the row is attempted again once that lease lapses.
async fn an_attempt_whose_lease_was_taken_stops(db: Db) {
    use agent_runtime::db::OutboxFilter;
    let (callback, h, tasks) = a_slow_message_with_a_short_lease(db).await;
    let store = &h.state.store;
    let filter = OutboxFilter {
        channel: None,
        state: None,
        after: None,
        limit: 1,
        now_ms: 0,
    };
    let id = eventually(Duration::from_secs(10), "the delivery claimed", || async {
        let (entries, _) = store.outbox_entries(&filter).await.ok()?;
        let entry = entries.first()?;
        entry.locked_until.map(|_| entry.id.clone())
    })
    .await;
    // Taken as a rival's renewal of its own claim would: from the lease the row holds.
    const TAKEN_FOR_MS: i64 = 4_000;
    let taken_at = std::time::Instant::now();
    eventually(Duration::from_secs(5), "the lease taken", || async {
        let held = store.outbox_entry(&id).await.ok()??.locked_until?;
        let until = chrono::Utc::now().timestamp_millis() + TAKEN_FOR_MS;
        store
            .renew_delivery_lease(&id, held, until)
            .await
            .ok()?
            .then_some(())
    })
    .await;
    callback.answered(1, 15, "the answer at the callback").await;
    // Not before the taken lease lapsed: the attempt that lost it (its answer due
    // ~1.5 s after it began) did not post.
    let answered_after = taken_at.elapsed();
    assert!(
        answered_after >= Duration::from_millis(TAKEN_FOR_MS as u64 - 200),
        "answered {answered_after:?} after the lease was taken"
    );
    outbox_settled(&h.state, 1).await;
    answered_once(&callback, &h, tasks).await;
}

async fn bad_stale_and_replayed_messages_are_refused(db: Db) {
    let (callback, url) = Callback::start(false).await;
    let (h, tasks) = start(db, &url).await;
    let endpoint = h.url("/channels/hooks/webhook");
    let body = message("hello");

    let (status, err) = send(
        &h.client,
        &endpoint,
        &body,
        now(),
        Some("sha256=00ff".into()),
    )
    .await;
    assert_eq!(status, 401, "{err}");
    assert_eq!(err["error"]["code"], "invalid_signature");
    let wrong_key = sign(
        b"not-the-key",
        now(),
        &serde_json::to_vec(&body).expect("json"),
    );
    assert_eq!(
        send(&h.client, &endpoint, &body, now(), Some(wrong_key))
            .await
            .0,
        401
    );
    let unsigned = h
        .client
        .post(&endpoint)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(unsigned.status(), 401);

    let (status, err) = send(&h.client, &endpoint, &body, now() - 3600, None).await;
    assert_eq!(status, 401, "{err}");
    assert_eq!(err["error"]["code"], "stale_timestamp");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("replayed or stale"),
        "{err}"
    );
    // The channel's own tolerance (60 s) applies, not the default (300 s): two
    // minutes old is refused, half a minute old is accepted.
    let (status, err) = send(&h.client, &endpoint, &body, now() - 120, None).await;
    assert_eq!(status, 401, "{err}");
    assert_eq!(err["error"]["code"], "stale_timestamp");
    let recent = message("half a minute old");
    let (status, err) = send(&h.client, &endpoint, &recent, now() - 30, None).await;
    assert_eq!(status, 202, "{err}");

    let at = now();
    let raw = serde_json::to_vec(&body).expect("json");
    let signature = sign(KEY.as_bytes(), at, &raw);
    assert_eq!(
        send(&h.client, &endpoint, &body, at, Some(signature.clone()))
            .await
            .0,
        202
    );
    let (status, err) = send(&h.client, &endpoint, &body, at, Some(signature)).await;
    assert_eq!(status, 409, "a replay is refused: {err}");
    assert_eq!(err["error"]["code"], "replayed");

    // Not a webhook channel / unknown channel.
    assert_eq!(
        send(
            &h.client,
            &h.url("/channels/web/webhook"),
            &body,
            now(),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        send(
            &h.client,
            &h.url("/channels/nope/webhook"),
            &body,
            now(),
            None
        )
        .await
        .0,
        404
    );
    callback
        .answered(2, 15, "the two accepted messages answered")
        .await;
    outbox_settled(&h.state, 2).await;
    tasks.stop().await;
    assert_eq!(
        callback.accepted().len(),
        2,
        "only the accepted messages were answered"
    );
}

async fn a_failing_callback_gets_the_answer_once_it_recovers(db: Db) {
    let (callback, url) = Callback::start(true).await;
    let (h, tasks) = start(db, &url).await;
    let (status, _) = send(
        &h.client,
        &h.url("/channels/hooks/webhook"),
        &message("are you there?"),
        now(),
        None,
    )
    .await;
    assert_eq!(status, 202);
    eventually(Duration::from_secs(20), "several failed attempts", || {
        let n = callback.attempts();
        async move { (n >= 3).then_some(()) }
    })
    .await;
    assert!(callback.accepted().is_empty());
    assert_eq!(
        h.state
            .store
            .count_deliveries("pending")
            .await
            .expect("count"),
        1
    );
    // The backlog shows in the metrics (recounted every 10 s).
    eventually(Duration::from_secs(25), "the backlog gauge at 1", || {
        let h = &h;
        async move {
            let n = h
                .metric_sum("switchboard_runtime_webhook_outbox_pending{channel=\"hooks\"}")
                .await;
            (n == 1.0).then_some(())
        }
    })
    .await;
    assert!(
        h.metric_sum("switchboard_runtime_webhook_outbox_oldest_age_seconds{channel=\"hooks\"}")
            .await
            > 0.0
    );
    callback.failing.store(false, Ordering::SeqCst);
    callback
        .answered(1, 40, "the delivery after recovery")
        .await;
    outbox_settled(&h.state, 1).await;
    eventually(
        Duration::from_secs(25),
        "the backlog gauge back at 0",
        || {
            let h = &h;
            async move {
                let n = h
                    .metric_sum("switchboard_runtime_webhook_outbox_pending{channel=\"hooks\"}")
                    .await;
                (n == 0.0).then_some(())
            }
        },
    )
    .await;
    tasks.stop().await;
    assert_eq!(callback.accepted().len(), 1, "delivered exactly once");
}

/// A second message in a conversation that arrives before the first is
/// answered, and is worked on only after that answer is stored (the order the
/// outbox can take), is answered too, with the first question and its answer in
/// its prompt. It used to fall off the conversation's branch once the first
/// answer was stored and was retried until given up.
async fn a_message_stored_before_the_previous_answer_is_answered_too(db: Db) {
    use agent_runtime::conversation::{self, Participant, SessionRef};
    let (_callback, url) = Callback::start(false).await;
    let (h, tasks) = start(db, &url).await;
    tasks.stop().await;
    let carol = Participant {
        user: "carol".into(),
        channel: "hooks".into(),
        language: None,
        author: None,
    };
    let thread = || SessionRef::External("conv-9".into());
    let first = conversation::record(&h.state, &carol, thread(), "first question")
        .await
        .expect("stored");
    let second = conversation::record(&h.state, &carol, thread(), "second question")
        .await
        .expect("stored");
    assert_eq!(first.session_id, second.session_id);
    let answer =
        conversation::answer_recorded(&h.state, &carol, &first.session_id, &first.message.id)
            .await
            .expect("the first answered");
    let answer = answer.message.content;
    conversation::answer_recorded(&h.state, &carol, &second.session_id, &second.message.id)
        .await
        .expect("the second answered after the first answer was stored");
    let prompt = h.mock.requests().pop().expect("called").body;
    let contents: Vec<&str> = prompt["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(
        contents[1..],
        ["first question", answer.as_str(), "second question"],
        "{prompt}"
    );
}

/// A receiver with the answers the runtime must not take for success or
/// retry forever: `/moved` redirects (301) to `/final`, `/gone` is 410,
/// `/busy` is 429 with `Retry-After: 2` the first time. Records each
/// request's path, method and when it came.
async fn awkward_receiver() -> (
    Arc<Mutex<Vec<(String, String, std::time::Instant)>>>,
    String,
) {
    use axum::response::IntoResponse;
    let seen: Arc<Mutex<Vec<(String, String, std::time::Instant)>>> = Arc::default();
    let record = seen.clone();
    let app =
        axum::Router::new().fallback(move |method: axum::http::Method, uri: axum::http::Uri| {
            let record = record.clone();
            async move {
                let path = uri.path().to_owned();
                let first = !record
                    .lock()
                    .expect("lock")
                    .iter()
                    .any(|(p, _, _)| *p == path);
                record.lock().expect("lock").push((
                    path.clone(),
                    method.to_string(),
                    std::time::Instant::now(),
                ));
                match path.as_str() {
                    "/moved" => {
                        (StatusCode::MOVED_PERMANENTLY, [("location", "/final")]).into_response()
                    }
                    "/gone" => StatusCode::GONE.into_response(),
                    "/busy" if first => {
                        (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "2")]).into_response()
                    }
                    _ => StatusCode::OK.into_response(),
                }
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (seen, base)
}

/// The outbox entry of the only delivery, once `ready` holds for it.
async fn outbox_entry(h: &Harness, ready: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(15), "the outbox entry", || async {
        let (_, page) = h.admin_get("/api/admin/outbox").await;
        let entry = page["data"][0].clone();
        ready(&entry).then_some(entry)
    })
    .await
}

/// A callback that redirects is not followed (a 301 turns the POST into a
/// GET without the answer, whose 200 would have marked it delivered): the
/// answer stays pending, saying why. A 410 is given up at once. A 429's
/// `Retry-After` is waited out.
async fn redirects_gone_and_throttled_callbacks(db: Db) {
    let (seen, base) = awkward_receiver().await;
    let (h, tasks) = start(db, &format!("{base}/moved")).await;
    let url = h.url("/channels/hooks/webhook");
    assert_eq!(
        send(&h.client, &url, &message("one"), now(), None).await.0,
        202
    );
    let entry = outbox_entry(&h, |e| {
        e["last_error"].as_str().is_some_and(|m| m.contains("301"))
    })
    .await;
    assert!(
        entry["last_error"]
            .as_str()
            .is_some_and(|m| m.contains("redirect")),
        "{entry}"
    );
    assert_eq!(entry["state"], "pending", "{entry}");
    tasks.stop().await;
    assert!(
        !seen
            .lock()
            .expect("lock")
            .iter()
            .any(|(p, _, _)| p == "/final"),
        "the redirect was not followed"
    );

    let (h, tasks) = start(db, &format!("{base}/gone")).await;
    let url = h.url("/channels/hooks/webhook");
    assert_eq!(
        send(&h.client, &url, &message("two"), now(), None).await.0,
        202
    );
    let entry = outbox_entry(&h, |e| e["state"] == "failed").await;
    assert!(
        entry["last_error"]
            .as_str()
            .is_some_and(|m| m.contains("410")),
        "{entry}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    tasks.stop().await;
    let gone = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|(p, _, _)| p == "/gone")
        .count();
    assert_eq!(gone, 1, "given up after the 410");

    let (h, tasks) = start(db, &format!("{base}/busy")).await;
    let url = h.url("/channels/hooks/webhook");
    assert_eq!(
        send(&h.client, &url, &message("three"), now(), None)
            .await
            .0,
        202
    );
    outbox_settled(&h.state, 1).await;
    tasks.stop().await;
    let busy: Vec<std::time::Instant> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|(p, _, _)| p == "/busy")
        .map(|(_, _, at)| *at)
        .collect();
    assert_eq!(busy.len(), 2, "a 429, then the delivery");
    assert!(
        busy[1] - busy[0] >= Duration::from_millis(1900),
        "Retry-After: 2 waited out: {:?}",
        busy[1] - busy[0]
    );
}

/// What the webhook takes is exactly `conversationId`, `user` and `text`: a
/// body with more (such as a callback the runtime signed, sent back to it) is
/// refused naming the field; a body over the size limit is a JSON 413.
async fn unknown_fields_and_oversized_bodies_are_refused(db: Db) {
    let (_callback, callback_url) = Callback::start(false).await;
    let (h, tasks) = start(db, &callback_url).await;
    let url = h.url("/channels/hooks/webhook");
    let mut echoed = message("hi");
    echoed["deliveryId"] = json!("0190aaaa-0000-7000-8000-000000000000");
    let (status, body) = send(&h.client, &url, &echoed, now(), None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("deliveryId")),
        "{body}"
    );
    assert_eq!(body["error"]["param"], "deliveryId", "{body}");
    let huge = json!({"conversationId": "c", "user": "u", "text": "x".repeat(3 * 1024 * 1024)});
    let (status, body) = send(&h.client, &url, &huge, now(), None).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    tasks.stop().await;
}

/// A sender that names its messages (`messageId`) can retry one signed anew
/// (a new timestamp, after a lost answer): it is taken once, the retry gets
/// `200` with the first one's ids, and one answer is delivered.
async fn a_named_message_sent_again_is_taken_once(db: Db) {
    let (callback, callback_url) = Callback::start(false).await;
    let (h, tasks) = start(db, &callback_url).await;
    let url = h.url("/channels/hooks/webhook");
    let mut named = message("where is my parcel?");
    named["messageId"] = json!("m-1");
    let (status, first) = send(&h.client, &url, &named, now(), None).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = send(&h.client, &url, &named, now() - 1, None).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first, "the first one's ids");
    named["messageId"] = json!("");
    let (status, refused) = send(&h.client, &url, &named, now(), None).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["param"], "messageId", "{refused}");
    outbox_settled(&h.state, 1).await;
    tasks.stop().await;
    assert_eq!(callback.accepted().len(), 1, "one answer");
}

on_both_databases!(
    a_named_message_sent_again_is_taken_once,
    redirects_gone_and_throttled_callbacks,
    unknown_fields_and_oversized_bodies_are_refused,
    a_signed_message_is_answered_at_the_callback,
    a_slow_answer_keeps_its_lease_and_is_given_once,
    an_attempt_whose_lease_was_taken_stops,
    a_message_stored_before_the_previous_answer_is_answered_too,
    bad_stale_and_replayed_messages_are_refused,
    a_failing_callback_gets_the_answer_once_it_recovers,
);

/// The runtime stops while the callback is down; a new runtime on the same
/// database delivers the pending answer once the callback is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_answers_survive_a_restart() {
    use agent_runtime::{AppState, DatabaseTarget, Settings};
    let (callback, url) = Callback::start(true).await;
    let mock = MockLlm::start().await.expect("mock");
    let dir = common::TempDir::new();
    let database = DatabaseTarget::Sqlite(dir.0.join("rt.db").display().to_string());
    let boot = || {
        let mut config = common::base_config(&mock);
        webhook_channel(&mut config, &url);
        config.database.url_env = None;
        let database = database.clone();
        async move {
            let mut settings = Settings::resolve(config, |name| match name {
                "UPSTREAM_KEY" => Some("sk-upstream".to_owned()),
                _ => None,
            })
            .expect("settings");
            settings.database = database;
            let state = AppState::build(settings).await.expect("runtime starts");
            state
                .webhooks
                .keys
                .set_lookup(|name| (name == KEY_ENV).then(|| KEY.to_owned()));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let server = tokio::spawn(
                axum::serve(listener, agent_runtime::router(state.clone())).into_future(),
            );
            let tasks = ChannelTasks::start(&state, |_| None).await;
            (state, addr, server, tasks)
        }
    };
    let (first, addr, server, tasks) = boot().await;
    let client = reqwest::Client::new();
    let (status, _) = send(
        &client,
        &format!("http://{addr}/channels/hooks/webhook"),
        &message("remember me"),
        now(),
        None,
    )
    .await;
    assert_eq!(status, 202);
    eventually(Duration::from_secs(20), "a failed attempt", || {
        let n = callback.attempts();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    tasks.stop().await;
    server.abort();
    drop(first);
    let attempts_before = callback.attempts();

    callback.failing.store(false, Ordering::SeqCst);
    let (second, _, server, tasks) = boot().await;
    callback
        .answered(1, 40, "the delivery by the new runtime")
        .await;
    let (headers, body) = callback.accepted().remove(0);
    let answer = verified(&headers, &body);
    assert!(
        answer["text"]
            .as_str()
            .is_some_and(|t| t.contains("remember me")),
        "{answer}"
    );
    outbox_settled(&second, 1).await;
    tasks.stop().await;
    server.abort();
    assert_eq!(callback.accepted().len(), 1, "exactly once");
    assert!(callback.attempts() > attempts_before);
}
