//! Evaluation: what the relay calls per connection, request and response.
//!
//! Rules run in order; a rule applies when its matcher holds; its actions run in order; the
//! first action that answers ends evaluation. Everything costly was compiled at parse time, so
//! a request costs a few comparisons plus whatever the actions themselves need (a rate-limit
//! hit, a JWKS lookup, an HMAC).

use std::net::IpAddr;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{AUTHORIZATION, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, request, response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Policy;
use crate::jwks::{JwksCache, JwtError, token_from};
use crate::limit::RateLimiter;
use crate::matching::normalize_path;
use crate::model::{Action, BasicAuth, RateKey, RateLimit, Rule, window_text};
use crate::respond::answer;

/// The 503 body when the signing keys of a `jwt-validation` cannot be fetched.
const KEYS_UNAVAILABLE: &str =
    "the signing keys of this endpoint's JWT issuer cannot be fetched right now";

/// What an on_http_request evaluation needs besides the request.
pub struct RequestContext<'a> {
    /// The visitor's address (IPv4-mapped IPv6 addresses are treated as IPv4).
    pub peer: IpAddr,
    /// `<account>/<endpoint>`: prefixes rate-limit keys so endpoints never share counters.
    pub scope: &'a str,
    /// Where rate-limit hits are counted.
    pub limiter: &'a dyn RateLimiter,
    /// Signing keys for `jwt-validation`.
    pub jwks: &'a JwksCache,
    /// The clock for token expiry and webhook timestamps.
    pub now: SystemTime,
}

/// The outcome of [`Policy::on_http_request`].
#[derive(Debug)]
pub enum RequestVerdict {
    /// Forward the (possibly modified) request.
    Continue,
    /// Answer the visitor with this response instead.
    Respond(Response<Bytes>),
}

/// An `on_tcp_connect` refusal: close the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (policy rule \"{rule}\")")]
pub struct Denied {
    /// The rule's name, or `on_tcp_connect[i]`.
    pub rule: String,
    /// Why.
    pub reason: String,
}

/// What `on_http_response` matchers need from the request, captured by
/// [`Policy::request_facts`] before `on_http_request` changes the request.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    method: Method,
    path: String,
    /// Only the headers some response matcher looks at.
    headers: HeaderMap,
}

impl Policy {
    /// Runs `on_tcp_connect` for a new connection from `peer`.
    pub fn on_tcp_connect(&self, peer: IpAddr) -> Result<(), Denied> {
        let peer = peer.to_canonical();
        for rule in &self.doc.on_tcp_connect {
            for action in &rule.actions {
                if let Action::RestrictIps(r) = action
                    && !r.allows(peer)
                {
                    return Err(Denied {
                        rule: label(rule),
                        reason: format!("IP address {peer} is not allowed"),
                    });
                }
            }
        }
        Ok(())
    }

    /// Runs `on_http_request`. Headers may be added or removed in place; `body` is the buffered
    /// request body when [`Policy::request_body_limit`] asked for one.
    pub async fn on_http_request(
        &self,
        req: &mut request::Parts,
        body: Option<&[u8]>,
        ctx: &RequestContext<'_>,
    ) -> RequestVerdict {
        let peer = ctx.peer.to_canonical();
        // A `Uri` clone shares its bytes; it lets `path` borrow while actions edit `req`.
        let uri = req.uri.clone();
        let path = normalize_path(uri.path());
        for rule in &self.doc.on_http_request {
            if rule
                .matcher
                .as_ref()
                .is_some_and(|m| !m.matches(&req.method, &path, &req.headers, None))
            {
                continue;
            }
            for action in &rule.actions {
                if let Some(res) = self
                    .request_action(rule, action, req, body, ctx, peer)
                    .await
                {
                    return RequestVerdict::Respond(res);
                }
            }
        }
        RequestVerdict::Continue
    }

