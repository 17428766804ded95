//! Every validation error names the field path and the line, in YAML and in JSON.

use crate::parse;

/// Parses `doc` and asserts the error's field, line and a part of its message.
#[track_caller]
pub(super) fn refused(doc: &str, field: &str, line: usize, message: &str) {
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

pub(super) const ACT: &str = "on_http_request:\n  - actions:\n      - type: ";

/// A one-action request rule whose action is `kind` with `config` (flow YAML) on line 4.
pub(super) fn one(kind: &str, config: &str) -> String {
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
    let big = "#\n".repeat(crate::MAX_DOCUMENT_BYTES);
    refused(
        &big,
        "(document)",
        crate::MAX_DOCUMENT_BYTES / 2 + 1,
        "larger than 262144 bytes",
    );
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
