//! The Discord channel against the mock Discord of `mock-chatapps` (Gateway
//! websocket, REST, signed interactions): a mention answered as a reply with
//! the typing indicator, answers over 2,000 characters split, a dropped Gateway
//! connection resumed without losing or repeating a message, op 9 (resumable
//! or not), a `429 retry_after` waited out, a global 429 holding off every
//! route, Discord down for a minute, fallback answers in the channel's
//! language, the slash command through the Interactions endpoint (PING, bad
//! signatures, deferred then edited, long answers split into follow-ups), and
//! two runtime processes on one Postgres database holding one Gateway
//! connection between them, the survivor resuming the session when the holder
//! dies and answering what was sent during the handover.

mod common;

use std::time::Duration;

use agent_runtime::channel_registry::webhook::Backoff;
use agent_runtime::channels::{ChannelTasks, DISCORD_API_PROXY_ENV, DISCORD_GATEWAY_URL_ENV};
use common::{Db, Harness, RuntimeProcess};
use crds::RespondTo;
use crds::runtime_config::{ChannelConfig, ChannelType, DiscordConfig, RuntimeConfig};
use mock_chatapps::discord::{DiscordMock, GatewayFault, MESSAGE_CONTENT, RateLimitFault};
use serde_json::json;
use switchboard_tests::database::{TestDatabase, admin_url};
use switchboard_tests::mock_llm::MockLlm;

const TOKEN: &str = "discord-bot-token-for-tests";
const APP: &str = "1100000000000000000";
const GUILD: &str = "1000000000000000001";
const CHANNEL: &str = "1000000000000000002";
const WAIT: Duration = Duration::from_secs(30);

fn discord_channel(config: &mut RuntimeConfig, public_key: String) {
    config.channels = vec![ChannelConfig {
        name: "support-discord".into(),
        channel_type: ChannelType::Discord,
        language: Some("en".into()),
        discord: Some(DiscordConfig {
            bot_token_env: "DISCORD_BOT_TOKEN".into(),
            guild_ids: vec![GUILD.into()],
            respond_to: RespondTo::Mentions,
            direct_messages: true,
            application_id: Some(APP.into()),
            public_key: Some(public_key),
            ..DiscordConfig::default()
        }),
        ..ChannelConfig::default()
    }];
}

async fn start(db: Db) -> (Harness, ChannelTasks, DiscordMock) {
    start_with(db, |_| {}).await
}

async fn start_with(
    db: Db,
    tweak: impl FnOnce(&mut RuntimeConfig),
) -> (Harness, ChannelTasks, DiscordMock) {
    let discord = DiscordMock::start(TOKEN, APP, Duration::from_millis(500))
        .await
        .expect("mock Discord");
    let public_key = discord.public_key_hex();
    let h = Harness::start_with(db, |config, _| {
        discord_channel(config, public_key);
        tweak(config);
    })
    .await;
    h.state
        .webhooks
        .keys
        .set_lookup(|name| (name == "DISCORD_BOT_TOKEN").then(|| TOKEN.to_owned()));
    let gateway = discord.gateway_url();
    let rest = discord.rest_addr().to_string();
    let tasks = ChannelTasks::start(&h.state, move |name| match name {
        DISCORD_GATEWAY_URL_ENV => Some(gateway.clone()),
        DISCORD_API_PROXY_ENV => Some(rest.clone()),
        _ => None,
    })
    .await;
    assert!(
        discord
            .wait_until(WAIT, |d| d.gateway_counts().identifies == 1)
            .await,
        "the bot identifies"
    );
    (h, tasks, discord)
}

