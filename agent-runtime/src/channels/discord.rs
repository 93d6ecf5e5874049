//! Discord bots: one Gateway connection per bot token across all of the
//! agent's pods. A lease in the database (renewed every few seconds, taken over
//! by another pod once it expires) decides which pod runs the bot's shard
//! (twilight: identify, heartbeat, resume after a drop, reconnect on op 7,
//! re-identify on an invalid session). Each `MESSAGE_CREATE` a channel answers
//! (its guild and channel ids, `respondTo`, `directMessages`) is stored with an
//! outbox row keyed by the message id; the outbox worker
//! ([`super::delivery`]) answers it as a reply, through the conversation service.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crds::RespondTo;
use crds::channel::ConnectionState;
use tokio_util::sync::CancellationToken;
use twilight_gateway::{
    ConfigBuilder, Event, EventTypeFlags, Intents, Shard, ShardId, StreamExt as _,
};
use twilight_model::channel::Message;

use crate::channel_registry::{ChannelSettings, DiscordSettings, SigningKeySource};
use crate::conversation::{self, Participant, SessionRef};
use crate::db::NewDelivery;
use crate::state::SharedState;

/// How long a lease lasts unless renewed: a dead holder's bot moves to
/// another pod within this time.
const LEASE: Duration = Duration::from_secs(15);
/// How often leases are renewed and the channels looked at again.
const RENEW: Duration = Duration::from_secs(5);
/// The Gateway's close code for a refused token ("Authentication failed").
const AUTHENTICATION_FAILED: u16 = 4004;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One bot: its token's source and the channels it serves.
#[derive(Clone, Debug)]
struct Bot {
    token: SigningKeySource,
    channels: Vec<Arc<ChannelSettings>>,
}

/// The enabled Discord channels grouped by bot token.
fn bots(channels: &[Arc<ChannelSettings>]) -> Vec<Bot> {
    let mut bots: Vec<Bot> = Vec::new();
    for channel in channels.iter().filter(|c| c.enabled) {
        let Some(discord) = &channel.discord else {
            continue;
        };
        match bots.iter_mut().find(|b| b.token == discord.bot_token) {
            Some(bot) => bot.channels.push(channel.clone()),
            None => bots.push(Bot {
                token: discord.bot_token.clone(),
                channels: vec![channel.clone()],
            }),
        }
    }
    bots
}

/// A message as the channel filter needs it (pure, for tests).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen<'a> {
    guild: Option<&'a str>,
    channel: &'a str,
    mentions_bot: bool,
    from_bot: bool,
}

/// The channel that answers a message: in a DM the first that takes direct
/// messages; in a guild the one listing the channel id, then the one listing
/// the guild, then one listing neither; `respondTo: Mentions` needs a mention.
fn route<'c>(
    channels: &'c [Arc<ChannelSettings>],
    seen: &Seen<'_>,
) -> Option<&'c Arc<ChannelSettings>> {
    if seen.from_bot {
        return None;
    }
    let discord = |c: &'c Arc<ChannelSettings>| c.discord.as_ref().map(|d| (c, d));
    let candidates = channels.iter().filter_map(discord);
    let Some(guild) = seen.guild else {
        return candidates
            .filter(|(_, d)| d.direct_messages)
            .map(|(c, _)| c)
            .next();
    };
    let answers = |d: &DiscordSettings| d.respond_to == RespondTo::AllMessages || seen.mentions_bot;
    let listed: Vec<_> = candidates.collect();
    let by_channel = listed
        .iter()
        .find(|(_, d)| d.channel_ids.iter().any(|c| c == seen.channel));
    let by_guild = || {
        listed
            .iter()
            .find(|(_, d)| d.channel_ids.is_empty() && d.guild_ids.iter().any(|g| g == guild))
    };
    let open = || {
        listed
            .iter()
            .find(|(_, d)| d.channel_ids.is_empty() && d.guild_ids.is_empty())
    };
    by_channel
        .or_else(by_guild)
        .or_else(open)
        .filter(|(_, d)| answers(d))
        .map(|(c, _)| *c)
}

