//! Reports this pod's health into its AgentDeployment's `status.runtime`: the pod
//! server-side-applies its own list entry (keyed by pod name) under a field manager
//! of its own, so pods never overwrite each other and the operator can turn the
//! entries into RuntimeReady and ModelReachable. When costs are accounted, each
//! report also carries the agent-wide `status.usage` (the budget window's tokens and
//! cost, read from the shared database, so every pod reports the same figures).
//!
//! Every heartbeat the pod looks at its health. It writes a report when what the
//! operator acts on changed (ready, upstream health, tools), at once; when only its
//! counts changed (messages, sessions, usage), once the last report is
//! [`Cadence::counts`] old; and when nothing changed, once it is [`Cadence::refresh`]
//! old (as the kubelet does with a node's status). So an idle agent's pods write once
//! a minute and a busy one's every 30 s, not every 10 s. That the process is alive
//! is the kubelet's word, through the pod's probes. On shutdown a last report says
//! the pod is no longer ready.

use std::future::Future;
use std::time::{Duration, Instant};

use crds::{AgentDeployment, RuntimePodStatus, UsageStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use crate::providers::ModelChain;

/// Where and how often to report.
#[derive(Clone, Debug)]
pub struct ReporterConfig {
    /// The AgentDeployment this pod serves.
    pub agent: String,
    /// Its namespace.
    pub namespace: String,
    /// This pod's name.
    pub pod: String,
    /// Time between looks at the pod's health.
    pub interval: Duration,
    /// When a report that looks the same, or differs only in its counts, is written.
    pub cadence: Cadence,
    /// Runtime version reported.
    pub version: String,
    /// Time between upstream reachability checks while no chat call gives a
    /// verdict; `None` turns them off (see [`check_upstream`]).
    pub upstream_check: Option<Duration>,
}

/// Default seconds between upstream reachability checks
/// (`SWITCHBOARD_UPSTREAM_CHECK_SECONDS`; `0` turns them off).
pub const UPSTREAM_CHECK_SECONDS: u64 = 60;

impl ReporterConfig {
    /// From the environment a pod gets (`POD_NAME`, `POD_NAMESPACE`; the interval from
    /// `SWITCHBOARD_HEARTBEAT_SECONDS`, the refresh from
    /// `SWITCHBOARD_STATUS_REFRESH_SECONDS`, never shorter than the interval; counts
    /// go every three intervals, at most every refresh), or `None` when not running
    /// as a pod.
    pub fn from_env(
        agent: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Option<ReporterConfig> {
        let pod = lookup("POD_NAME").filter(|v| !v.is_empty())?;
        let namespace = lookup("POD_NAMESPACE").filter(|v| !v.is_empty())?;
        let interval = seconds(
            &lookup,
            "SWITCHBOARD_HEARTBEAT_SECONDS",
            crds::RUNTIME_HEARTBEAT_SECONDS,
            1,
        );
        let mut refresh = seconds(
            &lookup,
            "SWITCHBOARD_STATUS_REFRESH_SECONDS",
            crds::RUNTIME_REFRESH_SECONDS,
            1,
        );
        if refresh < interval {
            tracing::warn!(
                refresh,
                interval,
                "SWITCHBOARD_STATUS_REFRESH_SECONDS is below SWITCHBOARD_HEARTBEAT_SECONDS: \
                 an unchanged report is repeated at every heartbeat instead"
            );
            refresh = interval;
        }
        let upstream_check = seconds(
            &lookup,
            "SWITCHBOARD_UPSTREAM_CHECK_SECONDS",
            UPSTREAM_CHECK_SECONDS,
            0,
        );
        Some(ReporterConfig {
            agent: agent.to_owned(),
            namespace,
            pod,
            interval: Duration::from_secs(interval),
            cadence: Cadence {
                counts: Duration::from_secs((3 * interval).min(refresh)),
                refresh: Duration::from_secs(refresh),
            },
            version: env!("CARGO_PKG_VERSION").to_owned(),
            upstream_check: (upstream_check > 0).then(|| Duration::from_secs(upstream_check)),
        })
    }

    /// The field manager of this pod's entry.
    pub fn field_manager(&self) -> String {
        format!("switchboard-runtime-{}", self.pod)
    }
}

/// What the pod knows about itself at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    /// The runtime serves requests (its database answers).
    pub ready: bool,
    /// The last upstream call succeeded (or none failed yet).
    pub upstream_healthy: bool,
    /// Sessions with a message within the idle timeout.
    pub active_sessions: i64,
    /// Messages handled since start.
    pub messages_total: i64,
    /// Tokens and cost of the budget window (shared by all pods), when costs
    /// are accounted; written to the agent-wide `status.usage`.
    pub usage: Option<UsageStatus>,
    /// With server-side tool sources configured: the sources that could not
    /// be listed or listed no tools, as (source, error); written as the
    /// condition [`TOOLS_CONDITION`] (a type the operator does not write).
    pub tool_problems: Option<Vec<(String, String)>>,
}

/// Whole seconds from the environment variable `name`, `default` when it is unset. A
/// value that is not a whole number of at least `least` is refused with a warning
/// naming the variable, and `default` is used.
fn seconds(lookup: &impl Fn(&str) -> Option<String>, name: &str, default: u64, least: u64) -> u64 {
    let Some(value) = lookup(name) else {
        return default;
    };
    match value.trim().parse::<u64>() {
        Ok(seconds) if seconds >= least => seconds,
        _ => {
            tracing::warn!(
                variable = name,
                value = %value,
                default,
                "not a whole number of seconds of at least {least}: using the default"
            );
            default
        }
    }
}

/// The condition the runtime writes about its tool sources.
pub const TOOLS_CONDITION: &str = "ToolsAvailable";

/// When each condition the runtime writes last changed status, so a report repeats
/// that time instead of moving it on every heartbeat.
#[derive(Clone, Debug, Default)]
pub struct Transitions {
    tools: Option<(bool, Timestamp)>,
}

impl Transitions {
    /// The time the tools condition took the status `available` (`now` if it just did).
    fn tools_since(&mut self, available: bool, now: Timestamp) -> Timestamp {
        match self.tools {
            Some((was, since)) if was == available => since,
            _ => {
                self.tools = Some((available, now));
                now
            }
        }
    }
}

fn tools_condition(problems: &[(String, String)], since: Timestamp) -> serde_json::Value {
    let (status, reason, message) = if problems.is_empty() {
        (
            "True",
            "SourcesListed",
            "every tool source lists its tools".to_owned(),
        )
    } else {
        let named: Vec<String> = problems
            .iter()
            .map(|(source, error)| format!("{source}: {error}"))
            .collect();
        (
            "False",
            "SourceUnavailable",
            format!(
                "turns go on without these sources' tools: {}",
                named.join("; ")
            ),
        )
    };
    serde_json::json!({
        "type": TOOLS_CONDITION,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": Time(since),
    })
}

/// The status patch for one report made at `now`.
pub fn status_patch(
    config: &ReporterConfig,
    health: Health,
    now: Timestamp,
    transitions: &mut Transitions,
) -> serde_json::Value {
    let entry = RuntimePodStatus {
        name: config.pod.clone(),
        ready: health.ready,
        upstream_healthy: health.upstream_healthy,
        active_sessions: health.active_sessions,
        messages_total: health.messages_total,
        last_heartbeat: Time(now),
        version: config.version.clone(),
    };
    let mut status = serde_json::json!({ "runtime": [entry] });
    if let Some(usage) = health.usage {
        status["usage"] = serde_json::json!(usage);
    }
    if let Some(problems) = &health.tool_problems {
        let since = transitions.tools_since(problems.is_empty(), now);
        status["conditions"] = serde_json::json!([tools_condition(problems, since)]);
    }
    serde_json::json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "AgentDeployment",
        "metadata": { "name": config.agent },
        "status": status,
    })
}

