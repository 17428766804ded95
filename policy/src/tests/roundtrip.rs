//! Canonical JSON: every example parses, `parse(to_json())` is the same policy, and `parse`
//! never panics on arbitrary text.

use proptest::prelude::*;

use crate::parse;

/// The full example from docs/policy.md, every action once.
pub(super) const FULL: &str = r#"
version: 1
on_tcp_connect:
  - name: office only
    actions:
      - type: restrict-ips
        config: { allow: ["10.0.0.0/8", "::1/128", 192.168.1.7], deny: ["10.9.0.0/16"] }
on_http_request:
  - name: admin
    match: { path_prefix: "/admin", methods: ["get", "POST"], headers: { X-Env: "prod" } }
    actions:
      - type: restrict-ips
        config: { allow: ["10.0.0.0/8"] }
      - type: basic-auth
        config: { credentials: ["alice:s3cret"], realm: "burrow" }
      - type: jwt-validation
        config:
          jwks_url: https://idp.example.com/.well-known/jwks.json
          issuer: https://idp.example.com/
          audiences: [api]
          algorithms: [RS256, ES256]
          header: authorization
          leeway_secs: 30
      - type: rate-limit
        config: { name: api, capacity: 10, window: 60s, key: "header:x-api-key" }
      - type: add-headers
        config: { headers: { x-from: burrow, x-version: 2 } }
      - type: remove-headers
        config: { headers: [cookie] }
  - match: { path_prefix: /hooks/stripe }
    actions:
      - type: verify-webhook
        config: { scheme: stripe, secret: whsec_abc, tolerance_secs: 300 }
  - match: { path_prefix: /hooks/std }
    actions:
      - type: verify-webhook
        config: { scheme: standard, secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
  - match: { path_prefix: /old }
    actions:
      - type: redirect
        config: { to: "https://example.com/new", status: 301 }
  - match: { path_prefix: /teapot }
    actions:
      - type: custom-response
        config: { status: 418, body: "short and stout", headers: { content-type: text/plain } }
  - match: { path_prefix: /private }
    actions:
      - type: deny
  - actions:
      - type: deny
        config: { status: 451, body: "unavailable" }
on_http_response:
  - match: { status_codes: [500, 502], headers: { x-debug: "1" } }
    actions:
      - type: remove-headers
        config: { headers: [server] }
      - type: add-headers
        config: { headers: { cache-control: no-store } }
      - type: custom-response
        config: { status: 503, body: "try again" }
"#;

#[test]
fn full_example_round_trips_and_is_canonical() {
    let p = parse(FULL).unwrap();
    let json = p.to_json();
    let again = parse(&json).unwrap();
    assert_eq!(again, p);
    assert_eq!(again.to_json(), json, "canonical JSON is a fixed point");
    for expect in [
        r#""version":1"#,
        r#""allow":["10.0.0.0/8","::1/128","192.168.1.7/32"]"#,
        r#""methods":["GET","POST"]"#,
        r#""headers":{"x-env":"prod"}"#,
        r#""window":"1m""#,
        r#""key":"header:x-api-key""#,
        r#""x-version":"2""#,
        r#"{"type":"deny","config":{}}"#,
    ] {
        assert!(json.contains(expect), "{expect} not in {json}");
    }
    let head = |method: &str, path: &str| super::actions::req(method, path, &[]);
    let limit = Some(crate::WEBHOOK_BODY_LIMIT);
    assert_eq!(p.request_body_limit(&head("POST", "/hooks/stripe")), limit);
    assert_eq!(p.request_body_limit(&head("GET", "/hooks/std/x")), limit);
    assert_eq!(p.request_body_limit(&head("POST", "/teapot")), None);
    assert!(p.has_tcp_rules() && p.has_request_rules() && p.has_response_rules());
    let debug = format!("{p:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("whsec_abc"),
        "secrets are masked in Debug"
    );
}

#[test]
fn empty_document_is_a_valid_policy() {
    let p = parse("{}").unwrap();
    assert_eq!(p.to_json(), r#"{"version":1}"#);
    assert_eq!(
        p.request_body_limit(&super::actions::req("POST", "/", &[])),
        None
    );
    assert_eq!(parse("version: 1\non_http_request: []\n").unwrap(), p);
}

#[test]
fn docs_examples_parse() {
    // Every ```yaml block of the user reference must be a valid policy.
    let doc = include_str!("../../../docs/policy.md");
    let mut blocks = 0;
    for block in doc.split("```yaml\n").skip(1) {
        let text = block.split("```").next().unwrap_or_default();
        if let Err(e) = parse(text) {
            panic!("docs/policy.md example {blocks} does not parse: {e}\n{text}");
        }
        blocks += 1;
    }
    assert!(blocks >= 5, "found {blocks} examples");
}

fn cidr() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, l)| ipnet::Ipv4Net::new(a.into(), l)
            .unwrap()
            .trunc()
            .to_string()),
        (any::<[u16; 8]>(), 0u8..=128).prop_map(|(a, l)| ipnet::Ipv6Net::new(a.into(), l)
            .unwrap()
            .trunc()
            .to_string()),
    ]
}

