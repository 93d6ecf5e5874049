//! Admission control: request rate limits per user, per channel and user, and
//! per channel; the tenant's token budget; and bounded concurrency towards the
//! upstream with a bounded queue. Limits are looked up per request, so
//! per-channel limits can be fed in at run time
//! ([`RateLimiter::set_channel_limits`]).
//!
//! # Which limits apply
//!
//! Every limit that is set applies, so a channel's limit only tightens the
//! agent's: the agent's `requestsPerMinutePerUser` counts a user's requests
//! on every channel together; a channel's `requestsPerMinutePerUser` counts
//! them on that channel too; a channel's `requestsPerMinute` counts all its
//! users; the agent's `tokensPerMinute` counts the tokens of every request.
//!
//! # Limits across pods
//!
//! Counts are fixed windows of one unix minute per key, kept in the agent's
//! own database when it is Postgres (the UNLOGGED table `rate_windows`), so
//! every pod of the agent counts against the same numbers. A request is
//! counted by ONE statement for all its keys (`INSERT … ON CONFLICT … DO
//! UPDATE … WHERE count < lim RETURNING key`): Postgres locks each key's row
//! for the update, so concurrent pods never count past a limit. A request
//! refused by one key gives back what it counted on the others (a second
//! statement, on that rare path only). The cost is that one round trip per
//! admitted request, and only for agents with limits set; refusals are
//! remembered by the pod for the rest of the minute (the tokens budget for a
//! second) and answered without the database, so a flood costs nothing extra.
//! Leasing quota slices per pod would save the round trip but either
//! under-admits (slices held by idle pods) or, for per-user limits where most
//! users send a few requests a minute, saves nothing.
//!
//! Error bounds: within a minute the request limits are exact for any number
//! of pods. Being fixed windows, a client can get up to twice a limit within
//! 60 seconds that straddle a minute boundary (the end of one minute and the
//! start of the next). Pods take the minute from their own clocks: skew
//! between them moves their boundaries by as much. While the database cannot
//! be reached, each pod falls back to counting in memory, so the limits hold
//! per pod only (a warning is logged).
//!
//! The token budget reserves tokens at admission and settles them after the
//! model call: a request is admitted while the minute's count (tokens used
//! plus tokens reserved by requests in flight) is below the budget, and adds
//! its reservation, the largest request this pod saw among its last 16 (before
//! any, `context.maxTokens`). When it settles, the reservation is replaced by
//! the tokens really used (or given back when the turn fails before the
//! model). The request that crosses the budget is the last one admitted, so a
//! minute is never overspent by more than that one request's tokens, as long
//! as requests in flight use no more than their reservation; one that uses
//! more adds its excess. A request's tokens count in the minute it was
//! admitted.
//!
//! With SQLite (one process) the same counts are kept in memory.

mod window;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crds::runtime_config::{LimitsConfig, RateLimitConfig};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::db::{RateWindows, WindowCount};
use crate::metrics::Metrics;

use window::MemoryWindows;
pub use window::{WINDOW, current_minute};

/// Request limits of one channel (from its ChatChannel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelLimits {
    /// Requests per minute for one user on this channel (on top of the agent's).
    pub requests_per_minute_per_user: Option<u32>,
    /// Requests per minute for the whole channel.
    pub requests_per_minute: Option<u32>,
}

/// Which limit refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitScope {
    /// One user (the agent's limit across channels, or a channel's own).
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

/// Key of the tenant's token budget.
const TOKENS_KEY: &str = "tokens";
/// Requests whose token use the reservation is taken from.
const ESTIMATE_SAMPLES: usize = 16;
/// How long a pod answers a spent token budget without asking the database
/// (settling requests may give tokens back within the minute).
const TOKENS_REFUSAL_MEMORY: Duration = Duration::from_secs(1);

fn user_key(user: &str) -> String {
    format!("user\u{1f}{user}")
}

fn channel_user_key(channel: &str, user: &str) -> String {
    // Channel names are DNS labels: the separator cannot occur in them.
    format!("channel-user\u{1f}{channel}\u{1f}{user}")
}

