//! The resource version of every Secret the operator watches (names and versions
//! only, from the metadata watch; never a value), and the secrets digest of each pod
//! template computed from them. A reconcile used to read every Secret its pods use
//! (two GETs per reconcile of a typical agent, one after the other) to recompute a
//! digest that had not changed; now it reads them only when one of their versions
//! changed since the digest was computed, or when the watch has not seen them.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock};

use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::watcher::Event;
use sha2::{Digest, Sha256};

/// Digests kept; the map is emptied when it grows past this (each agent needs one).
const DIGESTS_KEPT: usize = 100_000;

type Key = (String, String);

/// Secrets' versions by (namespace, name), and digests by what they were made from.
#[derive(Default)]
pub struct SecretVersions {
    versions: RwLock<HashMap<Key, String>>,
    /// Per watch scope (a namespace, or `None` for all) that is re-listing: the
    /// Secrets listed so far, so those gone meanwhile are dropped when it ends.
    relisting: Mutex<HashMap<Option<String>, HashSet<Key>>>,
    digests: Mutex<HashMap<[u8; 16], String>>,
    /// (Secret, key) pairs read at a version and found to hold a value.
    held: Mutex<HashSet<Fingerprint>>,
}

/// What a digest was computed from: the namespace, the (Secret, key) pairs read and
/// each Secret's resource version.
pub type Fingerprint = [u8; 16];

impl SecretVersions {
    /// Follows one event of the Secrets' metadata watch of `scope`.
    pub fn observe(&self, scope: Option<&str>, event: &Event<PartialObjectMeta<Secret>>) {
        let key = |s: &PartialObjectMeta<Secret>| -> Option<(Key, String)> {
            Some((
                (s.metadata.namespace.clone()?, s.metadata.name.clone()?),
                s.metadata.resource_version.clone()?,
            ))
        };
        let mut versions = self.versions.write().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Apply(s) => {
                if let Some((k, v)) = key(s) {
                    versions.insert(k, v);
                }
            }
            Event::Delete(s) => {
                if let Some((k, _)) = key(s) {
                    versions.remove(&k);
                }
            }
            Event::Init => {
                self.relisting()
                    .insert(scope.map(str::to_owned), HashSet::new());
            }
            Event::InitApply(s) => {
                if let Some((k, v)) = key(s) {
                    if let Some(seen) = self.relisting().get_mut(&scope.map(str::to_owned)) {
                        seen.insert(k.clone());
                    }
                    versions.insert(k, v);
                }
            }
            Event::InitDone => {
                if let Some(seen) = self.relisting().remove(&scope.map(str::to_owned)) {
                    versions.retain(|k, _| scope.is_some_and(|ns| ns != k.0) || seen.contains(k));
                }
            }
        }
    }

    fn relisting(&self) -> std::sync::MutexGuard<'_, HashMap<Option<String>, HashSet<Key>>> {
        self.relisting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The resource version of Secret `name` as last seen by the watch.
    pub fn version(&self, namespace: &str, name: &str) -> Option<String> {
        self.versions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The digest computed before from the same Secrets' versions, if any.
    pub fn digest(&self, fingerprint: &Fingerprint) -> Option<String> {
        self.digests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(fingerprint)
            .cloned()
    }

    /// Whether Secret `name` was read at the version the watch shows now and held a
    /// non-empty `key` then. Only a value found is remembered: a missing or empty one
    /// is read again each time, so its arrival is seen at once.
    pub fn holds(&self, namespace: &str, name: &str, key: &str) -> bool {
        self.version(namespace, name).is_some_and(|version| {
            self.held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&fingerprint(
                    namespace,
                    [(name, key)],
                    [(name, version.as_str())],
                ))
        })
    }

    /// Notes that Secret `name`, read at `version`, holds a non-empty `key`.
    pub fn remember_held(&self, namespace: &str, name: &str, key: &str, version: &str) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() >= DIGESTS_KEPT {
            held.clear();
        }
        held.insert(fingerprint(namespace, [(name, key)], [(name, version)]));
    }

    /// Keeps `digest` for `fingerprint`.
    pub fn remember(&self, fingerprint: Fingerprint, digest: String) {
        let mut digests = self.digests.lock().unwrap_or_else(|e| e.into_inner());
        if digests.len() >= DIGESTS_KEPT {
            digests.clear();
        }
        digests.insert(fingerprint, digest);
    }
}

/// The fingerprint of a digest over `keys` of Secrets at `versions` (one per Secret
/// name, in the order of `keys`' names) in `namespace`.
pub fn fingerprint<'a>(
    namespace: &str,
    keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    versions: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(namespace.as_bytes());
    hasher.update([0]);
    hash_pairs(&mut hasher, keys);
    hasher.update([2]);
    hash_pairs(&mut hasher, versions);
    let mut out = [0; 16];
    out.copy_from_slice(&hasher.finalize()[..16]);
    out
}

/// Feeds each (name, value) as name, 0, value, 1.
fn hash_pairs<'a>(hasher: &mut Sha256, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (name, value) in pairs {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([1]);
    }
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;

    fn secret(ns: &str, name: &str, version: &str) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                namespace: Some(ns.to_owned()),
                name: Some(name.to_owned()),
                resource_version: Some(version.to_owned()),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    #[test]
    fn versions_follow_the_watch_and_a_relist_drops_what_went_meanwhile() {
        let v = SecretVersions::default();
        v.observe(Some("a"), &Event::Apply(secret("a", "keys", "1")));
        v.observe(None, &Event::Apply(secret("b", "other", "7")));
        assert_eq!(v.version("a", "keys").as_deref(), Some("1"));
        v.observe(Some("a"), &Event::Apply(secret("a", "keys", "2")));
        assert_eq!(v.version("a", "keys").as_deref(), Some("2"));
        v.observe(Some("a"), &Event::Apply(secret("a", "gone", "3")));
        // Namespace a is listed again without `gone`; namespace b is another scope's.
        v.observe(Some("a"), &Event::Init);
        v.observe(Some("a"), &Event::InitApply(secret("a", "keys", "4")));
        v.observe(Some("a"), &Event::InitDone);
        assert_eq!(v.version("a", "keys").as_deref(), Some("4"));
        assert_eq!(v.version("a", "gone"), None);
        assert_eq!(v.version("b", "other").as_deref(), Some("7"));
        v.observe(Some("a"), &Event::Delete(secret("a", "keys", "4")));
        assert_eq!(v.version("a", "keys"), None);
    }

    #[test]
    fn a_digest_is_found_only_for_the_same_versions() {
        let v = SecretVersions::default();
        let keys = [("model", "key"), ("db", "url")];
        let one = fingerprint("a", keys, [("db", "1"), ("model", "5")]);
        v.remember(one, "digest".to_owned());
        assert_eq!(v.digest(&one).as_deref(), Some("digest"));
        assert_eq!(
            v.digest(&fingerprint("a", keys, [("db", "2"), ("model", "5")])),
            None
        );
        assert_eq!(
            v.digest(&fingerprint("b", keys, [("db", "1"), ("model", "5")])),
            None
        );
        assert_eq!(
            v.digest(&fingerprint("a", [("model", "key")], [("model", "5")])),
            None
        );
    }
}
