//! Mock Discord: a Gateway (websocket, API v10, JSON encoding) and the REST routes a
//! bot needs, with per-route rate-limit headers and injectable 429s and outages.
//!
//! Gateway: Hello (op 10) on connect; Identify (op 2) answered with the `READY`
//! dispatch (`session_id`, `resume_gateway_url`); Heartbeat (op 1) with Heartbeat ACK
//! (op 11); Resume (op 6) replays the dispatches after the client's sequence and ends
//! with `RESUMED`, or answers Invalid Session (op 9, `d: false`) for an unknown
//! session. Faults: drop the connection without a close frame, Reconnect (op 7),
//! Invalid Session with `d` true or false, a close code, an outage.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post, put};
use axum::{Json, Router};
use ed25519_dalek::{Signer as _, SigningKey};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::{MockError, Outage};

/// The bot user's id in `READY` and in the messages the mock creates.
pub const BOT_USER_ID: &str = "1100000000000000001";

/// Something the test makes the gateway do to the connected client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayFault {
    /// Drop the TCP connection mid-session without a close frame.
    Drop,
    /// Send Reconnect (op 7); the client should reconnect and resume.
    Reconnect,
    /// Send Invalid Session (op 9) with `d`: `true` keeps the session resumable,
    /// `false` forgets it (the client must identify again).
    InvalidSession { resumable: bool },
    /// Close with a Gateway close code, e.g. 4000 (unknown error, resumable) or 4004
    /// (authentication failed, not resumable).
    Close(u16),
}

/// A 429 the REST API answers to the next request on a route.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitFault {
    /// Seconds the client must wait (`retry_after` in the body, `Retry-After` header).
    pub retry_after: f64,
    /// Whether this is the global limit (`global: true`, `X-RateLimit-Global`).
    pub global: bool,
}

/// A message the bot created through REST.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedMessage {
    /// Channel the message was created in.
    pub channel_id: String,
    /// Its text.
    pub content: String,
    /// `message_reference.message_id`, when the bot replied to a message.
    pub reply_to: Option<String>,
}

/// One REST request as the mock saw it.
#[derive(Debug, Clone)]
pub struct RestRequest {
    /// When it arrived.
    pub at: Instant,
    /// Route template, e.g. `POST /channels/{id}/messages`.
    pub route: String,
    /// Status answered.
    pub status: u16,
}

struct Session {
    seq: u64,
    log: Vec<(u64, Value)>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    current: Option<(String, mpsc::UnboundedSender<GatewayCommand>)>,
    /// The session dispatches go to, connected or not (Discord keeps them for Resume).
    last_session: Option<String>,
    identifies: u32,
    resumes: u32,
    heartbeats: u32,
    connections: u32,
    close_codes_sent: Vec<u16>,
    outage: Outage,
    next_id: u64,
    posts: Vec<PostedMessage>,
    typing: Vec<String>,
    callbacks: Vec<(String, Value)>,
    followups: Vec<(String, Value)>,
    edits: Vec<(String, Value)>,
    commands: Vec<(Option<String>, Value)>,
    requests: Vec<RestRequest>,
    rate_limits: HashMap<String, VecDeque<RateLimitFault>>,
    global_rate_limits: VecDeque<RateLimitFault>,
    /// Channels the bot lacks the permission to post in.
    forbidden_channels: std::collections::HashSet<String>,
    /// Privileged intents not enabled for the bot in the developer portal: an
    /// Identify asking for any of them is closed with 4014.
    disallowed_intents: u64,
    /// Messages created with `enforce_nonce`, by nonce: Discord returns the
    /// message a nonce already created (within a few minutes) instead of
    /// creating another.
    nonces: HashMap<String, (Instant, Value)>,
    /// After this many more messages are created, the next create answers
    /// 500 once.
    fail_after: Option<usize>,
}

#[derive(Debug)]
enum GatewayCommand {
    /// New dispatches are in the session's log.
    Dispatch,
    Fault(GatewayFault),
}

