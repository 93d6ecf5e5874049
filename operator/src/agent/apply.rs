//! Apply: every desired child is written (or found already in place) in one pass. The
//! children arrive as one struct taken apart without `..`, so a child that is built
//! but not applied does not compile.

use std::fmt::Debug;

use crds::AgentDeployment;
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use super::build::Children;
use super::build::service_monitor::ServiceMonitor;
use super::context::AgentContext;
use super::dereference::ServiceMonitorPlan;
use super::status::ServiceMonitorState;
use crate::apply::{Live, apply_child_against, create_once, foreign_holder, labelled_for_owner};
use crate::compact::Compact;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::names;

/// What the apply step leaves for the status.
#[derive(Debug)]
pub struct Applied {
    /// What became of the ServiceMonitor; `None` when the API server refused it.
    pub service_monitor: Option<ServiceMonitorState>,
    /// The first child the API server refused as invalid ([`Error::ChildRefused`]) or
    /// whose name another object holds ([`Error::ChildConflict`]), when no child failed
    /// otherwise.
    pub refused: Option<Error>,
    /// The kind and name of every child whose name another object holds (the status
    /// points at none of them).
    pub taken: Vec<(String, String)>,
}

/// Applies `children` of `agent`; returns what became of the ServiceMonitor and the
/// child the API server refused, if any. Any other failure is the error.
pub async fn apply_children(
    agent: &AgentDeployment,
    ctx: &AgentContext,
    children: Children,
    plan: ServiceMonitorPlan,
) -> Result<Applied> {
    let Children {
        api_key_secret,
        admin_key_secret,
        channel_key_secrets,
        agent_key_secrets,
        service_account,
        role,
        role_binding,
        config_map,
        deployment,
        service,
        service_monitor,
    } = children;
    let shared = &ctx.shared;
    let stores = &ctx.stores;

    // Created once: an existing key is never replaced (rotating is writing a new
    // value into the Secret; the pods re-read it). The keys are independent: created
    // at once (one round trip of latency, not one per key).
    let wanted_agent_keys: Vec<String> = agent_key_secrets.iter().map(|s| s.name_any()).collect();
    let keys: Vec<_> = std::iter::once(api_key_secret)
        .chain(std::iter::once(admin_key_secret))
        .chain(channel_key_secrets)
        .chain(agent_key_secrets)
        .collect();
    let mut generated = Vec::new();
    let mut taken = Vec::new();
    for created in futures::future::join_all(
        keys.iter()
            .map(|key_secret| create_key_secret(shared, stores, key_secret)),
    )
    .await
    {
        match created {
            Ok(what) => generated.extend(what),
            Err(error) if error.is_refused_child() => taken.push(error),
            Err(error) => return Err(error),
        }
    }
    // A key's name held by another object: for a new agent, nothing that would read it
    // (the Deployment) is applied until the name is free. An agent already running
    // reads it already (its key replaced by hand, by delete and create): said, and the
    // other children are applied as always.
    let running = stores
        .deployments
        .get(&ObjectRef::new(&agent.name_any()).within(&agent.namespace().unwrap_or_default()))
        .is_some();
    if !taken.is_empty() && !running {
        say_applied(agent, shared, generated, Vec::new()).await;
        return Ok(Applied {
            service_monitor: None,
            taken: taken.iter().filter_map(Error::taken).collect(),
            refused: taken.into_iter().next(),
        });
    }
    delete_stale_agent_keys(agent, shared, stores, &wanted_agent_keys).await?;

    // Each child is tried even when another fails (a hand edit the API server will
    // not let an apply undo must not hold back the others); the first failure (the
    // ServiceMonitor's, then in this order) is returned once all were tried, one a
    // retry may cure before a refused child (only the spec or a policy can cure that,
    // and the status says it). The children are independent
    // objects, so their applies go out at once, the ServiceMonitor's read and apply
    // with them.
    let (service_account, role, role_binding, config_map, service, deployment, monitor) = futures::join!(
        apply_cached(shared, &stores.service_accounts, service_account),
        apply_cached(shared, &stores.roles, role),
        apply_cached(shared, &stores.role_bindings, role_binding),
        apply_cached(shared, &stores.config_maps, config_map),
        apply_cached(shared, &stores.services, service),
        apply_cached(shared, &stores.deployments, deployment),
        apply_service_monitor(agent, ctx, service_monitor, plan),
    );
    let results = [
        service_account,
        role,
        role_binding,
        config_map,
        service,
        deployment,
    ];
    let mut written: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned().flatten())
        .collect();
    let mut failures: Vec<Error> = results.into_iter().filter_map(Result::err).collect();
    failures.extend(taken);
    let service_monitor = match monitor {
        Ok((state, monitor_written)) => {
            written.extend(monitor_written);
            Some(state)
        }
        Err(error) => {
            failures.insert(0, error);
            None
        }
    };
    // The first failure a retry may cure, else the first refusal (`false` sorts first;
    // the sort is stable).
    failures.sort_by_key(Error::is_refused_child);
    let taken: Vec<(String, String)> = failures.iter().filter_map(Error::taken).collect();
    let first_failure = failures.into_iter().next();

    say_applied(agent, shared, generated, written).await;
    match first_failure {
        Some(error) if error.is_refused_child() => Ok(Applied {
            service_monitor,
            refused: Some(error),
            taken,
        }),
        Some(error) => Err(error),
        None => Ok(Applied {
            service_monitor,
            refused: None,
            taken,
        }),
    }
}

