//! Sealed keys read from PostgreSQL: opening arbitrary bytes never panics and never succeeds
//! without the key (AES-256-GCM authenticates every byte).
#![no_main]

use burrow_activities::seal::KeySealer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sealer = KeySealer::from_bytes(&[0x5a; 32]).expect("32-byte key");
    assert!(sealer.open(data, b"certificate-key\0fuzz\01").is_err());
    // A value it sealed opens, whatever the plaintext.
    let sealed = sealer.seal(data, b"aad").expect("seal");
    assert_eq!(sealer.open(&sealed, b"aad").expect("open"), data);
});
