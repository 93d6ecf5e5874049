//! Children cached as compact JSON. The operator caches every child it applies so a
//! reconcile can compare it with what is wanted without asking the API server; held
//! as typed k8s-openapi structs, a runtime Deployment took ~23 KiB (a `Volume` alone is
//! 3.3 KiB, almost all of it options that are never set), a third of the operator's
//! memory per agent. A [`Compact`] keeps the object as the JSON text the API server
//! sent, parsed only when a reconcile reads it, and typed only what is read without
//! parsing: the identity the cache keys it by, the applied-hash annotation, the
//! controlling owner and the Secrets its containers read. (Typed metadata cost
//! ~1.2 KiB more per child than its JSON: a `BTreeMap` of labels allocates room for
//! eleven entries, however few it holds.)

use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::names;

/// A cached object of kind `K`: its JSON text, and the few fields read without it.
pub struct Compact<K> {
    /// Name, namespace, resource version and uid only (what the cache keys it by);
    /// the rest of the metadata is in `body`.
    metadata: ObjectMeta,
    /// The whole object, as JSON.
    body: Box<str>,
    /// The `switchboard.dev/applied-hash` annotation.
    applied_hash: Option<Box<str>>,
    /// The kind and name of the owner reference with `controller: true`.
    controller: Option<(Box<str>, Box<str>)>,
    /// The Secrets the object's containers read through `secretKeyRef`, so mapping a
    /// Secret to the objects reading it never parses a body.
    secret_refs: Box<[Box<str>]>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            body: self.body.clone(),
            applied_hash: self.applied_hash.clone(),
            controller: self.controller.clone(),
            secret_refs: self.secret_refs.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Compact<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compact")
            .field("metadata", &self.metadata)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl<K> Compact<K>
where
    K: Resource + Serialize + DeserializeOwned,
{
    /// The compact form of `object`.
    pub fn new(object: &K) -> Result<Self, serde_json::Error> {
        let value = serde_json::to_value(object)?;
        let mut secret_refs = Vec::new();
        collect_secret_refs(&value, &mut secret_refs);
        secret_refs.sort();
        secret_refs.dedup();
        let meta = object.meta();
        Ok(Self {
            metadata: identity(meta),
            body: serde_json::to_string(&value)?.into_boxed_str(),
            applied_hash: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(names::APPLIED_HASH))
                .map(|h| h.as_str().into()),
            controller: crate::apply::controller_of(meta)
                .map(|o| (o.kind.as_str().into(), o.name.as_str().into())),
            secret_refs: secret_refs
                .into_iter()
                .map(String::into_boxed_str)
                .collect(),
            kind: PhantomData,
        })
    }

    /// The whole object as JSON.
    pub fn value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.body)
    }

    /// The whole object, typed.
    pub fn object(&self) -> Result<K, serde_json::Error> {
        serde_json::from_str(&self.body)
    }

    /// The hash of the desired state the object was last applied from
    /// (the `switchboard.dev/applied-hash` annotation).
    pub fn applied_hash(&self) -> Option<&str> {
        self.applied_hash.as_deref()
    }

    /// The name of the object's controlling owner when that owner is of kind `kind`.
    pub fn controlled_by(&self, kind: &str) -> Option<&str> {
        self.controller
            .as_ref()
            .filter(|(k, _)| &**k == kind)
            .map(|(_, name)| &**name)
    }

    /// The Secrets the object's containers read through `secretKeyRef`, sorted.
    pub fn secret_refs(&self) -> &[Box<str>] {
        &self.secret_refs
    }

    /// Whether the object reads Secret `name` (see [`Compact::secret_refs`]).
    pub fn reads_secret(&self, name: &str) -> bool {
        self.secret_refs.iter().any(|s| &**s == name)
    }
}

/// The part of `meta` a cache keys an object by: name, namespace, resource version, uid.
pub fn identity(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        resource_version: meta.resource_version.clone(),
        uid: meta.uid.clone(),
        ..ObjectMeta::default()
    }
}

