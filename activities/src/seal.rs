//! Sealing secrets at rest: certificate private keys and ACME account credentials are stored
//! in PostgreSQL encrypted with AES-256-GCM under a key from configuration
//! (`cert_encryption_key`, 32 bytes, base64).
//!
//! Sealed layout: a 12-byte random nonce, then the ciphertext with its 16-byte tag. The caller's
//! associated data (for a certificate key: `domain` and `version`) is authenticated but not
//! stored, so a sealed key copied into another row does not open there.

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Why a sealed value could not be opened (or a key not loaded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The configured key is not 32 bytes of base64.
    #[error(
        "`cert_encryption_key` must be 32 bytes encoded as base64 (e.g. `openssl rand -base64 32`): {0}"
    )]
    BadKey(String),
    /// Too short to hold a nonce and a tag.
    #[error("sealed value is truncated ({0} bytes)")]
    Truncated(usize),
    /// Wrong key, wrong associated data, or tampered bytes.
    #[error(
        "sealed value does not open with the configured key (wrong key, or the row was altered)"
    )]
    Tampered,
    /// The system random generator failed.
    #[error("no randomness for a nonce")]
    Random,
}

/// Seals and opens values under one AES-256-GCM key.
pub struct KeySealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for KeySealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySealer(..)")
    }
}

/// Bytes a sealed value adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + 16;

impl KeySealer {
    /// A sealer from the configured base64 key.
    pub fn from_base64(encoded: &str) -> Result<Self, SealError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| SealError::BadKey(e.to_string()))?;
        Self::from_bytes(&raw)
    }

    /// A sealer from 32 raw key bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, SealError> {
        if raw.len() != 32 {
            return Err(SealError::BadKey(format!("got {} bytes", raw.len())));
        }
        let key = UnboundKey::new(&AES_256_GCM, raw)
            .map_err(|_| SealError::BadKey("rejected by AES-256-GCM".into()))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        })
    }

    /// Seals `plaintext`, binding `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| SealError::Tampered)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens a value sealed with `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < OVERHEAD {
            return Err(SealError::Truncated(sealed.len()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Tampered)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| SealError::Tampered)?;
        Ok(plain.to_vec())
    }
}

/// Associated data binding a certificate key to its row.
pub fn cert_key_aad(domain: &str, version: i64) -> Vec<u8> {
    format!("certificate-key\0{domain}\0{version}").into_bytes()
}

/// Associated data binding ACME account credentials to their directory.
pub fn account_aad(directory_url: &str) -> Vec<u8> {
    format!("acme-account\0{directory_url}").into_bytes()
}

/// Associated data binding a finalize key to its order row.
pub fn order_key_aad(order_id: i64) -> Vec<u8> {
    format!("order-key\0{order_id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sealer() -> KeySealer {
        KeySealer::from_bytes(&[7u8; 32]).unwrap()
    }

    #[test]
    fn key_must_be_32_bytes_of_base64() {
        assert!(matches!(
            KeySealer::from_base64("not base64!"),
            Err(SealError::BadKey(_))
        ));
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let err = KeySealer::from_base64(&short).unwrap_err();
        assert!(err.to_string().contains("got 16 bytes"), "{err}");
        let ok = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        assert!(KeySealer::from_base64(&ok).is_ok());
    }

    #[test]
    fn truncated_values_are_refused_not_panicking() {
        assert_eq!(sealer().open(&[0u8; 5], b""), Err(SealError::Truncated(5)));
    }

    proptest! {
        #[test]
        fn sealed_values_open_only_with_the_same_key_and_aad(
            plain in proptest::collection::vec(any::<u8>(), 0..512),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            other in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let s = sealer();
            let sealed = s.seal(&plain, &aad).unwrap();
            prop_assert_eq!(sealed.len(), plain.len() + OVERHEAD);
            prop_assert_eq!(s.open(&sealed, &aad).unwrap(), plain.clone());
            if other != aad {
                prop_assert_eq!(s.open(&sealed, &other), Err(SealError::Tampered));
            }
            let wrong = KeySealer::from_bytes(&[8u8; 32]).unwrap();
            prop_assert_eq!(wrong.open(&sealed, &aad), Err(SealError::Tampered));
        }

        #[test]
        fn any_flipped_bit_is_detected(
            plain in proptest::collection::vec(any::<u8>(), 1..128),
            at in any::<usize>(),
            bit in 0u8..8,
        ) {
            let s = sealer();
            let mut sealed = s.seal(&plain, b"a").unwrap();
            let i = at % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert_eq!(s.open(&sealed, b"a"), Err(SealError::Tampered));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = sealer().open(&bytes, b"x");
        }
    }
}
