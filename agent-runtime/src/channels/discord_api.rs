//! The Discord REST calls the runtime makes: the answer as a reply to the
//! user's message (split at Discord's 2,000-character limit on paragraph,
//! line, then word boundaries), the typing indicator, a slash command's answer
//! through the interaction's follow-up webhook, and the registration of the
//! slash commands. Rate limits are honoured here ([`DiscordRest`]): a route's
//! bucket exhausted (`X-RateLimit-Remaining: 0`) waits `X-RateLimit-Reset-After`;
//! a `429` waits its `retry_after`, on its route, or on every route when it is
//! the global limit (`global: true`, `X-RateLimit-Global`); a wait longer than
//! a few seconds goes back to the outbox, which retries the delivery then.
//! (twilight-http retried a global 429 at once, so the calls are made with
//! reqwest; twilight serves the Gateway.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Discord's limit on a message's content, in characters.
pub const MAX_CHARS: usize = 2000;
/// Discord's REST API.
const API_BASE: &str = "https://discord.com/api/v10";
/// Rate-limit waits up to this long are waited out in place; longer ones
/// reschedule the delivery.
const WAIT_IN_PLACE: Duration = Duration::from_secs(10);
/// Requests tried per call (429s waited out in between).
const TRIES: usize = 4;
/// Timeout of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a call did not go through.
#[derive(Debug, thiserror::Error)]
pub enum DiscordPostError {
    /// A channel or message id is not a snowflake.
    #[error("not a Discord id: {0:?}")]
    BadId(String),
    /// Rate limited for longer than is waited in place.
    #[error("Discord rate limit: retry in {0:?}")]
    RateLimited(Duration),
    /// Discord could not be reached.
    #[error("Discord unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// Discord answered with an error.
    #[error("Discord answered HTTP {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Discord's `message`, when it gave one.
        message: String,
    },
}

/// A short name for a bot token (lease names, client cache): never the token.
pub fn token_digest(token: &str) -> String {
    hex::encode(&Sha256::digest(token.as_bytes())[..8])
}

/// One REST call: its method, path (under `/api/v10`), rate-limit key (the
/// route with its major parameter) and whether the bot token and the global
/// limit apply (interaction webhooks are authenticated by their token and not
/// bound by the global limit).
struct Call {
    method: Method,
    path: String,
    route: String,
    bot: bool,
}

#[derive(Default)]
struct Limits {
    global_until: Option<Instant>,
    routes: HashMap<String, Instant>,
}

/// A bot's REST client with its rate-limit state (shared per token through
/// [`client`], so every delivery of a bot sees the same limits).
pub struct DiscordRest {
    http: reqwest::Client,
    base: String,
    authorization: String,
    limits: Mutex<Limits>,
}

impl std::fmt::Debug for DiscordRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordRest")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The `429` body.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RateLimitedBody {
    retry_after: Option<f64>,
    global: bool,
}

/// An unreachable Discord, without the URL (an interaction's path holds its token).
fn unreachable(err: reqwest::Error) -> DiscordPostError {
    DiscordPostError::Unreachable(err.without_url())
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() {
        s.clamp(0.0, 3600.0)
    } else {
        1.0
    })
}