    /// How much of the body of the request with head `req` the relay must buffer before
    /// [`Policy::on_http_request`]: `Some(1 MiB)` (answer 413 beyond it) when a rule with a
    /// `verify-webhook` action applies to this request, `None` otherwise (the body streams).
    ///
    /// Matchers are evaluated as [`Policy::on_http_request`] will: in order, each seeing the
    /// headers earlier matching rules set or removed. An earlier action that answers would
    /// end evaluation before the webhook rule; that is not foreseen, so the answer may be
    /// `Some` for a request that never reaches the verification (buffered for nothing).
    pub fn request_body_limit(&self, req: &request::Parts) -> Option<usize> {
        let rules = &self.doc.on_http_request[..self.webhook_rules];
        if rules.is_empty() {
            return None;
        }
        let path = normalize_path(req.uri.path());
        // Cloned only when a rule before the webhook rule edits headers.
        let mut headers = std::borrow::Cow::Borrowed(&req.headers);
        for rule in rules {
            if rule
                .matcher
                .as_ref()
                .is_some_and(|m| !m.matches(&req.method, &path, &headers, None))
            {
                continue;
            }
            for action in &rule.actions {
                match action {
                    Action::VerifyWebhook(_) => return Some(crate::WEBHOOK_BODY_LIMIT),
                    Action::AddHeaders(a) => {
                        let headers = headers.to_mut();
                        for (k, v) in &a.headers {
                            headers.insert(k, v.clone());
                        }
                    }
                    Action::RemoveHeaders(r) => {
                        let headers = headers.to_mut();
                        for k in &r.headers {
                            headers.remove(k);
                        }
                    }
                    _ => {}
                }
            }
        }
        None
    }

    async fn request_action(
        &self,
        rule: &Rule,
        action: &Action,
        req: &mut request::Parts,
        body: Option<&[u8]>,
        ctx: &RequestContext<'_>,
        peer: IpAddr,
    ) -> Option<Response<Bytes>> {
        let why = |status: StatusCode, text: String| answer(status, &rule.label, text);
        match action {
            Action::RestrictIps(r) => (!r.allows(peer)).then(|| {
                why(
                    StatusCode::FORBIDDEN,
                    format!("IP address {peer} is not allowed"),
                )
            }),
            Action::BasicAuth(auth) => (!basic_ok(auth, &req.headers)).then(|| {
                let realm = auth.realm.as_deref().unwrap_or("burrow");
                let text = if req.headers.contains_key(AUTHORIZATION) {
                    "invalid credentials"
                } else {
                    "authentication required"
                };
                let mut res = why(StatusCode::UNAUTHORIZED, text.into());
                if let Ok(v) =
                    HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
                {
                    res.headers_mut().insert(WWW_AUTHENTICATE, v);
                }
                res
            }),
            Action::JwtValidation(cfg) => {
                let name = cfg.header.as_ref().unwrap_or(&AUTHORIZATION);
                let token = req.headers.get(name).and_then(|v| v.to_str().ok());
                let token = token.and_then(|t| token_from(t, *name == AUTHORIZATION));
                let result = match token {
                    None => Err(JwtError::Missing),
                    Some(t) => ctx.jwks.validate(cfg, t, ctx.now).await,
                };
                let err = result.err()?;
                if let JwtError::KeysUnavailable(detail) = &err {
                    // The detail (statuses, connect errors, addresses) is for the operator's
                    // log only: visitors learn nothing about what the relay can reach. The
                    // failed fetch itself was logged as a warning (once per attempt, so a
                    // flood of requests during an outage does not flood the log).
                    tracing::debug!(
                        rule = %label(rule),
                        jwks_url = %cfg.jwks_url,
                        error = %detail,
                        "jwt-validation: signing keys unavailable; answered 503"
                    );
                    let mut res = why(StatusCode::SERVICE_UNAVAILABLE, KEYS_UNAVAILABLE.into());
                    res.headers_mut()
                        .insert(RETRY_AFTER, HeaderValue::from_static("10"));
                    return Some(res);
                }
                let mut res = why(StatusCode::UNAUTHORIZED, format!("invalid token: {err}"));
                let value = format!("Bearer error=\"invalid_token\", error_description=\"{err}\"")
                    .replace('\\', "");
                if let Ok(v) = HeaderValue::from_str(&value) {
                    res.headers_mut().insert(WWW_AUTHENTICATE, v);
                }
                Some(res)
            }
            Action::RateLimit(limit) => self.rate_limit(rule, limit, &req.headers, ctx, peer).await,
            Action::AddHeaders(a) => {
                for (k, v) in &a.headers {
                    req.headers.insert(k, v.clone());
                }
                None
            }
            Action::RemoveHeaders(r) => {
                for k in &r.headers {
                    req.headers.remove(k);
                }
                None
            }
            Action::VerifyWebhook(w) => {
                let result = match body {
                    Some(body) => w.verify(&req.headers, body, ctx.now),
                    None => Err(crate::webhook::WebhookError::NoBody),
                };
                let e = result.err()?;
                Some(why(
                    StatusCode::FORBIDDEN,
                    format!("webhook verification failed: {e}"),
                ))
            }
            Action::Deny(d) => {
                let status = status(d.status, StatusCode::FORBIDDEN);
                let text = d
                    .body
                    .clone()
                    .unwrap_or_else(|| "denied by traffic policy".into());
                Some(answer(status, &rule.label, text))
            }
            Action::CustomResponse(c) => Some(crate::respond::custom(c, &rule.label)),
            Action::Redirect(r) => {
                let mut res = answer(
                    status(r.status, StatusCode::FOUND),
                    &rule.label,
                    format!("redirecting to {}", r.to.to_str().unwrap_or_default()),
                );
                res.headers_mut().insert(LOCATION, r.to.clone());
                Some(res)
            }
        }
    }

