//! Reserved names: one holder per name, the plan's limit, the relay's label rules, `GET /v1/me`,
//! and another tenant's key refused on every route with nothing changed.

use super::*;

async fn names_of(stack: &Stack, account: &str) -> Vec<String> {
    let (status, body) = stack
        .call(
            Method::GET,
            &format!("/v1/accounts/{account}/reserved-names"),
            &stack.creds.admin_api_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body["reserved_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            assert_eq!(n["account_id"], account, "{n}");
            n["name"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn reserved_names_have_one_holder_within_the_plan_and_other_tenants_are_refused() {
    let stack = Stack::start().await.unwrap();
    let a = tenant(&stack, "names-a").await;
    let b = tenant(&stack, "names-b").await;
    let admin = stack.creds.admin_api_key.clone();
    let path_a = format!("/v1/accounts/{}/reserved-names", a.id);

    // The CLI finds its account with /v1/me; platform keys have none.
    let (status, me) = stack
        .call(Method::GET, "/v1/me", &a.key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["account_id"], a.id.as_str());
    assert_eq!(me["role"], "developer");
    assert!(me["key_id"].as_str().is_some(), "{me}");
    let (_, me) = stack
        .call(Method::GET, "/v1/me", &admin, None)
        .await
        .unwrap();
    assert!(me["account_id"].is_null(), "{me}");
    assert_eq!(me["role"], "admin");

    // Reserve, list.
    let (status, name) = stack
        .call(Method::POST, &path_a, &a.key, Some(json!({"name": "demo"})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{name}");
    assert_eq!(name["name"], "demo");
    assert_eq!(name["account_id"], a.id.as_str());
    assert!(name["created_at"].as_str().is_some(), "{name}");
    let (status, list) = stack
        .call(Method::GET, &path_a, &a.key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["reserved_names"][0]["name"], "demo", "{list}");

    // The relay's label rules.
    for bad in ["Demo", "-demo", "my_app", "a.b", &"a".repeat(64)] {
        let (status, e) = stack
            .call(Method::POST, &path_a, &a.key, Some(json!({ "name": bad })))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {e}");
        assert_eq!(e["error"]["code"], "invalid_name", "{e}");
    }

    // free allows one reserved name: the second is refused naming the limit and the plan.
    let (status, e) = stack
        .call(
            Method::POST,
            &path_a,
            &a.key,
            Some(json!({"name": "demo-2"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("plan \"free\" allows 1 reserved name; this account already has 1"),
        "{message}"
    );

    // Another account cannot take it, and is not told whose it is.
    let path_b = format!("/v1/accounts/{}/reserved-names", b.id);
    let (status, e) = stack
        .call(Method::POST, &path_b, &b.key, Some(json!({"name": "demo"})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    assert!(!e.to_string().contains(&a.id), "{e}");
    // Nor release it from its own path.
    let (status, e) = stack
        .call(Method::DELETE, &format!("{path_b}/demo"), &b.key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");

    // B's key on A's paths: 403 on every route, nothing changes.
    let (status, e) = stack
        .call(
            Method::POST,
            &path_a,
            &b.key,
            Some(json!({"name": "sneaky"})),
        )
        .await
        .unwrap();
    assert_forbidden(status, &e, &a.id);
    let (status, e) = stack
        .call(Method::GET, &path_a, &b.key, None)
        .await
        .unwrap();
    assert_forbidden(status, &e, &a.id);
    let (status, e) = stack
        .call(Method::DELETE, &format!("{path_a}/demo"), &b.key, None)
        .await
        .unwrap();
    assert_forbidden(status, &e, &a.id);
    assert_eq!(names_of(&stack, &a.id).await, ["demo"]);
    assert!(names_of(&stack, &b.id).await.is_empty());

    // Released, the name is free for anyone.
    let (status, e) = stack
        .call(Method::DELETE, &format!("{path_a}/demo"), &a.key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{e}");
    let (status, e) = stack
        .call(Method::DELETE, &format!("{path_a}/demo"), &a.key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
    let (status, e) = stack
        .call(Method::POST, &path_b, &b.key, Some(json!({"name": "demo"})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{e}");
    assert!(names_of(&stack, &a.id).await.is_empty());
    assert_eq!(names_of(&stack, &b.id).await, ["demo"]);

    // Every mutation and refusal is in the audit log.
    let reserve = audit_outcomes(&stack, "name.reserve").await;
    for outcome in ["ok", "invalid_name", "forbidden", "conflict"] {
        assert!(
            reserve.iter().any(|o| o == outcome),
            "{outcome}: {reserve:?}"
        );
    }
    let release = audit_outcomes(&stack, "name.release").await;
    for outcome in ["ok", "forbidden", "not_found"] {
        assert!(
            release.iter().any(|o| o == outcome),
            "{outcome}: {release:?}"
        );
    }
}
