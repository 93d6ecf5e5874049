//! Mock Slack: the Events API as a sender (signed v0 requests, `url_verification`,
//! retries of the same event with `X-Slack-Retry-Num` / `X-Slack-Retry-Reason`), the
//! Web API (`chat.postMessage`, `apps.connections.open`, `auth.test`) and Socket Mode
//! (a websocket that sends `hello` and `events_api` envelopes and records the
//! `envelope_id` acknowledgements).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{MockError, Outage};

/// The app's bot user id in events.
pub const BOT_USER_ID: &str = "U0BOT00001";

/// The v0 request signature: `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}` keyed
/// with the signing secret.
pub fn sign_v0(signing_secret: &str, timestamp: i64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(signing_secret.as_bytes()) else {
        // HMAC accepts keys of any length.
        return String::new();
    };
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or_default())
        .unwrap_or_default()
}

/// An `event_callback` wrapping an `app_mention` (in a channel; `thread_ts` set when the
/// mention is a reply in a thread), as in the Events API docs.
pub fn app_mention(
    team: &str,
    channel: &str,
    user: &str,
    text: &str,
    ts: &str,
    thread_ts: Option<&str>,
    event_id: &str,
) -> Value {
    let mut event = json!({
        "type": "app_mention",
        "user": user,
        "text": format!("<@{BOT_USER_ID}> {text}"),
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
    });
    if let Some(t) = thread_ts {
        event["thread_ts"] = json!(t);
    }
    event_callback(team, event, event_id)
}

/// An `event_callback` wrapping a direct `message` (`channel_type: im`).
pub fn direct_message(
    team: &str,
    channel: &str,
    user: &str,
    text: &str,
    ts: &str,
    event_id: &str,
) -> Value {
    let event = json!({
        "type": "message",
        "channel_type": "im",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
    });
    event_callback(team, event, event_id)
}

fn event_callback(team: &str, event: Value, event_id: &str) -> Value {
    json!({
        "token": "deprecated-verification-token",
        "team_id": team,
        "api_app_id": "A0APP00001",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": unix_now(),
        "authorizations": [{"team_id": team, "user_id": BOT_USER_ID, "is_bot": true}],
    })
}

/// What the sender got back for one delivery attempt.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-Slack-Retry-Num` of the attempt (0: the first delivery, header absent).
    pub retry_num: u32,
    /// HTTP status, or `None` when the request failed or timed out (Slack's 3 s).
    pub status: Option<u16>,
    /// Response body.
    pub body: String,
}

/// Sends Events API requests to an app's Request URL, as Slack does.
#[derive(Clone)]
pub struct EventsSender {
    url: String,
    signing_secret: String,
    client: reqwest::Client,
    /// Slack waits 3 seconds for the acknowledgement.
    pub ack_timeout: Duration,
}

impl EventsSender {
    /// A sender for `url` signing with `signing_secret`.
    pub fn new(url: &str, signing_secret: &str) -> Self {
        Self {
            url: url.to_owned(),
            signing_secret: signing_secret.to_owned(),
            client: reqwest::Client::new(),
            ack_timeout: Duration::from_secs(3),
        }
    }