/// Waits until the Discord channel's connection state is `expected`; its message.
async fn state_becomes(h: &Harness, expected: crds::channel::ConnectionState) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = h.state.channels.connections.get("support-discord");
        if let Some(c) = &got
            && c.state == expected
        {
            return c.message.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{expected:?} expected: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn posts_settle(discord: &DiscordMock, n: usize) {
    assert!(
        discord.wait_until(WAIT, |d| d.posts().len() >= n).await,
        "{n} posts; got {:?}",
        discord.posts()
    );
}

async fn a_mention_is_answered_as_a_reply(db: Db) {
    let (h, tasks, discord) = start(db).await;
    let id = discord
        .user_message(
            Some(GUILD),
            CHANNEL,
            "<@1100000000000000001> what are your opening hours?",
            true,
        )
        .expect("dispatched");
    posts_settle(&discord, 1).await;
    let post = &discord.posts()[0];
    assert_eq!(post.channel_id, CHANNEL);
    assert_eq!(
        post.reply_to.as_deref(),
        Some(id.as_str()),
        "a reply to the message"
    );
    assert!(post.content.contains("opening hours"), "{post:?}");
    assert!(
        !post.content.contains("<@"),
        "the mention is not part of the question"
    );
    assert_eq!(discord.typing(), [CHANNEL], "typing while the model worked");

    // Without a mention (respondTo: Mentions), and in another guild: no answer.
    discord
        .user_message(Some(GUILD), CHANNEL, "just chatting", false)
        .expect("dispatched");
    discord
        .user_message(
            Some("1000000000000000099"),
            CHANNEL,
            "<@1100000000000000001> hi",
            true,
        )
        .expect("dispatched");
    // A long answer comes in pieces of at most 2,000 characters, the first the reply.
    let long = format!("<@1100000000000000001> {}", "word ".repeat(500));
    let long_id = discord
        .user_message(Some(GUILD), CHANNEL, &long, true)
        .expect("dispatched");
    posts_settle(&discord, 3).await;
    let posts = discord.posts();
    assert!(posts.iter().all(|p| p.content.chars().count() <= 2000));
    assert_eq!(posts[1].reply_to.as_deref(), Some(long_id.as_str()));
    assert_eq!(posts[2].reply_to, None);
    // The same channel is one session.
    let (_, sessions) = h
        .get(
            "1300000000000000001",
            "/channels/support-discord/api/sessions",
        )
        .await;
    assert_eq!(
        sessions["data"].as_array().map(Vec::len),
        Some(1),
        "{sessions}"
    );
    tasks.stop().await;
    assert_eq!(
        discord.posts().len(),
        3,
        "only the two mentions in the guild were answered"
    );
}

async fn a_dropped_gateway_is_resumed_and_429s_are_waited_out(db: Db) {
    let (_h, tasks, discord) = start(db).await;
    discord.gateway_fault(GatewayFault::Drop).expect("dropped");
    assert!(
        discord
            .wait_until(WAIT, |d| d.gateway_counts().resumes == 1)
            .await,
        "resumed after the drop: {:?}",
        discord.gateway_counts()
    );
    discord.rate_limit(
        "POST /channels/{id}/messages",
        RateLimitFault {
            retry_after: 1.0,
            global: false,
        },
    );
    discord
        .user_message(
            Some(GUILD),
            CHANNEL,
            "<@1100000000000000001> still there?",
            true,
        )
        .expect("dispatched");
    posts_settle(&discord, 1).await;
    let statuses: Vec<u16> = discord
        .requests()
        .iter()
        .filter(|r| r.route == "POST /channels/{id}/messages")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [429, 200], "the 429 waited out, then posted once");
    discord
        .gateway_fault(GatewayFault::Reconnect)
        .expect("op 7");
    assert!(
        discord
            .wait_until(WAIT, |d| d.gateway_counts().resumes == 2)
            .await,
        "resumed after op 7"
    );
    discord
        .user_message(None, "1000000000000000077", "hello in a DM", false)
        .expect("dispatched");
    posts_settle(&discord, 2).await;
    tasks.stop().await;
    assert_eq!(discord.posts().len(), 2);
    assert_eq!(discord.posts()[1].channel_id, "1000000000000000077");
    assert_eq!(
        discord.gateway_counts().identifies,
        1,
        "resumed, never re-identified"
    );
}

