//! Per-channel activity of this pod (messages, active sessions, last message
//! time), and the reporter that server-side-applies this pod's entry of each
//! channel's `status.activity` when the figures changed: a channel's first figures
//! at the next heartbeat, later ones once its last write is
//! [`ActivityReporterConfig::counts`] old (an idle pod writes nothing, a busy one
//! once per channel every 30 s).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crds::ChatChannel;
use crds::channel::ChannelActivity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use super::ChannelRegistry;

#[derive(Debug, Default)]
struct Counters {
    messages_total: i64,
    last_message: Option<DateTime<Utc>>,
    sessions: HashMap<String, Instant>,
}

/// The figures of one channel at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActivityFigures {
    /// Messages received on the channel since the pod started.
    pub messages_total: i64,
    /// Sessions with a message within the idle timeout.
    pub active_sessions: i64,
    /// When the last message arrived.
    pub last_message: Option<DateTime<Utc>>,
}

/// Counts messages per channel.
#[derive(Debug)]
pub struct ChannelActivityCounter {
    idle_timeout: Duration,
    channels: Mutex<HashMap<String, Counters>>,
}

impl ChannelActivityCounter {
    /// Sessions idle longer than `idle_timeout` no longer count as active.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            idle_timeout,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one received message on `channel` in `session`.
    pub fn record_message(&self, channel: &str, session_id: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let counters = channels.entry(channel.to_owned()).or_default();
        counters.messages_total += 1;
        counters.last_message = Some(Utc::now());
        counters
            .sessions
            .insert(session_id.to_owned(), Instant::now());
    }

    /// Sessions active within the idle timeout, over every channel (the pod's own
    /// figure in the AgentDeployment's status).
    pub fn active_sessions_total(&self) -> i64 {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let idle = self.idle_timeout;
        channels
            .values_mut()
            .map(|c| {
                c.sessions.retain(|_, at| at.elapsed() <= idle);
                c.sessions.len() as i64
            })
            .sum()
    }

    /// The channel's figures now.
    pub fn figures(&self, channel: &str) -> ActivityFigures {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let Some(counters) = channels.get_mut(channel) else {
            return ActivityFigures::default();
        };
        let idle = self.idle_timeout;
        counters.sessions.retain(|_, at| at.elapsed() <= idle);
        ActivityFigures {
            messages_total: counters.messages_total,
            active_sessions: counters.sessions.len() as i64,
            last_message: counters.last_message,
        }
    }
}

/// This pod's activity entry of one channel, as a server-side-apply patch of
/// the status (only the `activity` entry keyed by this pod).
pub fn activity_patch(channel: &str, pod: &str, figures: &ActivityFigures) -> serde_json::Value {
    let entry = ChannelActivity {
        pod: pod.to_owned(),
        messages_total: figures.messages_total,
        active_sessions: figures.active_sessions,
        last_message_time: figures
            .last_message
            .and_then(|t| Timestamp::from_microsecond(t.timestamp_micros()).ok())
            .map(Time),
    };
    serde_json::json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "ChatChannel",
        "metadata": { "name": channel },
        "status": { "activity": [entry] },
    })
}

/// Where and how often to report.
#[derive(Clone, Debug)]
pub struct ActivityReporterConfig {
    /// The pod's namespace (where its channels live).
    pub namespace: String,
    /// This pod's name (the entry's key).
    pub pod: String,
    /// Time between looks at the figures.
    pub interval: Duration,
    /// Least time between two writes of one channel's entry.
    pub counts: Duration,
}

/// Whether `figures` are to be written, given what was `written` last (and when).
fn due(
    written: Option<&(ActivityFigures, Instant)>,
    figures: &ActivityFigures,
    now: Instant,
    counts: Duration,
) -> bool {
    match written {
        // Nothing to say about a channel this pod never served.
        None => *figures != ActivityFigures::default(),
        Some((last, at)) => last != figures && now.saturating_duration_since(*at) >= counts,
    }
}

