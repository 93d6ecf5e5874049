//! Events (events.k8s.io/v1) about the objects the operator manages, with the
//! series of the Kubernetes event API: an event repeated within six minutes (same
//! regarding object, type, reason and action, as client-go keys them) patches the
//! first one's `series` instead of creating another object.
//!
//! kube's `Recorder` does the same but keeps every event it published, whole, for
//! those six minutes: ~2.3 KiB per agent at a cold start (one event each), 4.6 MiB
//! of the operator's memory at 2,000 agents. This keeps, per key, a hash, the event's
//! name, its count and when it was last seen.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;

/// How long a published event can still grow a series (client-go's and kube's).
const SERIES_WINDOW: SignedDuration = SignedDuration::from_mins(6);

/// How often the expired keys are swept (each publish would be O(keys)).
const SWEEP_EVERY: SignedDuration = SignedDuration::from_secs(30);

/// An event to publish. Its type, reason and action, with the object it regards,
/// make it "the same" as one published before; its note does not (client-go's key).
pub struct NewEvent<'a> {
    pub type_: EventType,
    pub reason: &'a str,
    pub action: &'a str,
    pub note: String,
}

/// One published event that a repeat would extend (in the regarding object's
/// namespace, which is part of the key).
struct Seen {
    name: String,
    count: i32,
    last: Timestamp,
}

struct Cache {
    seen: HashMap<u64, Seen>,
    swept: Timestamp,
}

/// Publishes events as one reporting controller and instance.
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    cache: Mutex<Cache>,
}

/// A new event, or the next count of an existing one's series.
enum Publish {
    Create,
    Repeat { name: String, count: i32 },
}

impl Events {
    /// Publishes as `controller` (the reporting controller), from `instance`.
    pub fn new(client: Client, controller: String, instance: String) -> Self {
        Self {
            client,
            controller,
            instance,
            cache: Mutex::new(Cache {
                seen: HashMap::new(),
                swept: Timestamp::now(),
            }),
        }
    }

    /// Publishes `event` about `regarding`: a new Event, or the next count of the
    /// series of the same event published less than six minutes ago. Returns the
    /// last verb it sent ("create" or "patch") whether or not it succeeded.
    pub async fn publish(
        &self,
        event: NewEvent<'_>,
        regarding: &ObjectReference,
    ) -> (&'static str, Result<(), kube::Error>) {
        let now = Timestamp::now();
        let key = key(&event, regarding);
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace_of(regarding));
        if let Publish::Repeat { name, count } = self.next(key, now) {
            let series = serde_json::json!({
                "series": { "count": count, "lastObservedTime": MicroTime(now) }
            });
            match events
                .patch(&name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                // Gone (deleted by hand, or its TTL): start a new one below.
                Err(kube::Error::Api(e)) if e.code == 404 => self.forget(key),
                other => return ("patch", other.map(drop)),
            }
        }
        (
            "create",
            self.create(&events, event, regarding, key, now).await,
        )
    }

    async fn create(
        &self,
        events: &Api<Event>,
        event: NewEvent<'_>,
        regarding: &ObjectReference,
        key: u64,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let object = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace_of(regarding).to_owned()),
                ..ObjectMeta::default()
            },
            action: Some(event.action.to_owned()),
            reason: Some(event.reason.to_owned()),
            note: Some(event.note),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        };
        events.create(&PostParams::default(), &object).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.seen.insert(
            key,
            Seen {
                name,
                count: 1,
                last: now,
            },
        );
        Ok(())
    }

    /// Sweeps expired keys now and then, and says whether `key` repeats an event.
    fn next(&self, key: u64, now: Timestamp) -> Publish {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.swept + SWEEP_EVERY <= now {
            cache.seen.retain(|_, seen| seen.last + SERIES_WINDOW > now);
            cache.swept = now;
        }
        match cache.seen.get_mut(&key) {
            Some(seen) if seen.last + SERIES_WINDOW > now => {
                // A series counts the first occurrence too: the first repeat is 2.
                seen.count += 1;
                seen.last = now;
                Publish::Repeat {
                    name: seen.name.clone(),
                    count: seen.count,
                }
            }
            _ => Publish::Create,
        }
    }

    fn forget(&self, key: u64) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.seen.remove(&key);
    }

    /// How many events could still grow a series (for tests).
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.cache.lock().unwrap().seen.len()
    }
}

/// Where an event about `regarding` goes: its namespace ("default" for a
/// cluster-scoped object, as kube's recorder does).
fn namespace_of(regarding: &ObjectReference) -> &str {
    regarding.namespace.as_deref().unwrap_or("default")
}

