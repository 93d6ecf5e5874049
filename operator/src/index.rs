//! Secondary indexes over the reflector caches (client-go's `Indexer`): the objects of
//! a namespace under a value (the pods of an agent, the Deployments reading a Secret),
//! found without walking the whole cache. A reconcile or a watch mapping that walked
//! every cached object made a cold start of N agents cost O(N²).
//!
//! An [`IndexWriter`] is fed the watch events its cache's writer is fed, just before
//! it (so a reconcile triggered by an event finds the object under its values), and
//! keeps only names: an [`Index`] holds its cache and [`Index::get`] reads the objects
//! from it. A reader checks what it gets as it checked what it walked before: the index
//! tells where to look, the cache what is there.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::Event;

/// The values an object is indexed under (none: it is not indexed).
pub type Values<K> = fn(&K) -> Vec<Box<str>>;

/// The names of the objects under each value of each namespace.
#[derive(Debug, Default)]
struct Entries {
    /// `namespace/value` → the names of the namespace's objects under it.
    by_value: HashMap<Box<str>, BTreeSet<Box<str>>>,
    /// `namespace/name` → the values the object is under.
    values_of: HashMap<Box<str>, Box<[Box<str>]>>,
}

/// Namespaces and names never hold a `/`, so the joined key is unambiguous.
fn key(namespace: &str, part: &str) -> Box<str> {
    format!("{namespace}/{part}").into_boxed_str()
}

impl Entries {
    fn insert(&mut self, namespace: &str, name: &str, values: Vec<Box<str>>) {
        self.remove(namespace, name);
        if values.is_empty() {
            return;
        }
        for value in &values {
            self.by_value
                .entry(key(namespace, value))
                .or_default()
                .insert(name.into());
        }
        self.values_of
            .insert(key(namespace, name), values.into_boxed_slice());
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        let Some(values) = self.values_of.remove(&*key(namespace, name)) else {
            return;
        };
        for value in values {
            let value = key(namespace, &value);
            if let Some(names) = self.by_value.get_mut(&value) {
                names.remove(name);
                if names.is_empty() {
                    self.by_value.remove(&value);
                }
            }
        }
    }
}

/// Reads an index over its cache: cheap to clone, shared with its [`IndexWriter`].
pub struct Index<K: Resource<DynamicType = ()> + 'static> {
    entries: Arc<RwLock<Entries>>,
    store: Store<K>,
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for Index<K> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            store: self.store.clone(),
        }
    }
}

/// Keeps an [`Index`] in step with the watch events of its cache.
pub struct IndexWriter<K> {
    entries: Arc<RwLock<Entries>>,
    values: Values<K>,
    /// A relist in progress: the entries it has listed so far, swapped in when it
    /// ends (as the cache's writer does, so the two change together).
    relist: Option<Entries>,
}

/// A new index of `store`'s objects under `values`, empty until fed the events
/// `store`'s writer is fed.
pub fn index<K: Resource<DynamicType = ()> + 'static>(
    values: Values<K>,
    store: Store<K>,
) -> (Index<K>, IndexWriter<K>) {
    let entries = Arc::new(RwLock::new(Entries::default()));
    (
        Index {
            entries: entries.clone(),
            store,
        },
        IndexWriter {
            entries,
            values,
            relist: None,
        },
    )
}

impl<K: Resource> IndexWriter<K> {
    /// Applies one watch event (the one the cache's writer applies).
    pub fn apply_watcher_event(&mut self, event: &Event<K>) {
        let identity = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            Event::Apply(o) => {
                let (namespace, name) = identity(o);
                write(&self.entries).insert(&namespace, &name, (self.values)(o));
            }
            Event::Delete(o) => {
                let (namespace, name) = identity(o);
                write(&self.entries).remove(&namespace, &name);
            }
            Event::Init => self.relist = Some(Entries::default()),
            Event::InitApply(o) => {
                let (namespace, name) = identity(o);
                let values = (self.values)(o);
                match &mut self.relist {
                    Some(relist) => relist.insert(&namespace, &name, values),
                    None => write(&self.entries).insert(&namespace, &name, values),
                }
            }
            Event::InitDone => {
                if let Some(relist) = self.relist.take() {
                    *write(&self.entries) = relist;
                }
            }
        }
    }
}

