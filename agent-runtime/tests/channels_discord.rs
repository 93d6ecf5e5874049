//! The Discord channel against the mock Discord of `mock-chatapps` (Gateway
//! websocket and REST): a mention answered as a reply with the typing
//! indicator, answers over 2,000 characters split, a dropped Gateway connection
//! resumed without losing or repeating a message, a `429 retry_after` waited
//! out, and two runtime processes on one Postgres database holding one Gateway
//! connection between them, the survivor taking over when the holder dies.

mod common;

use std::time::Duration;

use agent_runtime::channels::{ChannelTasks, DISCORD_API_PROXY_ENV, DISCORD_GATEWAY_URL_ENV};
use common::{Db, Harness, RuntimeProcess};
use crds::RespondTo;
use crds::runtime_config::{ChannelConfig, ChannelType, DiscordConfig, RuntimeConfig};
use mock_chatapps::discord::{DiscordMock, GatewayFault, RateLimitFault};
use switchboard_tests::database::{TestDatabase, admin_url};
use switchboard_tests::mock_llm::MockLlm;

const TOKEN: &str = "discord-bot-token-for-tests";
const APP: &str = "1100000000000000000";
const GUILD: &str = "1000000000000000001";
const CHANNEL: &str = "1000000000000000002";
const WAIT: Duration = Duration::from_secs(30);

fn discord_channel(config: &mut RuntimeConfig) {
    config.channels = vec![ChannelConfig {
        name: "support-discord".into(),
        channel_type: ChannelType::Discord,
        language: Some("en".into()),
        discord: Some(DiscordConfig {
            bot_token_env: "DISCORD_BOT_TOKEN".into(),
            guild_ids: vec![GUILD.into()],
            channel_ids: Vec::new(),
            respond_to: RespondTo::Mentions,
            direct_messages: true,
        }),
        ..ChannelConfig::default()
    }];
}

async fn start(db: Db) -> (Harness, ChannelTasks, DiscordMock) {
    let discord = DiscordMock::start(TOKEN, APP, Duration::from_millis(500))
        .await
        .expect("mock Discord");
    let h = Harness::start_with(db, |config, _| discord_channel(config)).await;
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

on_both_databases!(
    a_mention_is_answered_as_a_reply,
    a_dropped_gateway_is_resumed_and_429s_are_waited_out,
);

/// Needs Postgres (`make unit` skips `postgres::` tests).
mod replicas_on_postgres {
    use super::*;

    /// Two runtime processes on one Postgres database: one Gateway connection
    /// between them, each message answered once; when the holder is killed the
    /// other takes the bot over within the lease time and answers.
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
        assert!(
            discord
                .wait_until(WAIT, |d| d.gateway_counts().identifies == 2)
                .await,
            "the survivor connects within the lease time"
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
        posts_settle(&discord, 4).await;
        let log = survivor.log();
        let mut survivor = survivor;
        survivor.child.kill().await.expect("survivor killed");
        let posts = discord.posts();
        assert_eq!(
            posts.len(),
            4,
            "each message answered exactly once: {posts:?}"
        );
        let mut replied: Vec<_> = posts.iter().filter_map(|p| p.reply_to.clone()).collect();
        replied.sort();
        replied.dedup();
        assert_eq!(replied.len(), 4);
        assert!(!log.contains(TOKEN), "no token in the log");
    }
}

/// The Discord channel's connection state as the lease holder sees it:
/// Connected once the session is ready; a token the Gateway refuses (close
/// 4004) is Unauthorized with Discord's words and without the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_state_follows_the_gateway() {
    use crds::channel::ConnectionState;
    async fn state_becomes(h: &Harness, expected: ConnectionState) -> String {
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
    let (h, tasks, _discord) = start(Db::Sqlite).await;
    state_becomes(&h, ConnectionState::Connected).await;
    tasks.stop().await;

    let discord = DiscordMock::start(TOKEN, APP, Duration::from_millis(500))
        .await
        .expect("mock Discord");
    let h = Harness::start_with(Db::Sqlite, |config, _| discord_channel(config)).await;
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
