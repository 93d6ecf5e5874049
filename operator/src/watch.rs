//! Watch streams that survive one undecodable object: objects are listed and watched
//! untyped, then decoded one by one; an object that does not decode is logged and
//! skipped instead of failing the whole list; and the watch metrics every stream
//! goes through ([`observed`]).

use std::fmt::Debug;

use futures::{Stream, StreamExt};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::metrics::Metrics;

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