struct Shared {
    token: String,
    application_id: String,
    /// The application's Ed25519 key: signs the interactions the mock sends.
    signing_key: SigningKey,
    gateway_url: String,
    heartbeat_interval_ms: u64,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not hide the state from the others.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn next_snowflake(&self) -> String {
        let mut inner = self.lock();
        inner.next_id += 1;
        // Snowflakes are 64-bit integers serialized as strings; keep them 19 digits.
        format!("{}", 1_200_000_000_000_000_000u64 + inner.next_id)
    }
}

/// A running mock Discord. Dropping it leaves the listeners running until the runtime
/// stops; tests normally live as long as it does.
#[derive(Clone)]
pub struct DiscordMock {
    shared: Arc<Shared>,
    gateway_addr: SocketAddr,
    rest_addr: SocketAddr,
}

impl DiscordMock {
    /// Starts the gateway and REST listeners on loopback for a bot with this token and
    /// application id. The heartbeat interval in Hello is `heartbeat_interval`.
    pub async fn start(
        token: &str,
        application_id: &str,
        heartbeat_interval: Duration,
    ) -> Result<Self, MockError> {
        let gateway = TcpListener::bind("127.0.0.1:0").await?;
        let rest = TcpListener::bind("127.0.0.1:0").await?;
        let gateway_addr = gateway.local_addr()?;
        let rest_addr = rest.local_addr()?;
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            application_id: application_id.to_owned(),
            signing_key: SigningKey::from_bytes(&[42; 32]),
            gateway_url: format!("ws://{gateway_addr}"),
            heartbeat_interval_ms: u64::try_from(heartbeat_interval.as_millis()).unwrap_or(41_250),
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
        });
        tokio::spawn(accept_gateway(gateway, shared.clone()));
        let app = rest_router(shared.clone());
        tokio::spawn(async move {
            if let Err(err) = axum::serve(rest, app).await {
                tracing::warn!(%err, "mock Discord REST stopped");
            }
        });
        Ok(Self {
            shared,
            gateway_addr,
            rest_addr,
        })
    }

    /// `ws://127.0.0.1:PORT`: the gateway URL (what `GET /gateway/bot` would return).
    pub fn gateway_url(&self) -> String {
        self.shared.gateway_url.clone()
    }

    /// `127.0.0.1:PORT` of the REST API (routes under `/api/v10`).
    pub fn rest_addr(&self) -> SocketAddr {
        self.rest_addr
    }

    /// The gateway's socket address.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    /// Sends a `MESSAGE_CREATE` dispatch as a user writing `content` in a channel
    /// (`guild_id` `None`: a DM). `mention_bot` adds the bot to `mentions`. Returns the
    /// new message's id. While the client is disconnected the dispatch is kept in the
    /// session and replayed on Resume, as Discord does.
    pub fn user_message(
        &self,
        guild_id: Option<&str>,
        channel_id: &str,
        content: &str,
        mention_bot: bool,
    ) -> Result<String, MockError> {
        let id = self.shared.next_snowflake();
        let mut message = message_json(
            &id,
            channel_id,
            content,
            user_json("1300000000000000001", "user", false),
        );
        if mention_bot {
            message["mentions"] = json!([user_json(BOT_USER_ID, "switchboard", true)]);
        }
        if let Some(guild) = guild_id {
            message["guild_id"] = json!(guild);
        }
        self.dispatch("MESSAGE_CREATE", message)?;
        Ok(id)
    }

    /// Sends any dispatch event (op 0) with the next sequence number.
    pub fn dispatch(&self, event: &'static str, data: Value) -> Result<(), MockError> {
        let mut inner = self.shared.lock();
        let tx = inner.current.as_ref().map(|(_, tx)| tx.clone());
        let session_id = inner.last_session.clone().ok_or(MockError::NotConnected)?;
        let session = inner
            .sessions
            .get_mut(&session_id)
            .ok_or(MockError::NotConnected)?;
        session.seq += 1;
        let seq = session.seq;
        let payload = json!({"op": 0, "t": event, "s": seq, "d": data});
        session.log.push((seq, payload));
        drop(inner);
        // Without a connection the event waits in the log for the Resume replay.
        if let Some(tx) = tx {
            let _ = tx.send(GatewayCommand::Dispatch);
        }
        Ok(())
    }

    /// Makes the gateway misbehave on the current connection.
    pub fn gateway_fault(&self, fault: GatewayFault) -> Result<(), MockError> {
        let inner = self.shared.lock();
        let (_, tx) = inner.current.as_ref().ok_or(MockError::NotConnected)?;
        tx.send(GatewayCommand::Fault(fault))
            .map_err(|_| MockError::NotConnected)
    }

    /// The next request on `route` (e.g. `POST /channels/{id}/messages`) is answered
    /// with this 429; several calls queue several 429s.
    pub fn rate_limit(&self, route: &str, fault: RateLimitFault) {
        let mut inner = self.shared.lock();
        if fault.global {
            inner.global_rate_limits.push_back(fault);
        } else {
            inner
                .rate_limits
                .entry(route.to_owned())
                .or_default()
                .push_back(fault);
        }
    }

    /// Privileged intents (bits of Identify's `intents`, e.g. [`MESSAGE_CONTENT`])
    /// the bot is not allowed: an Identify asking for one is closed with 4014
    /// (Disallowed intents), as Discord does until they are enabled for the bot
    /// in the developer portal. `0` allows every intent again.
    pub fn disallow_intents(&self, intents: u64) {
        self.shared.lock().disallowed_intents = intents;
    }

    /// After `created` more messages are created, the next message create
    /// answers 500 (Discord's side failing) once: an answer in several pieces
    /// fails part way.
    pub fn fail_post_after(&self, created: usize) {
        self.shared.lock().fail_after = Some(created);
    }

    /// The bot lacks the permission to post in `channel`: creating a message
    /// there answers 403 with Discord's error 50013 (Missing Permissions).
    pub fn forbid_channel(&self, channel: &str) {
        self.shared
            .lock()
            .forbidden_channels
            .insert(channel.to_owned());
    }

    /// Discord is down for `duration`: the gateway drops new and current connections,
    /// REST answers 503.
    pub fn outage(&self, duration: Duration) {
        let mut inner = self.shared.lock();
        inner.outage.start(duration);
        if let Some((_, tx)) = inner.current.take() {
            let _ = tx.send(GatewayCommand::Fault(GatewayFault::Drop));
        }
    }

    /// Messages the bot created, in order.
    pub fn posts(&self) -> Vec<PostedMessage> {
        self.shared.lock().posts.clone()
    }

    /// Channels the bot triggered typing in, in order.
    pub fn typing(&self) -> Vec<String> {
        self.shared.lock().typing.clone()
    }

    /// Interaction callbacks `(interaction token, body)`.
    pub fn interaction_callbacks(&self) -> Vec<(String, Value)> {
        self.shared.lock().callbacks.clone()
    }

    /// Follow-up messages (`POST /webhooks/{app}/{token}`): `(interaction token, body)`.
    pub fn followups(&self) -> Vec<(String, Value)> {
        self.shared.lock().followups.clone()
    }

    /// Edits of the original (deferred) response
    /// (`PATCH /webhooks/{app}/{token}/messages/@original`): `(interaction token, body)`.
    pub fn original_edits(&self) -> Vec<(String, Value)> {
        self.shared.lock().edits.clone()
    }

    /// Slash-command registrations (bulk overwrites): `(guild id or None for global, body)`.
    pub fn command_registrations(&self) -> Vec<(Option<String>, Value)> {
        self.shared.lock().commands.clone()
    }

    /// The application's public key, as the developer portal shows it (64 hex digits).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.shared.signing_key.verifying_key().as_bytes())
    }

    /// Signs `body` as Discord does: `(X-Signature-Timestamp, X-Signature-Ed25519)`.
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> (String, String) {
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        let signature = self.shared.signing_key.sign(&message);
        (timestamp.to_owned(), hex::encode(signature.to_bytes()))
    }

    /// An APPLICATION_COMMAND interaction of a guild member running `/command
    /// question:<question>` in a channel, as Discord POSTs it. Returns the body.
    pub fn command_interaction(
        &self,
        guild_id: &str,
        channel_id: &str,
        command: &str,
        question: &str,
    ) -> Value {
        let id = self.shared.next_snowflake();
        json!({
            "type": 2,
            "id": id,
            "application_id": self.shared.application_id,
            "token": format!("interaction-token-{id}"),
            "version": 1,
            "guild_id": guild_id,
            "channel_id": channel_id,
            "channel": {"id": channel_id, "type": 0},
            "member": {"user": user_json("1300000000000000001", "user", false), "roles": [], "permissions": "0"},
            "locale": "en-US",
            "data": {
                "id": "1400000000000000001",
                "name": command,
                "type": 1,
                "options": [{"name": "question", "type": 3, "value": question}],
            },
        })
    }

    /// POSTs a signed interaction to `url` (the runtime's Interactions endpoint),
    /// as Discord does; `signature` replaces the real signature when given.
    /// Returns the status and the JSON answer.
    pub async fn send_interaction(
        &self,
        url: &str,
        body: &Value,
        signature: Option<&str>,
    ) -> Result<(u16, Value), MockError> {
        let body = body.to_string();
        let timestamp = format!("{}", now_millis() / 1000);
        let (timestamp, real) = self.sign(&timestamp, body.as_bytes());
        let response = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("x-signature-timestamp", timestamp)
            .header("x-signature-ed25519", signature.unwrap_or(&real))
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Every REST request with its answer.
    pub fn requests(&self) -> Vec<RestRequest> {
        self.shared.lock().requests.clone()
    }

    /// (identifies, resumes, heartbeats, connections) so far.
    pub fn gateway_counts(&self) -> GatewayCounts {
        let inner = self.shared.lock();
        GatewayCounts {
            identifies: inner.identifies,
            resumes: inner.resumes,
            heartbeats: inner.heartbeats,
            connections: inner.connections,
            close_codes_sent: inner.close_codes_sent.clone(),
        }
    }

    /// Waits until `check` holds for the mock's state (checked after every change), or
    /// the timeout passes; returns whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        check: impl Fn(&DiscordMock) -> bool,
    ) -> bool {
        let mut rx = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => return check(self),
            }
        }
    }
}

