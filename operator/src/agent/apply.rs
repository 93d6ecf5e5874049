//! Thin apply: server-side apply of a desired child under the operator's field
//! manager, skipped when the live child already carries the same content hash.

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::debug;

use crate::agent::build::stamp_applied_hash;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::names;

/// The applied-hash annotation of a live object's metadata, if any.
pub fn live_hash<K: Resource>(live: Option<&K>) -> Option<String> {
    live.and_then(|o| o.annotations().get(names::APPLIED_HASH).cloned())
}

/// Applies `desired` unless `live_hash` already equals its content hash. Returns whether
/// a write was sent.
pub async fn apply_if_changed<K>(
    ctx: &Context,
    api: &Api<K>,
    mut desired: K,
    live_hash: Option<String>,
    kind: &str,
) -> Result<bool>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let hash = stamp_applied_hash(&mut desired)?;
    let name = desired.name_any();
    if live_hash.as_deref() == Some(hash.as_str()) {
        return Ok(false);
    }
    debug!(%kind, %name, %hash, "applying");
    ctx.metrics.write(kind, "apply");
    api.patch(
        &name,
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(Error::kube(format!("applying {kind} {name}")))?;
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
