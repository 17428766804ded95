//! Identity: credentials record their last use, and admin, ops and finance actions land in an
//! append-only audit log (who, what, when, from where) that `GET /v1/audit` reads.

use crate::support::*;
use burrow_e2e::Stack;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn entries(page: &Value) -> Vec<Value> {
    page["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {page}"))
        .clone()
}

fn ids(entries: &[Value]) -> Vec<i64> {
    entries.iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

/// The newest entry with `action` and `outcome`.
fn find<'a>(entries: &'a [Value], action: &str, outcome: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["action"] == action && e["outcome"] == outcome)
        .unwrap_or_else(|| panic!("no {action} {outcome} in {entries:#?}"))
}

#[tokio::test]
async fn audit_log_records_who_did_what_from_where_and_cannot_be_rewritten() {
    let stack = Stack::start().await.unwrap();
    let admin = stack.creds.admin_api_key.clone();
    let ops = stack.creds.ops_api_key.clone();
    let dev = stack.creds.developer_api_key.clone();

    // Admin: an account, an authtoken and a finance key.
    let customer = format!("cus_{}", uuid::Uuid::new_v4().simple());
    let account = stack.create_account("audited", &customer).await.unwrap();
    let account_id = account["id"].as_str().unwrap().to_owned();
    let (token_id, token) = stack.create_authtoken(&account_id).await.unwrap();
    let tokens_path = format!("/v1/accounts/{account_id}/authtokens");
    let (_, listed) = stack
        .call(Method::GET, &tokens_path, &admin, None)
        .await
        .unwrap();
    assert_eq!(listed[0]["id"], token_id.as_str(), "{listed}");
    assert!(listed[0]["last_used_at"].is_null(), "never used: {listed}");
    let (status, finance) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{account_id}/api-keys"),
            &admin,
            Some(json!({"role": "finance", "description": "books"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{finance}");
    assert!(finance["last_used_at"].is_null(), "{finance}");
    let finance_id = finance["id"].as_str().unwrap().to_owned();
    let finance_key = finance["token"].as_str().unwrap().to_owned();

    // An agent connecting is a use of its token.
    let py = python_http_server().await;
    let (mut agent, _) = stack
        .online_agent(py.port, Some("audited"), &token)
        .await
        .unwrap();
    let (_, listed) = stack
        .call(Method::GET, &tokens_path, &admin, None)
        .await
        .unwrap();
    assert!(listed[0]["last_used_at"].is_string(), "used: {listed}");

    // Ops: list sessions, kick ours, try to replay a dead letter that does not exist.
    let (status, sessions) = stack
        .call(Method::GET, "/v1/ops/sessions", &ops, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{sessions}");
    let session_id = sessions["relays"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["sessions"].as_array().unwrap())
        .find(|s| s["authtoken_id"] == token_id.as_str())
        .and_then(|s| s["session_id"].as_str())
        .unwrap_or_else(|| panic!("session missing: {sessions}"))
        .to_owned();
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/v1/ops/sessions/{session_id}/kick"),
            &ops,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    agent.expect_exit(1, "closed by an operator").await.unwrap();
    assert_eq!(
        stack.replay("provider-webhook-nope", &ops).await.unwrap(),
        StatusCode::NOT_FOUND
    );

    // Finance reads usage; admin revokes the token.
    let (status, usage) = stack
        .call(
            Method::GET,
            &format!("/v1/accounts/{account_id}/usage"),
            &finance_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{usage}");
    let (status, _) = stack
        .call(
            Method::DELETE,
            &format!("/v1/authtokens/{token_id}"),
            &admin,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    // Developers may not read the log, nor create accounts; both refusals are recorded.
    let (status, e) = stack
        .call(Method::GET, "/v1/audit", &dev, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    let (status, _) = stack
        .call(
            Method::POST,
            "/v1/accounts",
            &dev,
            Some(json!({"name": "sneaky"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);

    // API keys record their use too.
    let db = stack.db().await.unwrap();
    let used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE id = $1::uuid")
            .bind(&finance_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(used.is_some(), "the finance key was used");

    // Admin reads it all back: who, what, target, from where, outcome; newest first.
    let (status, page) = stack
        .call(Method::GET, "/v1/audit?limit=1000", &admin, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    let all = entries(&page);
    assert!(page["next_before"].is_null(), "{page}");
    let all_ids = ids(&all);
    assert!(all_ids.windows(2).all(|w| w[0] > w[1]), "{all_ids:?}");
    let text = page.to_string();
    assert!(
        !text.contains(&token) && !text.contains(&finance_key),
        "secrets never reach the log: {text}"
    );
    for e in &all {
        assert_eq!(e["source_ip"], "127.0.0.1", "{e}");
        assert!(e["actor_key_id"].is_string() && e["at"].is_string(), "{e}");
    }
    let created = find(&all, "account.create", "ok");
    assert_eq!(created["actor_role"], "admin");
    assert_eq!(created["target"], account_id.as_str());
    assert_eq!(created["detail"]["name"], "audited");
    let e = find(&all, "authtoken.create", "ok");
    assert_eq!(
        (&e["actor_role"], &e["target"]),
        (&json!("admin"), &json!(token_id))
    );
    assert_eq!(e["detail"]["account_id"], account_id.as_str());
    let e = find(&all, "api_key.create", "ok");
    assert_eq!(e["target"], finance_id.as_str());
    assert_eq!(e["detail"]["role"], "finance");
    assert_eq!(find(&all, "session.list", "ok")["actor_role"], "ops");
    let e = find(&all, "session.kick", "ok");
    assert_eq!(
        (&e["actor_role"], &e["target"]),
        (&json!("ops"), &json!(session_id))
    );
    assert_eq!(e["detail"]["kicked"], 1, "{e}");
    let e = find(&all, "dead_letter.replay", "not_found");
    assert_eq!(e["target"], "provider-webhook-nope");
    let e = find(&all, "usage.read", "ok");
    assert_eq!(e["actor_role"], "finance");
    assert_eq!(e["actor_key_id"], finance_id.as_str());
    assert_eq!(e["actor_account_id"], account_id.as_str());
    assert_eq!(e["target"], account_id.as_str());
    let e = find(&all, "authtoken.revoke", "ok");
    assert_eq!(
        (&e["actor_role"], &e["target"]),
        (&json!("admin"), &json!(token_id))
    );
    assert_eq!(
        find(&all, "audit.read", "forbidden")["actor_role"],
        "developer"
    );
    let e = find(&all, "account.create", "forbidden");
    assert_eq!(
        (&e["actor_role"], &e["target"]),
        (&json!("developer"), &Value::Null)
    );

    // Filters.
    let (_, kicks) = stack
        .call(Method::GET, "/v1/audit?action=session.kick", &admin, None)
        .await
        .unwrap();
    let kicks = entries(&kicks);
    assert_eq!(kicks.len(), 1, "{kicks:#?}");
    let (_, by_finance) = stack
        .call(
            Method::GET,
            &format!("/v1/audit?actor={finance_id}"),
            &admin,
            None,
        )
        .await
        .unwrap();
    let by_finance = entries(&by_finance);
    assert!(!by_finance.is_empty());
    assert!(
        by_finance
            .iter()
            .all(|e| e["actor_key_id"] == finance_id.as_str())
    );
    let (_, by_ops) = stack
        .call(
            Method::GET,
            "/v1/audit?actor=ops&since=2020-01-01T00:00:00Z",
            &admin,
            None,
        )
        .await
        .unwrap();
    let by_ops = entries(&by_ops);
    assert!(by_ops.len() >= 3 && by_ops.iter().all(|e| e["actor_role"] == "ops"));
    let (_, none) = stack
        .call(
            Method::GET,
            "/v1/audit?until=2020-01-01T00:00:00Z",
            &admin,
            None,
        )
        .await
        .unwrap();
    assert!(entries(&none).is_empty());

    // Pages: `limit` rows, then `before` the cursor, with nothing skipped or repeated (reads
    // since `all` added rows of their own; start the walk where `all` did).
    let page = |before: i64| {
        let path = format!("/v1/audit?limit=2&before={before}");
        let admin = admin.clone();
        let stack = &stack;
        async move {
            stack
                .call(Method::GET, &path, &admin, None)
                .await
                .unwrap()
                .1
        }
    };
    let first = page(all_ids[0] + 1).await;
    assert_eq!(ids(&entries(&first)), all_ids[0..2].to_vec());
    assert_eq!(first["next_before"], all_ids[1]);
    let second = page(all_ids[1]).await;
    assert_eq!(ids(&entries(&second)), all_ids[2..4].to_vec());
    let last = page(all_ids[all_ids.len() - 1]).await;
    assert!(entries(&last).is_empty() && last["next_before"].is_null());

    // Bad parameters are 400s naming the parameter.
    for (query, name) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=many", "limit"),
        ("actor=nobody", "actor"),
        ("since=yesterday", "since"),
        ("before=0", "before"),
        ("colour=red", "colour"),
    ] {
        let (status, e) = stack
            .call(Method::GET, &format!("/v1/audit?{query}"), &admin, None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {e}");
        assert_eq!(e["error"]["code"], "invalid_query", "{query}: {e}");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(name), "{query}: {message}");
    }

    // Ops read everything; finance only finance actions and what finance keys did.
    let (status, page) = stack
        .call(Method::GET, "/v1/audit?action=account.create", &ops, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!entries(&page).is_empty());
    let (status, page) = stack
        .call(Method::GET, "/v1/audit", &finance_key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    let seen = entries(&page);
    assert!(
        seen.iter().any(|e| e["action"] == "usage.read"),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .all(|e| e["action"] == "usage.read" || e["actor_role"] == "finance"),
        "{seen:#?}"
    );

    // Append-only in the database itself: no UPDATE, DELETE or TRUNCATE, even straight in SQL.
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM audit_log")
            .fetch_one(&db)
            .await
            .unwrap()
    };
    let before = count().await;
    for sql in [
        "UPDATE audit_log SET outcome = 'ok', actor_role = 'admin'",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE id = -1",
        "TRUNCATE audit_log",
    ] {
        let e = sqlx::query(sql).execute(&db).await.unwrap_err();
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
    assert_eq!(count().await, before);

    // A change whose audit row cannot be written does not happen.
    sqlx::query(
        "ALTER TABLE audit_log ADD CONSTRAINT e2e_refuse CHECK (action <> 'account.create')
         NOT VALID",
    )
    .execute(&db)
    .await
    .unwrap();
    let (status, e) = stack
        .call(
            Method::POST,
            "/v1/accounts",
            &admin,
            Some(json!({"name": "unaudited"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("audit log"),
        "{e}"
    );
    let unaudited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM accounts WHERE name = 'unaudited'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        unaudited, 0,
        "the account must not exist without its audit row"
    );
    sqlx::query("ALTER TABLE audit_log DROP CONSTRAINT e2e_refuse")
        .execute(&db)
        .await
        .unwrap();
}
