//! The bearer keys the runtime accepts, and their rotation: the agent's client
//! key, the admin key, the keys of channels that have their own, and the keys
//! other agents of the namespace call this one with as a tool (`agent.<caller>`,
//! opening only `POST /agents/v1/chat/completions`). Read from
//! the environment at start and, when `auth.keysDir` is set (a mounted Secret
//! volume in a cluster), re-read from its files every `auth.keysReloadSeconds`,
//! so a rotated Secret takes effect without a restart. A replaced key keeps
//! working for `auth.keyRotationGraceSeconds`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crds::runtime_config::AuthConfig;

// The file names the operator mounts (shared with it through the crds crate).
use crds::runtime_config::{
    KEY_FILE_ADMIN as ADMIN_FILE, KEY_FILE_AGENT_PREFIX as AGENT_FILE_PREFIX,
    KEY_FILE_CHANNEL_PREFIX as CHANNEL_FILE_PREFIX, KEY_FILE_CLIENT as CLIENT_FILE,
};

/// Which key a request must present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// The agent's client key.
    Client,
    /// The admin key.
    Admin,
    /// The key of channel `name`.
    Channel(String),
}

/// One key with the one it replaced, while that is in its grace period.
#[derive(Clone, Debug, Default)]
struct Slot {
    current: Option<String>,
    previous: Option<(String, Instant)>,
}

impl Slot {
    fn new(current: Option<String>) -> Self {
        Self {
            current,
            previous: None,
        }
    }

    /// Takes `next` as the current key; the current one (if any, and different)
    /// stays valid until `now + grace`.
    fn rotate(&mut self, next: Option<String>, grace: Duration, now: Instant) {
        if next == self.current {
            return;
        }
        if let Some(old) = self.current.take()
            && !grace.is_zero()
        {
            self.previous = Some((old, now + grace));
        }
        self.current = next;
    }

    fn accepts(&self, presented: &str, now: Instant) -> bool {
        let matches = |k: &str| constant_time_eq(k.as_bytes(), presented.as_bytes());
        self.current.as_deref().is_some_and(matches)
            || self
                .previous
                .as_ref()
                .is_some_and(|(k, until)| now < *until && matches(k))
    }

    fn is_set(&self) -> bool {
        self.current.is_some()
    }
}

#[derive(Debug, Default)]
struct Keys {
    client: Slot,
    admin: Slot,
    channels: HashMap<String, Slot>,
    agents: HashMap<String, Slot>,
}

/// Rotates each named slot to its loaded key, adds new names, and forgets
/// names whose key and grace are both gone.
fn rotate_named(
    slots: &mut HashMap<String, Slot>,
    loaded: HashMap<String, String>,
    grace: Duration,
    now: Instant,
) {
    for (name, slot) in slots.iter_mut() {
        slot.rotate(loaded.get(name).cloned(), grace, now);
    }
    for (name, key) in loaded {
        slots.entry(name).or_insert_with(|| Slot::new(Some(key)));
    }
    slots.retain(|_, s| s.is_set() || s.previous.as_ref().is_some_and(|(_, u)| now < *u));
}

fn currents(slots: &HashMap<String, Slot>) -> HashMap<String, Option<String>> {
    slots
        .iter()
        .map(|(n, s)| (n.clone(), s.current.clone()))
        .collect()
}

/// The keys accepted now; cheap to check from every request.
#[derive(Debug)]
pub struct KeyRing {
    keys: RwLock<Keys>,
    dir: Option<PathBuf>,
    grace: Duration,
    /// Keys from the environment, used when the directory has no such file.
    env_client: Option<String>,
    env_admin: Option<String>,
}

/// Whether a presented key opens what it asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// It does.
    Accepted,
    /// No key was presented.
    Missing,
    /// A key was presented but it is not the one needed.
    Wrong,
    /// The key needed is not configured (the Secret is not there yet).
    Unavailable,
}

impl KeyRing {
    /// From the auth settings and the keys the environment holds (`client`,
    /// `admin`). Reads the key files once.
    pub fn new(auth: &AuthConfig, client: Option<String>, admin: Option<String>) -> Self {
        let ring = Self {
            keys: RwLock::new(Keys::default()),
            dir: auth.keys_dir.as_ref().map(PathBuf::from),
            grace: Duration::from_secs(auth.key_rotation_grace_seconds),
            env_client: client,
            env_admin: admin,
        };
        let loaded = ring.load();
        *ring.write() = Keys {
            client: Slot::new(loaded.client),
            admin: Slot::new(loaded.admin),
            channels: loaded
                .channels
                .into_iter()
                .map(|(name, key)| (name, Slot::new(Some(key))))
                .collect(),
            agents: loaded
                .agents
                .into_iter()
                .map(|(name, key)| (name, Slot::new(Some(key))))
                .collect(),
        };
        ring
    }

    /// The agent whose `agent.<caller>` key `presented` is (in its grace period
    /// too), if any.
    pub fn agent_caller(&self, presented: &str) -> Option<String> {
        let now = Instant::now();
        self.read()
            .agents
            .iter()
            .find(|(_, slot)| slot.accepts(presented, now))
            .map(|(name, _)| name.clone())
    }

