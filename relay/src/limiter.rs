//! The relay's rate limiter: counts in Redis, shared by every relay, through the relay's one
//! [`RedisLink`]; counts in memory while that link has never connected (a relay started during
//! an outage), then hands over to a [`RedisLimiter`] for good, which has its own fallback for
//! later outages.

use burrow_common::redis_link::RedisLink;
use burrow_policy::limit::{LocalLimiter, RateDecision, RateLimiter, RedisLimiter};
use std::{sync::Arc, time::Duration};

/// See the module docs.
pub struct SharedLimiter {
    link: Arc<RedisLink>,
    prefix: String,
    local: LocalLimiter,
    redis: std::sync::OnceLock<RedisLimiter>,
}

impl SharedLimiter {
    /// Counts through `link` (keys under `prefix`) once it connects, locally until then; tries
    /// to connect once now, so a relay that starts with Redis up shares counts from the first
    /// request.
    pub async fn connect(link: Arc<RedisLink>, prefix: &str) -> Self {
        let limiter = Self {
            link,
            prefix: prefix.to_owned(),
            local: LocalLimiter::default(),
            redis: std::sync::OnceLock::new(),
        };
        limiter.redis().await;
        limiter
    }

    /// The Redis limiter, made the first time the link has a connection.
    async fn redis(&self) -> Option<&RedisLimiter> {
        if self.redis.get().is_none()
            && let Some(conn) = self.link.get().await
        {
            let _ = self.redis.set(RedisLimiter::new(conn, self.prefix.clone()));
        }
        self.redis.get()
    }
}

// Written out instead of `#[async_trait]` (the trait's macro form), which this crate does not
// otherwise need.
impl RateLimiter for SharedLimiter {
    fn hit<'a, 'k, 'f>(
        &'a self,
        key: &'k str,
        capacity: u64,
        window: Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = RateDecision> + Send + 'f>>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            match self.redis().await {
                Some(redis) => redis.hit(key, capacity, window).await,
                None => self.local.hit(key, capacity, window).await,
            }
        })
    }
}
