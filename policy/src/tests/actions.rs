//! Evaluation of every action: what is answered, with which status and headers.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, Response, request};

use crate::limit::LocalLimiter;
use crate::{JwksCache, Policy, RequestContext, RequestVerdict, parse};

const NOW: u64 = 1_700_000_000;

pub(super) struct Env {
    limiter: LocalLimiter,
    jwks: JwksCache,
}

impl Env {
    pub(super) fn new() -> Self {
        Env {
            limiter: LocalLimiter::default(),
            jwks: JwksCache::new(reqwest::Client::new(), Duration::from_secs(60)),
        }
    }

    pub(super) fn ctx(&self, peer: &str) -> RequestContext<'_> {
        RequestContext {
            peer: peer.parse().unwrap(),
            scope: "acct/ep",
            limiter: &self.limiter,
            jwks: &self.jwks,
            now: UNIX_EPOCH + Duration::from_secs(NOW),
        }
    }
}

pub(super) fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> request::Parts {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// Runs `on_http_request` and returns the answer, if any.
pub(super) async fn run(
    p: &Policy,
    env: &Env,
    peer: &str,
    parts: &mut request::Parts,
    body: Option<&[u8]>,
) -> Option<Response<Bytes>> {
    match p.on_http_request(parts, body, &env.ctx(peer)).await {
        RequestVerdict::Continue => None,
        RequestVerdict::Respond(r) => Some(r),
    }
}

pub(super) fn text(r: &Response<Bytes>) -> &str {
    std::str::from_utf8(r.body()).unwrap()
}

pub(super) fn header<'a>(r: &'a Response<Bytes>, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

#[tokio::test]
async fn restrict_ips_answers_403_naming_the_rule() {
    let p = parse(
        "on_http_request:\n  - actions: [{type: restrict-ips, config: {deny: [\"1.2.3.0/24\"]}}]\n",
    )
    .unwrap();
    let env = Env::new();
    let r = run(&p, &env, "1.2.3.4", &mut req("GET", "/", &[]), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(header(&r, "x-burrow-policy"), "on_http_request[0]");
    assert_eq!(header(&r, "content-type"), "text/plain; charset=utf-8");
    assert!(text(&r).contains("1.2.3.4 is not allowed"));
    assert!(
        run(&p, &env, "1.2.4.4", &mut req("GET", "/", &[]), None)
            .await
            .is_none()
    );
}

#[tokio::test]
async fn basic_auth_challenges_and_leaves_the_header() {
    let p = parse("on_http_request:\n  - name: staff\n    actions: [{type: basic-auth, config: {credentials: [\"alice:s3cret\", \"bob:pw:with:colons\"], realm: staff area}}]\n").unwrap();
    let env = Env::new();
    let r = run(&p, &env, "::1", &mut req("GET", "/", &[]), None)
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), text(&r)),
        (401, "authentication required\n")
    );
    assert_eq!(
        header(&r, "www-authenticate"),
        "Basic realm=\"staff area\", charset=\"UTF-8\""
    );
    assert_eq!(header(&r, "x-burrow-policy"), "staff");
    for (cred, ok) in [
        ("alice:s3cret", true),
        ("bob:pw:with:colons", true),
        ("alice:s3cre", false),
        ("alice:s3cret2", false),
    ] {
        let auth = format!("Basic {}", STANDARD.encode(cred));
        let mut parts = req("GET", "/", &[("authorization", &auth)]);
        assert_eq!(
            run(&p, &env, "::1", &mut parts, None).await.is_none(),
            ok,
            "{cred}"
        );
        if ok {
            assert_eq!(
                parts.headers["authorization"],
                auth.as_str(),
                "Authorization is left in place"
            );
        }
    }
    let mut bearer = req("GET", "/", &[("authorization", "Bearer x")]);
    let r = run(&p, &env, "::1", &mut bearer, None).await.unwrap();
    assert_eq!(text(&r), "invalid credentials\n");
}

