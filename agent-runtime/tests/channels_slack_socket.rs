//! Slack Socket Mode against the mock Slack of `mock-chatapps`: a mention
//! acknowledged by its envelope id once stored and answered once in its thread;
//! a connection dropped mid-stream and a `disconnect` (`refresh_requested`)
//! followed by a new connection with nothing lost or answered twice; an
//! envelope whose acknowledgement was lost delivered again and answered once;
//! the Web API down for a minute and the answers posted once afterwards; a bad
//! app token (and a bad bot token in Events API mode) reported as
//! `Unauthorized` in the connection registry; two runtime processes, each with
//! its own connection, answering each event once.

mod common;

use std::time::Duration;

use agent_runtime::channels::{ChannelTasks, SLACK_API_URL_ENV};
use common::{Db, Harness, RuntimeProcess};
use crds::RespondTo;
use crds::channel::ConnectionState;
use crds::runtime_config::{ChannelConfig, ChannelType, RuntimeConfig, SlackConfig};
use mock_chatapps::slack::{self, SlackMock};
use switchboard_tests::database::{TestDatabase, admin_url};
use switchboard_tests::mock_llm::MockLlm;

const BOT_TOKEN: &str = "xoxb-test-bot-token";
const APP_TOKEN: &str = "xapp-1-A0APP00001-test-app-token";
const TEAM: &str = "T0TEAM00001";
const CHANNEL: &str = "C0CHAN00001";
const NAME: &str = "support-slack";
const WAIT: Duration = Duration::from_secs(20);

fn socket_channel(config: &mut RuntimeConfig) {
    config.channels = vec![ChannelConfig {
        name: NAME.into(),
        channel_type: ChannelType::Slack,
        language: Some("en".into()),
        slack: Some(SlackConfig {
            bot_token_env: "SLACK_BOT_TOKEN".into(),
            app_token_env: Some("SLACK_APP_TOKEN".into()),
            team_id: Some(TEAM.into()),
            channel_ids: vec![CHANNEL.into()],
            respond_to: RespondTo::Mentions,
            ..SlackConfig::default()
        }),
        ..ChannelConfig::default()
    }];
}

struct Setup {
    h: Harness,
    tasks: ChannelTasks,
    slack: SlackMock,
}

/// The runtime in-process with a Socket Mode channel whose app token is
/// `app_token` (the mock accepts [`APP_TOKEN`]).
async fn start(db: Db, app_token: &'static str) -> Setup {
    let slack = SlackMock::start(BOT_TOKEN, APP_TOKEN)
        .await
        .expect("mock Slack");
    let h = Harness::start_with(db, |config, _| socket_channel(config)).await;
    h.state.webhooks.keys.set_lookup(move |name| match name {
        "SLACK_BOT_TOKEN" => Some(BOT_TOKEN.to_owned()),
        "SLACK_APP_TOKEN" => Some(app_token.to_owned()),
        _ => None,
    });
    let api = slack.api_url();
    let tasks = ChannelTasks::start(&h.state, move |name| {
        (name == SLACK_API_URL_ENV).then(|| api.clone())
    })
    .await;
    Setup { h, tasks, slack }
}

fn mention(text: &str, ts: &str, thread: Option<&str>, event_id: &str) -> serde_json::Value {
    slack::app_mention(TEAM, CHANNEL, "U0CAROL0001", text, ts, thread, event_id)
}

async fn connected(slack: &SlackMock, connections: u32) {
    assert!(
        slack
            .wait_until(WAIT, |s| s.socket_connections() >= connections
                && s.open_sockets() >= 1)
            .await,
        "connection {connections} opened (got {})",
        slack.socket_connections()
    );
}

