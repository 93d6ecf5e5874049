//! The connection state of this pod's `slack` and `discord` channels: what the
//! Slack Socket Mode connection, the Slack `auth.test` check and the Discord
//! Gateway last saw (Connected, Reconnecting, Unauthorized with the platform's
//! own message, never a token), kept with the channel registry; the channels'
//! reporter writes it as each ChatChannel's `Connected` condition and the admin
//! API reads it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crds::channel::ConnectionState;
use tokio::sync::watch;

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
