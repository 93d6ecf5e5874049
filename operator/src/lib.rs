//! Switchboard operator: reconciles each AgentDeployment into its runtime, database
//! and credentials, and each ChatChannel into a channel bound to its agent. A library
//! so the binary stays thin and the pure parts are unit-tested.

pub mod agent;
pub mod apply;
pub mod backoff;
pub mod channel;
pub mod client;
pub mod compact;
pub mod config;
pub mod context;
pub mod controller;
pub mod database;
pub mod error;
pub mod events;
pub mod hash;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod secret_versions;
pub mod server;
pub mod telemetry;
pub mod tool_server;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

use crds::{AgentDeployment, ChatChannel, ToolServer};
use kube::runtime::{WatchStreamExt, watcher};

use crate::controller::shared_watch::{SharedTrigger, SharedWatch};
use crate::watch::{observed, secret_changes, slim_metadata, tolerant_watcher};

/// Runs the AgentDeployment, ChatChannel and ToolServer controllers for every watched namespace
/// (or the whole cluster) until `shutdown` resolves. Per namespace, each kind both
/// controllers read is watched once and shared.
pub async fn run_controllers<S>(context: Arc<context::Context>, shutdown: S)
where
    S: Future<Output = ()> + Clone + Send + Sync + 'static,
{
    let scopes: Vec<Option<String>> = match context.config.watched_namespaces() {
        Some(namespaces) => namespaces.into_iter().map(Some).collect(),
        None => vec![None],
    };
    let mut controllers = Vec::new();
    let mut watches = Vec::new();
    for scope in scopes {
        let client = context.client.clone();
        let ns = scope.as_deref();
        let metrics = &context.metrics;
        let mut agents = SharedWatch::new(
            observed(
                tolerant_watcher::<AgentDeployment>(client.clone(), ns, watcher::Config::default()),
                metrics,
                "AgentDeployment",
            )
            .default_backoff()
            .modify(slim_metadata::<AgentDeployment>),
        )
        // A runtime heartbeat reaches the cache, not the controllers.
        .significant(agent::status::significant);
        let mut channels = SharedWatch::new(
            observed(
                tolerant_watcher::<ChatChannel>(client.clone(), ns, watcher::Config::default()),
                metrics,
                "ChatChannel",
            )
            .default_backoff()
            .modify(slim_metadata::<ChatChannel>),
        )
        // A runtime's activity report reaches the cache, not the controllers.
        .significant(channel::status::significant);
        let mut tool_servers = SharedWatch::new(
            observed(
                tolerant_watcher::<ToolServer>(client.clone(), ns, watcher::Config::default()),
                metrics,
                "ToolServer",
            )
            .default_backoff(),
        );
        // Secrets by metadata, uncached: a ToolServer re-lists its tools when a header
        // Secret changes, an agent re-reads the Secrets its pods use.
        let mut secrets = SharedTrigger::new(secret_changes(
            client,
            ns,
            metrics,
            context.secret_versions.clone(),
        ));
        // Each controller reacts to its own kind's changes and to the other kind's
        // changes and deletions.
        let channels_by_agent = channels.index(channel::served_agent);
        let agent_controller = agent::run(
            context.clone(),
            scope,
            (
                agents.store(),
                agents.index(agent::tools::callee_values),
                agents.subscribe(false),
            ),
            (
                channels.store(),
                channels_by_agent.clone(),
                channels.subscribe(true),
            ),
            (tool_servers.store(), tool_servers.subscribe(true)),
            secrets.subscribe(),
            shutdown.clone(),
        );
        let tool_server_controller = tool_server::run(
            context.clone(),
            (tool_servers.store(), tool_servers.subscribe(false)),
            secrets.subscribe(),
            shutdown.clone(),
        );
        let channel_controller = channel::run(
            context.clone(),
            (
                channels.store(),
                channels_by_agent,
                channels.subscribe(false),
            ),
            (agents.store(), agents.subscribe(true)),
            shutdown.clone(),
        );
        controllers.push(tokio::spawn(agent_controller));
        controllers.push(tokio::spawn(channel_controller));
        controllers.push(tokio::spawn(tool_server_controller));
        watches.push(tokio::spawn(agents.run()));
        watches.push(tokio::spawn(channels.run()));
        watches.push(tokio::spawn(tool_servers.run()));
        watches.push(tokio::spawn(secrets.run()));
    }
    futures::future::join_all(controllers).await;
    for watch in watches {
        watch.abort();
    }
}