#[tokio::test]
async fn jwt_without_token_is_401_with_bearer_challenge() {
    let p = parse("on_http_request:\n  - actions: [{type: jwt-validation, config: {jwks_url: \"https://idp.invalid/jwks\"}}]\n").unwrap();
    let env = Env::new();
    let r = run(&p, &env, "::1", &mut req("GET", "/", &[]), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        header(&r, "www-authenticate"),
        "Bearer error=\"invalid_token\", error_description=\"missing bearer token\""
    );
    let r = run(
        &p,
        &env,
        "::1",
        &mut req("GET", "/", &[("authorization", "Bearer not.a.jwt")]),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert!(text(&r).contains("malformed token"));
}

#[tokio::test(start_paused = true)]
async fn rate_limit_answers_429_with_retry_after_per_client() {
    let p = parse("on_http_request:\n  - actions: [{type: rate-limit, config: {name: api, capacity: 2, window: 1m}}]\n").unwrap();
    let env = Env::new();
    for _ in 0..2 {
        assert!(
            run(&p, &env, "10.0.0.1", &mut req("GET", "/", &[]), None)
                .await
                .is_none()
        );
    }
    tokio::time::advance(Duration::from_millis(17_500)).await;
    let r = run(&p, &env, "10.0.0.1", &mut req("GET", "/", &[]), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "43");
    assert_eq!(
        text(&r),
        "rate limit \"api\" exceeded: 2 requests per 1m; retry in 43 s\n"
    );
    assert!(
        run(&p, &env, "10.0.0.2", &mut req("GET", "/", &[]), None)
            .await
            .is_none(),
        "per client IP"
    );
}

#[tokio::test]
async fn rate_limit_by_header_falls_back_to_ip() {
    let p = parse("on_http_request:\n  - actions: [{type: rate-limit, config: {name: k, capacity: 1, window: 1h, key: \"header:x-api-key\"}}]\n").unwrap();
    let env = Env::new();
    let key = |k: &'static str| {
        req(
            "GET",
            "/",
            if k.is_empty() {
                &[]
            } else {
                std::slice::from_ref(Box::leak(Box::new(("x-api-key", k))))
            },
        )
    };
    assert!(
        run(&p, &env, "10.0.0.1", &mut key("a"), None)
            .await
            .is_none()
    );
    assert!(
        run(&p, &env, "10.0.0.1", &mut key("a"), None)
            .await
            .is_some()
    );
    assert!(
        run(&p, &env, "10.0.0.1", &mut key("b"), None)
            .await
            .is_none(),
        "another key, same IP"
    );
    assert!(
        run(&p, &env, "10.0.0.1", &mut key(""), None)
            .await
            .is_none(),
        "no header: counted by IP"
    );
    assert!(
        run(&p, &env, "10.0.0.1", &mut key(""), None)
            .await
            .is_some()
    );
}

