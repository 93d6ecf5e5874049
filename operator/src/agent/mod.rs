//! The AgentDeployment controller: its watches and the reconcile pipeline, one file
//! per step: [`dereference`] (what the spec points to) → [`validate`] (pure) →
//! [`database`] → [`build`] (pure, every child) → [`apply`] (every child) →
//! [`write_status`] (computed by the pure [`status`]); [`cleanup`] on deletion.

pub mod apply;
pub mod build;
pub mod cleanup;
pub mod context;
pub mod database;
pub mod dereference;
#[cfg(test)]
mod reconcile_tests;
pub mod runtime_pod;
pub mod secrets;
pub mod service_monitors;
pub mod status;
pub mod tools;
pub mod validate;
pub mod watches;
pub mod write_status;

use std::sync::Arc;
use std::time::Duration;

use crds::{AgentDeployment, ChatChannel, ToolServer};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tracing::{debug, instrument};

use self::build::{BuildInputs, build_children};
use self::context::AgentContext;
use self::status::{INVALID_SPEC, Refusal};
use self::watches::watch_children;
use crate::context::Context;
use crate::controller::{on_error, on_success};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::names;

/// Label of this controller in metrics.
const CONTROLLER: &str = "agent";

/// Runs the AgentDeployment controller for `namespace` (all when `None`) until
/// `shutdown` resolves. `agents`, `channels`, `tool_servers` and `secrets` (every
/// Secret's changes, by metadata) come from the watches the controllers share.
pub async fn run(
    shared: Arc<Context>,
    namespace: Option<String>,
    agents: (
        Store<AgentDeployment>,
        Index<AgentDeployment>,
        impl Stream<Item = Result<AgentDeployment, watcher::Error>> + Send + 'static,
    ),
    channels: (
        Store<ChatChannel>,
        Index<ChatChannel>,
        impl Stream<Item = Result<ChatChannel, watcher::Error>> + Send + 'static,
    ),
    tool_servers: (
        Store<ToolServer>,
        impl Stream<Item = Result<ToolServer, watcher::Error>> + Send + 'static,
    ),
    secrets: impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (agent_store, callers, agent_stream) = agents;
    let (channel_store, agent_channels, channel_stream) = channels;
    let (tool_server_store, tool_server_stream) = tool_servers;
    let (stores, triggers) = watch_children(
        &shared.client,
        namespace.as_deref(),
        watches::SharedStores {
            channels: channel_store,
            agent_channels,
            agents: agent_store.clone(),
            callers,
            tool_servers: tool_server_store,
        },
        &shared.metrics,
    );
    let naming = agent_store.clone();
    let sweep_store = agent_store.clone();
    let taken_sweep = tokio::spawn(forget_taken_of_deleted(
        shared.clone(),
        agent_store.clone(),
        TAKEN_SWEEP,
    ));
    let by_secret = stores.deployments_by_secret.clone();
    let (service_monitors, monitor_changes) =
        service_monitors::watch(shared.clone(), namespace.clone(), agent_store.clone());
    let context =
        Arc::new(AgentContext::new(shared.clone(), stores).with_service_monitors(service_monitors));
    let config = ControllerConfig::default()
        .concurrency(shared.config.agent_concurrency)
        .debounce(Duration::from_millis(300));
    Controller::for_stream(agent_stream, agent_store)
        .with_config(config)
        .owns_stream(triggers.deployments)
        .owns_stream(triggers.service_accounts)
        .owns_stream(triggers.roles)
        .owns_stream(triggers.role_bindings)
        .owns_stream(triggers.config_maps)
        .owns_stream(triggers.services)
        // Key Secrets go to their owner, and an agent-call key also to the agent it
        // opens (the callee projects it as a file, and drops it when it goes).
        .watches_stream(triggers.secrets, |secret| {
            let Some(namespace) = secret.metadata.namespace.clone() else {
                return Vec::new();
            };
            let owner = secret
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true) && o.kind == "AgentDeployment")
                .map(|o| ObjectRef::<AgentDeployment>::new(&o.name).within(&namespace));
            let callee = secret
                .labels()
                .get(names::CALLEE_LABEL)
                .map(|c| ObjectRef::<AgentDeployment>::new(c).within(&namespace));
            owner.into_iter().chain(callee).collect::<Vec<_>>()
        })
        // Runtime pods are owned by ReplicaSets; map them to their agent by label so a
        // vanished pod's status.runtime entry is pruned and an image that cannot be
        // pulled is reported.
        .watches_stream(triggers.pods, |pod| {
            let agent = pod.labels().get(names::INSTANCE_LABEL)?.clone();
            Some(ObjectRef::<AgentDeployment>::new(&agent).within(&pod.namespace()?))
        })
        // The runtime's Role names the agent's channels and their signing Secrets.
        .watches_stream(channel_stream, |channel| {
            Some(
                ObjectRef::<AgentDeployment>::new(&channel.spec.agent_ref.name)
                    .within(&channel.namespace()?),
            )
        })
        // A ToolServer's changes (its status above all) requeue the agents naming it.
        .watches_stream(tool_server_stream, move |server| {
            let namespace = server.namespace();
            tools::agents_naming_server(&naming.state(), namespace.as_deref(), &server.name_any())
                .into_iter()
                .map(|(name, ns)| ObjectRef::<AgentDeployment>::new(&name).within(&ns))
                .collect::<Vec<_>>()
        })
        // A Secret the pods read through their environment (a model key, a
        // ToolServer header, ...) changed, came or went: the agent's secrets digest
        // follows, so its pods roll now rather than at the next resync.
        .watches_stream(secrets, move |secret| {
            let namespace = secret.namespace().unwrap_or_default();
            secrets::agents_reading_secret(
                &by_secret.get(&namespace, &secret.name_any()),
                &namespace,
                &secret.name_any(),
            )
            .into_iter()
            .map(|agent| ObjectRef::<AgentDeployment>::new(&agent).within(&namespace))
            .collect::<Vec<_>>()
        })
        // A ServiceMonitor the agent owns changed or went (while the CRD is there).
        .reconcile_on(monitor_changes)
        // A runtime report that went stale: RuntimeReady turns False.
        .reconcile_on(stale_reports(sweep_store, STALENESS_SWEEP))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "agent reconcile did not complete");
            }
        })
        .await;
    taken_sweep.abort();
}