impl DiscordRest {
    /// A client for `token`; `proxy`: `host:port` of a plain-HTTP stand-in for
    /// discord.com (the mock).
    pub fn new(http: reqwest::Client, token: &str, proxy: Option<&str>) -> Self {
        Self {
            http,
            base: proxy.map_or_else(|| API_BASE.to_owned(), |p| format!("http://{p}/api/v10")),
            authorization: format!("Bot {token}"),
            limits: Mutex::new(Limits::default()),
        }
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, Limits> {
        self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long `call` must wait before it may be sent.
    fn wait(&self, call: &Call) -> Duration {
        let now = Instant::now();
        let limits = self.limits();
        let route = limits.routes.get(&call.route).copied();
        let global = limits.global_until.filter(|_| call.bot);
        [route, global]
            .into_iter()
            .flatten()
            .map(|until| until.saturating_duration_since(now))
            .max()
            .unwrap_or_default()
    }

    /// Until when the last global limit met (a `429` with `global: true`)
    /// holds every bot call back, past or not; `None` before any.
    pub fn global_limit_until(&self) -> Option<Instant> {
        self.limits().global_until
    }

    /// Notes a response's rate-limit headers (and a 429's hold).
    fn note(&self, call: &Call, headers: &HeaderMap, limited: Option<(Duration, bool)>) {
        let now = Instant::now();
        let mut limits = self.limits();
        if let Some((wait, global)) = limited {
            if global {
                limits.global_until = Some(now + wait);
            } else {
                limits.routes.insert(call.route.clone(), now + wait);
            }
            return;
        }
        let exhausted = header(headers, "x-ratelimit-remaining") == Some("0");
        match header(headers, "x-ratelimit-reset-after").and_then(|s| s.parse::<f64>().ok()) {
            Some(after) if exhausted => {
                limits
                    .routes
                    .insert(call.route.clone(), now + seconds(after));
            }
            _ => {
                limits.routes.remove(&call.route);
            }
        }
    }

    /// Sends `call`, waiting out rate limits; the response's JSON body.
    async fn send(&self, call: Call, body: Option<&Value>) -> Result<Value, DiscordPostError> {
        for _ in 0..TRIES {
            let wait = self.wait(&call);
            if wait > WAIT_IN_PLACE {
                return Err(DiscordPostError::RateLimited(wait));
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let mut request = self
                .http
                .request(call.method.clone(), format!("{}{}", self.base, call.path))
                .timeout(REQUEST_TIMEOUT);
            if call.bot {
                request = request.header(AUTHORIZATION, &self.authorization);
            }
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_string());
            }
            let response = request.send().await.map_err(unreachable)?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.map_err(unreachable)?;
            if status.as_u16() == 429 {
                let limited: RateLimitedBody = serde_json::from_slice(&bytes).unwrap_or_default();
                let retry_after = limited
                    .retry_after
                    .or_else(|| header(&headers, RETRY_AFTER.as_str())?.parse().ok())
                    .unwrap_or(1.0);
                let global = limited.global
                    || header(&headers, "x-ratelimit-global") == Some("true")
                    || header(&headers, "x-ratelimit-scope") == Some("global");
                tracing::info!(route = %call.method, global, retry_after, "Discord rate limit: waiting");
                self.note(&call, &headers, Some((seconds(retry_after), global)));
                continue;
            }
            self.note(&call, &headers, None);
            if !status.is_success() {
                let message = serde_json::from_slice::<Value>(&bytes)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                return Err(DiscordPostError::Status {
                    status: status.as_u16(),
                    message,
                });
            }
            return Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
        }
        Err(DiscordPostError::RateLimited(self.wait(&call)))
    }
}

type Clients = Mutex<HashMap<(String, Option<String>), Arc<DiscordRest>>>;

/// The REST client of a bot (shared, so its rate-limit state persists).
pub fn client(http: &reqwest::Client, token: &str, proxy: Option<&str>) -> Arc<DiscordRest> {
    static CLIENTS: OnceLock<Clients> = OnceLock::new();
    let key = (token_digest(token), proxy.map(str::to_owned));
    let mut clients = CLIENTS
        .get_or_init(Clients::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    clients
        .entry(key)
        .or_insert_with(|| Arc::new(DiscordRest::new(http.clone(), token, proxy)))
        .clone()
}

fn snowflake(id: &str) -> Result<&str, DiscordPostError> {
    let valid = !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit());
    valid
        .then_some(id)
        .ok_or_else(|| DiscordPostError::BadId(id.to_owned()))
}

/// The `nonce` of piece `piece` of delivery `delivery` (at most 25
/// characters, Discord's limit): the same on every attempt, so that with
/// `enforce_nonce` Discord returns the message a previous attempt created
/// instead of posting it again.
fn nonce(delivery: &str, piece: usize) -> String {
    let digest = Sha256::digest(format!("{delivery}:{piece}").as_bytes());
    hex::encode(&digest[..13])[..25].to_owned()
}

/// Posts piece `i` of an answer in `channel` (at most [`MAX_CHARS`] characters:
/// see [`super::text::split`]), the first piece replying to `reply_to`. Each piece
/// carries a nonce derived from `delivery` with `enforce_nonce`, so a piece whose
/// post went out but whose answer was lost is not posted twice when it is tried
/// again (Discord remembers nonces for a few minutes).
pub async fn post_piece(
    client: &DiscordRest,
    delivery: &str,
    channel: &str,
    reply_to: Option<&str>,
    i: usize,
    piece: &str,
) -> Result<(), DiscordPostError> {
    let channel = snowflake(channel)?;
    let reply_to = reply_to.map(snowflake).transpose()?;
    let mut body = json!({
        "content": piece,
        "allowed_mentions": {"parse": []},
        "nonce": nonce(delivery, i),
        "enforce_nonce": true,
    });
    if let Some(original) = reply_to.filter(|_| i == 0) {
        body["message_reference"] = json!({"message_id": original, "fail_if_not_exists": false});
    }
    let call = Call {
        method: Method::POST,
        path: format!("/channels/{channel}/messages"),
        route: format!("POST /channels/{channel}/messages"),
        bot: true,
    };
    client.send(call, Some(&body)).await?;
    Ok(())
}

/// Shows "typing…" in `channel` (best effort: failures are only logged).
pub async fn typing(client: &DiscordRest, channel: &str) {
    let Ok(channel) = snowflake(channel) else {
        return;
    };
    let call = Call {
        method: Method::POST,
        path: format!("/channels/{channel}/typing"),
        route: format!("POST /channels/{channel}/typing"),
        bot: true,
    };
    if let Err(err) = client.send(call, None).await {
        tracing::debug!(error = %err, "Discord typing indicator failed");
    }
}

/// Posts piece `i` of a deferred slash command's answer: the first piece edits the
/// deferred response (`@original`), further pieces are follow-up messages.
pub async fn answer_interaction_piece(
    client: &DiscordRest,
    application_id: &str,
    interaction_token: &str,
    i: usize,
    piece: &str,
) -> Result<(), DiscordPostError> {
    let application = snowflake(application_id)?;
    // The token is a credential: the rate-limit key carries a digest of it.
    let route = format!("webhook {application}/{}", token_digest(interaction_token));
    let body = json!({"content": piece, "allowed_mentions": {"parse": []}});
    let call = if i == 0 {
        Call {
            method: Method::PATCH,
            path: format!("/webhooks/{application}/{interaction_token}/messages/@original"),
            route: format!("PATCH {route}"),
            bot: false,
        }
    } else {
        Call {
            method: Method::POST,
            path: format!("/webhooks/{application}/{interaction_token}"),
            route: format!("POST {route}"),
            bot: false,
        }
    };
    client.send(call, Some(&body)).await?;
    Ok(())
}

/// A slash command with one required string option, as registered.
pub fn command_json(name: &str) -> Value {
    json!({
        "name": name,
        "type": 1,
        "description": "Ask the agent a question",
        "options": [{
            "type": 3,
            "name": "question",
            "description": "Your question",
            "required": true,
        }],
    })
}

/// Registers `commands` (names) with bulk overwrite: the application's global
/// commands (`guild` `None`) or one guild's.
pub async fn register_commands(
    client: &DiscordRest,
    application_id: &str,
    guild: Option<&str>,
    commands: &[String],
) -> Result<(), DiscordPostError> {
    let application = snowflake(application_id)?;
    let path = match guild {
        Some(guild) => format!(
            "/applications/{application}/guilds/{}/commands",
            snowflake(guild)?
        ),
        None => format!("/applications/{application}/commands"),
    };
    let body = Value::Array(commands.iter().map(|c| command_json(c)).collect());
    let call = Call {
        method: Method::PUT,
        route: format!("PUT {path}"),
        path,
        bot: true,
    };
    client.send(call, Some(&body)).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_global_429_holds_every_bot_route_but_not_interaction_webhooks() {
        let rest = DiscordRest::new(reqwest::Client::new(), "t", None);
        let call = |route: &str, bot: bool| Call {
            method: Method::POST,
            path: String::new(),
            route: route.to_owned(),
            bot,
        };
        let (a, b, hook) = (call("a", true), call("b", true), call("w", false));
        rest.note(&a, &HeaderMap::new(), Some((Duration::from_secs(5), false)));
        assert!(rest.wait(&a) > Duration::from_secs(4));
        assert_eq!(rest.wait(&b), Duration::ZERO, "a route's limit is its own");
        rest.note(&b, &HeaderMap::new(), Some((Duration::from_secs(8), true)));
        assert!(
            rest.wait(&a) > Duration::from_secs(7),
            "the global limit holds every route"
        );
        assert_eq!(rest.wait(&hook), Duration::ZERO);
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", "0".parse().expect("value"));
        headers.insert("x-ratelimit-reset-after", "2.5".parse().expect("value"));
        rest.note(&hook, &headers, None);
        assert!(
            rest.wait(&hook) > Duration::from_secs(2),
            "an exhausted bucket waits"
        );
        rest.note(&hook, &HeaderMap::new(), None);
        assert_eq!(rest.wait(&hook), Duration::ZERO);
        assert!(snowflake("12a").is_err() && snowflake("123").is_ok());
    }
}
