//! One watch of a kind, cached in one store and fanned out to every controller that
//! reacts to it, so two controllers never open two watches of the same objects; and
//! [`SharedTrigger`], the same fan-out without a cache, for a kind the controllers only
//! map to their own objects and never read back.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;

use futures::{Stream, StreamExt, TryStreamExt};
use kube::Resource;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::runtime::watcher::Event;
use tokio::sync::mpsc;
use tracing::warn;

use crate::index::{self, Index, IndexWriter, Values};

/// Objects queued per subscriber before the watch waits for it.
const BUFFER: usize = 256;

/// A change seen by the watch: an object applied (created or changed) or deleted.
#[derive(Clone, Debug)]
enum Change<K> {
    Applied(K),
    Deleted(K),
}

/// A watch of `K` shared by several controllers: one store, one stream from the API
/// server, one channel per subscriber.
pub struct SharedWatch<K, S>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    indexes: Vec<IndexWriter<K>>,
    source: S,
    subscribers: Vec<(mpsc::Sender<Change<K>>, bool)>,
    significant: Option<fn(&K) -> u64>,
}

impl<K, S> SharedWatch<K, S>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    /// Shares the watch events of `source` (a watcher with its backoff).
    pub fn new(source: S) -> Self {
        let (store, writer) = reflector::store();
        Self {
            store,
            writer,
            indexes: Vec::new(),
            source,
            subscribers: Vec::new(),
            significant: None,
        }
    }

    /// Hands an applied object to the subscribers only when `significant` (a hash of
    /// what they act on) differs from the last one handed over for that object: a
    /// change to the rest (a heartbeat's timestamp) still reaches the store, but
    /// wakes no controller. Deletions always go through (kube's `predicate_filter`
    /// would drop a deletion whose object hashes as before, and the subscribers of
    /// deletions need it).
    pub fn significant(mut self, significant: fn(&K) -> u64) -> Self {
        self.significant = Some(significant);
        self
    }

    /// An index of the cache's objects under `values`, kept by this watch.
    pub fn index(&mut self, values: Values<K>) -> Index<K> {
        let (index, writer) = index::index(values, self.store.clone());
        self.indexes.push(writer);
        index
    }

    /// The cache every subscriber reads.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// A stream of the objects applied, and also of those deleted when `deletions`.
    pub fn subscribe(
        &mut self,
        deletions: bool,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.subscribers.push((tx, deletions));
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|change| {
                let object = match change {
                    Change::Applied(o) | Change::Deleted(o) => o,
                };
                (Ok(object), rx)
            })
        })
    }

    /// Drives the watch: fills the store and hands each change to the subscribers.
    /// Runs until the watch ends (it does not: stop it by dropping the future).
    pub fn run(self) -> impl Future<Output = ()> + Send + 'static {
        let subscribers = self.subscribers;
        let (mut writer, mut indexes) = (self.writer, self.indexes);
        let significant = self.significant;
        let store = self.store;
        // The last hash handed over, by object (name and namespace only).
        let mut handed: HashMap<ObjectRef<K>, u64> = HashMap::new();
        let key = |o: &K| {
            let mut key = ObjectRef::from_obj(o);
            key.extra = Default::default();
            key
        };
        let filled = self.source.inspect_ok(move |event| {
            for index in &mut indexes {
                index.apply_watcher_event(event);
            }
            writer.apply_watcher_event(event);
        });
        filled.for_each(move |event| {
            let changes: Vec<Change<K>> = match event {
                Ok(Event::Apply(o) | Event::InitApply(o)) => match significant {
                    Some(significant) => {
                        let hash = significant(&o);
                        match handed.insert(key(&o), hash) {
                            Some(before) if before == hash => Vec::new(),
                            _ => vec![Change::Applied(o)],
                        }
                    }
                    None => vec![Change::Applied(o)],
                },
                Ok(Event::Delete(o)) => {
                    handed.remove(&key(&o));
                    vec![Change::Deleted(o)]
                }
                Ok(Event::InitDone) => {
                    // After a relist, objects deleted while the watch was away are no
                    // longer in the store (and no Delete came for them).
                    handed.retain(|object, _| store.get(object).is_some());
                    Vec::new()
                }
                Ok(Event::Init) => Vec::new(),
                Err(error) => {
                    warn!(kind = %K::kind(&()), %error, "watch failed; retrying with backoff");
                    Vec::new()
                }
            };
            let subscribers = subscribers.clone();
            async move {
                for change in changes {
                    let deleted = matches!(change, Change::Deleted(_));
                    for (tx, deletions) in &subscribers {
                        if deleted && !deletions {
                            continue;
                        }
                        // A subscriber that has stopped is no longer interested.
                        let _ = tx.send(change.clone()).await;
                    }
                }
            }
        })
    }
}

/// A stream of changed objects shared by several controllers with no cache: each
/// object the source yields (applied or deleted) goes to every subscriber, and is
/// then dropped.
pub struct SharedTrigger<K, S> {
    source: S,
    subscribers: Vec<mpsc::Sender<K>>,
}

