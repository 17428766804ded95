//! Integration tests of burrow-policy against real services: a JWKS server on 127.0.0.1:0
//! and the Redis on 127.0.0.1:6379 (or `BURROW_TEST_REDIS_URL`).

mod jwks;
mod redis;

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns true, failing after `deadline`.
pub async fn eventually<F: Future<Output = bool>>(
    deadline: Duration,
    mut check: impl FnMut() -> F,
) {
    let end = tokio::time::Instant::now() + deadline;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < end,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