/// Removes mentions of the bot (`<@id>`, `<@!id>`).
fn without_mention(text: &str, bot: u64) -> String {
    text.replace(&format!("<@{bot}>"), " ")
        .replace(&format!("<@!{bot}>"), " ")
        .trim()
        .to_owned()
}

/// What a running shard last saw, and the channels it serves (kept current
/// by [`run`]), so that each channel's connection state is the shard's.
#[derive(Default)]
struct BotStatus {
    channels: Vec<String>,
    last: Option<(ConnectionState, String)>,
}

type SharedStatus = Arc<std::sync::Mutex<BotStatus>>;

fn lock(status: &SharedStatus) -> std::sync::MutexGuard<'_, BotStatus> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records the shard's state for every channel it serves.
fn publish(state: &SharedState, status: &SharedStatus, now: Option<(ConnectionState, String)>) {
    let mut status = lock(status);
    if now.is_some() {
        status.last = now;
    }
    if let Some((connection, message)) = &status.last {
        for name in &status.channels {
            state
                .channels
                .connections
                .set(name, *connection, message.clone());
        }
    }
}

/// Keeps one shard per bot whose lease this pod holds, until `shutdown`.
/// The lease holder alone reports the bot's channels' connection state.
pub async fn run(state: SharedState, holder: String, shutdown: CancellationToken) {
    let mut running: HashMap<String, (CancellationToken, SharedStatus)> = HashMap::new();
    loop {
        let bots = bots(&state.channels.all());
        let mut wanted = Vec::new();
        for bot in bots {
            let token = match state.webhooks.keys.key(&bot.token).await {
                Ok(t) => String::from_utf8_lossy(&t).trim().to_owned(),
                Err(err) => {
                    tracing::warn!(error = %err, "Discord bot token unavailable");
                    continue;
                }
            };
            let lease = format!("discord:{}", super::discord_api::token_digest(&token));
            let now = chrono::Utc::now().timestamp_millis();
            let held = match state
                .store
                .acquire_lease(&lease, &holder, now, now + millis(LEASE))
                .await
            {
                Ok(held) => held,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot renew the Discord lease");
                    false
                }
            };
            if !held {
                continue;
            }
            wanted.push(lease.clone());
            let names: Vec<String> = bot.channels.iter().map(|c| c.name.clone()).collect();
            match running.get(&lease) {
                Some((_, status)) => {
                    let gone: Vec<String> = lock(status)
                        .channels
                        .iter()
                        .filter(|n| !names.contains(n))
                        .cloned()
                        .collect();
                    for name in gone {
                        state.channels.connections.remove(&name);
                    }
                    lock(status).channels = names;
                    publish(&state, status, None);
                }
                None => {
                    let stop = shutdown.child_token();
                    let status = SharedStatus::default();
                    lock(&status).channels = names;
                    running.insert(lease.clone(), (stop.clone(), status.clone()));
                    tracing::info!(lease = %lease, channels = bot.channels.len(),
                        "this pod holds the Discord bot's lease: connecting");
                    tokio::spawn(shard(state.clone(), token, status, stop));
                }
            }
        }
        running.retain(|lease, (stop, status)| {
            let keep = wanted.contains(lease);
            if !keep {
                tracing::info!(lease = %lease, "Discord lease lost or bot gone: disconnecting");
                stop.cancel();
                // Another pod (the new holder) reports these channels now.
                for name in &lock(status).channels {
                    state.channels.connections.remove(name);
                }
            }
            keep
        });
        tokio::select! {
            () = tokio::time::sleep(RENEW) => {}
            () = shutdown.cancelled() => break,
        }
    }
    for (lease, (stop, _)) in running {
        stop.cancel();
        if let Err(err) = state.store.release_lease(&lease, &holder).await {
            tracing::warn!(error = %err, "cannot release the Discord lease");
        }
    }
}

