//! Scaffolding both controllers share: the error policy (a failure metric, a warning
//! event, backoff keyed by kind, namespace and name, and waiting for a change after a
//! permanent error), the status write (server-side apply under the one field manager),
//! and watches shared between controllers.

#[cfg(test)]
pub mod mock_api;
pub mod shared_watch;

use std::fmt::Debug;
use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::warn;

use crate::backoff::ObjectKey;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::names;

/// What to do after `object`'s reconcile failed with `error`: count it, say it in a
/// warning event, and retry with the object's own backoff, or wait for a change of
/// the object when retrying cannot help (until the resync when a child was refused).
pub fn on_error<K>(shared: &Arc<Context>, controller: &str, object: &K, error: &Error) -> Action
where
    K: Resource<DynamicType = ()>,
{
    shared
        .metrics
        .failures
        .with_label_values(&[controller, error.metric_label()])
        .inc();
    let key = ObjectKey::of(object);
    warn!(
        kind = %key.kind,
        namespace = %key.namespace,
        name = %key.name,
        category = error.metric_label(),
        %error,
        "reconcile failed"
    );
    let reference = object.object_ref(&());
    let reason = error.event_reason();
    let note = error.to_string();
    let events = shared.clone();
    tokio::spawn(async move {
        events
            .event(&reference, EventType::Warning, reason, "Reconcile", note)
            .await;
    });
    if error.is_permanent() {
        Action::await_change()
    } else if error.is_refused_child() {
        // The same child would be refused again: no backoff's hot retries.
        Action::requeue(shared.config.resync())
    } else {
        Action::requeue(shared.backoff.next(&key))
    }
}

/// Forgets `object`'s failures after a reconcile that succeeded.
pub fn on_success<K: Resource<DynamicType = ()>>(shared: &Context, object: &K) {
    shared.backoff.reset(&ObjectKey::of(object));
}

/// Writes `status` as `object`'s status with server-side apply (forcing ownership:
/// the operator is the one writer of the fields it sets).
pub async fn apply_status<K, S>(shared: &Context, object: &K, status: &S) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
    S: Serialize,
{
    let kind = K::kind(&());
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": kind,
        "status": status,
    });
    let api: Api<K> = Api::namespaced(
        shared.client.clone(),
        &object.namespace().unwrap_or_default(),
    );
    shared.metrics.write(&kind, "apply-status");
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(format!("writing the {kind} status")))?;
    Ok(())
}
