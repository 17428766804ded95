//! Rate limiting for the `rate-limit` action: the [`RateLimiter`] trait the evaluator calls,
//! an in-memory [`LocalLimiter`], and a [`RedisLimiter`] whose counters every relay shares.
//!
//! Both count in fixed windows: a key may be hit `capacity` times per window, and a refused
//! hit is told how long until the window ends. Fixed windows need one counter per key (one
//! `INCR` in Redis), at the price of allowing up to twice the capacity across a window edge.

use std::time::Duration;

mod local;
mod redis;

pub use local::LocalLimiter;
pub use redis::{PROBE_INTERVAL, REDIS_TIMEOUT, RedisLimiter};

/// The answer to one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether this hit is within the capacity.
    pub allowed: bool,
    /// Time until the current window ends (when a refused client may try again).
    pub retry_after: Duration,
    /// Hits left in the current window after this one.
    pub remaining: u64,
}

/// A counter of hits per key and window.
///
/// Implementations must be cheap to call once per request and must not fail: a limiter that
/// cannot reach its store decides locally rather than refusing or admitting everything.
#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one hit on `key` and says whether it is within `capacity` per `window`.
    async fn hit(&self, key: &str, capacity: u64, window: Duration) -> RateDecision;
}

/// The decision for the `count`th hit of a window with `left` until its end.
fn decide(count: u64, capacity: u64, left: Duration) -> RateDecision {
    RateDecision {
        allowed: count <= capacity,
        retry_after: left,
        remaining: capacity.saturating_sub(count),
    }
}