/// Polls the connection registry until `channel` is in `expected`.
async fn state_becomes(
    states: &agent_runtime::channels::connection::ConnectionStates,
    expected: ConnectionState,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while states.get(NAME).map(|c| c.state) != Some(expected) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{expected:?} expected: {:?}",
            states.get(NAME)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn acked(slack: &SlackMock, envelope: &str) {
    assert!(
        slack
            .wait_until(WAIT, |s| s.acks().iter().any(|a| a == envelope))
            .await,
        "envelope {envelope} acknowledged; acks {:?}",
        slack.acks()
    );
}

async fn posts_settle(slack: &SlackMock, n: usize, wait: Duration) {
    assert!(
        slack.wait_until(wait, |s| s.posts().len() >= n).await,
        "{n} answers posted; got {:?}",
        slack.posts()
    );
}

/// Every post in a distinct thread, and as many as `n`.
fn once_per_thread(slack: &SlackMock, n: usize) {
    let posts = slack.posts();
    let mut threads: Vec<_> = posts.iter().filter_map(|p| p.thread_ts.clone()).collect();
    threads.sort();
    threads.dedup();
    assert_eq!(posts.len(), n, "{n} answers: {posts:?}");
    assert_eq!(threads.len(), n, "no thread answered twice: {posts:?}");
}

async fn a_mention_is_acknowledged_once_stored_and_answered_in_its_thread(db: Db) {
    let s = start(db, APP_TOKEN).await;
    connected(&s.slack, 1).await;
    state_becomes(&s.h.state.channels.connections, ConnectionState::Connected).await;
    let envelope = s
        .slack
        .socket_event(
            mention(
                "what are your opening hours?",
                "1700000000.000100",
                None,
                "EvS1",
            ),
            0,
        )
        .expect("sent");
    acked(&s.slack, &envelope).await;
    // The acknowledgement comes after the message is stored: it is there now.
    let (_, sessions) =
        s.h.get("U0CAROL0001", "/channels/support-slack/api/sessions")
            .await;
    assert_eq!(
        sessions["data"].as_array().map(Vec::len),
        Some(1),
        "{sessions}"
    );
    posts_settle(&s.slack, 1, WAIT).await;
    let post = &s.slack.posts()[0];
    assert_eq!(post.channel, CHANNEL);
    assert_eq!(post.thread_ts.as_deref(), Some("1700000000.000100"));
    assert!(post.text.contains("opening hours"), "{post:?}");
    // Events of other channels are acknowledged and not answered.
    let elsewhere = slack::app_mention(
        TEAM,
        "C0ELSEWHERE",
        "U0CAROL0001",
        "hi",
        "1700000001.0",
        None,
        "EvS2",
    );
    let other = s.slack.socket_event(elsewhere, 0).expect("sent");
    acked(&s.slack, &other).await;
    s.tasks.stop().await;
    once_per_thread(&s.slack, 1);
}

async fn drops_and_refresh_requests_reconnect_without_losing_or_doubling(db: Db) {
    let s = start(db, APP_TOKEN).await;
    connected(&s.slack, 1).await;
    let first = s
        .slack
        .socket_event(mention("one", "1700000010.000100", None, "EvD1"), 0)
        .expect("sent");
    acked(&s.slack, &first).await;

    // Mid-stream: an event goes out and the connection drops right after,
    // acknowledged or not; Slack delivers what was not acknowledged again.
    s.slack
        .socket_event(mention("two", "1700000020.000100", None, "EvD2"), 0)
        .expect("sent");
    s.slack.drop_sockets();
    connected(&s.slack, 2).await;
    s.slack.redeliver_unacked().expect("redelivered");

    // Slack rotates the connection: disconnect (refresh_requested), then a new one.
    let third = s
        .slack
        .socket_event(mention("three", "1700000030.000100", None, "EvD3"), 0)
        .expect("sent");
    acked(&s.slack, &third).await;
    s.slack.disconnect_sockets("refresh_requested");
    connected(&s.slack, 3).await;
    let fourth = s
        .slack
        .socket_event(mention("four", "1700000040.000100", None, "EvD4"), 0)
        .expect("sent");
    acked(&s.slack, &fourth).await;
    posts_settle(&s.slack, 4, WAIT).await;
    assert!(s.slack.unacked().is_empty(), "{:?}", s.slack.unacked());
    s.tasks.stop().await;
    once_per_thread(&s.slack, 4);
}

async fn an_envelope_delivered_again_is_answered_once(db: Db) {
    let s = start(db, APP_TOKEN).await;
    connected(&s.slack, 1).await;
    // The acknowledgement is lost: Slack delivers the envelope again, twice.
    s.slack.lose_acks(2);
    s.slack
        .socket_event(mention("hello?", "1700000050.000100", None, "EvR1"), 0)
        .expect("sent");
    posts_settle(&s.slack, 1, WAIT).await;
    assert_eq!(s.slack.redeliver_unacked().expect("again"), 1);
    assert_eq!(s.slack.redeliver_unacked().expect("and again"), 1);
    assert!(
        s.slack.wait_until(WAIT, |m| m.unacked().is_empty()).await,
        "the third delivery is acknowledged"
    );
    s.tasks.stop().await;
    once_per_thread(&s.slack, 1);
}

on_both_databases!(
    a_mention_is_acknowledged_once_stored_and_answered_in_its_thread,
    drops_and_refresh_requests_reconnect_without_losing_or_doubling,
    an_envelope_delivered_again_is_answered_once,
);

/// A bad app token: `apps.connections.open` answers `invalid_auth`, the channel
/// is `Unauthorized` with Slack's words and without the token. In Events API
/// mode `auth.test` decides: a good bot token is `Connected`, a bad one
/// `Unauthorized`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_reported_unauthorized() {
    let s = start(Db::Sqlite, "xapp-1-not-the-right-token").await;
    let states = s.h.state.channels.connections.clone();
    state_becomes(&states, ConnectionState::Unauthorized).await;
    let got = states.get(NAME).expect("state");
    assert_eq!(got.message, "apps.connections.open: invalid_auth");
    assert!(!got.message.contains("xapp"), "no token in the state");
    assert_eq!(s.slack.socket_connections(), 0);
    s.tasks.stop().await;

    // Events API mode: auth.test with the bot token.
    for (token, expected) in [
        (BOT_TOKEN, ConnectionState::Connected),
        ("xoxb-revoked", ConnectionState::Unauthorized),
    ] {
        let slack = SlackMock::start(BOT_TOKEN, APP_TOKEN).await.expect("mock");
        let h = Harness::start_with(Db::Sqlite, |config, _| {
            config.channels = vec![ChannelConfig {
                name: NAME.into(),
                channel_type: ChannelType::Slack,
                slack: Some(SlackConfig {
                    bot_token_env: "SLACK_BOT_TOKEN".into(),
                    signing_secret_env: "SLACK_SIGNING_SECRET".into(),
                    ..SlackConfig::default()
                }),
                ..ChannelConfig::default()
            }];
        })
        .await;
        h.state.webhooks.keys.set_lookup(move |name| match name {
            "SLACK_BOT_TOKEN" => Some(token.to_owned()),
            "SLACK_SIGNING_SECRET" => Some("secret".to_owned()),
            _ => None,
        });
        let api = slack.api_url();
        let tasks = ChannelTasks::start(&h.state, move |name| {
            (name == SLACK_API_URL_ENV).then(|| api.clone())
        })
        .await;
        let states = h.state.channels.connections.clone();
        state_becomes(&states, expected).await;
        if expected == ConnectionState::Unauthorized {
            assert_eq!(
                states.get(NAME).map(|c| c.message),
                Some("auth.test: invalid_auth".to_owned())
            );
        }
        tasks.stop().await;
    }
}

