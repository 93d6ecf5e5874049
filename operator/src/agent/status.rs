//! Pure status computation: what was applied and observed (database, Deployment,
//! runtime pods that cannot get their image, the pods' own reports) in, the
//! AgentDeployment's status out.

use crds::condition::{FALSE, TRUE, UNKNOWN, find_condition, new_condition, set_condition};
use crds::conditions::{
    AVAILABLE, DATABASE_READY, DEFAULT_CHANNEL, MODEL_REACHABLE, READY, RUNTIME_READY,
    SERVICE_MONITOR_READY, TOOLS_READY,
};
use crds::{AgentDeploymentStatus, Phase, RuntimePodStatus, agent::GeneratedSecrets};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// State of the agent's database after the provisioning step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseState {
    /// Usable; the runtime reads its URL from this Secret.
    Ready {
        /// Name of the Secret holding the URL.
        secret: String,
        /// Whether the operator generated that Secret (Managed mode).
        generated: bool,
        /// The managed database existed before this agent's credentials did (kept by
        /// `reclaimPolicy: Retain` from a deleted agent of the same name), and was
        /// taken over with its data.
        adopted: bool,
    },
    /// Not usable, with a reason and a message for the user.
    NotReady {
        /// PascalCase reason.
        reason: String,
        /// What is wrong and what to do.
        message: String,
        /// The spec or configuration must change before a retry can help.
        permanent: bool,
    },
}

/// What happened to the ServiceMonitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceMonitorState {
    /// Applied.
    Applied,
    /// Disabled in the spec.
    Disabled,
    /// The monitoring.coreos.com CRD is not served by this cluster.
    CrdMissing,
}

/// Why the operator did not carry out the agent's current generation: Ready says so
/// (False, with this reason and message) and the phase is Failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// [`INVALID_SPEC`], [`CHILD_REFUSED`] or [`CHILD_CONFLICT`].
    pub reason: &'static str,
    /// What is wrong, naming the field.
    pub message: String,
    /// For [`CHILD_CONFLICT`]: the kind and name of each object another holds. The
    /// status points at none of them (the endpoint, when the Service is one; the key
    /// Secrets): clients would reach, and people read, someone else's.
    pub taken: Vec<(String, String)>,
}

impl Refusal {
    /// The refusal a child the operator could not write says on Ready
    /// ([`CHILD_CONFLICT`] or [`CHILD_REFUSED`]), with the children another object
    /// holds; `None` for any other error.
    pub fn of(error: &crate::error::Error, taken: Vec<(String, String)>) -> Option<Self> {
        let reason = match error {
            crate::error::Error::ChildConflict { .. } => CHILD_CONFLICT,
            _ => CHILD_REFUSED,
        };
        error.refusal().map(|message| Refusal {
            reason,
            message,
            taken,
        })
    }
}

/// Container waiting reasons that mean the image cannot be had: the pod waits forever
/// unless the image reference, the registry or the pull policy changes.
pub const IMAGE_PULL_FAILURES: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
];

/// A runtime pod whose container cannot get its image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePullFailure {
    /// The pod.
    pub pod: String,
    /// The container.
    pub container: String,
    /// The image it asks for.
    pub image: String,
    /// The kubelet's waiting reason (one of [`IMAGE_PULL_FAILURES`]).
    pub reason: String,
    /// The kubelet's message, e.g. the registry's answer.
    pub message: String,
}

/// The first (by pod name) of `pods` whose container cannot get its image.
pub fn image_pull_failure<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<ImagePullFailure> {
    let mut pods: Vec<&Pod> = pods.into_iter().collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    pods.into_iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        containers.into_iter().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            IMAGE_PULL_FAILURES
                .contains(&reason)
                .then(|| ImagePullFailure {
                    pod: pod.metadata.name.clone().unwrap_or_default(),
                    container: c.name.clone(),
                    image: c.image.clone(),
                    reason: reason.to_owned(),
                    message: waiting.message.clone().unwrap_or_default(),
                })
        })
    })
}

/// Everything the status is computed from.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    /// `metadata.generation` of the agent.
    pub generation: Option<i64>,
    /// Why this generation was not carried out, if it was not.
    pub refusal: Option<Refusal>,
    /// The database step's outcome; `None` when it did not run (a refused spec):
    /// DatabaseReady then stays as last written.
    pub database: Option<DatabaseState>,
    /// `spec.replicas`.
    pub wanted_replicas: Option<i32>,
    /// The live Deployment, if the watch has seen it.
    pub deployment: Option<&'a Deployment>,
    /// A runtime pod that cannot get its image, if any.
    pub image_pull: Option<ImagePullFailure>,
    /// `status.runtime` entries of runtime pods that still exist.
    pub runtime: &'a [RuntimePodStatus],
    /// The runtime pods the kubelet does not count Ready (probe failing, process
    /// gone, node lost): their reports do not count, however fresh.
    pub not_ready: &'a [String],
    /// The time the reports are judged at: a report older than
    /// [`crds::RUNTIME_STALE_AFTER_SECONDS`] no longer counts.
    pub now: Timestamp,
    /// The ServiceMonitor step's outcome; `None` when it did not run or was refused:
    /// ServiceMonitorReady then stays as last written.
    pub service_monitor: Option<ServiceMonitorState>,
    /// The Service's cluster DNS URL.
    pub endpoint: String,
    /// Label selector of the runtime pods.
    pub selector: String,
    /// Name of the API key Secret.
    pub api_key_secret: String,
    /// Name of the admin key Secret.
    pub admin_key_secret: String,
    /// What `spec.defaultChannel` names.
    pub default_channel: DefaultChannelState,
    /// The ToolsReady condition as (status, reason, message); `None` while
    /// `spec.tools` is empty (see [`crate::agent::tools::tools_ready`]).
    pub tools_ready: Option<(&'static str, &'static str, String)>,
}

/// What `spec.defaultChannel` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefaultChannelState {
    /// The field is unset: the root routes answer 404.
    Unset,
    /// A ChatChannel of this agent.
    Found(String),
    /// No ChatChannel of that name leads to this agent.
    Missing(String),
}

