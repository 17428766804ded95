//! Agent ↔ relay handshake frames: arbitrary bytes must decode or fail cleanly, and a decoded
//! frame must re-encode to an equal message.
#![no_main]

use burrow_proto::tunnel::{Hello, ServerMessage, decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((hello, used))) = decode_frame::<Hello>(data) {
        assert!(used <= data.len());
        let again = encode_frame(&hello).expect("a decoded frame re-encodes");
        let (back, _) = decode_frame::<Hello>(&again).unwrap().unwrap();
        assert_eq!(back, hello);
    }
    let _ = decode_frame::<ServerMessage>(data);
});