/// The user of a per-user key ([`user_key`], [`channel_user_key`]).
fn user_of_key(key: &str) -> Option<&str> {
    if let Some(user) = key.strip_prefix("user\u{1f}") {
        return Some(user);
    }
    key.strip_prefix("channel-user\u{1f}")?
        .split_once('\u{1f}')
        .map(|(_, user)| user)
}

fn channel_key(channel: &str) -> String {
    format!("channel\u{1f}{channel}")
}

/// What the pods share: the counters (database or memory) and this pod's
/// estimate of a request's tokens.
struct Counters {
    memory: MemoryWindows,
    database: Option<RateWindows>,
    /// The last minute whose older rows this pod deleted.
    forgotten: AtomicI64,
    /// Tokens of this pod's last requests, newest last.
    recent_tokens: Mutex<VecDeque<u64>>,
    first_estimate: u64,
}

impl Counters {
    /// Counts `counts` in `minute` (all or nothing): `Ok(true)` when counted
    /// in the database, `Ok(false)` in memory, else the index of the key at
    /// its limit.
    async fn count(&self, minute: i64, counts: &[WindowCount]) -> Result<bool, usize> {
        if let Some(database) = &self.database {
            self.forget_old(database, minute);
            match database.count(minute, counts).await {
                Ok(counted) if counted.len() == counts.len() => return Ok(true),
                Ok(counted) => {
                    // Refused by some key: give back what was counted on the others.
                    for c in counts.iter().filter(|c| counted.contains(&c.key)) {
                        if let Err(err) = database.adjust(&c.key, minute, -c.add).await {
                            tracing::warn!(error = %err, "cannot give back a refused request's count");
                        }
                    }
                    let full = counts
                        .iter()
                        .position(|c| !counted.contains(&c.key))
                        .unwrap_or_default();
                    return Err(full);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "rate-limit counters unavailable: counting in this pod only");
                }
            }
        }
        self.memory.count(minute, counts).map(|()| false)
    }

    /// Adds `delta` to `key` in `minute`, where it was counted.
    fn adjust(self: &Arc<Self>, in_database: bool, key: &'static str, minute: i64, delta: i64) {
        if delta == 0 {
            return;
        }
        match (&self.database, in_database) {
            (Some(database), true) => {
                let database = database.clone();
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        if let Err(err) = database.adjust(key, minute, delta).await {
                            tracing::warn!(error = %err, "cannot settle reserved tokens");
                        }
                    });
                }
            }
            _ => self.memory.adjust(key, minute, delta),
        }
    }

    /// Once a minute per pod, deletes the rows of minutes before the last.
    fn forget_old(&self, database: &RateWindows, minute: i64) {
        let last = self.forgotten.load(Ordering::Relaxed);
        if last >= minute
            || self
                .forgotten
                .compare_exchange(last, minute, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let database = database.clone();
        tokio::spawn(async move {
            if let Err(err) = database.forget_before(minute - 1).await {
                tracing::debug!(error = %err, "cannot delete old rate-limit counters");
            }
        });
    }

    fn estimate(&self) -> u64 {
        let recent = self.recent_tokens.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().copied().max().unwrap_or(self.first_estimate)
    }

    fn observe(&self, tokens: u64) {
        let mut recent = self.recent_tokens.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == ESTIMATE_SAMPLES {
            recent.pop_front();
        }
        recent.push_back(tokens);
    }
}

/// Tokens reserved from the budget for one admitted request; settled with
/// the tokens used ([`TokenHold::settle`]), or given back when dropped
/// unsettled (the turn failed before the model answered).
pub struct TokenHold {
    counters: Arc<Counters>,
    minute: i64,
    reserved: i64,
    in_database: bool,
    settled: AtomicBool,
}

impl std::fmt::Debug for TokenHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenHold")
            .field("minute", &self.minute)
            .field("reserved", &self.reserved)
            .finish()
    }
}

impl TokenHold {
    /// Replaces the reservation by the tokens the request used (once).
    pub fn settle(&self, tokens: u64) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        self.counters.observe(tokens);
        let used = i64::try_from(tokens).unwrap_or(i64::MAX);
        self.counters.adjust(
            self.in_database,
            TOKENS_KEY,
            self.minute,
            used.saturating_sub(self.reserved),
        );
    }
}

