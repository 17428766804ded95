//! Credentials: generation and the hash stored in their place.
//!
//! Tokens are 32 random bytes, hex-encoded behind a short prefix that says what they are
//! (`bt_` authtoken, `bk_` API key). With that much entropy a plain SHA-256 is a sound storage
//! hash: there is nothing to brute-force, and lookups stay a single indexed equality.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Generates a new credential `"<prefix>_<64 hex chars>"`.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The value stored in place of `token`.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_prefixed_and_distinct() {
        let a = generate("bt");
        let b = generate("bt");
        assert!(a.starts_with("bt_") && a.len() == 3 + 64);
        assert_ne!(a, b);
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a), hash(&a));
        assert!(!hash(&a).contains(&a[3..]));
    }
}
