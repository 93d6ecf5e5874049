//! The Slack channel (Events API) against the mock Slack of `mock-chatapps`:
//! `url_verification`, a mention answered in its thread and a direct message in
//! the DM, Slack's retries of the same event answered once, bad and stale
//! signatures refused, a `429 Retry-After` waited out, Slack down and back,
//! answers escaped as Slack reads text, a message with a file answered, a
//! refusal for good (`not_in_channel`) given up at once, and
//! two runtime processes on one Postgres database posting each answer exactly once.

mod common;

use std::time::{Duration, Instant};

use agent_runtime::channels::{ChannelTasks, SLACK_API_URL_ENV};
use common::{Db, Harness, RuntimeProcess};
use crds::RespondTo;
use crds::runtime_config::{ChannelConfig, ChannelType, RuntimeConfig, SlackConfig};
use mock_chatapps::slack::{self, EventsSender, SlackMock};
use serde_json::json;
use switchboard_tests::database::{TestDatabase, admin_url};
use switchboard_tests::mock_llm::MockLlm;

const BOT_TOKEN: &str = "xoxb-test-bot-token";
const SIGNING_SECRET: &str = "slack-signing-secret-for-tests";
const TEAM: &str = "T0TEAM00001";
const CHANNEL: &str = "C0CHAN00001";
const WAIT: Duration = Duration::from_secs(20);

fn slack_channel(config: &mut RuntimeConfig) {
    config.channels = vec![ChannelConfig {
        name: "support-slack".into(),
        channel_type: ChannelType::Slack,
        language: Some("en".into()),
        slack: Some(SlackConfig {
            bot_token_env: "SLACK_BOT_TOKEN".into(),
            signing_secret_env: "SLACK_SIGNING_SECRET".into(),
            app_token_env: None,
            team_id: Some(TEAM.into()),
            channel_ids: vec![CHANNEL.into()],
            respond_to: RespondTo::Mentions,
            direct_messages: true,
        }),
        ..ChannelConfig::default()
    }];
}

struct Setup {
    h: Harness,
    tasks: ChannelTasks,
    slack: SlackMock,
    events: EventsSender,
}

async fn start(db: Db) -> Setup {
    let slack = SlackMock::start(BOT_TOKEN, "xapp-unused")
        .await
        .expect("mock Slack");
    let h = Harness::start_with(db, |config, _| slack_channel(config)).await;
    h.state.webhooks.keys.set_lookup(|name| match name {
        "SLACK_BOT_TOKEN" => Some(BOT_TOKEN.to_owned()),
        "SLACK_SIGNING_SECRET" => Some(SIGNING_SECRET.to_owned()),
        _ => None,
    });
    let api = slack.api_url();
    let tasks = ChannelTasks::start(&h.state, move |name| {
        (name == SLACK_API_URL_ENV).then(|| api.clone())
    })
    .await;
    let events = EventsSender::new(
        &h.url("/channels/support-slack/slack/events"),
        SIGNING_SECRET,
    );
    Setup {
        h,
        tasks,
        slack,
        events,
    }
}

fn mention(text: &str, ts: &str, thread: Option<&str>, event_id: &str) -> serde_json::Value {
    slack::app_mention(TEAM, CHANNEL, "U0CAROL0001", text, ts, thread, event_id)
}

async fn posts_settle(slack: &SlackMock, n: usize) {
    assert!(
        slack.wait_until(WAIT, |s| s.posts().len() >= n).await,
        "{n} answers posted; got {:?}",
        slack.posts()
    );
}