/// How often the names found taken are swept for agents deleted meanwhile.
const TAKEN_SWEEP: Duration = Duration::from_secs(60);

/// Every `every`, forgets the children found taken of the agents no longer in
/// `agents` (an agent deleted while a name it wants was taken reconciles no more,
/// so nothing else would forget them).
async fn forget_taken_of_deleted(
    shared: Arc<Context>,
    agents: Store<AgentDeployment>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if shared.taken().is_empty() {
            continue;
        }
        let forgotten = shared.forget_taken_unless(|namespace, name| {
            agents
                .get(&ObjectRef::new(name).within(namespace))
                .is_some()
        });
        if forgotten > 0 {
            debug!(forgotten, "forgot the names found taken of deleted agents");
        }
    }
}

/// How often the cache is swept for runtime reports that went stale.
const STALENESS_SWEEP: Duration = Duration::from_secs(5);

/// Every `every`, the agents of `agents` one of whose runtime reports went stale since
/// the sweep before (looked for over two sweeps' time, so a late tick misses none; a
/// report found twice costs one more reconcile). A heartbeat wakes no reconcile (see
/// [`status::significant`]): this is how a runtime that stops reporting is seen, from
/// the cache, with no reconcile for the agents whose reports are fresh.
pub fn stale_reports(
    agents: Store<AgentDeployment>,
    every: Duration,
) -> impl Stream<Item = ObjectRef<AgentDeployment>> + Send + 'static {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    futures::stream::unfold((ticker, agents), move |(mut ticker, agents)| async move {
        ticker.tick().await;
        let now = k8s_openapi::jiff::Timestamp::now();
        let stale: Vec<_> = agents
            .state()
            .iter()
            .filter(|agent| {
                agent
                    .status
                    .as_ref()
                    .is_some_and(|s| status::went_stale_within(&s.runtime, now, 2 * every))
            })
            .map(|agent| ObjectRef::from_obj(agent.as_ref()))
            .collect();
        Some((futures::stream::iter(stale), (ticker, agents)))
    })
    .flatten()
}

