//! Users and their API keys over REST: roles decide who may create whom, keys carry their
//! user's role and account, listings never show secrets, revocation and disabling take effect
//! on the next request, another tenant's keys and users are invisible (404) or refused (403)
//! with nothing changed, and the audit log names the user behind a key.

use burrow_e2e::Stack;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn account(stack: &Stack, name: &str) -> String {
    let customer = format!("cus_{}", uuid::Uuid::new_v4().simple());
    let account = stack.create_account(name, &customer).await.unwrap();
    account["id"].as_str().unwrap().to_owned()
}

/// Creates a user with `key`; returns the status and answer.
async fn create_user(stack: &Stack, key: &str, body: Value) -> (StatusCode, Value) {
    stack
        .call(Method::POST, "/v1/users", key, Some(body))
        .await
        .unwrap()
}

/// A key of user `id`, created with `key`.
async fn user_key(stack: &Stack, key: &str, id: &str) -> String {
    let (status, created) = stack
        .call(
            Method::POST,
            &format!("/v1/users/{id}/api-keys"),
            key,
            Some(json!({"description": "e2e"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["token"].as_str().unwrap().to_owned()
}

async fn me(stack: &Stack, key: &str) -> (StatusCode, Value) {
    stack.call(Method::GET, "/v1/me", key, None).await.unwrap()
}

async fn users_of(stack: &Stack, account: &str) -> Vec<Value> {
    let (status, list) = stack
        .call(
            Method::GET,
            &format!("/v1/users?account_id={account}"),
            &stack.creds.admin_api_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{list}");
    list["users"].as_array().unwrap().clone()
}

#[tokio::test]
async fn users_keys_roles_and_tenant_isolation() {
    let stack = Stack::start().await.unwrap();
    let admin = stack.creds.admin_api_key.clone();
    let a = account(&stack, "users-a").await;
    let b = account(&stack, "users-b").await;

    // The admin adds a developer to A; its key is a developer key of A.
    let (status, alice) = create_user(
        &stack,
        &admin,
        json!({"email": "Alice@Example.com", "name": "Alice", "role": "developer", "account_id": a}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{alice}");
    assert_eq!(alice["email"], "alice@example.com");
    let alice_id = alice["id"].as_str().unwrap().to_owned();
    let alice_key = user_key(&stack, &admin, &alice_id).await;
    let (_, who) = me(&stack, &alice_key).await;
    assert_eq!(who["role"], "developer");
    assert_eq!(who["account_id"], a.as_str());
    assert_eq!(who["user_id"], alice_id.as_str());

    // Bad input names what was wrong; the same email twice is a conflict.
    for (body, code) in [
        (
            json!({"email": "not-an-email", "role": "developer", "account_id": a}),
            "invalid_email",
        ),
        (
            json!({"email": "x@example.com", "role": "developer"}),
            "missing_account",
        ),
        (
            json!({"email": "y@example.com", "role": "ops", "account_id": a}),
            "unexpected_account",
        ),
    ] {
        let (status, e) = create_user(&stack, &admin, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
        assert_eq!(e["error"]["code"], code, "{e}");
    }
    let (status, e) = create_user(
        &stack,
        &admin,
        json!({"email": "alice@example.COM", "role": "developer", "account_id": a}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alice@example.com")
    );

    // Alice adds a teammate to A, but no staff and nobody in B.
    let (status, bob) = create_user(
        &stack,
        &alice_key,
        json!({"email": "bob@example.com", "role": "developer", "account_id": a}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{bob}");
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    for body in [
        json!({"email": "ops@example.com", "role": "ops"}),
        json!({"email": "mallory@example.com", "role": "developer", "account_id": b}),
    ] {
        let (status, e) = create_user(&stack, &alice_key, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    }
    assert!(
        users_of(&stack, &b).await.is_empty(),
        "nothing was created in B"
    );
    assert_eq!(users_of(&stack, &a).await.len(), 2);

    // B's developer sees nothing of A: 403 on A's listings, 404 on A's ids; nothing changes.
    let (status, carol) = create_user(
        &stack,
        &admin,
        json!({"email": "carol@example.com", "role": "developer", "account_id": b}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{carol}");
    let carol_key = user_key(&stack, &admin, carol["id"].as_str().unwrap()).await;
    for path in [
        format!("/v1/accounts/{a}/users"),
        format!("/v1/accounts/{a}/api-keys"),
    ] {
        let (status, e) = stack
            .call(Method::GET, &path, &carol_key, None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {e}");
    }
    let (_, alice_keys) = stack
        .call(
            Method::GET,
            &format!("/v1/accounts/{a}/api-keys"),
            &alice_key,
            None,
        )
        .await
        .unwrap();
    let keys = alice_keys["api_keys"].as_array().unwrap();
    let alice_key_id = keys
        .iter()
        .find(|k| k["user_id"] == alice_id.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        keys.iter()
            .all(|k| k.get("token").is_none() && k.get("key_hash").is_none()),
        "listings carry no secrets: {alice_keys}"
    );
    let (status, _) = stack
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{alice_key_id}"),
            &carol_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = stack
        .call(
            Method::DELETE,
            &format!("/v1/users/{alice_id}"),
            &carol_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        me(&stack, &alice_key).await.0,
        StatusCode::OK,
        "Alice's key still works"
    );

    // A key cannot revoke itself (its holder would be locked out).
    let (_, alice_who) = me(&stack, &alice_key).await;
    let (status, e) = stack
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{}", alice_who["key_id"].as_str().unwrap()),
            &alice_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{e}");

    // Bob's key, revoked by Alice, stops working at once.
    let bob_key = user_key(&stack, &admin, &bob_id).await;
    assert_eq!(me(&stack, &bob_key).await.0, StatusCode::OK);
    let (_, bob_who) = me(&stack, &bob_key).await;
    let (status, revoked) = stack
        .call(
            Method::DELETE,
            &format!("/v1/api-keys/{}", bob_who["key_id"].as_str().unwrap()),
            &alice_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(me(&stack, &bob_key).await.0, StatusCode::UNAUTHORIZED);

    // Disabling Alice (admin) stops all her keys; the audit log names her as the actor of what
    // she did.
    let (status, disabled) = stack
        .call(
            Method::DELETE,
            &format!("/v1/users/{alice_id}"),
            &admin,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{disabled}");
    assert!(disabled["disabled_at"].is_string());
    let (status, e) = me(&stack, &alice_key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("disabled"),
        "{e}"
    );
    let (status, log) = stack
        .call(
            Method::GET,
            &format!("/v1/audit?actor={alice_id}"),
            &admin,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{log}");
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"user.create"), "{actions:?}");
    assert!(actions.contains(&"api_key.revoke"), "{actions:?}");
}
