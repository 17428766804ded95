//! The document covers every route `lib.rs` registers, and is well formed.

use super::*;
use serde_json::Value;

/// Routes that are not part of the REST API: pages, this document, the ops probes.
fn undocumented(path: &str) -> bool {
    matches!(
        path,
        "/" | "/console" | "/openapi.json" | "/healthz" | "/readyz" | "/metrics"
    ) || path.starts_with("/runbooks/")
}

/// The (path, method) pairs `.route("<path>", <method router>)` calls in `src` register:
/// methods are the `get(`, `.post(`, ... calls at the top level of the second argument
/// (handlers and closures inside them are not looked into).
fn routes(src: &str) -> Vec<(String, String)> {
    const METHODS: &[&str] = &["get", "post", "put", "delete", "patch", "head", "options"];
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let Some(args) = rest.trim_start().strip_prefix('"') else {
            continue;
        };
        let path = &args[..args.find('"').expect("unterminated route path")];
        let mut depth = 1;
        let mut word = String::new();
        for c in args[path.len() + 1..].chars() {
            match c {
                '(' => {
                    if depth == 1 && METHODS.contains(&word.as_str()) {
                        found.push((path.to_owned(), word.clone()));
                    }
                    depth += 1;
                }
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            if c.is_alphanumeric() || c == '_' {
                word.push(c);
            } else {
                word.clear();
            }
        }
    }
    found
}

fn document() -> Value {
    let json = ApiDoc::openapi()
        .to_json()
        .expect("the document serializes");
    serde_json::from_str(&json).expect("the document is JSON")
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            ops.push((path.clone(), method.clone(), op.clone()));
        }
    }
    ops
}

#[test]
fn the_route_scan_finds_chained_and_nested_methods() {
    let src = r#"
        Router::new()
            .route("/a/{id}", post(m::create).get(m::list))
            // .route("/commented", get(m::x))
            .route(
                "/b",
                put(m::put)
                    .get(m::get)
                    .delete(m::delete),
            )
            .route("/", get(|| async { Redirect::to("/console") }))
            .route("/c", axum::routing::get(m::get_thing))
    "#;
    let found = routes(src);
    let found: Vec<(&str, &str)> = found
        .iter()
        .map(|(p, m)| (p.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("/a/{id}", "post"),
            ("/a/{id}", "get"),
            ("/b", "put"),
            ("/b", "get"),
            ("/b", "delete"),
            ("/", "get"),
            ("/c", "get"),
        ]
    );
}

#[test]
fn every_routed_operation_is_documented_and_nothing_else() {
    let routed: Vec<(String, String)> = routes(include_str!("../lib.rs"))
        .into_iter()
        .filter(|(path, _)| !undocumented(path))
        .collect();
    assert!(
        routed.len() >= 30,
        "the scan found too few routes: {routed:?}"
    );
    let doc = document();
    let missing: Vec<String> = routed
        .iter()
        .filter(|(path, method)| doc["paths"][path][method].is_null())
        .map(|(path, method)| format!("{} {path}", method.to_uppercase()))
        .collect();
    assert!(
        missing.is_empty(),
        "routed in lib.rs but not in the OpenAPI document (add #[utoipa::path] to the \
         handler and list it in ApiDoc's paths): {missing:?}"
    );
    let stale: Vec<String> = operations(&doc)
        .into_iter()
        .filter(|(path, method, _)| !routed.contains(&(path.clone(), method.clone())))
        .map(|(path, method, _)| format!("{} {path}", method.to_uppercase()))
        .collect();
    assert!(stale.is_empty(), "documented but not routed: {stale:?}");
}

#[test]
fn the_document_is_openapi_3() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "{version}");
    assert_eq!(doc["info"]["title"], "Burrow API");
    for scheme in ["api_key", "internal_key"] {
        assert_eq!(
            doc["components"]["securitySchemes"][scheme]["scheme"], "bearer",
            "{scheme}"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[test]
fn every_operation_is_tagged_secured_and_declares_its_path_parameters() {
    let known: Vec<String> = document()["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().expect("tag name").to_owned())
        .collect();
    for (path, method, op) in operations(&document()) {
        let what = format!("{} {path}", method.to_uppercase());
        let tags = op["tags"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no tag"));
        assert_eq!(tags.len(), 1, "{what}: one tag");
        let tag = tags[0].as_str().expect("tag");
        assert!(known.iter().any(|k| k == tag), "{what}: unknown tag {tag}");
        let schemes: Vec<&str> = op["security"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r.as_object().expect("requirement").keys())
            .map(String::as_str)
            .collect();
        let expected: &[&str] = if path.starts_with("/v1/internal/") {
            assert_eq!(tag, "internal", "{what}");
            &["internal_key"]
        } else if path.starts_with("/v1/webhooks/") || path == "/v1/cert-callbacks" {
            // Signed senders, no API key.
            &[]
        } else {
            &["api_key"]
        };
        assert_eq!(schemes, expected, "{what}: security");
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().expect("parameter name"))
            .collect();
        let templated: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, templated, "{what}: path parameters");
        assert!(
            op["responses"]
                .as_object()
                .is_some_and(|r| r.keys().any(|k| k.starts_with('2'))),
            "{what}: no success response"
        );
    }
}

#[test]
fn optional_bodies_may_be_left_out_but_are_not_null() {
    let doc = document();
    for (path, method) in [
        ("/v1/accounts/{id}/authtokens", "post"),
        ("/v1/ops/dead-letters/replay-all", "post"),
        ("/v1/users/{id}/api-keys", "post"),
    ] {
        let body = &doc["paths"][path][method]["requestBody"];
        assert_ne!(body["required"], true, "{method} {path}: {body}");
        assert!(
            body["content"]["application/json"]["schema"]["$ref"].is_string(),
            "{method} {path}: {body}"
        );
    }
}

#[test]
fn the_documented_batch_size_is_the_enforced_one() {
    let schemas = &document()["components"]["schemas"];
    assert_eq!(
        schemas["UsageBatch"]["properties"]["records"]["maxItems"],
        usage::MAX_RECORDS
    );
}

#[test]
fn operation_ids_are_unique() {
    let mut ids: Vec<String> = operations(&document())
        .into_iter()
        .map(|(path, method, op)| {
            op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no operationId"))
                .to_owned()
        })
        .collect();
    ids.sort();
    let mut repeated = ids.clone();
    repeated.dedup();
    assert_eq!(
        ids, repeated,
        "operationIds repeat: give the handlers' #[utoipa::path] an `operation_id`"
    );
}

#[test]
fn the_policy_put_documents_its_text_content_types() {
    let doc = document();
    let body = &doc["paths"]["/v1/accounts/{id}/endpoints/{endpoint}/policy"]["put"]["requestBody"]
        ["content"];
    for content_type in policies::CONTENT_TYPES {
        assert!(body[content_type].is_object(), "{content_type}: {body}");
    }
}
