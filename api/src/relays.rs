//! Talking to relays: discovery through Redis presence (keys written by `burrow-relay`'s
//! presence module) and calls over `RelayControl`.

use burrow_proto::grpc_auth::Bearer;
use burrow_proto::relay::{
    KickSessionRequest, ListSessionsRequest, ListSessionsResponse, kick_session_request::Target,
    relay_control_client::RelayControlClient,
};
use redis::AsyncCommands;
use serde::Deserialize;
use std::{sync::Arc, time::Duration};
use tonic::service::interceptor::InterceptedService;

/// Errors reaching relays.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Redis is not configured or unreachable, so relays cannot be found.
    #[error("relay discovery unavailable: {0}")]
    Discovery(String),
    /// A relay did not answer.
    #[error("relay {relay_id} at {url}: {message}")]
    Call {
        /// Relay id.
        relay_id: String,
        /// Its control URL.
        url: String,
        /// Why.
        message: String,
    },
}

/// Result of asking every relay to close sessions.
#[derive(Debug, Default)]
pub struct KickOutcome {
    /// Sessions closed.
    pub kicked: u32,
    /// Relays (or discovery) that could not be asked.
    pub errors: Vec<RelayError>,
}

#[derive(Debug, Deserialize)]
struct Announcement {
    relay_id: String,
    control_url: String,
}

/// Finds relays and calls them.
pub struct Relays {
    redis: Arc<burrow_common::redis_link::RedisLink>,
    prefix: String,
    /// The internal key, sent as bearer on every `RelayControl` call.
    bearer: Option<Bearer>,
}

type Client = RelayControlClient<InterceptedService<tonic::transport::Channel, Bearer>>;

impl Relays {
    /// Relays discovered through `redis` under `prefix`, called with `internal_key`.
    pub fn new(
        redis: Arc<burrow_common::redis_link::RedisLink>,
        prefix: &str,
        internal_key: &str,
    ) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            bearer: Bearer::new(internal_key),
        }
    }

    async fn discover(&self) -> Result<Vec<Announcement>, RelayError> {
        let mut conn = self.redis.get().await.ok_or_else(|| {
            RelayError::Discovery(match self.redis.configured() {
                true => "redis is unreachable".into(),
                false => "redis is not configured".into(),
            })
        })?;
        let ids: Vec<String> = conn
            .smembers(format!("{}relays", self.prefix))
            .await
            .map_err(|e| RelayError::Discovery(e.to_string()))?;
        let mut out = Vec::new();
        for id in ids {
            let raw: Option<String> = conn
                .get(format!("{}relay:{id}", self.prefix))
                .await
                .map_err(|e| RelayError::Discovery(e.to_string()))?;
            // A relay whose announcement expired is gone.
            if let Some(a) = raw.and_then(|r| serde_json::from_str(&r).ok()) {
                out.push(a);
            }
        }
        Ok(out)
    }

    async fn client(&self, a: &Announcement) -> Result<Client, RelayError> {
        let bearer = self
            .bearer
            .clone()
            .ok_or_else(|| call_err(a, "the internal key is not a valid header value"))?;
        let channel = tonic::transport::Endpoint::from_shared(a.control_url.clone())
            .map_err(|e| call_err(a, e))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| call_err(a, e))?;
        Ok(RelayControlClient::with_interceptor(channel, bearer))
    }

    /// Sessions on every live relay; a relay that does not answer is reported, not fatal.
    pub async fn list_sessions(
        &self,
    ) -> Result<Vec<Result<ListSessionsResponse, RelayError>>, RelayError> {
        let mut out = Vec::new();
        for a in self.discover().await? {
            let listed = async {
                let mut client = self.client(&a).await?;
                let resp = client
                    .list_sessions(ListSessionsRequest::default())
                    .await
                    .map_err(|e| call_err(&a, e))?;
                Ok(resp.into_inner())
            }
            .await;
            out.push(listed);
        }
        Ok(out)
    }

    async fn kick(&self, target: Target, reason: &str) -> KickOutcome {
        let mut outcome = KickOutcome::default();
        let relays = match self.discover().await {
            Ok(r) => r,
            Err(e) => {
                outcome.errors.push(e);
                return outcome;
            }
        };
        // Every relay is asked, even after one fails.
        for a in relays {
            let kicked = async {
                let mut client = self.client(&a).await?;
                let resp = client
                    .kick_session(KickSessionRequest {
                        target: Some(target.clone()),
                        reason: reason.to_owned(),
                    })
                    .await
                    .map_err(|e| call_err(&a, e))?;
                Ok::<_, RelayError>(resp.into_inner().kicked)
            }
            .await;
            match kicked {
                Ok(n) => outcome.kicked += n,
                Err(e) => outcome.errors.push(e),
            }
        }
        outcome
    }

    /// Closes session `session_id` wherever it is.
    pub async fn kick_session(&self, session_id: &str) -> KickOutcome {
        self.kick(
            Target::SessionId(session_id.to_owned()),
            "closed by an operator",
        )
        .await
    }

    /// Closes every session using authtoken `authtoken_id` and drops relays' cached
    /// verification of it.
    pub async fn kick_authtoken(&self, authtoken_id: &str) -> KickOutcome {
        self.kick(
            Target::AuthtokenId(authtoken_id.to_owned()),
            "the authtoken was revoked",
        )
        .await
    }
}

fn call_err(a: &Announcement, e: impl std::fmt::Display) -> RelayError {
    RelayError::Call {
        relay_id: a.relay_id.clone(),
        url: a.control_url.clone(),
        message: e.to_string(),
    }
}