/// Gateway counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayCounts {
    /// Identify (op 2) payloads accepted.
    pub identifies: u32,
    /// Resume (op 6) payloads that resumed a session.
    pub resumes: u32,
    /// Heartbeats (op 1) received.
    pub heartbeats: u32,
    /// Websocket connections accepted.
    pub connections: u32,
    /// Close codes the mock sent.
    pub close_codes_sent: Vec<u16>,
}

/// Identify and Resume carry the bot token, with or without the `Bot ` prefix.
fn token_matches(sent: &Value, token: &str) -> bool {
    sent.as_str()
        .map(|t| t.strip_prefix("Bot ").unwrap_or(t))
        .is_some_and(|t| t == token)
}

fn now_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
}

/// How long a message's nonce is remembered ("the past few minutes").
const NONCE_MEMORY: Duration = Duration::from_secs(300);

/// The privileged MESSAGE_CONTENT intent (Identify's `intents`, bit 15).
pub const MESSAGE_CONTENT: u64 = 1 << 15;

/// A user object as in the docs' examples.
pub fn user_json(id: &str, username: &str, bot: bool) -> Value {
    json!({
        "id": id,
        "username": username,
        "global_name": null,
        "discriminator": "0",
        "avatar": null,
        "bot": bot,
        "public_flags": 0,
    })
}

