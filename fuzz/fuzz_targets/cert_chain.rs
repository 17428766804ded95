//! Certificate chains downloaded from the CA (and read back from PostgreSQL): reading the
//! leaf never panics, as PEM text or as arbitrary DER inside a PEM block.
#![no_main]

use base64::Engine as _;
use burrow_activities::certinfo::leaf_info;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = leaf_info(text);
    }
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(data)
    );
    if let Ok(info) = leaf_info(&pem) {
        assert!(info.serial.chars().all(|c| c.is_ascii_hexdigit()));
    }
});
