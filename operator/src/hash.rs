//! Short content hashes: of the rendered runtime configuration (a pod template
//! annotation, so a change rolls the pods) and of each applied child; and the
//! in-process hash the shared watches filter events by.

use sha2::{Digest, Sha256};

/// A hash of `value`'s JSON, to tell within one process whether two versions of an
/// object differ in what is hashed (the shared watches' filters; not stable across
/// builds).
pub fn content_hash<T: serde::Serialize>(value: &T) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    serde_json::to_vec(value)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// First 16 hex digits of the SHA-256 of `bytes`.
pub fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_short_stable_and_content_sensitive() {
        assert_eq!(short_hash(b"a").len(), 16);
        assert_eq!(short_hash(b"a"), short_hash(b"a"));
        assert_ne!(short_hash(b"a"), short_hash(b"b"));
    }
}
