//! Mock chat platforms for tests: a Discord Gateway (websocket) and the parts of the
//! Discord REST API a bot uses, and Slack's Events API (as a sender that signs and
//! retries), Web API (`chat.postMessage`, `apps.connections.open`) and Socket Mode.
//! Everything listens on loopback ports chosen by the OS; faults (dropped connections,
//! op 7 / op 9, 429s, retried events, outages) are injected by the test.
//!
//! The wire formats follow the platforms' documentation:
//! Discord <https://discord.com/developers/docs/topics/gateway>,
//! <https://discord.com/developers/docs/topics/rate-limits>; Slack
//! <https://api.slack.com/authentication/verifying-requests-from-slack>,
//! <https://api.slack.com/apis/events-api>, <https://api.slack.com/apis/socket-mode>.

pub mod discord;
pub mod slack;

use std::time::{Duration, Instant};

/// Errors of the mock servers themselves (binding, sending events).
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// A listener could not be bound.
    #[error("binding a loopback listener: {0}")]
    Bind(#[from] std::io::Error),
    /// An HTTP request of the Slack events sender failed.
    #[error("sending an event: {0}")]
    Send(#[from] reqwest::Error),
    /// No client is connected to receive a pushed event.
    #[error("no connected client")]
    NotConnected,
}

/// An outage window: while it lasts the platform refuses connections and requests.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Outage(Option<Instant>);

impl Outage {
    pub(crate) fn start(&mut self, duration: Duration) {
        self.0 = Some(Instant::now() + duration);
    }

    pub(crate) fn active(&self) -> bool {
        self.0.is_some_and(|until| Instant::now() < until)
    }
}
