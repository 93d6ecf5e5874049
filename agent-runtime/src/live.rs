//! Live sync: changes to a user's sessions (a new session, a rename, pin,
//! archive or delete, a new message), fanned out to that user's open pages
//! (the web chat's `/api/events` streams) on every pod of the agent.
//!
//! In one process the fan-out is a broadcast channel. With Postgres, each pod
//! also relays its events to the others through `NOTIFY` on the agent's
//! database and `LISTEN`s for theirs: events are batched per pod (every 50 ms
//! at most, one notification carrying up to ~6 KB of them), so a pod sends at
//! most 20 notifications a second whatever its chat rate, and a change reaches
//! the other pods' pages within that plus the database's delivery time. A pod
//! listens from the moment a page first opens its stream there (a pod no page
//! watches holds no listening connection) and skips its own notifications (it
//! delivered them locally). When the listening
//! connection drops, notifications sent meanwhile are lost: every local page
//! is then told to reload its list ([`LiveMessage::Resync`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

use crate::db::{LiveChannel, Store};
use crate::shutdown::Lifecycle;

/// How long a pod collects events before notifying the others.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Largest notification payload sent (Postgres allows 8000 bytes).
const MAX_PAYLOAD: usize = 6000;

/// A change to one user's sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEvent {
    /// Whose sessions changed, as stored (`visitor:<id>`, the proxy's user or
    /// the API's; scoped to a channel opened by its own key, see
    /// [`crate::domain::scoped_user`]).
    pub user: String,
    /// `session.created`, `session.updated`, `session.deleted` or `message.created`.
    pub kind: &'static str,
    /// The session, when known.
    pub session_id: Option<String>,
}

/// What local subscribers receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveMessage {
    /// One user's change.
    Event(UserEvent),
    /// Some changes may have been missed: every page should reload.
    Resync,
}

/// The user a handler acted for, set on its response when the request did
/// not name the user in a header (the OpenAI `user` field).
#[derive(Clone, Debug)]
pub struct LiveUser(pub String);

/// The kinds of event, as sent.
const KINDS: [&str; 4] = [
    "session.created",
    "session.updated",
    "session.deleted",
    "message.created",
];

/// One event on the wire between pods.
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent {
    u: String,
    k: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<String>,
}

/// One notification: the sending pod and its events.
#[derive(Debug, Serialize, Deserialize)]
struct Notification {
    pod: String,
    events: Vec<WireEvent>,
}

impl WireEvent {
    fn from_event(event: &UserEvent) -> Self {
        Self {
            u: event.user.clone(),
            k: event.kind.to_owned(),
            s: event.session_id.clone(),
        }
    }

    fn into_event(self) -> UserEvent {
        UserEvent {
            user: self.u,
            kind: KINDS
                .into_iter()
                .find(|k| *k == self.k)
                .unwrap_or("session.updated"),
            session_id: self.s,
        }
    }
}

/// The fan-out; cheap to clone.
#[derive(Clone)]
pub struct LiveSync {
    local: broadcast::Sender<LiveMessage>,
    relay: Option<Arc<Relay>>,
}

/// This pod's link to the others through the database.
struct Relay {
    outgoing: mpsc::UnboundedSender<UserEvent>,
    channel: LiveChannel,
    pod: String,
    lifecycle: Lifecycle,
    /// Whether the listening task runs (started by the first local page).
    listening: AtomicBool,
    /// Whether the other pods' notifications are being received now.
    listens: watch::Sender<bool>,
}

impl LiveSync {
    /// In this process only.
    pub fn local() -> Self {
        let (local, _) = broadcast::channel(1024);
        Self { local, relay: None }
    }

    /// In this process, and through the database to the agent's other pods
    /// when it is Postgres (relay tasks end when `lifecycle` is cancelled).
    pub fn start(store: &Store, lifecycle: &Lifecycle) -> Self {
        let mut live = Self::local();
        if let Some(channel) = store.live_channel() {
            let pod = uuid::Uuid::new_v4().simple().to_string();
            let (outgoing, rx) = mpsc::unbounded_channel();
            tokio::spawn(send_batches(
                channel.clone(),
                pod.clone(),
                rx,
                lifecycle.clone(),
            ));
            live.relay = Some(Arc::new(Relay {
                outgoing,
                channel,
                pod,
                lifecycle: lifecycle.clone(),
                listening: AtomicBool::new(false),
                listens: watch::Sender::new(false),
            }));
        }
        live
    }