/// Runs one bot's shard until `stop`; twilight reconnects, resumes and
/// re-identifies by itself.
async fn shard(state: SharedState, token: String, status: SharedStatus, stop: CancellationToken) {
    let intents = Intents::GUILD_MESSAGES | Intents::DIRECT_MESSAGES | Intents::MESSAGE_CONTENT;
    let mut config = ConfigBuilder::new(token.clone(), intents);
    if let Some(url) = state.webhooks.discord_gateway_url() {
        config = config.proxy_url(url);
    }
    let mut shard = Shard::with_config(ShardId::ONE, config.build());
    let mut bot_id: Option<u64> = None;
    // Close frames always come through (`Event::GatewayClose`).
    let wanted = EventTypeFlags::READY | EventTypeFlags::MESSAGE_CREATE | EventTypeFlags::RESUMED;
    let set = |connection: ConnectionState, message: String| {
        publish(&state, &status, Some((connection, message)));
    };
    set(
        ConnectionState::Reconnecting,
        "connecting to the Discord Gateway".to_owned(),
    );
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = shard.next_event(wanted) => event,
        };
        match event {
            Some(Ok(Event::Ready(ready))) => {
                bot_id = Some(ready.user.id.get());
                tracing::info!("Discord Gateway connected");
                set(
                    ConnectionState::Connected,
                    "Discord Gateway session ready".to_owned(),
                );
            }
            Some(Ok(Event::Resumed)) => {
                tracing::info!("Discord Gateway session resumed");
                set(
                    ConnectionState::Connected,
                    "Discord Gateway session resumed".to_owned(),
                );
            }
            Some(Ok(Event::GatewayClose(frame))) => {
                let (code, reason) = frame
                    .map(|f| (f.code, f.reason.into_owned()))
                    .unwrap_or((0, String::new()));
                let message = format!("Discord Gateway closed the connection: {code} {reason}");
                if code == AUTHENTICATION_FAILED {
                    set(ConnectionState::Unauthorized, message);
                } else {
                    set(ConnectionState::Reconnecting, message);
                }
            }
            Some(Ok(Event::MessageCreate(message))) => {
                if let Some(bot) = bot_id {
                    intake(&state, &token, bot, &message).await;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => {
                tracing::warn!(error = %err, "Discord Gateway error; reconnecting");
                if lock(&status).last.as_ref().map(|l| l.0) != Some(ConnectionState::Unauthorized) {
                    set(
                        ConnectionState::Reconnecting,
                        format!("Discord Gateway error: {err}"),
                    );
                }
            }
            None => {
                tracing::error!("Discord Gateway closed for good (bad token or intents?)");
                return;
            }
        }
    }
}

