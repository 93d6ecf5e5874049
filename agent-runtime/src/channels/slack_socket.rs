//! Slack Socket Mode (`spec.slack.mode: SocketMode`) and the connection state
//! of every `slack` channel.
//!
//! Socket Mode: per app-level token (`xapp-...`) one WebSocket per pod, opened
//! with `apps.connections.open`. Each `events_api` envelope goes through the
//! same intake as the Events API ([`super::slack::accept_socket_event`]: the
//! message and its outbox row stored, keyed by `event_id`) and is acknowledged
//! by its `envelope_id` only once stored; an envelope not acknowledged is
//! delivered again by Slack, possibly on another connection (another pod), and
//! the `event_id` key in the database makes it one answer. A `disconnect`
//! (`refresh_requested`, `warning`, ...) or a dropped connection is followed by
//! a new `apps.connections.open`, with backoff while it fails.
//!
//! Events API channels: `auth.test` with the bot token decides Connected or
//! Unauthorized; it is checked when the channel appears and then periodically.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crds::channel::ConnectionState;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;

use super::slack_api::{self, CallError};
use crate::channel_registry::{ChannelSettings, SigningKeySource};
use crate::state::SharedState;

/// How often the channels are looked at again.
const RESCAN: Duration = Duration::from_secs(2);
/// First wait after a failed connection; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Wait after Slack refused the app token (it may be fixed in the Secret).
const UNAUTHORIZED_RETRY: Duration = Duration::from_secs(60);
/// How long opening the WebSocket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A ping is sent after this long without a frame; the connection is given up
/// after [`SILENCE_LIMIT`] without one.
const PING_EVERY: Duration = Duration::from_secs(30);
const SILENCE_LIMIT: Duration = Duration::from_secs(90);
/// `auth.test` of an Events API channel: again after this long when it
/// passed, sooner when it did not.
const AUTH_RECHECK_OK: Duration = Duration::from_secs(600);
const AUTH_RECHECK_FAILED: Duration = Duration::from_secs(30);

/// A stable, secret-free name for a token source (its environment variable or
/// Secret key), used to group channels that share a token.
fn source_key(source: &SigningKeySource) -> String {
    format!("{source:?}")
}

/// The enabled Socket Mode channels using the app token `key`.
fn socket_channels(state: &SharedState, key: &str) -> Vec<Arc<ChannelSettings>> {
    state
        .channels
        .all()
        .into_iter()
        .filter(|c| c.enabled)
        .filter(|c| {
            c.slack
                .as_ref()
                .and_then(|s| s.app_token.as_ref())
                .is_some_and(|t| source_key(t) == key)
        })
        .collect()
}

fn set_all(state: &SharedState, key: &str, connection: ConnectionState, message: &str) {
    for channel in socket_channels(state, key) {
        state
            .channels
            .connections
            .set(&channel.name, connection, message);
    }
}

async fn read_key(state: &SharedState, source: &SigningKeySource) -> Result<String, String> {
    state
        .webhooks
        .keys
        .key(source)
        .await
        .map(|t| String::from_utf8_lossy(&t).trim().to_owned())
        .map_err(|e| e.to_string())
}

/// Sleeps `wait` unless `stop` comes first (then `false`).
async fn pause(wait: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => true,
        () = stop.cancelled() => false,
    }
}

fn backoff(failures: u32) -> Duration {
    let exp = FIRST_BACKOFF.saturating_mul(1u32 << failures.min(6));
    let jitter = (uuid::Uuid::new_v4().as_u128() % 250) as u64;
    exp.min(MAX_BACKOFF) + Duration::from_millis(jitter)
}

