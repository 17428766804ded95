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
//! during an outage Redis is tried again at most once per [`PROBE_INTERVAL`] — by one request,
//! which claims the probe by moving the retry deadline forward before it tries, while every
//! other request decides locally at once — so a dead Redis costs requests nothing but that
//! one probe, and the first answer ends the outage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::{LocalLimiter, RateDecision, RateLimiter, decide};

/// Bound on one Redis round trip.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// How often Redis is retried while it is failing.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// `retry_at` when Redis is not failing.
const HEALTHY: u64 = 0;

/// Rate limiter backed by Redis, falling back to memory when Redis fails.
pub struct RedisLimiter {
    conn: ConnectionManager,
    prefix: String,
    fallback: LocalLimiter,
    /// [`HEALTHY`], or Redis is failing: the time (nanoseconds after `epoch`, at least 1)
    /// before which it is not tried again.
    retry_at: AtomicU64,
    /// The origin of `retry_at`.
    epoch: Instant,
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
            retry_at: AtomicU64::new(HEALTHY),
            epoch: Instant::now(),
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
        self.retry_at.load(Ordering::Acquire) != HEALTHY
    }

    /// Now, as nanoseconds after `epoch`.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The `retry_at` value one probe interval after `now` (never [`HEALTHY`]).
    fn next_probe(&self, now: u64) -> u64 {
        let interval = u64::try_from(self.probe_interval.as_nanos()).unwrap_or(u64::MAX);
        now.saturating_add(interval).max(1)
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
        let retry_at = self.retry_at.load(Ordering::Acquire);
        if retry_at != HEALTHY {
            let now = self.now();
            // Not yet time to probe, or another request just claimed this probe: moving the
            // deadline forward first means one request per interval tries Redis (and waits
            // up to the timeout), not every request arriving before the first probe fails.
            if now < retry_at
                || self
                    .retry_at
                    .compare_exchange(
                        retry_at,
                        self.next_probe(now),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_err()
            {
                return self.fallback.hit_now(key, capacity, window);
            }
        }
        match self.redis_hit(key, capacity, window).await {
            Ok(decision) => {
                if self.retry_at.swap(HEALTHY, Ordering::AcqRel) != HEALTHY {
                    tracing::info!(prefix = %self.prefix, "Redis rate limiting recovered");
                }
                decision
            }
            Err(error) => {
                let was = self
                    .retry_at
                    .swap(self.next_probe(self.now()), Ordering::AcqRel);
                if was == HEALTHY {
                    tracing::warn!(%error, prefix = %self.prefix, "Redis rate limiting failed; limiting per relay until it answers");
                }
                self.fallback.hit_now(key, capacity, window)
            }
        }
    }
}