fn token() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}"
}

fn action() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(cidr(), 1..4).prop_map(|a| format!(r#"{{"type":"restrict-ips","config":{{"allow":{a:?}}}}}"#)),
        ("[a-z]{1,8}", "[!-~&&[^\"\\\\]]{1,12}").prop_map(|(u, p)| format!(r#"{{"type":"basic-auth","config":{{"credentials":["{u}:{p}"]}}}}"#)),
        (token(), 1u64..1000, 1u64..24, prop::sample::select(vec!["s", "m", "h"]))
            .prop_map(|(n, c, w, u)| format!(r#"{{"type":"rate-limit","config":{{"name":"{n}","capacity":{c},"window":"{w}{u}"}}}}"#)),
        (token(), "[ -~&&[^\"\\\\]]{0,20}").prop_map(|(k, v)| format!(r#"{{"type":"add-headers","config":{{"headers":{{"x-{k}":"{v}"}}}}}}"#)),
        token().prop_map(|k| format!(r#"{{"type":"remove-headers","config":{{"headers":["{k}"]}}}}"#)),
        (400u16..600).prop_map(|s| format!(r#"{{"type":"deny","config":{{"status":{s}}}}}"#)),
        (200u16..600, "[a-z ]{0,20}").prop_map(|(s, b)| format!(r#"{{"type":"custom-response","config":{{"status":{s},"body":"{b}"}}}}"#)),
        token().prop_map(|p| format!(r#"{{"type":"redirect","config":{{"to":"/{p}"}}}}"#)),
    ]
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC{0,200}") {
        let _ = parse(&text);
    }

    #[test]
    fn parse_never_panics_on_yamlish_text(text in "[-:{}\\[\\], \"'\n a-z0-9#&*!|>?%@`]{0,120}") {
        if let Err(e) = parse(&text) {
            prop_assert!(!e.field.is_empty());
        }
    }

    #[test]
    fn generated_documents_round_trip(
        rules in prop::collection::vec((prop::option::of("[a-z ]{1,10}"), prop::option::of("/[a-z]{0,6}"), prop::collection::vec(action(), 1..4)), 0..4),
        tcp in prop::option::of(prop::collection::vec(cidr(), 1..4)),
        response in prop::option::of((prop::collection::vec(100u16..600, 0..3), token(), 200u16..600)),
    ) {
        let rules: Vec<String> = rules
            .into_iter()
            .map(|(name, prefix, actions)| {
                let name = name.map(|n| format!(r#""name":"{n}","#)).unwrap_or_default();
                let m = prefix.map(|p| format!(r#""match":{{"path_prefix":"{p}"}},"#)).unwrap_or_default();
                format!(r#"{{{name}{m}"actions":[{}]}}"#, actions.join(","))
            })
            .collect();
        let mut doc = format!(r#"{{"on_http_request":[{}]"#, rules.join(","));
        if let Some(deny) = tcp {
            doc += &format!(r#","on_tcp_connect":[{{"actions":[{{"type":"restrict-ips","config":{{"deny":{deny:?}}}}}]}}]"#);
        }
        if let Some((codes, header, status)) = response {
            doc += &format!(
                r#","on_http_response":[{{"match":{{"status_codes":{codes:?},"headers":{{"{header}":"x"}}}},"actions":[{{"type":"remove-headers","config":{{"headers":["{header}"]}}}},{{"type":"custom-response","config":{{"status":{status}}}}}]}}]"#
            );
        }
        doc += "}";
        let p = parse(&doc).map_err(|e| TestCaseError::fail(format!("{e}\n{doc}")))?;
        let again = parse(&p.to_json()).map_err(|e| TestCaseError::fail(format!("{e}\n{}", p.to_json())))?;
        prop_assert_eq!(&again, &p);
        prop_assert_eq!(again.to_json(), p.to_json());
    }
}

#[test]
fn tab_indented_json_with_escapes_parses() {
    let doc = "{\n\t\"on_http_request\": [\n\t\t{\n\t\t\t\"name\": \"caf\\u00e9 \\\"x\\\"\",\n\t\t\t\"actions\": [{\"type\": \"deny\"}]\n\t\t}\n\t]\n}\n";
    let e = parse(doc).unwrap_err();
    // Non-ASCII names cannot be header values: refused, and on the right line.
    assert_eq!(
        (e.field.as_str(), e.line),
        ("on_http_request[0].name", Some(4)),
        "{e}"
    );
    let p = parse(&doc.replace("\\u00e9", "e")).unwrap();
    assert!(
        p.to_json().contains(r#""name":"cafe \"x\"""#),
        "{}",
        p.to_json()
    );
}

#[test]
fn crlf_and_byte_order_mark_are_accepted_with_lines_intact() {
    let doc = "\u{feff}on_http_request:\r\n  - actions:\r\n      - type: deny\r\n        config: {status: 200}\r\n";
    let e = parse(doc).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.line),
        ("on_http_request[0].actions[0].config.status", Some(4)),
        "{e}"
    );
    assert!(parse(&doc.replace("200", "404")).is_ok());
}