/// Stores a message a channel answers, with its outbox row.
async fn intake(state: &SharedState, token: &str, bot: u64, message: &Message) {
    let channels: Vec<_> = {
        let mut mine = Vec::new();
        for c in state.channels.all().into_iter().filter(|c| c.enabled) {
            if let Some(d) = &c.discord
                && let Ok(t) = state.webhooks.keys.key(&d.bot_token).await
                && String::from_utf8_lossy(&t).trim() == token
            {
                mine.push(c);
            }
        }
        mine
    };
    let guild = message.guild_id.map(|g| g.get().to_string());
    let channel_id = message.channel_id.get().to_string();
    let seen = Seen {
        guild: guild.as_deref(),
        channel: &channel_id,
        mentions_bot: message.mentions.iter().any(|m| m.id.get() == bot),
        from_bot: message.author.bot || message.author.id.get() == bot,
    };
    let Some(channel) = route(&channels, &seen) else {
        return;
    };
    let text = without_mention(&message.content, bot);
    if text.is_empty() {
        return;
    }
    let name = channel.name.clone();
    let user = message.author.id.get().to_string();
    let message_id = message.id.get().to_string();
    let participant = Participant {
        user: user.clone(),
        channel: name.clone(),
        language: channel.language.clone(),
        author: None,
    };
    let admitted = match conversation::admit(state, participant).await {
        Ok(a) => a,
        Err(err) => {
            tracing::info!(channel = %name, error = %err, "Discord message not admitted");
            return;
        }
    };
    let delivery_id = uuid::Uuid::now_v7().to_string();
    let inserted = state
        .store
        .insert_delivery(&NewDelivery {
            id: delivery_id.clone(),
            channel: name.clone(),
            inbound_key: format!("discord:{message_id}"),
            conversation_id: channel_id.clone(),
            user_id: user,
            text: text.clone(),
            callback_url: String::new(),
            reply_to: Some(message_id),
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
        .await;
    match inserted {
        Ok(true) => {}
        Ok(false) => return,
        Err(err) => {
            tracing::error!(channel = %name, error = %err, "cannot store a Discord message");
            return;
        }
    }
    // Stored: recording the user message now is an optimisation (the
    // delivery worker records it when this fails).
    match conversation::record(
        state,
        admitted.participant(),
        SessionRef::External(channel_id),
        &text,
    )
    .await
    {
        Ok(recorded) => {
            if let Err(err) = state
                .store
                .delivery_ready(
                    &delivery_id,
                    &recorded.session_id,
                    &recorded.message.id,
                    chrono::Utc::now().timestamp_millis(),
                )
                .await
            {
                tracing::warn!(error = %err, "cannot link a Discord message to its delivery");
            }
        }
        Err(err) => tracing::warn!(error = %err, "Discord message not recorded yet"),
    }
    state.webhooks.wake();
    tracing::info!(channel = %name, delivery = %delivery_id, "Discord message accepted");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(
        name: &str,
        guilds: &[&str],
        ids: &[&str],
        respond_to: RespondTo,
        dms: bool,
    ) -> Arc<ChannelSettings> {
        Arc::new(ChannelSettings {
            discord: Some(DiscordSettings {
                bot_token: SigningKeySource::Env("T".into()),
                guild_ids: guilds.iter().map(|s| s.to_string()).collect(),
                channel_ids: ids.iter().map(|s| s.to_string()).collect(),
                respond_to,
                direct_messages: dms,
            }),
            ..ChannelSettings::open(name)
        })
    }

    fn seen<'a>(guild: Option<&'a str>, channel: &'a str, mentions_bot: bool) -> Seen<'a> {
        Seen {
            guild,
            channel,
            mentions_bot,
            from_bot: false,
        }
    }

    #[test]
    fn messages_go_to_the_most_specific_channel() {
        let channels = vec![
            channel("open", &[], &[], RespondTo::Mentions, false),
            channel("guild", &["10"], &[], RespondTo::Mentions, false),
            channel("german", &["10"], &["20"], RespondTo::AllMessages, true),
        ];
        let name = |s: &Seen<'_>| route(&channels, s).map(|c| c.name.clone());
        assert_eq!(
            name(&seen(Some("10"), "20", false)).as_deref(),
            Some("german")
        );
        assert_eq!(
            name(&seen(Some("10"), "21", true)).as_deref(),
            Some("guild")
        );
        assert_eq!(name(&seen(Some("10"), "21", false)), None, "mentions only");
        assert_eq!(name(&seen(Some("11"), "30", true)).as_deref(), Some("open"));
        assert_eq!(
            name(&seen(None, "40", false)).as_deref(),
            Some("german"),
            "DMs"
        );
        let from_bot = Seen {
            from_bot: true,
            ..seen(Some("10"), "20", true)
        };
        assert_eq!(name(&from_bot), None);
    }

    #[test]
    fn channels_group_by_bot_and_mentions_are_removed() {
        let channels = vec![
            channel("a", &[], &[], RespondTo::Mentions, true),
            channel("b", &[], &[], RespondTo::Mentions, true),
            Arc::new(ChannelSettings::open("web")),
        ];
        let bots = bots(&channels);
        assert_eq!(bots.len(), 1);
        assert_eq!(bots[0].channels.len(), 2);
        assert_eq!(without_mention("<@42> hello <@!42>", 42), "hello");
    }
}