/// One reconcile of `agent`: the finalizer splits applying from cleaning up.
///
/// Only a managed database lives outside the cluster, so only an agent with one
/// gets the finalizer; the children of any agent go with it by their owner
/// references. An agent that has the finalizer keeps it until its deletion (it
/// may have had a database). The finalizer is added before anything else, and
/// the agent is then applied in the same reconcile, not in the one the patch's
/// watch event brings (that one finds it converged and writes nothing).
#[instrument(skip_all, fields(namespace = agent.namespace().unwrap_or_default(), agent = agent.name_any()))]
pub async fn reconcile(agent: Arc<AgentDeployment>, ctx: Arc<AgentContext>) -> Result<Action> {
    let metrics = &ctx.shared.metrics;
    let _reconcile = metrics.reconcile_started(CONTROLLER);
    ctx.stores.wait_ready().await;
    let has_finalizer = agent
        .finalizers()
        .iter()
        .any(|f| f == names::DATABASE_FINALIZER);
    let deleting = agent.metadata.deletion_timestamp.is_some();
    if has_finalizer || deleting || needs_finalizer(&agent) {
        let namespace = agent.namespace().unwrap_or_default();
        let api: Api<AgentDeployment> = Api::namespaced(ctx.shared.client.clone(), &namespace);
        let action = finalizer(
            &api,
            names::DATABASE_FINALIZER,
            agent.clone(),
            |event| async {
                match event {
                    // Applied below, whether the finalizer was there or just added.
                    FinalizerEvent::Apply(_) => Ok(Action::await_change()),
                    FinalizerEvent::Cleanup(agent) => cleanup::cleanup_agent(&agent, &ctx).await,
                }
            },
        )
        .await;
        let action = match action {
            Err(
                kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(status))
                | kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status)),
            ) if status.code == 409 || status.code == 422 => {
                // The finalizer list changed since the cached copy (the JSON patch's
                // `test` failed): under load the watch lags behind this operator's own
                // previous write. The newer copy it brings reconciles again; no
                // warning, no event, no backoff for a copy that was only stale.
                debug!(
                    code = status.code,
                    "the cached agent was stale: the watch brings the newer copy"
                );
                return Ok(Action::requeue(STALE_COPY_RETRY));
            }
            other => other.map_err(|e| match e {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
                other => Error::Finalizer(Box::new(other)),
            })?,
        };
        if deleting {
            on_success(&ctx.shared, &*agent);
            return Ok(action);
        }
    }
    let action = apply_agent(&agent, &ctx).await?;
    on_success(&ctx.shared, &*agent);
    Ok(action)
}

/// Whether deleting `agent` has work to do outside the cluster: dropping or keeping
/// (and saying so) its managed database.
fn needs_finalizer(agent: &AgentDeployment) -> bool {
    agent.spec.database.mode == crds::DatabaseMode::Managed
}

/// When a stale cached agent made the finalizer patch fail, the reconcile is
/// tried again after this long unless the watch's newer copy comes first.
const STALE_COPY_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The error policy of the controller (see [`on_error`]).
pub fn error_policy(agent: Arc<AgentDeployment>, error: &Error, ctx: Arc<AgentContext>) -> Action {
    on_error(&ctx.shared, CONTROLLER, &*agent, error)
}