/// Whether a runtime report is recent enough to count.
pub fn is_fresh(report: &RuntimePodStatus, now: Timestamp) -> bool {
    let age = now.as_second() - report.last_heartbeat.0.as_second();
    age <= crds::RUNTIME_STALE_AFTER_SECONDS as i64
}

/// What of an agent its controllers act on, as a hash: the whole object but what its
/// runtime pods refresh on every heartbeat (a report's time while it is fresh, its
/// message and session counts, the budget window's usage, the runtime's condition
/// times) and the resource version. A heartbeat then wakes no reconcile: a report
/// that goes stale is found by a sweep of the cache (see [`went_stale_within`]), and
/// a report that changes what counts (ready, upstream health, version, a pod's entry
/// coming or going, a stale report fresh again) wakes it at once. With 1,000 running
/// agents the heartbeats alone woke 6,356 reconciles a minute.
pub fn significant(agent: &crds::AgentDeployment) -> u64 {
    let now = Timestamp::now();
    let mut agent = agent.clone();
    agent.metadata.resource_version = None;
    agent.metadata.managed_fields = None;
    if let Some(status) = agent.status.as_mut() {
        status.usage = None;
        for report in &mut status.runtime {
            if is_fresh(report, now) {
                report.last_heartbeat = Time(Timestamp::UNIX_EPOCH);
            }
            report.messages_total = 0;
            report.active_sessions = 0;
        }
        for condition in &mut status.conditions {
            condition.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
    }
    crate::hash::content_hash(&agent)
}

/// Whether one of `reports` went stale within `window` before `now` (its age is past
/// [`crds::RUNTIME_STALE_AFTER_SECONDS`] by at most `window`): the agent's status
/// still counts it, and the sweep of [`crate::agent::stale_reports`] brings its
/// reconcile.
pub fn went_stale_within(
    reports: &[RuntimePodStatus],
    now: Timestamp,
    window: std::time::Duration,
) -> bool {
    let stale_after = crds::RUNTIME_STALE_AFTER_SECONDS as i64;
    reports.iter().any(|r| {
        let age = now.as_second() - r.last_heartbeat.0.as_second();
        age > stale_after && age <= stale_after + window.as_secs() as i64
    })
}

/// The status the operator wants, starting from the current one so condition
/// transition times move only on real transitions. `runtime` is left empty: the pods
/// own their entries.
pub fn desired_status(
    current: &AgentDeploymentStatus,
    observed: &Observed<'_>,
) -> AgentDeploymentStatus {
    let generation = observed.generation;
    let mut conds = ConditionWriter {
        list: current.conditions.clone(),
        generation,
    };

    let (db_ok, db_permanent) = match &observed.database {
        None => {
            conds.keep_or_unknown(DATABASE_READY);
            (false, false)
        }
        Some(DatabaseState::Ready {
            secret, adopted, ..
        }) => {
            // Once adopted, it says so for as long as the database stays ready.
            let was_adopted = find_condition(&conds.list, DATABASE_READY)
                .is_some_and(|c| c.status == TRUE && c.reason == DATABASE_ADOPTED);
            if *adopted || was_adopted {
                conds.set(
                    DATABASE_READY,
                    TRUE,
                    DATABASE_ADOPTED,
                    format!(
                        "adopted an existing database of this name (kept by reclaimPolicy: Retain \
                         from a deleted agent), with its data and history; credentials are in Secret \
                         {secret}. To start empty instead, delete the agent, drop the database and \
                         role by hand, and create it again"
                    ),
                );
            } else {
                conds.set(
                    DATABASE_READY,
                    TRUE,
                    "Provisioned",
                    format!("database credentials are in Secret {secret}"),
                );
            }
            (true, false)
        }
        Some(DatabaseState::NotReady {
            reason,
            message,
            permanent,
        }) => {
            conds.set(DATABASE_READY, FALSE, reason, message.clone());
            (false, *permanent)
        }
    };

    let deployment_status = observed.deployment.and_then(|d| d.status.as_ref());
    let replicas = deployment_status.and_then(|s| s.replicas).unwrap_or(0);
    let ready_replicas = deployment_status
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let available = deployment_status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_.as_deref() == Some("Available")));
    let available_ok = match (observed.deployment, available) {
        (None, _) => {
            conds.set(
                AVAILABLE,
                UNKNOWN,
                "DeploymentPending",
                "the runtime Deployment has not been observed yet".to_owned(),
            );
            false
        }
        (Some(_), None) => {
            conds.set(
                AVAILABLE,
                UNKNOWN,
                "DeploymentPending",
                "the runtime Deployment reports no availability yet".to_owned(),
            );
            false
        }
        (Some(_), Some(c)) => {
            let reason = c.reason.clone().unwrap_or_else(|| "Deployment".to_owned());
            let mut message = format!(
                "{ready_replicas}/{replicas} runtime pods ready; Deployment: {}",
                c.message.clone().unwrap_or_default()
            );
            let status = c.status.as_deref().unwrap_or(UNKNOWN);
            match &observed.image_pull {
                // Serving from older pods while a new one cannot start (a stuck
                // rollout): still available, and the message says what is stuck.
                Some(failure) if status == TRUE => {
                    message.push_str("; ");
                    message.push_str(&pull_message(failure));
                }
                _ => {}
            }
            conds.set(AVAILABLE, status, &reason, message);
            status == TRUE
        }
    };

    // Pods that cannot start are why the agent is not available: say so, with the
    // kubelet's words, instead of waiting in silence.
    if let Some(failure) = observed.image_pull.as_ref().filter(|_| !available_ok) {
        conds.set(AVAILABLE, FALSE, IMAGE_PULL_FAILED, pull_message(failure));
    }

    // Asked for no pod (spec.replicas 0, or while it is unset an autoscaler's or a
    // hand's 0 on the Deployment), and none is left: a settled state, not one still
    // waiting for reports.
    let scaled_to_zero = observed.wanted_replicas.unwrap_or(0) == 0
        && observed
            .deployment
            .is_some_and(|d| d.spec.replicas == Some(0))
        && replicas == 0;

    let fresh: Vec<&RuntimePodStatus> = observed
        .runtime
        .iter()
        .filter(|r| is_fresh(r, observed.now))
        .collect();
    let reports: Vec<&RuntimePodStatus> = fresh
        .iter()
        .copied()
        .filter(|r| !observed.not_ready.contains(&r.name))
        .collect();
    let (runtime_status, model_status) = if scaled_to_zero {
        // False rather than True: no runtime runs to answer, so what waits on Ready
        // (`kubectl wait`, a ChatChannel's AgentReady, a GitOps health check) does not
        // take the agent as serving, as a Pod that has finished is not Ready. The
        // reason says it is on purpose, and the phase ScaledToZero that it is settled.
        let why = match observed.wanted_replicas {
            Some(_) => "spec.replicas is 0: no runtime pod runs; scale the agent up to serve",
            None => {
                "the Deployment is scaled to 0 (spec.replicas is unset: an autoscaler or a hand did it): no runtime pod runs"
            }
        };
        conds.set(RUNTIME_READY, FALSE, SCALED_TO_ZERO, why.to_owned());
        conds.set(
            MODEL_REACHABLE,
            UNKNOWN,
            SCALED_TO_ZERO,
            "no runtime pod runs to reach the model".to_owned(),
        );
        (FALSE, UNKNOWN)
    } else if reports.is_empty() && !fresh.is_empty() {
        let why = format!(
            "{} runtime pod(s) report, but the kubelet counts none of them Ready: their \
             readiness probes fail, their processes are gone, or their node is lost",
            fresh.len()
        );
        conds.set(RUNTIME_READY, FALSE, "PodsNotReady", why.clone());
        conds.set(MODEL_REACHABLE, UNKNOWN, "PodsNotReady", why);
        (FALSE, UNKNOWN)
    } else if reports.is_empty() && !observed.runtime.is_empty() {
        let why = format!(
            "no runtime pod has reported within {}s (an unchanged report is repeated every {}s): \
             the runtimes cannot write their status, or are gone or hung",
            crds::RUNTIME_STALE_AFTER_SECONDS,
            crds::RUNTIME_REFRESH_SECONDS
        );
        conds.set(RUNTIME_READY, FALSE, "HeartbeatMissing", why.clone());
        conds.set(MODEL_REACHABLE, UNKNOWN, "HeartbeatMissing", why);
        (FALSE, UNKNOWN)
    } else if reports.is_empty() {
        let why = "no runtime pod has reported into status.runtime yet".to_owned();
        conds.set(RUNTIME_READY, UNKNOWN, "AwaitingRuntimeReport", why.clone());
        conds.set(MODEL_REACHABLE, UNKNOWN, "AwaitingRuntimeReport", why);
        (UNKNOWN, UNKNOWN)
    } else {
        let ready = reports.iter().filter(|r| r.ready).count();
        let healthy = reports.iter().filter(|r| r.upstream_healthy).count();
        let total = reports.len();
        let runtime = if ready > 0 { TRUE } else { FALSE };
        conds.set(
            RUNTIME_READY,
            runtime,
            if ready > 0 {
                "RuntimeReady"
            } else {
                "RuntimeNotReady"
            },
            format!("{ready}/{total} runtime pods report ready"),
        );
        let model = if healthy > 0 { TRUE } else { FALSE };
        conds.set(
            MODEL_REACHABLE,
            model,
            if healthy > 0 {
                "UpstreamHealthy"
            } else {
                "UpstreamUnreachable"
            },
            format!("{healthy}/{total} runtime pods reach the model upstream"),
        );
        (runtime, model)
    };

    match observed.service_monitor {
        None => conds.keep_or_unknown(SERVICE_MONITOR_READY),
        Some(ServiceMonitorState::Applied) => conds.set(SERVICE_MONITOR_READY, TRUE, "Applied", "ServiceMonitor applied".to_owned()),
        Some(ServiceMonitorState::Disabled) => conds.set(
            SERVICE_MONITOR_READY,
            FALSE,
            "Disabled",
            "spec.monitoring.serviceMonitor.enabled is false".to_owned(),
        ),
        Some(ServiceMonitorState::CrdMissing) => conds.set(
            SERVICE_MONITOR_READY,
            FALSE,
            "CRDNotInstalled",
            "the monitoring.coreos.com/v1 ServiceMonitor CRD is not installed; install the Prometheus Operator to get one".to_owned(),
        ),
    }

    let ready = observed.refusal.is_none() && db_ok && available_ok && runtime_status == TRUE;
    let (ready_status, ready_reason, ready_message) = if let Some(refusal) = &observed.refusal {
        (FALSE, refusal.reason.to_owned(), refusal.message.clone())
    } else if ready {
        (
            TRUE,
            "AllReady".to_owned(),
            "database, runtime pods and runtime reports are ready".to_owned(),
        )
    } else {
        let blocker = [DATABASE_READY, AVAILABLE, RUNTIME_READY]
            .into_iter()
            .filter_map(|t| find_condition(&conds.list, t))
            .find(|c| c.status != TRUE);
        match blocker {
            Some(c) => (
                FALSE,
                c.reason.clone(),
                format!("{} is {}: {}", c.type_, c.status, c.message),
            ),
            None => (
                FALSE,
                "Pending".to_owned(),
                "waiting for the first reconcile".to_owned(),
            ),
        }
    };
    conds.set(READY, ready_status, &ready_reason, ready_message);
    match &observed.default_channel {
        DefaultChannelState::Unset => conds.list.retain(|c| c.type_ != DEFAULT_CHANNEL),
        DefaultChannelState::Found(name) => conds.set(
            DEFAULT_CHANNEL,
            TRUE,
            "Found",
            format!("the root routes belong to ChatChannel {name}"),
        ),
        DefaultChannelState::Missing(name) => conds.set(
            DEFAULT_CHANNEL,
            FALSE,
            "ChannelNotFound",
            format!(
                "spec.defaultChannel names {name}, but no ChatChannel of that name leads to this agent: the root routes answer 404 until one does"
            ),
        ),
    }
    match &observed.tools_ready {
        None => conds.list.retain(|c| c.type_ != TOOLS_READY),
        Some((status, reason, message)) => conds.set(TOOLS_READY, status, reason, message.clone()),
    }
    let conditions = conds.list;

    let phase = if observed.refusal.is_some() || db_permanent {
        Phase::Failed
    } else if ready && model_status == FALSE {
        Phase::Degraded
    } else if ready {
        Phase::Ready
    } else if scaled_to_zero {
        Phase::ScaledToZero
    } else if available_ok && (runtime_status == FALSE || model_status == FALSE) {
        Phase::Degraded
    } else if observed.deployment.is_none() && !db_ok {
        Phase::Pending
    } else {
        Phase::Provisioning
    };

    // The agent's one Service, or a Secret by name.
    let taken = |kind: &str, name: Option<&str>| {
        observed.refusal.as_ref().is_some_and(|r| {
            r.taken
                .iter()
                .any(|(k, n)| k == kind && name.is_none_or(|name| n == name))
        })
    };
    let database_secret = match &observed.database {
        Some(DatabaseState::Ready {
            secret,
            generated: true,
            ..
        }) => Some(secret.clone()),
        // Not looked at: the Secret named before is still there.
        None => current.secrets.as_ref().and_then(|s| s.database.clone()),
        _ => None,
    };
    AgentDeploymentStatus {
        observed_generation: generation,
        phase: Some(phase),
        conditions,
        replicas: Some(replicas),
        ready_replicas: Some(ready_replicas),
        ready: Some(format!("{ready_replicas}/{replicas}")),
        selector: Some(observed.selector.clone()),
        endpoint: Some(observed.endpoint.clone()).filter(|_| !taken("Service", None)),
        secrets: Some(GeneratedSecrets {
            api_key: Some(observed.api_key_secret.clone())
                .filter(|name| !taken("Secret", Some(name))),
            database: database_secret,
            admin_key: Some(observed.admin_key_secret.clone())
                .filter(|name| !taken("Secret", Some(name))),
        }),
        runtime: Vec::new(),
        // Written by the runtime pods; left out so the operator's apply never owns it.
        usage: None,
    }
}

