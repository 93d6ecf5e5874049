//! Upstream resilience: the retry policy (exponential backoff with jitter that
//! honours `Retry-After`) and a circuit breaker per model (closed → open after
//! consecutive failures → half-open: one probe → closed or open again).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crds::runtime_config::LimitsConfig;

use super::ProviderError;

/// How often and how patiently one model is retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts per model (at least 1).
    pub max_attempts: u32,
    /// First backoff delay.
    pub base_delay: Duration,
    /// Longest delay; a longer `Retry-After` is not waited for.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::from_limits(&LimitsConfig::default())
    }
}

impl RetryPolicy {
    /// The policy the config asks for.
    pub fn from_limits(limits: &LimitsConfig) -> Self {
        Self {
            max_attempts: limits.retry_max_attempts.max(1),
            base_delay: Duration::from_millis(limits.retry_base_delay_ms),
            max_delay: Duration::from_millis(limits.retry_max_delay_ms),
        }
    }

    /// The wait before attempt `attempt + 1` after `err` on attempt `attempt`
    /// (1-based), or `None` when the error is not worth retrying on this model.
    pub fn delay_after(&self, attempt: u32, err: &ProviderError) -> Option<Duration> {
        if attempt >= self.max_attempts || !is_retryable(err) {
            return None;
        }
        if let ProviderError::Status {
            retry_after: Some(wait),
            ..
        } = err
        {
            // Honour the upstream's wait when it is one we are willing to hold the
            // client for; otherwise move on to the next model at once.
            return (*wait <= self.max_delay).then_some(*wait);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.max_delay);
        // Jitter: somewhere in [exp/2, exp].
        let half = exp / 2;
        Some(half + half.mul_f64(random_unit()))
    }
}

/// Whether trying the same model again may help.
pub fn is_retryable(err: &ProviderError) -> bool {
    match err {
        ProviderError::Status { status, .. } => *status == 429 || *status == 408 || *status >= 500,
        ProviderError::Timeout(_)
        | ProviderError::Connection(_)
        | ProviderError::Malformed(_)
        | ProviderError::Truncated => true,
        ProviderError::CircuitOpen | ProviderError::Unsupported(_) => false,
    }
}

/// Whether an error counts against the model's health (a rate limit or a bad
/// request does not mean the model is down).
pub fn counts_as_failure(err: &ProviderError) -> bool {
    match err {
        ProviderError::Status { status, .. } => *status >= 500,
        ProviderError::CircuitOpen | ProviderError::Unsupported(_) => false,
        _ => true,
    }
}

/// A number in `[0, 1)` from the OS-seeded UUID generator (no extra dependency).
fn random_unit() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() >> 75) as u64; // 53 random bits
    bits as f64 / (1u64 << 53) as f64
}

/// A circuit's state, as exported in metrics (`0` closed, `1` half-open, `2` open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// One probe is in flight; other calls skip the model.
    HalfOpen,
    /// Calls skip the model until the open period ends.
    Open,
}

impl CircuitState {
    /// The gauge value.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

#[derive(Debug)]
struct BreakerInner {
    state: CircuitState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    /// The last call (or probe) succeeded.
    last_ok: bool,
    /// When a call or reachability check last gave a verdict.
    last_verdict: Option<Instant>,
}

/// A circuit breaker for one model.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    inner: Mutex<BreakerInner>,
}

