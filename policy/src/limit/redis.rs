//! [`RedisLimiter`]: fixed-window counters in Redis, shared by every relay.
//!
//! One hit is one atomic pipeline: `INCR {prefix}rl:{key}:{window_ms}:{index}` and `PEXPIRE`
//! of that counter to the end of its window (plus a second of slack for clock differences
//! between relays), where `index` is the Unix time in ms divided by the window: every relay
//! counts into the same key, and old windows expire by themselves.
//!
//! Redis must not become the relay's single point of failure: each call is bounded by a
//! short timeout, and when it errors or times out the hit is decided by a [`LocalLimiter`]
//! instead (per-relay counts: less exact, still a limit). A warning is logged once per outage;
//! during an outage Redis is tried again at most once per [`PROBE_INTERVAL`], so a dead Redis
//! costs requests nothing, and the first answer ends the outage.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::{LocalLimiter, RateDecision, RateLimiter, decide};

/// Bound on one Redis round trip.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// How often Redis is retried while it is failing.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Rate limiter backed by Redis, falling back to memory when Redis fails.
pub struct RedisLimiter {
    conn: ConnectionManager,
    prefix: String,
    fallback: LocalLimiter,
    /// `Some(t)`: Redis is failing; do not try it again before `t`.
    outage: Mutex<Option<Instant>>,
    timeout: Duration,
    /// How long to decide locally after a failure before trying Redis again.
    probe_interval: Duration,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter counting under keys that start with `prefix` (e.g. `burrow:`).
    pub fn new(conn: ConnectionManager, prefix: String) -> Self {
        RedisLimiter {
            conn,
            prefix,
            fallback: LocalLimiter::default(),
            outage: Mutex::new(None),
            timeout: REDIS_TIMEOUT,
            probe_interval: PROBE_INTERVAL,
        }
    }

    /// Changes how often Redis is retried during an outage (normally [`PROBE_INTERVAL`]).
    pub fn with_probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// Whether hits are currently decided locally because Redis failed.
    pub fn is_degraded(&self) -> bool {
        self.outage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    async fn redis_hit(
        &self,
        key: &str,
        capacity: u64,
        window: Duration,
    ) -> Result<RateDecision, String> {
        let window_ms = (window.as_millis() as u64).max(1);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let index = now_ms / window_ms;
        let left_ms = (index + 1) * window_ms - now_ms;
        let counter = format!("{}rl:{key}:{window_ms}:{index}", self.prefix);
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(&counter, 1u64)
            .pexpire(&counter, (left_ms + 1000) as i64)
            .ignore();
        let call = pipe.query_async::<(u64,)>(&mut conn);
        let (count,) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))?
            .map_err(|e| e.to_string())?;
        Ok(decide(count, capacity, Duration::from_millis(left_ms)))
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisLimiter {
    async fn hit(&self, key: &str, capacity: u64, window: Duration) -> RateDecision {
        let retry_at = *self.outage.lock().unwrap_or_else(PoisonError::into_inner);
        if retry_at.is_some_and(|t| Instant::now() < t) {
            return self.fallback.hit_now(key, capacity, window);
        }
        match self.redis_hit(key, capacity, window).await {
            Ok(decision) => {
                if self
                    .outage
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    .is_some()
                {
                    tracing::info!(prefix = %self.prefix, "Redis rate limiting recovered");
                }
                decision
            }
            Err(error) => {
                let was = self
                    .outage
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .replace(Instant::now() + self.probe_interval);
                if was.is_none() {
                    tracing::warn!(%error, prefix = %self.prefix, "Redis rate limiting failed; limiting per relay until it answers");
                }
                self.fallback.hit_now(key, capacity, window)
            }
        }
    }
}