/// Keeps one Socket Mode connection per app token and the `auth.test` state of
/// Events API channels, until `shutdown`.
pub async fn run(state: SharedState, shutdown: CancellationToken) {
    let mut sockets: HashMap<String, CancellationToken> = HashMap::new();
    // Events API channels: when each was last checked, with which bot token source.
    let mut checked: HashMap<String, (Instant, SigningKeySource, bool)> = HashMap::new();
    let mut managed: HashSet<String> = HashSet::new();
    loop {
        let channels: Vec<_> = state
            .channels
            .all()
            .into_iter()
            .filter(|c| c.enabled)
            .collect();
        let mut wanted_sockets = HashMap::new();
        let mut slack_names = HashSet::new();
        for channel in &channels {
            let Some(slack) = &channel.slack else {
                continue;
            };
            slack_names.insert(channel.name.clone());
            match &slack.app_token {
                Some(app) => {
                    wanted_sockets.insert(source_key(app), app.clone());
                }
                None => {
                    let due = match checked.get(&channel.name) {
                        None => true,
                        Some((at, source, ok)) => {
                            *source != slack.bot_token
                                || at.elapsed()
                                    >= if *ok {
                                        AUTH_RECHECK_OK
                                    } else {
                                        AUTH_RECHECK_FAILED
                                    }
                        }
                    };
                    if due {
                        let ok = check_auth(&state, &channel.name, &slack.bot_token).await;
                        checked.insert(
                            channel.name.clone(),
                            (Instant::now(), slack.bot_token.clone(), ok),
                        );
                    }
                }
            }
        }
        sockets.retain(|key, stop| {
            let keep = wanted_sockets.contains_key(key);
            if !keep {
                stop.cancel();
            }
            keep
        });
        for (key, source) in wanted_sockets {
            if !sockets.contains_key(&key) {
                let stop = shutdown.child_token();
                sockets.insert(key.clone(), stop.clone());
                tokio::spawn(connection(state.clone(), key, source, stop));
            }
        }
        checked.retain(|name, _| {
            channels
                .iter()
                .any(|c| &c.name == name && c.slack.as_ref().is_some_and(|s| s.app_token.is_none()))
        });
        for gone in managed.difference(&slack_names) {
            state.channels.connections.remove(gone);
        }
        managed = slack_names;
        if !pause(RESCAN, &shutdown).await {
            break;
        }
    }
    for stop in sockets.values() {
        stop.cancel();
    }
}

/// `auth.test` with an Events API channel's bot token; sets its state.
async fn check_auth(state: &SharedState, name: &str, bot_token: &SigningKeySource) -> bool {
    let connections = &state.channels.connections;
    let token = match read_key(state, bot_token).await {
        Ok(t) => t,
        Err(err) => {
            connections.set(
                name,
                ConnectionState::Reconnecting,
                format!("bot token unavailable: {err}"),
            );
            return false;
        }
    };
    match slack_api::auth_test(
        state.webhooks.http(),
        &state.webhooks.slack_api_url(),
        &token,
    )
    .await
    {
        Ok(()) => {
            connections.set(
                name,
                ConnectionState::Connected,
                "auth.test accepted the bot token (Events API)",
            );
            true
        }
        Err(err @ CallError::Unauthorized { .. }) => {
            connections.set(name, ConnectionState::Unauthorized, err.to_string());
            false
        }
        Err(err) => {
            connections.set(name, ConnectionState::Reconnecting, err.to_string());
            false
        }
    }
}

/// How one WebSocket session ended.
enum Ended {
    /// Slack asked for a new connection (`disconnect`); its reason.
    Refresh(String),
    /// The connection failed or dropped; why.
    Dropped(String),
    /// `stop` was cancelled.
    Stopped,
}

/// One app token's Socket Mode connection, reopened until `stop`.
async fn connection(
    state: SharedState,
    key: String,
    source: SigningKeySource,
    stop: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let token = match read_key(&state, &source).await {
            Ok(t) => t,
            Err(err) => {
                set_all(
                    &state,
                    &key,
                    ConnectionState::Reconnecting,
                    &format!("app token unavailable: {err}"),
                );
                failures = failures.saturating_add(1);
                if !pause(backoff(failures), &stop).await {
                    return;
                }
                continue;
            }
        };
        let opened = slack_api::connections_open(
            state.webhooks.http(),
            &state.webhooks.slack_api_url(),
            &token,
        )
        .await;
        let url = match opened {
            Ok(url) => url,
            Err(err @ CallError::Unauthorized { .. }) => {
                tracing::warn!(error = %err, "Slack refused the app token");
                set_all(
                    &state,
                    &key,
                    ConnectionState::Unauthorized,
                    &err.to_string(),
                );
                if !pause(UNAUTHORIZED_RETRY, &stop).await {
                    return;
                }
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot open a Slack Socket Mode connection; retrying");
                set_all(
                    &state,
                    &key,
                    ConnectionState::Reconnecting,
                    &err.to_string(),
                );
                failures = failures.saturating_add(1);
                if !pause(backoff(failures), &stop).await {
                    return;
                }
                continue;
            }
        };
        let (ended, greeted) = session(&state, &key, &url, &stop).await;
        if greeted {
            failures = 0;
        }
        match ended {
            Ended::Stopped => return,
            Ended::Refresh(reason) => {
                tracing::info!(%reason, "Slack asked for a new Socket Mode connection");
            }
            Ended::Dropped(why) => {
                tracing::warn!(reason = %why, "Slack Socket Mode connection dropped; reconnecting");
                set_all(
                    &state,
                    &key,
                    ConnectionState::Reconnecting,
                    &format!("Socket Mode connection dropped: {why}"),
                );
                failures = failures.saturating_add(1);
                if !pause(backoff(failures), &stop).await {
                    return;
                }
            }
        }
    }
}

