//! The api's Redis connection, which may come and go.
//!
//! Redis only serves relay discovery and the replay-all lock, so the api never waits for it:
//! [`RedisConn::get`] hands out a connection when there is one and `None` otherwise (the
//! caller answers 503 or proceeds without the lock). An api started while Redis is down keeps
//! trying (at most once per [`RETRY_EVERY`], from whoever asks) instead of running without
//! discovery until restarted; once connected, redis' `ConnectionManager` reconnects after an
//! outage with one short retry and timed-out commands (its default schedule backs off to a
//! minute and more, and every command waits for it).

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};
use tokio::time::Instant;

/// How often an api without a connection tries to make one.
pub const RETRY_EVERY: Duration = Duration::from_secs(2);
/// Connecting, and each command, give up after this long.
const TIMEOUT: Duration = Duration::from_secs(1);

/// A lazily (re)connected Redis handle.
pub struct RedisConn {
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

impl RedisConn {
    /// A handle for `url` (empty: no Redis), connecting once now if it can.
    pub async fn connect(url: &str) -> Self {
        let conn = Self {
            url: url.to_owned(),
            state: Mutex::default(),
            connecting: tokio::sync::Mutex::new(()),
        };
        if conn.get().await.is_none() && conn.configured() {
            tracing::warn!(
                "redis unavailable: relay discovery and the replay-all lock are off until it answers"
            );
        }
        conn
    }

    /// Whether a Redis URL is configured.
    pub fn configured(&self) -> bool {
        !self.url.is_empty()
    }

    /// The connection; connects first when there is none and the last attempt is old enough.
    pub async fn get(&self) -> Option<ConnectionManager> {
        if !self.configured() {
            return None;
        }
        if let Some(conn) = self.lock().conn.clone() {
            return Some(conn);
        }
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
        let attempt = async {
            let client = redis::Client::open(self.url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(1)
                .set_max_delay(500)
                .set_connection_timeout(TIMEOUT)
                .set_response_timeout(TIMEOUT);
            tokio::time::timeout(
                TIMEOUT * 3,
                ConnectionManager::new_with_config(client, config),
            )
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::IoError, "connect timed out"))
            })?
        };
        match attempt.await {
            Ok(conn) => {
                tracing::info!("redis connected");
                self.lock().conn = Some(conn.clone());
                Some(conn)
            }
            Err(e) => {
                tracing::debug!(error = %e, "redis still unavailable");
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_url_there_is_nothing_to_connect() {
        let conn = RedisConn::connect("").await;
        assert!(!conn.configured());
        assert!(conn.get().await.is_none());
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_retried_only_after_the_pause() {
        let conn = RedisConn::connect("redis://127.0.0.1:1").await;
        let first = conn.lock().last_attempt.expect("attempted at start");
        assert!(conn.get().await.is_none());
        assert_eq!(conn.lock().last_attempt, Some(first), "retried too soon");
    }
}
