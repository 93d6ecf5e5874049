//! Keeps the [`crate::channel_registry::ChannelRegistry`] in step with the ChatChannels of the pod's
//! namespace that point at this agent (a kube reflector), so enabling,
//! disabling, language and limit changes apply without a restart.

use crds::ChatChannel;
use futures::StreamExt;
use kube::Client;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

use crate::channel_registry::{ChannelSettings, apply_limits};
use crate::state::SharedState;

/// The agent's channels in `store`, as settings.
pub fn channels_of(store: &Store<ChatChannel>, agent: &str) -> Vec<ChannelSettings> {
    store
        .state()
        .iter()
        .filter(|c| c.spec.agent_ref.name == agent)
        .filter_map(|c| ChannelSettings::from_resource(c))
        .collect()
}

/// Watches until `shutdown` is cancelled. Every change re-publishes the whole
/// set of the agent's channels. Watch errors are retried with backoff; the last
/// good view keeps serving meanwhile.
pub async fn run(
    client: Client,
    namespace: String,
    state: SharedState,
    shutdown: CancellationToken,
) {
    let agent = state.config.agent.name.clone();
    let api: Api<ChatChannel> = Api::namespaced(client, &namespace);
    let (reader, writer) = reflector::store();
    let stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    let mut stream = std::pin::pin!(stream);
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            () = shutdown.cancelled() => return,
        };
        match event {
            None => {
                tracing::warn!(%namespace, "ChatChannel watch ended");
                return;
            }
            Some(Ok(Event::Init | Event::InitApply(_))) => {}
            Some(Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_))) => {
                let channels = channels_of(&reader, &agent);
                tracing::info!(
                    %agent,
                    channels = ?channels.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
                    "channels updated"
                );
                let previous: Vec<String> = state
                    .channels
                    .all()
                    .iter()
                    .map(|c| c.name.clone())
                    .collect();
                state.channels.replace_all(channels);
                apply_limits(&state.channels, &state.limiter, &previous);
            }
            Some(Err(err)) => {
                tracing::warn!(%namespace, error = %err, "ChatChannel watch failed; retrying");
            }
        }
    }
}