/// client-go's key of a series: the regarding object, type, reason and action (the
/// reporting controller and instance are this publisher's own).
fn key(event: &NewEvent<'_>, regarding: &ObjectReference) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    matches!(event.type_, EventType::Warning).hash(&mut hasher);
    event.reason.hash(&mut hasher);
    event.action.hash(&mut hasher);
    regarding.api_version.hash(&mut hasher);
    regarding.kind.hash(&mut hasher);
    regarding.namespace.hash(&mut hasher);
    regarding.name.hash(&mut hasher);
    regarding.uid.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::mock_api::{self, Log};
    use serde_json::Value;

    /// Events over a mock API server that answers creates with the object and
    /// patches with `patch_status` (404: the event is gone).
    fn events(patch_status: u16) -> (Events, Log) {
        let (client, log) = mock_api::client(move |request| match request.method.as_str() {
            "PATCH" if patch_status == 404 => mock_api::not_found(),
            _ => (201, request.body.clone()),
        });
        (
            Events::new(client, "switchboard".into(), "pod-1".into()),
            log,
        )
    }

    fn agent(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("switchboard.dev/v1alpha1".into()),
            kind: Some("AgentDeployment".into()),
            namespace: Some("team".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectReference::default()
        }
    }

    fn applied(note: &str) -> NewEvent<'_> {
        NewEvent {
            type_: EventType::Normal,
            reason: "Applied",
            action: "Apply",
            note: note.to_owned(),
        }
    }

    fn methods(log: &Log) -> Vec<String> {
        log.requests().into_iter().map(|r| r.method).collect()
    }

    #[tokio::test]
    async fn a_repeat_within_six_minutes_grows_the_series_of_the_first_event() {
        let (events, log) = events(201);
        events
            .publish(applied("first"), &agent("a"))
            .await
            .1
            .unwrap();
        events
            .publish(applied("second"), &agent("a"))
            .await
            .1
            .unwrap();
        events
            .publish(applied("third"), &agent("a"))
            .await
            .1
            .unwrap();
        events
            .publish(applied("other"), &agent("b"))
            .await
            .1
            .unwrap();

        assert_eq!(methods(&log), ["POST", "PATCH", "PATCH", "POST"]);
        let seen = log.requests();
        assert_eq!(
            seen[0].path,
            "/apis/events.k8s.io/v1/namespaces/team/events"
        );
        let created: Event = serde_json::from_value(seen[0].body.clone()).unwrap();
        let name = created.metadata.name.clone().unwrap();
        assert!(name.starts_with("a."), "{name}");
        assert_eq!(created.reporting_controller.as_deref(), Some("switchboard"));
        assert_eq!(created.reporting_instance.as_deref(), Some("pod-1"));
        assert_eq!(created.note.as_deref(), Some("first"));
        assert_eq!(created.type_.as_deref(), Some("Normal"));
        assert_eq!(created.action.as_deref(), Some("Apply"));
        assert_eq!(created.regarding.unwrap().uid.as_deref(), Some("uid-a"));
        assert!(created.event_time.is_some());
        // The repeats patch that event's series, counting the first occurrence, and
        // nothing else of it.
        assert_eq!(
            seen[1].path,
            format!("/apis/events.k8s.io/v1/namespaces/team/events/{name}")
        );
        assert_eq!(seen[1].body["series"]["count"], 2, "{}", seen[1].body);
        assert_eq!(seen[2].body["series"]["count"], 3, "{}", seen[2].body);
        assert!(seen[2].body["series"]["lastObservedTime"].is_string());
        assert_eq!(
            seen[2].body.as_object().unwrap().len(),
            1,
            "{}",
            seen[2].body
        );
        assert_eq!(seen[3].body["regarding"]["name"], Value::from("b"));
        assert_eq!(events.remembered(), 2);
    }

    #[tokio::test]
    async fn another_reason_or_type_is_another_event() {
        let (events, log) = events(201);
        events.publish(applied("x"), &agent("a")).await.1.unwrap();
        let mut warning = applied("x");
        warning.type_ = EventType::Warning;
        events.publish(warning, &agent("a")).await.1.unwrap();
        let mut other = applied("x");
        other.reason = "KeysGenerated";
        events.publish(other, &agent("a")).await.1.unwrap();
        assert_eq!(methods(&log), ["POST", "POST", "POST"]);
        assert_eq!(log.requests()[1].body["type"], "Warning");
    }

    #[tokio::test]
    async fn a_series_whose_event_is_gone_starts_again_with_a_new_event() {
        let (events, log) = events(404);
        events.publish(applied("x"), &agent("a")).await.1.unwrap();
        let (verb, published) = events.publish(applied("y"), &agent("a")).await;
        published.unwrap();
        assert_eq!(verb, "create", "the last request sent");
        assert_eq!(methods(&log), ["POST", "PATCH", "POST"]);
        assert_eq!(log.requests()[2].body["note"], "y");
        // The new event is the one a further repeat extends.
        events.publish(applied("z"), &agent("a")).await.1.unwrap();
        let name = log.requests()[2].body["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(log.requests()[3].path.ends_with(&name));
    }

    #[tokio::test]
    async fn expired_keys_are_swept_and_no_longer_repeat() {
        let (events, _) = events(201);
        let now = Timestamp::now();
        let key = key(&applied("x"), &agent("a"));
        events.cache.lock().unwrap().seen.insert(
            key,
            Seen {
                name: "a.1".into(),
                count: 1,
                last: now - SignedDuration::from_mins(7),
            },
        );
        assert!(matches!(events.next(key, now), Publish::Create));
        events.cache.lock().unwrap().swept = now - SignedDuration::from_mins(1);
        let _ = events.next(key ^ 1, now);
        assert_eq!(events.remembered(), 0);
    }
}
