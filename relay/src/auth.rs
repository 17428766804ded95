//! Authtoken verification through the api, cached briefly.
//!
//! The relay never sees token hashes or the database: it asks
//! `POST <api>/v1/internal/authtokens/verify` and trusts a positive answer for
//! `auth_cache_secs`. Rejections are not cached, so a token created a moment ago works at once.
//! A `KickSession` by authtoken id (sent by the api when a token is revoked) evicts the cache
//! entry and closes the sessions at once. Because that call can miss a relay (down, or not yet
//! announced), [`recheck_sessions`] also asks the api every cache period which tokens of live
//! sessions were revoked, and closes those: a revoked token never outlives the cache period.
//!
//! The answer also carries the account's plan and its [`Limits`], cached with the principal:
//! a plan change reaches the relay when the entry expires (within `auth_cache_secs`, the same
//! period as the revocation re-check), without the agent reconnecting, and the next bind is
//! checked against the new limits. Limits apply at bind only: sessions already online stay
//! up when a plan shrinks.

use burrow_common::{Secret, token};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Who a verified authtoken belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Id of the authtoken (not the secret).
    pub authtoken_id: String,
    /// Account the token belongs to.
    pub account_id: String,
    /// The account's plan (empty from an api that predates plans).
    #[serde(default)]
    pub plan: String,
    /// What the plan allows (all unlimited from an api that predates plans).
    #[serde(default)]
    pub limits: Limits,
}

/// What an account's plan allows; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Endpoints (HTTP, TCP, TLS) of the account online at once on this relay.
    pub max_online_endpoints: Option<u64>,
    /// TCP endpoints of the account online at once on this relay.
    pub max_tcp_endpoints: Option<u64>,
    /// Reserved names (not enforced by the relay).
    pub max_reserved_names: Option<u64>,
    /// Custom domains (not enforced by the relay).
    pub max_custom_domains: Option<u64>,
    /// Bytes per second the account may move through this relay (shaped, see
    /// [`crate::shaping`]).
    pub bandwidth_bytes_per_sec: Option<u64>,
}

/// Endpoints an account has online and a session asks for, as counted at bind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All endpoints.
    pub endpoints: usize,
    /// TCP endpoints among them.
    pub tcp: usize,
}

impl Principal {
    /// Checks that an account with `online` endpoints (not counting the names this session
    /// binds again) may bind `asked` more; the error names the limit, the plan and the counts.
    pub fn check_limits(&self, online: Usage, asked: Usage) -> Result<(), String> {
        let checks = [
            (
                self.limits.max_online_endpoints,
                online.endpoints,
                asked.endpoints,
                "online endpoint",
                "",
            ),
            (
                self.limits.max_tcp_endpoints,
                online.tcp,
                asked.tcp,
                "TCP endpoint",
                " online",
            ),
        ];
        for (limit, have, more, what, suffix) in checks {
            let Some(limit) = limit else { continue };
            if more > 0 && (have + more) as u64 > limit {
                let s = |n: u64| if n == 1 { "" } else { "s" };
                return Err(format!(
                    "plan {:?} allows {limit} {what}{}{suffix}; this account already has {have} \
                     and this agent asks for {more} more (stop another endpoint, or move the \
                     account to a larger plan)",
                    self.plan,
                    s(limit),
                ));
            }
        }
        Ok(())
    }
}

/// Why a token could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The api says the token is unknown or revoked.
    #[error("{0}")]
    Rejected(String),
    /// The api could not be asked.
    #[error("cannot verify the authtoken right now: {0}")]
    Unavailable(String),
}

/// Verifies authtokens against the api.
pub struct Verifier {
    http: reqwest::Client,
    url: String,
    status_url: String,
    key: Secret,
    ttl: Duration,
    /// token hash → (principal, verified at). Keyed by hash so no secret sits in memory longer
    /// than the handshake that carried it.
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
}

#[derive(Serialize)]
struct VerifyRequest<'a> {
    token: &'a str,
}

#[derive(Deserialize)]
struct ApiError {
    error: ApiErrorBody,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    message: String,
}

