//! Agent sessions over their lifetime: bad and revoked tokens, reconnects after a relay
//! restart, ops listing and kicking, name takeover, and the relay draining on SIGTERM.

use crate::support::*;
use burrow_e2e::Stack;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn bad_token_exits_nonzero_saying_it_was_rejected() {
    let stack = Stack::start().await.unwrap();
    let mut agent = stack
        .agent(free_port(), Some("nope"), "bt_not_a_real_token")
        .unwrap();
    agent
        .expect_exit(2, "rejected the authtoken")
        .await
        .unwrap();
}

#[tokio::test]
async fn agent_reconnects_after_relay_restart_and_keeps_its_name() {
    let mut stack = Stack::start().await.unwrap();
    let py = python_http_server().await;
    // No --name: the relay picks one, and the agent must get the same one back.
    let (mut agent, line) = stack
        .online_agent(py.port, None, &stack.creds.authtoken)
        .await
        .unwrap();
    let host = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('.').next())
        .unwrap()
        .to_owned();

    stack.restart_relay().await.unwrap();
    agent.wait_line("reconnected", T).await.unwrap();
    let resp = burrow_e2e::wait::until("the tunnel to come back", T, || async {
        let r = stack.ingress(Method::GET, &host, "/").send().await.ok()?;
        (r.status() == StatusCode::OK).then_some(r)
    })
    .await
    .unwrap();
    assert!(resp.text().await.unwrap().contains("hello-from-burrow.txt"));
}

#[tokio::test]
async fn ops_see_sessions_and_revoking_a_token_ends_its_agent() {
    let stack = Stack::start().await.unwrap();
    let admin = stack.creds.admin_api_key.clone();
    let account = &stack.creds.account_id;

    let (token_id, token) = stack.create_authtoken(account).await.unwrap();

    let py = python_http_server().await;
    let (mut agent, _) = stack
        .online_agent(py.port, Some("revoked"), &token)
        .await
        .unwrap();

    // The api lists the session through the relay's RelayControl service.
    let (_, sessions) = stack
        .call(
            Method::GET,
            "/v1/ops/sessions",
            &stack.creds.ops_api_key,
            None,
        )
        .await
        .unwrap();
    let all: Vec<&serde_json::Value> = sessions["relays"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["sessions"].as_array().unwrap())
        .collect();
    let ours = all
        .iter()
        .find(|s| s["authtoken_id"] == token_id.as_str())
        .unwrap_or_else(|| panic!("session missing: {sessions}"));
    assert_eq!(ours["endpoints"][0]["name"], "revoked");

    // A developer key cannot see sessions.
    let (forbidden, _) = stack
        .call(
            Method::GET,
            "/v1/ops/sessions",
            &stack.creds.developer_api_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(forbidden, StatusCode::FORBIDDEN);

    let (_, revoked) = stack
        .call(
            Method::DELETE,
            &format!("/v1/authtokens/{token_id}"),
            &admin,
            None,
        )
        .await
        .unwrap();
    assert_eq!(revoked["sessions_closed"], 1, "{revoked}");
    agent.expect_exit(2, "revoked").await.unwrap();
}

#[tokio::test]
async fn ops_kick_ends_the_agent_and_revocation_behind_the_apis_back_is_noticed() {
    let stack = Stack::start().await.unwrap();
    let py = python_http_server().await;

    // An operator closes a session: the agent is told why and does not come back.
    let (mut agent, _) = stack
        .online_agent(py.port, Some("kicked"), &stack.creds.authtoken)
        .await
        .unwrap();
    let (_, sessions) = stack
        .call(
            Method::GET,
            "/v1/ops/sessions",
            &stack.creds.ops_api_key,
            None,
        )
        .await
        .unwrap();
    let session_id = sessions["relays"][0]["sessions"][0]["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {sessions}"))
        .to_owned();
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/v1/ops/sessions/{session_id}/kick"),
            &stack.creds.ops_api_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    agent.expect_exit(1, "closed by an operator").await.unwrap();

    // A token revoked where no relay hears about it (straight in the database) still ends its
    // sessions: relays re-check live sessions' tokens every cache period.
    let (token_id, token) = stack
        .create_authtoken(&stack.creds.account_id)
        .await
        .unwrap();
    let (mut agent, _) = stack
        .online_agent(py.port, Some("sneaky"), &token)
        .await
        .unwrap();
    let db = stack.db().await.unwrap();
    sqlx::query("UPDATE authtokens SET revoked_at = now() WHERE id = $1::uuid")
        .bind(&token_id)
        .execute(&db)
        .await
        .unwrap();
    agent.expect_exit(2, "revoked").await.unwrap();
}

#[tokio::test]
async fn a_second_agent_taking_a_name_ends_the_first_instead_of_flapping() {
    let stack = Stack::start().await.unwrap();
    let first_upstream = python_http_server().await;
    let second_upstream = python_http_server().await;
    let (mut first, _) = stack
        .online_agent(first_upstream.port, Some("shared"), &stack.creds.authtoken)
        .await
        .unwrap();
    let (_second, _) = stack
        .online_agent(second_upstream.port, Some("shared"), &stack.creds.authtoken)
        .await
        .unwrap();
    first
        .expect_exit(1, "another agent of this account")
        .await
        .unwrap();
    // The name now serves the second agent, and keeps doing so.
    let r = stack
        .ingress(Method::GET, "shared", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Another account cannot take it at all.
    let (_, other) = stack
        .call(
            Method::POST,
            "/v1/accounts",
            &stack.creds.admin_api_key,
            Some(serde_json::json!({"name": "other"})),
        )
        .await
        .unwrap();
    let (_, token) = stack
        .create_authtoken(other["id"].as_str().unwrap())
        .await
        .unwrap();
    let mut intruder = stack
        .agent(second_upstream.port, Some("shared"), &token)
        .unwrap();
    intruder
        .expect_exit(1, "already in use by another account")
        .await
        .unwrap();
}

#[tokio::test]
async fn relay_drains_on_sigterm_in_flight_requests_finish_new_ones_get_503() {
    use axum::{Router, routing::get};
    use tokio::sync::{Mutex, mpsc, oneshot};
    // Upstream: /slow reports it started, then answers only when the test releases it.
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = std::sync::Arc::new(Mutex::new(Some(release_rx)));
    let app = Router::new().route("/", get(|| async { "fast" })).route(
        "/slow",
        get(move || {
            let (started, release) = (started_tx.clone(), release_rx.clone());
            async move {
                let _ = started.send(());
                if let Some(rx) = release.lock().await.take() {
                    let _ = rx.await;
                }
                "done"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut stack = Stack::start().await.unwrap();
    let (_agent, _) = stack
        .online_agent(port, Some("drain"), &stack.creds.authtoken)
        .await
        .unwrap();
    let slow = tokio::spawn(stack.ingress(Method::GET, "drain", "/slow").send());
    tokio::time::timeout(T, started_rx.recv())
        .await
        .unwrap()
        .unwrap();

    stack.terminate_relay().unwrap();
    let refused = burrow_e2e::wait::until("new requests to be refused with 503", T, || async {
        let r = stack.ingress(Method::GET, "drain", "/").send().await.ok()?;
        (r.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(r)
    })
    .await
    .unwrap();
    assert_eq!(refused.headers()["retry-after"], "5");

    // The request that was in flight still completes.
    release_tx.send(()).unwrap();
    let resp = tokio::time::timeout(T, slow)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "done");
    let status = tokio::time::timeout(T, stack.relay_proc.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "relay exit status {status}");
}
