//! [`LocalLimiter`]: fixed-window counters in this process's memory.
//!
//! Counters live in 16 mutex-guarded shards (picked by the key's hash) so concurrent requests
//! rarely wait on each other. Memory is bounded: every 1024 hits, or when a shard reaches its
//! share of `max_keys`, the shard drops counters whose window has ended; if it is still full,
//! it drops arbitrary counters (a dropped counter restarts at zero, which only ever admits a
//! request that might otherwise have been refused — never the reverse).
//!
//! Windows are aligned to the limiter's creation and read from `tokio::time::Instant`, so
//! tests can pause and advance time.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{RateDecision, RateLimiter, decide};

const SHARDS: usize = 16;
const SWEEP_EVERY: u32 = 1024;

/// In-memory fixed-window rate limiter.
#[derive(Debug)]
pub struct LocalLimiter {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    start: Instant,
    max_per_shard: usize,
}

#[derive(Debug, Default)]
struct Shard {
    counters: HashMap<Box<str>, Counter>,
    hits: u32,
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    window_ms: u64,
    index: u64,
    count: u64,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl LocalLimiter {
    /// A limiter that keeps about `max_keys` counters at most.
    pub fn new(max_keys: usize) -> Self {
        LocalLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            start: Instant::now(),
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// Counters currently held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .counters
                    .len()
            })
            .sum()
    }

    /// Whether no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Synchronous form of [`RateLimiter::hit`].
    pub fn hit_now(&self, key: &str, capacity: u64, window: Duration) -> RateDecision {
        let window_ms = (window.as_millis() as u64).max(1);
        let now_ms = self.start.elapsed().as_millis() as u64;
        let index = now_ms / window_ms;
        let left = Duration::from_millis((index + 1) * window_ms - now_ms);
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        shard.hits = shard.hits.wrapping_add(1);
        if shard.hits.is_multiple_of(SWEEP_EVERY) || shard.counters.len() >= self.max_per_shard {
            shard.sweep(now_ms, self.max_per_shard);
        }
        if let Some(c) = shard.counters.get_mut(key) {
            if c.window_ms != window_ms || c.index != index {
                *c = Counter {
                    window_ms,
                    index,
                    count: 0,
                };
            }
            c.count = c.count.saturating_add(1);
            return decide(c.count, capacity, left);
        }
        shard.counters.insert(
            key.into(),
            Counter {
                window_ms,
                index,
                count: 1,
            },
        );
        decide(1, capacity, left)
    }
}

impl Shard {
    fn sweep(&mut self, now_ms: u64, max: usize) {
        self.counters.retain(|_, c| c.index == now_ms / c.window_ms);
        if self.counters.len() >= max {
            let mut keep = max / 2;
            self.counters.retain(|_, _| {
                keep = keep.saturating_sub(1);
                keep > 0
            });
        }
    }
}

#[async_trait::async_trait]
impl RateLimiter for LocalLimiter {
    async fn hit(&self, key: &str, capacity: u64, window: Duration) -> RateDecision {
        self.hit_now(key, capacity, window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_capacity_per_window_then_resets() {
        let l = LocalLimiter::default();
        let w = Duration::from_secs(60);
        for i in 0..3 {
            let d = l.hit("k", 3, w).await;
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i);
        }
        let d = l.hit("k", 3, w).await;
        assert!(!d.allowed);
        assert_eq!(d.retry_after, w);
        assert!(l.hit("other", 3, w).await.allowed, "keys are independent");
        tokio::time::advance(Duration::from_secs(45)).await;
        assert_eq!(l.hit("k", 3, w).await.retry_after, Duration::from_secs(15));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(l.hit("k", 3, w).await.allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded() {
        let l = LocalLimiter::new(160);
        for i in 0..10_000 {
            l.hit(&format!("k{i}"), 1, Duration::from_secs(1)).await;
        }
        assert!(l.len() <= 160 + SHARDS, "{} counters", l.len());
        tokio::time::advance(Duration::from_secs(2)).await;
        for s in &l.shards {
            s.lock()
                .unwrap()
                .sweep(l.start.elapsed().as_millis() as u64, l.max_per_shard);
        }
        assert!(l.is_empty(), "expired counters are swept");
    }
}
