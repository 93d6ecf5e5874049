//! Applying children: server-side apply under the operator's one field manager, sent
//! only when the live child differs from the desired one (the spec changed, or someone
//! edited the child by hand); created-once objects are never rewritten.

pub mod drift;

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
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
/// [`Compact`](crate::compact::Compact) one, turned into JSON; `None` when the cache
/// does not hold it, and it is created if absent, see [`create_absent`]) already holds
/// every field of it (with the same content hash). An object of that name the owner
/// does not control is not written ([`Error::ChildConflict`], see [`foreign_holder`]).
/// Returns whether the child was written (created or applied).
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
    // Not in the cache (which holds only objects the operator labelled): created only
    // if no object of its name exists; one that does is read and judged below, so an
    // object made by someone else is never taken over by the forced apply.
    let key = format!(
        "{kind} {}/{name}",
        desired.meta().namespace.as_deref().unwrap_or("")
    );
    let live = match live {
        Some(live) => live,
        None => {
            // Found taken before: read, not tried as a create again.
            let known_taken = ctx.taken().contains_key(&key);
            let existing = if known_taken {
                read(api, &kind, &name).await?
            } else {
                None
            };
            match existing {
                Some(live) => live,
                // Absent (or freed): created.
                None => match create_absent(ctx, api, &desired, &kind, &name).await? {
                    Some(live) => live,
                    None => {
                        ctx.taken().remove(&key);
                        return Ok(true);
                    }
                },
            }
        }
    };
    let want = to_value(&desired, &kind)?;
    match drift::first_difference(&want, &live.value) {
        None => return Ok(false),
        Some(path) if live.hash.as_deref() == Some(hash.as_str()) => {
            info!(%kind, %name, %path, "repairing a child edited by hand");
        }
        Some(_) => {}
    }
    let meta: ObjectMeta = serde_json::from_value(
        live.value.get("metadata").cloned().unwrap_or_default(),
    )
    .map_err(|source| Error::Serialize {
        what: format!("the metadata of {kind} {name}"),
        source,
    })?;
    let holder = foreign_holder(desired.meta(), &meta);
    if holder.is_some() {
        let wanted_by = controller_of(desired.meta())
            .map(|o| o.name.clone())
            .unwrap_or_default();
        let namespace = desired.meta().namespace.clone().unwrap_or_default();
        ctx.taken().insert(key, (namespace, wanted_by));
    } else {
        ctx.taken().remove(&key);
    }
    if let Some(holder) = holder {
        return Err(Error::ChildConflict { kind, name, holder });
    }
    debug!(%kind, %name, %hash, "applying");
    ctx.metrics.write(&kind, "apply");
    api.patch(
        &name,
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(apply_error(&kind, &name))?;
    Ok(true)
}

/// A resource version no object holds: etcd's first write is its revision 2, and an
/// object's version is the revision of its last write.
const NO_OBJECT_HOLDS: &str = "1";

/// Creates `desired`, which the caches do not hold, by server-side apply unless an
/// object of its name exists: the apply carries a resource version no object holds,
/// so against an existing object the API server refuses it (409, its storage never
/// written), and an object that does not exist is created (a create ignores the
/// version). One request for a new child, and no moment between a read and a write in
/// which another client could make the object. Returns `None` when it was created, or
/// the existing object, read, for the caller to judge. Any refusal is followed by a
/// read: an existing object is judged whatever the refusal (a merge into it that
/// validation or an admission webhook refuses says nothing of whose it is); the
/// refusal is the error only when no object exists.
async fn create_absent<K>(
    ctx: &Context,
    api: &Api<K>,
    desired: &K,
    kind: &str,
    name: &str,
) -> Result<Option<Live>>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let mut only_if_absent = desired.clone();
    only_if_absent.meta_mut().resource_version = Some(NO_OBJECT_HOLDS.to_owned());
    // An object deleted between the conflict and the read: tried once more, then left
    // to the retry of the reconcile.
    let mut attempts = 0;
    loop {
        attempts += 1;
        debug!(%kind, %name, "creating");
        ctx.metrics.write(kind, "create");
        let refused = match api
            .patch(
                name,
                &PatchParams::apply(names::FIELD_MANAGER),
                &Patch::Apply(&only_if_absent),
            )
            .await
        {
            Ok(_) => return Ok(None),
            Err(kube::Error::Api(status)) => kube::Error::Api(status),
            Err(source) => return Err(apply_error(kind, name)(source)),
        };
        let conflict = matches!(&refused, kube::Error::Api(status) if status.code == 409);
        match read(api, kind, name).await? {
            Some(live) => return Ok(Some(live)),
            None if conflict && attempts < 2 => {}
            None => return Err(apply_error(kind, name)(refused)),
        }
    }
}

/// The live object `name`, if any.
async fn read<K>(api: &Api<K>, kind: &str, name: &str) -> Result<Option<Live>>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    api.get_opt(name)
        .await
        .map_err(Error::kube(format!("reading {kind} {name}")))?
        .as_ref()
        .map(Live::of)
        .transpose()
}