/// Keeps the reported upstream health honest while the agent is idle: every `every`
/// it checks each model that no chat call has judged within that time (a GET of the
/// upstream's models list, no tokens spent), until `shutdown` is cancelled. An agent
/// whose every model is unreachable (no connection, a refused key, server errors)
/// then reports `upstreamHealthy: false`, which the operator shows as
/// `ModelReachable=False` and phase `Degraded`.
pub async fn check_upstream(chain: ModelChain, every: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => return,
        }
        for (model, error) in chain.check_reachability(every).await {
            tracing::warn!(%model, %error, "model upstream unreachable");
        }
    }
}

/// When a report that changed little or nothing is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cadence {
    /// Least time between two reports that differ only in their counts (messages,
    /// sessions, usage: figures people read, which no controller acts on).
    pub counts: Duration,
    /// Time after which an unchanged report is written again.
    pub refresh: Duration,
}

/// What was last written, to tell whether a report is due.
#[derive(Debug, Default)]
pub struct LastReport {
    written: Option<Written>,
}

#[derive(Debug)]
struct Written {
    state: serde_json::Value,
    counts: serde_json::Value,
    at: Instant,
}

impl LastReport {
    /// Whether `patch`, made at `now`, is to be written: nothing was written yet (or
    /// the last write failed); what the operator acts on changed; only the counts
    /// changed and the last report is `cadence.counts` old; or the last is
    /// `cadence.refresh` old.
    pub fn due(&self, patch: &serde_json::Value, now: Instant, cadence: Cadence) -> bool {
        let Some(last) = &self.written else {
            return true;
        };
        let age = now.saturating_duration_since(last.at);
        let (state, counts) = split(patch);
        state != last.state
            || (counts != last.counts && age >= cadence.counts)
            || age >= cadence.refresh
    }

