//! Short content hashes: of the rendered runtime configuration (a pod template
//! annotation, so a change rolls the pods) and of each applied child.

use sha2::{Digest, Sha256};

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
