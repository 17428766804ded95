//! TLS ClientHello peeking: arbitrary bytes give an answer without panicking, a parsed hello
//! carries a clean server name, `NeedMore` never asks past `MAX_PEEK`, and an input that parses
//! as a hello was `NeedMore` or that same hello (never `Invalid`) at every shorter length.
#![no_main]

use burrow_proto::client_hello::{MAX_PEEK, Peek, peek};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match peek(data) {
        Peek::NeedMore => assert!(data.len() < MAX_PEEK),
        Peek::Invalid(reason) => assert!(!reason.is_empty()),
        Peek::Hello(hello) => {
            if let Some(name) = &hello.server_name {
                assert!(!name.is_empty() && !name.ends_with('.'));
                assert!(
                    name.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'-'
                        || b == b'.'),
                    "{name:?}"
                );
            }
            assert!(hello.alpn.iter().all(|p| !p.is_empty()));
            // Bytes after the hello are ignored, so a prefix either still needs more or already
            // holds the whole hello; never Invalid, and never NeedMore once a shorter prefix
            // was complete. Checking every prefix would be quadratic; a few spread out suffice.
            let n = data.len();
            let seed = usize::from(data[n / 2]);
            let mut cuts = [0, 1, 5, n / 3, n / 2, (seed * 131) % n, n - 1];
            cuts.sort_unstable();
            let mut complete = false;
            for cut in cuts {
                match peek(&data[..cut]) {
                    Peek::NeedMore => assert!(!complete, "prefix of {cut}/{n} bytes"),
                    Peek::Hello(h) => {
                        assert_eq!(h, hello, "prefix of {cut}/{n} bytes");
                        complete = true;
                    }
                    Peek::Invalid(r) => panic!("prefix of {cut}/{n} bytes is Invalid: {r}"),
                }
            }
            assert_eq!(peek(&data[..0]), Peek::NeedMore);
            let mut longer = data.to_vec();
            longer.extend_from_slice(b"\x17\x03\x03\x00\x01x");
            assert_eq!(peek(&longer), Peek::Hello(hello));
        }
    }
});
