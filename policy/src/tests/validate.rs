//! Every validation error names the field path and the line, in YAML and in JSON.

use crate::parse;

/// Parses `doc` and asserts the error's field, line and a part of its message.
#[track_caller]
fn refused(doc: &str, field: &str, line: usize, message: &str) {
    let e = match parse(doc) {
        Ok(p) => panic!("accepted: {}", p.to_json()),
        Err(e) => e,
    };
    assert_eq!((e.field.as_str(), e.line), (field, Some(line)), "{e}");
    assert!(
        e.message.contains(message),
        "{e:?} does not mention {message:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("line {line}: {field}: {}", e.message)
    );
}

const ACT: &str = "on_http_request:\n  - actions:\n      - type: ";

/// A one-action request rule whose action is `kind` with `config` (flow YAML) on line 4.
fn one(kind: &str, config: &str) -> String {
    format!("{ACT}{kind}\n        config: {config}\n")
}

#[test]
fn document_level_errors() {
    refused(
        "on_tcp_connect: []\nbogus: 1\n",
        "bogus",
        2,
        "unknown field `bogus`; expected one of: version",
    );
    refused("version: 2\n", "version", 1, "only 1 is accepted");
    refused(
        "version: \"1\"\n",
        "version",
        1,
        "expected a non-negative integer",
    );
    refused("- a\n", "(document)", 1, "expected a mapping, found a list");
    refused("", "(document)", 1, "empty");
    refused(
        "on_http_request:\n  - actions: [\n",
        "on_http_request[0].actions[0]",
        2,
        "invalid YAML/JSON",
    );
    refused(
        "on_http_request: {}\n",
        "on_http_request",
        1,
        "expected a list, found a mapping",
    );
    refused(
        "on_http_request:\n  - name: a\n",
        "on_http_request[0]",
        2,
        "missing field `actions`",
    );
    refused(
        "on_http_request:\n  - actions: []\n",
        "on_http_request[0].actions",
        2,
        "at least one action",
    );
    refused(
        "on_http_request:\n  - actions: [{type: deny}]\n    actions: [{type: deny}]\n",
        "on_http_request[0].actions",
        3,
        "duplicate field",
    );
    refused(
        "on_http_request:\n  - name: \"a\\u0001\"\n    actions: [{type: deny}]\n",
        "on_http_request[0].name",
        2,
        "printable ASCII",
    );
    let big = format!("# {}\n", "x".repeat(crate::MAX_DOCUMENT_BYTES));
    assert!(parse(&big).unwrap_err().message.contains("larger than"));
}

#[test]
fn action_type_and_phase_errors() {
    refused(
        &format!("{ACT}nope\n"),
        "on_http_request[0].actions[0].type",
        3,
        "unknown action type `nope`; expected one of: restrict-ips",
    );
    refused(
        "on_tcp_connect:\n  - actions:\n      - type: basic-auth\n        config: {credentials: [\"a:b\"]}\n",
        "on_tcp_connect[0].actions[0].type",
        3,
        "`basic-auth` is not allowed in on_tcp_connect; it is allowed in on_http_request",
    );
    refused(
        "on_http_response:\n  - actions:\n      - type: add-headers\n        config: {headers: {a: b}}\n      - type: rate-limit\n",
        "on_http_response[0].actions[1].type",
        5,
        "allowed in on_http_request",
    );
    refused(
        "on_http_response:\n  - actions:\n      - type: custom-response\n        config: {status: 200}\n      - type: restrict-ips\n",
        "on_http_response[0].actions[1].type",
        5,
        "it is allowed in on_tcp_connect and on_http_request",
    );
    refused(
        &format!("{ACT}deny\n        extra: 1\n"),
        "on_http_request[0].actions[0].extra",
        4,
        "expected one of: type, config",
    );
    refused(
        &format!("{ACT}basic-auth\n"),
        "on_http_request[0].actions[0]",
        3,
        "`basic-auth` needs a `config`",
    );
    refused(
        "on_tcp_connect:\n  - match: {path_prefix: /}\n    actions: [{type: restrict-ips, config: {allow: [\"::1\"]}}]\n",
        "on_tcp_connect[0].match",
        2,
        "cannot have `match`",
    );
}