/// One event for the pass: the keys generated and the children written (an event per
/// key tripled the requests of a new agent's first reconcile); none when neither.
async fn say_applied(
    agent: &AgentDeployment,
    shared: &Context,
    generated: Vec<String>,
    written: Vec<String>,
) {
    if written.is_empty() && generated.is_empty() {
        return;
    }
    info!(children = ?written, keys = ?generated, "applied");
    let mut parts = generated;
    if !written.is_empty() {
        parts.push(format!("applied {}", written.join(", ")));
    }
    shared
        .event(
            &agent.object_ref(&()),
            EventType::Normal,
            "Applied",
            "Apply",
            parts.join("; "),
        )
        .await;
}

/// Creates a key Secret unless it exists (never rewrites it); says what it generated.
async fn create_key_secret(
    shared: &Context,
    stores: &super::watches::Stores,
    secret: &k8s_openapi::api::core::v1::Secret,
) -> Result<Option<String>> {
    let key_ref =
        ObjectRef::new(&secret.name_any()).within(&secret.namespace().unwrap_or_default());
    let api = api(shared, secret);
    let live = match stores.secrets.get(&key_ref) {
        Some(cached) => Some(cached.metadata.clone()),
        None if create_once(shared, &api, secret).await? => None,
        // There already (made meanwhile, or not the operator's, so not cached).
        None => api
            .get_metadata_opt(&secret.name_any())
            .await
            .map_err(Error::kube(format!("reading Secret {}", secret.name_any())))?
            .map(|live| live.metadata),
    };
    if let Some(live) = live {
        // A key the user brings (from external-secrets, say) is labelled for the agent.
        return match foreign_holder(secret.meta(), &live) {
            Some(holder) if !labelled_for_owner(secret.meta(), &live) => {
                Err(Error::ChildConflict {
                    kind: "Secret".to_owned(),
                    name: secret.name_any(),
                    holder,
                })
            }
            _ => Ok(None),
        };
    }
    let what = match secret.name_any() {
        _ if secret.labels().contains_key(names::CALLEE_LABEL) => {
            "the key this agent calls another agent with"
        }
        n if n.ends_with("-admin-key") => "the admin key",
        n if n.ends_with("-channel-key") => "a channel's own client key",
        _ => "the client API key",
    };
    Ok(Some(format!(
        "generated {what} in Secret {}",
        secret.name_any()
    )))
}

/// Deletes the agent-call key Secrets of `agent` whose entry left `spec.tools` (the
/// callee then drops the file).
async fn delete_stale_agent_keys(
    agent: &AgentDeployment,
    shared: &Context,
    stores: &super::watches::Stores,
    wanted: &[String],
) -> Result<()> {
    let namespace = agent.namespace();
    let name = agent.name_any();
    let stale: Vec<String> = stores
        .key_secrets
        .get(namespace.as_deref().unwrap_or_default(), &name)
        .iter()
        .filter(|s| s.metadata.namespace == namespace)
        .filter(|s| s.labels().contains_key(names::CALLEE_LABEL))
        .filter(|s| s.labels().get(names::INSTANCE_LABEL) == Some(&name))
        .filter(|s| {
            s.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == agent.uid().as_ref())
        })
        .map(|s| s.name_any())
        .filter(|n| !wanted.contains(n))
        .collect();
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(shared.client.clone(), &namespace.unwrap_or_default());
    for secret in stale {
        shared.metrics.write("Secret", "delete");
        match api.delete(&secret, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(Error::kube("deleting an agent-call key Secret")(e)),
        }
        info!(%secret, "deleted an agent-call key (its spec.tools entry is gone)");
        shared
            .event(
                &agent.object_ref(&()),
                EventType::Normal,
                "AgentKeyDeleted",
                "DeleteSecret",
                format!("deleted Secret {secret}: spec.tools no longer names that agent"),
            )
            .await;
    }
    Ok(())
}

