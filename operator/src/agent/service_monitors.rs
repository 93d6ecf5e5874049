//! The ServiceMonitors the operator made, cached while their CRD is installed. The
//! Prometheus Operator's CRD may come and go, so the watch runs only while the CRD is
//! there: without it, a probe every 30 s (the context's CRD probe); with it, a watch of
//! the ServiceMonitors the operator labelled that fills a cache and wakes the agent
//! owning one that changed or went (so a hand edit or deletion is repaired at once,
//! not at the next resync). A CRD installed while the operator runs wakes every agent
//! once the watch has listed, so their ServiceMonitors come within a probe's time,
//! not at the next resync. When the watch finds the CRD gone, the cache is emptied
//! and the probing starts again. Until the cache has listed, the apply reads the
//! ServiceMonitor live, as it did before there was a cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crds::AgentDeployment;
use futures::{Stream, StreamExt};
use kube::Client;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use tokio::sync::mpsc;
use tracing::info;

use super::build::service_monitor::ServiceMonitor;
use super::watches::{api, compact, converted, managed};
use crate::compact::Compact;
use crate::context::Context;
use crate::metrics::Metrics;
use crate::watch::{observed, slim_metadata};

/// The cached ServiceMonitors, and whether the cache holds all of them.
#[derive(Clone)]
pub struct ServiceMonitors {
    store: Store<Compact<ServiceMonitor>>,
    listed: Arc<AtomicBool>,
}

impl ServiceMonitors {
    /// The cached ServiceMonitor `name` of `namespace`: `None` when the cache has not
    /// listed them (read it live), `Some(None)` when there is none.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Option<Arc<Compact<ServiceMonitor>>>> {
        self.listed
            .load(Ordering::Acquire)
            .then(|| self.store.get(&ObjectRef::new(name).within(namespace)))
    }
}

/// How long to wait before watching again after a failure other than the CRD's
/// absence (doubling up to [`MAX_RETRY`]).
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Time between probes for the CRD while it is absent.
const PROBE_EVERY: Duration = Duration::from_secs(30);

/// Starts the watch (a task of its own, which ends when the returned stream is
/// dropped); returns the cache and the agents whose ServiceMonitor changed or went
/// (every agent of `agents` when the CRD came).
pub fn watch(
    shared: Arc<Context>,
    namespace: Option<String>,
    agents: Store<AgentDeployment>,
) -> (
    ServiceMonitors,
    impl Stream<Item = ObjectRef<AgentDeployment>> + Send + 'static,
) {
    let (store, writer) = reflector::store();
    let monitors = ServiceMonitors {
        store,
        listed: Arc::new(AtomicBool::new(false)),
    };
    let (changed, woken) = mpsc::unbounded_channel();
    let controller_gone = changed.clone();
    let watching = Watching {
        writer,
        listed: monitors.listed.clone(),
        changed,
        agents,
    };
    tokio::spawn(async move {
        tokio::select! {
            () = run(shared, namespace, watching) => {}
            () = controller_gone.closed() => {}
        }
    });
    let woken = futures::stream::unfold(woken, |mut woken| async move {
        woken.recv().await.map(|agent| (agent, woken))
    });
    (monitors, woken)
}

/// What the watch task fills and tells.
struct Watching {
    writer: reflector::store::Writer<Compact<ServiceMonitor>>,
    listed: Arc<AtomicBool>,
    changed: mpsc::UnboundedSender<ObjectRef<AgentDeployment>>,
    agents: Store<AgentDeployment>,
}

async fn run(shared: Arc<Context>, namespace: Option<String>, mut watching: Watching) {
    let metrics: &Metrics = &shared.metrics;
    // Whether this process saw the CRD missing: its coming then wakes every agent.
    let mut was_missing = false;
    loop {
        if !shared.service_monitor_crd_installed().await {
            was_missing = true;
            tokio::time::sleep(PROBE_EVERY).await;
            continue;
        }
        watch_while_installed(
            &shared.client,
            namespace.as_deref(),
            metrics,
            &mut watching,
            was_missing,
        )
        .await;
        was_missing = true;
        let Watching { writer, listed, .. } = &mut watching;
        // The CRD went: nothing is cached, and the applies read live again.
        listed.store(false, Ordering::Release);
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        shared.forget_service_monitor_crd();
        info!("the ServiceMonitor CRD is gone; probing for it again");
    }
}

