//! Relay presence and the shared route table in Redis.
//!
//! Keys (all under the configured prefix):
//! - `relays` (set): ids of relays that announced themselves;
//! - `relay:<id>` (string, expires after 30 s, refreshed every 10 s): JSON [`RelayAnnouncement`],
//!   how the api finds each relay's `RelayControl` address;
//! - `routes` (hash): endpoint name → id of the relay holding it.
//!
//! Redis holds only what can be rebuilt: when it is unreachable the relay keeps serving its own
//! sessions and logs the failure; the api then simply cannot list this relay's sessions.

use burrow_proto::tunnel::BoundEndpoint;
use redis::{AsyncCommands, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a relay publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayAnnouncement {
    /// Relay id.
    pub relay_id: String,
    /// `http://host:port` of its `RelayControl` gRPC server.
    pub control_url: String,
    /// `host:port` of its public HTTP ingress.
    pub http_ingress: String,
}

const ANNOUNCE_EVERY: Duration = Duration::from_secs(10);
const ANNOUNCE_TTL_SECS: u64 = 30;

/// Handle to the relay's presence in Redis (a no-op when Redis is not configured or down).
pub struct Presence {
    conn: Option<ConnectionManager>,
    prefix: String,
    announcement: RelayAnnouncement,
}

impl Presence {
    /// Connects to `url`; on failure logs and returns a presence that does nothing.
    pub async fn connect(url: &str, prefix: &str, announcement: RelayAnnouncement) -> Self {
        let conn = if url.is_empty() {
            None
        } else {
            let attempt = async {
                let client = redis::Client::open(url)?;
                tokio::time::timeout(Duration::from_secs(3), ConnectionManager::new(client))
                    .await
                    .map_err(|_| {
                        redis::RedisError::from((redis::ErrorKind::IoError, "connect timed out"))
                    })?
            };
            match attempt.await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, %url, "redis unavailable: relay presence and shared routes disabled");
                    None
                }
            }
        };
        Self {
            conn,
            prefix: prefix.to_owned(),
            announcement,
        }
    }

    /// Records that this relay now holds `endpoints`.
    pub async fn bound(&self, endpoints: &[BoundEndpoint]) {
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        let key = format!("{}routes", self.prefix);
        for ep in endpoints {
            let r: redis::RedisResult<()> =
                conn.hset(&key, &ep.name, &self.announcement.relay_id).await;
            if let Err(e) = r {
                tracing::warn!(error = %e, name = %ep.name, "redis: recording route failed");
            }
        }
    }

    /// Records that this relay no longer holds `endpoints`.
    pub async fn unbound(&self, endpoints: &[BoundEndpoint]) {
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        let key = format!("{}routes", self.prefix);
        for ep in endpoints {
            let r: redis::RedisResult<()> = conn.hdel(&key, &ep.name).await;
            if let Err(e) = r {
                tracing::warn!(error = %e, name = %ep.name, "redis: removing route failed");
            }
        }
    }

    /// Announces the relay every few seconds until `shutdown`, then withdraws it.
    pub async fn announce_until(&self, shutdown: CancellationToken) {
        let Some(mut conn) = self.conn.clone() else {
            return;
        };
        let id = &self.announcement.relay_id;
        let key = format!("{}relay:{id}", self.prefix);
        let set = format!("{}relays", self.prefix);
        let body = serde_json::to_string(&self.announcement).unwrap_or_default();
        loop {
            let r: redis::RedisResult<()> = async {
                let () = conn.set_ex(&key, &body, ANNOUNCE_TTL_SECS).await?;
                let _: i64 = conn.sadd(&set, id).await?;
                Ok(())
            }
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "redis: announcing relay failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            }
        }
        let _: redis::RedisResult<()> = conn.del(&key).await;
        let _: redis::RedisResult<i64> = conn.srem(&set, id).await;
    }
}
