//! Sealing secrets at rest: certificate private keys and ACME account credentials are stored
//! in PostgreSQL encrypted with AES-256-GCM under a key from configuration
//! (`cert_encryption_key`, 32 bytes, base64).
//!
//! Sealed layout: a 12-byte random nonce, then the ciphertext with its 16-byte tag. The caller's
//! associated data (for a certificate key: `domain` and `version`) is authenticated but not
//! stored, so a sealed key copied into another row does not open there.
//!
//! Rotation: a sealer may also hold previous keys (`cert_encryption_previous_keys`). It seals
//! with the current key only and opens with any (the GCM tag tells which key fits), saying
//! whether a value was still under a previous key so [`crate::reseal`] can re-seal it.

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
    /// An entry of the previous keys is not 32 bytes of base64.
    #[error("`cert_encryption_previous_keys` entry {0} must be 32 bytes encoded as base64: {1}")]
    BadPreviousKey(usize, String),
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

/// Seals values under one AES-256-GCM key and opens them under it or a previous one.
pub struct KeySealer {
    key: LessSafeKey,
    previous: Vec<LessSafeKey>,
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
        Ok(Self {
            key: key_from_base64(encoded)?,
            previous: Vec::new(),
            rng: SystemRandom::new(),
        })
    }

    /// A sealer from 32 raw key bytes.
    pub fn from_bytes(raw: &[u8]) -> Result<Self, SealError> {
        Ok(Self {
            key: key_from_bytes(raw)?,
            previous: Vec::new(),
            rng: SystemRandom::new(),
        })
    }

    /// Also opens values sealed under `previous`: base64 keys separated by commas (the
    /// `cert_encryption_previous_keys` setting; empty adds none). The error names the entry.
    pub fn with_previous_base64(mut self, previous: &str) -> Result<Self, SealError> {
        for (i, entry) in previous.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let key = key_from_base64(entry).map_err(|e| match e {
                SealError::BadKey(why) => SealError::BadPreviousKey(i + 1, why),
                other => other,
            })?;
            self.previous.push(key);
        }
        Ok(self)
    }

    /// Whether previous keys are configured (values may still be sealed under them).
    pub fn has_previous(&self) -> bool {
        !self.previous.is_empty()
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

    /// Opens a value sealed with `aad` (under the current key or a previous one).
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        self.open_noting_key(sealed, aad).map(|(plain, _)| plain)
    }

    /// [`KeySealer::open`], also saying which key opened it.
    pub fn open_noting_key(
        &self,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<(Vec<u8>, SealedUnder), SealError> {
        if sealed.len() < OVERHEAD {
            return Err(SealError::Truncated(sealed.len()));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let keys = std::iter::once((&self.key, SealedUnder::Current))
            .chain(self.previous.iter().map(|k| (k, SealedUnder::Previous)));
        for (key, under) in keys {
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Tampered)?;
            let mut body = body.to_vec();
            if let Ok(plain) = key.open_in_place(nonce, Aad::from(aad), &mut body) {
                return Ok((plain.to_vec(), under));
            }
        }
        Err(SealError::Tampered)
    }
}

/// Which key a sealed value opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedUnder {
    /// `cert_encryption_key`.
    Current,
    /// One of `cert_encryption_previous_keys`: re-seal it.
    Previous,
}

fn key_from_base64(encoded: &str) -> Result<LessSafeKey, SealError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| SealError::BadKey(e.to_string()))?;
    key_from_bytes(&raw)
}

fn key_from_bytes(raw: &[u8]) -> Result<LessSafeKey, SealError> {
    if raw.len() != 32 {
        return Err(SealError::BadKey(format!("got {} bytes", raw.len())));
    }
    let key = UnboundKey::new(&AES_256_GCM, raw)
        .map_err(|_| SealError::BadKey("rejected by AES-256-GCM".into()))?;
    Ok(LessSafeKey::new(key))
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
    fn a_bad_previous_key_is_named_by_its_position() {
        let ok = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let err = sealer()
            .with_previous_base64(&format!("{ok},short"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`cert_encryption_previous_keys` entry 2"),
            "{err}"
        );
        assert!(!sealer().with_previous_base64(" , ").unwrap().has_previous());
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
        fn rotated_sealers_open_old_values_and_seal_under_the_new_key(
            plain in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let old = KeySealer::from_bytes(&[1u8; 32]).unwrap();
            let b64 = |b: u8| base64::engine::general_purpose::STANDARD.encode([b; 32]);
            let rotated = KeySealer::from_base64(&b64(2))
                .unwrap()
                .with_previous_base64(&format!("{}, {}", b64(9), b64(1)))
                .unwrap();
            prop_assert!(rotated.has_previous());
            let sealed_old = old.seal(&plain, b"a").unwrap();
            prop_assert_eq!(
                rotated.open_noting_key(&sealed_old, b"a").unwrap(),
                (plain.clone(), SealedUnder::Previous)
            );
            let sealed_new = rotated.seal(&plain, b"a").unwrap();
            prop_assert_eq!(
                rotated.open_noting_key(&sealed_new, b"a").unwrap(),
                (plain.clone(), SealedUnder::Current)
            );
            // Sealed under the new key only: the old key alone does not open it.
            prop_assert_eq!(old.open(&sealed_new, b"a"), Err(SealError::Tampered));
            prop_assert_eq!(rotated.open(&sealed_old, b"b"), Err(SealError::Tampered));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = sealer().open(&bytes, b"x");
        }
    }
}