/// Watches until the API server says the kind does not exist (or the controller is
/// gone); `came` wakes every agent at the first listing.
async fn watch_while_installed(
    client: &Client,
    namespace: Option<&str>,
    metrics: &Metrics,
    watching: &mut Watching,
    came: bool,
) {
    let Watching {
        writer,
        listed,
        changed,
        agents,
    } = watching;
    let mut first_listing = came;
    let stream = observed(
        watcher::watcher(api::<ServiceMonitor>(client, namespace), managed()),
        metrics,
        "ServiceMonitor",
    );
    futures::pin_mut!(stream);
    let mut retry = FIRST_RETRY;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) if kind_missing(&error) => return,
            // Counted and logged by `observed`.
            Err(_) => {
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
        };
        retry = FIRST_RETRY;
        let event = event.modify(slim_metadata::<ServiceMonitor>);
        if let Some(cached) = converted(&event, compact) {
            writer.apply_watcher_event(&cached);
        }
        match &event {
            Event::InitDone => {
                listed.store(true, Ordering::Release);
                if std::mem::take(&mut first_listing) {
                    info!(
                        "the ServiceMonitor CRD is installed; every agent gets its ServiceMonitor"
                    );
                    for agent in agents.state() {
                        if changed.send(ObjectRef::from_obj(&*agent)).is_err() {
                            return;
                        }
                    }
                }
            }
            Event::Apply(monitor) | Event::Delete(monitor) => {
                if let Some(agent) = owner(monitor)
                    && changed.send(agent).is_err()
                {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// Whether the watch failed because the kind is not served (its CRD is gone).
fn kind_missing(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code == 404,
        watcher::Error::WatchError(status) => status.code == 404,
        _ => false,
    }
}

/// The agent that owns `monitor`.
fn owner(monitor: &ServiceMonitor) -> Option<ObjectRef<AgentDeployment>> {
    let namespace = monitor.namespace()?;
    monitor
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == AgentDeployment::kind(&()))
        .map(|o| ObjectRef::new(&o.name).within(&namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn status(code: u16) -> Box<Status> {
        let mut status = Status::failure("x", "NotFound");
        status.code = code;
        Box::new(status)
    }

    #[test]
    fn only_a_404_says_the_crd_is_gone() {
        let api = |code| kube::Error::Api(status(code));
        assert!(kind_missing(&watcher::Error::InitialListFailed(api(404))));
        assert!(kind_missing(&watcher::Error::WatchStartFailed(api(404))));
        assert!(kind_missing(&watcher::Error::WatchError(status(404))));
        assert!(!kind_missing(&watcher::Error::InitialListFailed(api(403))));
        assert!(!kind_missing(&watcher::Error::WatchError(status(410))));
        assert!(!kind_missing(&watcher::Error::NoResourceVersion));
    }

    #[test]
    fn a_service_monitor_wakes_the_agent_that_controls_it() {
        let monitor: ServiceMonitor = serde_json::from_value(serde_json::json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": { "name": "support", "namespace": "tenant-a", "ownerReferences": [
                { "apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "u0" },
                { "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentDeployment",
                  "name": "support", "uid": "u1", "controller": true }
            ]},
            "spec": {}
        }))
        .unwrap();
        let agent = owner(&monitor).unwrap();
        assert_eq!(
            (agent.name.as_str(), agent.namespace.as_deref()),
            ("support", Some("tenant-a"))
        );
        let mut orphan = monitor.clone();
        orphan.metadata.owner_references = None;
        assert!(owner(&orphan).is_none());
    }
}
