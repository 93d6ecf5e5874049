//! State shared by every reconcile: the client, the one event publisher, metrics,
//! configuration, the managed-database server, and per-object retry backoff.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::EventType;
use tracing::warn;

use crate::backoff::Backoff;
use crate::config::Config;
use crate::database::Provisioner;
use crate::events::{Events, NewEvent};
use crate::metrics::Metrics;
use crate::secret_versions::SecretVersions;

/// How long a ServiceMonitor CRD probe result is trusted.
const PROBE_TTL: Duration = Duration::from_secs(30);

/// Children found taken (`kind namespace/name`), each with the namespace and name
/// of the agent that wants it.
pub type Taken = std::collections::HashMap<String, (String, String)>;

/// Shared by every reconcile of every controller.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// The operator's configuration.
    pub config: Config,
    /// The one event publisher.
    pub events: Events,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The managed-database server, if configured.
    pub database: Option<Arc<dyn Provisioner>>,
    /// Retry backoff of every object of every controller.
    pub backoff: Backoff,
    /// Every watched Secret's resource version, and the digests made from them.
    pub secret_versions: Arc<SecretVersions>,
    /// Children found taken by an object the operator does not control (`kind
    /// namespace/name`), each with the agent that wants it (`namespace/name`): read
    /// before they are written, so an agent waiting for the name sends no refused
    /// create at every resync. Forgotten when the child is made, and swept for agents
    /// deleted meanwhile ([`Context::forget_taken_unless`]).
    pub(crate) taken: Mutex<Taken>,
    service_monitor_probe: Mutex<Option<(Instant, bool)>>,
}

impl Context {
    /// The children found taken by an object the operator does not control, locked.
    pub fn taken(&self) -> std::sync::MutexGuard<'_, Taken> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the taken children of the agents `live` says are gone (it is given
    /// an agent's namespace and name); returns how many were forgotten.
    pub fn forget_taken_unless(&self, live: impl Fn(&str, &str) -> bool) -> usize {
        let mut taken = self.taken();
        let before = taken.len();
        taken.retain(|_, (namespace, name)| live(namespace, name));
        before - taken.len()
    }

    /// Builds the context.
    pub fn new(
        client: Client,
        config: Config,
        metrics: Metrics,
        database: Option<Arc<dyn Provisioner>>,
    ) -> Self {
        Self {
            events: Events::new(
                client.clone(),
                crate::names::FIELD_MANAGER.to_owned(),
                config.identity(),
            ),
            client,
            config,
            metrics,
            database,
            backoff: Backoff::default(),
            secret_versions: Arc::default(),
            taken: Mutex::default(),
            service_monitor_probe: Mutex::new(None),
        }
    }

    /// Publishes an event about `object`; a failure to publish is logged, not fatal.
    pub async fn event(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = NewEvent {
            type_,
            reason,
            action,
            note: fit_note(note),
        };
        // Boxed: the reconciles' futures stay small (a debug build's test thread
        // overflowed its stack with the publish inline).
        let (verb, published) = Box::pin(self.events.publish(event, object)).await;
        self.metrics.write("Event", verb);
        if let Err(error) = published {
            warn!(%error, reason, "could not publish event");
        }
    }

    /// Drops the last probe for the ServiceMonitor CRD (it was found gone), so the
    /// next question probes again.
    pub fn forget_service_monitor_crd(&self) {
        *self
            .service_monitor_probe
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether the ServiceMonitor CRD is served, from a probe at most 30 s old.
    pub async fn service_monitor_crd_installed(&self) -> bool {
        if let Some((at, installed)) = *self
            .service_monitor_probe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < PROBE_TTL
        {
            return installed;
        }
        let installed = match self
            .client
            .list_api_group_resources("monitoring.coreos.com/v1")
            .await
        {
            Ok(list) => list.resources.iter().any(|r| r.name == "servicemonitors"),
            Err(kube::Error::Api(e)) if e.code == 404 => false,
            Err(error) => {
                warn!(%error, "probing for the ServiceMonitor CRD failed; assuming absent");
                false
            }
        };
        *self
            .service_monitor_probe
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), installed));
        installed
    }
}

/// The API server refuses an event whose note is longer than 1,024 bytes: a longer
/// one is cut at a character boundary, ending in an ellipsis.
fn fit_note(mut note: String) -> String {
    const LIMIT: usize = 1024;
    if note.len() <= LIMIT {
        return note;
    }
    let mut end = LIMIT - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push('…');
    note
}

#[cfg(test)]
mod note_tests {
    use super::fit_note;

    #[test]
    fn a_long_note_is_cut_to_what_the_api_server_takes() {
        assert_eq!(fit_note("short".to_owned()), "short");
        let cut = fit_note("é".repeat(700));
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
        assert_eq!(fit_note("a".repeat(1024)).len(), 1024);
    }
}
