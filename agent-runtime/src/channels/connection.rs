//! The connection state of this pod's `slack` and `discord` channels: what the
//! Slack Socket Mode connection, the Slack `auth.test` check and the Discord
//! Gateway last saw (Connected, Reconnecting, Unauthorized with the platform's
//! own message, never a token). The runtime reports it as the ChatChannel's
//! `Connected` condition ([`report`]); an admin API can read the snapshot.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crds::ChatChannel;
use crds::channel::ConnectionState;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One channel's connection as this pod sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Connected, Reconnecting or Unauthorized.
    pub state: ConnectionState,
    /// Human-readable detail: the platform's error code or close reason.
    pub message: String,
}

/// The states per channel name, with a change signal for the reporter.
#[derive(Clone, Debug)]
pub struct ConnectionStates {
    inner: Arc<Mutex<BTreeMap<String, Connection>>>,
    changed: watch::Sender<u64>,
}

impl Default for ConnectionStates {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl ConnectionStates {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Connection>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `channel`'s state; a change (only) wakes the reporter.
    pub fn set(&self, channel: &str, state: ConnectionState, message: impl Into<String>) {
        let new = Connection {
            state,
            message: message.into(),
        };
        let changed = {
            let mut map = self.lock();
            if map.get(channel) == Some(&new) {
                false
            } else {
                map.insert(channel.to_owned(), new.clone());
                true
            }
        };
        if changed {
            tracing::info!(channel, state = state.reason(), message = %new.message, "channel connection state");
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Forgets a channel this pod no longer connects.
    pub fn remove(&self, channel: &str) {
        if self.lock().remove(channel).is_some() {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// `channel`'s state, if this pod has one.
    pub fn get(&self, channel: &str) -> Option<Connection> {
        self.lock().get(channel).cloned()
    }

    /// Every channel's state, by name.
    pub fn snapshot(&self) -> BTreeMap<String, Connection> {
        self.lock().clone()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// The field manager of the `Connected` condition: one for every runtime pod
/// (the last pod to see a change states it), distinct from the operator's so
/// that the operator's status apply neither owns nor removes it.
pub const FIELD_MANAGER: &str = "switchboard-runtime-connection";

/// The server-side apply body setting `channel`'s `Connected` condition.
pub fn condition_patch(channel: &str, connection: &Connection) -> serde_json::Value {
    let condition = connection.state.condition(connection.message.clone(), None);
    serde_json::json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "ChatChannel",
        "metadata": { "name": channel },
        "status": { "conditions": [condition] },
    })
}

/// Writes each changed state as its ChatChannel's `Connected` condition until
/// `shutdown`; failed writes are retried on the next change or after 10 s.
pub async fn report(
    client: Client,
    namespace: String,
    states: ConnectionStates,
    shutdown: CancellationToken,
) {
    let api: Api<ChatChannel> = Api::namespaced(client, &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut written: BTreeMap<String, Connection> = BTreeMap::new();
    let mut changes = states.subscribe();
    loop {
        for (channel, connection) in states.snapshot() {
            if written.get(&channel) == Some(&connection) {
                continue;
            }
            let patch = condition_patch(&channel, &connection);
            match api
                .patch_status(&channel, &params, &Patch::Apply(&patch))
                .await
            {
                Ok(_) => {
                    written.insert(channel, connection);
                }
                Err(err) => {
                    tracing::warn!(%channel, error = %err, "cannot report the channel's connection state");
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
        let patch = condition_patch("s", &got);
        let condition = &patch["status"]["conditions"][0];
        assert_eq!(condition["type"], "Connected");
        assert_eq!(condition["status"], "False");
        assert_eq!(condition["reason"], "Unauthorized");
        assert_eq!(patch["status"].as_object().map(|o| o.len()), Some(1));
        states.remove("s");
        assert!(states.snapshot().is_empty());
    }
}