/// A minute long; on Postgres, so that `make unit` (which skips `postgres::`
/// tests) stays short.
mod minute_outage_on_postgres {
    use super::*;

    /// Slack's Web API down for a minute while the Socket Mode connection keeps
    /// delivering: the events are stored and acknowledged, the answers are posted
    /// once Slack is back, each exactly once. Then Slack down altogether (the
    /// connection dropped, `apps.connections.open` refused): the runtime
    /// reconnects once it is back and the next event is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slack_down_for_a_minute_then_every_answer_once() {
        let s = start(Db::Postgres, APP_TOKEN).await;
        connected(&s.slack, 1).await;
        s.slack.web_api_outage(Duration::from_secs(60));
        let mut envelopes = Vec::new();
        for i in 0..3 {
            envelopes.push(
                s.slack
                    .socket_event(
                        mention(
                            &format!("during the outage {i}"),
                            &format!("17000001{i:02}.000100"),
                            None,
                            &format!("EvO{i}"),
                        ),
                        0,
                    )
                    .expect("sent"),
            );
        }
        for envelope in &envelopes {
            acked(&s.slack, envelope).await;
        }
        assert!(s.slack.posts().is_empty(), "nothing posted while down");
        // The outbox retries with backoff capped at 30 s: all posted within that
        // after the minute is over.
        posts_settle(&s.slack, 3, Duration::from_secs(60 + 45)).await;
        assert!(
            s.slack.post_attempts() > 3,
            "refused while down, then posted"
        );