    /// `patch` was written at `now`.
    pub fn written(&mut self, patch: &serde_json::Value, now: Instant) {
        let (state, counts) = split(patch);
        self.written = Some(Written {
            state,
            counts,
            at: now,
        });
    }
}

/// `patch` without its report time, split into what the operator acts on and the
/// counts (message and session counts, the budget window's usage).
fn split(patch: &serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    let mut state = patch.clone();
    let mut counts = Vec::with_capacity(3);
    if let Some(entry) = state.pointer_mut("/status/runtime/0") {
        entry["lastHeartbeat"] = serde_json::Value::Null;
        counts.push(entry["messagesTotal"].take());
        counts.push(entry["activeSessions"].take());
    }
    if let Some(status) = state.get_mut("status").and_then(|s| s.as_object_mut()) {
        counts.push(status.remove("usage").unwrap_or_default());
    }
    (state, serde_json::Value::Array(counts))
}

/// Reports until `shutdown` is cancelled, then sends a last not-ready report.
/// Failures are logged and retried at the next heartbeat; they never stop the pod.
pub async fn run<F, Fut>(
    client: Client,
    config: ReporterConfig,
    health: F,
    shutdown: CancellationToken,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Health>,
{
    let api: Api<AgentDeployment> = Api::namespaced(client, &config.namespace);
    let params = PatchParams::apply(&config.field_manager()).force();
    let mut transitions = Transitions::default();
    let mut last = LastReport::default();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let patch = status_patch(&config, health().await, Timestamp::now(), &mut transitions);
        let now = Instant::now();
        if !last.due(&patch, now, config.cadence) {
            continue;
        }
        match api
            .patch_status(&config.agent, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => last.written(&patch, now),
            Err(err) => {
                last = LastReport::default();
                tracing::warn!(agent = %config.agent, error = %err, "cannot report runtime status");
            }
        }
    }
    let mut parting = health().await;
    parting.ready = false;
    let patch = status_patch(&config, parting, Timestamp::now(), &mut transitions);
    if let Err(err) = api
        .patch_status(&config.agent, &params, &Patch::Apply(&patch))
        .await
    {
        tracing::warn!(agent = %config.agent, error = %err, "cannot report shutdown status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ReporterConfig {
        ReporterConfig::from_env("support", |name| match name {
            "POD_NAME" => Some("support-7d9-abc".into()),
            "POD_NAMESPACE" => Some("tenant-a".into()),
            "SWITCHBOARD_HEARTBEAT_SECONDS" => Some("5".into()),
            _ => None,
        })
        .unwrap()
    }

    #[test]
    fn reads_the_pod_identity_from_the_environment() {
        let c = config();
        assert_eq!(
            (c.pod.as_str(), c.namespace.as_str()),
            ("support-7d9-abc", "tenant-a")
        );
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(
            c.cadence,
            Cadence {
                counts: Duration::from_secs(15),
                refresh: Duration::from_secs(crds::RUNTIME_REFRESH_SECONDS)
            }
        );
        assert_eq!(
            c.upstream_check,
            Some(Duration::from_secs(UPSTREAM_CHECK_SECONDS))
        );
        assert_eq!(c.field_manager(), "switchboard-runtime-support-7d9-abc");
        assert!(
            ReporterConfig::from_env("support", |_| None).is_none(),
            "standalone: no reporting"
        );
    }

    #[test]
    fn the_refresh_is_never_shorter_than_the_interval() {
        let c = ReporterConfig::from_env("support", |name| match name {
            "POD_NAME" => Some("p".into()),
            "POD_NAMESPACE" => Some("n".into()),
            "SWITCHBOARD_HEARTBEAT_SECONDS" => Some("30".into()),
            "SWITCHBOARD_STATUS_REFRESH_SECONDS" => Some("5".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            c.cadence,
            Cadence {
                counts: Duration::from_secs(30),
                refresh: Duration::from_secs(30)
            }
        );
    }

    #[test]
    fn a_change_goes_at_once_new_counts_after_a_while_and_the_same_report_at_the_refresh() {
        let config = config();
        let mut transitions = Transitions::default();
        let cadence = Cadence {
            counts: Duration::from_secs(30),
            refresh: Duration::from_secs(60),
        };
        let mut patch = |messages: i64, ready: bool| {
            let health = Health {
                ready,
                upstream_healthy: true,
                messages_total: messages,
                ..Health::default()
            };
            status_patch(&config, health, Timestamp::now(), &mut transitions)
        };
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut last = LastReport::default();
        let first = patch(0, true);
        assert!(
            last.due(&first, at(0), cadence),
            "the first report is written"
        );
        last.written(&first, at(0));

        assert!(
            !last.due(&patch(0, true), at(10), cadence),
            "unchanged but for its time: not yet"
        );
        assert!(
            last.due(&patch(0, false), at(10), cadence),
            "no longer ready: at once"
        );
        assert!(
            !last.due(&patch(3, true), at(10), cadence),
            "new counts: not yet"
        );
        assert!(
            last.due(&patch(3, true), at(30), cadence),
            "new counts, the last report 30 s old"
        );
        assert!(
            !last.due(&patch(0, true), at(50), cadence),
            "unchanged, 50 s old"
        );

        let repeated = patch(0, true);
        assert!(
            last.due(&repeated, at(60), cadence),
            "a minute old: repeated"
        );
        last.written(&repeated, at(60));
        assert!(!last.due(&patch(0, true), at(70), cadence));
        assert!(
            LastReport::default().due(&patch(0, true), at(70), cadence),
            "after a failed write, the next look writes"
        );

        // Usage is a count too.
        let mut with_usage = |cost: &str| {
            let mut p = patch(0, true);
            p["status"]["usage"] = serde_json::json!({ "cost": cost });
            p
        };
        let mut last = LastReport::default();
        last.written(&with_usage("0.1"), at(0));
        assert!(!last.due(&with_usage("0.2"), at(10), cadence));
        assert!(last.due(&with_usage("0.2"), at(30), cadence));
    }

    #[test]
    fn tool_problems_are_a_condition_naming_the_source() {
        let health = Health {
            tool_problems: Some(vec![("search".into(), "initialize failed: refused".into())]),
            ..Health::default()
        };
        let patch = status_patch(
            &config(),
            health,
            Timestamp::from_second(1_700_000_000).unwrap(),
            &mut Transitions::default(),
        );
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["type"], TOOLS_CONDITION);
        assert_eq!(condition["status"], "False");
        assert!(
            condition["message"]
                .as_str()
                .unwrap()
                .contains("search: initialize failed: refused")
        );
        let healthy = Health {
            tool_problems: Some(Vec::new()),
            ..Health::default()
        };
        let patch = status_patch(
            &config(),
            healthy,
            Timestamp::from_second(1).unwrap(),
            &mut Transitions::default(),
        );
        assert_eq!(patch["status"]["conditions"][0]["status"], "True");
    }

    #[test]
    fn the_tools_condition_keeps_its_transition_time_until_its_status_changes() {
        let mut transitions = Transitions::default();
        let at = |second| Timestamp::from_second(second).unwrap();
        let report = |problems: Vec<(String, String)>, now, t: &mut Transitions| {
            let health = Health {
                tool_problems: Some(problems),
                ..Health::default()
            };
            status_patch(&config(), health, at(now), t)["status"]["conditions"][0]
                ["lastTransitionTime"]
                .clone()
        };
        let failing = || vec![("search".to_owned(), "refused".to_owned())];
        assert_eq!(
            report(Vec::new(), 100, &mut transitions),
            "1970-01-01T00:01:40Z"
        );
        assert_eq!(
            report(Vec::new(), 110, &mut transitions),
            "1970-01-01T00:01:40Z"
        );
        assert_eq!(
            report(failing(), 120, &mut transitions),
            "1970-01-01T00:02:00Z"
        );
        assert_eq!(
            report(failing(), 130, &mut transitions),
            "1970-01-01T00:02:00Z"
        );
        assert_eq!(
            report(Vec::new(), 140, &mut transitions),
            "1970-01-01T00:02:20Z"
        );
    }

    #[test]
    fn patch_carries_only_this_pods_entry() {
        let health = Health {
            ready: true,
            upstream_healthy: false,
            active_sessions: 3,
            messages_total: 42,
            usage: None,
            tool_problems: None,
        };
        let patch = status_patch(
            &config(),
            health,
            Timestamp::from_second(1_700_000_000).unwrap(),
            &mut Transitions::default(),
        );
        let runtime = patch["status"]["runtime"].as_array().unwrap();
        assert_eq!(runtime.len(), 1);
        assert_eq!(runtime[0]["name"], "support-7d9-abc");
        assert_eq!(runtime[0]["ready"], true);
        assert_eq!(runtime[0]["upstreamHealthy"], false);
        assert_eq!(runtime[0]["activeSessions"], 3);
        assert_eq!(runtime[0]["messagesTotal"], 42);
        assert_eq!(runtime[0]["lastHeartbeat"], "2023-11-14T22:13:20Z");
        assert!(
            patch["status"].get("conditions").is_none(),
            "never touches the operator's fields"
        );
        assert!(
            patch["status"].get("usage").is_none(),
            "no prices, no usage"
        );
    }

    #[test]
    fn patch_carries_the_windows_usage_when_accounted() {
        let usage = UsageStatus {
            window: "2026-12".into(),
            input_tokens: 1000,
            output_tokens: 250,
            cost: "0.0003".into(),
            currency: "USD".into(),
            budget: Some("1".into()),
            budget_spent: false,
        };
        let health = Health {
            ready: true,
            usage: Some(usage),
            ..Health::default()
        };
        let patch = status_patch(
            &config(),
            health,
            Timestamp::UNIX_EPOCH,
            &mut Transitions::default(),
        );
        let status = &patch["status"]["usage"];
        assert_eq!(status["window"], "2026-12");
        assert_eq!(status["inputTokens"], 1000);
        assert_eq!(status["cost"], "0.0003");
        assert_eq!(status["budgetSpent"], false);
    }
}
