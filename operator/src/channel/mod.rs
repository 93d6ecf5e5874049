//! The ChatChannel controller: binds each channel to its agent and keeps its status
//! (Accepted, AgentReady, Ready, endpoint) in step with that agent.

pub mod status;

use std::sync::Arc;
use std::time::Duration;

use crds::{AgentDeployment, ChatChannel};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{instrument, warn};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::names;
use crate::watch::tolerant_watcher;

struct ChannelContext {
    shared: Arc<Context>,
    agents: Store<AgentDeployment>,
}

/// Runs the ChatChannel controller for `namespace` (all when `None`) until `shutdown`.
pub async fn run(
    shared: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = shared.client.clone();
    let ns = namespace.as_deref();
    let (channel_reader, channel_writer) = reflector::store::<ChatChannel>();
    let channels = tolerant_watcher::<ChatChannel>(client.clone(), ns, watcher::Config::default())
        .default_backoff()
        .reflect(channel_writer)
        .applied_objects();
    let (agents, agent_writer) = reflector::store::<AgentDeployment>();
    let agent_stream =
        tolerant_watcher::<AgentDeployment>(client.clone(), ns, watcher::Config::default())
            .default_backoff()
            .reflect(agent_writer)
            .touched_objects();

    let index = channel_reader.clone();
    let context = Arc::new(ChannelContext {
        shared: shared.clone(),
        agents,
    });
    let config = ControllerConfig::default()
        .concurrency(shared.config.channel_concurrency)
        .debounce(Duration::from_millis(300));
    Controller::for_stream(channels, channel_reader)
        .with_config(config)
        // Re-evaluate every channel of an agent when the agent changes (or appears).
        .watches_stream(agent_stream, move |agent: AgentDeployment| {
            let namespace = agent.namespace();
            let name = agent.name_any();
            index
                .state()
                .into_iter()
                .filter(|c| c.namespace() == namespace && c.spec.agent_ref.name == name)
                .map(|c| ObjectRef::from_obj(&*c))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "channel reconcile did not complete");
            }
        })
        .await;
}

#[instrument(skip_all, fields(namespace = channel.namespace().unwrap_or_default(), channel = channel.name_any()))]
async fn reconcile(channel: Arc<ChatChannel>, ctx: Arc<ChannelContext>) -> Result<Action> {
    let metrics = &ctx.shared.metrics;
    metrics.reconciles.with_label_values(&["channel"]).inc();
    let _timer = metrics
        .reconcile_duration
        .with_label_values(&["channel"])
        .start_timer();
    let _ = ctx.agents.wait_until_ready().await;
    let namespace = channel.namespace().unwrap_or_default();
    let agent = ctx
        .agents
        .get(&ObjectRef::new(&channel.spec.agent_ref.name).within(&namespace));
    let desired = status::desired_status(&channel, agent.as_deref());
    let key = format!("{namespace}/{}", channel.name_any());
    if status::status_differs(channel.status.as_ref(), &desired) {
        let was_accepted = channel
            .status
            .as_ref()
            .map(|s| crds::condition::is_true(&s.conditions, crds::conditions::ACCEPTED));
        let api: Api<ChatChannel> = Api::namespaced(ctx.shared.client.clone(), &namespace);
        let body = json!({
            "apiVersion": ChatChannel::api_version(&()),
            "kind": ChatChannel::kind(&()),
            "status": desired,
        });
        ctx.shared.metrics.write("ChatChannel", "apply-status");
        api.patch_status(
            &channel.name_any(),
            &PatchParams::apply(names::FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube("writing the channel status"))?;
        let accepted =
            crds::condition::find_condition(&desired.conditions, crds::conditions::ACCEPTED);
        if let Some(c) = accepted
            && was_accepted != Some(c.status == crds::condition::TRUE)
        {
            let type_ = if c.status == crds::condition::TRUE {
                EventType::Normal
            } else {
                EventType::Warning
            };
            ctx.shared
                .event(
                    &channel.object_ref(&()),
                    type_,
                    &c.reason,
                    "Bind",
                    c.message.clone(),
                )
                .await;
        }
    }
    ctx.shared.reset_backoff(&key);
    Ok(Action::requeue(ctx.shared.config.resync()))
}

fn error_policy(channel: Arc<ChatChannel>, error: &Error, ctx: Arc<ChannelContext>) -> Action {
    let shared = ctx.shared.clone();
    shared
        .metrics
        .failures
        .with_label_values(&["channel", error.metric_label()])
        .inc();
    warn!(
        namespace = channel.namespace().unwrap_or_default(),
        name = channel.name_any(),
        category = error.metric_label(),
        %error,
        "channel reconcile failed"
    );
    let reference = channel.object_ref(&());
    let reason = error.event_reason();
    let note = error.to_string();
    tokio::spawn(async move {
        shared
            .event(&reference, EventType::Warning, reason, "Reconcile", note)
            .await;
    });
    let key = format!(
        "{}/{}",
        channel.namespace().unwrap_or_default(),
        channel.name_any()
    );
    Action::requeue(ctx.shared.next_backoff(&key))
}
