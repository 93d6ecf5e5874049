//! Admission control: request rate limits per (channel, user) and per channel,
//! the tenant's token budget, and bounded concurrency towards the upstream with
//! a bounded queue. Limits are looked up per request, so per-channel limits can
//! be fed in at run time ([`RateLimiter::set_channel_limits`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crds::runtime_config::{LimitsConfig, RateLimitConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// Request limits of one channel (from its ChatChannel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelLimits {
    /// Requests per minute for one user on this channel (overrides the agent's).
    pub requests_per_minute_per_user: Option<u32>,
    /// Requests per minute for the whole channel.
    pub requests_per_minute: Option<u32>,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitScope {
    /// One user on one channel.
    User,
    /// One channel.
    Channel,
    /// The tenant's tokens per minute.
    Tokens,
}

impl LimitScope {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Channel => "channel",
            Self::Tokens => "tokens",
        }
    }
}

/// A request over a limit, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limit ({scope:?}) exceeded; retry after {retry_after:?}")]
pub struct RateLimited {
    /// Which limit.
    pub scope: LimitScope,
    /// When a request would be admitted.
    pub retry_after: Duration,
}

/// Every upstream slot is busy and the queue is full, or the wait ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the agent is at capacity: every upstream slot is busy and the queue is full")]
pub struct Overloaded;

/// GCRA state per key: the theoretical arrival time of the next request.
#[derive(Default)]
struct Gcra {
    tat: HashMap<String, Instant>,
}

impl Gcra {
    /// Admits one request for `key` at `per_minute` (bursting up to a minute's
    /// worth), or says how long to wait.
    fn check(&mut self, key: &str, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let per_minute = per_minute.max(1);
        let interval = Duration::from_secs(60) / per_minute;
        let tolerance = interval * (per_minute - 1);
        let tat = self.tat.get(key).copied().unwrap_or(now).max(now);
        let allow_at = tat.checked_sub(tolerance).unwrap_or(now);
        if allow_at > now {
            return Err(allow_at - now);
        }
        self.tat.insert(key.to_owned(), tat + interval);
        if self.tat.len() > 10_000 {
            self.tat.retain(|_, t| *t > now);
        }
        Ok(())
    }
}

/// A token bucket that may go into debt: the tenant's tokens per minute.
struct TokenBudget {
    per_minute: u32,
    level: f64,
    updated: Instant,
}

impl TokenBudget {
    fn refill(&mut self, now: Instant) {
        let rate = f64::from(self.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * rate).min(f64::from(self.per_minute));
        self.updated = now;
    }
}

/// Request and token rate limits.
pub struct RateLimiter {
    config: Option<RateLimitConfig>,
    channels: RwLock<HashMap<String, ChannelLimits>>,
    per_user: Mutex<Gcra>,
    per_channel: Mutex<Gcra>,
    tokens: Option<Mutex<TokenBudget>>,
}

impl RateLimiter {
    /// Limits from the agent's `rateLimit`; no channel limits yet.
    pub fn new(config: Option<RateLimitConfig>) -> Self {
        let tokens = config
            .as_ref()
            .and_then(|c| c.tokens_per_minute)
            .filter(|t| *t > 0)
            .map(|per_minute| {
                Mutex::new(TokenBudget {
                    per_minute,
                    level: f64::from(per_minute),
                    updated: Instant::now(),
                })
            });
        Self {
            config,
            channels: RwLock::new(HashMap::new()),
            per_user: Mutex::new(Gcra::default()),
            per_channel: Mutex::new(Gcra::default()),
            tokens,
        }
    }

    /// Sets (or with `None` clears) one channel's limits.
    pub fn set_channel_limits(&self, channel: &str, limits: Option<ChannelLimits>) {
        let mut map = self.channels.write().unwrap_or_else(|p| p.into_inner());
        match limits {
            Some(l) => map.insert(channel.to_owned(), l),
            None => map.remove(channel),
        };
    }

    fn channel_limits(&self, channel: &str) -> ChannelLimits {
        self.channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(channel)
            .copied()
            .unwrap_or_default()
    }