/// Reason of Ready when the operator refuses the spec.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// Reason of Ready when the API server refused one of the agent's children as invalid.
pub const CHILD_REFUSED: &str = "ChildRefused";

/// Reason of Ready when one of the agent's children is named like an object the agent
/// does not control, which the operator does not write over.
pub const CHILD_CONFLICT: &str = "ChildConflict";

/// Reason of RuntimeReady (and so Ready) when the agent is scaled to zero on purpose.
pub const SCALED_TO_ZERO: &str = "ScaledToZero";

/// Reason of a condition whose step did not run for this generation (see
/// [`Observed::database`]), while there is no earlier one to keep.
pub const NOT_RECONCILED: &str = "NotReconciled";

/// Reason of Available (and so Ready) when runtime pods cannot get their image.
pub const IMAGE_PULL_FAILED: &str = "ImagePullFailed";

/// Reason of DatabaseReady when a retained database of the same name was taken over.
pub const DATABASE_ADOPTED: &str = "DatabaseAdopted";

fn pull_message(failure: &ImagePullFailure) -> String {
    format!(
        "pod {} cannot get image {:?} for container {} ({}): {}; fix spec.image or the registry access",
        failure.pod, failure.image, failure.container, failure.reason, failure.message
    )
}

/// Sets conditions stamped with one generation.
struct ConditionWriter {
    list: Vec<Condition>,
    generation: Option<i64>,
}

