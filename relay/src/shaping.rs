//! Bandwidth shaping per account: one token bucket per account on this relay, filled at the
//! plan's `bandwidth_bytes_per_sec` and drained by every byte the account's endpoints move in
//! either direction (HTTP bodies, TCP and TLS connections, WebSockets).
//!
//! A transfer that empties the bucket is not cut: the stream that took the last bytes waits
//! until the debt is refilled before it reads or writes again, so the account's aggregate rate
//! converges on the limit while every connection keeps working. The bucket holds one second of
//! traffic (at least 64 KiB) so short bursts pass unshaped.
//!
//! The rate is live: a plan change issued through the feed ([`crate::feed`]) updates the bucket
//! that open connections are already draining, without a reconnect. Shaping is per relay: an
//! account served by two relays gets the rate on each.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

/// Smallest burst a bucket allows, so small plans still pass ordinary requests whole.
const MIN_BURST: f64 = 64.0 * 1024.0;

/// One account's bucket.
#[derive(Debug, Default)]
pub struct Bucket {
    /// Bytes per second; 0 is unlimited (the fast path: one atomic load per read).
    rate: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes that may pass now; negative is debt still to be refilled.
    tokens: f64,
    refilled: Option<Instant>,
}

impl Bucket {
    /// The current rate, `None` when unlimited.
    pub fn rate(&self) -> Option<u64> {
        Some(self.rate.load(Relaxed)).filter(|r| *r > 0)
    }

    fn set_rate(&self, rate: Option<u64>) {
        self.rate.store(rate.unwrap_or(0), Relaxed);
    }

    /// Takes `n` bytes; returns how long the caller should wait before moving more.
    pub fn take(&self, n: usize) -> Option<Duration> {
        let rate = self.rate.load(Relaxed);
        if rate == 0 || n == 0 {
            return None;
        }
        self.take_at(n, rate as f64, Instant::now())
    }

    fn take_at(&self, n: usize, rate: f64, now: Instant) -> Option<Duration> {
        let burst = rate.max(MIN_BURST);
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = s.refilled.map_or(burst / rate, |at| {
            now.saturating_duration_since(at).as_secs_f64()
        });
        s.tokens = (s.tokens + elapsed * rate).min(burst) - n as f64;
        s.refilled = Some(now);
        (s.tokens < 0.0).then(|| Duration::from_secs_f64(-s.tokens / rate))
    }
}

/// The buckets of every account with traffic on this relay.
#[derive(Debug, Default)]
pub struct Shapers {
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
}

impl Shapers {
    /// The bucket of `account` (created unlimited).
    pub fn bucket(&self, account: &str) -> Arc<Bucket> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(account.to_owned()).or_default().clone()
    }

    /// Sets `account`'s rate (`None`: unlimited); open connections follow at once.
    pub fn set_rate(&self, account: &str, rate: Option<u64>) {
        let bucket = self.bucket(account);
        if bucket.rate() != rate {
            tracing::info!(%account, rate = ?rate, "bandwidth limit changed");
        }
        bucket.set_rate(rate);
        // 0 is unlimited.
        metrics::gauge!("burrow_relay_account_bandwidth_bytes_per_second", "account" => account.to_owned())
            .set(rate.unwrap_or(0) as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let b = Bucket::default();
        assert_eq!(b.take(usize::MAX / 2), None);
    }

    #[test]
    fn a_burst_passes_then_debt_is_paid_at_the_rate() {
        let b = Bucket::default();
        let rate = 100_000.0;
        let t0 = Instant::now();
        // A full bucket (one second of traffic) passes without waiting.
        assert_eq!(b.take_at(100_000, rate, t0), None);
        // The next 50 000 bytes are debt: half a second at 100 000 B/s.
        let wait = b.take_at(50_000, rate, t0).expect("must wait");
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-6, "{wait:?}");
        // After that half second the debt is paid and a small read passes... barely.
        assert_eq!(b.take_at(0, rate, t0 + Duration::from_millis(500)), None);
        let later = t0 + Duration::from_millis(600);
        assert_eq!(b.take_at(10_000, rate, later), None);
    }

    #[test]
    fn shapers_share_one_bucket_per_account_and_change_it_live() {
        let s = Shapers::default();
        let a = s.bucket("a");
        assert_eq!(a.rate(), None);
        s.set_rate("a", Some(1000));
        assert_eq!(
            a.rate(),
            Some(1000),
            "the handle already held sees the new rate"
        );
        assert!(Arc::ptr_eq(&a, &s.bucket("a")));
        assert_eq!(s.bucket("b").rate(), None);
    }
}
