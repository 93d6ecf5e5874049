//! The admin API over conversations made through the runtime itself: a web
//! user whose second answer fails (every model failing) and who is then
//! rate-limited, another web user, and a webhook message whose callback refuses
//! its answer (an outbox entry). Each route is checked on what those chats
//! stored: conversations with filters and cursor pages, one conversation with
//! its messages, the stats, the channels, the outbox and its manual retry; and
//! every refused parameter names itself. Tool calls waiting for approval are
//! listed across sessions and decided by the admin.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use agent_runtime::channel_registry::signing::sign;
use agent_runtime::channels::ChannelTasks;
use agent_runtime::db::ToolApproval;
use axum::http::StatusCode;
use common::{ADMIN_KEY, Db, Harness, assert_error};
use crds::runtime_config::{
    ChannelConfig, ChannelType, Micros, PricingConfig, RateLimitConfig, WebhookConfig,
};
use reqwest::Method;
use serde_json::{Value, json};
use switchboard_tests::wait::eventually;

const KEY: &str = "whsec-admin-test";
const KEY_ENV: &str = "ADMIN_TEST_HOOK_KEY";
/// What carol sends through the webhook: it must not show in the outbox listing.
const CAROL_TEXT: &str = "my order number is 4711, where is it?";

/// A callback that refuses (500) while `failing`, counting what it gets.
#[derive(Clone, Default)]
struct Callback {
    failing: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl Callback {
    async fn start() -> (Self, String) {
        let callback = Self::default();
        callback.failing.store(true, Ordering::SeqCst);
        let state = callback.clone();
        let app = axum::Router::new().route(
            // A path that is a credential, as Slack's and Discord's webhook URLs are.
            "/hook/path-secret",
            axum::routing::post(move || {
                let state = state.clone();
                async move {
                    if state.failing.load(Ordering::SeqCst) {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        state.accepted.fetch_add(1, Ordering::SeqCst);
                        StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/hook/path-secret",
            listener.local_addr().expect("addr")
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (callback, url)
    }
}

struct World {
    h: Harness,
    tasks: Option<ChannelTasks>,
    callback: Callback,
    callback_url: String,
    alice_session: String,
}

async fn start(db: Db) -> World {
    let (callback, callback_url) = Callback::start().await;
    let url = format!("{callback_url}?token=query-secret");
    let h = Harness::start_with(db, move |config, _| {
        config.limits.retry_max_attempts = 1;
        config.limits.retry_base_delay_ms = 10;
        config.fallback_responses = [("en".to_owned(), "Sorry, try later.".to_owned())].into();
        config.rate_limit = Some(RateLimitConfig {
            requests_per_minute_per_user: Some(2),
            tokens_per_minute: None,
        });
        config.model.pricing = Some(PricingConfig {
            input_per_million_tokens: Micros::parse("1").expect("price"),
            output_per_million_tokens: Micros::parse("2").expect("price"),
            currency: "USD".into(),
        });
        config.channels = vec![
            ChannelConfig {
                name: "web".into(),
                language: Some("en".into()),
                ..ChannelConfig::default()
            },
            ChannelConfig {
                name: "hooks".into(),
                channel_type: ChannelType::Webhook,
                webhook: Some(WebhookConfig {
                    callback_url: url,
                    signing_key_env: KEY_ENV.into(),
                    timestamp_tolerance_seconds: Some(60),
                }),
                ..ChannelConfig::default()
            },
        ];
        config.default_channel = Some("web".into());
    })
    .await;
    h.state
        .webhooks
        .keys
        .set_lookup(|name| (name == KEY_ENV).then(|| KEY.to_owned()));
    let tasks = ChannelTasks::start(&h.state, |_| None).await;
    World {
        h,
        tasks: Some(tasks),
        callback,
        callback_url,
        alice_session: String::new(),
    }
}

impl World {
    /// The chats the admin routes are checked on.
    async fn chat(&mut self) {
        let h = &self.h;
        common::within_one_rate_window(Duration::from_secs(25)).await;
        // alice: one answer, one failed answer (every model fails: the fallback
        // is answered), then refused by her per-user limit of 2 a minute.
        let (status, session) = h
            .post("alice", "/api/sessions", json!({"title": "alice asks"}))
            .await;
        assert_eq!(status, 201, "{session}");
        let id = session["id"].as_str().expect("id").to_owned();
        let path = format!("/api/sessions/{id}/messages");
        let (status, turn) = h
            .post(
                "alice",
                &path,
                json!({"content": "what are the opening hours?"}),
            )
            .await;
        assert_eq!(status, 201, "{turn}");
        let (status, turn) = h
            .post(
                "alice",
                &path,
                json!({"content": "and on sundays? [[mock: status=500]]"}),
            )
            .await;
        assert_eq!(status, 201, "the fallback is answered: {turn}");
        let refused = h.post("alice", &path, json!({"content": "hello?"})).await;
        assert_error(&refused, 429, "rate_limited");
        self.alice_session = id;
        // bob: one answer on the OpenAI route.
        let (status, body) = h
            .chat("bob", json!([{"role": "user", "content": "hi there"}]))
            .await;
        assert_eq!(status, 200, "{body}");
        // carol: a webhook message whose answer the callback refuses.
        let body = json!({"conversationId": "conv-9", "user": "carol", "text": CAROL_TEXT});
        let raw = serde_json::to_vec(&body).expect("json");
        let now = chrono::Utc::now().timestamp();
        let response = h
            .client
            .post(h.url("/channels/hooks/webhook"))
            .header("content-type", "application/json")
            .header("x-switchboard-timestamp", now.to_string())
            .header("x-switchboard-signature", sign(KEY.as_bytes(), now, &raw))
            .body(raw)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), 202);
        // Its answer was produced and refused at least once.
        eventually(
            Duration::from_secs(20),
            "a refused delivery in the outbox",
            || async {
                let (_, page) = h.admin_get("/api/admin/outbox").await;
                (page["data"][0]["attempts"].as_i64()? >= 1).then_some(())
            },
        )
        .await;
    }
}

/// Every conversation id of the listing `query`, following its cursors.
async fn all_pages(h: &Harness, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next = format!("/api/admin/conversations?{query}");
    for _ in 0..20 {
        let (status, page) = h.admin_get(&next).await;
        assert_eq!(status, 200, "{page}");
        for c in page["data"].as_array().expect("data") {
            ids.push(c["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page["has_more"], true);
                next = format!("/api/admin/conversations?{query}&cursor={cursor}");
            }
            None => {
                assert_eq!(page["has_more"], false);
                return ids;
            }
        }
    }
    panic!("the cursors do not end");
}

fn ids(page: &Value) -> Vec<&str> {
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect()
}

#[track_caller]
fn assert_bad_param(result: &(u16, Value), param: &str) {
    assert_error(result, 400, "invalid_query");
    assert_eq!(result.1["error"]["param"], param, "{}", result.1);
}

async fn conversations_are_listed_filtered_and_paged(db: Db) {
    let mut w = start(db).await;
    w.chat().await;
    let h = &w.h;
    let (status, all) = h.admin_get("/api/admin/conversations").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["data"].as_array().map(Vec::len), Some(3), "{all}");
    assert_eq!(all["has_more"], false);
    let by_user = |user: &str| {
        all["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|c| c["user"] == user)
            .cloned()
            .unwrap_or_else(|| panic!("{user} listed: {all}"))
    };
    let alice = by_user("alice");
    assert_eq!(alice["id"], w.alice_session.as_str());
    assert_eq!(alice["channel"], "web");
    assert_eq!(alice["status"], "failed");
    assert_eq!(alice["failed_turns"], 1);
    assert_eq!(alice["message_count"], 4);
    assert!(
        alice["failure_reason"]
            .as_str()
            .is_some_and(|r| r.contains("500")),
        "{alice}"
    );
    assert_eq!(by_user("bob")["status"], "active");
    let carol = by_user("carol");
    assert_eq!(carol["channel"], "hooks");
    assert_eq!(carol["external_id"], "conv-9");
    assert_eq!(carol["status"], "active");

    // Filters.
    let (_, failed) = h.admin_get("/api/admin/conversations?status=failed").await;
    assert_eq!(ids(&failed), [w.alice_session.as_str()]);
    let (_, active) = h.admin_get("/api/admin/conversations?status=active").await;
    assert_eq!(active["data"].as_array().map(Vec::len), Some(2), "{active}");
    let (_, idle) = h.admin_get("/api/admin/conversations?status=idle").await;
    assert_eq!(ids(&idle), Vec::<&str>::new());
    let (_, hooks) = h.admin_get("/api/admin/conversations?channel=hooks").await;
    assert_eq!(ids(&hooks), [carol["id"].as_str().expect("id")]);
    let (_, bob) = h
        .admin_get("/api/admin/conversations?user=bob&channel=web")
        .await;
    assert_eq!(bob["data"].as_array().map(Vec::len), Some(1), "{bob}");
    assert_eq!(bob["data"][0]["user"], "bob");
    let (_, none) = h
        .admin_get("/api/admin/conversations?user=bob&channel=hooks")
        .await;
    assert_eq!(ids(&none), Vec::<&str>::new());
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    let (_, later) = h
        .admin_get(&format!(
            "/api/admin/conversations?since={}",
            urlencode(&tomorrow)
        ))
        .await;
    assert_eq!(ids(&later), Vec::<&str>::new());
    let (_, recent) = h
        .admin_get(&format!(
            "/api/admin/conversations?since={}",
            urlencode(&yesterday)
        ))
        .await;
    assert_eq!(recent["data"].as_array().map(Vec::len), Some(3));

    // Cursor pages of one give the same conversations in the same order.
    let paged = all_pages(h, "limit=1").await;
    assert_eq!(paged, ids(&all));
    let paged = all_pages(h, "limit=2&channel=web").await;
    assert_eq!(paged.len(), 2);

    // Refusals name the parameter.
    for (query, param) in [
        ("status=broken", "status"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=12.a%20b", "cursor"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("since=yesterday", "since"),
        ("channel=%20", "channel"),
        ("user=", "user"),
    ] {
        let refused = h
            .admin_get(&format!("/api/admin/conversations?{query}"))
            .await;
        assert_bad_param(&refused, param);
    }
    w.stop().await;
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

async fn one_conversation_shows_its_messages(db: Db) {
    let mut w = start(db).await;
    w.chat().await;
    let h = &w.h;
    let path = format!("/api/admin/conversations/{}", w.alice_session);
    let (status, detail) = h.admin_get(&path).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["conversation"]["user"], "alice");
    assert_eq!(detail["conversation"]["status"], "failed");
    assert_eq!(detail["conversation"]["lifecycle"], "active");
    let messages = detail["messages"].as_array().expect("messages");
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().expect("role"))
        .collect();
    assert_eq!(
        roles,
        ["user", "assistant", "user", "assistant"],
        "{detail}"
    );
    assert_eq!(messages[0]["content"], "what are the opening hours?");
    assert_eq!(messages[1]["model"], "mock-gpt");
    assert!(messages[1]["tokens_out"].as_i64().is_some_and(|t| t > 0));
    assert!(messages[1]["error"].is_null());
    assert!(messages[1]["created_at"].is_string());
    assert_eq!(messages[3]["model"], "fallback");
    assert_eq!(messages[3]["content"], "Sorry, try later.");
    assert!(
        messages[3]["error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{detail}"
    );
    assert_eq!(detail["pagination"]["total"], 4);
    assert_eq!(detail["pagination"]["has_more"], false);

    // Pages of messages, like the sessions API.
    let (_, first) = h.admin_get(&format!("{path}?limit=3")).await;
    assert_eq!(first["messages"].as_array().map(Vec::len), Some(3));
    assert_eq!(first["pagination"]["has_more"], true);
    let (_, rest) = h.admin_get(&format!("{path}?limit=3&offset=3")).await;
    assert_eq!(rest["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["messages"][0]["id"], messages[3]["id"]);
    assert_eq!(rest["pagination"]["has_more"], false);

    // Any user's conversation, whichever channel: carol's webhook one too.
    let (_, hooks) = h.admin_get("/api/admin/conversations?channel=hooks").await;
    let carol = hooks["data"][0]["id"].as_str().expect("carol's");
    let (status, detail) = h
        .admin_get(&format!("/api/admin/conversations/{carol}"))
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["messages"][0]["content"], CAROL_TEXT);

    let missing = h.admin_get("/api/admin/conversations/no-such-id").await;
    assert_error(&missing, 404, "conversation_not_found");
    assert!(
        missing.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-id")),
        "{}",
        missing.1
    );
    assert_bad_param(&h.admin_get(&format!("{path}?limit=0")).await, "limit");
    assert_bad_param(&h.admin_get(&format!("{path}?offset=-1")).await, "offset");
    w.stop().await;
}

async fn stats_count_what_happened(db: Db) {
    let day = chrono::Utc::now().date_naive();
    let mut w = start(db).await;
    w.chat().await;
    let h = &w.h;
    let (status, stats) = h.admin_get("/api/admin/stats").await;
    assert_eq!(status, 200, "{stats}");
    let conversations = &stats["conversations"];
    assert_eq!(conversations["total"], 3, "{stats}");
    assert_eq!(conversations["active"], 3);
    assert_eq!(conversations["active_minutes"], 30);
    if chrono::Utc::now().date_naive() == day {
        assert_eq!(conversations["started_today"], 3);
    }
    // alice 4, bob 2, carol 2.
    assert_eq!(stats["messages"], 8);
    assert_eq!(stats["failures"]["last_hour"], 1);
    assert_eq!(stats["failures"]["last_day"], 1);
    assert_eq!(stats["failures"]["total"], 1);
    let limited = &stats["rate_limited_users"];
    assert_eq!(limited["all_pods"], true, "{stats}");
    assert!(
        limited["current_window"] == 1 || limited["last_window"] == 1,
        "alice was refused this minute or the last: {stats}"
    );
    assert_eq!(stats["active_channels"], 2);
    assert_eq!(stats["channels"], 2);
    let upstream = &stats["upstream"];
    assert_eq!(upstream["in_flight"], 0, "{stats}");
    assert_eq!(upstream["queued"], 0);
    assert_eq!(upstream["concurrency"], 256);
    assert_eq!(upstream["queue_capacity"], 1024);
    let outbox = stats["outbox"].as_array().expect("outbox");
    assert_eq!(outbox.len(), 1, "{stats}");
    assert_eq!(outbox[0]["channel"], "hooks");
    assert_eq!(
        outbox[0]["pending"].as_i64().unwrap_or(0) + outbox[0]["in_flight"].as_i64().unwrap_or(0),
        1,
        "{stats}"
    );
    assert_eq!(outbox[0]["failed"], 0);
    assert!(outbox[0]["oldest_pending_age_seconds"].is_i64(), "{stats}");
    let spend = &stats["spend"];
    assert_eq!(spend["currency"], "USD", "{stats}");
    assert_eq!(
        spend["window"],
        chrono::Utc::now().format("%Y-%m").to_string()
    );
    assert!(spend["output_tokens"].as_i64().is_some_and(|t| t > 0));

    let (_, narrow) = h.admin_get("/api/admin/stats?active_minutes=1").await;
    assert_eq!(narrow["conversations"]["active_minutes"], 1);
    for bad in ["0", "10081", "soon"] {
        let refused = h
            .admin_get(&format!("/api/admin/stats?active_minutes={bad}"))
            .await;
        assert_bad_param(&refused, "active_minutes");
    }
    w.stop().await;
}

async fn channels_show_settings_activity_and_outbox(db: Db) {
    let mut w = start(db).await;
    w.chat().await;
    let h = &w.h;
    let (status, list) = h.admin_get("/api/admin/channels").await;
    assert_eq!(status, 200, "{list}");
    let channels = list["data"].as_array().expect("data");
    let names: Vec<&str> = channels
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["hooks", "web"]);
    let (hooks, web) = (&channels[0], &channels[1]);
    assert_eq!(web["type"], "web");
    assert_eq!(web["enabled"], true);
    assert_eq!(web["default"], true);
    assert_eq!(web["language"], "en");
    assert_eq!(web["key_mode"], "agent");
    assert_eq!(
        web["features"],
        json!({"history": true, "search": true, "streaming": true})
    );
    assert!(web["last_message_at"].is_string(), "{list}");
    assert_eq!(web["outbox"]["pending"], 0);
    assert!(web["connection"].is_null());
    assert!(web.get("connection").is_some(), "the field is always there");
    assert_eq!(hooks["type"], "webhook");
    assert_eq!(hooks["default"], false);
    assert!(hooks["last_message_at"].is_string());
    assert_eq!(
        hooks["outbox"]["pending"].as_i64().unwrap_or(0)
            + hooks["outbox"]["in_flight"].as_i64().unwrap_or(0),
        1,
        "{list}"
    );
    w.stop().await;
}

async fn the_outbox_lists_entries_without_text_and_retries_dead_ones(db: Db) {
    let mut w = start(db).await;
    w.chat().await;
    let (status, page) = w.h.admin_get("/api/admin/outbox").await;
    assert_eq!(status, 200, "{page}");
    let text = page.to_string();
    assert!(!text.contains("order number"), "no message text: {page}");
    assert!(!text.contains("query-secret"), "no callback query: {page}");
    assert!(!text.contains(KEY), "no signing key: {page}");
    let entry = &page["data"][0];
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(entry["channel"], "hooks");
    assert!(!text.contains("path-secret"), "no callback path: {page}");
    let origin = w.callback_url.trim_end_matches("/hook/path-secret");
    assert_eq!(entry["target"], format!("{origin}/…"));
    assert_eq!(entry["conversation_id"], "conv-9");
    assert!(entry["session_id"].is_string());
    assert!(entry["attempts"].as_i64().is_some_and(|a| a >= 1));
    assert!(
        entry["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("500")),
        "{entry}"
    );
    assert!(
        entry["state"] == "pending" || entry["state"] == "in_flight",
        "{entry}"
    );
    let id = entry["id"].as_str().expect("id").to_owned();
    let (_, web) = w.h.admin_get("/api/admin/outbox?channel=web").await;
    assert_eq!(web["data"], json!([]));
    let (_, dead) = w.h.admin_get("/api/admin/outbox?state=failed").await;
    assert_eq!(dead["data"], json!([]));
    for (query, param) in [
        ("state=gone", "state"),
        ("limit=0", "limit"),
        ("cursor=x", "cursor"),
        ("channel=", "channel"),
    ] {
        let refused = w.h.admin_get(&format!("/api/admin/outbox?{query}")).await;
        assert_bad_param(&refused, param);
    }

    // A day of refusals gives the entry up: stop the workers and give it up as
    // they do after a day.
    if let Some(tasks) = w.tasks.take() {
        tasks.stop().await;
    }
    w.h.state
        .store
        .reschedule_delivery(
            &id,
            chrono::Utc::now().timestamp_millis() + 3_600_000,
            "callback answered HTTP 500",
            true,
        )
        .await
        .expect("given up");
    let (_, dead) = w.h.admin_get("/api/admin/outbox?state=failed").await;
    assert_eq!(dead["data"][0]["id"], id.as_str(), "{dead}");
    assert_eq!(dead["data"][0]["state"], "failed");
    assert!(dead["data"][0]["next_attempt_at"].is_null());
    let (_, stats) = w.h.admin_get("/api/admin/stats").await;
    assert_eq!(stats["outbox"][0]["failed"], 1, "{stats}");

    // The callback is back: a manual retry delivers the answer at once.
    w.callback.failing.store(false, Ordering::SeqCst);
    w.tasks = Some(ChannelTasks::start(&w.h.state, |_| None).await);
    let retry = format!("/api/admin/outbox/{id}/retry");
    let (status, retried) =
        w.h.json(
            w.h.client
                .request(Method::POST, w.h.url(&retry))
                .bearer_auth(ADMIN_KEY),
        )
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["entry"]["id"], id.as_str());
    eventually(
        Duration::from_secs(20),
        "the retried answer delivered",
        || async {
            let (_, page) = w.h.admin_get("/api/admin/outbox?state=delivered").await;
            (page["data"][0]["id"] == id.as_str()).then_some(())
        },
    )
    .await;
    assert_eq!(w.callback.accepted.load(Ordering::SeqCst), 1);
    let again =
        w.h.json(
            w.h.client
                .request(Method::POST, w.h.url(&retry))
                .bearer_auth(ADMIN_KEY),
        )
        .await;
    assert_error(&again, 409, "outbox_entry_not_retryable");
    let missing =
        w.h.json(
            w.h.client
                .request(Method::POST, w.h.url("/api/admin/outbox/nope/retry"))
                .bearer_auth(ADMIN_KEY),
        )
        .await;
    assert_error(&missing, 404, "outbox_entry_not_found");
    assert!(
        missing.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nope"))
    );
    w.stop().await;
}

async fn a_runtime_without_channels_lists_its_open_default_channel(db: Db) {
    let h = Harness::start(db).await;
    let (status, body) = h
        .chat("dora", json!([{"role": "user", "content": "hi"}]))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, list) = h.admin_get("/api/admin/channels").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    let channel = &list["data"][0];
    assert_eq!(channel["name"], "default");
    assert_eq!(channel["default"], true);
    assert!(channel["last_message_at"].is_string(), "{list}");
    let (_, stats) = h.admin_get("/api/admin/stats").await;
    assert_eq!(stats["channels"], 1, "{stats}");
    assert_eq!(stats["active_channels"], 1);
    assert_eq!(stats["outbox"], json!([]));
    assert!(stats["spend"].is_null(), "no prices, no spend: {stats}");
    let (_, conversations) = h.admin_get("/api/admin/conversations").await;
    assert_eq!(conversations["data"][0]["channel"], "default");
    assert_eq!(conversations["data"][0]["user"], "dora");
}

/// A pending approval in `session`, as the tool loop stores it, `age_ms` old
/// and expiring in `expires_in_ms`.
fn approval(id: &str, session: &str, age_ms: i64, expires_in_ms: i64) -> ToolApproval {
    let now = chrono::Utc::now().timestamp_millis();
    ToolApproval {
        id: id.into(),
        session_id: session.into(),
        message_id: format!("{id}-asked"),
        tool_call_id: format!("call-{id}"),
        tool: "delete_file".into(),
        source: "files".into(),
        arguments: r#"{"path":"/tmp/x"}"#.into(),
        requested_at: now - age_ms,
        expires_at: now + expires_in_ms,
        state: "pending".into(),
        decided_by: None,
        decided_at: None,
        reason: None,
    }
}

async fn session_of(h: &Harness, user: &str) -> String {
    let (status, session) = h.post(user, "/api/sessions", json!({})).await;
    assert_eq!(status, 201, "{session}");
    session["id"].as_str().expect("id").to_owned()
}

/// Every approval id of the listing `query`, following its cursors.
async fn all_approval_pages(h: &Harness, query: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut next = format!("/api/admin/approvals?{query}");
    for _ in 0..20 {
        let (status, page) = h.admin_get(&next).await;
        assert_eq!(status, 200, "{page}");
        found.extend(ids(&page).into_iter().map(str::to_owned));
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                assert_eq!(page["has_more"], true);
                next = format!("/api/admin/approvals?{query}&cursor={cursor}");
            }
            None => {
                assert_eq!(page["has_more"], false);
                return found;
            }
        }
    }
    panic!("the cursors do not end");
}

async fn approvals_are_listed_filtered_paged_and_decided(db: Db) {
    let h = Harness::start(db).await;
    let alice_1 = session_of(&h, "alice").await;
    let alice_2 = session_of(&h, "alice").await;
    let bob = session_of(&h, "bob").await;
    let store = &h.state().store;
    for row in [
        approval("a-oldest", &alice_1, 30_000, 600_000),
        approval("a-second", &alice_2, 20_000, 600_000),
        approval("b-third", &bob, 10_000, 600_000),
        // Past its time (its turn gone): not decidable, not listed.
        approval("a-lapsed", &alice_1, 40_000, -1_000),
    ] {
        store.add_tool_approval(&row).await.expect("stored");
    }
    let mut decided = approval("a-decided", &alice_2, 50_000, 600_000);
    decided.state = "approved".into();
    store.add_tool_approval(&decided).await.expect("stored");

    // Pending ones of every session, oldest first, with user and channel.
    let (status, all) = h.admin_get("/api/admin/approvals").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all), ["a-oldest", "a-second", "b-third"], "{all}");
    assert_eq!(all["has_more"], false);
    assert!(all["next_cursor"].is_null(), "{all}");
    let first = &all["data"][0];
    assert_eq!(first["session_id"], alice_1.as_str());
    assert_eq!(first["user"], "alice");
    assert_eq!(first["channel"], "default");
    assert_eq!(first["tool"], "delete_file");
    assert_eq!(first["source"], "files");
    assert_eq!(first["arguments"], r#"{"path":"/tmp/x"}"#);
    assert_eq!(first["state"], "pending");
    assert!(first["expires_at"].is_string(), "{first}");

    // Filters.
    let (_, by_user) = h.admin_get("/api/admin/approvals?user=bob").await;
    assert_eq!(ids(&by_user), ["b-third"]);
    let (_, by_session) = h
        .admin_get(&format!("/api/admin/approvals?session_id={alice_2}"))
        .await;
    assert_eq!(ids(&by_session), ["a-second"]);
    let (_, both) = h
        .admin_get(&format!(
            "/api/admin/approvals?session_id={alice_2}&user=bob"
        ))
        .await;
    assert_eq!(ids(&both), Vec::<&str>::new());
    // Cursor pages of one give the same approvals in the same order.
    assert_eq!(
        all_approval_pages(&h, "limit=1").await,
        ["a-oldest", "a-second", "b-third"]
    );
    assert_eq!(
        all_approval_pages(&h, "limit=1&user=alice").await,
        ["a-oldest", "a-second"]
    );
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=nope", "cursor"),
        ("user=", "user"),
        ("session_id=%20", "session_id"),
    ] {
        let refused = h.admin_get(&format!("/api/admin/approvals?{query}")).await;
        assert_bad_param(&refused, param);
    }

    // Deciding: approved, rejected with a reason; recorded as the admin's.
    let decide = |id: &str, body: Value| {
        let request = h
            .client
            .post(h.url(&format!("/api/admin/approvals/{id}")))
            .bearer_auth(ADMIN_KEY)
            .json(&body);
        h.json(request)
    };
    let (status, body) = decide("a-oldest", json!({"approve": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "approved", "{body}");
    assert_eq!(body["decided_by"], "admin", "{body}");
    assert_eq!(body["user"], "alice", "{body}");
    assert!(body["decided_at"].is_string(), "{body}");
    let (status, body) = decide(
        "b-third",
        json!({"approve": false, "reason": "not on a Friday"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "rejected", "{body}");
    assert_eq!(body["reason"], "not on a Friday", "{body}");
    // The user sees the admin's decision in the session's own list.
    let (_, list) = h
        .get("bob", &format!("/api/sessions/{bob}/approvals"))
        .await;
    assert_eq!(list["data"][0]["state"], "rejected", "{list}");
    assert_eq!(list["data"][0]["decided_by"], "admin", "{list}");
    // Decided ones leave the pending list.
    let (_, left) = h.admin_get("/api/admin/approvals").await;
    assert_eq!(ids(&left), ["a-second"]);

    // Refusals: decided already, past its time, unknown, a reason too long,
    // the client key.
    let twice = decide("a-oldest", json!({"approve": false})).await;
    assert_error(&twice, 409, "approval_decided");
    assert_eq!(twice.1["error"]["param"], "approval_id", "{}", twice.1);
    assert!(
        twice.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("approved already")),
        "{}",
        twice.1
    );
    let lapsed = decide("a-lapsed", json!({"approve": true})).await;
    assert_error(&lapsed, 409, "approval_decided");
    assert!(
        lapsed.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired already")),
        "{}",
        lapsed.1
    );
    let missing = decide("nope", json!({"approve": true})).await;
    assert_error(&missing, 404, "approval_not_found");
    assert_eq!(missing.1["error"]["param"], "approval_id", "{}", missing.1);
    let long = decide(
        "a-second",
        json!({"approve": false, "reason": "x".repeat(2001)}),
    )
    .await;
    assert_error(&long, 400, "invalid_request");
    assert_eq!(long.1["error"]["param"], "reason", "{}", long.1);
    let client = h
        .json(
            h.client
                .post(h.url("/api/admin/approvals/a-second"))
                .bearer_auth(common::API_KEY)
                .json(&json!({"approve": true})),
        )
        .await;
    assert_eq!(client.0, 401, "{}", client.1);
    let (_, still) = h.admin_get("/api/admin/approvals").await;
    assert_eq!(
        ids(&still),
        ["a-second"],
        "refused decisions change nothing"
    );
}

impl World {
    async fn stop(mut self) {
        if let Some(tasks) = self.tasks.take() {
            tasks.stop().await;
        }
    }
}

on_both_databases!(
    conversations_are_listed_filtered_and_paged,
    one_conversation_shows_its_messages,
    stats_count_what_happened,
    channels_show_settings_activity_and_outbox,
    the_outbox_lists_entries_without_text_and_retries_dead_ones,
    a_runtime_without_channels_lists_its_open_default_channel,
    approvals_are_listed_filtered_paged_and_decided,
);
