//! The OpenAPI document a real api serves at `GET /openapi.json`: no key needed, every
//! documented operation is routed and refuses a call without its key as documented, and the
//! answers checked here carry the properties their schemas name.

use burrow_e2e::Stack;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The properties schema `name` declares (following `allOf`, as for a flattened record).
fn properties(doc: &Value, name: &str) -> Vec<String> {
    let schema = &doc["components"]["schemas"][name];
    let mut props: Vec<String> = schema["properties"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        if let Some(r) = part["$ref"].as_str() {
            props.extend(properties(
                doc,
                r.trim_start_matches("#/components/schemas/"),
            ));
        }
        props.extend(
            part["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone()),
        );
    }
    props.sort();
    props
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn the_api_serves_its_openapi_document_and_routes_every_operation_in_it() {
    let stack = Stack::start().await.unwrap();
    let resp = stack
        .http
        .get(format!("{}/openapi.json", stack.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    for (path, method) in [
        ("/v1/accounts", "post"),
        ("/v1/accounts/{id}/authtokens", "get"),
        ("/v1/accounts/{id}/endpoints/{endpoint}/policy", "put"),
        ("/v1/internal/usage", "post"),
        ("/v1/webhooks/provider", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }

    // Every documented operation exists on the live api and refuses a call without a key
    // (the webhook, which takes none, refuses an unsigned event), in the documented shape.
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url_path = path
            .split('/')
            .map(|s| {
                if s.starts_with('{') {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    s.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{} {path}", method.to_uppercase());
            let resp = stack
                .http
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    format!("{}{url_path}", stack.api_url),
                )
                .send()
                .await
                .unwrap();
            let status = resp.status();
            // Keyed operations: 401. Signed ingest (no key): the provider webhook answers 400
            // to an unsigned event, certificate callbacks 401 (no valid signature).
            let expected: &[StatusCode] =
                if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                    &[StatusCode::UNAUTHORIZED]
                } else {
                    &[StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED]
                };
            assert!(expected.contains(&status), "{what}: {status}");
            assert!(
                op["responses"][status.as_str()].is_object(),
                "{what}: {status} is not documented"
            );
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"]["code"].is_string(), "{what}: {body}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} operations documented");

    // Answers carry what their schemas declare.
    let (status, me) = stack
        .call(Method::GET, "/v1/me", &stack.creds.developer_api_key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(keys(&me), properties(&doc, "Me"), "{me}");
    let (status, plans) = stack
        .call(
            Method::GET,
            "/v1/plans",
            &stack.creds.developer_api_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{plans}");
    assert_eq!(keys(&plans[0]), properties(&doc, "Plan"), "{plans}");
    assert_eq!(
        keys(&plans[0]["limits"]),
        properties(&doc, "Limits"),
        "{plans}"
    );
    let (status, refused) = stack
        .call(
            Method::GET,
            "/v1/audit",
            &stack.creds.developer_api_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(
        doc["paths"]["/v1/audit"]["get"]["responses"]["403"].is_object(),
        "403 of GET /v1/audit is not documented"
    );
    assert_eq!(keys(&refused), properties(&doc, "ErrorBody"));
}
