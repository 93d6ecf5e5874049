//! The ChatChannel controller: binds each channel to its agent and keeps its status
//! (Accepted, AgentReady, Ready, endpoint) in step with that agent. The pipeline is
//! short: [`validate`] (pure) → [`status`] (pure, from the channel and its agent) →
//! status write; a channel has no children.

pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use crds::{AgentDeployment, ChatChannel};
use futures::{Stream, StreamExt};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tracing::instrument;

use crate::context::Context;
use crate::controller::{apply_status, on_error, on_success};
use crate::error::{Error, Result};
use crate::index::Index;

/// Label of this controller in metrics.
const CONTROLLER: &str = "channel";

/// Reconcile context of the ChatChannel controller.
pub struct ChannelContext {
    /// Shared by both controllers.
    pub shared: Arc<Context>,
    /// The shared AgentDeployment cache.
    pub agents: Store<AgentDeployment>,
}

/// The agent a ChatChannel serves: the value the channels index keeps it under.
pub fn served_agent(channel: &ChatChannel) -> Vec<Box<str>> {
    vec![channel.spec.agent_ref.name.as_str().into()]
}

/// Runs the ChatChannel controller until `shutdown`. `channels` and `agents` come
/// from the watches both controllers share.
pub async fn run(
    shared: Arc<Context>,
    channels: (
        Store<ChatChannel>,
        Index<ChatChannel>,
        impl Stream<Item = Result<ChatChannel, watcher::Error>> + Send + 'static,
    ),
    agents: (
        Store<AgentDeployment>,
        impl Stream<Item = Result<AgentDeployment, watcher::Error>> + Send + 'static,
    ),
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let (channel_reader, by_agent, channel_stream) = channels;
    let (agents, agent_stream) = agents;
    let context = Arc::new(ChannelContext {
        shared: shared.clone(),
        agents,
    });
    let config = ControllerConfig::default()
        .concurrency(shared.config.channel_concurrency)
        .debounce(Duration::from_millis(300));
    Controller::for_stream(channel_stream, channel_reader)
        .with_config(config)
        // Re-evaluate every channel of an agent when the agent changes, appears or goes.
        .watches_stream(agent_stream, move |agent: AgentDeployment| {
            let namespace = agent.namespace();
            let name = agent.name_any();
            by_agent
                .get(namespace.as_deref().unwrap_or_default(), &name)
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

/// One reconcile of `channel`: its status from its agent, written when it changed.
#[instrument(skip_all, fields(namespace = channel.namespace().unwrap_or_default(), channel = channel.name_any()))]
pub async fn reconcile(channel: Arc<ChatChannel>, ctx: Arc<ChannelContext>) -> Result<Action> {
    let metrics = &ctx.shared.metrics;
    let _reconcile = metrics.reconcile_started(CONTROLLER);
    let _ = ctx.agents.wait_until_ready().await;
    let namespace = channel.namespace().unwrap_or_default();
    let agent = ctx
        .agents
        .get(&ObjectRef::new(&channel.spec.agent_ref.name).within(&namespace));
    let desired = status::desired_status(&channel, agent.as_deref());
    if status::status_differs(channel.status.as_ref(), &desired) {
        let was_accepted = channel
            .status
            .as_ref()
            .map(|s| crds::condition::is_true(&s.conditions, crds::conditions::ACCEPTED));
        apply_status(&ctx.shared, &*channel, &desired).await?;
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
    on_success(&ctx.shared, &*channel);
    Ok(Action::requeue(ctx.shared.config.resync()))
}

/// The error policy of the controller (see [`on_error`]).
pub fn error_policy(channel: Arc<ChatChannel>, error: &Error, ctx: Arc<ChannelContext>) -> Action {
    on_error(&ctx.shared, CONTROLLER, &*channel, error)
}