/// Reports until `shutdown` is cancelled. A channel's entry is written when its
/// figures differ from the last ones written and those are `counts` old; failures
/// are retried next beat.
pub async fn run(
    client: Client,
    config: ActivityReporterConfig,
    registry: std::sync::Arc<ChannelRegistry>,
    shutdown: CancellationToken,
) {
    let api: Api<ChatChannel> = Api::namespaced(client, &config.namespace);
    let params = PatchParams::apply(&format!("switchboard-runtime-{}", config.pod)).force();
    let mut written: HashMap<String, (ActivityFigures, Instant)> = HashMap::new();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let channels = registry.all();
        written.retain(|name, _| channels.iter().any(|c| &c.name == name));
        for channel in channels {
            let figures = registry.activity.figures(&channel.name);
            let now = Instant::now();
            if !due(written.get(&channel.name), &figures, now, config.counts) {
                continue;
            }
            let patch = activity_patch(&channel.name, &config.pod, &figures);
            match api
                .patch_status(&channel.name, &params, &Patch::Apply(&patch))
                .await
            {
                Ok(_) => {
                    tracing::debug!(channel = %channel.name, messages = figures.messages_total, "channel activity reported");
                    written.insert(channel.name.clone(), (figures, now));
                }
                Err(err) => {
                    tracing::warn!(channel = %channel.name, error = %err, "cannot report channel activity");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_messages_and_active_sessions_per_channel() {
        let counter = ChannelActivityCounter::new(Duration::from_secs(60));
        counter.record_message("web", "s1");
        counter.record_message("web", "s1");
        counter.record_message("web", "s2");
        counter.record_message("hooks", "s3");
        let web = counter.figures("web");
        assert_eq!((web.messages_total, web.active_sessions), (3, 2));
        assert!(web.last_message.is_some());
        assert_eq!(counter.figures("hooks").messages_total, 1);
        assert_eq!(counter.figures("other"), ActivityFigures::default());
        assert_eq!(
            counter.active_sessions_total(),
            3,
            "s1, s2 on web and s3 on hooks"
        );
    }

    #[test]
    fn a_channels_first_figures_go_at_once_and_later_ones_after_a_while() {
        let counts = Duration::from_secs(30);
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let figures = |messages| ActivityFigures {
            messages_total: messages,
            ..ActivityFigures::default()
        };
        assert!(!due(None, &figures(0), at(0), counts), "never served");
        assert!(due(None, &figures(1), at(0), counts), "its first message");
        let written = (figures(1), at(0));
        assert!(
            !due(Some(&written), &figures(1), at(60), counts),
            "unchanged"
        );
        assert!(
            !due(Some(&written), &figures(4), at(10), counts),
            "too soon"
        );
        assert!(due(Some(&written), &figures(4), at(30), counts));
    }

    #[test]
    fn idle_sessions_stop_counting() {
        let counter = ChannelActivityCounter::new(Duration::ZERO);
        counter.record_message("web", "s1");
        std::thread::sleep(Duration::from_millis(5));
        let web = counter.figures("web");
        assert_eq!((web.messages_total, web.active_sessions), (1, 0));
    }

    #[test]
    fn patch_carries_only_this_pods_entry() {
        let figures = ActivityFigures {
            messages_total: 7,
            active_sessions: 2,
            last_message: DateTime::from_timestamp(1_700_000_000, 0),
        };
        let patch = activity_patch("web", "support-abc", &figures);
        let activity = patch["status"]["activity"].as_array().expect("list");
        assert_eq!(activity.len(), 1);
        assert_eq!(activity[0]["pod"], "support-abc");
        assert_eq!(activity[0]["messagesTotal"], 7);
        assert_eq!(activity[0]["activeSessions"], 2);
        assert_eq!(activity[0]["lastMessageTime"], "2023-11-14T22:13:20Z");
        assert!(patch["status"].get("conditions").is_none());
        assert!(patch["status"].get("endpoint").is_none());
    }
}