/// Answers `n` REST posts (messages, original edits and follow-ups) within `wait`.
async fn answered(discord: &DiscordMock, n: usize, wait: Duration) -> bool {
    discord.wait_until(wait, |d| d.posts().len() >= n).await
}

fn assert_each_answered_once(discord: &DiscordMock, asked: &[String]) {
    let posts = discord.posts();
    for id in asked {
        let replies = posts
            .iter()
            .filter(|p| p.reply_to.as_deref() == Some(id.as_str()))
            .count();
        assert_eq!(replies, 1, "message {id} answered once: {posts:?}");
    }
}

async fn invalid_sessions_resume_or_identify_again(db: Db) {
    let (_h, tasks, discord) = start(db).await;
    let mention = |i: u32| format!("<@1100000000000000001> question {i}");
    let mut asked = Vec::new();
    // op 9 with d: true: the session is resumable; the bot resumes it.
    discord
        .gateway_fault(GatewayFault::InvalidSession { resumable: true })
        .expect("op 9");
    assert!(
        discord
            .wait_until(WAIT, |d| d.gateway_counts().resumes == 1)
            .await,
        "resumed after op 9 (resumable): {:?}",
        discord.gateway_counts()
    );
    asked.push(
        discord
            .user_message(Some(GUILD), CHANNEL, &mention(1), true)
            .expect("dispatched"),
    );
    posts_settle(&discord, 1).await;
    // op 9 with d: false: the session is gone; the bot identifies afresh.
    discord
        .gateway_fault(GatewayFault::InvalidSession { resumable: false })
        .expect("op 9");
    assert!(
        discord
            .wait_until(WAIT, |d| d.gateway_counts().identifies == 2)
            .await,
        "identified again after op 9 (not resumable): {:?}",
        discord.gateway_counts()
    );
    asked.push(
        discord
            .user_message(Some(GUILD), CHANNEL, &mention(2), true)
            .expect("dispatched"),
    );
    posts_settle(&discord, 2).await;
    tasks.stop().await;
    assert_eq!(discord.gateway_counts().resumes, 1);
    assert_each_answered_once(&discord, &asked);
    assert_eq!(discord.posts().len(), 2);
}

async fn a_global_429_holds_off_every_route(db: Db) {
    let (_h, tasks, discord) = start(db).await;
    let retry_after = 2.0;
    discord.rate_limit(
        "POST /channels/{id}/typing",
        RateLimitFault {
            retry_after,
            global: true,
        },
    );
    // The first message's first call meets the global limit; a message in
    // another channel (other routes) sent once the bot has read the 429 waits
    // too. (A call the bot sent before the 429 reached it cannot be held: the
    // mock counts the 429 as answered before its bytes reach the bot, so the
    // second message waits for the bot's own record of the limit.)
    let mut asked = vec![
        discord
            .user_message(
                Some(GUILD),
                CHANNEL,
                "<@1100000000000000001> global 0",
                true,
            )
            .expect("dispatched"),
    ];
    assert!(
        discord
            .wait_until(WAIT, |d| d.requests().iter().any(|r| r.status == 429))
            .await,
        "the global 429 was answered"
    );
    let rest = agent_runtime::channels::discord_api::client(
        &reqwest::Client::new(),
        TOKEN,
        Some(&discord.rest_addr().to_string()),
    );
    let limited_at = discord
        .requests()
        .iter()
        .find(|r| r.status == 429)
        .map(|r| r.at)
        .expect("the global 429 was answered");
    let deadline = tokio::time::Instant::now() + WAIT;
    while rest
        .global_limit_until()
        .is_none_or(|until| until <= limited_at)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bot never held its calls for the global 429"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    asked.push(
        discord
            .user_message(
                Some(GUILD),
                "1000000000000000003",
                "<@1100000000000000001> global 1",
                true,
            )
            .expect("dispatched"),
    );
    posts_settle(&discord, 2).await;
    tasks.stop().await;
    let requests = discord.requests();
    let limited = requests
        .iter()
        .position(|r| r.status == 429)
        .expect("the global 429 was answered");
    let at = requests[limited].at;
    let held = Duration::from_secs_f64(retry_after) - Duration::from_millis(100);
    let early: Vec<_> = requests[limited + 1..]
        .iter()
        .filter(|r| r.at.duration_since(at) < held)
        .map(|r| r.route.clone())
        .collect();
    assert!(
        early.is_empty(),
        "no route is called while the global limit holds: {early:?}"
    );
    assert_each_answered_once(&discord, &asked);
    assert_eq!(discord.posts().len(), 2);
}