impl Drop for TokenHold {
    fn drop(&mut self) {
        if !self.settled.swap(true, Ordering::AcqRel) {
            self.counters
                .adjust(self.in_database, TOKENS_KEY, self.minute, -self.reserved);
        }
    }
}

/// An admitted request: its token reservation, when the agent has a budget.
#[derive(Debug, Default)]
pub struct Admission {
    /// Tokens reserved from the budget.
    pub tokens: Option<TokenHold>,
}

/// Distinct users this pod refused in the current and the previous window
/// (for the admin stats; bounded by the users of two minutes).
#[derive(Debug, Default)]
struct RefusedUsers {
    minute: i64,
    current: HashSet<String>,
    previous: HashSet<String>,
}

impl RefusedUsers {
    /// Moves the sets on to `minute`.
    fn roll(&mut self, minute: i64) {
        if minute == self.minute {
            return;
        }
        self.previous = if minute == self.minute + 1 {
            std::mem::take(&mut self.current)
        } else {
            HashSet::new()
        };
        self.current.clear();
        self.minute = minute;
    }
}

/// Users refused by a rate limit, as the admin stats show them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateLimitedUsers {
    /// Distinct users refused (or at a per-user limit) in the current window.
    pub current_window: i64,
    /// The same for the window before it.
    pub last_window: i64,
    /// Whether the figures cover every pod (the shared counters were read), or
    /// this pod only.
    pub all_pods: bool,
}

/// Request and token rate limits of one agent, shared by its pods through the
/// database when it is Postgres (see the module's documentation).
pub struct RateLimiter {
    config: Option<RateLimitConfig>,
    channels: RwLock<HashMap<String, ChannelLimits>>,
    counters: Arc<Counters>,
    /// Keys found at their limit, and until when this pod refuses them alone.
    refused: Mutex<HashMap<String, Instant>>,
    /// Users this pod refused, by window.
    refused_users: Mutex<RefusedUsers>,
}

impl RateLimiter {
    /// Limits from the agent's `rateLimit`, counted in `database` when given
    /// (else in memory); `first_estimate` tokens are reserved per request
    /// until this pod has seen one (`context.maxTokens`).
    pub fn new(
        config: Option<RateLimitConfig>,
        database: Option<RateWindows>,
        first_estimate: u64,
    ) -> Self {
        Self {
            config,
            channels: RwLock::new(HashMap::new()),
            counters: Arc::new(Counters {
                memory: MemoryWindows::default(),
                database,
                forgotten: AtomicI64::new(i64::MIN),
                recent_tokens: Mutex::new(VecDeque::with_capacity(ESTIMATE_SAMPLES)),
                first_estimate,
            }),
            refused: Mutex::new(HashMap::new()),
            refused_users: Mutex::new(RefusedUsers::default()),
        }
    }

    /// Remembers that `user` was refused in this window.
    fn note_refused(&self, user: &str) {
        let (minute, _) = current_minute();
        let mut users = self.refused_users.lock().unwrap_or_else(|p| p.into_inner());
        users.roll(minute);
        if users.current.len() < 100_000 && !users.current.contains(user) {
            users.current.insert(user.to_owned());
        }
    }