#[test]
fn matcher_errors() {
    let m = |m: &str| format!("on_http_request:\n  - match: {m}\n    actions: [{{type: deny}}]\n");
    refused(
        &m("{path: /x}"),
        "on_http_request[0].match.path",
        2,
        "unknown field `path`",
    );
    refused(
        &m("{path_prefix: admin}"),
        "on_http_request[0].match.path_prefix",
        2,
        "must start with `/`",
    );
    refused(
        &m("{methods: [\"GE T\"]}"),
        "on_http_request[0].match.methods[0]",
        2,
        "not an HTTP method",
    );
    refused(
        &m("{headers: {\"bad name\": x}}"),
        "on_http_request[0].match.headers.bad name",
        2,
        "not a valid header name",
    );
    refused(
        &m("{headers: {x-a: \"\\n\"}}"),
        "on_http_request[0].match.headers.x-a",
        2,
        "printable ASCII",
    );
    refused(
        &m("{status_codes: [200]}"),
        "on_http_request[0].match.status_codes",
        2,
        "only applies in on_http_response",
    );
    refused(
        "on_http_response:\n  - match: {status_codes: [200, 600]}\n    actions: [{type: remove-headers, config: {headers: [server]}}]\n",
        "on_http_response[0].match.status_codes[1]",
        2,
        "between 100 and 599",
    );
}

#[test]
fn restrict_ips_errors() {
    refused(
        &one("restrict-ips", "{allow: [\"10.0.0.0/8\", \"10.0.0.0/33\"]}"),
        "on_http_request[0].actions[0].config.allow[1]",
        4,
        "not a CIDR",
    );
    refused(
        &one("restrict-ips", "{deny: [\"10.1.2.3/8\"]}"),
        "on_http_request[0].actions[0].config.deny[0]",
        4,
        "did you mean `10.0.0.0/8`",
    );
    refused(
        &one("restrict-ips", "{}"),
        "on_http_request[0].actions[0].config",
        4,
        "give `allow`, `deny` or both",
    );
    refused(
        &one("restrict-ips", "{allowed: []}"),
        "on_http_request[0].actions[0].config.allowed",
        4,
        "unknown field `allowed`; expected one of: allow, deny",
    );
    // Block style: the error points at the item's own line.
    let doc = format!(
        "{ACT}restrict-ips\n        config:\n          allow:\n            - 10.0.0.0/8\n            - nope\n"
    );
    refused(
        &doc,
        "on_http_request[0].actions[0].config.allow[1]",
        7,
        "not a CIDR",
    );
}

#[test]
fn basic_auth_errors() {
    refused(
        &one("basic-auth", "{credentials: []}"),
        "on_http_request[0].actions[0].config.credentials",
        4,
        "at least one",
    );
    refused(
        &one("basic-auth", "{credentials: [\"alice\"]}"),
        "on_http_request[0].actions[0].config.credentials[0]",
        4,
        "user:password",
    );
    refused(
        &one("basic-auth", "{credentials: [\":x\"]}"),
        "on_http_request[0].actions[0].config.credentials[0]",
        4,
        "non-empty user",
    );
    refused(
        &one("basic-auth", "{credentials: [\"a:\"]}"),
        "on_http_request[0].actions[0].config.credentials[0]",
        4,
        "password",
    );
    refused(
        &one("basic-auth", "{credentials: [\"a:b\"], realm: 'a\"b'}"),
        "on_http_request[0].actions[0].config.realm",
        4,
        "without",
    );
    refused(
        &one("basic-auth", "{realm: x}"),
        "on_http_request[0].actions[0].config",
        4,
        "missing field `credentials`",
    );
}