impl ConditionWriter {
    fn set(&mut self, type_: &str, status: &str, reason: &str, message: String) {
        set_condition(
            &mut self.list,
            new_condition(type_, status, reason, message, self.generation),
        );
    }

    /// Leaves the condition as last written (with the generation it describes), or
    /// sets it Unknown when there is none: its step did not run for this generation.
    /// (Older operators put a refused spec's reason on DatabaseReady: not kept.)
    fn keep_or_unknown(&mut self, type_: &str) {
        let kept = find_condition(&self.list, type_).filter(|c| c.reason != INVALID_SPEC);
        if kept.is_none() {
            self.set(
                type_,
                UNKNOWN,
                NOT_RECONCILED,
                "not looked at for this generation: see Ready".to_owned(),
            );
        }
    }
}

/// Whether writing `desired` would change anything but timestamps in `current`
/// (whose `runtime` entries belong to the pods and are ignored).
pub fn status_differs(
    current: Option<&AgentDeploymentStatus>,
    desired: &AgentDeploymentStatus,
) -> bool {
    let Some(current) = current else {
        return true;
    };
    let mut current = current.clone();
    // The runtime pods own `runtime` and `usage`.
    current.runtime.clear();
    current.usage = None;
    let mut desired = desired.clone();
    normalize_times(&mut current.conditions);
    normalize_times(&mut desired.conditions);
    current != desired
}