/// A message object with every field Discord always sends.
pub fn message_json(id: &str, channel_id: &str, content: &str, author: Value) -> Value {
    json!({
        "id": id,
        "type": 0,
        "channel_id": channel_id,
        "author": author,
        "content": content,
        "timestamp": "2026-12-01T12:00:00.000000+00:00",
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": false,
        "flags": 0,
    })
}

async fn accept_gateway(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if shared.lock().outage.active() {
            drop(stream);
            continue;
        }
        tokio::spawn(serve_gateway(stream, shared.clone()));
    }
}

async fn serve_gateway(stream: TcpStream, shared: Arc<Shared>) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    shared.lock().connections += 1;
    shared.bump();
    let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": shared.heartbeat_interval_ms}});
    if sink.send(WsMessage::text(hello.to_string())).await.is_err() {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<GatewayCommand>();
    let mut session: Option<String> = None;
    // Sequence numbers of dispatches already written to this connection.
    let mut sent_up_to = 0u64;
    loop {
        tokio::select! {
            frame = source.next() => {
                let Some(Ok(frame)) = frame else { break };
                let text = match frame {
                    WsMessage::Text(t) => t.to_string(),
                    WsMessage::Close(_) => break,
                    _ => continue,
                };
                let Ok(payload) = serde_json::from_str::<Value>(&text) else {
                    let _ = close(&mut sink, &shared, 4002, "Decode error").await;
                    break;
                };
                match payload["op"].as_u64() {
                    Some(1) => {
                        shared.lock().heartbeats += 1;
                        shared.bump();
                        if sink.send(WsMessage::text(json!({"op": 11}).to_string())).await.is_err() { break; }
                    }
                    Some(2) => {
                        if !token_matches(&payload["d"]["token"], &shared.token) {
                            let _ = close(&mut sink, &shared, 4004, "Authentication failed.").await;
                            break;
                        }
                        let asked = payload["d"]["intents"].as_u64().unwrap_or(0);
                        if asked & shared.lock().disallowed_intents != 0 {
                            let _ = close(&mut sink, &shared, 4014, "Disallowed intent(s).").await;
                            break;
                        }
                        let session_id = format!("{:032x}", now_millis() ^ u128::from(shared.lock().identifies + 1) << 64);
                        let ready = json!({
                            "v": 10,
                            "user": {
                                "id": BOT_USER_ID, "username": "switchboard", "global_name": null,
                                "discriminator": "0", "avatar": null, "bot": true,
                                "mfa_enabled": false, "verified": true, "flags": 0,
                            },
                            "guilds": [],
                            "session_id": session_id,
                            "resume_gateway_url": shared.gateway_url,
                            "shard": [0, 1],
                            "application": {"id": shared.application_id, "flags": 0},
                        });
                        {
                            let mut inner = shared.lock();
                            inner.identifies += 1;
                            inner.sessions.insert(session_id.clone(), Session { seq: 1, log: Vec::new() });
                            inner.current = Some((session_id.clone(), tx.clone()));
                            inner.last_session = Some(session_id.clone());
                        }
                        shared.bump();
                        sent_up_to = 1;
                        session = Some(session_id);
                        let msg = json!({"op": 0, "t": "READY", "s": 1, "d": ready});
                        if sink.send(WsMessage::text(msg.to_string())).await.is_err() { break; }
                    }
                    Some(6) => {
                        let d = &payload["d"];
                        let (id, seq) = (d["session_id"].as_str().unwrap_or_default().to_owned(), d["seq"].as_u64().unwrap_or(0));
                        let token_ok = token_matches(&d["token"], &shared.token);
                        let replay = {
                            let mut inner = shared.lock();
                            match inner.sessions.get_mut(&id) {
                                Some(s) if token_ok => {
                                    s.seq += 1;
                                    let resumed_seq = s.seq;
                                    let mut out: Vec<Value> = s.log.iter().filter(|(n, _)| *n > seq).map(|(_, p)| p.clone()).collect();
                                    out.push(json!({"op": 0, "t": "RESUMED", "s": resumed_seq, "d": {}}));
                                    s.log.push((resumed_seq, out[out.len() - 1].clone()));
                                    inner.resumes += 1;
                                    inner.current = Some((id.clone(), tx.clone()));
                                    inner.last_session = Some(id.clone());
                                    Some((out, resumed_seq))
                                }
                                _ => None,
                            }
                        };
                        shared.bump();
                        match replay {
                            Some((events, last)) => {
                                session = Some(id);
                                sent_up_to = last;
                                let mut failed = false;
                                for e in events {
                                    if sink.send(WsMessage::text(e.to_string())).await.is_err() { failed = true; break; }
                                }
                                if failed { break; }
                            }
                            None => {
                                if sink.send(WsMessage::text(json!({"op": 9, "d": false, "s": null, "t": null}).to_string())).await.is_err() { break; }
                            }
                        }
                    }
                    _ => {}
                }
            }
            command = rx.recv() => {
                let Some(command) = command else { break };
                match command {
                    GatewayCommand::Dispatch => {
                        // Write every logged dispatch this connection has not seen yet.
                        let pending: Vec<(u64, Value)> = {
                            let inner = shared.lock();
                            session.as_ref().and_then(|s| inner.sessions.get(s)).map(|s| s.log.iter().filter(|(n, _)| *n > sent_up_to).cloned().collect()).unwrap_or_default()
                        };
                        let mut failed = false;
                        for (n, p) in pending {
                            if sink.send(WsMessage::text(p.to_string())).await.is_err() { failed = true; break; }
                            sent_up_to = n;
                        }
                        if failed { break; }
                    }
                    GatewayCommand::Fault(GatewayFault::Drop) => break,
                    GatewayCommand::Fault(GatewayFault::Reconnect) => {
                        // The client closes and resumes; keep reading until it does.
                        if sink.send(WsMessage::text(json!({"op": 7, "d": null, "s": null, "t": null}).to_string())).await.is_err() { break; }
                    }
                    GatewayCommand::Fault(GatewayFault::InvalidSession { resumable }) => {
                        if !resumable && let Some(s) = &session {
                            let mut inner = shared.lock();
                            inner.sessions.remove(s);
                            inner.current = None;
                            inner.last_session = None;
                        }
                        if sink.send(WsMessage::text(json!({"op": 9, "d": resumable, "s": null, "t": null}).to_string())).await.is_err() { break; }
                    }
                    GatewayCommand::Fault(GatewayFault::Close(code)) => {
                        // Discord forgets the session on the codes after which
                        // it cannot be resumed.
                        if (code == 4004 || code == 4009 || (4010..=4014).contains(&code)) && let Some(s) = &session {
                            let mut inner = shared.lock();
                            inner.sessions.remove(s);
                            inner.last_session = None;
                        }
                        let _ = close(&mut sink, &shared, code, "closed by the mock").await;
                        break;
                    }
                }
            }
        }
    }
    let mut inner = shared.lock();
    if inner
        .current
        .as_ref()
        .is_some_and(|(_, t)| t.same_channel(&tx))
    {
        inner.current = None;
    }
    drop(inner);
    shared.bump();
}