async fn fallback_answers_reach_discord_in_the_channels_language(db: Db) {
    let (_h, tasks, discord) = start_with(db, |config| {
        config.fallback_responses = [
            ("de".to_owned(), "Entschuldigung, gerade nicht.".to_owned()),
            ("en".to_owned(), "Sorry, not right now.".to_owned()),
        ]
        .into_iter()
        .collect();
        config.channels[0].language = Some("de".into());
    })
    .await;
    let id = discord
        .user_message(
            Some(GUILD),
            CHANNEL,
            "<@1100000000000000001> hilfe [[mock: status=500]]",
            true,
        )
        .expect("dispatched");
    posts_settle(&discord, 1).await;
    tasks.stop().await;
    let posts = discord.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].content, "Entschuldigung, gerade nicht.");
    assert_eq!(posts[0].reply_to.as_deref(), Some(id.as_str()));
}

async fn the_slash_command_is_deferred_then_answered(db: Db) {
    let (h, tasks, discord) = start(db).await;
    let url = h.url("/channels/support-discord/discord/interactions");
    // The lease holder registered the command for the channel's guild.
    assert!(
        discord
            .wait_until(WAIT, |d| !d.command_registrations().is_empty())
            .await,
        "the slash command is registered"
    );
    let (guild, body) = discord.command_registrations()[0].clone();
    assert_eq!(guild.as_deref(), Some(GUILD));
    assert_eq!(body[0]["name"], "ask");
    assert_eq!(body[0]["options"][0]["name"], "question");
    assert_eq!(body[0]["options"][0]["type"], 3);

    // PING is answered with PONG.
    let ping = json!({"type": 1, "id": "1200000000000000500", "application_id": APP, "token": "t", "version": 1});
    let (status, answer) = discord
        .send_interaction(&url, &ping, None)
        .await
        .expect("sent");
    assert_eq!((status, answer), (200, json!({"type": 1})));
    // A bad or missing signature is a 401 naming what was wrong.
    let bad = "00".repeat(64);
    let (status, answer) = discord
        .send_interaction(&url, &ping, Some(&bad))
        .await
        .expect("sent");
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("x-signature-ed25519")),
        "{answer}"
    );
    // Signed, but long ago: a captured interaction sent again is refused.
    let (timestamp, signature) = discord.sign("1764590400", ping.to_string().as_bytes());
    let replayed = h
        .client
        .post(&url)
        .header("content-type", "application/json")
        .header("x-signature-timestamp", timestamp)
        .header("x-signature-ed25519", signature)
        .body(ping.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(replayed.status(), 401);
    let replayed: serde_json::Value =
        serde_json::from_slice(&replayed.bytes().await.expect("body")).expect("json");
    assert!(replayed.to_string().contains("stale"), "{replayed}");
    let unsigned = h
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(ping.to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(unsigned.status(), 401);
    let unsigned: serde_json::Value =
        serde_json::from_slice(&unsigned.bytes().await.expect("body")).expect("json");
    assert!(
        unsigned.to_string().contains("missing x-signature"),
        "{unsigned}"
    );

    // /ask: deferred at once, then the deferred response is edited with the answer.
    let ask = discord.command_interaction(GUILD, CHANNEL, "ask", "what are your opening hours?");
    let token = ask["token"].as_str().expect("token").to_owned();
    let (status, answer) = discord
        .send_interaction(&url, &ask, None)
        .await
        .expect("sent");
    assert_eq!((status, answer), (200, json!({"type": 5})));
    assert!(
        discord
            .wait_until(WAIT, |d| !d.original_edits().is_empty())
            .await,
        "the deferred response is edited"
    );
    let (edited, body) = discord.original_edits()[0].clone();
    assert_eq!(edited, token);
    assert!(
        body["content"]
            .as_str()
            .is_some_and(|c| c.contains("opening hours")),
        "{body}"
    );
    // The same interaction again (a replay) is not answered twice.
    let (status, _) = discord
        .send_interaction(&url, &ask, None)
        .await
        .expect("sent");
    assert_eq!(status, 200);

    // A 3,000-character answer: @original with the first piece, a follow-up with the rest.
    let long = "word ".repeat(600);
    let ask = discord.command_interaction(GUILD, CHANNEL, "ask", long.trim());
    let token = ask["token"].as_str().expect("token").to_owned();
    let (status, _) = discord
        .send_interaction(&url, &ask, None)
        .await
        .expect("sent");
    assert_eq!(status, 200);
    assert!(
        discord
            .wait_until(WAIT, |d| d.original_edits().len() == 2
                && !d.followups().is_empty())
            .await,
        "edited and followed up: {:?}",
        discord.followups()
    );
    let edit = discord.original_edits()[1].clone();
    let follow = discord.followups()[0].clone();
    assert_eq!(
        (edit.0.as_str(), follow.0.as_str()),
        (token.as_str(), token.as_str())
    );
    let (first, rest) = (
        edit.1["content"].as_str().unwrap_or_default().to_owned(),
        follow.1["content"].as_str().unwrap_or_default().to_owned(),
    );
    assert!(first.chars().count() <= 2000 && rest.chars().count() <= 2000);
    assert!(first.chars().count() + rest.chars().count() >= 3000 - 2);
    // Another command name is not answered; no message was posted in the channel.
    let other = discord.command_interaction(GUILD, CHANNEL, "other", "x");
    let (status, answer) = discord
        .send_interaction(&url, &other, None)
        .await
        .expect("sent");
    assert_eq!((status, answer["type"].clone()), (200, json!(4)));
    tasks.stop().await;
    assert_eq!(
        discord.original_edits().len(),
        2,
        "each command answered once"
    );
    assert_eq!(discord.followups().len(), 1);
    assert!(discord.posts().is_empty());
    assert!(
        discord.typing().is_empty(),
        "a slash command shows thinking… instead"
    );
}

/// Several messages sent while the bot is disconnected come back together on
/// Resume; each is answered once (in the one session of the channel).
async fn messages_replayed_together_are_each_answered_once(db: Db) {
    let (_h, tasks, discord) = start(db).await;
    discord.outage(Duration::from_secs(2));
    let asked: Vec<String> = (0..3)
        .map(|i| {
            discord
                .user_message(
                    Some(GUILD),
                    CHANNEL,
                    &format!("<@1100000000000000001> queued {i}"),
                    true,
                )
                .expect("kept for the resume")
        })
        .collect();
    assert!(
        answered(&discord, 3, WAIT).await,
        "all answered: {:?}",
        discord.posts()
    );
    tasks.stop().await;
    assert_eq!(discord.gateway_counts().identifies, 1);
    assert_each_answered_once(&discord, &asked);
    assert_eq!(discord.posts().len(), 3);
}

/// The bot identifies asking for MESSAGE_CONTENT, a privileged intent: while
/// it is not enabled for the bot, Discord closes the Gateway with 4014 (for
/// good: twilight does not reconnect). The channel says so in Discord's
/// words; once the intent is enabled, the bot connects again by itself and
/// answers, without a restart.
async fn the_bot_reconnects_once_its_intent_is_enabled(db: Db) {
    use crds::channel::ConnectionState;
    let (h, tasks, discord) = start(db).await;
    h.state.webhooks.set_gateway_backoff(Backoff {
        base: Duration::from_millis(300),
        max: Duration::from_secs(1),
    });
    state_becomes(&h, ConnectionState::Connected).await;
    discord.disallow_intents(MESSAGE_CONTENT);
    discord
        .gateway_fault(GatewayFault::Close(4014))
        .expect("closed");
    let message = state_becomes(&h, ConnectionState::Unauthorized).await;
    assert!(message.contains("4014"), "Discord's words: {message}");
    // Refused again while the intent stays off (the retries back off).
    assert!(
        discord
            .wait_until(WAIT, |d| d.gateway_counts().close_codes_sent.len() >= 2)
            .await,
        "the bot tried again: {:?}",
        discord.gateway_counts()
    );
    discord.disallow_intents(0);
    state_becomes(&h, ConnectionState::Connected).await;
    discord
        .user_message(Some(GUILD), CHANNEL, "<@1100000000000000001> back?", true)
        .expect("dispatched");
    posts_settle(&discord, 1).await;
    tasks.stop().await;
}

/// An answer in two pieces whose second piece fails (Discord 500): the retry
/// posts the second piece alone (the first is recorded as posted).
async fn a_retried_answer_does_not_repeat_its_pieces(db: Db) {
    let (_h, tasks, discord) = start(db).await;
    discord.fail_post_after(1);
    let long = format!("<@1100000000000000001> {}", "word ".repeat(500));
    let id = discord
        .user_message(Some(GUILD), CHANNEL, &long, true)
        .expect("dispatched");
    posts_settle(&discord, 2).await;
    // Time for a wrong third post (the outbox retries within a second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    tasks.stop().await;
    let posts = discord.posts();
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[0].reply_to.as_deref(), Some(id.as_str()));
    assert_eq!(posts[1].reply_to, None);
    let creates = discord
        .requests()
        .iter()
        .filter(|r| r.route == "POST /channels/{id}/messages")
        .count();
    assert_eq!(creates, 3, "piece 1, piece 2 failing, then piece 2 alone");
}