    async fn rate_limit(
        &self,
        rule: &Rule,
        limit: &RateLimit,
        headers: &HeaderMap,
        ctx: &RequestContext<'_>,
        peer: IpAddr,
    ) -> Option<Response<Bytes>> {
        // Header values (API keys, typically) are hashed: keys may land in Redis.
        let client = match &limit.key {
            RateKey::Header(h) => match headers.get(h) {
                Some(v) => format!("h:{}", &hex::encode(Sha256::digest(v.as_bytes()))[..32]),
                None => peer.to_string(),
            },
            RateKey::Ip => peer.to_string(),
        };
        let key = format!("{}:{}:{client}", ctx.scope, limit.name);
        let d = ctx.limiter.hit(&key, limit.capacity, limit.window).await;
        if d.allowed {
            return None;
        }
        let secs = d.retry_after.as_secs() + u64::from(d.retry_after.subsec_nanos() > 0);
        let secs = secs.max(1);
        let text = format!(
            "rate limit \"{}\" exceeded: {} requests per {}; retry in {secs} s",
            limit.name,
            limit.capacity,
            window_text(limit.window)
        );
        let mut res = answer(StatusCode::TOO_MANY_REQUESTS, &rule.label, text);
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
        Some(res)
    }

    /// Captures what `on_http_response` matchers need; call it before `on_http_request`.
    pub fn request_facts(&self, req: &request::Parts) -> RequestFacts {
        if self.doc.on_http_response.is_empty() {
            return RequestFacts::default();
        }
        let mut headers = HeaderMap::new();
        for name in &self.response_headers {
            for v in req.headers.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        RequestFacts {
            method: req.method.clone(),
            path: normalize_path(req.uri.path()).into_owned(),
            headers,
        }
    }

    /// Runs `on_http_response` on the agent's response head. Headers are changed in place; a
    /// `Some` replaces the response (and its body) entirely.
    pub fn on_http_response(
        &self,
        req: &RequestFacts,
        res: &mut response::Parts,
    ) -> Option<Response<Bytes>> {
        for rule in &self.doc.on_http_response {
            if rule
                .matcher
                .as_ref()
                .is_some_and(|m| !m.matches(&req.method, &req.path, &req.headers, Some(res.status)))
            {
                continue;
            }
            for action in &rule.actions {
                match action {
                    Action::AddHeaders(a) => {
                        for (k, v) in &a.headers {
                            res.headers.insert(k, v.clone());
                        }
                    }
                    Action::RemoveHeaders(r) => {
                        for k in &r.headers {
                            res.headers.remove(k);
                        }
                    }
                    Action::CustomResponse(c) => {
                        return Some(crate::respond::custom(c, &rule.label));
                    }
                    // Parsing admits no other action in this phase.
                    _ => {}
                }
            }
        }
        None
    }

    /// Request headers that response matchers read (captured by [`Policy::request_facts`]).
    pub(crate) fn headers_for_responses(rules: &[Rule]) -> Vec<HeaderName> {
        let mut names: Vec<HeaderName> = Vec::new();
        for m in rules.iter().filter_map(|r| r.matcher.as_ref()) {
            for (name, _) in &m.headers {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    }
}

fn label(rule: &Rule) -> String {
    rule.label.to_str().unwrap_or_default().to_owned()
}

fn status(given: Option<u16>, default: StatusCode) -> StatusCode {
    given
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(default)
}

/// Whether `Authorization: Basic ...` carries one of the credentials (constant time over the
/// digests of all of them).
fn basic_ok(auth: &BasicAuth, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, b64)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(given) = STANDARD.decode(b64.trim()) else {
        return false;
    };
    let given: [u8; 32] = Sha256::digest(&given).into();
    let mut ok = subtle::Choice::from(0);
    for d in &auth.digests {
        ok |= d.ct_eq(&given);
    }
    ok.into()
}