/// Collects the `name` of every `secretKeyRef` in `value`.
fn collect_secret_refs(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "secretKeyRef"
                    && let Some(name) = v.get("name").and_then(Value::as_str)
                {
                    into.push(name.to_owned());
                } else {
                    collect_secret_refs(v, into);
                }
            }
        }
        Value::Array(list) => list.iter().for_each(|v| collect_secret_refs(v, into)),
        _ => {}
    }
}

/// The items of `Resource` for a cached form of kind `$kind` whose `metadata` field
/// holds its identity: the kind's names, and that metadata.
macro_rules! cached_resource_items {
    ($kind:ty) => {
        fn kind(dt: &()) -> ::std::borrow::Cow<'_, str> {
            <$kind>::kind(dt)
        }

        fn group(dt: &()) -> ::std::borrow::Cow<'_, str> {
            <$kind>::group(dt)
        }

        fn version(dt: &()) -> ::std::borrow::Cow<'_, str> {
            <$kind>::version(dt)
        }

        fn plural(dt: &()) -> ::std::borrow::Cow<'_, str> {
            <$kind>::plural(dt)
        }

        fn meta(&self) -> &ObjectMeta {
            &self.metadata
        }

        /// The identity only: a change to any other field of it is not kept (the
        /// cache never changes its objects).
        fn meta_mut(&mut self) -> &mut ObjectMeta {
            &mut self.metadata
        }
    };
}
pub(crate) use cached_resource_items;

impl<K> Resource for Compact<K>
where
    K: Resource<DynamicType = ()>,
{
    type DynamicType = ();
    type Scope = K::Scope;

    cached_resource_items!(K);
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::ResourceExt;
    use serde_json::json;

    use super::Compact;

    fn deployment() -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "support",
                "namespace": "tenant-a",
                "labels": { "app.kubernetes.io/instance": "support" },
                "annotations": { "switchboard.dev/applied-hash": "abc" },
                "ownerReferences": [
                    { "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "other", "uid": "u0" },
                    { "apiVersion": "switchboard.dev/v1alpha1", "kind": "AgentDeployment",
                      "name": "support", "uid": "u1", "controller": true }
                ]
            },
            "spec": {
                "replicas": 2,
                "selector": { "matchLabels": { "app": "support" } },
                "template": {
                    "metadata": { "labels": { "app": "support" } },
                    "spec": {
                        "containers": [{
                            "name": "runtime",
                            "image": "runtime:1",
                            "env": [
                                { "name": "A", "valueFrom": { "secretKeyRef": { "name": "model-credentials", "key": "k" } } },
                                { "name": "B", "valueFrom": { "secretKeyRef": { "name": "support-db", "key": "url" } } },
                                { "name": "C", "value": "literal" }
                            ]
                        }],
                        "volumes": [{ "name": "keys", "secret": { "secretName": "support-api-key" } }]
                    }
                }
            },
            "status": { "replicas": 2, "availableReplicas": 1 }
        }))
        .unwrap()
    }

    #[test]
    fn the_compact_form_gives_back_the_same_object() {
        let d = deployment();
        let compact = Compact::new(&d).unwrap();
        assert_eq!(compact.object().unwrap(), d);
        assert_eq!(compact.value().unwrap(), serde_json::to_value(&d).unwrap());
        assert_eq!(compact.name_any(), "support");
        assert_eq!(compact.namespace().as_deref(), Some("tenant-a"));
        assert_eq!(compact.applied_hash(), Some("abc"));
        assert_eq!(compact.controlled_by("AgentDeployment"), Some("support"));
        assert_eq!(compact.controlled_by("ChatChannel"), None);
    }

    #[test]
    fn the_secrets_read_through_the_environment_are_known_without_parsing() {
        let compact = Compact::new(&deployment()).unwrap();
        assert!(compact.reads_secret("model-credentials"));
        assert!(compact.reads_secret("support-db"));
        // A mounted Secret is a file the runtime re-reads, not an environment value.
        assert!(!compact.reads_secret("support-api-key"));
        assert!(!compact.reads_secret("other"));
    }
}