async fn a_mention_is_answered_in_its_thread_once_despite_retries(db: Db) {
    let s = start(db).await;
    let verification = s.events.url_verification("challenge-123").await;
    assert_eq!(verification.status, Some(200));
    let body: serde_json::Value = serde_json::from_str(&verification.body).expect("json");
    assert_eq!(body["challenge"], "challenge-123");

    // Slack delivers the event, then retries it three times.
    let event = mention(
        "what are your opening hours?",
        "1700000000.000100",
        None,
        "Ev0001",
    );
    let started = Instant::now();
    let deliveries = s.events.send_with_retries(&event, 3, "http_timeout").await;
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "every delivery acknowledged: {deliveries:?}"
    );
    // Well inside Slack's 3 seconds each (the answer comes later).
    assert!(started.elapsed() < Duration::from_secs(4 * 3));
    posts_settle(&s.slack, 1).await;
    let post = &s.slack.posts()[0];
    assert_eq!(post.channel, CHANNEL);
    assert_eq!(
        post.thread_ts.as_deref(),
        Some("1700000000.000100"),
        "in the thread"
    );
    assert!(
        post.text.contains("opening hours"),
        "the mock echoes: {post:?}"
    );

    // A reply in the thread continues the same session and is answered there.
    let reply = mention(
        "and on Sundays?",
        "1700000050.000200",
        Some("1700000000.000100"),
        "Ev0002",
    );
    assert_eq!(s.events.send(&reply).await.status, Some(200));
    posts_settle(&s.slack, 2).await;
    assert_eq!(
        s.slack.posts()[1].thread_ts.as_deref(),
        Some("1700000000.000100")
    );
    let (_, sessions) =
        s.h.get("U0CAROL0001", "/channels/support-slack/api/sessions")
            .await;
    assert_eq!(
        sessions["data"].as_array().map(Vec::len),
        Some(1),
        "{sessions}"
    );
    assert_eq!(sessions["data"][0]["channel"], "support-slack");
    assert_eq!(sessions["data"][0]["message_count"], 4, "{sessions}");

    // A direct message is answered in the DM, outside any thread.
    let dm = slack::direct_message(
        TEAM,
        "D0DIRECT001",
        "U0CAROL0001",
        "hello there",
        "1700000060.000300",
        "Ev0003",
    );
    assert_eq!(s.events.send(&dm).await.status, Some(200));
    posts_settle(&s.slack, 3).await;
    let post = &s.slack.posts()[2];
    assert_eq!(
        (post.channel.as_str(), post.thread_ts.as_deref()),
        ("D0DIRECT001", None)
    );

    // Other workspaces and channels are acknowledged but not answered.
    let mut foreign = mention("hi", "1700000070.0", None, "Ev0004");
    foreign["team_id"] = json!("T0OTHER0001");
    assert_eq!(s.events.send(&foreign).await.status, Some(200));
    s.tasks.stop().await;
    assert_eq!(
        s.slack.posts().len(),
        3,
        "each message answered exactly once"
    );
}

async fn bad_and_stale_signatures_are_refused(db: Db) {
    let s = start(db).await;
    let event = mention("hello", "1700000000.000100", None, "Ev0100");
    let now = chrono::Utc::now().timestamp();
    let forged = s
        .events
        .post_raw(&event, now, Some(format!("v0={}", "ab".repeat(32))), None)
        .await;
    assert_eq!(forged.status, Some(401), "{}", forged.body);
    assert!(forged.body.contains("invalid_signature"), "{}", forged.body);
    let other_secret = EventsSender::new(
        &s.h.url("/channels/support-slack/slack/events"),
        "not-the-secret",
    );
    assert_eq!(other_secret.send(&event).await.status, Some(401));
    let stale = s.events.post_raw(&event, now - 600, None, None).await;
    assert_eq!(stale.status, Some(401));
    assert!(stale.body.contains("stale_timestamp"), "{}", stale.body);
    let unsigned =
        s.h.client
            .post(s.h.url("/channels/support-slack/slack/events"))
            .body(event.to_string())
            .send()
            .await
            .expect("sent");
    assert_eq!(unsigned.status(), 401);
    // Not a Slack channel.
    let elsewhere = EventsSender::new(&s.h.url("/channels/nope/slack/events"), SIGNING_SECRET);
    assert_eq!(elsewhere.send(&event).await.status, Some(404));
    // A signed copy goes through and is answered once.
    assert_eq!(s.events.send(&event).await.status, Some(200));
    posts_settle(&s.slack, 1).await;
    s.tasks.stop().await;
    assert_eq!(
        s.slack.posts().len(),
        1,
        "only the signed event was answered"
    );
}