    /// One signed POST with the given timestamp and retry headers.
    pub async fn post_raw(
        &self,
        body: &Value,
        timestamp: i64,
        signature: Option<String>,
        retry: Option<(u32, &str)>,
    ) -> Delivery {
        let body = body.to_string();
        let signature =
            signature.unwrap_or_else(|| sign_v0(&self.signing_secret, timestamp, &body));
        let mut request = self
            .client
            .post(&self.url)
            .timeout(self.ack_timeout)
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", signature);
        if let Some((num, reason)) = retry {
            request = request
                .header("x-slack-retry-num", num.to_string())
                .header("x-slack-retry-reason", reason);
        }
        let retry_num = retry.map(|(n, _)| n).unwrap_or(0);
        match request.body(body).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                Delivery {
                    retry_num,
                    status: Some(status),
                    body: resp.text().await.unwrap_or_default(),
                }
            }
            Err(_) => Delivery {
                retry_num,
                status: None,
                body: String::new(),
            },
        }
    }

    /// Delivers an event signed now; no retries.
    pub async fn send(&self, body: &Value) -> Delivery {
        self.post_raw(body, unix_now(), None, None).await
    }

    /// The `url_verification` handshake; returns the delivery (its body should echo
    /// the challenge).
    pub async fn url_verification(&self, challenge: &str) -> Delivery {
        let body = json!({"token": "deprecated-verification-token", "challenge": challenge, "type": "url_verification"});
        self.send(&body).await
    }

    /// Delivers the event, then the same event again `retries` times with
    /// `X-Slack-Retry-Num` 1.. and `reason` (`http_timeout`, `http_error`, ...), as Slack
    /// does when it did not see a timely 2xx (here regardless of the answer: a fault).
    pub async fn send_with_retries(
        &self,
        body: &Value,
        retries: u32,
        reason: &str,
    ) -> Vec<Delivery> {
        let mut out = vec![self.send(body).await];
        for n in 1..=retries {
            out.push(
                self.post_raw(body, unix_now(), None, Some((n, reason)))
                    .await,
            );
        }
        out
    }
}

/// A `chat.postMessage` the app made.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackPost {
    /// Conversation id.
    pub channel: String,
    /// Text.
    pub text: String,
    /// Thread it was posted in.
    pub thread_ts: Option<String>,
}

/// What the test makes a Socket Mode connection do.
enum Control {
    /// Send this envelope.
    Send(Value),
    /// Send `disconnect` with this reason, then close.
    Disconnect(String),
    /// Drop the TCP connection without a close frame.
    Drop,
}

#[derive(Default)]
struct Inner {
    posts: Vec<SlackPost>,
    rate_limits: Vec<u64>,
    outage: Outage,
    acks: Vec<String>,
    /// Open Socket Mode connections, oldest first.
    sockets: Vec<mpsc::UnboundedSender<Control>>,
    /// Envelopes sent and not acknowledged yet, by envelope id.
    unacked: Vec<(String, Value)>,
    /// Round robin over the open connections.
    next_socket: usize,
    socket_connections: u32,
    next_ts: u64,
    post_attempts: u32,
    envelopes_sent: u64,
    /// The Web API alone is down (Socket Mode connections stay).
    web_outage: Outage,
    /// Acknowledgements still to be lost in transit.
    lose_acks: usize,
    /// Channels `chat.postMessage` refuses, with the error code it answers.
    refused_channels: HashMap<String, String>,
    /// Posts to let through before one fails with 500 (see
    /// [`SlackMock::fail_post_after`]).
    fail_after: Option<usize>,
}

impl Inner {
    fn web_down(&self) -> bool {
        self.outage.active() || self.web_outage.active()
    }
}

struct Shared {
    bot_token: String,
    app_token: String,
    socket_url: String,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

/// A running mock Slack Web API and Socket Mode endpoint.
#[derive(Clone)]
pub struct SlackMock {
    shared: Arc<Shared>,
    web_addr: SocketAddr,
}

impl SlackMock {
    /// Starts the Web API (`/api/...`) and Socket Mode listeners on loopback.
    pub async fn start(bot_token: &str, app_token: &str) -> Result<Self, MockError> {
        let web = TcpListener::bind("127.0.0.1:0").await?;
        let socket = TcpListener::bind("127.0.0.1:0").await?;
        let web_addr = web.local_addr()?;
        let shared = Arc::new(Shared {
            bot_token: bot_token.to_owned(),
            app_token: app_token.to_owned(),
            socket_url: format!("ws://{}/link/", socket.local_addr()?),
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
        });
        let app = Router::new()
            .route("/api/chat.postMessage", post(post_message))
            .route("/api/apps.connections.open", post(connections_open))
            .route("/api/auth.test", post(auth_test))
            .with_state(shared.clone());
        tokio::spawn(async move {
            if let Err(err) = axum::serve(web, app).await {
                tracing::warn!(%err, "mock Slack Web API stopped");
            }
        });
        tokio::spawn(accept_socket(socket, shared.clone()));
        Ok(Self { shared, web_addr })
    }

