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
    let (_, sessions) = stack.ops_sessions().await.unwrap();
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
    let (_, sessions) = stack.ops_sessions().await.unwrap();
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

/// A TCP proxy between agent and relay that can go silent: while cut, it forwards nothing and
/// closes nothing (a half-open link, as after a NAT drop or a pulled cable), and connections
/// opened meanwhile hang unanswered.
struct CuttableLink {
    addr: String,
    cut: tokio::sync::watch::Sender<bool>,
}

impl CuttableLink {
    async fn start(relay: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (relay, watch) = (relay.clone(), watch.clone());
                tokio::spawn(async move {
                    let mut up = watch.clone();
                    // A connection made during a cut waits for the link to come back.
                    if up.wait_for(|cut| !cut).await.is_err() {
                        return;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(&relay).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, watch.clone()));
                    tokio::spawn(pump(sr, cw, watch));
                });
            }
        });
        Self { addr, cut }
    }
}

/// Copies `from` to `to`; once the link is cut it stops for good without closing either side.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut cut: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            _ = async { cut.wait_for(|c| *c).await.is_ok() } => {
                // Hold both halves open and silent until the test ends.
                std::future::pending::<()>().await;
                return;
            }
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
        };
        let is_cut = *cut.borrow();
        if is_cut || to.write_all(&buf[..n]).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[tokio::test]
async fn a_half_open_link_is_noticed_and_the_agent_rebinds_the_same_url_after_the_cut() {
    let py = python_http_server().await;
    let stack = Stack::start().await.unwrap();
    let link = CuttableLink::start(stack.relay.agent.clone()).await;
    let port = py.port.to_string();
    let mut agent = stack
        .agent_via(
            &link.addr,
            &["http", &port, "--name", "halfopen"],
            &stack.creds.authtoken,
        )
        .unwrap();
    let first = agent.wait_line("Forwarding", T).await.unwrap();
    let get = || async {
        stack
            .ingress(Method::GET, "halfopen", "/hello-from-burrow.txt")
            .send()
            .await
            .map(|r| r.status())
            .ok()
    };
    assert_eq!(get().await, Some(StatusCode::OK));

    // The link goes silent without a FIN or RST: only heartbeats can tell. Both ends notice:
    // the agent reports the loss, the relay stops routing to the dead session.
    link.cut.send(true).unwrap();
    agent.wait_line("connection lost", T).await.unwrap();
    burrow_e2e::wait::until("the relay to drop the silent session", T, || async {
        (get().await == Some(StatusCode::BAD_GATEWAY)).then_some(())
    })
    .await
    .unwrap();

    // The link returns: the agent rebinds the same name on its own and the URL answers again.
    link.cut.send(false).unwrap();
    agent.wait_line("reconnected", T).await.unwrap();
    let again = agent
        .seen
        .iter()
        .rev()
        .find(|l| l.starts_with("Forwarding http://"))
        .cloned()
        .unwrap();
    assert_eq!(again, first);
    burrow_e2e::wait::until("the URL to answer again", T, || async {
        (get().await == Some(StatusCode::OK)).then_some(())
    })
    .await
    .unwrap();
}