    /// The agent's client key now (the web edge derives its cookie key from it).
    pub fn client_key(&self) -> Option<String> {
        self.read().client.current.clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Keys> {
        match self.keys.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        match self.keys.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The directory keys are re-read from, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Whether the runtime runs open: no client key configured at all.
    pub fn is_open(&self) -> bool {
        !self.read().client.is_set() && self.dir.is_none()
    }

    /// Checks `presented` against the key `kind` needs.
    pub fn check(&self, kind: &KeyKind, presented: Option<&str>) -> KeyCheck {
        let keys = self.read();
        let slot = match kind {
            KeyKind::Client => Some(&keys.client),
            KeyKind::Admin => Some(&keys.admin),
            KeyKind::Channel(name) => keys.channels.get(name),
        };
        let Some(slot) = slot.filter(|s| s.is_set() || s.previous.is_some()) else {
            return KeyCheck::Unavailable;
        };
        match presented {
            None => KeyCheck::Missing,
            Some(p) if slot.accepts(p, Instant::now()) => KeyCheck::Accepted,
            Some(_) => KeyCheck::Wrong,
        }
    }

    /// Re-reads the key files; a changed key starts the old one's grace period.
    /// Returns whether anything changed.
    pub fn reload(&self) -> bool {
        let loaded = self.load();
        let now = Instant::now();
        let mut keys = self.write();
        let before = (
            keys.client.current.clone(),
            keys.admin.current.clone(),
            currents(&keys.channels),
            currents(&keys.agents),
        );
        keys.client.rotate(loaded.client, self.grace, now);
        keys.admin.rotate(loaded.admin, self.grace, now);
        rotate_named(&mut keys.channels, loaded.channels, self.grace, now);
        rotate_named(&mut keys.agents, loaded.agents, self.grace, now);
        let after = (
            keys.client.current.clone(),
            keys.admin.current.clone(),
            currents(&keys.channels),
            currents(&keys.agents),
        );
        before != after
    }

    /// What the directory and the environment hold now.
    fn load(&self) -> Loaded {
        let mut loaded = Loaded {
            client: self.env_client.clone(),
            admin: self.env_admin.clone(),
            channels: HashMap::new(),
            agents: HashMap::new(),
        };
        let Some(dir) = &self.dir else {
            return loaded;
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot read the keys directory");
                return loaded;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Kubernetes' atomic-writer bookkeeping (`..data`, timestamped dirs).
            if name.starts_with('.') {
                continue;
            }
            let Some(key) = read_key(&entry.path()) else {
                continue;
            };
            if name == CLIENT_FILE {
                loaded.client = Some(key);
            } else if name == ADMIN_FILE {
                loaded.admin = Some(key);
            } else if let Some(channel) = name.strip_prefix(CHANNEL_FILE_PREFIX) {
                loaded.channels.insert(channel.to_owned(), key);
            } else if let Some(caller) = name.strip_prefix(AGENT_FILE_PREFIX) {
                loaded.agents.insert(caller.to_owned(), key);
            }
        }
        loaded
    }
}

struct Loaded {
    client: Option<String>,
    admin: Option<String>,
    channels: HashMap<String, String>,
    agents: HashMap<String, String>,
}

fn read_key(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let key = text.trim();
    (!key.is_empty()).then(|| key.to_owned())
}

/// Re-reads the keys directory every `every` until `stop` is cancelled.
pub async fn run_reloader(
    ring: std::sync::Arc<KeyRing>,
    every: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    if ring.dir().is_none() {
        return;
    }
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let reloaded = {
            let ring = ring.clone();
            tokio::task::spawn_blocking(move || ring.reload()).await
        };
        if reloaded.unwrap_or(false) {
            tracing::info!(
                "keys reloaded: a key changed (the previous one stays valid for the grace period)"
            );
        }
    }
}

/// Compares in time independent of where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_key_works_until_its_grace_ends() {
        let t0 = Instant::now();
        let mut slot = Slot::new(Some("old".into()));
        slot.rotate(Some("new".into()), Duration::from_secs(10), t0);
        assert!(slot.accepts("new", t0));
        assert!(slot.accepts("old", t0 + Duration::from_secs(9)));
        assert!(!slot.accepts("old", t0 + Duration::from_secs(10)));
        assert!(!slot.accepts("other", t0));
        // The same value again starts nothing.
        slot.rotate(Some("new".into()), Duration::from_secs(10), t0);
        assert!(slot.accepts("old", t0));
        // No grace: the old key ends at once.
        let mut slot = Slot::new(Some("old".into()));
        slot.rotate(Some("new".into()), Duration::ZERO, t0);
        assert!(!slot.accepts("old", t0));
    }

    #[test]
    fn files_are_read_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("sb-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("client"), "c1\n").expect("write");
        std::fs::write(dir.join("channel.api"), "k1").expect("write");
        let auth = AuthConfig {
            keys_dir: Some(dir.display().to_string()),
            key_rotation_grace_seconds: 60,
            ..AuthConfig::default()
        };
        let ring = KeyRing::new(&auth, None, None);
        assert_eq!(ring.check(&KeyKind::Client, Some("c1")), KeyCheck::Accepted);
        assert_eq!(
            ring.check(&KeyKind::Channel("api".into()), Some("c1")),
            KeyCheck::Wrong
        );
        assert_eq!(
            ring.check(&KeyKind::Admin, Some("c1")),
            KeyCheck::Unavailable
        );
        std::fs::write(dir.join("channel.api"), "k2").expect("write");
        assert!(ring.reload());
        let api = KeyKind::Channel("api".into());
        assert_eq!(ring.check(&api, Some("k2")), KeyCheck::Accepted);
        assert_eq!(ring.check(&api, Some("k1")), KeyCheck::Accepted);
        assert!(!ring.reload());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