/// A channel the bot may not post in (403, Missing Permissions) is not
/// retried: Discord counts every 401 and 403 towards a limit that bans the
/// bot for a while. The answer is given up after one refusal and listed as
/// failed for an admin to retry.
async fn a_refused_post_is_given_up_at_once(db: Db) {
    let (h, tasks, discord) = start(db).await;
    discord.forbid_channel(CHANNEL);
    discord
        .user_message(Some(GUILD), CHANNEL, "<@1100000000000000001> hi", true)
        .expect("dispatched");
    let deadline = tokio::time::Instant::now() + WAIT;
    let failed = loop {
        let (_, failed) = h.admin_get("/api/admin/outbox?state=failed").await;
        if failed["data"].as_array().is_some_and(|d| !d.is_empty()) {
            break failed;
        }
        assert!(tokio::time::Instant::now() < deadline, "given up: {failed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        failed["data"][0]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("403")),
        "{failed}"
    );
    // The outbox's backoff starts at 0.5 s: a retry would have come by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = discord
        .requests()
        .iter()
        .filter(|r| r.route == "POST /channels/{id}/messages")
        .count();
    assert_eq!(attempts, 1, "refused once, not retried");
    tasks.stop().await;
}

on_both_databases!(
    a_retried_answer_does_not_repeat_its_pieces,
    the_bot_reconnects_once_its_intent_is_enabled,
    a_refused_post_is_given_up_at_once,
    messages_replayed_together_are_each_answered_once,
    a_mention_is_answered_as_a_reply,
    a_dropped_gateway_is_resumed_and_429s_are_waited_out,
    invalid_sessions_resume_or_identify_again,
    a_global_429_holds_off_every_route,
    fallback_answers_reach_discord_in_the_channels_language,
    the_slash_command_is_deferred_then_answered,
);

/// A real minute of Discord outage (`make unit` skips `postgres::` tests).
mod slow_on_postgres {
    use super::*;

    /// Discord down for a minute: the Gateway refuses connections and REST answers
    /// 503 for 60 s. A message whose answer was due during the outage and the
    /// messages sent during it (kept by Discord, replayed on Resume) are each
    /// answered exactly once afterwards. On Postgres only, so that `make unit`
    /// (which skips `postgres::`) stays short: the minute is real.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn discord_down_for_a_minute() {
        let (_h, tasks, discord) = start(Db::Postgres).await;
        let mention = |i: u32| format!("<@1100000000000000001> during the outage {i}");
        let mut asked = vec![
            discord
                .user_message(Some(GUILD), CHANNEL, &mention(0), true)
                .expect("dispatched"),
        ];
        discord.outage(Duration::from_secs(60));
        for i in 1..4 {
            asked.push(
                discord
                    .user_message(Some(GUILD), CHANNEL, &mention(i), true)
                    .expect("kept for the resume"),
            );
        }
        assert!(
            answered(&discord, 4, Duration::from_secs(180)).await,
            "all answered after the outage: {:?}",
            discord.posts()
        );
        tasks.stop().await;
        let counts = discord.gateway_counts();
        assert_eq!(counts.identifies, 1, "resumed after the outage: {counts:?}");
        assert!(counts.resumes >= 1);
        assert!(
            discord.requests().iter().any(|r| r.status == 503),
            "REST was down"
        );
        assert_each_answered_once(&discord, &asked);
        assert_eq!(discord.posts().len(), 4);
    }
}