/// The entries, written; a writer that panicked left them whole (each change is
/// made under one lock), so a poisoned lock is taken as it is.
fn write(entries: &RwLock<Entries>) -> std::sync::RwLockWriteGuard<'_, Entries> {
    entries
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<K> Index<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// The cached objects of `namespace` under `value` (those the cache no longer
    /// holds are left out).
    pub fn get(&self, namespace: &str, value: &str) -> Vec<Arc<K>> {
        let names: Vec<Box<str>> = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_value
            .get(&*key(namespace, value))
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default();
        names
            .iter()
            .filter_map(|name| self.store.get(&ObjectRef::new(name).within(namespace)))
            .collect()
    }
}

/// An index of the objects `store` holds now (for tests, whose caches are filled once).
#[cfg(test)]
pub fn of_store<K>(store: &Store<K>, values: Values<K>) -> Index<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let (index, mut writer) = index(values, store.clone());
    writer.apply_watcher_event(&Event::Init);
    for object in store.state() {
        writer.apply_watcher_event(&Event::InitApply((*object).clone()));
    }
    writer.apply_watcher_event(&Event::InitDone);
    index
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector;

    /// A ConfigMap indexed under the values listed in its data key `v` (comma-separated).
    fn cm(namespace: &str, name: &str, values: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            data: Some([("v".to_owned(), values.to_owned())].into()),
            ..Default::default()
        }
    }

    fn values(cm: &ConfigMap) -> Vec<Box<str>> {
        cm.data
            .as_ref()
            .and_then(|d| d.get("v"))
            .map_or_else(Vec::new, |v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(Into::into)
                    .collect()
            })
    }

    struct Fixture {
        writer: reflector::store::Writer<ConfigMap>,
        index: Index<ConfigMap>,
        index_writer: IndexWriter<ConfigMap>,
    }

    impl Fixture {
        fn new() -> Self {
            let (store, writer) = reflector::store();
            let (index, index_writer) = index(values, store.clone());
            Self {
                writer,
                index,
                index_writer,
            }
        }

        fn apply(&mut self, event: Event<ConfigMap>) {
            self.index_writer.apply_watcher_event(&event);
            self.writer.apply_watcher_event(&event);
        }

        fn names(&self, namespace: &str, value: &str) -> Vec<String> {
            let mut names: Vec<String> = self
                .index
                .get(namespace, value)
                .iter()
                .map(|o| o.name_any())
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn objects_are_found_under_each_of_their_values_within_their_namespace() {
        let mut f = Fixture::new();
        f.apply(Event::Apply(cm("a", "one", "x,y")));
        f.apply(Event::Apply(cm("a", "two", "y")));
        f.apply(Event::Apply(cm("b", "three", "y")));
        f.apply(Event::Apply(cm("a", "none", "")));
        assert_eq!(f.names("a", "x"), ["one"]);
        assert_eq!(f.names("a", "y"), ["one", "two"]);
        assert_eq!(f.names("b", "y"), ["three"]);
        assert!(f.names("a", "z").is_empty());
        assert!(f.names("c", "y").is_empty());
    }

    #[test]
    fn a_change_moves_the_object_and_a_deletion_removes_it() {
        let mut f = Fixture::new();
        f.apply(Event::Apply(cm("a", "one", "x,y")));
        f.apply(Event::Apply(cm("a", "one", "z")));
        assert!(f.names("a", "x").is_empty());
        assert!(f.names("a", "y").is_empty());
        assert_eq!(f.names("a", "z"), ["one"]);
        f.apply(Event::Delete(cm("a", "one", "z")));
        assert!(f.names("a", "z").is_empty());
        let entries = f.index.entries.read().unwrap();
        assert!(entries.by_value.is_empty() && entries.values_of.is_empty());
    }

    #[test]
    fn a_relist_replaces_the_entries_when_it_ends() {
        let mut f = Fixture::new();
        f.apply(Event::Apply(cm("a", "gone", "x")));
        f.apply(Event::Init);
        f.apply(Event::InitApply(cm("a", "kept", "x")));
        // Until the relist ends, the index and the cache still answer as before it.
        assert_eq!(f.names("a", "x"), ["gone"]);
        f.apply(Event::InitDone);
        assert_eq!(f.names("a", "x"), ["kept"]);
    }

    #[test]
    fn an_object_the_cache_no_longer_holds_is_left_out() {
        let mut f = Fixture::new();
        f.apply(Event::Apply(cm("a", "one", "x")));
        // The cache's writer saw the deletion, the index's not yet.
        f.writer
            .apply_watcher_event(&Event::Delete(cm("a", "one", "x")));
        assert!(f.names("a", "x").is_empty());
    }
}