/// The API of `object`'s kind in its namespace.
fn api<K>(shared: &Context, object: &K) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    Api::namespaced(
        shared.client.clone(),
        &object.namespace().unwrap_or_default(),
    )
}

/// A cached child as the apply compares it.
fn cached_live<K>(cached: &Compact<K>, name: &str) -> Result<Live>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    Ok(Live {
        value: cached.value().map_err(|source| Error::Serialize {
            what: format!("cached {} {name}", K::kind(&())),
            source,
        })?,
        hash: cached.applied_hash().map(str::to_owned),
    })
}

/// Applies `desired` unless its cached live copy already holds it; returns what was
/// written, if anything.
async fn apply_cached<K>(
    shared: &Context,
    store: &Store<Compact<K>>,
    desired: K,
) -> Result<Option<String>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let name = desired.name_any();
    let live = store
        .get(&ObjectRef::new(&name).within(&desired.namespace().unwrap_or_default()))
        .map(|cached| cached_live(&cached, &name))
        .transpose()?;
    let wrote = apply_child_against(shared, &api(shared, &desired), desired, live).await?;
    Ok(wrote.then(|| format!("{} {name}", K::kind(&()))))
}

/// Applies the ServiceMonitor `desired` (or deletes the one the agent made before when
/// monitoring was turned off); returns what became of it, and its name when written.
async fn apply_service_monitor(
    agent: &AgentDeployment,
    ctx: &AgentContext,
    desired: Option<ServiceMonitor>,
    plan: ServiceMonitorPlan,
) -> Result<(ServiceMonitorState, Option<String>)> {
    let shared = &*ctx.shared;
    match desired {
        Some(desired) => {
            let api = api(shared, &desired);
            let name = desired.name_any();
            let live = live_service_monitor(ctx, &api, &name).await?;
            let written = apply_child_against(shared, &api, desired, live).await?;
            Ok((
                ServiceMonitorState::Applied,
                written.then(|| format!("ServiceMonitor {name}")),
            ))
        }
        None if plan == ServiceMonitorPlan::CrdMissing => {
            Ok((ServiceMonitorState::CrdMissing, None))
        }
        None => {
            if shared.service_monitor_crd_installed().await {
                delete_disabled_service_monitor(agent, ctx).await?;
            }
            Ok((ServiceMonitorState::Disabled, None))
        }
    }
}

/// The live ServiceMonitor `name` of `api`'s namespace: from the cache while the CRD
/// is installed and the watch has listed, read from the API server until then.
async fn live_service_monitor(
    ctx: &AgentContext,
    api: &Api<ServiceMonitor>,
    name: &str,
) -> Result<Option<Live>> {
    let namespace = api.namespace().unwrap_or_default();
    match ctx
        .service_monitors
        .as_ref()
        .and_then(|monitors| monitors.get(namespace, name))
    {
        Some(cached) => cached.map(|c| cached_live(&c, name)).transpose(),
        None => api
            .get_opt(name)
            .await
            .map_err(Error::kube("reading the ServiceMonitor"))?
            .as_ref()
            .map(Live::of)
            .transpose(),
    }
}

/// Monitoring turned off: the ServiceMonitor made before goes (only when the agent
/// owns it).
async fn delete_disabled_service_monitor(
    agent: &AgentDeployment,
    ctx: &AgentContext,
) -> Result<()> {
    let shared = &*ctx.shared;
    let api: Api<ServiceMonitor> = Api::namespaced(
        shared.client.clone(),
        &agent.namespace().unwrap_or_default(),
    );
    let name = agent.name_any();
    let live = live_service_monitor(ctx, &api, &name).await?;
    let owned = live.is_some_and(|m| {
        m.value["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|o| o["uid"].as_str() == agent.uid().as_deref())
    });
    if !owned {
        return Ok(());
    }
    shared.metrics.write("ServiceMonitor", "delete");
    api.delete(&name, &Default::default())
        .await
        .map_err(Error::kube("deleting the disabled ServiceMonitor"))?;
    info!(%name, "deleted the ServiceMonitor (monitoring turned off)");
    shared
        .event(
            &agent.object_ref(&()),
            EventType::Normal,
            "ServiceMonitorDeleted",
            "Delete",
            format!(
                "deleted ServiceMonitor {name}: spec.monitoring.serviceMonitor.enabled is false"
            ),
        )
        .await;
    Ok(())
}
