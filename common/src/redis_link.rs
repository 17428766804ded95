//! A Redis connection that may come and go, shared by the api and the relays.
//!
//! Burrow keeps only rebuildable state in Redis (relay presence, endpoint leases, shared
//! rate-limit counters, the replay-all lock), so no process waits for it: [`RedisLink::get`]
//! hands out a connection when there is one and `None` otherwise (the caller degrades). A
//! process started while Redis is down keeps trying (at most once per [`RETRY_EVERY`], from
//! whoever asks) instead of giving up for its lifetime; once connected, redis'
//! `ConnectionManager` reconnects by itself after an outage ([`manager_config`]). Connection
//! attempts and commands time out quickly, so a dead Redis costs a request at most
//! [`COMMAND_TIMEOUT`].

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};
use tokio::time::Instant;

/// How often a process without a connection tries to make one.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Connecting, and each command, give up after this long.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// A lazily (re)connected Redis handle.
pub struct RedisLink {
    url: String,
    state: Mutex<State>,
    /// Held while one caller connects, so a dead Redis is not dialled once per request.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    conn: Option<ConnectionManager>,
    last_attempt: Option<Instant>,
}

impl RedisLink {
    /// A link to `url`; empty means no Redis at all (a single relay).
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            state: Mutex::default(),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether a Redis URL is configured.
    pub fn configured(&self) -> bool {
        !self.url.is_empty()
    }

    /// The connection, connecting first if there is none and the last attempt is old enough.
    /// `None` while Redis is unreachable (the caller degrades) or not configured.
    pub async fn get(&self) -> Option<ConnectionManager> {
        if !self.configured() {
            return None;
        }
        if let Some(conn) = self.lock().conn.clone() {
            return Some(conn);
        }
        // Someone else is connecting: do not wait for them on a request path.
        let _connecting = self.connecting.try_lock().ok()?;
        {
            let mut state = self.lock();
            if let Some(conn) = state.conn.clone() {
                return Some(conn);
            }
            if state
                .last_attempt
                .is_some_and(|t| t.elapsed() < RETRY_EVERY)
            {
                return None;
            }
            state.last_attempt = Some(Instant::now());
        }
        match self.connect().await {
            Ok(conn) => {
                tracing::info!(url = %crate::net::redacted(&self.url), "redis connected");
                self.lock().conn = Some(conn.clone());
                Some(conn)
            }
            Err(e) => {
                tracing::warn!(error = %e, url = %crate::net::redacted(&self.url), "redis unavailable; retrying in the background");
                None
            }
        }
    }

    async fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        let client = redis::Client::open(self.url.as_str())?;
        tokio::time::timeout(
            COMMAND_TIMEOUT * 3,
            ConnectionManager::new_with_config(client, manager_config()),
        )
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::IoError, "connect timed out")))?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How every `ConnectionManager` (re)connects: few, short retries, timed-out connects and
/// commands. redis' defaults retry 6 times with a backoff whose delays reach a minute and more
/// (factor 100 on a 1 s base), and every command awaits that reconnect: after an outage a
/// process would wait minutes for a Redis that is back. With these, a command fails fast while
/// Redis is down (the caller degrades) and the next one reconnects.
pub fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_max_delay(500)
        .set_connection_timeout(COMMAND_TIMEOUT)
        .set_response_timeout(COMMAND_TIMEOUT)
}

/// Runs one Redis operation with [`COMMAND_TIMEOUT`]; a timeout becomes an I/O error.
pub async fn timed<T>(
    op: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(COMMAND_TIMEOUT, op)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::IoError,
                "redis command timed out",
            )))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn no_url_means_no_connection_and_no_attempt() {
        let link = RedisLink::new("");
        assert!(!link.configured());
        assert!(link.get().await.is_none());
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_retried_only_after_the_pause() {
        // Port 1 on loopback refuses at once.
        let link = RedisLink::new("redis://127.0.0.1:1");
        assert!(link.get().await.is_none());
        let first = link.lock().last_attempt.expect("attempted");
        assert!(link.get().await.is_none());
        assert_eq!(link.lock().last_attempt, Some(first), "retried too soon");
    }
}