#[test]
fn jwt_errors() {
    let p = "on_http_request[0].actions[0].config";
    refused(
        &one("jwt-validation", "{}"),
        p,
        4,
        "missing field `jwks_url`",
    );
    refused(
        &one("jwt-validation", "{jwks_url: \"http://idp.example/jwks\"}"),
        &format!("{p}.jwks_url"),
        4,
        "https://",
    );
    refused(
        &one("jwt-validation", "{jwks_url: \"nope\"}"),
        &format!("{p}.jwks_url"),
        4,
        "https://",
    );
    let ok = "jwks_url: \"https://idp.example/jwks\"";
    refused(
        &one("jwt-validation", &format!("{{{ok}, algorithms: [HS256]}}")),
        &format!("{p}.algorithms[0]"),
        4,
        "symmetric",
    );
    refused(
        &one(
            "jwt-validation",
            &format!("{{{ok}, algorithms: [RS256, XX1]}}"),
        ),
        &format!("{p}.algorithms[1]"),
        4,
        "unknown algorithm",
    );
    refused(
        &one("jwt-validation", &format!("{{{ok}, leeway_secs: 4000}}")),
        &format!("{p}.leeway_secs"),
        4,
        "between 0 and 3600",
    );
    refused(
        &one("jwt-validation", &format!("{{{ok}, header: \"a b\"}}")),
        &format!("{p}.header"),
        4,
        "header name",
    );
    refused(
        &one("jwt-validation", &format!("{{{ok}, audience: x}}")),
        &format!("{p}.audience"),
        4,
        "unknown field",
    );
}

#[test]
fn rate_limit_errors() {
    let p = "on_http_request[0].actions[0].config";
    let rl = |extra: &str| {
        one(
            "rate-limit",
            &format!("{{name: api, capacity: 10, window: 1m{extra}}}"),
        )
    };
    refused(
        &one("rate-limit", "{name: api, capacity: 0, window: 1m}"),
        &format!("{p}.capacity"),
        4,
        "between 1 and",
    );
    refused(
        &one("rate-limit", "{name: api, capacity: -1, window: 1m}"),
        &format!("{p}.capacity"),
        4,
        "non-negative integer",
    );
    for bad in ["1", "0s", "1d", "m", "1.5m", "25h", "99999999999999999999h"] {
        refused(
            &one(
                "rate-limit",
                &format!("{{name: api, capacity: 1, window: \"{bad}\"}}"),
            ),
            &format!("{p}.window"),
            4,
            "not a window",
        );
    }
    refused(
        &one("rate-limit", "{name: \"a b\", capacity: 1, window: 1m}"),
        &format!("{p}.name"),
        4,
        "letters, digits",
    );
    refused(
        &rl(", key: cookie"),
        &format!("{p}.key"),
        4,
        "expected `ip` or `header:<name>`",
    );
    refused(
        &rl(", key: \"header:a b\""),
        &format!("{p}.key"),
        4,
        "header name",
    );
    refused(
        &one("rate-limit", "{capacity: 1, window: 1m}"),
        p,
        4,
        "missing field `name`",
    );
}

#[test]
fn header_action_errors() {
    let p = "on_http_request[0].actions[0].config";
    refused(
        &one("add-headers", "{headers: {}}"),
        &format!("{p}.headers"),
        4,
        "list 1 to",
    );
    refused(
        &one("add-headers", "{headers: {content-length: 5}}"),
        &format!("{p}.headers.content-length"),
        4,
        "cannot be set",
    );
    refused(
        &one("add-headers", "{headers: {x-burrow-endpoint: a}}"),
        &format!("{p}.headers.x-burrow-endpoint"),
        4,
        "cannot be set",
    );
    refused(
        &one("add-headers", "{headers: {x-a: 1, X-A: 2}}"),
        &format!("{p}.headers.X-A"),
        4,
        "duplicate key",
    );
    refused(
        &one("add-headers", "{headers: {x-a: [1]}}"),
        &format!("{p}.headers.x-a"),
        4,
        "expected a string",
    );
    refused(
        &one("remove-headers", "{headers: []}"),
        &format!("{p}.headers"),
        4,
        "at least one",
    );
    refused(
        &one("remove-headers", "{headers: [ok, \"no pe\"]}"),
        &format!("{p}.headers[1]"),
        4,
        "header name",
    );
    refused(
        &one("remove-headers", "{headers: [x-burrow-endpoint]}"),
        &format!("{p}.headers[0]"),
        4,
        "belong to Burrow",
    );
}