async fn rate_limits_and_an_outage_are_waited_out(db: Db) {
    let s = start(db).await;
    s.slack.rate_limit_posts(1, 2);
    let started = Instant::now();
    let event = mention("are you there?", "1700000000.000100", None, "Ev0200");
    assert_eq!(s.events.send(&event).await.status, Some(200));
    posts_settle(&s.slack, 1).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 2 was honoured ({:?})",
        started.elapsed()
    );
    assert_eq!(s.slack.post_attempts(), 2, "one 429, then the post");

    // Slack down for a while: the answer is posted once it is back.
    s.slack.outage(Duration::from_secs(3));
    let event = mention("still there?", "1700000100.000100", None, "Ev0201");
    assert_eq!(s.events.send(&event).await.status, Some(200));
    posts_settle(&s.slack, 2).await;
    assert!(
        s.slack.post_attempts() >= 4,
        "refused while down, then posted"
    );
    s.tasks.stop().await;
    assert_eq!(s.slack.posts().len(), 2);
}

/// A thread is one session for everyone in it: a second user's reply lands in
/// the session of the user who started the thread, keeping its author; the
/// sessions API lists it for its owner only (sessions are per user), and a
/// thread the second user starts is theirs.
async fn a_thread_with_several_users_is_one_session(db: Db) {
    let s = start(db).await;
    let thread = "1700000300.000100";
    let first = slack::app_mention(
        TEAM,
        CHANNEL,
        "U0CAROL0001",
        "who is on call?",
        thread,
        None,
        "EvT1",
    );
    assert_eq!(s.events.send(&first).await.status, Some(200));
    posts_settle(&s.slack, 1).await;
    let reply = slack::app_mention(
        TEAM,
        CHANNEL,
        "U0DAVE00001",
        "and tomorrow?",
        "1700000310.000100",
        Some(thread),
        "EvT2",
    );
    assert_eq!(s.events.send(&reply).await.status, Some(200));
    posts_settle(&s.slack, 2).await;
    assert_eq!(s.slack.posts()[1].thread_ts.as_deref(), Some(thread));

    let (_, sessions) =
        s.h.get("U0CAROL0001", "/channels/support-slack/api/sessions")
            .await;
    let list = sessions["data"].as_array().expect("sessions");
    assert_eq!(list.len(), 1, "{sessions}");
    assert_eq!(
        list[0]["message_count"], 4,
        "both users' messages: {sessions}"
    );
    let id = list[0]["id"].as_str().expect("id").to_owned();
    let (_, messages) =
        s.h.get(
            "U0CAROL0001",
            &format!("/channels/support-slack/api/sessions/{id}/messages"),
        )
        .await;
    let authors: Vec<_> = messages["data"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["author"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(authors, ["U0CAROL0001", "U0DAVE00001"], "{messages}");
    let (_, dave) =
        s.h.get("U0DAVE00001", "/channels/support-slack/api/sessions")
            .await;
    assert_eq!(dave["data"].as_array().map(Vec::len), Some(0), "{dave}");

    // A thread Dave starts is his own session.
    let own = slack::app_mention(
        TEAM,
        CHANNEL,
        "U0DAVE00001",
        "hi",
        "1700000400.000100",
        None,
        "EvT3",
    );
    assert_eq!(s.events.send(&own).await.status, Some(200));
    posts_settle(&s.slack, 3).await;
    let (_, dave) =
        s.h.get("U0DAVE00001", "/channels/support-slack/api/sessions")
            .await;
    assert_eq!(dave["data"].as_array().map(Vec::len), Some(1), "{dave}");
    s.tasks.stop().await;
}

/// What the model writes is shown as written: Slack's control characters are
/// escaped, so an answer holding `<!channel>` (the mock echoes the question)
/// notifies nobody; a message sent with a file (subtype `file_share`) is
/// answered like any other.
async fn answers_are_escaped_and_file_messages_answered(db: Db) {
    let s = start(db).await;
    let event = mention(
        "<!channel> is 1 < 2 & 3 > 2?",
        "1700000000.000100",
        None,
        "Ev0300",
    );
    assert_eq!(s.events.send(&event).await.status, Some(200));
    posts_settle(&s.slack, 1).await;
    let text = &s.slack.posts()[0].text;
    assert!(
        text.contains("&lt;!channel&gt; is 1 &lt; 2 &amp; 3 &gt; 2?"),
        "escaped: {text}"
    );
    assert!(!text.contains("<!channel>"), "{text}");

    let mut with_file = slack::direct_message(
        TEAM,
        "D0DM0000001",
        "U0CAROL0001",
        "what does this file say?",
        "1700000100.000100",
        "Ev0301",
    );
    with_file["event"]["subtype"] = json!("file_share");
    with_file["event"]["files"] = json!([{"id": "F0FILE00001", "name": "notes.txt"}]);
    assert_eq!(s.events.send(&with_file).await.status, Some(200));
    posts_settle(&s.slack, 2).await;
    assert_eq!(s.slack.posts()[1].channel, "D0DM0000001");
    s.tasks.stop().await;
}

/// The words of every message posted so far.
fn words_posted(slack: &SlackMock) -> usize {
    slack
        .posts()
        .iter()
        .map(|p| p.text.split_whitespace().count())
        .sum()
}

/// An answer in pieces whose second piece fails (Slack 500): the retry posts
/// from the second piece on, not the first again (`chat.postMessage` has no
/// idempotency key: a repeated call is a repeated message in the thread).
async fn a_long_answer_failing_part_way_is_resumed_not_repeated(db: Db) {
    let s = start(db).await;
    s.slack.fail_post_after(1);
    let event = mention(
        "tell me everything [[mock: words=1500]]",
        "1700000000.000200",
        None,
        "Ev0501",
    );
    assert_eq!(s.events.send(&event).await.status, Some(200));
    assert!(
        s.slack.wait_until(WAIT, |m| words_posted(m) >= 1500).await,
        "{:?}",
        s.slack.posts().len()
    );
    // Time for a wrong extra post (the outbox retries within a second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.tasks.stop().await;
    let posts = s.slack.posts();
    // The mock's answer is exactly 1,500 words: a piece posted twice adds hundreds.
    let words = words_posted(&s.slack);
    assert_eq!(words, 1500, "every word once, in {} posts", posts.len());
    assert!(posts.len() >= 2, "{} pieces", posts.len());
    assert_eq!(
        s.slack.post_attempts() as usize,
        posts.len() + 1,
        "one failed post, none repeated"
    );
}

/// An answer longer than Slack takes in one message goes in pieces of at
/// most 4,000 characters, in order, in the thread.
async fn a_long_answer_is_posted_in_pieces(db: Db) {
    let s = start(db).await;
    let event = mention(
        "tell me everything [[mock: words=1500]]",
        "1700000000.000100",
        None,
        "Ev0500",
    );
    assert_eq!(s.events.send(&event).await.status, Some(200));
    // Every word posted, in pieces.
    assert!(
        s.slack.wait_until(WAIT, |m| words_posted(m) >= 1500).await,
        "{:?}",
        s.slack.posts().len()
    );
    s.tasks.stop().await;
    let posts = s.slack.posts();
    assert!(posts.len() >= 2, "{} pieces", posts.len());
    for post in &posts {
        assert!(post.text.chars().count() <= 4000, "{}", post.text.len());
        assert_eq!(post.thread_ts.as_deref(), Some("1700000000.000100"));
    }
    let words = words_posted(&s.slack);
    assert!(words >= 1500, "every word posted: {words}");
}

/// A channel Slack refuses to post in for good (`not_in_channel`) is not
/// retried for a day: the answer is given up after the first refusal, listed
/// as failed with Slack's code for an admin to retry once the bot is invited.
async fn a_refusal_for_good_is_given_up_at_once(db: Db) {
    let s = start(db).await;
    s.slack.refuse_channel(CHANNEL, "not_in_channel");
    let event = mention("hello?", "1700000000.000100", None, "Ev0400");
    assert_eq!(s.events.send(&event).await.status, Some(200));
    let deadline = Instant::now() + WAIT;
    let failed = loop {
        let (_, failed) = s.h.admin_get("/api/admin/outbox?state=failed").await;
        if failed["data"].as_array().is_some_and(|d| !d.is_empty()) {
            break failed;
        }
        assert!(Instant::now() < deadline, "given up: {failed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        failed["data"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not_in_channel")),
        "{failed}"
    );
    // The outbox's backoff starts at 0.5 s: a retry would have come by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.slack.post_attempts(), 1, "refused once, not retried");
    assert!(s.slack.posts().is_empty());
    s.tasks.stop().await;
}

on_both_databases!(
    a_long_answer_is_posted_in_pieces,
    a_long_answer_failing_part_way_is_resumed_not_repeated,
    answers_are_escaped_and_file_messages_answered,
    a_refusal_for_good_is_given_up_at_once,
    a_thread_with_several_users_is_one_session,
    a_mention_is_answered_in_its_thread_once_despite_retries,
    bad_and_stale_signatures_are_refused,
    rate_limits_and_an_outage_are_waited_out,
);

/// Needs Postgres (`make unit` skips `postgres::` tests).
mod replicas_on_postgres {
    use super::*;

    /// Two runtime processes on one Postgres database, Slack delivering each event
    /// to both (its retries land on whichever pod the load balancer picks): every
    /// message is answered exactly once; the answers keep coming after one of the
    /// processes is killed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_post_each_answer_exactly_once() {
        let slack = SlackMock::start(BOT_TOKEN, "xapp-unused")
            .await
            .expect("mock Slack");
        let mock = MockLlm::start().await.expect("mock LLM");
        let db = TestDatabase::create_on(&admin_url()).await;
        let api = slack.api_url();
        let (a, b) = RuntimeProcess::slack_replicas(
            &mock,
            db.url(),
            &format!("{{botTokenEnv: SLACK_BOT_TOKEN, signingSecretEnv: SLACK_SIGNING_SECRET, teamId: {TEAM}}}"),
            &[
                ("SLACK_BOT_TOKEN", BOT_TOKEN),
                ("SLACK_SIGNING_SECRET", SIGNING_SECRET),
                (SLACK_API_URL_ENV, api.as_str()),
            ],
        )
        .await;
        let path = "/channels/support-slack/slack/events";
        let to_a = EventsSender::new(&format!("{}{path}", a.base), SIGNING_SECRET);
        let to_b = EventsSender::new(&format!("{}{path}", b.base), SIGNING_SECRET);
        let events: Vec<_> = (0..6)
            .map(|i| {
                mention(
                    &format!("question {i}"),
                    &format!("17000001{i:02}.000100"),
                    None,
                    &format!("EvR{i}"),
                )
            })
            .collect();
        for event in &events {
            let (first, second) = tokio::join!(to_a.send(event), to_b.send(event));
            assert_eq!((first.status, second.status), (Some(200), Some(200)));
        }
        posts_settle(&slack, events.len()).await;

        // One replica dies; Slack's retries and new events reach the survivor.
        let mut a = a;
        a.child.kill().await.expect("replica a killed");
        let more: Vec<_> = (6..9)
            .map(|i| {
                mention(
                    &format!("question {i}"),
                    &format!("17000001{i:02}.000100"),
                    None,
                    &format!("EvR{i}"),
                )
            })
            .collect();
        for event in &more {
            let (first, second) = tokio::join!(to_a.send(event), to_b.send(event));
            assert_eq!(second.status, Some(200), "the survivor acknowledges");
            assert_ne!(first.status, Some(200), "the dead replica does not");
        }
        posts_settle(&slack, 9).await;
        // Stop the survivor too (nothing in flight can land afterwards), then count:
        // one answer per thread.
        let log = b.log();
        let mut b = b;
        b.child.kill().await.expect("replica b killed");
        let posts = slack.posts();
        let mut threads: Vec<_> = posts.iter().filter_map(|p| p.thread_ts.clone()).collect();
        threads.sort();
        let before = threads.len();
        threads.dedup();
        assert_eq!(before, 9, "9 answers for 9 messages: {posts:?}\n{log}");
        assert_eq!(threads.len(), 9, "no thread answered twice: {posts:?}");
        for (i, post) in posts.iter().enumerate() {
            assert!(post.text.contains("question"), "{i}: {post:?}");
        }
        assert!(
            !log.contains(BOT_TOKEN) && !log.contains(SIGNING_SECRET),
            "no secret in the log"
        );
    }
}

