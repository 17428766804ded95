//! Accounts, authtokens and API keys over REST: secrets shown once, roles enforced, and every
//! client error a JSON 4xx naming what was wrong.

use burrow_e2e::Stack;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn accounts_and_tokens_rest_contract() {
    let stack = Stack::start().await.unwrap();
    let admin = stack.creds.admin_api_key.clone();
    let dev = stack.creds.developer_api_key.clone();
    let own = stack.creds.account_id.clone();

    let customer = format!("cus_{}", uuid::Uuid::new_v4().simple());
    let account = stack.create_account("acme", &customer).await.unwrap();
    let id = account["id"].as_str().unwrap();
    assert_eq!(account["plan"], "free");
    let (status, got) = stack
        .call(Method::GET, &format!("/v1/accounts/{id}"), &admin, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["provider_customer_id"], customer.as_str());

    // Linking the same provider customer twice is a conflict.
    let (status, e) = stack
        .call(
            Method::POST,
            "/v1/accounts",
            &admin,
            Some(json!({"name": "again", "provider_customer_id": customer})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains(&customer));

    // Client errors name what was wrong.
    let (status, e) = stack
        .call(
            Method::POST,
            "/v1/accounts",
            &admin,
            Some(json!({"nmae": "typo"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["code"], "invalid_json");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("nmae"),
        "{e}"
    );
    // serde would read a struct from an array by position; the api wants objects.
    let (status, e) = stack
        .call(Method::POST, "/v1/accounts", &admin, Some(json!(["acme"])))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must be a JSON object, not an array"),
        "{e}"
    );
    let (status, e) = stack
        .call(Method::GET, "/v1/accounts/not-a-uuid", &admin, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["error"]["code"], "invalid_path");
    // The api closes a connection whose oversized body it did not read: use a client of its own.
    let huge = json!({"name": "x".repeat(2 << 20)});
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/accounts", stack.api_url))
        .bearer_auth(&admin)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let e: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "payload_too_large", "{e}");
    let (status, e) = stack
        .call(Method::GET, &format!("/v1/accounts/{id}"), "bk_wrong", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{e}");

    // A developer key manages its own account's tokens only, and cannot create accounts.
    let (status, _) = stack
        .call(
            Method::POST,
            "/v1/accounts",
            &dev,
            Some(json!({"name": "x"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{id}/authtokens"),
            &dev,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, created) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{own}/authtokens"),
            &dev,
            Some(json!({"description": "laptop"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
    let secret = created["token"].as_str().unwrap();
    assert!(secret.starts_with("bt_"));

    // The secret is shown once: listings never carry it, and only its hash is stored.
    let (_, list) = stack
        .call(
            Method::GET,
            &format!("/v1/accounts/{own}/authtokens"),
            &dev,
            None,
        )
        .await
        .unwrap();
    let listed = list.to_string();
    assert!(
        listed.contains("laptop") && !listed.contains(secret),
        "{listed}"
    );
    let db = stack.db().await.unwrap();
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM authtokens WHERE token_hash = $1 OR token_hash LIKE '%' || $2 || '%'",
    )
    .bind(secret)
    .bind(&secret[3..])
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(stored, 0, "the token must not be stored in clear");

    // Revoked tokens stop working for agents.
    let token_id = created["id"].as_str().unwrap();
    let (status, _) = stack
        .call(
            Method::DELETE,
            &format!("/v1/authtokens/{token_id}"),
            &dev,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let mut agent = stack.agent(9, Some("after-revoke"), secret).unwrap();
    agent.expect_exit(2, "revoked").await.unwrap();
}