    /// Announces a change to the user's open pages, here and on other pods.
    pub fn publish(&self, event: UserEvent) {
        if let Some(relay) = &self.relay {
            let _ = relay.outgoing.send(event.clone());
        }
        let _ = self.local.send(LiveMessage::Event(event));
    }

    /// Every change from now on (the subscriber filters by user). The first
    /// subscriber starts listening to the other pods: a pod no page watches
    /// holds no listening connection.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveMessage> {
        let receiver = self.local.subscribe();
        if let Some(relay) = &self.relay
            && !relay.listening.swap(true, Ordering::AcqRel)
        {
            tokio::spawn(receive(relay.clone(), self.local.clone()));
        }
        receiver
    }

    /// Resolves once this pod receives the other pods' events (at once
    /// without a database relay), or after `patience`: a page opening its
    /// stream hears of every change made after its first bytes.
    pub async fn listening(&self, patience: Duration) {
        if let Some(relay) = &self.relay {
            let mut listens = relay.listens.subscribe();
            let _ = tokio::time::timeout(patience, listens.wait_for(|l| *l)).await;
        }
    }
}

/// Batches this pod's events into notifications.
async fn send_batches(
    channel: LiveChannel,
    pod: String,
    mut events: mpsc::UnboundedReceiver<UserEvent>,
    lifecycle: Lifecycle,
) {
    loop {
        let first = tokio::select! {
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
            () = lifecycle.cancelled() => return,
        };
        let mut batch = vec![WireEvent::from_event(&first)];
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        let mut size = 0;
        while size < MAX_PAYLOAD {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(event)) => {
                    size +=
                        event.user.len() + event.session_id.as_ref().map_or(0, String::len) + 40;
                    batch.push(WireEvent::from_event(&event));
                }
                Ok(None) | Err(_) => break,
            }
        }
        let notification = Notification {
            pod: pod.clone(),
            events: batch,
        };
        let Ok(payload) = serde_json::to_string(&notification) else {
            continue;
        };
        if let Err(err) = channel.notify(&payload).await {
            tracing::warn!(error = %err, events = notification.events.len(), "cannot relay live-sync events to the other pods");
        }
    }
}

/// Delivers the other pods' events to this pod's pages.
async fn receive(relay: Arc<Relay>, local: broadcast::Sender<LiveMessage>) {
    let (channel, pod, lifecycle) = (&relay.channel, &relay.pod, &relay.lifecycle);
    let mut retry = Duration::from_millis(500);
    loop {
        let mut listener = tokio::select! {
            listener = channel.listen() => match listener {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for live-sync events of the other pods; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        () = lifecycle.cancelled() => return,
                    }
                    retry = (retry * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
            () = lifecycle.cancelled() => return,
        };
        retry = Duration::from_millis(500);
        relay.listens.send_replace(true);
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                () = lifecycle.cancelled() => return,
            };
            match received {
                Ok(Some(notification)) => {
                    match serde_json::from_str::<Notification>(notification.payload()) {
                        Ok(n) if n.pod != *pod => {
                            for event in n.events {
                                let _ = local.send(LiveMessage::Event(event.into_event()));
                            }
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::debug!(error = %err, "unreadable live-sync notification")
                        }
                    }
                }
                // The connection dropped (reconnected on the next call):
                // notifications may have been missed.
                Ok(None) => {
                    let _ = local.send(LiveMessage::Resync);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "live-sync listener failed; listening again");
                    relay.listens.send_replace(false);
                    let _ = local.send(LiveMessage::Resync);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_cross_the_wire_and_unknown_kinds_become_updates() {
        let event = UserEvent {
            user: "visitor:ab".into(),
            kind: "message.created",
            session_id: Some("s1".into()),
        };
        let wire = serde_json::to_string(&WireEvent::from_event(&event)).expect("json");
        let back: WireEvent = serde_json::from_str(&wire).expect("parses");
        assert_eq!(back.into_event(), event);
        let odd: WireEvent = serde_json::from_str(r#"{"u":"x","k":"who.knows"}"#).expect("parses");
        assert_eq!(odd.into_event().kind, "session.updated");
    }

    #[tokio::test]
    async fn local_subscribers_hear_published_events() {
        let live = LiveSync::local();
        let mut rx = live.subscribe();
        let event = UserEvent {
            user: "u".into(),
            kind: "session.created",
            session_id: None,
        };
        live.publish(event.clone());
        assert_eq!(rx.recv().await.expect("event"), LiveMessage::Event(event));
    }
}