impl<K, S> SharedTrigger<K, S>
where
    K: Clone + Send + 'static,
    S: Stream<Item = Result<K, watcher::Error>> + Send + 'static,
{
    /// Shares `source` (the touched objects of a watcher with its backoff; its
    /// errors are counted and logged where it is made, see `watch::observed`).
    pub fn new(source: S) -> Self {
        Self {
            source,
            subscribers: Vec::new(),
        }
    }

    /// A stream of every object the source yields from now on.
    pub fn subscribe(&mut self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.subscribers.push(tx);
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|object| (Ok(object), rx))
        })
    }

    /// Drives the source, handing each object to the subscribers. Runs until the
    /// source ends (a watcher does not: stop it by dropping the future).
    pub fn run(self) -> impl Future<Output = ()> + Send + 'static {
        let subscribers = self.subscribers;
        self.source.for_each(move |object| {
            let subscribers = subscribers.clone();
            async move {
                let Ok(object) = object else { return };
                for tx in &subscribers {
                    // A subscriber that has stopped is no longer interested.
                    let _ = tx.send(object.clone()).await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("ns".to_owned()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn every_subscriber_sees_every_change_and_the_store_fills_once() {
        let events: Vec<Result<Event<ConfigMap>, watcher::Error>> = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(cm("b"))),
            Ok(Event::Delete(cm("a"))),
        ];
        let mut shared = SharedWatch::new(futures::stream::iter(events));
        let store = shared.store();
        let primary = shared.subscribe(false);
        let watcher = shared.subscribe(true);
        shared.run().await;
        let names = |s: Vec<Result<ConfigMap, watcher::Error>>| -> Vec<String> {
            s.into_iter()
                .map(|o| o.unwrap().metadata.name.unwrap())
                .collect()
        };
        assert_eq!(names(primary.collect().await), ["a", "b"]);
        assert_eq!(names(watcher.collect().await), ["a", "b", "a"]);
        let mut cached: Vec<_> = store
            .state()
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        cached.sort();
        assert_eq!(cached, ["b"]);
    }

    #[tokio::test]
    async fn changes_to_what_is_not_significant_reach_the_store_but_no_subscriber() {
        let with = |name: &str, data: &str, beat: &str| {
            let mut o = cm(name);
            o.data = Some(
                [
                    ("data".to_owned(), data.to_owned()),
                    ("beat".to_owned(), beat.to_owned()),
                ]
                .into(),
            );
            o
        };
        let events: Vec<Result<Event<ConfigMap>, watcher::Error>> = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(with("a", "1", "t0"))),
            Ok(Event::InitDone),
            Ok(Event::Apply(with("a", "1", "t1"))),
            Ok(Event::Apply(with("a", "2", "t2"))),
            Ok(Event::Apply(with("a", "2", "t3"))),
            Ok(Event::Delete(with("a", "2", "t3"))),
            Ok(Event::Apply(with("a", "2", "t4"))),
        ];
        // Only `data` counts.
        fn data(o: &ConfigMap) -> u64 {
            o.data
                .as_ref()
                .and_then(|d| d.get("data"))
                .map_or(0, |d| d.parse().unwrap())
        }
        let mut shared = SharedWatch::new(futures::stream::iter(events)).significant(data);
        let store = shared.store();
        let primary = shared.subscribe(false);
        let watcher = shared.subscribe(true);
        shared.run().await;
        let beats = |s: Vec<Result<ConfigMap, watcher::Error>>| -> Vec<String> {
            s.into_iter()
                .map(|o| o.unwrap().data.unwrap()["beat"].clone())
                .collect()
        };
        // The first sight, the change of `data`, and (after a deletion) the object
        // made again; the deletion only to the subscriber of deletions.
        assert_eq!(beats(primary.collect().await), ["t0", "t2", "t4"]);
        assert_eq!(beats(watcher.collect().await), ["t0", "t2", "t3", "t4"]);
        let cached = store.get(&ObjectRef::new("a").within("ns")).unwrap();
        assert_eq!(
            cached.data.as_ref().unwrap()["beat"],
            "t4",
            "the store has every change"
        );
    }

    #[tokio::test]
    async fn an_object_gone_during_a_relist_is_handed_over_again_when_it_comes_back() {
        let with = |name: &str, beat: &str| {
            let mut o = cm(name);
            o.data = Some([("beat".to_owned(), beat.to_owned())].into());
            o
        };
        // Nothing counts but the name: only a first sight is handed over.
        fn nothing(_: &ConfigMap) -> u64 {
            0
        }
        let events: Vec<Result<Event<ConfigMap>, watcher::Error>> = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(with("a", "t0"))),
            Ok(Event::InitApply(with("b", "t0"))),
            Ok(Event::InitDone),
            // The watch lost its place; b was deleted meanwhile (no Delete event).
            Ok(Event::Init),
            Ok(Event::InitApply(with("a", "t1"))),
            Ok(Event::InitDone),
            // b made again.
            Ok(Event::Apply(with("b", "t2"))),
        ];
        let mut shared = SharedWatch::new(futures::stream::iter(events)).significant(nothing);
        let primary = shared.subscribe(false);
        shared.run().await;
        let seen: Vec<String> = primary
            .map(|o| {
                let o = o.unwrap();
                format!("{}@{}", o.metadata.name.unwrap(), o.data.unwrap()["beat"])
            })
            .collect()
            .await;
        assert_eq!(seen, ["a@t0", "b@t0", "b@t2"]);
    }

    #[tokio::test]
    async fn a_shared_trigger_hands_every_object_to_every_subscriber() {
        let objects: Vec<Result<ConfigMap, watcher::Error>> = vec![Ok(cm("a")), Ok(cm("b"))];
        let mut shared = SharedTrigger::new(futures::stream::iter(objects));
        let first = shared.subscribe();
        let second = shared.subscribe();
        shared.run().await;
        let names = |s: Vec<Result<ConfigMap, watcher::Error>>| -> Vec<String> {
            s.into_iter()
                .map(|o| o.unwrap().metadata.name.unwrap())
                .collect()
        };
        assert_eq!(names(first.collect().await), ["a", "b"]);
        assert_eq!(names(second.collect().await), ["a", "b"]);
    }
}