/// Needs Postgres (`make unit` skips `postgres::` tests).
mod replicas_on_postgres {
    use super::*;

    /// Two runtime processes on one Postgres database: one Gateway connection
    /// between them, each message answered once; when the holder is killed the
    /// other takes the bot over within the lease time, RESUMEs its session (no
    /// new IDENTIFY) and answers the messages sent during the handover once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_hold_one_gateway_connection() {
        let discord = DiscordMock::start(TOKEN, APP, Duration::from_millis(500))
            .await
            .expect("mock Discord");
        let mock = MockLlm::start().await.expect("mock LLM");
        let db = TestDatabase::create_on(&admin_url()).await;
        let config = format!(
            "agent: {{name: discordy}}\n\
             model: {{provider: openai, name: mock-gpt, baseUrl: \"{}\", apiKeyEnv: UPSTREAM_KEY, timeoutSeconds: 5}}\n\
             database: {{urlEnv: DATABASE_URL}}\n\
             channels:\n\
             - name: support-discord\n  type: discord\n  discord: {{botTokenEnv: DISCORD_BOT_TOKEN}}\n",
            mock.openai_base_url(),
        );
        let gateway = discord.gateway_url();
        let rest = discord.rest_addr().to_string();
        let env = [
            ("UPSTREAM_KEY", "sk-upstream"),
            ("DATABASE_URL", db.url()),
            ("DISCORD_BOT_TOKEN", TOKEN),
            (DISCORD_GATEWAY_URL_ENV, gateway.as_str()),
            (DISCORD_API_PROXY_ENV, rest.as_str()),
            ("RUST_LOG", "info"),
        ];
        let a = RuntimeProcess::spawn(&config, &env).await;
        let b = RuntimeProcess::spawn(&config, &env).await;
        assert!(
            discord
                .wait_until(WAIT, |d| d.gateway_counts().identifies == 1)
                .await
        );
        for i in 0..3 {
            discord
                .user_message(
                    Some(GUILD),
                    CHANNEL,
                    &format!("<@1100000000000000001> question {i}"),
                    true,
                )
                .expect("dispatched");
            posts_settle(&discord, i + 1).await;
        }
        let holds = |p: &RuntimeProcess| p.log().contains("holds the Discord bot's lease");
        let counts = discord.gateway_counts();
        assert_eq!(
            (counts.identifies, counts.connections),
            (1, 1),
            "one connection between the two replicas"
        );
        assert!(
            holds(&a) != holds(&b),
            "exactly one replica holds the lease"
        );
        let (mut holder, survivor) = if holds(&a) { (a, b) } else { (b, a) };
        holder.child.kill().await.expect("holder killed");
        // Sent during the handover: Discord keeps them in the session.
        for i in 0..2 {
            discord
                .user_message(
                    Some(GUILD),
                    CHANNEL,
                    &format!("<@1100000000000000001> during the handover {i}"),
                    true,
                )
                .expect("dispatched");
        }
        assert!(
            discord
                .wait_until(WAIT, |d| d.gateway_counts().resumes == 1)
                .await,
            "the survivor resumes the session within the lease time: {:?}",
            discord.gateway_counts()
        );
        assert_eq!(
            discord.gateway_counts().identifies,
            1,
            "resumed, not identified afresh"
        );
        assert!(holds(&survivor));
        discord
            .user_message(
                Some(GUILD),
                CHANNEL,
                "<@1100000000000000001> after the takeover",
                true,
            )
            .expect("dispatched");
        posts_settle(&discord, 6).await;
        let log = survivor.log();
        let mut survivor = survivor;
        survivor.child.kill().await.expect("survivor killed");
        let posts = discord.posts();
        assert_eq!(
            posts.len(),
            6,
            "each message answered exactly once: {posts:?}"
        );
        let mut replied: Vec<_> = posts.iter().filter_map(|p| p.reply_to.clone()).collect();
        replied.sort();
        replied.dedup();
        assert_eq!(replied.len(), 6);
        assert!(
            posts
                .iter()
                .any(|p| p.content.contains("during the handover 1")),
            "{posts:?}"
        );
        assert!(log.contains("resuming the Discord session"), "{log}");
        assert!(!log.contains(TOKEN), "no token in the log");
    }
}

