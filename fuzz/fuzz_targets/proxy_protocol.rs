//! PROXY protocol v2 headers: arbitrary bytes decode or fail cleanly, and a decoded header never
//! claims more bytes than it was given.
#![no_main]

use burrow_proto::proxy_protocol::decode_v2;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(h)) = decode_v2(data) {
        assert!(h.len <= data.len());
    }
});