/// The error of an apply of `kind` `name`: refused as invalid, or the API request.
fn apply_error(kind: &str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let (kind, name) = (kind.to_owned(), name.to_owned());
    move |source| match source {
        kube::Error::Api(ref status) if status.is_invalid() => {
            Error::ChildRefused { kind, name, source }
        }
        source => Error::kube(format!("applying {kind} {name}"))(source),
    }
}

/// Creates `object` unless it exists; never rewrites it. Returns whether it was created
/// (whose an object that was already there is, is the caller's to judge).
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

/// Why the live object with metadata `live` is not `desired`'s to write, if it is not:
/// another controller holds it, or none does and the operator did not label it for
/// the same owner. An object the operator labelled for this owner and left without one
/// (`kubectl delete --cascade=orphan`, then the owner made again) is adopted, as a
/// ReplicaSet adopts its orphaned pods. Owners are compared by API group, kind and name
/// (not version or uid: an owner made again under its name holds its old children).
/// `desired` is the metadata the operator would write. `None` for a desired object
/// without a controller (nothing to compare).
pub fn foreign_holder(desired: &ObjectMeta, live: &ObjectMeta) -> Option<String> {
    let controller = |meta: &ObjectMeta| {
        controller_of(meta).map(|o| {
            let group = o.api_version.rsplit_once('/').map_or("", |(g, _)| g);
            (group.to_owned(), o.kind.clone(), o.name.clone())
        })
    };
    let owner = controller(desired)?;
    match controller(live) {
        Some(holder) if holder == owner => None,
        Some((_, kind, name)) => Some(format!("controlled by {kind} {name}")),
        None if labelled_for_owner(desired, live) => None,
        None => Some("made outside the operator, with no owner".to_owned()),
    }
}

/// The owner reference of `meta` that controls it, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// Whether `live` carries the operator's labels for the owner `desired` is labelled
/// for (managed-by the operator, the same instance).
pub fn labelled_for_owner(desired: &ObjectMeta, live: &ObjectMeta) -> bool {
    let label =
        |meta: &ObjectMeta, key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
    label(live, names::MANAGED_BY_LABEL).as_deref() == Some(names::MANAGED_BY)
        && label(live, names::INSTANCE_LABEL).is_some()
        && label(live, names::INSTANCE_LABEL) == label(desired, names::INSTANCE_LABEL)
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

    fn meta(owner: Option<(&str, &str, &str)>, labels: &[(&str, &str)]) -> ObjectMeta {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        ObjectMeta {
            name: Some("support".to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            owner_references: owner.map(|(kind, name, uid)| {
                vec![OwnerReference {
                    api_version: "switchboard.dev/v1alpha1".to_owned(),
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    uid: uid.to_owned(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_owners_objects_and_its_labelled_orphans_are_written() {
        let ours = [
            (names::MANAGED_BY_LABEL, names::MANAGED_BY),
            (names::INSTANCE_LABEL, "support"),
        ];
        let desired = Service {
            metadata: meta(Some(("AgentDeployment", "support", "u-new")), &ours),
            ..Default::default()
        };
        let holder = |live: ObjectMeta| foreign_holder(&desired.metadata, &live);
        assert_eq!(
            holder(meta(Some(("AgentDeployment", "support", "u-new")), &ours)),
            None
        );
        // The owner made again under the same name (its old children not yet collected).
        assert_eq!(
            holder(meta(Some(("AgentDeployment", "support", "u-old")), &[])),
            None
        );
        // Orphaned by `--cascade=orphan`: still labelled for this agent, adopted.
        assert_eq!(holder(meta(None, &ours)), None);
        assert_eq!(
            holder(meta(Some(("Deployment", "billing", "u-3")), &ours)).as_deref(),
            Some("controlled by Deployment billing")
        );
        assert_eq!(
            holder(meta(Some(("AgentDeployment", "billing", "u-4")), &ours)).as_deref(),
            Some("controlled by AgentDeployment billing")
        );
        // Another product's kind of the same name.
        let mut other_group = meta(Some(("AgentDeployment", "support", "u-5")), &ours);
        other_group.owner_references.as_mut().unwrap()[0].api_version =
            "agents.example.com/v1".to_owned();
        assert_eq!(
            holder(other_group).as_deref(),
            Some("controlled by AgentDeployment support")
        );
        let foreign = Some("made outside the operator, with no owner");
        assert_eq!(holder(meta(None, &[])).as_deref(), foreign);
        assert_eq!(
            holder(meta(None, &[("app", "support")])).as_deref(),
            foreign
        );
        // The operator's label for another agent, or the instance label alone.
        assert_eq!(
            holder(meta(
                None,
                &[
                    (names::MANAGED_BY_LABEL, names::MANAGED_BY),
                    (names::INSTANCE_LABEL, "other")
                ]
            ))
            .as_deref(),
            foreign
        );
        assert_eq!(
            holder(meta(None, &[(names::INSTANCE_LABEL, "support")])).as_deref(),
            foreign
        );
        // A desired object without a controller is not compared.
        assert_eq!(
            foreign_holder(&ObjectMeta::default(), &meta(None, &[])),
            None
        );
    }

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
