//! Webhook signatures: `X-Switchboard-Signature: sha256=<hex HMAC-SHA256 over
//! "<timestamp>.<raw body>">` with `X-Switchboard-Timestamp: <unix seconds>`,
//! checked in constant time against the channel's key, and where that key comes
//! from (an environment variable standalone, a Secret in a cluster).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use sha2::Sha256;

use super::SigningKeySource;

/// Header carrying the signing time (unix seconds).
pub const TIMESTAMP_HEADER: &str = "x-switchboard-timestamp";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-switchboard-signature";
/// Header naming one outbound delivery (the same on every retry).
pub const DELIVERY_HEADER: &str = "x-switchboard-delivery";
/// How long a key read from a Secret is used before it is read again.
const SECRET_KEY_TTL: Duration = Duration::from_secs(30);

type HmacSha256 = Hmac<Sha256>;
type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;
/// Keys read from Secrets, by (Secret name, key), with when they were read.
type KeyCache = HashMap<(String, String), (Vec<u8>, Instant)>;

/// Why a signed message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// A header is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The timestamp is not a number of seconds.
    #[error("{TIMESTAMP_HEADER} must be unix seconds")]
    BadTimestamp,
    /// The timestamp is too far from now.
    #[error("timestamp outside the allowed window: the message is replayed or stale")]
    Stale,
    /// The signature is not `sha256=<hex>`.
    #[error("{SIGNATURE_HEADER} must be sha256=<hex HMAC-SHA256>")]
    Malformed,
    /// The signature does not match.
    #[error("signature does not match the body and timestamp")]
    Mismatch,
}

/// The signature header value for `body` signed at `timestamp`.
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(key, timestamp, body).finalize().into_bytes();
    format!("sha256={}", hex::encode(digest))
}

fn mac(key: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Checks the timestamp against `now` (unix seconds) and the signature against
/// the key, in constant time. Returns the timestamp.
pub fn verify(
    key: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<i64, SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now.abs_diff(timestamp) > tolerance.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let hex_part = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let presented = hex::decode(hex_part).map_err(|_| SignatureError::Malformed)?;
    mac(key, timestamp, body)
        .verify_slice(&presented)
        .map_err(|_| SignatureError::Mismatch)?;
    Ok(timestamp)
}

/// Why a channel's signing key is not available.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The environment variable is unset or empty.
    #[error("environment variable {0} (webhook.signingKeyEnv) is not set")]
    EnvUnset(String),
    /// Secrets can only be read in a cluster.
    #[error("the signing key is in Secret {0}, but the runtime has no Kubernetes client")]
    NoClient(String),
    /// The Secret could not be read.
    #[error("cannot read Secret {name}: {source}")]
    Secret {
        /// Secret name.
        name: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
    /// The Secret lacks the key.
    #[error("Secret {name} has no key {key}")]
    MissingKey {
        /// Secret name.
        name: String,
        /// Key.
        key: String,
    },
}

/// Reads signing keys, caching those from Secrets for a short while.
pub struct SigningKeys {
    client: OnceLock<(Client, String)>,
    env: RwLock<EnvLookup>,
    cache: Mutex<KeyCache>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("in_cluster", &self.client.get().is_some())
            .finish_non_exhaustive()
    }
}

impl SigningKeys {
    /// Keys from this process's environment only.
    pub fn from_env() -> Self {
        Self::with_lookup(|name| std::env::var(name).ok())
    }

