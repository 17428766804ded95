//! Traffic policies over REST: versions per endpoint, YAML and JSON, refusals naming field and
//! line, endpoints held by another account, and another tenant's key refused with nothing
//! changed.

use super::*;

const OFFICE_ONLY: &str = "on_http_request:
  - name: office-only
    actions:
      - type: restrict-ips
        config:
          allow: [\"10.0.0.0/8\"]
";

/// Line 4 names an action type that does not exist.
const UNKNOWN_ACTION: &str = "on_http_request:
  - name: office-only
    actions:
      - type: teleport
";

async fn version_of(stack: &Stack, account: &str, endpoint: &str) -> Option<i64> {
    let (status, body) = stack
        .call(
            Method::GET,
            &format!("/v1/accounts/{account}/endpoints/{endpoint}/policy"),
            &stack.creds.admin_api_key,
            None,
        )
        .await
        .unwrap();
    match status {
        StatusCode::OK => Some(body["version"].as_i64().unwrap()),
        StatusCode::NOT_FOUND => None,
        other => panic!("{other}: {body}"),
    }
}

#[tokio::test]
async fn policies_are_validated_versioned_and_kept_to_their_account() {
    let stack = Stack::start().await.unwrap();
    let a = tenant(&stack, "policy-a").await;
    let b = tenant(&stack, "policy-b").await;
    let path = format!("/v1/accounts/{}/endpoints/demo/policy", a.id);

    // No policy yet: a 404 that says so.
    let (status, e) = stack.call(Method::GET, &path, &a.key, None).await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no traffic policy"),
        "{e}"
    );

    // YAML in, canonical JSON out; every change bumps the version.
    let (status, put) = put_policy(
        &stack,
        &a.id,
        "demo",
        &a.key,
        "application/yaml",
        OFFICE_ONLY,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["endpoint"], "demo");
    assert_eq!(put["version"], 1);
    assert!(put["document"].is_object(), "{put}");
    assert!(put["document"].to_string().contains("10.0.0.0/8"), "{put}");
    assert!(put["updated_at"].as_str().is_some(), "{put}");
    let json_doc = serde_json::to_string(&put["document"]).unwrap();
    let (status, put) =
        put_policy(&stack, &a.id, "demo", &a.key, "application/json", &json_doc).await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["version"], 2);
    let (status, got) = stack.call(Method::GET, &path, &a.key, None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["version"], 2);
    assert_eq!(got["source"], json_doc.as_str());
    assert_eq!(got["document"], put["document"]);

    // A refused document: 422 naming the field and the line; nothing changes.
    let (status, e) = put_policy(&stack, &a.id, "demo", &a.key, "text/yaml", UNKNOWN_ACTION).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["code"], "invalid_policy", "{e}");
    assert_eq!(e["error"]["line"], 4, "{e}");
    let field = e["error"]["field"].as_str().unwrap();
    assert!(field.starts_with("on_http_request[0].actions[0]"), "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("line 4: ") && message.contains(field),
        "{e}"
    );
    assert_eq!(version_of(&stack, &a.id, "demo").await, Some(2));
    let (status, e) = put_policy(&stack, &a.id, "demo", &a.key, "image/png", OFFICE_ONLY).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{e}");

    // Endpoints: labels, custom domains and tcp-<port>; anything else is a 422.
    for ok in ["tcp-20001", "shop.example.com"] {
        let (status, e) = put_policy(&stack, &a.id, ok, &a.key, "text/plain", OFFICE_ONLY).await;
        assert_eq!(status, StatusCode::OK, "{ok}: {e}");
        assert_eq!(e["version"], 1, "{e}");
    }
    for bad in ["Bad_Name", "tcp-70000", "x.burrow.localhost"] {
        let (status, e) = put_policy(&stack, &a.id, bad, &a.key, "text/plain", OFFICE_ONLY).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {e}");
        assert_eq!(e["error"]["code"], "invalid_endpoint", "{e}");
    }

    // A name B reserved is B's: A's policy for it is a 409 and nothing is stored.
    let (status, e) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{}/reserved-names", b.id),
            &b.key,
            Some(json!({"name": "bees"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{e}");
    let (status, e) = put_policy(&stack, &a.id, "bees", &a.key, "text/yaml", OFFICE_ONLY).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    assert_eq!(version_of(&stack, &a.id, "bees").await, None);
    let (status, e) = put_policy(&stack, &b.id, "bees", &b.key, "text/yaml", OFFICE_ONLY).await;
    assert_eq!(status, StatusCode::OK, "{e}");

    // B's key on A's policy routes: 403 each, nothing changes.
    let (status, e) = put_policy(&stack, &a.id, "demo", &b.key, "text/yaml", OFFICE_ONLY).await;
    assert_forbidden(status, &e, &a.id);
    let (status, e) = stack.call(Method::GET, &path, &b.key, None).await.unwrap();
    assert_forbidden(status, &e, &a.id);
    let (status, e) = stack
        .call(Method::DELETE, &path, &b.key, None)
        .await
        .unwrap();
    assert_forbidden(status, &e, &a.id);
    assert_eq!(version_of(&stack, &a.id, "demo").await, Some(2));

    // Removal, then a new policy: the version keeps counting (3 was the removal).
    let (status, e) = stack
        .call(Method::DELETE, &path, &a.key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{e}");
    assert_eq!(version_of(&stack, &a.id, "demo").await, None);
    let (status, e) = stack
        .call(Method::DELETE, &path, &a.key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
    let (status, put) = put_policy(&stack, &a.id, "demo", &a.key, "text/yaml", OFFICE_ONLY).await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["version"], 4);

    let db = stack.db().await.unwrap();
    let history: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT version, document IS NULL FROM endpoint_policy_versions
         WHERE account_id = $1::uuid AND endpoint = 'demo' ORDER BY version",
    )
    .bind(&a.id)
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(history, [(1, false), (2, false), (3, true), (4, false)]);

    let put = audit_outcomes(&stack, "policy.put").await;
    for outcome in [
        "ok",
        "invalid_policy",
        "invalid_endpoint",
        "conflict",
        "forbidden",
    ] {
        assert!(put.iter().any(|o| o == outcome), "{outcome}: {put:?}");
    }
}

#[tokio::test]
async fn an_account_holds_policies_for_at_most_a_thousand_endpoints() {
    let stack = Stack::start().await.unwrap();
    let a = tenant(&stack, "policy-cap").await;
    // 1000 endpoints with a policy already (written straight to the table: the cap is what is
    // tested, not a thousand PUTs).
    let db = stack.db().await.unwrap();
    sqlx::query(
        "INSERT INTO endpoint_policies (account_id, endpoint, version, source, document)
         SELECT $1::uuid, 'cap-' || n, 1, '{}', '{}'::jsonb FROM generate_series(1, 1000) n",
    )
    .bind(&a.id)
    .execute(&db)
    .await
    .unwrap();
    let (status, e) = put_policy(
        &stack,
        &a.id,
        "one-more",
        &a.key,
        "application/yaml",
        OFFICE_ONLY,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1000 endpoints; this one has 1000"),
        "{e}"
    );
    // Replacing one of them is not a new endpoint.
    let (status, e) = put_policy(
        &stack,
        &a.id,
        "cap-7",
        &a.key,
        "application/yaml",
        OFFICE_ONLY,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{e}");
}