async fn close<S>(sink: &mut S, shared: &Shared, code: u16, reason: &str) -> Result<(), ()>
where
    S: futures::Sink<WsMessage> + Unpin,
{
    shared.lock().close_codes_sent.push(code);
    shared.bump();
    sink.send(WsMessage::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    })))
    .await
    .map_err(|_| ())
}

fn rest_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v10/channels/{channel}/messages", post(create_message))
        .route("/api/v10/channels/{channel}/typing", post(trigger_typing))
        .route(
            "/api/v10/interactions/{id}/{token}/callback",
            post(interaction_callback),
        )
        .route("/api/v10/webhooks/{app}/{token}", post(followup))
        .route(
            "/api/v10/webhooks/{app}/{token}/messages/@original",
            patch(edit_original),
        )
        .route("/api/v10/applications/{app}/commands", put(global_commands))
        .route(
            "/api/v10/applications/{app}/guilds/{guild}/commands",
            put(guild_commands),
        )
        .with_state(shared)
}

/// Common REST gate: auth, outage, injected 429s. `Err` is the response to send.
#[allow(clippy::result_large_err)] // Err is the handler's answer, returned at once.
fn gate(
    shared: &Shared,
    headers: &HeaderMap,
    route: &str,
    bot_auth: bool,
) -> Result<HeaderMap, Response> {
    let mut inner = shared.lock();
    let record = |inner: &mut Inner, status: StatusCode| {
        inner.requests.push(RestRequest {
            at: Instant::now(),
            route: route.to_owned(),
            status: status.as_u16(),
        });
    };
    if inner.outage.active() {
        record(&mut inner, StatusCode::SERVICE_UNAVAILABLE);
        return Err((StatusCode::SERVICE_UNAVAILABLE, "upstream connect error").into_response());
    }
    if bot_auth {
        let expected = format!("Bot {}", shared.token);
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            record(&mut inner, StatusCode::UNAUTHORIZED);
            return Err((
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "401: Unauthorized", "code": 0})),
            )
                .into_response());
        }
    }
    let bucket = format!("{:016x}", route.len() * 7919);
    let fault = match inner.global_rate_limits.pop_front() {
        Some(f) => Some(f),
        None => inner
            .rate_limits
            .get_mut(route)
            .and_then(VecDeque::pop_front),
    };
    if let Some(fault) = fault {
        record(&mut inner, StatusCode::TOO_MANY_REQUESTS);
        drop(inner);
        shared.bump();
        let mut h = HeaderMap::new();
        let put = |h: &mut HeaderMap, k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        put(
            &mut h,
            "retry-after",
            format!("{}", fault.retry_after.ceil() as u64),
        );
        if fault.global {
            put(&mut h, "x-ratelimit-global", "true".into());
            put(&mut h, "x-ratelimit-scope", "global".into());
        } else {
            put(&mut h, "x-ratelimit-limit", "5".into());
            put(&mut h, "x-ratelimit-remaining", "0".into());
            put(
                &mut h,
                "x-ratelimit-reset-after",
                format!("{:.3}", fault.retry_after),
            );
            put(
                &mut h,
                "x-ratelimit-reset",
                format!("{:.3}", (now_millis() as f64) / 1000.0 + fault.retry_after),
            );
            put(&mut h, "x-ratelimit-bucket", bucket);
            put(&mut h, "x-ratelimit-scope", "user".into());
        }
        let body = json!({"message": "You are being rate limited.", "retry_after": fault.retry_after, "global": fault.global});
        return Err((StatusCode::TOO_MANY_REQUESTS, h, Json(body)).into_response());
    }
    record(&mut inner, StatusCode::OK);
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("x-ratelimit-limit", "5".to_owned()),
        ("x-ratelimit-remaining", "4".to_owned()),
        ("x-ratelimit-reset-after", "1.000".to_owned()),
        (
            "x-ratelimit-reset",
            format!("{:.3}", (now_millis() as f64) / 1000.0 + 1.0),
        ),
        ("x-ratelimit-bucket", bucket),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    Ok(h)
}

