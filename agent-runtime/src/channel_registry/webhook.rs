//! What webhook intake and the background delivery share: the answer's wire
//! format ([`WebhookAnswer`]) and the [`WebhookDelivery`] handle (signing keys,
//! the wake-up, the callback client and its backoff).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use std::sync::RwLock;

use tokio::sync::Notify;
use utoipa::ToSchema;

use super::signing::SigningKeys;

/// Slack's Web API.
pub const DEFAULT_SLACK_API_URL: &str = "https://slack.com/api/";

/// The JSON POSTed to the callback URL, signed like inbound messages.
#[derive(Serialize, Deserialize, ToSchema, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAnswer {
    /// Delivery id: the same on every retry; deduplicate on it.
    pub delivery_id: String,
    /// Channel name.
    pub channel: String,
    /// The sender's conversation id.
    pub conversation_id: String,
    /// The sender's user id.
    pub user: String,
    /// Id of the stored answer.
    pub message_id: String,
    /// Id of the user message it answers.
    pub in_reply_to: String,
    /// The answer.
    pub text: String,
}

/// Retry delays: `base * 2^attempt`, capped, with full jitter over the upper half.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// [`WebhookDelivery::gateway_backoff`]'s default: 30 s, doubling up to 10
/// minutes (at most ~150 identifies a day while the Gateway stays closed).
pub const GATEWAY_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(30),
    max: Duration::from_secs(600),
};

/// [`WebhookDelivery::lease`]'s default: how long a claimed delivery is another
/// worker's to leave alone, renewed while its attempt runs.
pub const DELIVERY_LEASE: Duration = Duration::from_secs(120);

impl Backoff {
    /// The delay before attempt `attempt + 1`, given a random `jitter` in [0, 1).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(20)))
            .min(self.max);
        exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// The outbox machinery shared by intake (webhook, Slack) and the background
/// delivery.
pub struct WebhookDelivery {
    /// Signing keys of the webhook channels, and the chat apps' tokens and secrets.
    pub keys: SigningKeys,
    wake: Notify,
    http: reqwest::Client,
    backoff: Backoff,
    gateway_backoff: RwLock<Backoff>,
    lease: RwLock<Duration>,
    slack_api_url: RwLock<String>,
    discord: RwLock<DiscordEndpoints>,
}

/// Where Discord is reached when not at discord.com (a proxy; the mock in tests).
#[derive(Clone, Debug, Default)]
pub struct DiscordEndpoints {
    /// The Gateway's websocket URL (`ws://host:port`).
    pub gateway_url: Option<String>,
    /// `host:port` of a plain-HTTP REST stand-in.
    pub api_proxy: Option<String>,
}

impl std::fmt::Debug for WebhookDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookDelivery")
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl WebhookDelivery {
    /// With keys from `keys` and the default backoff.
    pub fn new(keys: SigningKeys, http: reqwest::Client) -> Self {
        Self::with_backoff(keys, http, Backoff::default())
    }

    /// With a given backoff.
    pub fn with_backoff(keys: SigningKeys, http: reqwest::Client, backoff: Backoff) -> Self {
        Self {
            keys,
            wake: Notify::new(),
            http,
            backoff,
            gateway_backoff: RwLock::new(GATEWAY_BACKOFF),
            lease: RwLock::new(DELIVERY_LEASE),
            slack_api_url: RwLock::new(DEFAULT_SLACK_API_URL.to_owned()),
            discord: RwLock::new(DiscordEndpoints::default()),
        }
    }

    /// Points Discord elsewhere.
    pub fn set_discord_endpoints(&self, endpoints: DiscordEndpoints) {
        *self.discord.write().unwrap_or_else(|p| p.into_inner()) = endpoints;
    }

    /// The Gateway URL to use instead of Discord's.
    pub fn discord_gateway_url(&self) -> Option<String> {
        self.discord
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .gateway_url
            .clone()
    }

    /// The REST stand-in to use instead of Discord's.
    pub fn discord_api_proxy(&self) -> Option<String> {
        self.discord
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .api_proxy
            .clone()
    }

    /// Slack's Web API base URL.
    pub fn slack_api_url(&self) -> String {
        self.slack_api_url
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Points the Slack Web API elsewhere (`SWITCHBOARD_SLACK_API_URL`: a proxy, tests).
    pub fn set_slack_api_url(&self, url: &str) {
        *self
            .slack_api_url
            .write()
            .unwrap_or_else(|p| p.into_inner()) = url.to_owned();
    }

    /// Tells the dispatcher there is new work.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`WebhookDelivery::wake`] was called.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The client that POSTs answers to callbacks.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The retry delays.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The waits before connecting a chat app's Gateway again after it was
    /// closed for good (Discord allows a bot 1,000 identifies a day).
    pub fn gateway_backoff(&self) -> Backoff {
        *self
            .gateway_backoff
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// How long a claimed delivery is left alone by other workers; the worker
    /// that claimed it renews it every third of that while its attempt runs.
    pub fn lease(&self) -> Duration {
        *self.lease.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets [`Self::lease`] (tests shorten it).
    pub fn set_lease(&self, lease: Duration) {
        *self.lease.write().unwrap_or_else(|p| p.into_inner()) = lease;
    }

    /// Sets [`Self::gateway_backoff`] (tests shorten it).
    pub fn set_gateway_backoff(&self, backoff: Backoff) {
        *self
            .gateway_backoff
            .write()
            .unwrap_or_else(|p| p.into_inner()) = backoff;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.delay(30, 1.0), Duration::from_secs(2));
        assert!(b.delay(30, 0.3) >= Duration::from_secs(1));
    }
}