#[test]
fn webhook_errors() {
    let p = "on_http_request[0].actions[0].config";
    refused(
        &one("verify-webhook", "{scheme: github, secret: x}"),
        &format!("{p}.scheme"),
        4,
        "unknown scheme `github`",
    );
    refused(
        &one("verify-webhook", "{scheme: standard, secret: nope}"),
        &format!("{p}.secret"),
        4,
        "whsec_",
    );
    refused(
        &one("verify-webhook", "{scheme: stripe, secret: \"\"}"),
        &format!("{p}.secret"),
        4,
        "must not be empty",
    );
    refused(
        &one(
            "verify-webhook",
            "{scheme: stripe, secret: x, tolerance_secs: 0}",
        ),
        &format!("{p}.tolerance_secs"),
        4,
        "between 1",
    );
}

#[test]
fn response_action_errors() {
    let p = "on_http_request[0].actions[0].config";
    refused(
        &one("deny", "{status: 200}"),
        &format!("{p}.status"),
        4,
        "between 400 and 599",
    );
    refused(
        &one("deny", "{status: 403, reason: x}"),
        &format!("{p}.reason"),
        4,
        "expected one of: status, body",
    );
    refused(
        &one("custom-response", "{body: x}"),
        p,
        4,
        "missing field `status`",
    );
    refused(
        &one("custom-response", "{status: 600}"),
        &format!("{p}.status"),
        4,
        "between 200 and 599",
    );
    refused(
        &one(
            "custom-response",
            "{status: 200, headers: {transfer-encoding: x}}",
        ),
        &format!("{p}.headers.transfer-encoding"),
        4,
        "cannot be set",
    );
    refused(
        &one("redirect", "{to: \"ftp://x/\"}"),
        &format!("{p}.to"),
        4,
        "absolute http(s) URL",
    );
    refused(
        &one("redirect", "{to: \"//evil.example\"}"),
        &format!("{p}.to"),
        4,
        "absolute http(s) URL",
    );
    refused(
        &one("redirect", "{to: relative}"),
        &format!("{p}.to"),
        4,
        "path starting with `/`",
    );
    refused(
        &one("redirect", "{to: /new, status: 200}"),
        &format!("{p}.status"),
        4,
        "301, 302, 303, 307 or 308",
    );
}

#[test]
fn json_errors_have_lines_too() {
    let doc = r#"{
  "on_http_request": [
    {
      "actions": [
        {"type": "rate-limit", "config": {"name": "api", "capacity": 10, "window": "1m"}},
        {"type": "restrict-ips", "config": {"allow": ["10.0.0.0/8",
                                                     "300.0.0.0/8"]}}
      ]
    }
  ]
}"#;
    refused(
        doc,
        "on_http_request[0].actions[1].config.allow[1]",
        7,
        "not a CIDR",
    );
    refused(
        "{\"on_http_request\": [{\"actions\": [{\"type\": \"deny\"}]}",
        "on_http_request[1]",
        1,
        "invalid YAML/JSON",
    );
    refused(
        "{\n\"version\": 1,\n\"on_http_request\": [{\"actoins\": []}]\n}",
        "on_http_request[0].actoins",
        3,
        "unknown field",
    );
    refused(
        "{\"on_http_request\": [{\"actions\": [{\"type\": \"rate-limit\", \"config\": {\"name\": \"a\", \"capacity\": \"10\", \"window\": \"1m\"}}]}]}",
        "on_http_request[0].actions[0].config.capacity",
        1,
        "non-negative integer",
    );
}
