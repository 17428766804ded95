//! Traffic-policy documents as submitted to the api: arbitrary text must parse or fail with
//! an error that names a field, never panic; and whatever parses must survive the round trip
//! through its canonical JSON unchanged (the form the api stores and relays evaluate).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match burrow_policy::parse(text) {
        Ok(policy) => {
            let json = policy.to_json();
            let again = burrow_policy::parse(&json).expect("canonical JSON parses");
            assert_eq!(again, policy, "round trip changed the policy");
            assert_eq!(again.to_json(), json, "canonical JSON is a fixed point");
            let _ = policy.on_tcp_connect(std::net::IpAddr::from([10, 1, 2, 3]));
            // Which requests get their bodies buffered: decided from the head, never panics.
            let head = http::Request::post("/hooks/%2e%2e/x")
                .header("x-hook", "1")
                .body(())
                .unwrap()
                .into_parts()
                .0;
            if let Some(limit) = policy.request_body_limit(&head) {
                assert_eq!(limit, burrow_policy::WEBHOOK_BODY_LIMIT);
            }
        }
        Err(e) => assert!(!e.field.is_empty()),
    }
});
