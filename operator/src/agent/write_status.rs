//! The status step's I/O: prune the runtime entries of pods that are gone, compute the
//! status from what was applied and observed, and write it only when more than a
//! timestamp changed.

use std::collections::BTreeSet;

use crds::AgentDeployment;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use tracing::{info, warn};

use super::context::AgentContext;
use super::status::{self, DatabaseState, Observed, Refusal, ServiceMonitorState};
use crate::controller::apply_status;
use crate::error::{Error, Result};
use crate::names;

/// Writes `agent`'s status if it changed. `database` and `service_monitor` are `None`
/// when their steps did not run (see [`Observed`]); `refusal` says why this generation
/// was not carried out, if it was not.
pub async fn write_status(
    agent: &AgentDeployment,
    ctx: &AgentContext,
    database: Option<DatabaseState>,
    service_monitor: Option<ServiceMonitorState>,
    refusal: Option<Refusal>,
) -> Result<()> {
    let shared = &ctx.shared;
    let name = agent.name_any();
    let namespace = agent.namespace().unwrap_or_default();
    let current = agent.status.clone().unwrap_or_default();

    let pods: Vec<_> = ctx
        .stores
        .agent_pods
        .get(&namespace, &name)
        .into_iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace.as_str()) && p.agent() == Some(&*name)
        })
        .collect();
    let live_pods: BTreeSet<String> = pods.iter().map(|p| p.name_any()).collect();
    let (live, stale): (Vec<_>, Vec<_>) = current
        .runtime
        .iter()
        .enumerate()
        .partition(|(_, r)| live_pods.contains(&r.name));
    if !stale.is_empty() {
        // The pods own their entries: remove exactly the stale ones, by index, each
        // guarded by a test of its name so a concurrent change fails the patch instead.
        let mut ops = Vec::new();
        for (index, entry) in stale.iter().rev() {
            ops.push(json!({ "op": "test", "path": format!("/status/runtime/{index}/name"), "value": entry.name }));
            ops.push(json!({ "op": "remove", "path": format!("/status/runtime/{index}") }));
        }
        let patch: json_patch::Patch =
            serde_json::from_value(json!(ops)).map_err(|source| Error::Serialize {
                what: "runtime prune patch".to_owned(),
                source,
            })?;
        shared.metrics.write("AgentDeployment", "prune-runtime");
        let api: Api<AgentDeployment> = Api::namespaced(shared.client.clone(), &namespace);
        api.patch_status(&name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map_err(Error::kube("pruning stale status.runtime entries"))?;
        info!(
            pruned = stale.len(),
            "pruned runtime reports of pods that no longer exist"
        );
    }
    let runtime: Vec<_> = live.into_iter().map(|(_, r)| r.clone()).collect();
    let not_ready: Vec<String> = pods
        .iter()
        .filter(|p| !p.ready())
        .map(|p| p.name_any())
        .collect();
    let now = Timestamp::now();

    let deployment = ctx
        .stores
        .deployments
        .get(&ObjectRef::new(&name).within(&namespace))
        .and_then(|cached| {
            cached
                .object()
                .inspect_err(|error| warn!(%error, "could not read the cached Deployment"))
                .ok()
        });
    let observed = Observed {
        generation: agent.metadata.generation,
        refusal,
        database,
        wanted_replicas: agent.spec.replicas,
        deployment: deployment.as_ref(),
        // The first failing pod by name (as `status::image_pull_failure` picks it).
        image_pull: pods
            .iter()
            .filter_map(|p| p.image_pull_failure())
            .min_by(|a, b| a.pod.cmp(&b.pod))
            .cloned(),
        runtime: &runtime,
        not_ready: &not_ready,
        now,
        service_monitor,
        endpoint: names::endpoint(&name, &namespace, &shared.config.cluster_domain),
        selector: names::selector_string(&name),
        api_key_secret: names::api_key_secret(&name),
        admin_key_secret: names::admin_key_secret(&name),
        default_channel: match &agent.spec.default_channel {
            None => status::DefaultChannelState::Unset,
            Some(channel) => {
                let found = ctx.stores.channels_of(agent).iter().any(|c| {
                    c.name_any() == *channel
                        && c.namespace().as_deref() == Some(namespace.as_str())
                        && c.spec.agent_ref.name == name
                });
                if found {
                    status::DefaultChannelState::Found(channel.clone())
                } else {
                    status::DefaultChannelState::Missing(channel.clone())
                }
            }
        },
        tools_ready: super::tools::tools_ready(&super::tools::resolve(
            agent,
            &ctx.stores.tool_servers.state(),
            |callee| ctx.stores.agent_exists(agent, callee),
        )),
    };
    let desired = status::desired_status(&current, &observed);
    if status::status_differs(agent.status.as_ref(), &desired) {
        apply_status(shared, agent, &desired).await?;
    }
    Ok(())
}
