//! Retry schedules from configuration files and environment (`cert_retry_schedule`): parsing
//! never panics and every accepted delay is within bounds.
#![no_main]

use burrow_workflows::certificate::parse_schedule;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(delays) = parse_schedule(text)
    {
        assert!(delays.len() <= 100);
        assert!(delays.iter().all(|ms| (1..=7 * 24 * 3_600_000).contains(ms)));
    }
});
