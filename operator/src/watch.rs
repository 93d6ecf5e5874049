//! Watch streams that survive one undecodable object: objects are listed and watched
//! untyped, then decoded one by one; an object that does not decode is logged and
//! skipped instead of failing the whole list; and the watch metrics every stream
//! goes through ([`observed`]).

use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::metrics::Metrics;
use crate::secret_versions::SecretVersions;

/// A watcher of `K` in `namespace` (all when `None`) that skips undecodable objects.
pub fn tolerant_watcher<K>(
    client: Client,
    namespace: Option<&str>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send + 'static,
{
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    watcher::watcher(api, config).filter_map(|event| async move {
        match event {
            Err(e) => Some(Err(e)),
            Ok(event) => decode_event(event).map(Ok),
        }
    })
}

/// Counts `stream`'s errors and its restarts (every fresh list after the first)
/// under `kind` in the operator's watch metrics.
pub fn observed<K, S>(
    stream: S,
    metrics: &Metrics,
    kind: &str,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    metrics.declare_watch(kind);
    let errors = metrics.watch_errors.with_label_values(&[kind]);
    let restarts = metrics.watch_restarts.with_label_values(&[kind]);
    let kind = kind.to_owned();
    let mut listed = false;
    stream.inspect(move |event| match event {
        Err(error) => {
            errors.inc();
            warn!(%kind, %error, "watch failed; retrying with backoff");
        }
        Ok(Event::Init) => {
            if listed {
                restarts.inc();
            }
            listed = true;
        }
        Ok(_) => {}
    })
}

/// Every Secret of `namespace` (all when `None`), by metadata only and reduced to
/// its name, namespace and resource version, as they change or go: for controllers
/// that map a Secret to the objects reading it (ToolServer headers, the runtime's
/// environment). Uncached: each object is dropped once mapped, its version noted in
/// `versions`. The metadata never carries a value, and kubectl's last-applied copy
/// (which can) is dropped at once.
pub fn secret_changes(
    client: Client,
    namespace: Option<&str>,
    metrics: &Metrics,
    versions: Arc<SecretVersions>,
) -> impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    let scope = namespace.map(str::to_owned);
    let api: Api<PartialObjectMeta<Secret>> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    observed(
        watcher::watcher(api, watcher::Config::default()),
        metrics,
        "Secret",
    )
    .default_backoff()
    .modify(|object: &mut PartialObjectMeta<Secret>| {
        let meta = std::mem::take(&mut object.metadata);
        object.metadata = ObjectMeta {
            name: meta.name,
            namespace: meta.namespace,
            resource_version: meta.resource_version,
            ..ObjectMeta::default()
        };
    })
    .inspect_ok(move |event| versions.observe(scope.as_deref(), event))
    .touched_objects()
}

/// The annotation `kubectl apply` (client-side) keeps a whole copy of the object in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops from a cached object's metadata what no reconcile reads and what can be
/// larger than the rest of it: the managed fields and kubectl's last-applied copy.
pub fn slim_metadata<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

fn decode_event<K>(event: Event<DynamicObject>) -> Option<Event<K>>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    Some(match event {
        Event::Apply(o) => Event::Apply(decode(o)?),
        Event::InitApply(o) => Event::InitApply(decode(o)?),
        Event::Delete(o) => Event::Delete(decode(o)?),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    })
}

fn decode<K>(object: DynamicObject) -> Option<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let name = object.metadata.name.clone().unwrap_or_default();
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    match object.try_parse::<K>() {
        Ok(k) => Some(k),
        Err(error) => {
            warn!(
                kind = %K::kind(&()),
                %namespace,
                %name,
                %error,
                "skipping an object that does not decode; fix or delete it"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use kube::api::ObjectMeta;

    #[test]
    fn slim_metadata_drops_managed_fields_and_the_last_applied_copy_only() {
        let mut cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("a".to_owned()),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                annotations: Some(
                    [
                        (LAST_APPLIED.to_owned(), "{...}".to_owned()),
                        ("keep".to_owned(), "me".to_owned()),
                    ]
                    .into_iter()
                    .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        slim_metadata(&mut cm);
        assert!(cm.metadata.managed_fields.is_none());
        let annotations = cm.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["keep"]);
        cm.metadata.annotations = Some(
            [(LAST_APPLIED.to_owned(), "{...}".to_owned())]
                .into_iter()
                .collect(),
        );
        slim_metadata(&mut cm);
        assert!(cm.metadata.annotations.is_none());
    }
}