    /// `http://127.0.0.1:PORT/api/`: the Web API base URL.
    pub fn api_url(&self) -> String {
        format!("http://{}/api/", self.web_addr)
    }

    /// The next `n` `chat.postMessage` calls answer 429 with `Retry-After: seconds`.
    pub fn rate_limit_posts(&self, n: usize, retry_after_seconds: u64) {
        self.shared
            .lock()
            .rate_limits
            .extend(std::iter::repeat_n(retry_after_seconds, n));
    }

    /// Slack is down for `duration`: the Web API answers 503, `apps.connections.open`
    /// too, and the Socket Mode connections drop.
    pub fn outage(&self, duration: Duration) {
        let mut inner = self.shared.lock();
        inner.outage.start(duration);
        for socket in inner.sockets.drain(..) {
            let _ = socket.send(Control::Drop);
        }
    }

    /// The Web API (`chat.postMessage`, `auth.test`, `apps.connections.open`) answers
    /// 503 for `duration`; open Socket Mode connections keep delivering events.
    pub fn web_api_outage(&self, duration: Duration) {
        self.shared.lock().web_outage.start(duration);
    }

    /// After `posted` more messages are posted, the next `chat.postMessage` answers
    /// 500 (Slack's side failing) once: an answer in several pieces fails part way.
    pub fn fail_post_after(&self, posted: usize) {
        self.shared.lock().fail_after = Some(posted);
    }

    /// `chat.postMessage` to `channel` answers `ok: false` with `error` (e.g.
    /// `not_in_channel`, `is_archived`, `channel_not_found`), as Slack does for
    /// a channel the bot cannot post in.
    pub fn refuse_channel(&self, channel: &str, error: &str) {
        self.shared
            .lock()
            .refused_channels
            .insert(channel.to_owned(), error.to_owned());
    }

    /// The next `n` Socket Mode acknowledgements are lost (not recorded), so their
    /// envelopes stay unacknowledged for [`Self::redeliver_unacked`].
    pub fn lose_acks(&self, n: usize) {
        self.shared.lock().lose_acks = n;
    }

    /// Drops every Socket Mode connection mid-stream (no close frame).
    pub fn drop_sockets(&self) {
        for socket in self.shared.lock().sockets.drain(..) {
            let _ = socket.send(Control::Drop);
        }
    }

    /// Sends `disconnect` with `reason` (`refresh_requested`, `warning`, ...) on every
    /// Socket Mode connection, then closes them, as Slack does before it rotates them.
    pub fn disconnect_sockets(&self, reason: &str) {
        for socket in self.shared.lock().sockets.drain(..) {
            let _ = socket.send(Control::Disconnect(reason.to_owned()));
        }
    }

    /// Open Socket Mode connections.
    pub fn open_sockets(&self) -> usize {
        self.shared
            .lock()
            .sockets
            .iter()
            .filter(|s| !s.is_closed())
            .count()
    }