/// Needs Postgres (`make unit` skips `postgres::` tests).
mod timeout_on_postgres {
    use super::*;

    /// `sessions.idleTimeoutMinutes`: a thread idle for longer than the timeout
    /// continues in a new session (the old one keeps its messages); the answer still
    /// goes to the same thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_after_the_idle_timeout_starts_a_new_session() {
        let slack = SlackMock::start(BOT_TOKEN, "xapp-unused")
            .await
            .expect("mock Slack");
        let db = TestDatabase::create_on(&admin_url()).await;
        let url = db.url().to_owned();
        let h = Harness::start_on(Some(db), |config, _| {
            slack_channel(config);
            config.sessions.idle_timeout_minutes = Some(30);
        })
        .await;
        h.state.webhooks.keys.set_lookup(|name| match name {
            "SLACK_BOT_TOKEN" => Some(BOT_TOKEN.to_owned()),
            "SLACK_SIGNING_SECRET" => Some(SIGNING_SECRET.to_owned()),
            _ => None,
        });
        let api = slack.api_url();
        let tasks = ChannelTasks::start(&h.state, move |name| {
            (name == SLACK_API_URL_ENV).then(|| api.clone())
        })
        .await;
        let events = EventsSender::new(
            &h.url("/channels/support-slack/slack/events"),
            SIGNING_SECRET,
        );
        let thread = "1700000000.000100";
        let first = mention("first question", thread, None, "EvI1");
        assert_eq!(events.send(&first).await.status, Some(200));
        posts_settle(&slack, 1).await;
        // Within the timeout the thread stays one session.
        let second = mention("second question", "1700000010.0", Some(thread), "EvI2");
        assert_eq!(events.send(&second).await.status, Some(200));
        posts_settle(&slack, 2).await;
        let (_, sessions) = h
            .get("U0CAROL0001", "/channels/support-slack/api/sessions")
            .await;
        assert_eq!(
            sessions["data"].as_array().map(Vec::len),
            Some(1),
            "{sessions}"
        );
        let old_id = sessions["data"][0]["id"].as_str().expect("id").to_owned();