async fn create_message(
    State(shared): State<Arc<Shared>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let h = match gate(&shared, &headers, "POST /channels/{id}/messages", true) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let content = body["content"].as_str().unwrap_or_default().to_owned();
    if shared.lock().forbidden_channels.contains(&channel) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"code": 50013, "message": "Missing Permissions"})),
        )
            .into_response();
    }
    if content.trim().is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": 50006, "message": "Cannot send an empty message"})),
        )
            .into_response();
    }
    if content.chars().count() > 2000 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": 50035, "message": "Invalid Form Body", "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}})),
        )
            .into_response();
    }
    let nonce = body["nonce"]
        .as_str()
        .map(str::to_owned)
        .filter(|_| body["enforce_nonce"].as_bool() == Some(true));
    {
        let mut inner = shared.lock();
        if let Some((at, message)) = nonce.as_ref().and_then(|n| inner.nonces.get(n))
            && at.elapsed() < NONCE_MEMORY
        {
            return (StatusCode::OK, h, Json(message.clone())).into_response();
        }
        match inner.fail_after {
            Some(0) => {
                inner.fail_after = None;
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"code": 0, "message": "500: Internal Server Error"})),
                )
                    .into_response();
            }
            Some(n) => inner.fail_after = Some(n - 1),
            None => {}
        }
    }
    let reply_to = body["message_reference"]["message_id"]
        .as_str()
        .map(str::to_owned);
    let id = shared.next_snowflake();
    let mut message = message_json(
        &id,
        &channel,
        &content,
        user_json(BOT_USER_ID, "switchboard", true),
    );
    if let Some(r) = &reply_to {
        message["type"] = json!(19);
        message["message_reference"] = json!({"message_id": r, "channel_id": channel});
    }
    {
        let mut inner = shared.lock();
        inner.posts.push(PostedMessage {
            channel_id: channel,
            content,
            reply_to,
        });
        if let Some(nonce) = nonce {
            inner
                .nonces
                .insert(nonce, (Instant::now(), message.clone()));
        }
    }
    shared.bump();
    (StatusCode::OK, h, Json(message)).into_response()
}

