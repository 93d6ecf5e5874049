//! Channels: the ways in to this agent beside the root API. The per-channel
//! routes (`/channels/{name}/...`, see [`routes`]), the signed [`webhook`]
//! intake and the [`slack`] Events API intake with the durable [`delivery`] of
//! answers (all through the conversation service), and the background tasks: the ChatChannel
//! [`watcher`] that keeps the channel registry current in a cluster and the
//! activity reporter. What the runtime knows about its channels (the registry,
//! signing, activity counts) lives in [`crate::channel_registry`].

pub mod delivery;
pub mod routes;
pub mod slack;
pub mod slack_api;
pub mod watcher;
pub mod web;
pub mod webhook;

use crate::channel_registry::activity;
use crate::state::SharedState;

/// Points the Slack Web API elsewhere (a proxy; the mock in tests).
pub const SLACK_API_URL_ENV: &str = "SWITCHBOARD_SLACK_API_URL";

/// The channels' background tasks: the webhook delivery always; in a cluster
/// (`POD_NAME`/`POD_NAMESPACE` set and Kubernetes credentials) also the
/// ChatChannel watcher and the activity reporter.
pub struct ChannelTasks {
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ChannelTasks {
    /// Starts them. `lookup` reads the environment.
    pub async fn start(state: &SharedState, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        if let Some(url) = lookup(SLACK_API_URL_ENV).filter(|u| !u.is_empty()) {
            state.webhooks.set_slack_api_url(&url);
        }
        let mut tasks = vec![tokio::spawn(delivery::run(state.clone(), stop.clone()))];
        let pod = crate::status_report::ReporterConfig::from_env(&state.config.agent.name, lookup);
        if let Some(pod) = pod {
            match kube::Client::try_default().await {
                Ok(client) => {
                    tracing::info!(namespace = %pod.namespace, "watching this agent's ChatChannels");
                    state
                        .webhooks
                        .keys
                        .set_cluster(client.clone(), pod.namespace.clone());
                    tasks.push(tokio::spawn(watcher::run(
                        client.clone(),
                        pod.namespace.clone(),
                        state.clone(),
                        stop.clone(),
                    )));
                    let config = activity::ActivityReporterConfig {
                        namespace: pod.namespace,
                        pod: pod.pod,
                        interval: pod.interval,
                    };
                    tasks.push(tokio::spawn(activity::run(
                        client,
                        config,
                        state.channels.clone(),
                        stop.clone(),
                    )));
                }
                Err(err) => {
                    tracing::warn!(error = %err, "no Kubernetes credentials: channels come from the config file only");
                }
            }
        }
        Self { stop, tasks }
    }

    /// Stops them and waits (briefly) for them to end.
    pub async fn stop(self) {
        self.stop.cancel();
        for task in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
    }
}
