//! `JwksCache` and the `jwt-validation` action against a JWKS served on 127.0.0.1:0.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use burrow_policy::jwks::{JwksCache, JwtConfig, JwtError};
use burrow_policy::limit::LocalLimiter;
use burrow_policy::{RequestContext, RequestVerdict};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const NOW: u64 = 1_700_000_000;

/// A signing key and its public JWK.
struct Signer {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
    jwk: Value,
}

fn ec_key(kid: &'static str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = kp.public_key_raw(); // 0x04 || x || y
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])});
    Signer {
        kid,
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
        jwk,
    }
}

fn ed_key(kid: &'static str) -> Signer {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": URL_SAFE_NO_PAD.encode(kp.public_key_raw())});
    Signer {
        kid,
        alg: Algorithm::EdDSA,
        key: EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap(),
        jwk,
    }
}

impl Signer {
    fn token(&self, claims: Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.to_owned());
        jsonwebtoken::encode(&h, &claims, &self.key).unwrap()
    }
}

fn claims() -> Value {
    json!({"sub": "u1", "iss": "https://idp.test/", "aud": ["api", "other"], "exp": NOW + 600, "nbf": NOW - 10})
}

/// A JWKS server whose key set can be swapped, counting fetches.
#[derive(Clone, Default)]
struct Server {
    set: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl Server {
    async fn start(keys: &[&Signer]) -> (Server, String) {
        let server = Server::default();
        server.publish(keys);
        let app = axum::Router::new()
            .route(
                "/jwks",
                axum::routing::get(|State(s): State<Server>| async move {
                    s.fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(s.set.lock().unwrap().clone())
                }),
            )
            // A redirect to the keys above (an attacker's would point somewhere internal).
            .route(
                "/moved",
                axum::routing::get(|| async { axum::response::Redirect::temporary("/jwks") }),
            )
            .with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (server, url)
    }

    fn publish(&self, keys: &[&Signer]) {
        // An unsupported key type in the set must not hide the others.
        let mut list: Vec<Value> = vec![json!({"kty": "XYZ", "kid": "junk"})];
        list.extend(keys.iter().map(|k| k.jwk.clone()));
        *self.set.lock().unwrap() = json!({ "keys": list });
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn config(url: &str) -> JwtConfig {
    JwtConfig {
        jwks_url: url.to_owned(),
        issuer: Some("https://idp.test/".into()),
        audiences: vec!["api".into()],
        algorithms: vec![],
        header: None,
        leeway_secs: Some(30),
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[tokio::test]
async fn valid_expired_issuer_audience_signature_and_algorithm() {
    let k1 = ec_key("k1");
    let (server, url) = Server::start(&[&k1]).await;
    let cache = JwksCache::new(reqwest::Client::new(), Duration::from_secs(300));
    let cfg = config(&url);
    let check = |claims: Value| {
        let token = k1.token(claims);
        let (cache, cfg) = (&cache, &cfg);
        async move { cache.validate(cfg, &token, at(NOW)).await }
    };

    assert_eq!(check(claims()).await, Ok(()));
    assert_eq!(check(claims()).await, Ok(()));
    assert_eq!(server.fetches(), 1, "the key set is cached");

    let mut c = claims();
    c["exp"] = json!(NOW - 31);
    assert_eq!(check(c.clone()).await, Err(JwtError::Expired));
    c["exp"] = json!(NOW - 29);
    assert_eq!(check(c).await, Ok(()), "within the leeway");
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(check(c).await, Err(JwtError::Expired), "exp is required");
    let mut c = claims();
    c["nbf"] = json!(NOW + 60);
    assert_eq!(check(c).await, Err(JwtError::NotYetValid));
    let mut c = claims();
    c["iss"] = json!("https://evil.test/");
    assert_eq!(check(c).await, Err(JwtError::Issuer));
    let mut c = claims();
    c["aud"] = json!("billing");
    assert_eq!(check(c).await, Err(JwtError::Audience));

    // Same kid, another key: the signature does not verify.
    let forger = ec_key("k1");
    assert_eq!(
        cache.validate(&cfg, &forger.token(claims()), at(NOW)).await,
        Err(JwtError::Signature)
    );

    let only_rs = JwtConfig {
        algorithms: vec![Algorithm::RS256],
        ..cfg.clone()
    };
    assert_eq!(
        cache.validate(&only_rs, &k1.token(claims()), at(NOW)).await,
        Err(JwtError::Algorithm(Algorithm::ES256))
    );
    assert_eq!(
        cache.validate(&cfg, "a.b.c", at(NOW)).await,
        Err(JwtError::Malformed)
    );
}

#[tokio::test]
async fn unknown_kid_refetches_at_most_once_per_interval() {
    let k1 = ec_key("k1");
    let k2 = ed_key("k2");
    let (server, url) = Server::start(&[&k1]).await;
    let cache = JwksCache::new(reqwest::Client::new(), Duration::from_secs(300));
    let cfg = config(&url);
    assert_eq!(
        cache.validate(&cfg, &k1.token(claims()), at(NOW)).await,
        Ok(())
    );
    assert_eq!(server.fetches(), 1);

    // A kid nobody published: one refetch (just after the first fetch it is rate-limited).
    let stranger = ec_key("k9");
    assert_eq!(
        cache
            .validate(&cfg, &stranger.token(claims()), at(NOW))
            .await,
        Err(JwtError::UnknownKey)
    );
    assert_eq!(
        cache
            .validate(&cfg, &stranger.token(claims()), at(NOW))
            .await,
        Err(JwtError::UnknownKey)
    );
    assert_eq!(
        server.fetches(),
        1,
        "no refetch within {:?} of the last fetch",
        burrow_policy::jwks::REFETCH_INTERVAL
    );

    // A cache whose interval has passed picks up a rotated key on its first unknown kid.
    let fresh = JwksCache::new(reqwest::Client::new(), Duration::from_secs(300))
        .with_refetch_interval(Duration::ZERO);
    assert_eq!(
        fresh.validate(&cfg, &k1.token(claims()), at(NOW)).await,
        Ok(())
    );
    server.publish(&[&k1, &k2]);
    let before = server.fetches();
    assert_eq!(
        fresh.validate(&cfg, &k2.token(claims()), at(NOW)).await,
        Ok(()),
        "EdDSA key found after refetch"
    );
    assert_eq!(server.fetches(), before + 1);
    assert_eq!(
        fresh.validate(&cfg, &k2.token(claims()), at(NOW)).await,
        Ok(())
    );
    assert_eq!(server.fetches(), before + 1, "known kid: served from cache");
}

#[tokio::test]
async fn unreachable_jwks_answers_503_and_bad_tokens_401() {
    let k1 = ec_key("k1");
    let (_server, url) = Server::start(&[&k1]).await;
    let doc = format!(
        "on_http_request:\n  - name: api\n    actions: [{{type: jwt-validation, config: {{jwks_url: \"{url}\", audiences: [api]}}}}]\n"
    );
    let policy = burrow_policy::parse(&doc).unwrap();
    let limiter = LocalLimiter::default();
    let jwks = JwksCache::new(reqwest::Client::new(), Duration::from_secs(300));
    let ctx = RequestContext {
        peer: "::1".parse().unwrap(),
        scope: "a/e",
        limiter: &limiter,
        jwks: &jwks,
        now: at(NOW),
    };
    let verdict = |token: String| {
        let mut parts = http::Request::get("/")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let (policy, ctx) = (&policy, &ctx);
        async move { policy.on_http_request(&mut parts, None, ctx).await }
    };
    assert!(matches!(
        verdict(k1.token(claims())).await,
        RequestVerdict::Continue
    ));
    let mut c = claims();
    c["exp"] = json!(NOW - 3600);
    let RequestVerdict::Respond(r) = verdict(k1.token(c)).await else {
        panic!("expired token passed")
    };
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\", error_description=\"token expired\""
    );
    assert_eq!(r.headers()["x-burrow-policy"], "api");

    let dead = burrow_policy::parse(&doc.replace(&url, "http://127.0.0.1:9/jwks")).unwrap();
    let mut parts = http::Request::get("/")
        .header("authorization", format!("Bearer {}", k1.token(claims())))
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let RequestVerdict::Respond(r) = dead.on_http_request(&mut parts, None, &ctx).await else {
        panic!("no keys, yet passed")
    };
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "10");
    // The visitor learns nothing of the fetch error (addresses, statuses, connect errors).
    let body = std::str::from_utf8(r.body()).unwrap();
    assert_eq!(
        body, "the signing keys of this endpoint's JWT issuer cannot be fetched right now\n",
        "{body}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let k1 = ec_key("k1");
    let (server, url) = Server::start(&[&k1]).await;
    let moved = url.replace("/jwks", "/moved");
    let token = k1.token(claims());
    // The client the relay uses: never follows a redirect.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cache = JwksCache::new(client, Duration::from_secs(300));
    match cache.validate(&config(&moved), &token, at(NOW)).await {
        Err(JwtError::KeysUnavailable(why)) => assert!(why.contains("redirect"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.fetches(), 0, "the redirect target was not fetched");
    // A client that follows redirects: the keys it was led to are refused all the same.
    let cache = JwksCache::new(reqwest::Client::new(), Duration::from_secs(300));
    match cache.validate(&config(&moved), &token, at(NOW)).await {
        Err(JwtError::KeysUnavailable(why)) => assert!(why.contains("redirect"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        cache.validate(&config(&url), &token, at(NOW)).await,
        Ok(()),
        "the URL itself works"
    );
}

#[tokio::test]
async fn least_recently_used_urls_are_evicted() {
    let k1 = ec_key("k1");
    let (server, url) = Server::start(&[&k1]).await;
    // Four URLs of one key set (the server ignores the query).
    let urls: Vec<String> = (0..4).map(|i| format!("{url}?u={i}")).collect();
    let cache = JwksCache::new(reqwest::Client::new(), Duration::from_secs(300)).with_max_urls(2);
    let token = k1.token(claims());
    let check = |i: usize| {
        let (cache, cfg, token) = (&cache, config(&urls[i]), &token);
        async move { cache.validate(&cfg, token, at(NOW)).await }
    };
    assert_eq!(check(0).await, Ok(()));
    assert_eq!(check(1).await, Ok(()));
    assert_eq!(check(0).await, Ok(()));
    assert_eq!(server.fetches(), 2);
    assert_eq!(
        check(2).await,
        Ok(()),
        "evicts url 1, the least recently used"
    );
    assert_eq!(cache.cached_urls(), 2);
    assert_eq!(server.fetches(), 3);
    assert_eq!(check(0).await, Ok(()));
    assert_eq!(server.fetches(), 3, "url 0 is still cached");
    assert_eq!(check(1).await, Ok(()));
    assert_eq!(
        server.fetches(),
        4,
        "url 1 was evicted and is fetched again"
    );
    assert_eq!(cache.cached_urls(), 2);

    // Many URLs (failing ones too) never grow the cache past its bound.
    for i in 0..20 {
        let dead = config(&format!("http://127.0.0.1:9/jwks?u={i}"));
        let _ = cache.validate(&dead, &token, at(NOW)).await;
        assert!(cache.cached_urls() <= 2);
    }
}

#[tokio::test]
async fn urls_unused_for_a_few_ttls_are_dropped() {
    let k1 = ec_key("k1");
    let (_server, url) = Server::start(&[&k1]).await;
    let ttl = Duration::from_millis(100);
    let cache = JwksCache::new(reqwest::Client::new(), ttl);
    let token = k1.token(claims());
    let first = config(&format!("{url}?u=1"));
    assert_eq!(cache.validate(&first, &token, at(NOW)).await, Ok(()));
    assert_eq!(cache.cached_urls(), 1);
    // Past the idle limit and the sweep interval: the next lookup drops the idle URL.
    let idle = ttl * burrow_policy::jwks::IDLE_TTLS;
    tokio::time::sleep(idle.max(Duration::from_secs(1)) + Duration::from_millis(200)).await;
    let second = config(&format!("{url}?u=2"));
    assert_eq!(cache.validate(&second, &token, at(NOW)).await, Ok(()));
    assert_eq!(cache.cached_urls(), 1, "the idle URL was dropped");
}

#[tokio::test]
async fn https_jwks_urls_are_fetched_over_tls() {
    // Nothing listens on port 9: the fetch must fail connecting, not for lack of TLS support.
    let cache = JwksCache::new(reqwest::Client::new(), Duration::from_secs(300));
    let cfg = JwtConfig {
        jwks_url: "https://127.0.0.1:9/jwks".into(),
        ..config("")
    };
    let token = ec_key("k1").token(claims());
    match cache.validate(&cfg, &token, at(NOW)).await {
        Err(JwtError::KeysUnavailable(why)) => assert!(!why.contains("scheme"), "{why}"),
        other => panic!("{other:?}"),
    }
}
