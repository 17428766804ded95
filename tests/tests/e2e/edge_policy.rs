//! Traffic policy at the edge, with real clients on live endpoints: every HTTP action, a policy
//! update reaching an open endpoint without a reconnect, JWTs checked against a JWKS served by
//! the test, a rate limit shared by two relays (429 + Retry-After), the agent's own policy file,
//! and TCP connections refused by IP.

use crate::support::*;
use burrow_e2e::{Stack, jwt::TestIssuer};
use reqwest::{Method, StatusCode};
use std::time::Duration;

/// A local service answering every request with the request headers it saw, as JSON.
async fn echo_headers() -> u16 {
    let app = axum::Router::new().fallback(|headers: http::HeaderMap| async move {
        let map: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    serde_json::Value::String(v.to_str().unwrap_or("").to_owned()),
                )
            })
            .collect();
        axum::Json(serde_json::Value::Object(map))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// A stack with one account whose agent serves [`echo_headers`] on a fresh name.
struct Live {
    stack: Stack,
    account_id: String,
    name: String,
    /// `<name>.<domain>`, the Host visitors send.
    host: String,
    /// The relay's HTTP ingress.
    relay: String,
    _agent: burrow_e2e::Agent,
}

impl Live {
    async fn start(prefix: &str) -> Live {
        let stack = Stack::start().await.unwrap();
        let (account_id, token) = stack.account_with_token(prefix).await.unwrap();
        let port = echo_headers().await;
        let name = format!(
            "{prefix}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (agent, _) = stack.online_agent(port, Some(&name), &token).await.unwrap();
        Live {
            host: format!("{name}.{}", stack.domain),
            relay: stack.relay.http.clone(),
            stack,
            account_id,
            name,
            _agent: agent,
        }
    }
}

/// `PUT`s `yaml` as the policy of `account`'s `endpoint`; returns the new version.
async fn set_policy(stack: &Stack, account: &str, endpoint: &str, yaml: &str) -> u64 {
    let resp = stack
        .api(
            Method::PUT,
            &format!("/v1/accounts/{account}/endpoints/{endpoint}/policy"),
            &stack.creds.admin_api_key,
        )
        .header("content-type", "application/yaml")
        .body(yaml.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body["version"].as_u64().unwrap()
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(T)
        .build()
        .unwrap()
}

fn get(http_addr: &str, host: &str, path: &str) -> reqwest::RequestBuilder {
    client()
        .get(format!("http://{http_addr}{path}"))
        .header("host", host)
}

/// Waits until `GET path` on `host` answers `status` (the feed delivering a policy).
async fn until_status(
    http_addr: &str,
    host: &str,
    path: &str,
    status: StatusCode,
    within: Duration,
) {
    burrow_e2e::wait::until(&format!("GET {path} -> {status}"), within, || async {
        let got = get(http_addr, host, path).send().await.ok()?.status();
        (got == status).then_some(())
    })
    .await
    .unwrap();
}

/// The ids of the sessions serving `name` on the stack's relay.
async fn session_ids(stack: &Stack, name: &str) -> Vec<String> {
    let (_, sessions) = stack
        .call(
            Method::GET,
            "/v1/ops/sessions",
            &stack.creds.admin_api_key,
            None,
        )
        .await
        .unwrap();
    sessions["relays"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["sessions"].as_array().cloned().unwrap_or_default())
        .filter(|s| {
            s["endpoints"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["name"] == name))
        })
        .map(|s| s["session_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

const V1: &str = r#"
on_http_request:
  - name: private area
    match: { path_prefix: /private }
    actions:
      - type: basic-auth
        config: { credentials: ["alice:s3cret"], realm: burrow }
  - match: { path_prefix: /old }
    actions:
      - type: redirect
        config: { to: "https://example.com/new", status: 301 }
  - match: { path_prefix: /blocked }
    actions:
      - type: deny
  - match: { path_prefix: /teapot }
    actions:
      - type: custom-response
        config: { status: 418, body: "short and stout" }
  - actions:
      - type: add-headers
        config: { headers: { x-policy: v1 } }
      - type: remove-headers
        config: { headers: [x-secret] }
on_http_response:
  - actions:
      - type: add-headers
        config: { headers: { x-served-by: burrow-policy } }
"#;

#[tokio::test]
async fn policy_actions_apply_to_a_live_endpoint_and_updates_need_no_reconnect() {
    let Live {
        stack,
        account_id,
        name,
        host,
        relay,
        _agent,
    } = Live::start("pol").await;
    let before = session_ids(&stack, &name).await;
    assert_eq!(before.len(), 1, "{before:?}");

    assert_eq!(set_policy(&stack, &account_id, &name, V1).await, 1);
    until_status(&relay, &host, "/blocked", StatusCode::FORBIDDEN, T).await;

    // basic-auth: refused without credentials (with the challenge), passed with them.
    let denied = get(&relay, &host, "/private").send().await.unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
    let challenge = denied.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Basic realm=\"burrow\""),
        "{challenge}"
    );
    let wrong = get(&relay, &host, "/private")
        .basic_auth("alice", Some("guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let ok = get(&relay, &host, "/private")
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    // redirect, deny and custom responses are the relay's; the service never sees them.
    let moved = get(&relay, &host, "/old/page").send().await.unwrap();
    assert_eq!(moved.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(moved.headers()["location"], "https://example.com/new");
    let teapot = get(&relay, &host, "/teapot").send().await.unwrap();
    assert_eq!(teapot.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(teapot.text().await.unwrap(), "short and stout");

    // Headers added and removed on the way in, added on the way out.
    let seen = get(&relay, &host, "/")
        .header("x-secret", "do not forward")
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), StatusCode::OK);
    assert_eq!(seen.headers()["x-served-by"], "burrow-policy");
    let headers: serde_json::Value = seen.json().await.unwrap();
    assert_eq!(headers["x-policy"], "v1", "{headers}");
    assert!(headers.get("x-secret").is_none(), "{headers}");

    // An update reaches the open endpoint: every visitor from 127.0.0.1 is now refused at
    // connect, and the header rule is gone.
    let v2 = r#"
on_tcp_connect:
  - actions:
      - type: restrict-ips
        config: { deny: ["127.0.0.0/8"] }
"#;
    assert_eq!(set_policy(&stack, &account_id, &name, v2).await, 2);
    let updated = std::time::Instant::now();
    until_status(
        &relay,
        &host,
        "/",
        StatusCode::FORBIDDEN,
        Duration::from_secs(10),
    )
    .await;
    // Updates are pushed over the feed (nothing polls); the issue's 1 s is a latency target, so
    // the test allows a loaded CI machine 10 s and reports the time.
    eprintln!(
        "policy update applied {:?} after the PUT answered",
        updated.elapsed()
    );
    // Removing the policy opens the endpoint again.
    let removed = stack
        .api(
            Method::DELETE,
            &format!("/v1/accounts/{account_id}/endpoints/{name}/policy"),
            &stack.creds.admin_api_key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    until_status(&relay, &host, "/", StatusCode::OK, Duration::from_secs(10)).await;
    let headers: serde_json::Value = get(&relay, &host, "/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(headers.get("x-policy").is_none(), "{headers}");

    // All of it happened on the session the agent opened at the start.
    assert_eq!(session_ids(&stack, &name).await, before);
}

#[tokio::test]
async fn jwt_validation_checks_tokens_against_the_issuers_jwks() {
    let Live {
        stack,
        account_id,
        name,
        host,
        relay,
        _agent,
    } = Live::start("jwt").await;
    let issuer = TestIssuer::start().await.unwrap();
    let policy = format!(
        r#"
on_http_request:
  - actions:
      - type: jwt-validation
        config:
          jwks_url: "{}"
          issuer: "{}"
          audiences: [burrow-e2e]
"#,
        issuer.jwks_url(),
        issuer.issuer()
    );
    set_policy(&stack, &account_id, &name, &policy).await;
    until_status(&relay, &host, "/", StatusCode::UNAUTHORIZED, T).await;

    let with = |jwt: String| get(&relay, &host, "/api").bearer_auth(jwt);
    let ok = with(issuer.token("burrow-e2e", 300)).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    for (what, jwt) in [
        ("expired", issuer.token("burrow-e2e", -300)),
        ("wrong audience", issuer.token("someone-else", 300)),
        (
            "foreign key",
            TestIssuer::foreign_token(&issuer.issuer(), "burrow-e2e"),
        ),
    ] {
        let resp = with(jwt).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what}");
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
    }
}

#[tokio::test]
async fn a_rate_limit_is_shared_by_two_relays() {
    let stack = Stack::start().await.unwrap();
    let second = stack.spawn_extra_relay("b").await.unwrap();
    let (account_id, token) = stack.account_with_token("ratelimit").await.unwrap();
    let port = echo_headers().await;
    let name = format!("rl{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // The same endpoint served through both relays (one agent on each).
    let (_a, _) = stack.online_agent(port, Some(&name), &token).await.unwrap();
    let mut b = stack
        .agent_via(
            &second.addrs.agent,
            &["http", &port.to_string(), "--name", &name],
            &token,
        )
        .unwrap();
    b.wait_line("Forwarding", T).await.unwrap();
    let host = format!("{name}.{}", stack.domain);
    let policy = r#"
on_http_request:
  - actions:
      - type: rate-limit
        config: { name: api, capacity: 4, window: 1h, key: ip }
"#;
    set_policy(&stack, &account_id, &name, policy).await;
    // Wait until the feed delivered the policy to both relays (their metrics say so), without
    // spending any of the budget.
    for ops in [&stack.relay.ops, &second.addrs.ops] {
        burrow_e2e::wait::until("the relay holds the policy", T, || async {
            let n = burrow_e2e::metrics::value(ops, "burrow_relay_edge_policies").await?;
            (n != "0").then_some(())
        })
        .await
        .unwrap();
    }
    let (a_http, b_http) = (stack.relay.http.clone(), second.addrs.http.clone());
    let mut statuses = Vec::new();
    for http in [&a_http, &b_http, &a_http, &b_http] {
        statuses.push(get(http, &host, "/").send().await.unwrap().status());
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // The budget of 4 is spent across both relays: the next request is refused on either.
    for http in [&a_http, &b_http] {
        let refused = get(http, &host, "/").send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    }
}

#[tokio::test]
async fn the_agents_policy_file_is_enforced_and_a_bad_one_is_refused_with_its_line() {
    let stack = Stack::start().await.unwrap();
    let (_, token) = stack.account_with_token("agentpolicy").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("policy.yml");
    std::fs::write(
        &good,
        "on_http_request:\n  - actions:\n      - type: add-headers\n        config: { headers: { x-from-file: yes-indeed } }\n",
    )
    .unwrap();
    let port = echo_headers().await;
    let name = format!("file{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let port_s = port.to_string();
    let args = [
        "http",
        &port_s,
        "--name",
        &name,
        "--traffic-policy-file",
        good.to_str().unwrap(),
    ];
    let mut agent = stack.agent_with(&args, &token).unwrap();
    agent.wait_line("Forwarding", T).await.unwrap();
    let host = format!("{name}.{}", stack.domain);
    let headers: serde_json::Value = get(&stack.relay.http, &host, "/")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(headers["x-from-file"], "yes-indeed", "{headers}");

    // TCP: a visitor from a denied address is closed before any byte reaches the service.
    let deny = dir.path().join("deny.yml");
    std::fs::write(
        &deny,
        "on_tcp_connect:\n  - actions:\n      - type: restrict-ips\n        config: { deny: [127.0.0.1/32] }\n",
    )
    .unwrap();
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_port = service.local_addr().unwrap().port().to_string();
    let mut tcp = stack
        .agent_with(
            &[
                "tcp",
                &service_port,
                "--traffic-policy-file",
                deny.to_str().unwrap(),
            ],
            &token,
        )
        .unwrap();
    let line = tcp.wait_line("Forwarding tcp://", T).await.unwrap();
    let public = tcp_public_addr(&line);
    let mut visitor = tokio::net::TcpStream::connect(&public).await.unwrap();
    let mut buf = [0u8; 16];
    use tokio::io::AsyncReadExt;
    let n = tokio::time::timeout(T, visitor.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the relay closes a denied visitor");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), service.accept())
            .await
            .is_err(),
        "the service never saw the denied visitor"
    );

    // A file that does not validate: the bind is refused naming the field and the line.
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "on_http_request:\n  - actions:\n      - type: restrict-ips\n        config: { allow: [not-a-cidr] }\n",
    )
    .unwrap();
    let mut refused = stack
        .agent_with(
            &[
                "http",
                &port_s,
                "--traffic-policy-file",
                bad.to_str().unwrap(),
            ],
            &token,
        )
        .unwrap();
    let out = refused.expect_exit(1, "does not validate").await.unwrap();
    assert!(out.contains("line 4"), "{out}");
    assert!(out.contains("allow"), "{out}");
}

#[tokio::test]
async fn webhook_signatures_and_header_keyed_limits_are_checked_at_the_edge() {
    use burrow_e2e::webhook::{signature_header, standard_headers};
    let Live {
        stack,
        account_id,
        name,
        host,
        relay,
        _agent,
    } = Live::start("wh").await;
    let stripe_secret = "whsec_stripe_e2e";
    // Standard Webhooks secrets are base64 keys.
    let standard_secret = "whsec_c3RhbmRhcmQtd2ViaG9va3MtZTJlLWtleQ==";
    let policy = format!(
        r#"
on_http_request:
  - match: {{ path_prefix: /stripe }}
    actions:
      - type: verify-webhook
        config: {{ scheme: stripe, secret: "{stripe_secret}" }}
  - match: {{ path_prefix: /standard }}
    actions:
      - type: verify-webhook
        config: {{ scheme: standard, secret: "{standard_secret}" }}
  - match: {{ path_prefix: /api }}
    actions:
      - type: rate-limit
        config: {{ name: per-key, capacity: 2, window: 1h, key: "header:x-api-key" }}
"#
    );
    set_policy(&stack, &account_id, &name, &policy).await;
    let post = |path: &str, body: &'static str| {
        client()
            .post(format!("http://{relay}{path}"))
            .header("host", &host)
            .body(body)
    };
    burrow_e2e::wait::until("the webhook policy is live", T, || async {
        let s = post("/stripe", "{}").send().await.ok()?.status();
        (s == StatusCode::FORBIDDEN).then_some(())
    })
    .await
    .unwrap();

    let body = r#"{"id":"evt_1","type":"invoice.paid"}"#;
    let now = chrono::Utc::now().timestamp();
    let signed = post("/stripe", body)
        .header(
            "stripe-signature",
            signature_header(stripe_secret, now, body.as_bytes()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        signed.status(),
        StatusCode::OK,
        "a correctly signed Stripe event passes"
    );
    let forged = post("/stripe", body)
        .header(
            "stripe-signature",
            signature_header("whsec_wrong", now, body.as_bytes()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let stale = post("/stripe", body)
        .header(
            "stripe-signature",
            signature_header(stripe_secret, now - 3600, body.as_bytes()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.status(),
        StatusCode::FORBIDDEN,
        "outside the tolerance"
    );

    let mut ok = post("/standard", body);
    for (k, v) in standard_headers(standard_secret, "msg_1", now, body.as_bytes()) {
        ok = ok.header(k, v);
    }
    assert_eq!(ok.send().await.unwrap().status(), StatusCode::OK);
    let mut tampered = post("/standard", r#"{"id":"evt_1","type":"invoice.refunded"}"#);
    for (k, v) in standard_headers(standard_secret, "msg_1", now, body.as_bytes()) {
        tampered = tampered.header(k, v);
    }
    assert_eq!(
        tampered.send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );

    // Each API key has its own budget of 2.
    let call = |key: &'static str| get(&relay, &host, "/api").header("x-api-key", key).send();
    for _ in 0..2 {
        assert_eq!(call("alpha").await.unwrap().status(), StatusCode::OK);
    }
    let limited = call("alpha").await.unwrap();
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(call("beta").await.unwrap().status(), StatusCode::OK);
}
