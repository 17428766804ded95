//! Phases as a whole: on_tcp_connect, the order of rules and actions (first answer wins),
//! on_http_response against the captured request, and the types the relay shares.

use std::net::IpAddr;

use http::Response;

use super::actions::{Env, header, req, run, text};
use crate::{JwksCache, Policy, parse};

#[test]
fn tcp_connect_restricts_ips_with_deny_winning() {
    let p = parse(super::roundtrip::FULL).unwrap();
    assert_eq!(p.on_tcp_connect("10.1.2.3".parse().unwrap()), Ok(()));
    assert_eq!(p.on_tcp_connect("::1".parse().unwrap()), Ok(()));
    assert_eq!(
        p.on_tcp_connect("::ffff:10.1.2.3".parse().unwrap()),
        Ok(()),
        "IPv4-mapped peers match IPv4 CIDRs"
    );
    assert_eq!(p.on_tcp_connect("192.168.1.7".parse().unwrap()), Ok(()));
    let denied = p.on_tcp_connect("10.9.0.1".parse().unwrap()).unwrap_err();
    assert_eq!(denied.rule, "office only");
    assert!(
        denied.to_string().contains("10.9.0.1 is not allowed"),
        "{denied}"
    );
    assert!(p.on_tcp_connect(IpAddr::from([8, 8, 8, 8])).is_err());
}

#[tokio::test]
async fn first_answer_stops_evaluation() {
    let doc = "on_http_request:
  - actions:
      - {type: add-headers, config: {headers: {x-a: '1'}}}
      - {type: deny, config: {status: 401}}
      - {type: add-headers, config: {headers: {x-b: '1'}}}
  - actions: [{type: add-headers, config: {headers: {x-c: '1'}}}]
";
    let p = parse(doc).unwrap();
    let env = Env::new();
    let mut parts = req("GET", "/", &[]);
    assert_eq!(
        run(&p, &env, "::1", &mut parts, None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert!(
        parts.headers.contains_key("x-a")
            && !parts.headers.contains_key("x-b")
            && !parts.headers.contains_key("x-c")
    );
}

#[test]
fn response_rules_match_the_captured_request_and_status() {
    let p = parse(super::roundtrip::FULL).unwrap();
    let facts = p.request_facts(&req("GET", "/x", &[("x-debug", "1"), ("cookie", "c")]));
    let mut res = Response::builder()
        .status(502)
        .header("server", "nginx")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let replaced = p.on_http_response(&facts, &mut res).unwrap();
    assert_eq!(
        (replaced.status().as_u16(), text(&replaced)),
        (503, "try again")
    );
    assert_eq!(header(&replaced, "x-burrow-policy"), "on_http_response[0]");
    assert!(res.headers.get("server").is_none() && res.headers["cache-control"] == "no-store");
    let mut ok = Response::builder()
        .status(200)
        .header("server", "nginx")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    assert!(p.on_http_response(&facts, &mut ok).is_none());
    assert_eq!(ok.headers["server"], "nginx", "status_codes did not match");
    let other = p.request_facts(&req("GET", "/x", &[]));
    let mut res = Response::builder()
        .status(500)
        .body(())
        .unwrap()
        .into_parts()
        .0;
    assert!(
        p.on_http_response(&other, &mut res).is_none(),
        "header condition did not match"
    );
}

#[test]
fn evaluation_futures_are_send_and_policy_is_shareable() {
    fn send<T: Send>(_: &T) {}
    fn shared<T: Send + Sync>() {}
    shared::<Policy>();
    shared::<JwksCache>();
    let p = parse("{}").unwrap();
    let env = Env::new();
    let ctx = env.ctx("::1");
    let mut parts = req("GET", "/", &[]);
    send(&p.on_http_request(&mut parts, None, &ctx));
}

#[test]
fn ipv4_mapped_cidrs_are_matched_as_ipv4() {
    let p = parse("on_tcp_connect:\n  - actions: [{type: restrict-ips, config: {allow: [\"::ffff:10.0.0.0/104\", \"::ffff:192.0.2.1\"]}}]\n").unwrap();
    assert!(
        p.to_json()
            .contains(r#""allow":["10.0.0.0/8","192.0.2.1/32"]"#),
        "{}",
        p.to_json()
    );
    for peer in ["10.1.2.3", "::ffff:10.1.2.3", "192.0.2.1"] {
        assert_eq!(p.on_tcp_connect(peer.parse().unwrap()), Ok(()), "{peer}");
    }
    assert!(p.on_tcp_connect("11.0.0.1".parse().unwrap()).is_err());
}

#[tokio::test]
async fn later_rules_match_on_headers_earlier_rules_set() {
    let doc = "on_http_request:
  - actions: [{type: add-headers, config: {headers: {x-tier: free}}}]
  - match: {headers: {x-tier: free}}
    actions: [{type: deny, config: {status: 402}}]
";
    let p = parse(doc).unwrap();
    let env = Env::new();
    let r = run(
        &p,
        &env,
        "::1",
        &mut req("GET", "/", &[("x-tier", "gold")]),
        None,
    )
    .await;
    assert_eq!(
        r.map(|r| r.status().as_u16()),
        Some(402),
        "the visitor's own x-tier was replaced first"
    );
}

#[test]
fn bodies_are_buffered_only_when_a_webhook_rule_applies() {
    let some = Some(crate::WEBHOOK_BODY_LIMIT);
    let p = parse(
        "on_http_request:
  - match: { path_prefix: /hooks/, methods: [POST] }
    actions: [{type: verify-webhook, config: {scheme: stripe, secret: whsec_abc}}]
",
    )
    .unwrap();
    assert_eq!(
        p.request_body_limit(&req("POST", "/hooks/stripe", &[])),
        some
    );
    assert_eq!(
        p.request_body_limit(&req("POST", "/%68ooks/x/../stripe", &[])),
        some,
        "the path is normalized as on_http_request matches it"
    );
    assert_eq!(
        p.request_body_limit(&req("POST", "/upload", &[])),
        None,
        "other paths stream"
    );
    assert_eq!(
        p.request_body_limit(&req("GET", "/hooks/stripe", &[])),
        None,
        "other methods stream"
    );

    // Matchers see the headers earlier rules set or removed, as in on_http_request.
    let p = parse(
        "on_http_request:
  - match: { path_prefix: /in/ }
    actions: [{type: add-headers, config: {headers: {x-hook: 'yes'}}}]
  - match: { path_prefix: /out/ }
    actions: [{type: remove-headers, config: {headers: [x-hook]}}]
  - match: { headers: { x-hook: 'yes' } }
    actions: [{type: verify-webhook, config: {scheme: stripe, secret: whsec_abc}}]
  - actions: [{type: add-headers, config: {headers: {x-late: '1'}}}]
",
    )
    .unwrap();
    assert_eq!(p.request_body_limit(&req("POST", "/in/x", &[])), some);
    assert_eq!(
        p.request_body_limit(&req("POST", "/x", &[("x-hook", "yes")])),
        some
    );
    assert_eq!(
        p.request_body_limit(&req("POST", "/out/x", &[("x-hook", "yes")])),
        None
    );
    assert_eq!(p.request_body_limit(&req("POST", "/x", &[])), None);
    // The head itself is never edited.
    let head = req("POST", "/in/x", &[]);
    p.request_body_limit(&head);
    assert!(head.headers.is_empty());

    // Without a webhook rule nothing is buffered.
    let p = parse("on_http_request:\n  - actions: [{type: deny}]\n").unwrap();
    assert_eq!(p.request_body_limit(&req("POST", "/hooks/x", &[])), None);
}
