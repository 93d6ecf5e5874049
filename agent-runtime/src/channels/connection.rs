//! Reports this pod's chat-app connection states (kept with the channel
//! registry, [`crate::channel_registry::connection`]) as each ChatChannel's
//! `Connected` condition ([`report`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use crds::ChatChannel;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio_util::sync::CancellationToken;

use crate::channel_registry::ChannelRegistry;
pub use crate::channel_registry::connection::{Connection, ConnectionStates};

/// The field manager of the `Connected` condition: one for every runtime pod
/// (the last pod to see a change states it), distinct from the operator's so
/// that the operator's status apply neither owns nor removes it.
pub const FIELD_MANAGER: &str = "switchboard-runtime-connection";

/// The server-side apply body setting `channel`'s `Connected` condition, as
/// observed at the ChatChannel's `generation` (when known).
pub fn condition_patch(
    channel: &str,
    connection: &Connection,
    generation: Option<i64>,
) -> serde_json::Value {
    let condition = connection
        .state
        .condition(connection.message.clone(), generation);
    serde_json::json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "ChatChannel",
        "metadata": { "name": channel },
        "status": { "conditions": [condition] },
    })
}

/// The server-side apply body withdrawing the `Connected` condition from
/// `channel`: nothing under `status`, so the condition this field manager owned
/// goes (the operator's conditions are its own and stay).
pub fn withdraw_patch(channel: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "ChatChannel",
        "metadata": { "name": channel },
        "status": {},
    })
}

/// Whether `channel` still connects to a chat app somewhere (a Slack or
/// Discord channel, enabled): its condition stays even when this pod stops
/// reporting it (another pod took its Discord lease).
fn still_connects(registry: &ChannelRegistry, channel: &str) -> bool {
    registry
        .get(channel)
        .is_some_and(|c| c.enabled && (c.slack.is_some() || c.discord.is_some()))
}

/// Writes each changed state as its ChatChannel's `Connected` condition until
/// `shutdown`; failed writes are retried on the next change or after 10 s. A
/// channel that no longer connects to a chat app (deleted, disabled, or no
/// longer Slack or Discord) has the condition withdrawn.
pub async fn report(
    client: Client,
    namespace: String,
    registry: Arc<ChannelRegistry>,
    shutdown: CancellationToken,
) {
    let api: Api<ChatChannel> = Api::namespaced(client, &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let states = registry.connections.clone();
    // What was written per channel: the state and the generation it was seen at
    // (a spec change is written again, so observedGeneration stays current).
    let mut written: BTreeMap<String, (Connection, Option<i64>)> = BTreeMap::new();
    let mut changes = states.subscribe();
    loop {
        let snapshot = states.snapshot();
        for (channel, connection) in &snapshot {
            let generation = registry.get(channel).and_then(|c| c.generation);
            let seen = (connection.clone(), generation);
            if written.get(channel) == Some(&seen) {
                continue;
            }
            let patch = condition_patch(channel, connection, generation);
            match api
                .patch_status(channel, &params, &Patch::Apply(&patch))
                .await
            {
                Ok(_) => {
                    written.insert(channel.clone(), seen);
                }
                Err(err) => {
                    tracing::warn!(%channel, error = %err, "cannot report the channel's connection state");
                }
            }
        }
        let gone: Vec<String> = written
            .keys()
            .filter(|c| !snapshot.contains_key(*c))
            .cloned()
            .collect();
        for channel in gone {
            if still_connects(&registry, &channel) {
                written.remove(&channel);
                continue;
            }
            match api
                .patch_status(&channel, &params, &Patch::Apply(withdraw_patch(&channel)))
                .await
            {
                Ok(_) => {
                    written.remove(&channel);
                }
                // A deleted ChatChannel has no condition left to withdraw.
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    written.remove(&channel);
                }
                Err(err) => {
                    tracing::warn!(%channel, error = %err, "cannot withdraw the channel's connection state");
                }
            }
        }
        tokio::select! {
            _ = changes.changed() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::channel::ConnectionState;

    #[test]
    fn states_change_and_patch_carries_only_the_condition() {
        let states = ConnectionStates::default();
        let rx = states.subscribe();
        states.set(
            "s",
            ConnectionState::Unauthorized,
            "apps.connections.open: invalid_auth",
        );
        states.set(
            "s",
            ConnectionState::Unauthorized,
            "apps.connections.open: invalid_auth",
        );
        assert_eq!(*rx.borrow(), 1, "an unchanged state is not a change");
        let got = states.get("s").expect("state");
        assert_eq!(got.state, ConnectionState::Unauthorized);
        let patch = condition_patch("s", &got, Some(7));
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["type"], "Connected");
        assert_eq!(condition["observedGeneration"], 7);
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "Unauthorized");
        assert_eq!(patch["status"].as_object().map(|o| o.len()), Some(1));
        states.remove("s");
        assert!(states.snapshot().is_empty());
        let withdraw = withdraw_patch("s");
        assert_eq!(withdraw["status"], serde_json::json!({}));
        assert_eq!(withdraw["metadata"]["name"], "s");
    }
}