impl Verifier {
    /// A verifier asking the api at `api_url`.
    pub fn new(api_url: &str, key: Secret, ttl: Duration) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            url: format!(
                "{}/v1/internal/authtokens/verify",
                api_url.trim_end_matches('/')
            ),
            status_url: format!(
                "{}/v1/internal/authtokens/status",
                api_url.trim_end_matches('/')
            ),
            key,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Checks `token`, from cache when recently verified.
    pub async fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let hash = token::hash(token);
        if let Some(p) = self.cached(&hash) {
            return Ok(p);
        }
        let resp = self
            .http
            .post(&self.url)
            .bearer_auth(self.key.expose())
            .json(&VerifyRequest { token })
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            let principal: Principal = resp
                .json()
                .await
                .map_err(|e| AuthError::Unavailable(format!("bad answer from api: {e}")))?;
            self.lock()
                .insert(hash, (principal.clone(), Instant::now()));
            Ok(principal)
        } else if status == reqwest::StatusCode::UNAUTHORIZED
            || status == reqwest::StatusCode::FORBIDDEN
        {
            let message = resp
                .json::<ApiError>()
                .await
                .map(|e| e.error.message)
                .unwrap_or_else(|_| "authtoken rejected".into());
            Err(AuthError::Rejected(message))
        } else {
            Err(AuthError::Unavailable(format!("api answered {status}")))
        }
    }

    /// Which of `authtoken_ids` the api no longer accepts (revoked or unknown).
    pub async fn revoked(&self, authtoken_ids: &[String]) -> Result<Vec<String>, AuthError> {
        #[derive(Serialize)]
        struct StatusRequest<'a> {
            ids: &'a [String],
        }
        #[derive(Deserialize)]
        struct StatusResponse {
            revoked: Vec<String>,
        }
        let resp = self
            .http
            .post(&self.status_url)
            .bearer_auth(self.key.expose())
            .json(&StatusRequest { ids: authtoken_ids })
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(AuthError::Unavailable(format!(
                "api answered {}",
                resp.status()
            )));
        }
        resp.json::<StatusResponse>()
            .await
            .map(|r| r.revoked)
            .map_err(|e| AuthError::Unavailable(format!("bad answer from api: {e}")))
    }

    /// Forgets every cached verification of `authtoken_id`.
    pub fn evict(&self, authtoken_id: &str) {
        self.lock()
            .retain(|_, (p, _)| p.authtoken_id != authtoken_id);
    }

    fn cached(&self, hash: &str) -> Option<Principal> {
        let mut cache = self.lock();
        match cache.get(hash) {
            Some((p, at)) if at.elapsed() < self.ttl => Some(p.clone()),
            Some(_) => {
                cache.remove(hash);
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, Instant)>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every `auth_cache_secs`, closes sessions whose authtoken the api no longer accepts.
pub async fn recheck_sessions(
    relay: std::sync::Arc<crate::Relay>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let every = Duration::from_secs(relay.config.auth_cache_secs.max(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let mut ids: Vec<String> = relay
            .registry
            .sessions(None)
            .into_iter()
            .map(|s| s.authtoken_id)
            .collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            continue;
        }
        match relay.verifier.revoked(&ids).await {
            Ok(revoked) => {
                for id in revoked {
                    relay.verifier.evict(&id);
                    let n = relay.registry.close(
                        |s| s.authtoken_id == id,
                        burrow_proto::tunnel::CloseCode::Revoked,
                        "the authtoken was revoked",
                    );
                    tracing::info!(authtoken_id = %id, sessions = n, "closed sessions of a revoked authtoken");
                }
            }
            // Keep serving: an unreachable api must not take every tunnel down.
            Err(e) => tracing::warn!(error = %e, "re-checking session authtokens failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free() -> Principal {
        serde_json::from_str(
            r#"{"authtoken_id": "t", "account_id": "a", "plan": "free", "limits": {
                "max_online_endpoints": 4, "max_tcp_endpoints": 1, "max_reserved_names": 1,
                "max_custom_domains": 0, "bandwidth_bytes_per_sec": null}}"#,
        )
        .unwrap()
    }

    fn usage(endpoints: usize, tcp: usize) -> Usage {
        Usage { endpoints, tcp }
    }

    #[test]
    fn an_api_without_plans_means_no_limits() {
        let p: Principal = serde_json::from_str(r#"{"authtoken_id": "t", "account_id": "a"}"#)
            .expect("old answers still parse");
        assert_eq!(p.limits, Limits::default());
        assert_eq!(p.check_limits(usage(1000, 1000), usage(10, 10)), Ok(()));
    }

    #[test]
    fn binds_within_the_plan_pass_and_beyond_it_name_the_limit_and_plan() {
        let p = free();
        assert_eq!(p.check_limits(usage(0, 0), usage(1, 1)), Ok(()));
        assert_eq!(p.check_limits(usage(3, 0), usage(1, 0)), Ok(()));
        let tcp = p.check_limits(usage(1, 1), usage(1, 1)).unwrap_err();
        assert!(
            tcp.starts_with(
                "plan \"free\" allows 1 TCP endpoint online; this account already has 1 and \
                 this agent asks for 1 more"
            ),
            "{tcp}"
        );
        let all = p.check_limits(usage(4, 0), usage(1, 0)).unwrap_err();
        assert!(
            all.starts_with("plan \"free\" allows 4 online endpoints; this account already has 4"),
            "{all}"
        );
        // One agent asking for more than the plan allows at once.
        assert!(p.check_limits(usage(0, 0), usage(5, 0)).is_err());
        // Over the TCP limit (the plan shrank) but asking for no TCP endpoint: allowed.
        assert_eq!(p.check_limits(usage(2, 2), usage(1, 0)), Ok(()));
    }
}
