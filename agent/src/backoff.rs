//! Reconnect delays: exponential growth with full jitter, capped.
//!
//! Full jitter (a uniform draw in `[0, min(cap, base·2^n)]`) spreads a fleet of agents that lost
//! the same relay at the same moment, so a restarted relay is not hit by all of them at once.

use rand::Rng;
use std::time::Duration;

/// Jittered exponential backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start around `base` and never exceed `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// Upper bound of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay; grows the ceiling for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let lower = ceiling / 2;
        // Half fixed, half jitter: never reconnect in a tight loop, still spread out.
        lower + rand::rng().random_range(Duration::ZERO..=ceiling - lower)
    }

    /// Starts over after a connection that stayed up.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delays_stay_within_bounds(base_ms in 1u64..5_000, cap_ms in 1u64..120_000, n in 0usize..64) {
            let base = Duration::from_millis(base_ms);
            let cap = Duration::from_millis(cap_ms);
            let mut b = Backoff::new(base, cap);
            let mut prev_ceiling = Duration::ZERO;
            for _ in 0..n {
                let ceiling = b.ceiling();
                prop_assert!(ceiling <= cap);
                prop_assert!(ceiling >= prev_ceiling, "ceiling never shrinks");
                prev_ceiling = ceiling;
                let d = b.next_delay();
                prop_assert!(d <= ceiling && d >= ceiling / 2);
            }
        }

        #[test]
        fn reset_returns_to_base(base_ms in 1u64..5_000, n in 1usize..30) {
            let base = Duration::from_millis(base_ms);
            let mut b = Backoff::new(base, Duration::from_secs(3600));
            for _ in 0..n { b.next_delay(); }
            b.reset();
            prop_assert_eq!(b.ceiling(), base);
        }
    }
}