    /// Envelope ids sent and not acknowledged.
    pub fn unacked(&self) -> Vec<String> {
        self.shared
            .lock()
            .unacked
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Delivers every unacknowledged envelope again (with `retry_attempt` raised),
    /// each on the next open connection, as Slack does when no acknowledgement came;
    /// returns how many were sent.
    pub fn redeliver_unacked(&self) -> Result<usize, MockError> {
        let pending: Vec<Value> = {
            let mut inner = self.shared.lock();
            inner.unacked.drain(..).map(|(_, e)| e).collect()
        };
        let count = pending.len();
        for mut envelope in pending {
            let attempt = envelope["retry_attempt"].as_u64().unwrap_or(0) + 1;
            envelope["retry_attempt"] = json!(attempt);
            envelope["retry_reason"] = json!("timeout");
            self.push_envelope(envelope)?;
        }
        Ok(count)
    }

    fn push_envelope(&self, envelope: Value) -> Result<(), MockError> {
        let mut inner = self.shared.lock();
        inner.sockets.retain(|s| !s.is_closed());
        if inner.sockets.is_empty() {
            return Err(MockError::NotConnected);
        }
        let at = inner.next_socket % inner.sockets.len();
        inner.next_socket = inner.next_socket.wrapping_add(1);
        let id = envelope["envelope_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        inner.sockets[at]
            .send(Control::Send(envelope.clone()))
            .map_err(|_| MockError::NotConnected)?;
        inner.unacked.retain(|(i, _)| *i != id);
        inner.unacked.push((id, envelope));
        Ok(())
    }

    /// Every accepted `chat.postMessage`, in order.
    pub fn posts(&self) -> Vec<SlackPost> {
        self.shared.lock().posts.clone()
    }

    /// `chat.postMessage` calls including refused ones.
    pub fn post_attempts(&self) -> u32 {
        self.shared.lock().post_attempts
    }

    /// Envelope ids acknowledged over Socket Mode.
    pub fn acks(&self) -> Vec<String> {
        self.shared.lock().acks.clone()
    }

    /// Socket Mode connections accepted.
    pub fn socket_connections(&self) -> u32 {
        self.shared.lock().socket_connections
    }

    /// Sends an `events_api` envelope with this `event_callback` payload over Socket
    /// Mode (on the open connections in turn); returns the envelope id the app must
    /// acknowledge.
    pub fn socket_event(&self, payload: Value, retry_attempt: u32) -> Result<String, MockError> {
        let serial = {
            let mut inner = self.shared.lock();
            inner.envelopes_sent += 1;
            inner.envelopes_sent
        };
        let envelope_id = format!(
            "{:08x}-{serial:04}-mock-{}",
            unix_now(),
            payload["event_id"].as_str().unwrap_or("event")
        );
        let envelope = json!({
            "envelope_id": envelope_id,
            "type": "events_api",
            "accepts_response_payload": false,
            "retry_attempt": retry_attempt,
            "retry_reason": if retry_attempt > 0 { "timeout" } else { "" },
            "payload": payload,
        });
        self.push_envelope(envelope)?;
        Ok(envelope_id)
    }

    /// Waits until `check` holds (checked after every change) or the timeout passes.
    pub async fn wait_until(&self, timeout: Duration, check: impl Fn(&SlackMock) -> bool) -> bool {
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

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// Web API arguments arrive as JSON or as a form; both are read into a JSON object.
fn arguments(headers: &HeaderMap, body: &str) -> Value {
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return serde_json::from_str(body).unwrap_or(Value::Null);
    }
    let mut map = serde_json::Map::new();
    for pair in body.split('&') {
        if let Some((k, v)) = pair.split_once('=') {
            let decode = |s: &str| {
                let s = s.replace('+', " ");
                let bytes = s.as_bytes();
                let mut out = Vec::with_capacity(bytes.len());
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'%'
                        && i + 2 < bytes.len()
                        && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
                    {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    out.push(bytes[i]);
                    i += 1;
                }
                String::from_utf8_lossy(&out).into_owned()
            };
            map.insert(decode(k), Value::String(decode(v)));
        }
    }
    Value::Object(map)
}

/// The longest message text `chat.postMessage` takes, in characters.
const MAX_TEXT_CHARS: usize = 40_000;

async fn post_message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut inner = shared.lock();
    inner.post_attempts += 1;
    if inner.web_down() {
        drop(inner);
        shared.bump();
        return (StatusCode::SERVICE_UNAVAILABLE, "service unavailable").into_response();
    }
    if bearer(&headers) != Some(shared.bot_token.as_str()) {
        drop(inner);
        shared.bump();
        return Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    if !inner.rate_limits.is_empty() {
        let secs = inner.rate_limits.remove(0);
        drop(inner);
        shared.bump();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response();
    }
    let args = arguments(&headers, &body);
    let (Some(channel), Some(text)) = (args["channel"].as_str(), args["text"].as_str()) else {
        drop(inner);
        return Json(json!({"ok": false, "error": "no_text"})).into_response();
    };
    let refused = inner.refused_channels.get(channel).cloned().or_else(|| {
        // Slack's limit on a message's text (chat.postMessage: `msg_too_long`).
        (text.chars().count() > MAX_TEXT_CHARS).then(|| "msg_too_long".to_owned())
    });
    if let Some(error) = refused {
        drop(inner);
        shared.bump();
        return Json(json!({"ok": false, "error": error})).into_response();
    }
    match inner.fail_after {
        Some(0) => {
            inner.fail_after = None;
            drop(inner);
            shared.bump();
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
        Some(n) => inner.fail_after = Some(n - 1),
        None => {}
    }
    inner.next_ts += 1;
    let ts = format!("{}.{:06}", unix_now(), inner.next_ts);
    let thread_ts = args["thread_ts"].as_str().map(str::to_owned);
    inner.posts.push(SlackPost {
        channel: channel.to_owned(),
        text: text.to_owned(),
        thread_ts: thread_ts.clone(),
    });
    drop(inner);
    shared.bump();
    let mut message = json!({"type": "message", "subtype": "bot_message", "text": text, "ts": ts, "user": BOT_USER_ID, "bot_id": "B0BOT00001"});
    if let Some(t) = thread_ts {
        message["thread_ts"] = json!(t);
    }
    Json(json!({"ok": true, "channel": channel, "ts": ts, "message": message})).into_response()
}

async fn auth_test(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if shared.lock().web_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "service unavailable").into_response();
    }
    if bearer(&headers) != Some(shared.bot_token.as_str()) {
        return Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    Json(json!({"ok": true, "url": "https://mock.slack.com/", "team": "Mock", "user": "switchboard", "team_id": "T0MOCK0001", "user_id": BOT_USER_ID, "bot_id": "B0BOT00001"})).into_response()
}

async fn connections_open(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if shared.lock().web_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "service unavailable").into_response();
    }
    if bearer(&headers) != Some(shared.app_token.as_str()) {
        return Json(json!({"ok": false, "error": "invalid_auth"})).into_response();
    }
    Json(json!({"ok": true, "url": format!("{}?ticket=mock-ticket", shared.socket_url)}))
        .into_response()
}

async fn accept_socket(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if shared.lock().outage.active() {
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let (mut sink, mut source) = ws.split();
            let (tx, mut rx) = mpsc::unbounded_channel::<Control>();
            {
                let mut inner = shared.lock();
                inner.sockets.push(tx.clone());
                inner.socket_connections += 1;
            }
            shared.bump();
            let hello = json!({"type": "hello", "num_connections": 1, "debug_info": {"host": "mock", "approximate_connection_time": 18060}, "connection_info": {"app_id": "A0APP00001"}});
            if sink.send(WsMessage::text(hello.to_string())).await.is_err() {
                return;
            }
            loop {
                tokio::select! {
                    frame = source.next() => {
                        let text = match frame {
                            Some(Ok(WsMessage::Text(text))) => text,
                            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                            _ => break,
                        };
                        if let Ok(v) = serde_json::from_str::<Value>(&text)
                            && let Some(id) = v["envelope_id"].as_str()
                        {
                            let mut inner = shared.lock();
                            if inner.lose_acks > 0 {
                                inner.lose_acks -= 1;
                                continue;
                            }
                            inner.acks.push(id.to_owned());
                            inner.unacked.retain(|(i, _)| i != id);
                            drop(inner);
                            shared.bump();
                        }
                    }
                    control = rx.recv() => {
                        match control {
                            Some(Control::Send(envelope)) => {
                                if sink.send(WsMessage::text(envelope.to_string())).await.is_err() { break; }
                            }
                            Some(Control::Disconnect(reason)) => {
                                let message = json!({"type": "disconnect", "reason": reason, "debug_info": {"host": "mock"}});
                                let _ = sink.send(WsMessage::text(message.to_string())).await;
                                let _ = sink.close().await;
                                break;
                            }
                            Some(Control::Drop) | None => break,
                        }
                    }
                }
            }
            // Dropping both halves closes the TCP connection (no close frame on Drop).
            let mut inner = shared.lock();
            inner.sockets.retain(|t| !t.same_channel(&tx));
            drop(inner);
            shared.bump();
        });
    }
}
