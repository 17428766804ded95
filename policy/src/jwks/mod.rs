//! JWT validation against a JWKS URL, for the `jwt-validation` action.
//!
//! [`JwksCache`] owns the fetched key sets: one entry per URL, fetched on first use, kept for
//! `ttl`, and refetched early when a token names a `kid` the set does not have — at most once
//! per [`REFETCH_INTERVAL`] per URL, so tokens with random `kid`s cannot turn the relay into a
//! load generator against the identity provider. A failed refresh keeps serving the old keys.
//! Fetches are serialized per URL (one request in flight however many visitors wait).
//!
//! Memory is bounded: at most [`MAX_URLS`] URLs are cached (a new one evicts the least
//! recently used), and a URL unused for [`IDLE_TTLS`] times `ttl` is dropped.
//!
//! Redirects are never followed: the URL was validated when the policy was submitted (https,
//! or plain http to a loopback address), and a redirect could lead anywhere. Give
//! [`JwksCache::new`] a client built with `redirect(reqwest::redirect::Policy::none())`; a
//! 3xx answer, or keys a client reached through a redirect anyway, are refused.
//!
//! Signatures are checked by `jsonwebtoken` (asymmetric algorithms only: a JWKS publishes
//! public keys, and accepting `HS*` would invite algorithm confusion); `exp` (required),
//! `nbf`, `iss` and `aud` are checked here against the evaluation's clock with the leeway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;

mod token;

use token::{Claims, check_claims};
pub use token::{JwtConfig, JwtError, token_from};

/// Minimum time between two fetches of one URL that were not due to `ttl` expiry.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Bound on one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Most URLs cached at once (normally; see [`JwksCache::with_max_urls`]).
pub const MAX_URLS: usize = 1024;
/// A URL unused for this many times `ttl` is dropped from the cache.
pub const IDLE_TTLS: u32 = 4;
/// Least time between two sweeps for idle URLs.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Algorithms accepted when the action lists none.
pub const DEFAULT_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One usable key of a set.
struct Key {
    kid: Option<String>,
    alg: Option<String>,
    family: Family,
    key: DecodingKey,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    Ec,
    Ed,
}

fn family(alg: Algorithm) -> Option<Family> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(Family::Rsa),
        ES256 | ES384 => Some(Family::Ec),
        EdDSA => Some(Family::Ed),
        HS256 | HS384 | HS512 => None,
    }
}

#[derive(Default)]
struct Snapshot {
    keys: Option<Arc<Vec<Key>>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

#[derive(Default)]
struct UrlEntry {
    snapshot: Mutex<Snapshot>,
    /// Held while fetching, so concurrent misses wait for one fetch instead of each sending one.
    fetching: tokio::sync::Mutex<()>,
}

/// A cached URL and when it was last asked for.
struct Slot {
    entry: Arc<UrlEntry>,
    used: Instant,
}

struct Urls {
    slots: HashMap<String, Slot>,
    last_sweep: Instant,
}

/// Cache of JWKS documents by URL, shared by every policy on a relay.
pub struct JwksCache {
    http: reqwest::Client,
    ttl: Duration,
    /// Minimum time between fetches of one URL (normally [`REFETCH_INTERVAL`]).
    refetch_interval: Duration,
    /// Most URLs kept (normally [`MAX_URLS`]).
    max_urls: usize,
    urls: Mutex<Urls>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// A cache that fetches with `http` and keeps each key set for `ttl`.
    ///
    /// `http` should not follow redirects (`redirect(reqwest::redirect::Policy::none())`):
    /// keys reached through a redirect are refused, but a following client has already sent
    /// the request wherever the redirect pointed.
    pub fn new(http: reqwest::Client, ttl: Duration) -> Self {
        JwksCache {
            http,
            ttl,
            refetch_interval: REFETCH_INTERVAL,
            max_urls: MAX_URLS,
            urls: Mutex::new(Urls {
                slots: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// Changes how many URLs are cached at once (normally [`MAX_URLS`]; at least 1).
    pub fn with_max_urls(mut self, max: usize) -> Self {
        self.max_urls = max.max(1);
        self
    }

    /// How many URLs are cached now.
    pub fn cached_urls(&self) -> usize {
        self.urls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .len()
    }

    /// Changes the minimum time between two fetches of one URL (tests use zero).
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// Validates `token` under `cfg` at time `now`.
    pub async fn validate(
        &self,
        cfg: &JwtConfig,
        token: &str,
        now: SystemTime,
    ) -> Result<(), JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        let accepted = if cfg.algorithms.is_empty() {
            &DEFAULT_ALGORITHMS[..]
        } else {
            &cfg.algorithms[..]
        };
        let fam = family(header.alg).filter(|_| accepted.contains(&header.alg));
        let fam = fam.ok_or(JwtError::Algorithm(header.alg))?;
        let keys = self.keys(&cfg.jwks_url, header.kid.as_deref()).await?;
        let alg_name = format!("{:?}", header.alg);
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut candidates = keys.iter().filter(|k| {
            k.family == fam
                // A key without `kid` may sign any token; a token without one may use any key.
                && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
                && k.alg.as_ref().is_none_or(|a| *a == alg_name)
        });
        let mut tried = false;
        let claims = loop {
            let Some(k) = candidates.next() else {
                return Err(if tried {
                    JwtError::Signature
                } else {
                    JwtError::UnknownKey
                });
            };
            tried = true;
            match jsonwebtoken::decode::<Claims>(token, &k.key, &validation) {
                Ok(data) => break data.claims,
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
                    continue;
                }
                Err(_) => return Err(JwtError::Malformed),
            }
        };
        check_claims(cfg, &claims, now)
    }

    /// The key set of `url`, fetched or refreshed as needed.
    async fn keys(&self, url: &str, kid: Option<&str>) -> Result<Arc<Vec<Key>>, JwtError> {
        let entry = self.entry(url);
        if let Some(keys) = self.fresh(&entry, kid) {
            return Ok(keys);
        }
        let _one_fetch = entry.fetching.lock().await;
        // Another task may have fetched while this one waited.
        if let Some(keys) = self.fresh(&entry, kid) {
            return Ok(keys);
        }
        let stale = {
            let mut snap = entry
                .snapshot
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if snap
                .last_attempt
                .is_some_and(|t| t.elapsed() < self.refetch_interval)
            {
                // Fetched (or failed) moments ago: answer with what there is.
                return snap
                    .keys
                    .clone()
                    .ok_or_else(|| JwtError::KeysUnavailable("recent fetch failed".into()));
            }
            snap.last_attempt = Some(Instant::now());
            snap.keys.clone()
        };
        match self.fetch(url).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                let mut snap = entry
                    .snapshot
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                snap.keys = Some(keys.clone());
                snap.fetched_at = Some(Instant::now());
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(error = %e, jwks_url = %url, "JWKS fetch failed");
                stale.ok_or(JwtError::KeysUnavailable(e))
            }
        }
    }

