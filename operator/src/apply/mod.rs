//! Applying children: server-side apply under the operator's one field manager, sent
//! only when the live child differs from the desired one (the spec changed, or someone
//! edited the child by hand); created-once objects are never rewritten.

pub mod drift;

use std::collections::BTreeMap;
use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::hash::short_hash;
use crate::names;

/// A live child as compared with the desired one: the whole object as JSON and its
/// applied-hash annotation.
pub struct Live {
    pub value: serde_json::Value,
    pub hash: Option<String>,
}

impl Live {
    /// `live`, read from the API server, as the apply compares it.
    pub fn of<K>(live: &K) -> Result<Self>
    where
        K: Resource + Serialize,
        K::DynamicType: Default,
    {
        Ok(Self {
            value: to_value(live, &K::kind(&K::DynamicType::default()))?,
            hash: live_hash(live),
        })
    }
}

/// Applies `desired` unless `live` (a child read from the API server, or a cached
/// [`Compact`](crate::compact::Compact) one, turned into JSON) already holds every
/// field of it (with the same content hash). Returns whether a write was sent.
pub async fn apply_child_against<K>(
    ctx: &Context,
    api: &Api<K>,
    desired: K,
    live: Option<Live>,
) -> Result<bool>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let mut desired = desired;
    let hash = stamp_applied_hash(&mut desired)?;
    let name = desired.name_any();
    if let Some(live) = live {
        let want = to_value(&desired, &kind)?;
        match drift::first_difference(&want, &live.value) {
            None => return Ok(false),
            Some(path) if live.hash.as_deref() == Some(hash.as_str()) => {
                info!(%kind, %name, %path, "repairing a child edited by hand");
            }
            Some(_) => {}
        }
    }
    debug!(%kind, %name, %hash, "applying");
    ctx.metrics.write(&kind, "apply");
    api.patch(
        &name,
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|source| match source {
        kube::Error::Api(ref status) if status.is_invalid() => Error::ChildRefused {
            kind: kind.clone(),
            name: name.clone(),
            source,
        },
        source => Error::kube(format!("applying {kind} {name}"))(source),
    })?;
    Ok(true)
}

/// Creates `object` unless it exists; never rewrites it. Returns whether it was created.
pub async fn create_once<K>(ctx: &Context, api: &Api<K>, object: &K) -> Result<bool>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let name = object.name_any();
    ctx.metrics.write(&kind, "create");
    let params = PostParams {
        field_manager: Some(names::FIELD_MANAGER.to_owned()),
        ..Default::default()
    };
    match api.create(&params, object).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(Error::kube(format!("creating {kind} {name}"))(e)),
    }
}

/// The applied-hash annotation of a live object, if any.
pub fn live_hash<K: Resource>(live: &K) -> Option<String> {
    live.annotations().get(names::APPLIED_HASH).cloned()
}

/// Stamps `obj` with the hash of its own content (without the stamp), so the live
/// child says which desired state it was last applied from.
pub fn stamp_applied_hash<T: Serialize + Resource>(obj: &mut T) -> Result<String> {
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .remove(names::APPLIED_HASH);
    let bytes = serde_json::to_vec(&*obj).map_err(|source| Error::Serialize {
        what: "child".to_owned(),
        source,
    })?;
    let hash = short_hash(&bytes);
    let annotations = obj.meta_mut().annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(names::APPLIED_HASH.to_owned(), hash.clone());
    Ok(hash)
}

fn to_value<T: Serialize>(object: &T, kind: &str) -> Result<serde_json::Value> {
    serde_json::to_value(object).map_err(|source| Error::Serialize {
        what: kind.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use kube::api::ObjectMeta;

    #[test]
    fn applied_hash_is_stable_and_content_sensitive() {
        let service = Service {
            metadata: ObjectMeta {
                name: Some("support".to_owned()),
                labels: Some(BTreeMap::from([("a".to_owned(), "b".to_owned())])),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut a = service.clone();
        let mut b = service;
        let ha = stamp_applied_hash(&mut a).unwrap();
        assert_eq!(ha, stamp_applied_hash(&mut b).unwrap());
        assert_eq!(
            ha,
            stamp_applied_hash(&mut a).unwrap(),
            "re-stamping ignores the old stamp"
        );
        b.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("x".to_owned(), "y".to_owned());
        assert_ne!(ha, stamp_applied_hash(&mut b).unwrap());
    }
}