    /// Distinct users refused in the current and the previous window: those this
    /// pod refused, joined (on Postgres) with the users at a per-user limit in
    /// the shared counters, which covers the other pods' refusals too.
    pub async fn rate_limited_users(&self) -> RateLimitedUsers {
        let (minute, _) = current_minute();
        let (mut current, mut previous) = {
            let mut users = self.refused_users.lock().unwrap_or_else(|p| p.into_inner());
            users.roll(minute);
            (users.current.clone(), users.previous.clone())
        };
        let mut all_pods = self.counters.database.is_none();
        if let Some(database) = &self.counters.database {
            match database.keys_at_limit(minute - 1).await {
                Ok(rows) => {
                    all_pods = true;
                    for (at, key) in rows {
                        let Some(user) = user_of_key(&key) else {
                            continue;
                        };
                        if at == minute {
                            current.insert(user.to_owned());
                        } else if at == minute - 1 {
                            previous.insert(user.to_owned());
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the shared rate-limit counters");
                }
            }
        }
        RateLimitedUsers {
            current_window: current.len() as i64,
            last_window: previous.len() as i64,
            all_pods,
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

    /// The keys a request of `user` on `channel` counts against, with the
    /// scope each refuses with.
    fn keys(&self, channel: &str, user: &str) -> Vec<(LimitScope, WindowCount)> {
        let channel_limits = self.channel_limits(channel);
        let agent = self.config.as_ref();
        let request = |key: String, limit: u32| WindowCount {
            key,
            limit: i64::from(limit.max(1)),
            add: 1,
        };
        let mut keys = Vec::with_capacity(4);
        if let Some(budget) = agent.and_then(|c| c.tokens_per_minute).filter(|t| *t > 0) {
            keys.push((
                LimitScope::Tokens,
                WindowCount {
                    key: TOKENS_KEY.to_owned(),
                    limit: i64::from(budget),
                    add: i64::try_from(self.counters.estimate()).unwrap_or(i64::MAX),
                },
            ));
        }
        if let Some(limit) = channel_limits.requests_per_minute {
            keys.push((LimitScope::Channel, request(channel_key(channel), limit)));
        }
        if let Some(limit) = channel_limits.requests_per_minute_per_user {
            keys.push((
                LimitScope::User,
                request(channel_user_key(channel, user), limit),
            ));
        }
        if let Some(limit) = agent.and_then(|c| c.requests_per_minute_per_user) {
            keys.push((LimitScope::User, request(user_key(user), limit)));
        }
        // One lock order for every request (see `RateWindows::count`).
        keys.sort_by(|a, b| a.1.key.cmp(&b.1.key));
        keys
    }

    /// Admits one request of `user` on `channel` (counting it against every
    /// limit that applies, and reserving its tokens from the budget), or says
    /// which limit refused it.
    pub async fn check(&self, channel: &str, user: &str) -> Result<Admission, RateLimited> {
        let keys = self.keys(channel, user);
        if keys.is_empty() {
            return Ok(Admission::default());
        }
        let now = Instant::now();
        {
            let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            for (scope, count) in &keys {
                if let Some(until) = refused.get(&count.key).filter(|until| **until > now) {
                    self.note_refused(user);
                    return Err(RateLimited {
                        scope: *scope,
                        retry_after: *until - now,
                    });
                }
            }
        }
        let (minute, left) = current_minute();
        let counts: Vec<WindowCount> = keys.iter().map(|(_, c)| c.clone()).collect();
        match self.counters.count(minute, &counts).await {
            Ok(in_database) => Ok(Admission {
                tokens: keys
                    .iter()
                    .find(|(scope, _)| *scope == LimitScope::Tokens)
                    .map(|(_, count)| TokenHold {
                        counters: self.counters.clone(),
                        minute,
                        reserved: count.add,
                        in_database,
                        settled: AtomicBool::new(false),
                    }),
            }),
            Err(full) => {
                let (scope, count) = &keys[full];
                let remember = match scope {
                    LimitScope::Tokens => left.min(TOKENS_REFUSAL_MEMORY),
                    _ => left,
                };
                let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                if refused.len() > 10_000 {
                    refused.retain(|_, until| *until > now);
                }
                refused.insert(count.key.clone(), now + remember);
                drop(refused);
                self.note_refused(user);
                Err(RateLimited {
                    scope: *scope,
                    retry_after: left,
                })
            }
        }
    }

    /// Charges tokens a turn used against the tenant's budget when no
    /// reservation was made for it (an answer given later than its
    /// admission), in the background.
    pub fn charge_tokens(&self, tokens: u64) {
        if self
            .config
            .as_ref()
            .and_then(|c| c.tokens_per_minute)
            .is_none_or(|t| t == 0)
        {
            return;
        }
        self.counters.observe(tokens);
        let (minute, _) = current_minute();
        let count = WindowCount {
            key: TOKENS_KEY.to_owned(),
            limit: i64::MAX,
            add: i64::try_from(tokens).unwrap_or(i64::MAX),
        };
        if self.counters.database.is_none() {
            let _ = self.counters.memory.count(minute, &[count]);
            return;
        }
        let counters = self.counters.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Without a limit this only fails on an unreachable database, and
            // then counts in memory.
            runtime.spawn(async move {
                let _ = counters.count(minute, &[count]).await;
            });
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

    fn limiter(per_user: Option<u32>, tokens: Option<u32>) -> RateLimiter {
        RateLimiter::new(
            Some(RateLimitConfig {
                requests_per_minute_per_user: per_user,
                tokens_per_minute: tokens,
            }),
            None,
            100,
        )
    }

    #[tokio::test]
    async fn per_user_limits_count_across_channels_and_refuse_until_the_minute_ends() {
        let limiter = limiter(Some(2), None);
        assert!(limiter.check("web", "alice").await.is_ok());
        assert!(limiter.check("api", "alice").await.is_ok());
        let refused = limiter
            .check("web", "alice")
            .await
            .expect_err("third refused");
        assert_eq!(refused.scope, LimitScope::User);
        assert!(refused.retry_after > Duration::ZERO);
        assert!(refused.retry_after <= WINDOW);
        // Another user is not affected.
        assert!(limiter.check("web", "bob").await.is_ok());
    }

    #[tokio::test]
    async fn a_channel_limit_tightens_the_agents_and_counts_per_channel() {
        let limiter = limiter(Some(3), None);
        limiter.set_channel_limits(
            "web",
            Some(ChannelLimits {
                requests_per_minute_per_user: Some(1),
                requests_per_minute: None,
            }),
        );
        assert!(limiter.check("web", "alice").await.is_ok());
        let refused = limiter
            .check("web", "alice")
            .await
            .expect_err("channel's own limit");
        assert_eq!(refused.scope, LimitScope::User);
        // Elsewhere the agent's limit still counts the web request: 2 more.
        assert!(limiter.check("api", "alice").await.is_ok());
        assert!(limiter.check("api", "alice").await.is_ok());
        assert!(limiter.check("api", "alice").await.is_err());
        // A looser channel limit does not loosen the agent's.
        limiter.set_channel_limits(
            "loose",
            Some(ChannelLimits {
                requests_per_minute_per_user: Some(100),
                requests_per_minute: None,
            }),
        );
        assert!(limiter.check("loose", "bob").await.is_ok());
        assert!(limiter.check("loose", "bob").await.is_ok());
        assert!(limiter.check("loose", "bob").await.is_ok());
        assert!(limiter.check("loose", "bob").await.is_err());
    }

    #[tokio::test]
    async fn channel_limits_are_looked_up_per_request() {
        let limiter = RateLimiter::new(None, None, 100);
        assert!(limiter.check("web", "a").await.is_ok());
        limiter.set_channel_limits(
            "web",
            Some(ChannelLimits {
                requests_per_minute: Some(1),
                requests_per_minute_per_user: None,
            }),
        );
        assert!(limiter.check("web", "a").await.is_ok());
        let refused = limiter.check("web", "b").await.expect_err("channel full");
        assert_eq!(refused.scope, LimitScope::Channel);
        limiter.set_channel_limits("web", None);
        assert!(limiter.check("web", "b").await.is_ok());
    }

    #[tokio::test]
    async fn token_budget_reserves_then_settles_and_refuses_once_spent() {
        let limiter = limiter(None, Some(250));
        // The first reservation is the first estimate (100).
        let first = limiter.check("web", "a").await.expect("admitted");
        let hold = first.tokens.as_ref().expect("a reservation");
        assert_eq!(hold.reserved, 100);
        hold.settle(120);
        // Then the largest request seen: 120 + 120 = 240 < 250.
        let second = limiter.check("web", "a").await.expect("admitted");
        assert_eq!(second.tokens.as_ref().map(|h| h.reserved), Some(120));
        // Given back when dropped unsettled (a failed turn).
        drop(second);
        let third = limiter.check("web", "a").await.expect("admitted");
        let fourth = limiter.check("web", "a").await.expect("still below");
        // 120 used + 2 × 120 reserved = 360 >= 250: spent.
        let refused = limiter.check("web", "a").await.expect_err("spent");
        assert_eq!(refused.scope, LimitScope::Tokens);
        assert!(refused.retry_after <= WINDOW);
        drop((third, fourth));
    }
}