        let before = s.slack.socket_connections();
        s.slack.outage(Duration::from_secs(3));
        state_becomes(
            &s.h.state.channels.connections,
            ConnectionState::Reconnecting,
        )
        .await;
        connected(&s.slack, before + 1).await;
        let after = s
            .slack
            .socket_event(mention("back?", "1700000200.000100", None, "EvO9"), 0)
            .expect("sent");
        acked(&s.slack, &after).await;
        posts_settle(&s.slack, 4, WAIT).await;
        s.tasks.stop().await;
        once_per_thread(&s.slack, 4);
    }
}

/// Needs Postgres (`make unit` skips `postgres::` tests).
mod replicas_on_postgres {
    use super::*;

    /// Two runtime processes on one Postgres database, each with its own Socket
    /// Mode connection; Slack spreads the envelopes over both and delivers those
    /// whose acknowledgement was lost again on the other connection: every event
    /// is answered exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_in_socket_mode_answer_each_event_once() {
        let slack = SlackMock::start(BOT_TOKEN, APP_TOKEN)
            .await
            .expect("mock Slack");
        let mock = MockLlm::start().await.expect("mock LLM");
        let db = TestDatabase::create_on(&admin_url()).await;
        let api = slack.api_url();
        let (a, b) = RuntimeProcess::slack_replicas(
            &mock,
            db.url(),
            &format!(
                "{{botTokenEnv: SLACK_BOT_TOKEN, appTokenEnv: SLACK_APP_TOKEN, teamId: {TEAM}}}"
            ),
            &[
                ("SLACK_BOT_TOKEN", BOT_TOKEN),
                ("SLACK_APP_TOKEN", APP_TOKEN),
                (SLACK_API_URL_ENV, api.as_str()),
            ],
        )
        .await;
        assert!(
            slack.wait_until(WAIT, |s| s.open_sockets() == 2).await,
            "one connection per process: {}",
            slack.open_sockets()
        );
        // Half of the acknowledgements are lost: those envelopes come again, on
        // the other connection.
        slack.lose_acks(3);
        for i in 0..6 {
            slack
                .socket_event(
                    mention(
                        &format!("question {i}"),
                        &format!("17000003{i:02}.000100"),
                        None,
                        &format!("EvP{i}"),
                    ),
                    0,
                )
                .expect("sent");
        }
        posts_settle(&slack, 6, WAIT).await;
        assert!(
            slack.wait_until(WAIT, |s| s.acks().len() >= 3).await,
            "acks {:?}",
            slack.acks()
        );
        assert_eq!(slack.redeliver_unacked().expect("again"), 3);
        assert!(
            slack.wait_until(WAIT, |s| s.unacked().is_empty()).await,
            "the deliveries again are acknowledged: {:?}",
            slack.unacked()
        );
        let (log_a, log_b) = (a.log(), b.log());
        drop(a);
        drop(b);
        once_per_thread(&slack, 6);
        for log in [log_a, log_b] {
            assert!(
                !log.contains(BOT_TOKEN) && !log.contains(APP_TOKEN),
                "no token in the log"
            );
        }
    }
}
