//! Certificate callback bodies from the network (`POST /v1/cert-callbacks`): parsing never
//! panics, and whatever parses has the fields the ingest relies on.
#![no_main]

use burrow_api::certificates::callbacks::Callback;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Callback::parse(data, "burrow.localhost") {
        assert!(!c.id.is_empty() && c.id.len() <= 255);
        assert!(!c.class.is_empty() && !c.action.is_empty());
        assert!(!c.domain.is_empty());
        assert!(c.payload.is_object());
    }
});