        // 31 minutes of silence (the clock of the stored session moved back).
        let pool = sqlx::PgPool::connect(&url).await.expect("database");
        sqlx::query(
            "UPDATE sessions SET last_message_at = last_message_at - interval '31 minutes', \
             created_at = created_at - interval '31 minutes'",
        )
        .execute(&pool)
        .await
        .expect("moved back");
        let third = mention("back after a break", "1700002000.0", Some(thread), "EvI3");
        assert_eq!(events.send(&third).await.status, Some(200));
        posts_settle(&slack, 3).await;
        assert_eq!(slack.posts()[2].thread_ts.as_deref(), Some(thread));
        let (_, sessions) = h
            .get("U0CAROL0001", "/channels/support-slack/api/sessions")
            .await;
        let list = sessions["data"].as_array().expect("sessions");
        assert_eq!(list.len(), 2, "a new session after the timeout: {sessions}");
        let new = list
            .iter()
            .find(|s| s["id"] != old_id.as_str())
            .expect("new");
        let old = list
            .iter()
            .find(|s| s["id"] == old_id.as_str())
            .expect("old");
        assert_eq!(new["message_count"], 2, "{sessions}");
        assert_eq!(
            old["message_count"], 4,
            "the old session keeps its messages"
        );
        tasks.stop().await;
        pool.close().await;
    }
}
