//! Switchboard operator: reconciles each AgentDeployment into its runtime, database
//! and credentials, and each ChatChannel into a channel bound to its agent. A library
//! so the binary stays thin and the pure parts are unit-tested.

pub mod agent;
pub mod channel;
pub mod config;
pub mod context;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod server;
pub mod telemetry;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

/// Runs the AgentDeployment and ChatChannel controllers for every watched namespace
/// (or the whole cluster) until `shutdown` resolves.
pub async fn run_controllers<S>(context: Arc<context::Context>, shutdown: S)
where
    S: Future<Output = ()> + Clone + Send + Sync + 'static,
{
    let scopes: Vec<Option<String>> = match context.config.watched_namespaces() {
        Some(namespaces) => namespaces.into_iter().map(Some).collect(),
        None => vec![None],
    };
    let mut runs = Vec::new();
    for scope in scopes {
        runs.push(tokio::spawn(agent::run(
            context.clone(),
            scope.clone(),
            shutdown.clone(),
        )));
        runs.push(tokio::spawn(channel::run(
            context.clone(),
            scope,
            shutdown.clone(),
        )));
    }
    futures::future::join_all(runs).await;
}