/// Whether a call may go ahead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Normal call.
    Allowed,
    /// The one probe of a half-open circuit.
    Probe,
    /// Skip this model.
    Rejected,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures and
    /// stays open for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            inner: Mutex::new(BreakerInner {
                state: CircuitState::Closed,
                consecutive_failures: 0,
                opened_at: None,
                last_ok: true,
                last_verdict: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks to make a call now.
    pub fn admit(&self) -> Admission {
        let mut inner = self.lock();
        match inner.state {
            CircuitState::Closed => Admission::Allowed,
            CircuitState::HalfOpen => Admission::Rejected,
            CircuitState::Open => {
                let expired = inner
                    .opened_at
                    .is_none_or(|at| at.elapsed() >= self.open_for);
                if expired {
                    inner.state = CircuitState::HalfOpen;
                    Admission::Probe
                } else {
                    Admission::Rejected
                }
            }
        }
    }

    /// Records a successful call.
    pub fn on_success(&self) {
        let mut inner = self.lock();
        inner.state = CircuitState::Closed;
        inner.consecutive_failures = 0;
        inner.opened_at = None;
        inner.last_ok = true;
        inner.last_verdict = Some(Instant::now());
    }

    /// Records a failed call; returns whether this opened the circuit.
    pub fn on_failure(&self) -> bool {
        let mut inner = self.lock();
        inner.last_ok = false;
        inner.last_verdict = Some(Instant::now());
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        let opens = inner.state == CircuitState::HalfOpen
            || (inner.state == CircuitState::Closed
                && inner.consecutive_failures >= self.threshold);
        if opens {
            inner.state = CircuitState::Open;
            inner.opened_at = Some(Instant::now());
        }
        opens
    }

    /// A call admitted as the probe ended without a verdict (cancelled, or a
    /// rate limit): let the next call probe again.
    pub fn release_probe(&self) {
        let mut inner = self.lock();
        if inner.state == CircuitState::HalfOpen {
            inner.state = CircuitState::Open;
            inner.opened_at = None;
        }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.lock().state
    }

    /// Whether a reachability check is due: the circuit is closed (an open one
    /// is unhealthy already and probes itself on the next call) and no call or
    /// check gave a verdict within `every`.
    pub fn check_due(&self, every: Duration) -> bool {
        let inner = self.lock();
        inner.state == CircuitState::Closed
            && inner.last_verdict.is_none_or(|at| at.elapsed() >= every)
    }

    /// Records a reachability check (no chat call: the failure counts and the
    /// circuit state stay as they are, only [`Self::healthy`] follows it).
    pub fn on_check(&self, reachable: bool) {
        let mut inner = self.lock();
        if inner.state == CircuitState::Closed {
            inner.last_ok = reachable;
            inner.last_verdict = Some(Instant::now());
        }
    }

    /// Closed and the last call did not fail.
    pub fn healthy(&self) -> bool {
        let inner = self.lock();
        inner.state == CircuitState::Closed && inner.last_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, retry_after: Option<u64>) -> ProviderError {
        ProviderError::Status {
            status: code,
            message: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        };
        let first = policy.delay_after(1, &status(500, None)).expect("retried");
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let third = policy.delay_after(3, &status(503, None)).expect("retried");
        assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
        assert_eq!(
            policy.delay_after(1, &status(429, Some(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(policy.delay_after(1, &status(429, Some(7))), None);
        assert_eq!(policy.delay_after(4, &status(500, None)), None);
        assert_eq!(policy.delay_after(1, &status(400, None)), None);
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let breaker = CircuitBreaker::new(2, Duration::ZERO);
        assert_eq!(breaker.admit(), Admission::Allowed);
        assert!(!breaker.on_failure());
        assert!(breaker.on_failure());
        assert_eq!(breaker.state(), CircuitState::Open);
        // Open period over: exactly one probe.
        assert_eq!(breaker.admit(), Admission::Probe);
        assert_eq!(breaker.admit(), Admission::Rejected);
        assert!(breaker.on_failure());
        assert_eq!(breaker.admit(), Admission::Probe);
        breaker.on_success();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert!(breaker.healthy());
        let long = CircuitBreaker::new(1, Duration::from_secs(3600));
        long.on_failure();
        assert_eq!(long.admit(), Admission::Rejected);
    }

    #[test]
    fn a_reachability_check_moves_health_but_not_the_circuit() {
        let breaker = CircuitBreaker::new(2, Duration::from_secs(3600));
        let hour = Duration::from_secs(3600);
        assert!(breaker.check_due(hour), "never judged");
        breaker.on_check(false);
        assert!(!breaker.healthy());
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(breaker.admit(), Admission::Allowed, "calls still go ahead");
        assert!(!breaker.check_due(hour), "judged just now");
        assert!(breaker.check_due(Duration::ZERO));
        breaker.on_check(true);
        assert!(breaker.healthy());
        // A real call's verdict counts as recent too.
        let called = CircuitBreaker::new(1, Duration::from_secs(3600));
        called.on_success();
        assert!(!called.check_due(hour));
        // An open circuit is left to its own half-open probe.
        called.on_failure();
        assert_eq!(called.state(), CircuitState::Open);
        assert!(!called.check_due(Duration::ZERO));
        called.on_check(true);
        assert!(!called.healthy());
    }
}
