//! Channels: the ways in to this agent beside the root API. The per-channel
//! routes (`/channels/{name}/...`, see [`routes`]), the signed [`webhook`]
//! intake, the [`slack`] Events API and [`slack_socket`] Socket Mode intakes,
//! the [`discord`] Gateway bot and its [`discord_interactions`] slash command
//! (with each channel's [`connection`] state), and the durable [`delivery`] of
//! answers (all through the conversation service), and the background tasks: the ChatChannel
//! [`watcher`] that keeps the channel registry current in a cluster and the
//! activity reporter. What the runtime knows about its channels (the registry,
//! signing, activity counts) lives in [`crate::channel_registry`].

pub mod connection;
pub mod delivery;
pub mod discord;
pub mod discord_api;
pub mod discord_interactions;
pub mod routes;
pub mod slack;
pub mod slack_api;
pub mod slack_socket;
pub mod text;
pub mod watcher;
pub mod web;
pub mod webhook;

use crate::channel_registry::activity;
use crate::state::SharedState;

/// Points the Slack Web API elsewhere (a proxy; the mock in tests).
pub const SLACK_API_URL_ENV: &str = "SWITCHBOARD_SLACK_API_URL";

/// How often `sessions.retentionDays` is applied.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Applies `sessions.retentionDays` at start and then every hour.
async fn purge_periodically(state: SharedState, stop: tokio_util::sync::CancellationToken) {
    loop {
        if let Err(err) = crate::conversation::retention::purge_expired(&state).await {
            tracing::warn!(error = %err, "cannot purge old sessions");
        }
        tokio::select! {
            () = tokio::time::sleep(PURGE_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Points the Discord Gateway elsewhere (`ws://host:port`; the mock in tests).
pub const DISCORD_GATEWAY_URL_ENV: &str = "SWITCHBOARD_DISCORD_GATEWAY_URL";
/// Sends Discord REST calls to a plain-HTTP `host:port` (the mock in tests).
pub const DISCORD_API_PROXY_ENV: &str = "SWITCHBOARD_DISCORD_API_PROXY";

/// The channels' background tasks: the outbox delivery, the Discord Gateway
/// supervisor, Slack Socket Mode (and the Slack channels' connection check) and
/// the sessions' retention always; in a cluster (`POD_NAME`/`POD_NAMESPACE` set
/// and Kubernetes credentials) also the ChatChannel watcher, the activity
/// reporter and the connection-state reporter (the `Connected` condition).
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
        let present = |name: &str| lookup(name).filter(|v| !v.is_empty());
        state
            .webhooks
            .set_discord_endpoints(crate::channel_registry::webhook::DiscordEndpoints {
                gateway_url: present(DISCORD_GATEWAY_URL_ENV),
                api_proxy: present(DISCORD_API_PROXY_ENV),
            });
        // The lease holder's name: the pod, or this process.
        let holder = present("POD_NAME")
            .unwrap_or_else(|| format!("process-{}", uuid::Uuid::new_v4().simple()));
        let mut tasks = vec![
            tokio::spawn(delivery::run(state.clone(), stop.clone())),
            tokio::spawn(discord::run(state.clone(), holder, stop.clone())),
            tokio::spawn(slack_socket::run(state.clone(), stop.clone())),
            tokio::spawn(purge_periodically(state.clone(), stop.clone())),
        ];
        let pod = crate::status_report::ReporterConfig::from_env(&state.config.agent.name, lookup);
        if let Some(pod) = pod {
            match kube::Client::try_default().await {
                Ok(client) => {
                    tracing::info!(namespace = %pod.namespace, "watching this agent's ChatChannels");
                    // Only declared channels are served: none until the watch has
                    // listed them (the config file's list does not apply here), and
                    // the pod is not ready until then.
                    state.channels.await_list();
                    state
                        .webhooks
                        .keys
                        .set_cluster(client.clone(), pod.namespace.clone());
                    tasks.push(tokio::spawn(connection::report(
                        client.clone(),
                        pod.namespace.clone(),
                        state.channels.clone(),
                        stop.clone(),
                    )));
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
                        counts: pod.cadence.counts,
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
