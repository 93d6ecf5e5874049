//! Postgres crashed (immediate shutdown) and restarted while clients keep
//! chatting, whole and streamed. The runtime retries its reads and writes
//! through the outage, so a request either succeeds or ends in a 503 JSON
//! error with `Retry-After`; none hangs. Afterwards every message the runtime
//! accepted is in the database exactly once: the count of accepted chats
//! equals the count of stored user messages, and each answered chat has its
//! answer stored.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{API_KEY, Harness, sse_data};
use serde_json::{Value, json};
use sqlx::Connection;
use switchboard_tests::database::{TestDatabase, ThrowawayPostgres};

/// What happened to one chat.
#[derive(Debug)]
enum Outcome {
    /// 200 and an answer (whole, or a stream ending in `[DONE]`).
    Answered(String),
    /// 200 but the stream ended with an error event: the user message was
    /// accepted, the answer may be partial.
    AcceptedStreamFailed(String),
    /// Refused before anything was accepted.
    Refused(u16, Value, Option<String>),
}

async fn chat(client: &reqwest::Client, base: &str, content: &str, stream: bool) -> Outcome {
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(API_KEY)
        .header(
            "x-switchboard-user",
            content.split('-').next().unwrap_or("u"),
        )
        .json(&json!({"stream": stream, "messages": [{"role": "user", "content": content}]}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{content}: request failed or hung: {e}"));
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("{content}: body cut: {e}"));
    if status != 200 {
        let body: Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("{content}: {status} without a JSON body: {body}"));
        return Outcome::Refused(status, body, retry_after);
    }
    if !stream {
        return Outcome::Answered(content.to_owned());
    }
    match sse_data(&body).last().map(String::as_str) {
        Some("[DONE]") => Outcome::Answered(content.to_owned()),
        _ => Outcome::AcceptedStreamFailed(content.to_owned()),
    }
}

/// A Postgres server of the test's own (to crash), a database on it (its
/// URL), and a runtime storing there.
async fn runtime_on_its_own_server() -> (Arc<ThrowawayPostgres>, String, Harness) {
    let server = Arc::new(
        tokio::task::spawn_blocking(ThrowawayPostgres::start)
            .await
            .expect("server starts"),
    );
    let db = TestDatabase::create_on(server.admin_url()).await;
    let db_url = db.url().to_owned();
    let h = Harness::start_on(Some(db), |_, _| {}).await;
    (server, db_url, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_accepted_message_is_lost_when_postgres_restarts() {
    let (server, db_url, h) = runtime_on_its_own_server().await;
    let base = h.url("");
    let stop = Arc::new(AtomicBool::new(false));
    // A long client timeout: a hang fails the test, a slow answer does not.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let (client, base, stop) = (client.clone(), base.clone(), stop.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let content = format!("c{c}-{i}");
                    let outcome = chat(&client, &base, &content, i % 2 == 1).await;
                    outcomes.push((Instant::now(), outcome));
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                outcomes
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarting = server.clone();
    let crashed_at = Instant::now();
    tokio::task::spawn_blocking(move || restarting.crash_and_restart(Duration::from_secs(2)))
        .await
        .expect("restart");
    let restarted_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.expect("client task"));
    }

    let mut accepted = Vec::new();
    let mut answered = Vec::new();
    let mut refused = 0;
    let before = outcomes.iter().filter(|(at, _)| *at < crashed_at).count();
    let after = outcomes.iter().filter(|(at, _)| *at > restarted_at).count();
    for (_, outcome) in &outcomes {
        match outcome {
            Outcome::Answered(content) => {
                accepted.push(content.clone());
                answered.push(content.clone());
            }
            Outcome::AcceptedStreamFailed(content) => accepted.push(content.clone()),
            Outcome::Refused(status, body, retry_after) => {
                refused += 1;
                assert_eq!(*status, 503, "{body}");
                assert_eq!(body["error"]["code"], "database_error", "{body}");
                assert!(retry_after.is_some(), "503 without Retry-After: {body}");
            }
        }
    }
    let retries = h
        .metric_sum("switchboard_runtime_database_retries_total{")
        .await;
    eprintln!(
        "{} chats ({before} done before the crash, {after} after the restart): {} accepted \
         ({} answered), {refused} refused; {retries} database retries",
        outcomes.len(),
        accepted.len(),
        answered.len()
    );
    assert!(
        before > 0 && after > 0,
        "chats before the crash and after the restart"
    );

    let mut conn = sqlx::PgConnection::connect(&db_url)
        .await
        .expect("database after restart");
    // The server did go down: its postmaster started after the crash.
    let up_for: f64 =
        sqlx::query_scalar("SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())::float8")
            .fetch_one(&mut conn)
            .await
            .expect("start time");
    assert!(
        up_for < crashed_at.elapsed().as_secs_f64(),
        "server up for {up_for} s: it was not restarted"
    );
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT role, content FROM messages")
        .fetch_all(&mut conn)
        .await
        .expect("messages");
    let mut stored: HashMap<(String, String), usize> = HashMap::new();
    for row in rows {
        *stored.entry(row).or_default() += 1;
    }
    let count = |role: &str, content: &str| {
        stored
            .get(&(role.to_owned(), content.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let lost: Vec<_> = accepted
        .iter()
        .filter(|c| count("user", c) != 1)
        .map(|c| (c.clone(), count("user", c)))
        .collect();
    assert!(
        lost.is_empty(),
        "accepted messages not stored exactly once: {lost:?}"
    );
    let unanswered: Vec<_> = answered
        .iter()
        .filter(|c| count("assistant", &format!("Echo: {c}")) != 1)
        .collect();
    assert!(
        unanswered.is_empty(),
        "answers not stored exactly once: {unanswered:?}"
    );
    let stored_users = stored.keys().filter(|(role, _)| role == "user").count();
    assert_eq!(
        stored_users,
        accepted.len(),
        "stored user messages vs. accepted chats"
    );
    drop(conn);
    drop(h);
}

/// Postgres restarted while the runtime was idle: its pooled connections are
/// dead, and a connection idle for a while is checked before use, so the next
/// chats are answered at once, without a retry and without a 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_after_a_restart_while_idle_need_no_retry() {
    let (server, _, h) = runtime_on_its_own_server().await;
    let base = h.url("");
    let client = reqwest::Client::new();
    // Several connections in the pool: chats at once.
    let contents: Vec<String> = (0..4).map(|i| format!("before-{i}")).collect();
    let before: Vec<_> =
        futures::future::join_all(contents.iter().map(|c| chat(&client, &base, c, false))).await;
    for outcome in &before {
        assert!(matches!(outcome, Outcome::Answered(_)), "{outcome:?}");
    }
    let restarting = server.clone();
    tokio::task::spawn_blocking(move || restarting.crash_and_restart(Duration::from_millis(200)))
        .await
        .expect("restart");
    // Idle past the time after which a pooled connection is checked.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let retries = h
        .metric_sum("switchboard_runtime_database_retries_total")
        .await;
    for i in 0..4 {
        let outcome = chat(&client, &base, &format!("after-{i}"), false).await;
        assert!(matches!(outcome, Outcome::Answered(_)), "{outcome:?}");
    }
    assert_eq!(
        h.metric_sum("switchboard_runtime_database_retries_total")
            .await,
        retries,
        "a chat after the restart retried a database call: a dead pooled connection was used"
    );
}