    /// Admits one request of `user` on `channel`, or says which limit refused it.
    pub fn check(&self, channel: &str, user: &str) -> Result<(), RateLimited> {
        let now = Instant::now();
        let channel_limits = self.channel_limits(channel);
        if let Some(budget) = &self.tokens {
            let mut budget = budget.lock().unwrap_or_else(|p| p.into_inner());
            budget.refill(now);
            if budget.level <= 0.0 {
                let rate = f64::from(budget.per_minute) / 60.0;
                let wait = Duration::from_secs_f64((-budget.level + 1.0) / rate);
                return Err(RateLimited {
                    scope: LimitScope::Tokens,
                    retry_after: wait,
                });
            }
        }
        if let Some(limit) = channel_limits.requests_per_minute {
            self.per_channel
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(channel, limit, now)
                .map_err(|retry_after| RateLimited {
                    scope: LimitScope::Channel,
                    retry_after,
                })?;
        }
        let per_user = channel_limits.requests_per_minute_per_user.or(self
            .config
            .as_ref()
            .and_then(|c| c.requests_per_minute_per_user));
        if let Some(limit) = per_user {
            let key = format!("{channel}\u{0}{user}");
            self.per_user
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(&key, limit, now)
                .map_err(|retry_after| RateLimited {
                    scope: LimitScope::User,
                    retry_after,
                })?;
        }
        Ok(())
    }

    /// Charges tokens a turn used against the tenant's budget.
    pub fn charge_tokens(&self, tokens: u64) {
        if let Some(budget) = &self.tokens {
            let mut budget = budget.lock().unwrap_or_else(|p| p.into_inner());
            budget.refill(Instant::now());
            budget.level -= tokens as f64;
        }
    }
}

/// Bounded concurrency towards the upstream with a bounded wait queue.
pub struct UpstreamGate {
    slots: Arc<Semaphore>,
    max_waiting: usize,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

/// A held upstream slot; released on drop.
pub struct UpstreamPermit {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for UpstreamPermit {
    fn drop(&mut self) {
        self.metrics.upstream_in_flight.dec();
    }
}

impl std::fmt::Debug for UpstreamPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamPermit")
    }
}

struct Waiting<'a>(&'a Metrics);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.queue_depth.dec();
    }
}

impl UpstreamGate {
    /// A gate sized by `limits`.
    pub fn new(limits: &LimitsConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.upstream_concurrency.max(1))),
            max_waiting: limits.upstream_queue,
            timeout: Duration::from_secs(limits.queue_timeout_seconds.max(1)),
            metrics,
        }
    }

    /// A slot, at once or after waiting in the queue; [`Overloaded`] when the
    /// queue is full or the wait runs out.
    pub async fn acquire(&self) -> Result<UpstreamPermit, Overloaded> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // The gauge is the queue: reserve a place or refuse.
                let depth = self.metrics.queue_depth.get();
                if depth >= self.max_waiting as i64 {
                    return Err(self.overloaded());
                }
                self.metrics.queue_depth.inc();
                let _waiting = Waiting(&self.metrics);
                match tokio::time::timeout(self.timeout, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(self.overloaded()),
                }
            }
        };
        self.metrics.upstream_in_flight.inc();
        Ok(UpstreamPermit {
            _permit: permit,
            metrics: self.metrics.clone(),
        })
    }

    fn overloaded(&self) -> Overloaded {
        self.metrics.queue_rejected.inc();
        Overloaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_limits_burst_then_refuse_with_a_wait() {
        let limiter = RateLimiter::new(Some(RateLimitConfig {
            requests_per_minute_per_user: Some(2),
            tokens_per_minute: None,
        }));
        assert!(limiter.check("web", "alice").is_ok());
        assert!(limiter.check("web", "alice").is_ok());
        let refused = limiter.check("web", "alice").expect_err("third refused");
        assert_eq!(refused.scope, LimitScope::User);
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused.retry_after <= Duration::from_secs(30));
        // Another user, or the same user on another channel, is not affected.
        assert!(limiter.check("web", "bob").is_ok());
        assert!(limiter.check("api", "alice").is_ok());
    }

    #[test]
    fn channel_limits_are_looked_up_per_request() {
        let limiter = RateLimiter::new(None);
        assert!(limiter.check("web", "a").is_ok());
        limiter.set_channel_limits(
            "web",
            Some(ChannelLimits {
                requests_per_minute: Some(1),
                requests_per_minute_per_user: None,
            }),
        );
        assert!(limiter.check("web", "a").is_ok());
        let refused = limiter.check("web", "b").expect_err("channel full");
        assert_eq!(refused.scope, LimitScope::Channel);
        limiter.set_channel_limits("web", None);
        assert!(limiter.check("web", "b").is_ok());
    }

    #[test]
    fn token_budget_refuses_once_spent() {
        let limiter = RateLimiter::new(Some(RateLimitConfig {
            requests_per_minute_per_user: None,
            tokens_per_minute: Some(600),
        }));
        assert!(limiter.check("web", "a").is_ok());
        limiter.charge_tokens(1200);
        let refused = limiter.check("web", "a").expect_err("spent");
        assert_eq!(refused.scope, LimitScope::Tokens);
        // 600 tokens in debt at 10 tokens a second: about a minute.
        assert!(refused.retry_after >= Duration::from_secs(59));
    }
}