    /// The entry of `url`, created when missing: marks it used, drops URLs idle for
    /// [`IDLE_TTLS`] × `ttl` (looked for at most once per `ttl`, and per second), and evicts the least recently used URL
    /// when the cache is full.
    fn entry(&self, url: &str) -> Arc<UrlEntry> {
        let now = Instant::now();
        let mut urls = self.urls.lock().unwrap_or_else(PoisonError::into_inner);
        if now.duration_since(urls.last_sweep) >= self.ttl.max(MIN_SWEEP_INTERVAL) {
            urls.last_sweep = now;
            let idle = self.ttl.saturating_mul(IDLE_TTLS);
            urls.slots
                .retain(|_, slot| now.duration_since(slot.used) <= idle);
        }
        if let Some(slot) = urls.slots.get_mut(url) {
            slot.used = now;
            return slot.entry.clone();
        }
        if urls.slots.len() >= self.max_urls {
            // A scan, only when a new URL arrives at a full cache (each then costs a fetch).
            let oldest = urls
                .slots
                .iter()
                .min_by_key(|(_, slot)| slot.used)
                .map(|(url, _)| url.clone());
            if let Some(oldest) = oldest {
                urls.slots.remove(&oldest);
            }
        }
        let entry = Arc::new(UrlEntry::default());
        urls.slots.insert(
            url.to_owned(),
            Slot {
                entry: entry.clone(),
                used: now,
            },
        );
        entry
    }

    /// The cached set when it is within `ttl` and knows `kid` (or no `kid` is asked for).
    fn fresh(&self, entry: &UrlEntry, kid: Option<&str>) -> Option<Arc<Vec<Key>>> {
        let snap = entry
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let keys = snap.keys.as_ref()?;
        let in_ttl = snap.fetched_at.is_some_and(|t| t.elapsed() < self.ttl);
        let knows = kid.is_none_or(|kid| keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
        (in_ttl && knows).then(|| keys.clone())
    }

    async fn fetch(&self, url: &str) -> Result<Vec<Key>, String> {
        let res = self
            .http
            .get(url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        // A redirect could send the relay anywhere the validated URL could not (plain http,
        // internal addresses): never follow one, and refuse keys a client followed one to.
        if res.status().is_redirection() {
            return Err(format!(
                "answered {} (redirects are not followed)",
                res.status()
            ));
        }
        if reqwest::Url::parse(url).ok().as_ref() != Some(res.url()) {
            return Err("redirected (redirects are not followed)".into());
        }
        let mut res = res.error_for_status().map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}

/// The usable keys of a JWKS document; keys of unknown types or symmetric keys are skipped.
fn parse_jwks(body: &[u8]) -> Result<Vec<Key>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let keys = set
        .keys
        .into_iter()
        .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
        .filter_map(|jwk| {
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                AlgorithmParameters::OctetKey(_) => return None,
            };
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            let alg = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
            Some(Key {
                kid: jwk.common.key_id,
                alg,
                family,
                key,
            })
        })
        .collect();
    Ok(keys)
}
