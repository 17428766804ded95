//! Validation errors of each action's `config`: field path and line.

use super::validate::{ACT, one, refused};

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
    // Plain http only to a loopback address literal or `localhost`, never to a name that
    // merely looks like one.
    for url in [
        "http://127.evil.example/jwks",
        "http://127.0.0.1.evil.example/jwks",
        "http://localhost.evil.example/jwks",
        "http://127.0.0.1@evil.example/jwks",
        "http://127.1/jwks",
        "http://0x7f.0.0.1/jwks",
        "http://[::ffff:10.0.0.1]/jwks",
        "http://10.0.0.1/jwks",
        "http://[fe80::1]/jwks",
    ] {
        refused(
            &one("jwt-validation", &format!("{{jwks_url: \"{url}\"}}")),
            &format!("{p}.jwks_url"),
            4,
            "https://",
        );
    }
    for url in [
        "http://127.0.0.1:8080/jwks",
        "http://127.9.8.7/jwks",
        "http://[::1]:8080/jwks",
        "http://localhost/jwks",
        "http://LOCALHOST:1/jwks",
        "https://10.0.0.1/jwks",
    ] {
        let doc = one("jwt-validation", &format!("{{jwks_url: \"{url}\"}}"));
        assert!(crate::parse(&doc).is_ok(), "{url} refused");
    }
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
    let many: Vec<String> = (0..101).map(|i| format!("x-h{i}: v")).collect();
    refused(
        &one(
            "add-headers",
            &format!("{{headers: {{{}}}}}", many.join(", ")),
        ),
        &format!("{p}.headers"),
        4,
        "at most 100 entries",
    );
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