/// The pipeline for a live agent.
async fn apply_agent(agent: &AgentDeployment, ctx: &AgentContext) -> Result<Action> {
    let shared = &ctx.shared;
    let problems = validate::validate(agent);
    if !problems.is_empty() {
        // Nothing is provisioned or applied: Ready says why, the other conditions stay
        // as the last generation left them (what runs is still that generation's).
        let message = problems.join("; ");
        let refusal = Refusal {
            reason: INVALID_SPEC,
            message: message.clone(),
            taken: Vec::new(),
        };
        write_status::write_status(agent, ctx, None, None, Some(refusal)).await?;
        return Err(Error::InvalidSpec(message));
    }

    let references =
        dereference::dereference(agent, shared, &ctx.stores.channels_of(agent)).await?;
    let resolved_tools = tools::resolve(agent, &ctx.stores.tool_servers.state(), |name| {
        ctx.stores.agent_exists(agent, name)
    });
    let (database, database_url, database_error) = database::ensure_database(agent, ctx).await;
    if let Some(conflict @ Error::ChildConflict { .. }) = database_error {
        // The database Secret's name is held by another object: nothing that would read
        // it (the Deployment) is applied until it is free.
        let refusal = Refusal::of(&conflict, conflict.taken().into_iter().collect());
        write_status::write_status(agent, ctx, Some(database), None, refusal).await?;
        return Err(conflict);
    }
    let runtime_config = build::config_map::runtime_config(
        agent,
        references.system_prompt_from.as_deref(),
        tools::tools_config(agent, &resolved_tools, &shared.config.cluster_domain),
    )
    .to_yaml()
    .map_err(|e| Error::Serialize {
        what: "runtime configuration".to_owned(),
        source: serde_json::Error::io(std::io::Error::other(e.to_string())),
    })?;
    let inputs = BuildInputs {
        default_image: shared.config.runtime_image.clone(),
        image_pull_policy: shared.config.runtime_image_pull_policy.clone(),
        image_pull_secrets: shared.config.image_pull_secrets(),
        runtime_config,
        database_url,
        service_monitor: references.service_monitor == dereference::ServiceMonitorPlan::Build,
        channels: references.channels,
        signing_secrets: references.signing_secrets,
        new_api_key: format!("sb-{}", crate::database::generate_password()),
        new_admin_key: format!("sb-admin-{}", crate::database::generate_password()),
        own_key_channels: references
            .own_key_channels
            .into_iter()
            .map(|(name, uid)| build::OwnKeyChannel {
                name,
                uid,
                new_key: format!("sb-ch-{}", crate::database::generate_password()),
            })
            .collect(),
        tool_env: tools::tool_env(agent, &resolved_tools),
        agent_keys: tools::callees(agent)
            .into_iter()
            .map(|callee| build::AgentKey {
                callee,
                new_key: format!("sb-agent-{}", crate::database::generate_password()),
            })
            .collect(),
        callers: tools::callers(&ctx.stores.callers_of(agent), agent),
    };
    let mut children = build_children(agent, &inputs);
    // The pods roll when a Secret they read changes (a digest, never a value). The
    // keys generated in this reconcile count with their new values, so creating
    // them rolls nothing twice.
    let name = agent.name_any();
    let api_key_secret = names::api_key_secret(&name);
    let agent_key_secrets: Vec<(String, &str)> = inputs
        .agent_keys
        .iter()
        .map(|k| {
            (
                names::agent_call_key_secret(&name, &k.callee),
                k.new_key.as_str(),
            )
        })
        .collect();
    let pending: Vec<(&str, &str, &str)> = std::iter::once((
        api_key_secret.as_str(),
        names::API_KEY_KEY,
        inputs.new_api_key.as_str(),
    ))
    .chain(
        agent_key_secrets
            .iter()
            .map(|(secret, key)| (secret.as_str(), names::API_KEY_KEY, *key)),
    )
    .collect();
    secrets::track(
        shared,
        &agent.namespace().unwrap_or_default(),
        &mut children.deployment,
        &pending,
    )
    .await?;
    let applied = apply::apply_children(agent, ctx, children, references.service_monitor).await?;
    let refusal = applied
        .refused
        .as_ref()
        .and_then(|error| Refusal::of(error, applied.taken.clone()));

    write_status::write_status(agent, ctx, Some(database), applied.service_monitor, refusal)
        .await?;
    match (database_error, applied.refused) {
        (Some(e), _) if !e.is_permanent() => Err(e),
        // Its warning event, and a retry at the resync (see `on_error`).
        (_, Some(refused)) => Err(refused),
        (Some(_), None) => Ok(Action::await_change()),
        (None, None) => Ok(Action::requeue(shared.config.resync())),
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;
    use crds::{AgentDeploymentStatus, RuntimePodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    fn agent(name: &str, report_age: Option<i64>) -> AgentDeployment {
        let mut agent: AgentDeployment =
            serde_yaml::from_str(include_str!("../../fixtures/agent-minimal.yaml")).unwrap();
        agent.metadata.name = Some(name.to_owned());
        agent.metadata.namespace = Some("tenant-a".to_owned());
        agent.status = report_age.map(|age| AgentDeploymentStatus {
            runtime: vec![RuntimePodStatus {
                name: format!("{name}-pod"),
                ready: true,
                upstream_healthy: true,
                active_sessions: 0,
                messages_total: 0,
                last_heartbeat: Time(
                    Timestamp::from_second(Timestamp::now().as_second() - age).unwrap(),
                ),
                version: "test".to_owned(),
            }],
            ..Default::default()
        });
        agent
    }

    #[tokio::test]
    async fn the_sweep_brings_only_the_agents_whose_report_just_went_stale() {
        let (store, mut writer) = reflector::store();
        let stale_after = crds::RUNTIME_STALE_AFTER_SECONDS as i64;
        for agent in [
            agent("just-stale", Some(stale_after + 2)),
            agent("fresh", Some(1)),
            agent("long-stale", Some(stale_after + 600)),
            agent("never-reported", None),
        ] {
            writer.apply_watcher_event(&Event::Apply(agent));
        }
        let sweep = stale_reports(store, Duration::from_secs(5));
        futures::pin_mut!(sweep);
        let first = sweep.next().await.unwrap();
        assert_eq!(first.name, "just-stale");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sweep.next())
                .await
                .is_err(),
            "one agent in the first sweep"
        );
    }
}