/// One WebSocket session: `hello`, envelopes acknowledged once stored, until
/// `disconnect`, a drop or `stop`. Also says whether `hello` came.
async fn session(
    state: &SharedState,
    key: &str,
    url: &str,
    stop: &CancellationToken,
) -> (Ended, bool) {
    let connected =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url)).await;
    let ws = match connected {
        Ok(Ok((ws, _))) => ws,
        // The URL carries a one-time ticket: not logged.
        Ok(Err(err)) => {
            return (
                Ended::Dropped(format!("WebSocket handshake failed: {err}")),
                false,
            );
        }
        Err(_) => {
            return (
                Ended::Dropped("WebSocket handshake timed out".to_owned()),
                false,
            );
        }
    };
    let (mut sink, mut source) = ws.split();
    let mut greeted = false;
    let mut last_frame = Instant::now();
    let mut ticker = tokio::time::interval(PING_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => {
                let _ = sink.send(WsMessage::Close(None)).await;
                return (Ended::Stopped, greeted);
            }
            _ = ticker.tick() => {
                if last_frame.elapsed() >= SILENCE_LIMIT {
                    return (Ended::Dropped("no frame from Slack for 90 s".to_owned()), greeted);
                }
                if last_frame.elapsed() >= PING_EVERY
                    && sink.send(WsMessage::Ping(Vec::new().into())).await.is_err()
                {
                    return (Ended::Dropped("ping failed".to_owned()), greeted);
                }
                continue;
            }
            frame = source.next() => frame,
        };
        last_frame = Instant::now();
        let text = match frame {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Close(close))) => {
                let why = close
                    .map(|c| format!("closed by Slack ({} {})", u16::from(c.code), c.reason))
                    .unwrap_or_else(|| "closed by Slack".to_owned());
                return (Ended::Dropped(why), greeted);
            }
            Some(Ok(_)) => continue,
            Some(Err(err)) => return (Ended::Dropped(err.to_string()), greeted),
            None => return (Ended::Dropped("connection closed".to_owned()), greeted),
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            tracing::debug!("Slack Socket Mode frame is not JSON; ignored");
            continue;
        };
        match message["type"].as_str().unwrap_or_default() {
            "hello" => {
                greeted = true;
                set_all(
                    state,
                    key,
                    ConnectionState::Connected,
                    "Socket Mode connection open",
                );
            }
            "disconnect" => {
                let reason = message["reason"].as_str().unwrap_or("unknown").to_owned();
                return (Ended::Refresh(reason), greeted);
            }
            kind => {
                let Some(envelope_id) = message["envelope_id"].as_str() else {
                    continue;
                };
                if kind == "events_api" {
                    let channels = socket_channels(state, key);
                    let payload = message["payload"].clone();
                    match super::slack::accept_socket_event(state, &channels, payload).await {
                        Ok(()) => {}
                        // Refused for good (not a rate limit): delivering it again would not help.
                        Err(err)
                            if err.status.is_client_error()
                                && err.status != axum::http::StatusCode::TOO_MANY_REQUESTS =>
                        {
                            tracing::info!(envelope = %envelope_id, error = %err, "Slack event refused");
                        }
                        Err(err) => {
                            tracing::warn!(envelope = %envelope_id, error = %err,
                                "Slack event not stored; left unacknowledged for Slack to deliver again");
                            continue;
                        }
                    }
                }
                // Acknowledged once stored (other envelope types are not served).
                let ack = json!({ "envelope_id": envelope_id }).to_string();
                if let Err(err) = sink.send(WsMessage::text(ack)).await {
                    return (
                        Ended::Dropped(format!("acknowledgement not sent: {err}")),
                        greeted,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap() {
        assert!(backoff(0) < Duration::from_secs(1));
        assert!(backoff(3) >= Duration::from_secs(4));
        assert!(backoff(30) <= MAX_BACKOFF + Duration::from_millis(250));
        assert_eq!(
            source_key(&SigningKeySource::Env("SLACK_APP_TOKEN".into())),
            "Env(\"SLACK_APP_TOKEN\")"
        );
    }
}