/// Sets every condition's transition time to the epoch, for comparisons.
pub fn normalize_times(conditions: &mut [Condition]) {
    for c in conditions {
        c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::condition::is_true;

    fn deployment() -> Deployment {
        serde_yaml::from_str(include_str!(
            "../../fixtures/deployment-status-available.yaml"
        ))
        .unwrap()
    }

    fn report(name: &str, ready: bool, upstream: bool) -> RuntimePodStatus {
        RuntimePodStatus {
            name: name.to_owned(),
            ready,
            upstream_healthy: upstream,
            active_sessions: 0,
            messages_total: 0,
            last_heartbeat: Time(Timestamp::now()),
            version: "0.1.0".to_owned(),
        }
    }

    #[test]
    fn a_heartbeat_is_not_a_significant_change_and_what_the_status_reads_is() {
        let mut agent: crds::AgentDeployment =
            serde_yaml::from_str(include_str!("../../fixtures/agent-minimal.yaml")).unwrap();
        let mut status = AgentDeploymentStatus {
            runtime: vec![report("a-1", true, true)],
            ..Default::default()
        };
        set_condition(
            &mut status.conditions,
            new_condition("ToolsAvailable", TRUE, "SourcesListed", "", None),
        );
        agent.status = Some(status);
        let before = significant(&agent);
        let changed = |f: &dyn Fn(&mut AgentDeploymentStatus)| {
            let mut next = agent.clone();
            f(next.status.as_mut().unwrap());
            next
        };

        // A heartbeat: a later time, more messages, new usage, the runtime's
        // condition time moved, a new resource version.
        let mut next = changed(&|s| {
            s.runtime[0].last_heartbeat = Time(Timestamp::now());
            s.runtime[0].messages_total = 7;
            s.runtime[0].active_sessions = 2;
            s.usage = Some(crds::UsageStatus::default());
            s.conditions[0].last_transition_time = Time(Timestamp::now());
        });
        next.metadata.resource_version = Some("42".into());
        assert_eq!(significant(&next), before);

        // What the status is computed from.
        let changes: [&dyn Fn(&mut AgentDeploymentStatus); 6] = [
            &|s| s.runtime[0].ready = false,
            &|s| s.runtime[0].upstream_healthy = false,
            &|s| s.runtime[0].version = "0.2.0".into(),
            &|s| s.runtime.push(report("a-2", true, true)),
            &|s| s.runtime.clear(),
            &|s| s.observed_generation = Some(2),
        ];
        for (i, change) in changes.into_iter().enumerate() {
            assert_ne!(significant(&changed(change)), before, "change {i}");
        }
        let mut spec = agent.clone();
        spec.spec.replicas = Some(7);
        assert_ne!(significant(&spec), before);

        // A stale report is not the same as a fresh one: its next heartbeat counts.
        let stale = changed(&|s| {
            let long_ago =
                Timestamp::now().as_second() - crds::RUNTIME_STALE_AFTER_SECONDS as i64 - 5;
            s.runtime[0].last_heartbeat = Time(Timestamp::from_second(long_ago).unwrap());
        });
        assert_ne!(significant(&stale), before);
    }

    fn observed<'a>(
        deployment: Option<&'a Deployment>,
        runtime: &'a [RuntimePodStatus],
    ) -> Observed<'a> {
        Observed {
            generation: Some(3),
            refusal: None,
            database: Some(DatabaseState::Ready {
                secret: "support-db".to_owned(),
                generated: true,
                adopted: false,
            }),
            wanted_replicas: Some(2),
            deployment,
            image_pull: None,
            runtime,
            not_ready: &[],
            now: Timestamp::now(),
            service_monitor: Some(ServiceMonitorState::CrdMissing),
            endpoint: "http://support.tenant-a.svc.cluster.local:8080".to_owned(),
            selector: "a=b".to_owned(),
            api_key_secret: "support-api-key".to_owned(),
            admin_key_secret: "support-admin-key".to_owned(),
            default_channel: DefaultChannelState::Unset,
            tools_ready: None,
        }
    }

    #[test]
    fn the_tools_condition_is_there_only_with_tools_and_leaves_ready_alone() {
        let d = deployment();
        let mut o = observed(Some(&d), &[]);
        let without = desired_status(&AgentDeploymentStatus::default(), &o);
        o.tools_ready = Some((
            FALSE,
            "ToolSourcesNotReady",
            "toolServer dead is not Ready".to_owned(),
        ));
        let with = desired_status(&without, &o);
        let c = condition(&with, TOOLS_READY);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            (FALSE, "ToolSourcesNotReady")
        );
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(condition(&with, READY), condition(&without, READY));
        o.tools_ready = None;
        let removed = desired_status(&with, &o);
        assert!(find_condition(&removed.conditions, TOOLS_READY).is_none());
    }

    #[test]
    fn the_default_channel_condition_follows_the_field() {
        let d = deployment();
        let mut o = observed(Some(&d), &[]);
        o.default_channel = DefaultChannelState::Missing("web".to_owned());
        let missing = desired_status(&Default::default(), &o);
        let c = condition(&missing, DEFAULT_CHANNEL);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "ChannelNotFound")
        );
        assert!(c.message.contains("spec.defaultChannel"));
        o.default_channel = DefaultChannelState::Found("web".to_owned());
        let found = desired_status(&missing, &o);
        assert_eq!(condition(&found, DEFAULT_CHANNEL).status, "True");
        o.default_channel = DefaultChannelState::Unset;
        let unset = desired_status(&found, &o);
        assert!(find_condition(&unset.conditions, DEFAULT_CHANNEL).is_none());
    }

    fn condition<'a>(status: &'a AgentDeploymentStatus, type_: &str) -> &'a Condition {
        find_condition(&status.conditions, type_).unwrap_or_else(|| panic!("{type_} missing"))
    }

    #[test]
    fn an_adopted_database_says_so_and_keeps_saying_so() {
        let d = deployment();
        let mut adopting = observed(Some(&d), &[]);
        adopting.database = Some(DatabaseState::Ready {
            secret: "support-db".to_owned(),
            generated: true,
            adopted: true,
        });
        let first = desired_status(&Default::default(), &adopting);
        let db = condition(&first, DATABASE_READY);
        assert_eq!(
            (db.status.as_str(), db.reason.as_str()),
            (TRUE, DATABASE_ADOPTED)
        );
        assert!(
            db.message.contains("reclaimPolicy: Retain"),
            "{}",
            db.message
        );
        // Later reconciles find the database in place (not adopted again): still said.
        let later = desired_status(&first, &observed(Some(&d), &[]));
        assert_eq!(condition(&later, DATABASE_READY).reason, DATABASE_ADOPTED);
        // A fresh database is just Provisioned.
        let fresh = desired_status(&Default::default(), &observed(Some(&d), &[]));
        assert_eq!(condition(&fresh, DATABASE_READY).reason, "Provisioned");
    }

    #[test]
    fn runtime_conditions_are_unknown_until_the_runtime_reports() {
        let d = deployment();
        let status = desired_status(&Default::default(), &observed(Some(&d), &[]));
        assert!(is_true(&status.conditions, AVAILABLE));
        assert!(is_true(&status.conditions, DATABASE_READY));
        let runtime = condition(&status, RUNTIME_READY);
        assert_eq!(
            (runtime.status.as_str(), runtime.reason.as_str()),
            (UNKNOWN, "AwaitingRuntimeReport")
        );
        assert_eq!(condition(&status, MODEL_REACHABLE).status, UNKNOWN);
        assert_eq!(condition(&status, READY).status, FALSE);
        assert_eq!(
            condition(&status, SERVICE_MONITOR_READY).reason,
            "CRDNotInstalled"
        );
        assert_eq!(status.phase, Some(Phase::Provisioning));
        assert_eq!((status.replicas, status.ready_replicas), (Some(2), Some(2)));
        assert_eq!(status.ready.as_deref(), Some("2/2"));
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert_eq!(
            status.secrets.as_ref().unwrap().database.as_deref(),
            Some("support-db")
        );
        assert!(
            status.runtime.is_empty(),
            "the operator never writes runtime entries"
        );
    }

    #[test]
    fn the_runtimes_usage_report_is_neither_written_nor_a_reason_to_write() {
        let d = deployment();
        let mut current = desired_status(&Default::default(), &observed(Some(&d), &[]));
        current.usage = Some(crds::UsageStatus {
            window: "2026-12".to_owned(),
            input_tokens: 10,
            output_tokens: 5,
            cost: "0.0000045".to_owned(),
            currency: "USD".to_owned(),
            budget: Some("1".to_owned()),
            budget_spent: false,
        });
        let desired = desired_status(&current, &observed(Some(&d), &[]));
        assert_eq!(desired.usage, None, "the operator's apply never owns usage");
        let applied = serde_json::to_value(&desired).unwrap();
        assert!(applied.get("usage").is_none(), "{applied}");
        assert!(
            !status_differs(Some(&current), &desired),
            "a usage report alone does not make the operator write"
        );
    }

    #[test]
    fn reports_make_the_agent_ready_or_degraded() {
        let d = deployment();
        let ok = [report("p1", true, true), report("p2", false, false)];
        let status = desired_status(&Default::default(), &observed(Some(&d), &ok));
        assert!(is_true(&status.conditions, READY));
        assert_eq!(status.phase, Some(Phase::Ready));
        let down = [report("p1", true, false)];
        let status = desired_status(&status, &observed(Some(&d), &down));
        assert_eq!(condition(&status, MODEL_REACHABLE).status, FALSE);
        assert_eq!(status.phase, Some(Phase::Degraded));
    }

    #[test]
    fn a_runtime_that_stops_reporting_turns_runtime_ready_false() {
        let d = deployment();
        let mut old = report("p1", true, true);
        old.last_heartbeat = Time(
            Timestamp::from_second(
                Timestamp::now().as_second() - crds::RUNTIME_STALE_AFTER_SECONDS as i64 - 5,
            )
            .unwrap(),
        );
        let status = desired_status(&Default::default(), &observed(Some(&d), &[old.clone()]));
        let runtime = condition(&status, RUNTIME_READY);
        assert_eq!(
            (runtime.status.as_str(), runtime.reason.as_str()),
            (FALSE, "HeartbeatMissing")
        );
        assert!(!is_true(&status.conditions, READY));

        // A fresh report of a pod the kubelet does not count Ready does not count
        // either; another pod's still does.
        let unready = ["p1".to_owned()];
        let reports = [report("p1", true, true)];
        let status = desired_status(
            &Default::default(),
            &Observed {
                not_ready: &unready,
                ..observed(Some(&d), &reports)
            },
        );
        let runtime = condition(&status, RUNTIME_READY);
        assert_eq!(
            (runtime.status.as_str(), runtime.reason.as_str()),
            (FALSE, "PodsNotReady")
        );
        assert!(runtime.message.starts_with("1 runtime pod(s) report"));
        assert!(!is_true(&status.conditions, READY));
        let reports = [report("p1", true, true), report("p2", true, true)];
        let status = desired_status(
            &Default::default(),
            &Observed {
                not_ready: &unready,
                ..observed(Some(&d), &reports)
            },
        );
        assert_eq!(
            condition(&status, RUNTIME_READY).message,
            "1/1 runtime pods report ready"
        );

        // The sweep finds a report in the window after it went stale, and only then.
        let window = std::time::Duration::from_secs(10);
        let now = Timestamp::now();
        let aged = |seconds: i64| {
            let mut r = report("p1", true, true);
            r.last_heartbeat = Time(Timestamp::from_second(now.as_second() - seconds).unwrap());
            r
        };
        let stale_after = crds::RUNTIME_STALE_AFTER_SECONDS as i64;
        assert!(
            !went_stale_within(&[aged(stale_after)], now, window),
            "still fresh"
        );
        assert!(went_stale_within(&[aged(stale_after + 1)], now, window));
        assert!(went_stale_within(&[aged(stale_after + 10)], now, window));
        assert!(
            !went_stale_within(&[aged(stale_after + 11)], now, window),
            "found before"
        );
        assert!(went_stale_within(
            &[aged(0), aged(stale_after + 5)],
            now,
            window
        ));
        assert!(!went_stale_within(&[], now, window));
    }

    #[test]
    fn database_failures_block_ready_and_permanent_ones_fail_the_phase() {
        let mut o = observed(None, &[]);
        o.database = Some(DatabaseState::NotReady {
            reason: "NoDatabaseAdmin".to_owned(),
            message: "configure it".to_owned(),
            permanent: true,
        });
        let status = desired_status(&Default::default(), &o);
        assert_eq!(condition(&status, READY).reason, "NoDatabaseAdmin");
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.secrets.as_ref().unwrap().database, None);
    }

    #[test]
    fn an_unchanged_world_produces_no_status_write() {
        let d = deployment();
        let reports = [report("p1", true, true)];
        let first = desired_status(&Default::default(), &observed(Some(&d), &reports));
        // The live status also carries the pods' own entries; they are not ours to compare.
        let mut live = first.clone();
        live.runtime = reports.to_vec();
        let second = desired_status(&live, &observed(Some(&d), &reports));
        assert!(!status_differs(Some(&live), &second));
        // A transition is a change.
        let third = desired_status(&live, &observed(None, &reports));
        assert!(status_differs(Some(&live), &third));
        assert!(status_differs(None, &first));
    }

    /// `(status, reason, observedGeneration)` of a condition.
    fn said(status: &AgentDeploymentStatus, type_: &str) -> (String, String, Option<i64>) {
        let c = condition(status, type_);
        (c.status.clone(), c.reason.clone(), c.observed_generation)
    }

    fn said_as(status: &str, reason: &str, generation: i64) -> (String, String, Option<i64>) {
        (status.to_owned(), reason.to_owned(), Some(generation))
    }

    #[test]
    fn a_refused_spec_is_said_on_ready_and_leaves_the_other_conditions_as_they_are() {
        let d = deployment();
        let reports = [report("p1", true, true)];
        let serving = Observed {
            service_monitor: Some(ServiceMonitorState::Applied),
            ..observed(Some(&d), &reports)
        };
        let before = desired_status(&Default::default(), &serving);
        assert_eq!(before.phase, Some(Phase::Ready));

        // Generation 4 sets an image the operator refuses; generation 3's pods still run.
        let refused = Observed {
            generation: Some(4),
            refusal: Some(Refusal {
                reason: INVALID_SPEC,
                message: "spec.image \"ghcr.io/x/runtime: 1.2\" is not an image reference"
                    .to_owned(),
                taken: Vec::new(),
            }),
            database: None,
            service_monitor: None,
            ..observed(Some(&d), &reports)
        };
        let status = desired_status(&before, &refused);
        let ready = condition(&status, READY);
        assert_eq!(said(&status, READY), said_as(FALSE, INVALID_SPEC, 4));
        assert!(ready.message.contains("spec.image"), "{}", ready.message);
        assert_eq!(status.phase, Some(Phase::Failed));
        assert_eq!(status.observed_generation, Some(4));
        // What was not looked at stays as generation 3 left it, saying so.
        assert_eq!(
            said(&status, DATABASE_READY),
            said_as(TRUE, "Provisioned", 3)
        );
        assert_eq!(
            said(&status, SERVICE_MONITOR_READY),
            said_as(TRUE, "Applied", 3)
        );
        assert_eq!(
            status.secrets.as_ref().unwrap().database.as_deref(),
            Some("support-db")
        );
        // What is observed is said as it is.
        assert_eq!(said(&status, AVAILABLE).0, TRUE);
        assert_eq!(
            said(&status, RUNTIME_READY),
            said_as(TRUE, "RuntimeReady", 4)
        );

        // A new agent refused from the start: Unknown, never a made-up state.
        let new = desired_status(&Default::default(), &refused);
        for type_ in [DATABASE_READY, SERVICE_MONITOR_READY] {
            assert_eq!(said(&new, type_), said_as(UNKNOWN, NOT_RECONCILED, 4));
        }
        assert!(
            new.conditions
                .iter()
                .all(|c| c.reason != "Disabled" && (c.type_ == READY || c.reason != INVALID_SPEC)),
            "{:?}",
            new.conditions
        );
        // An older operator's DatabaseReady=False InvalidSpec is not kept.
        let mut old = new.clone();
        set_condition(
            &mut old.conditions,
            new_condition(DATABASE_READY, FALSE, INVALID_SPEC, "spec.image", Some(4)),
        );
        let fixed = desired_status(&old, &refused);
        assert_eq!(said(&fixed, DATABASE_READY).1, NOT_RECONCILED);

        // Once the spec is valid again, every condition is of the new generation.
        let valid = Observed {
            generation: Some(5),
            ..serving.clone()
        };
        let again = desired_status(&status, &valid);
        assert!(
            again
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(5))
        );
        assert_eq!(again.phase, Some(Phase::Ready));
    }

    #[test]
    fn a_child_the_api_server_refused_is_said_on_ready_for_the_current_generation() {
        let d = deployment();
        let reports = [report("p1", true, true)];
        let before = desired_status(&Default::default(), &observed(Some(&d), &reports));
        assert!(is_true(&before.conditions, READY));
        let refused = Observed {
            generation: Some(4),
            refusal: Some(Refusal {
                reason: CHILD_REFUSED,
                message: "the API server refused Deployment support as invalid at \
                          spec.template.spec.containers[0].resources (FieldValueInvalid)"
                    .to_owned(),
                taken: Vec::new(),
            }),
            ..observed(Some(&d), &reports)
        };
        let status = desired_status(&before, &refused);
        assert_eq!(said(&status, READY), said_as(FALSE, CHILD_REFUSED, 4));
        assert!(
            condition(&status, READY)
                .message
                .contains("Deployment support")
        );
        assert_eq!(status.observed_generation, Some(4));
        assert_eq!(status.phase, Some(Phase::Failed));
        // The steps that ran say what they found, for this generation.
        assert_eq!(
            said(&status, DATABASE_READY),
            said_as(TRUE, "Provisioned", 4)
        );
        assert_eq!(
            said(&status, SERVICE_MONITOR_READY),
            said_as(FALSE, "CRDNotInstalled", 4)
        );
        assert!(status_differs(Some(&before), &status));
    }

    #[test]
    fn a_taken_service_or_key_is_not_pointed_at() {
        let d = deployment();
        let reports = [report("p1", true, true)];
        let with = |taken: &[(&str, &str)]| {
            let observed = Observed {
                refusal: Some(Refusal {
                    reason: CHILD_CONFLICT,
                    message: "taken".to_owned(),
                    taken: taken
                        .iter()
                        .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
                        .collect(),
                }),
                ..observed(Some(&d), &reports)
            };
            desired_status(&Default::default(), &observed)
        };
        let service = with(&[("Service", "support")]);
        assert_eq!(
            service.endpoint, None,
            "clients would reach the other Service"
        );
        assert!(service.secrets.as_ref().unwrap().api_key.is_some());
        let key = with(&[("Secret", "support-api-key")]);
        assert!(key.endpoint.is_some());
        assert_eq!(key.secrets.as_ref().unwrap().api_key, None);
        assert!(key.secrets.as_ref().unwrap().admin_key.is_some());
        let other = with(&[("ConfigMap", "support-config")]);
        assert!(other.endpoint.is_some() && other.secrets.unwrap().api_key.is_some());
        // Every child taken, not only the first one said.
        let all = with(&[
            ("Service", "support"),
            ("Secret", "support-api-key"),
            ("Secret", "support-admin-key"),
        ]);
        assert_eq!(all.endpoint, None);
        let secrets = all.secrets.unwrap();
        assert_eq!((secrets.api_key, secrets.admin_key), (None, None));
    }

    fn scaled_to_zero() -> Deployment {
        serde_yaml::from_str(include_str!(
            "../../fixtures/deployment-scaled-to-zero.yaml"
        ))
        .unwrap()
    }

    #[test]
    fn an_agent_scaled_to_zero_is_settled_not_provisioning() {
        let zero = scaled_to_zero();
        let o = Observed {
            wanted_replicas: Some(0),
            ..observed(Some(&zero), &[])
        };
        let status = desired_status(&Default::default(), &o);
        assert_eq!(status.phase, Some(Phase::ScaledToZero));
        assert_eq!(
            said(&status, RUNTIME_READY),
            said_as(FALSE, SCALED_TO_ZERO, 3)
        );
        assert_eq!(
            said(&status, MODEL_REACHABLE),
            said_as(UNKNOWN, SCALED_TO_ZERO, 3)
        );
        assert_eq!(said(&status, READY), said_as(FALSE, SCALED_TO_ZERO, 3));
        assert!(
            condition(&status, READY)
                .message
                .contains("spec.replicas is 0")
        );
        assert_eq!(status.ready.as_deref(), Some("0/0"));
        // Settled: the next reconcile writes nothing.
        assert!(!status_differs(Some(&status), &desired_status(&status, &o)));
        // The report of a pod still shutting down does not unsettle it.
        let leaving = [report("p1", true, true)];
        let status = desired_status(
            &status,
            &Observed {
                runtime: &leaving,
                ..o.clone()
            },
        );
        assert_eq!(status.phase, Some(Phase::ScaledToZero));

        // Scaled to 0 on the Deployment while spec.replicas is unset (an autoscaler).
        let autoscaled = desired_status(
            &Default::default(),
            &Observed {
                wanted_replicas: None,
                ..o.clone()
            },
        );
        assert_eq!(autoscaled.phase, Some(Phase::ScaledToZero));
        assert!(
            condition(&autoscaled, RUNTIME_READY)
                .message
                .contains("autoscaler")
        );

        // Not yet: pods still counted, or the Deployment not yet at spec.replicas.
        let d = deployment();
        let going = desired_status(
            &Default::default(),
            &Observed {
                wanted_replicas: Some(0),
                ..observed(Some(&d), &[])
            },
        );
        assert_eq!(going.phase, Some(Phase::Provisioning));
        let scaling_up = desired_status(
            &Default::default(),
            &Observed {
                wanted_replicas: Some(1),
                ..o.clone()
            },
        );
        assert_eq!(scaling_up.phase, Some(Phase::Provisioning));
        assert_eq!(said(&scaling_up, RUNTIME_READY).1, "AwaitingRuntimeReport");
    }

    fn pod(name: &str, reason: &str, message: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "status": { "containerStatuses": [{
                "name": "runtime", "image": "registry.local/agent-runtime:nope",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": { "waiting": { "reason": reason, "message": message } },
            }]},
        }))
        .unwrap()
    }

    #[test]
    fn pods_that_cannot_get_their_image_are_found_with_the_kubelets_message() {
        let creating = pod("p0", "ContainerCreating", "");
        let backoff = pod("p2", "ImagePullBackOff", "Back-off pulling image");
        let invalid = pod("p1", "InvalidImageName", "couldn't parse image name");
        assert_eq!(image_pull_failure([&creating]), None);
        let found = image_pull_failure([&creating, &backoff, &invalid]).unwrap();
        assert_eq!(
            found,
            ImagePullFailure {
                pod: "p1".to_owned(),
                container: "runtime".to_owned(),
                image: "registry.local/agent-runtime:nope".to_owned(),
                reason: "InvalidImageName".to_owned(),
                message: "couldn't parse image name".to_owned(),
            }
        );
        for reason in IMAGE_PULL_FAILURES {
            assert!(
                image_pull_failure([&pod("p", reason, "m")]).is_some(),
                "{reason}"
            );
        }
    }

    #[test]
    fn an_image_pull_failure_makes_available_and_ready_false_with_its_message() {
        let mut d = deployment();
        let available = d
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c.type_.as_deref() == Some("Available"))
            .unwrap();
        available.status = Some(FALSE.to_owned());
        available.reason = Some("MinimumReplicasUnavailable".to_owned());
        let failing = pod(
            "support-1",
            "ErrImagePull",
            "pull access denied for registry.local/agent-runtime",
        );
        let mut o = observed(Some(&d), &[]);
        o.image_pull = image_pull_failure([&failing]);
        let status = desired_status(&Default::default(), &o);
        let available = condition(&status, AVAILABLE);
        assert_eq!(
            (available.status.as_str(), available.reason.as_str()),
            (FALSE, IMAGE_PULL_FAILED)
        );
        assert!(
            available.message.contains("support-1"),
            "{}",
            available.message
        );
        assert!(
            available.message.contains("pull access denied"),
            "{}",
            available.message
        );
        let ready = condition(&status, READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            (FALSE, IMAGE_PULL_FAILED)
        );
        assert!(ready.message.contains("pull access denied"));

        // Once the pod pulls its image the condition follows the Deployment again.
        o.image_pull = None;
        let recovered = desired_status(&status, &o);
        assert_eq!(
            condition(&recovered, AVAILABLE).reason,
            "MinimumReplicasUnavailable"
        );
    }

    #[test]
    fn a_stuck_rollout_stays_available_and_says_why() {
        let d = deployment();
        let failing = pod("support-new", "ImagePullBackOff", "Back-off pulling image");
        let mut o = observed(Some(&d), &[]);
        o.image_pull = image_pull_failure([&failing]);
        let status = desired_status(&Default::default(), &o);
        let available = condition(&status, AVAILABLE);
        assert_eq!(available.status, TRUE);
        assert!(
            available.message.contains("support-new"),
            "{}",
            available.message
        );
    }
}