    /// Keys from `lookup` for `Env` sources.
    pub fn with_lookup(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            client: OnceLock::new(),
            env: RwLock::new(Arc::new(lookup)),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Reads `Env` sources through `lookup` instead of the process environment
    /// (embedding the runtime, tests).
    pub fn set_lookup(&self, lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) {
        let lookup: EnvLookup = Arc::new(lookup);
        *self.env.write().unwrap_or_else(|p| p.into_inner()) = lookup;
    }

    /// Also reads Secrets of `namespace` through `client` (set once, in a cluster).
    pub fn set_cluster(&self, client: Client, namespace: String) {
        if self.client.set((client, namespace)).is_err() {
            tracing::debug!("signing keys already read from the cluster");
        }
    }

    /// The key for `source`.
    pub async fn key(&self, source: &SigningKeySource) -> Result<Vec<u8>, KeyError> {
        match source {
            SigningKeySource::Inline(value) => Ok(value.clone().into_bytes()),
            SigningKeySource::Env(name) => {
                let lookup = self.env.read().unwrap_or_else(|p| p.into_inner()).clone();
                lookup(name)
                    .filter(|v| !v.is_empty())
                    .map(String::into_bytes)
                    .ok_or_else(|| KeyError::EnvUnset(name.clone()))
            }
            SigningKeySource::Secret { name, key } => {
                let cache_key = (name.clone(), key.clone());
                if let Some((value, at)) = self
                    .cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&cache_key)
                    && at.elapsed() < SECRET_KEY_TTL
                {
                    return Ok(value.clone());
                }
                let (client, namespace) = self
                    .client
                    .get()
                    .ok_or_else(|| KeyError::NoClient(name.clone()))?;
                let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
                let secret = api.get(name).await.map_err(|source| KeyError::Secret {
                    name: name.clone(),
                    source,
                })?;
                let value = secret
                    .data
                    .and_then(|mut d| d.remove(key))
                    .map(|b| b.0)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| KeyError::MissingKey {
                        name: name.clone(),
                        key: key.clone(),
                    })?;
                self.cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(cache_key, (value.clone(), Instant::now()));
                Ok(value)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"whsec-test";
    const TOL: Duration = Duration::from_secs(300);

    #[test]
    fn a_signed_body_verifies_and_anything_else_does_not() {
        let body = br#"{"text":"hi"}"#;
        let sig = sign(KEY, 1_700_000_000, body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        let ok = verify(
            KEY,
            Some("1700000000"),
            Some(&sig),
            body,
            1_700_000_010,
            TOL,
        );
        assert_eq!(ok, Ok(1_700_000_000));
        let check = |ts: Option<&str>, sig: Option<&str>, body: &[u8], key: &[u8]| {
            verify(key, ts, sig, body, 1_700_000_010, TOL)
        };
        assert_eq!(
            check(Some("1700000000"), Some(&sig), b"{}", KEY),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(Some("1700000000"), Some(&sig), body, b"other"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(Some("1700000001"), Some(&sig), body, KEY),
            Err(SignatureError::Mismatch),
            "the timestamp is signed too"
        );
        assert_eq!(
            check(None, Some(&sig), body, KEY),
            Err(SignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            check(Some("1700000000"), None, body, KEY),
            Err(SignatureError::Missing(SIGNATURE_HEADER))
        );
        assert_eq!(
            check(Some("1700000000"), Some("md5=abc"), body, KEY),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(Some("soon"), Some(&sig), body, KEY),
            Err(SignatureError::BadTimestamp)
        );
    }

    #[test]
    fn timestamps_outside_the_window_are_stale() {
        let body = b"x";
        let sig = sign(KEY, 1_000, body);
        assert_eq!(
            verify(KEY, Some("1000"), Some(&sig), body, 1_000 + 301, TOL),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(KEY, Some("1000"), Some(&sig), body, 1_000 - 301, TOL),
            Err(SignatureError::Stale),
            "from the future as well"
        );
        assert!(verify(KEY, Some("1000"), Some(&sig), body, 1_300, TOL).is_ok());
    }

    #[tokio::test]
    async fn env_keys_come_from_the_lookup() {
        let keys = SigningKeys::with_lookup(|n| (n == "HOOK_KEY").then(|| "k".to_owned()));
        assert_eq!(
            keys.key(&SigningKeySource::Env("HOOK_KEY".into()))
                .await
                .expect("set"),
            b"k"
        );
        assert!(
            keys.key(&SigningKeySource::Env("NOPE".into()))
                .await
                .is_err()
        );
        assert!(matches!(
            keys.key(&SigningKeySource::Secret {
                name: "s".into(),
                key: "k".into()
            })
            .await,
            Err(KeyError::NoClient(_))
        ));
    }
}
