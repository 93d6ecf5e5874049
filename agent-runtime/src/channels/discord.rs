//! Discord bots: one Gateway connection per bot token across all of the
//! agent's pods. A lease in the database (renewed every few seconds, taken over
//! by another pod once it expires) decides which pod runs the bot's shard
//! (twilight: identify, heartbeat, resume after a drop, reconnect on op 7,
//! re-identify on an invalid session). Each `MESSAGE_CREATE` a channel answers
//! (its guild and channel ids, `respondTo`, `directMessages`) is stored with an
//! outbox row keyed by the message id; the outbox worker
//! ([`super::delivery`]) answers it as a reply, through the conversation service.
//! The holder keeps the Gateway session beside the lease, so a pod taking the
//! lease over resumes it (Discord replays the events of the handover; a message
//! already stored is not answered twice), and registers the slash commands of
//! the channels with an Interactions endpoint ([`super::discord_interactions`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crds::{ConnectionState, RespondTo};
use tokio_util::sync::CancellationToken;
use twilight_gateway::{
    ConfigBuilder, Event, EventTypeFlags, Intents, Session, Shard, ShardId, StreamExt as _,
};
use twilight_model::channel::Message;

use crate::channel_registry::{ChannelSettings, DiscordSettings, SigningKeySource};
use crate::conversation::{self, Participant, SessionRef};
use crate::db::{GatewaySession, NewDelivery};
use crate::state::SharedState;

/// How long a lease lasts unless renewed: a dead holder's bot moves to
/// another pod within this time.
const LEASE: Duration = Duration::from_secs(15);
/// How often leases are renewed and the channels looked at again.
const RENEW: Duration = Duration::from_secs(5);

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

/// Gateway close code for a refused token.
const AUTHENTICATION_FAILED: u16 = 4004;

/// Gateway close codes after which twilight does not reconnect: the token
/// refused (4004), the shard or API version invalid (4010-4012), intents
/// invalid or not enabled for the bot (4013, 4014: MESSAGE_CONTENT is a
/// privileged intent switched on in Discord's developer portal).
fn is_fatal_close(code: u16) -> bool {
    code == AUTHENTICATION_FAILED || (4010..=4014).contains(&code)
}

/// Called whenever a bot's Gateway connection changes state (`lease` names
/// the bot; `detail` is Discord's own words, never the token): records it as
/// the connection state of each of the bot's channels (the lease holder alone
/// reports them; they become the channels' `Connected` condition).
fn connection_changed(
    state: &SharedState,
    lease: &str,
    channels: &[Arc<ChannelSettings>],
    connection: ConnectionState,
    detail: &str,
) {
    let names: Vec<&str> = channels.iter().map(|c| c.name.as_str()).collect();
    tracing::info!(lease = %lease, channels = ?names, state = connection.reason(), detail,
        "Discord connection state");
    for name in names {
        state
            .channels
            .connections
            .set(name, connection, detail.to_owned());
    }
}

/// The slash commands to register per (application, guild; `None`: global),
/// from the channels with an Interactions endpoint.
fn command_plan(
    channels: &[Arc<ChannelSettings>],
) -> BTreeMap<(String, Option<String>), BTreeSet<String>> {
    let mut plan: BTreeMap<_, BTreeSet<String>> = BTreeMap::new();
    for discord in channels.iter().filter_map(|c| c.discord.as_ref()) {
        let (Some(app), Some(_)) = (&discord.application_id, &discord.public_key) else {
            continue;
        };
        if discord.guild_ids.is_empty() {
            plan.entry((app.clone(), None))
                .or_default()
                .insert(discord.slash_command.clone());
        }
        for guild in &discord.guild_ids {
            plan.entry((app.clone(), Some(guild.clone())))
                .or_default()
                .insert(discord.slash_command.clone());
        }
    }
    plan
}

/// Registers a bot's slash commands (bulk overwrite, global or per guild);
/// `true` when every registration went through.
async fn register(
    state: &SharedState,
    token: &str,
    plan: &BTreeMap<(String, Option<String>), BTreeSet<String>>,
) -> bool {
    let client = super::discord_api::client(
        state.webhooks.http(),
        token,
        state.webhooks.discord_api_proxy().as_deref(),
    );
    let mut all = true;
    for ((app, guild), commands) in plan {
        let commands: Vec<String> = commands.iter().cloned().collect();
        match super::discord_api::register_commands(&client, app, guild.as_deref(), &commands).await
        {
            Ok(()) => {
                tracing::info!(guild = ?guild, commands = ?commands, "Discord slash commands registered")
            }
            Err(err) => {
                all = false;
                tracing::warn!(guild = ?guild, error = %err, "cannot register Discord slash commands; will retry");
            }
        }
    }
    all
}