#[tokio::test]
async fn header_actions_edit_the_request_and_matchers_select_rules() {
    let doc = "on_http_request:
  - match: {path_prefix: /api, methods: [POST], headers: {x-env: prod}}
    actions:
      - type: add-headers
        config: {headers: {x-from: burrow, x-env: rewritten}}
      - type: remove-headers
        config: {headers: [cookie]}
";
    let p = parse(doc).unwrap();
    let env = Env::new();
    let mut parts = req(
        "POST",
        "/api/x",
        &[
            ("x-env", "prod"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("x-from", "visitor"),
        ],
    );
    assert!(run(&p, &env, "::1", &mut parts, None).await.is_none());
    assert_eq!(
        parts.headers.get_all("x-from").iter().count(),
        1,
        "add-headers replaces"
    );
    assert_eq!(parts.headers["x-from"], "burrow");
    assert_eq!(parts.headers["x-env"], "rewritten");
    assert!(parts.headers.get("cookie").is_none());
    for (m, uri, env_header) in [
        ("GET", "/api", "prod"),
        ("POST", "/other", "prod"),
        ("POST", "/api", "dev"),
    ] {
        let mut parts = req(m, uri, &[("x-env", env_header), ("cookie", "a")]);
        run(&p, &env, "::1", &mut parts, None).await;
        assert!(
            parts.headers.get("cookie").is_some(),
            "{m} {uri} {env_header} must not match"
        );
    }
}

#[tokio::test]
async fn path_prefix_sees_through_encoding_and_dot_segments() {
    let p =
        parse("on_http_request:\n  - match: {path_prefix: /admin}\n    actions: [{type: deny}]\n")
            .unwrap();
    let env = Env::new();
    for uri in [
        "/admin",
        "/admin/x",
        "/%61dmin",
        "//admin",
        "/x/../admin",
        "/./admin?q=1",
    ] {
        let r = run(&p, &env, "::1", &mut req("GET", uri, &[]), None).await;
        assert_eq!(r.map(|r| r.status().as_u16()), Some(403), "{uri}");
    }
    assert!(
        run(&p, &env, "::1", &mut req("GET", "/public", &[]), None)
            .await
            .is_none()
    );
}

#[tokio::test]
async fn verify_webhook_needs_a_good_signature_and_the_body() {
    let p = parse("on_http_request:\n  - actions: [{type: verify-webhook, config: {scheme: stripe, secret: whsec_test}}]\n").unwrap();
    let env = Env::new();
    let sig = crate::webhook::sign_stripe(b"whsec_test", NOW as i64, b"{\"id\":1}");
    let mut parts = req("POST", "/", &[("stripe-signature", &sig)]);
    assert!(
        run(&p, &env, "::1", &mut parts, Some(b"{\"id\":1}"))
            .await
            .is_none()
    );
    let r = run(&p, &env, "::1", &mut parts, Some(b"{\"id\":2}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        text(&r).contains("webhook verification failed: no signature matches"),
        "{}",
        text(&r)
    );
    let r = run(&p, &env, "::1", &mut parts, None).await.unwrap();
    assert!(text(&r).contains("body unavailable"));
}

#[tokio::test]
async fn deny_custom_response_and_redirect_answer_as_configured() {
    let doc = "on_http_request:
  - {match: {path_prefix: /d}, actions: [{type: deny}]}
  - {match: {path_prefix: /g}, actions: [{type: deny, config: {status: 410, body: gone}}]}
  - {name: tea, match: {path_prefix: /t}, actions: [{type: custom-response, config: {status: 418, body: '{}', headers: {content-type: application/json}}}]}
  - {match: {path_prefix: /r}, actions: [{type: redirect, config: {to: 'https://example.com/new'}}]}
  - {match: {path_prefix: /p}, actions: [{type: redirect, config: {to: /new, status: 308}}]}
";
    let p = parse(doc).unwrap();
    let env = Env::new();
    let go = async |uri: &str| {
        run(&p, &env, "::1", &mut req("GET", uri, &[]), None)
            .await
            .unwrap()
    };
    let r = go("/d").await;
    assert_eq!(
        (r.status().as_u16(), text(&r)),
        (403, "denied by traffic policy\n")
    );
    let r = go("/g").await;
    assert_eq!((r.status().as_u16(), text(&r)), (410, "gone\n"));
    let r = go("/t").await;
    assert_eq!(
        (r.status().as_u16(), text(&r), header(&r, "content-type")),
        (418, "{}", "application/json")
    );
    assert_eq!(header(&r, "x-burrow-policy"), "tea");
    let r = go("/r").await;
    assert_eq!(text(&r), "redirecting to https://example.com/new\n");
    assert_eq!(
        (r.status().as_u16(), header(&r, "location")),
        (302, "https://example.com/new")
    );
    let r = go("/p").await;
    assert_eq!((r.status().as_u16(), header(&r, "location")), (308, "/new"));
    assert_eq!(header(&r, "x-burrow-policy"), "on_http_request[4]");
}
