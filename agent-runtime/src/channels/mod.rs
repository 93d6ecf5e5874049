//! Channels: the ways in to this agent. A [`ChannelRegistry`] of the channels
//! served (from the config file, kept current by a ChatChannel [`watcher`] in a
//! cluster), the per-channel routes (`/channels/{name}/...`, see [`routes`]),
//! per-channel [`activity`] reported into each ChatChannel's status, and the
//! signed [`webhook`] channel with its durable [`delivery`] of answers.

pub mod activity;
pub mod delivery;
pub mod registry;
pub mod routes;
pub mod signing;
pub mod watcher;
pub mod webhook;

pub use registry::{ChannelRegistry, ChannelSettings, SigningKeySource, WebhookSettings};

use crate::app::SharedState;
use crate::limits::ChannelLimits;

/// Hands every channel's rate limits to the limiter, clearing those of
/// channels no longer served (`previous`: the names served before).
pub fn apply_limits(state: &SharedState, previous: &[String]) {
    let current = state.channels.all();
    for name in previous {
        if !current.iter().any(|c| &c.name == name) {
            state.limiter.set_channel_limits(name, None);
        }
    }
    for channel in current {
        let l = channel.rate_limit;
        let limits = (l.requests_per_minute.is_some() || l.requests_per_minute_per_user.is_some())
            .then_some(ChannelLimits {
                requests_per_minute: l.requests_per_minute,
                requests_per_minute_per_user: l.requests_per_minute_per_user,
            });
        state.limiter.set_channel_limits(&channel.name, limits);
    }
}

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
