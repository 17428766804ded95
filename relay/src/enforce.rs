//! Traffic policy at the edge: runs the [`Policies`] of an endpoint on each visitor connection
//! (`on_tcp_connect`), request (`on_http_request`) and response (`on_http_response`).
//!
//! Rate limits count in Redis, so every relay shares one budget per key; while Redis is down
//! the limiter falls back to local buckets (per relay) and returns to Redis when it answers.
//! JWKS documents are fetched once and cached. Answers a policy gives (401, 403, 429, a
//! redirect, a custom response) are sent by the relay; the agent never sees those requests.

use crate::{
    edge::{EdgeState, Policies, policy_key},
    limiter::SharedLimiter,
};
use burrow_common::proxy::{self, Body};
use burrow_common::redis_link::RedisLink;
use burrow_policy::{
    RequestContext, RequestFacts, RequestVerdict,
    jwks::JwksCache,
    limit::{LocalLimiter, RateLimiter},
};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use std::{net::IpAddr, sync::Arc, time::Duration};

/// How long a fetched JWKS is trusted.
const JWKS_TTL: Duration = Duration::from_secs(300);

/// Shared evaluation state: the rate limiter and the JWKS cache.
pub struct Enforcer {
    limiter: Arc<dyn RateLimiter>,
    jwks: JwksCache,
}

impl Enforcer {
    /// Counts rate limits in Redis through `redis` (keys under `prefix`), locally while it is
    /// unreachable, or locally for good without a Redis URL.
    pub async fn connect(redis: Arc<RedisLink>, prefix: &str) -> Self {
        let limiter: Arc<dyn RateLimiter> = if redis.configured() {
            Arc::new(SharedLimiter::connect(redis, prefix).await)
        } else {
            Arc::new(LocalLimiter::default())
        };
        Self {
            limiter,
            jwks: JwksCache::new(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap_or_default(),
                JWKS_TTL,
            ),
        }
    }

    /// Whether a connection from `peer` may reach the endpoint; the error says which rule
    /// refused it.
    pub fn connect_allowed(&self, policies: &Policies, peer: IpAddr) -> Result<(), String> {
        for p in policies.iter() {
            p.on_tcp_connect(peer).map_err(|d| d.to_string())?;
        }
        Ok(())
    }

    /// Whether `account`'s endpoint `name` (as the registry names it) refuses a raw connection
    /// (TCP port, TLS passthrough) from `peer`; counted and logged when it does.
    pub fn refuses_connection(
        &self,
        edge: &EdgeState,
        account: &str,
        name: &str,
        peer: IpAddr,
    ) -> bool {
        match self.connect_allowed(&edge.policies(account, name), peer) {
            Ok(()) => false,
            Err(why) => {
                metrics::counter!("burrow_relay_policy_answers_total", "phase" => "connect")
                    .increment(1);
                tracing::debug!(%peer, endpoint = %name, why, "visitor connection refused by policy");
                true
            }
        }
    }

    /// Runs the request phase. `Ok` carries the request to forward (its body buffered when a
    /// rule that verifies webhook signatures applies to it, judged from the head as the
    /// visitor sent it) and what the response phase needs (one entry per policy, captured
    /// before any policy changed the request); `Err` the answer to send instead.
    pub async fn request(
        &self,
        policies: &Policies,
        account: &str,
        endpoint: &str,
        peer: IpAddr,
        req: Request<hyper::body::Incoming>,
    ) -> Result<(Request<Body>, Vec<RequestFacts>), Response<Body>> {
        if let Err(why) = self.connect_allowed(policies, peer) {
            return Err(policy_answer(StatusCode::FORBIDDEN, why));
        }
        let (mut parts, body) = req.into_parts();
        let facts: Vec<RequestFacts> = policies.iter().map(|p| p.request_facts(&parts)).collect();
        let limit = policies
            .iter()
            .filter_map(|p| p.request_body_limit(&parts))
            .max();
        let (body, buffered) = match limit {
            Some(limit) => match http_body_util::Limited::new(body, limit).collect().await {
                Ok(collected) => {
                    let bytes = collected.to_bytes();
                    (proxy::full(bytes.clone()), Some(bytes))
                }
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(policy_answer(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "the endpoint verifies webhook signatures, which reads bodies of at \
                             most {limit} bytes"
                        ),
                    ));
                }
                Err(e) => {
                    return Err(policy_answer(
                        StatusCode::BAD_REQUEST,
                        format!("reading the request body failed: {e}"),
                    ));
                }
            },
            None => (proxy::incoming(body), None),
        };
        let scope = format!("{account}/{}", policy_key(endpoint));
        let ctx = RequestContext {
            peer,
            scope: &scope,
            limiter: self.limiter.as_ref(),
            jwks: &self.jwks,
            now: std::time::SystemTime::now(),
        };
        for p in policies.iter() {
            if let RequestVerdict::Respond(answer) = p
                .on_http_request(&mut parts, buffered.as_deref(), &ctx)
                .await
            {
                metrics::counter!("burrow_relay_policy_answers_total", "phase" => "request")
                    .increment(1);
                return Err(answer.map(proxy::full));
            }
        }
        Ok((Request::from_parts(parts, body), facts))
    }

    /// Runs the response phase on `parts`; `Some` is an answer that replaces the response.
    pub fn response(
        &self,
        policies: &Policies,
        facts: &[RequestFacts],
        parts: &mut http::response::Parts,
    ) -> Option<Response<Body>> {
        for (p, facts) in policies.iter().zip(facts) {
            if let Some(answer) = p.on_http_response(facts, parts) {
                metrics::counter!("burrow_relay_policy_answers_total", "phase" => "response")
                    .increment(1);
                return Some(answer.map(proxy::full));
            }
        }
        None
    }
}

fn policy_answer(status: StatusCode, why: String) -> Response<Body> {
    proxy::text_response(status, format!("Burrow: {why}\n"), "relay")
}