/// Keeps one shard per bot whose lease this pod holds, until `shutdown`; the
/// holder registers the bot's slash commands (again when they change).
pub async fn run(state: SharedState, holder: String, shutdown: CancellationToken) {
    let mut running: HashMap<String, (CancellationToken, Vec<String>)> = HashMap::new();
    // Per lease: the command plan registered (or being registered).
    let registered: Arc<Mutex<HashMap<String, String>>> = Arc::default();
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
            if !running.contains_key(&lease) {
                let stop = shutdown.child_token();
                let names = bot.channels.iter().map(|c| c.name.clone()).collect();
                running.insert(lease.clone(), (stop.clone(), names));
                tracing::info!(lease = %lease, channels = bot.channels.len(),
                    "this pod holds the Discord bot's lease: connecting");
                let gateway = Gateway {
                    state: state.clone(),
                    token: token.clone(),
                    lease: lease.clone(),
                    holder: holder.clone(),
                    channels: bot.channels.clone(),
                };
                tokio::spawn(gateway.run(stop));
            }
            let plan = command_plan(&bot.channels);
            let fingerprint = format!("{plan:?}");
            let fresh = {
                let mut done = registered.lock().unwrap_or_else(|p| p.into_inner());
                done.insert(lease.clone(), fingerprint.clone()).as_ref() != Some(&fingerprint)
            };
            if fresh && !plan.is_empty() {
                let (state, registered, lease) = (state.clone(), registered.clone(), lease.clone());
                tokio::spawn(async move {
                    if !register(&state, &token, &plan).await {
                        // Tried again at the next renewal.
                        registered
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&lease);
                    }
                });
            }
        }
        running.retain(|lease, (stop, names)| {
            let keep = wanted.contains(lease);
            if !keep {
                tracing::info!(lease = %lease, "Discord lease lost or bot gone: disconnecting");
                stop.cancel();
                // Another pod (the new holder) reports these channels now.
                for name in names.iter() {
                    state.channels.connections.remove(name);
                }
                registered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(lease);
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

/// One bot's Gateway connection, run by the lease holder.
struct Gateway {
    state: SharedState,
    token: String,
    lease: String,
    holder: String,
    channels: Vec<Arc<ChannelSettings>>,
}

impl Gateway {
    /// Runs the bot's shard until `stop`. When Discord closes the Gateway for
    /// good (a refused token, intents not enabled for the bot: close codes
    /// twilight does not retry), the channels show Discord's words and the
    /// bot connects again later (`gateway_backoff`: 30 s, doubling up to 10
    /// minutes), so enabling the intent in Discord's developer portal brings
    /// it back without a restart.
    async fn run(self, stop: CancellationToken) {
        let mut closes = 0;
        while self.session(&stop).await {
            let wait = self.state.webhooks.gateway_backoff().delay(closes, 1.0);
            closes = closes.saturating_add(1);
            tracing::warn!(lease = %self.lease, retry_in_ms = wait.as_millis() as u64,
                "Discord closed the Gateway for good; connecting again later");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One shard until `stop` (false) or until Discord closes the Gateway for
    /// good (true); twilight reconnects, resumes and re-identifies by itself
    /// otherwise. The session stored beside the lease (by a previous holder)
    /// is resumed, so what Discord dispatched during the handover is
    /// replayed; the session is stored again as events are stored.
    async fn session(&self, stop: &CancellationToken) -> bool {
        let state = &self.state;
        let intents = Intents::GUILD_MESSAGES | Intents::DIRECT_MESSAGES | Intents::MESSAGE_CONTENT;
        let mut config = ConfigBuilder::new(self.token.clone(), intents);
        if let Some(url) = state.webhooks.discord_gateway_url() {
            config = config.proxy_url(url);
        }
        let mut saved = match state.store.gateway_session(&self.lease).await {
            Ok(saved) => saved,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the stored Discord session; identifying");
                None
            }
        };
        if let Some(session) = &saved {
            tracing::info!(lease = %self.lease, sequence = session.sequence,
                "resuming the Discord session of the previous holder");
            config = config.session(Session::new(session.sequence, session.id.clone()));
            if let Some(url) = &session.resume_url {
                config = config.resume_url(url.clone());
            }
        }
        let mut shard = Shard::with_config(ShardId::ONE, config.build());
        let mut bot_id: Option<u64> = saved.as_ref().and_then(|s| s.bot_user_id);
        // Close frames always come through (`Event::GatewayClose`).
        let wanted =
            EventTypeFlags::READY | EventTypeFlags::MESSAGE_CREATE | EventTypeFlags::RESUMED;
        connection_changed(
            state,
            &self.lease,
            &self.channels,
            ConnectionState::Reconnecting,
            "connecting to the Discord Gateway",
        );
        let mut refused = false;
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return false,
                event = shard.next_event(wanted) => event,
            };
            match event {
                Some(Ok(Event::Ready(ready))) => {
                    bot_id = Some(ready.user.id.get());
                    refused = false;
                    connection_changed(
                        state,
                        &self.lease,
                        &self.channels,
                        ConnectionState::Connected,
                        "identified",
                    );
                }
                Some(Ok(Event::Resumed)) => {
                    connection_changed(
                        state,
                        &self.lease,
                        &self.channels,
                        ConnectionState::Connected,
                        "session resumed",
                    );
                }
                Some(Ok(Event::GatewayClose(frame))) => {
                    let (code, reason) = frame
                        .map(|f| (f.code, f.reason.into_owned()))
                        .unwrap_or((0, String::new()));
                    refused = is_fatal_close(code);
                    connection_changed(
                        state,
                        &self.lease,
                        &self.channels,
                        if refused {
                            ConnectionState::Unauthorized
                        } else {
                            ConnectionState::Reconnecting
                        },
                        &format!("Discord Gateway closed the connection: {code} {reason}"),
                    );
                    continue;
                }
                Some(Ok(Event::MessageCreate(message))) => {
                    // A resumed session has no READY: the bot's id is stored with it.
                    if let Some(bot) = bot_id {
                        intake(state, &self.token, bot, &message).await;
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "Discord Gateway error; reconnecting");
                    // A refused token stays Unauthorized while twilight retries.
                    if !refused {
                        connection_changed(
                            state,
                            &self.lease,
                            &self.channels,
                            ConnectionState::Reconnecting,
                            &format!("Discord Gateway error: {err}"),
                        );
                    }
                    continue;
                }
                None => {
                    // After a fatal close, Discord's own words stay the reason.
                    if !refused {
                        connection_changed(
                            state,
                            &self.lease,
                            &self.channels,
                            ConnectionState::Unauthorized,
                            "Discord closed the Gateway for good (bad token or intents?)",
                        );
                    }
                    return true;
                }
            }
            // Stored after the event's message is: a successor resumes from here.
            let current = shard.session().map(|s| GatewaySession {
                id: s.id().to_owned(),
                sequence: s.sequence(),
                resume_url: shard.resume_url().map(str::to_owned),
                bot_user_id: bot_id,
            });
            if let Some(current) = current.filter(|c| saved.as_ref() != Some(c)) {
                match state
                    .store
                    .save_gateway_session(&self.lease, &self.holder, &current)
                    .await
                {
                    Ok(()) => saved = Some(current),
                    Err(err) => tracing::warn!(error = %err, "cannot store the Discord session"),
                }
            }
        }
    }
}

/// Stores a message a channel answers, with its outbox row keyed by the
/// message id: a message Discord replays (on Resume after a handover) finds
/// the row and is not answered twice.
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
            reply_to: Some(message_id.clone()),
            interaction_token: None,
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
        .await;
    match inserted {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(channel = %name, message = %message_id, "Discord message seen before (replayed); not answered again");
            return;
        }
        Err(err) => {
            tracing::error!(channel = %name, error = %err, "cannot store a Discord message");
            return;
        }
    }
    // Nobody sends a Gateway message again: when it cannot be recorded now the
    // row stays and the delivery worker records it.
    match super::delivery::record_for_delivery(
        state,
        admitted.participant(),
        SessionRef::External(channel_id),
        &text,
        &delivery_id,
        super::delivery::IfNotRecorded::KeepRow,
    )
    .await
    {
        Ok(_) => {
            tracing::info!(channel = %name, delivery = %delivery_id, "Discord message accepted")
        }
        Err(err) => tracing::warn!(channel = %name, delivery = %delivery_id, error = %err,
            "Discord message stored; recording it is left to the delivery worker"),
    }
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
                application_id: None,
                public_key: None,
                slash_command: "ask".into(),
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