async fn trigger_typing(
    State(shared): State<Arc<Shared>>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    let h = match gate(&shared, &headers, "POST /channels/{id}/typing", true) {
        Ok(h) => h,
        Err(r) => return r,
    };
    shared.lock().typing.push(channel);
    shared.bump();
    (StatusCode::NO_CONTENT, h).into_response()
}

async fn interaction_callback(
    State(shared): State<Arc<Shared>>,
    Path((_id, token)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    // Interaction routes are authenticated by the token in the path, not the bot token.
    let h = match gate(
        &shared,
        &headers,
        "POST /interactions/{id}/{token}/callback",
        false,
    ) {
        Ok(h) => h,
        Err(r) => return r,
    };
    shared.lock().callbacks.push((token, body));
    shared.bump();
    (StatusCode::NO_CONTENT, h).into_response()
}

async fn followup(
    State(shared): State<Arc<Shared>>,
    Path((app, token)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    webhook_message(&shared, &app, token, &headers, body, false)
}

async fn edit_original(
    State(shared): State<Arc<Shared>>,
    Path((app, token)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    webhook_message(&shared, &app, token, &headers, body, true)
}

async fn global_commands(
    State(shared): State<Arc<Shared>>,
    Path(app): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    register_commands(&shared, &app, None, &headers, body)
}

async fn guild_commands(
    State(shared): State<Arc<Shared>>,
    Path((app, guild)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    register_commands(&shared, &app, Some(guild), &headers, body)
}

/// Bulk overwrite of the application's (or a guild's) commands: answers them with ids.
fn register_commands(
    shared: &Shared,
    app: &str,
    guild: Option<String>,
    headers: &HeaderMap,
    body: Value,
) -> Response {
    let route = if guild.is_some() {
        "PUT /applications/{app}/guilds/{guild}/commands"
    } else {
        "PUT /applications/{app}/commands"
    };
    let h = match gate(shared, headers, route, true) {
        Ok(h) => h,
        Err(r) => return r,
    };
    if app != shared.application_id {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "Unknown Application", "code": 10002})),
        )
            .into_response();
    }
    let Some(commands) = body.as_array().cloned() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "Invalid Form Body", "code": 50035})),
        )
            .into_response();
    };
    let answer: Vec<Value> = commands
        .into_iter()
        .map(|mut c| {
            c["id"] = json!(shared.next_snowflake());
            c["application_id"] = json!(shared.application_id);
            c
        })
        .collect();
    shared.lock().commands.push((guild, body));
    shared.bump();
    (StatusCode::OK, h, Json(Value::Array(answer))).into_response()
}

fn webhook_message(
    shared: &Shared,
    app: &str,
    token: String,
    headers: &HeaderMap,
    body: Value,
    original: bool,
) -> Response {
    if app != shared.application_id {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "Unknown Webhook", "code": 10015})),
        )
            .into_response();
    }
    let route = if original {
        "PATCH /webhooks/{app}/{token}/messages/@original"
    } else {
        "POST /webhooks/{app}/{token}"
    };
    let h = match gate(shared, headers, route, false) {
        Ok(h) => h,
        Err(r) => return r,
    };
    let content = body["content"].as_str().unwrap_or_default().to_owned();
    if content.chars().count() > 2000 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": 50035, "message": "Invalid Form Body"})),
        )
            .into_response();
    }
    {
        let mut inner = shared.lock();
        if original {
            inner.edits.push((token, body));
        } else {
            inner.followups.push((token, body));
        }
    }
    shared.bump();
    let id = shared.next_snowflake();
    let message = message_json(
        &id,
        "0",
        &content,
        user_json(BOT_USER_ID, "switchboard", true),
    );
    (StatusCode::OK, h, Json(message)).into_response()
}
