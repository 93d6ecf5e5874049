//! Per-object retry backoff after transient failures, keyed by kind, namespace and
//! name so objects of different kinds that share a name never share a retry schedule.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::{Resource, ResourceExt};
use rand::RngExt;

/// First retry delay after a transient failure.
const BASE: Duration = Duration::from_secs(1);
/// Longest retry delay.
const MAX: Duration = Duration::from_secs(300);

/// Which object a backoff belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// `kind` of the object (AgentDeployment, ChatChannel).
    pub kind: String,
    /// Its namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectKey {
    /// The key of `object`.
    pub fn of<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        Self {
            kind: K::kind(&()).into_owned(),
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Consecutive failures of each object.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<ObjectKey, u32>>,
}

impl Backoff {
    /// Counts one more failure of `key` and returns the delay before its retry:
    /// exponential in its consecutive failures, capped at 5 minutes, with jitter in
    /// [0.5, 1.5) so failing objects do not retry in lock step.
    pub fn next(&self, key: &ObjectKey) -> Duration {
        let attempts = {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let n = failures.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        };
        let jitter: f64 = rand::rng().random_range(0.5..1.5);
        delay(attempts).mul_f64(jitter)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn reset(&self, key: &ObjectKey) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// Consecutive failures of `key` so far.
    pub fn attempts(&self, key: &ObjectKey) -> u32 {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// The delay before jitter after `attempts` consecutive failures.
fn delay(attempts: u32) -> Duration {
    BASE.saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{AgentDeployment, ChatChannel};

    fn agent(name: &str) -> AgentDeployment {
        let mut agent: AgentDeployment =
            serde_yaml::from_str(include_str!("../fixtures/agent-minimal.yaml")).unwrap();
        agent.metadata.name = Some(name.to_owned());
        agent.metadata.namespace = Some("tenant-a".to_owned());
        agent
    }

    fn channel(name: &str) -> ChatChannel {
        let mut channel: ChatChannel =
            serde_yaml::from_str(include_str!("../fixtures/channel-web.yaml")).unwrap();
        channel.metadata.name = Some(name.to_owned());
        channel.metadata.namespace = Some("tenant-a".to_owned());
        channel
    }

    #[test]
    fn delays_grow_exponentially_and_stop_at_five_minutes() {
        assert_eq!(delay(1), Duration::from_secs(1));
        assert_eq!(delay(2), Duration::from_secs(2));
        assert_eq!(delay(5), Duration::from_secs(16));
        assert_eq!(delay(40), MAX);
        let backoff = Backoff::default();
        let key = ObjectKey::of(&agent("a"));
        for _ in 0..3 {
            backoff.next(&key);
        }
        let d = backoff.next(&key);
        assert!(
            d >= Duration::from_secs(4) && d < Duration::from_secs(12),
            "{d:?}"
        );
    }

    /// Regression: both controllers shared one map keyed `namespace/name`, so a
    /// ChatChannel named like its agent reset or inflated the agent's backoff.
    #[test]
    fn a_channel_named_like_its_agent_keeps_its_own_backoff() {
        let backoff = Backoff::default();
        let agent = ObjectKey::of(&agent("support"));
        let channel = ObjectKey::of(&channel("support"));
        assert_ne!(agent, channel);
        for _ in 0..4 {
            backoff.next(&agent);
        }
        // The channel's failures do not inflate the agent's schedule...
        backoff.next(&channel);
        assert_eq!(backoff.attempts(&agent), 4);
        assert_eq!(backoff.attempts(&channel), 1);
        // ...and the channel's success does not reset it.
        backoff.reset(&channel);
        assert_eq!(backoff.attempts(&agent), 4);
        assert_eq!(backoff.attempts(&channel), 0);
        backoff.reset(&agent);
        assert_eq!(backoff.attempts(&agent), 0);
    }
}