/// The Discord channel's connection state as the lease holder sees it:
/// Connected once the session is ready; a token the Gateway refuses (close
/// 4004) is Unauthorized with Discord's words and without the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_state_follows_the_gateway() {
    use crds::channel::ConnectionState;
    let (h, tasks, _discord) = start(Db::Sqlite).await;
    state_becomes(&h, ConnectionState::Connected).await;
    tasks.stop().await;

    let discord = DiscordMock::start(TOKEN, APP, Duration::from_millis(500))
        .await
        .expect("mock Discord");
    let public_key = discord.public_key_hex();
    let h = Harness::start_with(Db::Sqlite, |config, _| discord_channel(config, public_key)).await;
    h.state
        .webhooks
        .keys
        .set_lookup(|name| (name == "DISCORD_BOT_TOKEN").then(|| "not-the-bot-token".to_owned()));
    let gateway = discord.gateway_url();
    let rest = discord.rest_addr().to_string();
    let tasks = ChannelTasks::start(&h.state, move |name| match name {
        DISCORD_GATEWAY_URL_ENV => Some(gateway.clone()),
        DISCORD_API_PROXY_ENV => Some(rest.clone()),
        _ => None,
    })
    .await;
    let message = state_becomes(&h, ConnectionState::Unauthorized).await;
    assert!(message.contains("4004"), "{message}");
    assert!(
        !message.contains("not-the-bot-token"),
        "no token: {message}"
    );
    tasks.stop().await;
}
