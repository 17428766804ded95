//! What the api issues through the feed, enforced by the relay at bind and on live sessions:
//! reserved names (another account's bind is refused, and its live session closed when the
//! name is reserved under it), custom domains (only once verified for
//! the account, then served by host), and bandwidth shaped at the plan's rate, following a
//! plan change without a reconnect.

use crate::support::*;
use burrow_e2e::{Agent, Stack};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

/// Starts `burrow <args>` until it exits 1 saying `needle` (the feed may take a moment to
/// deliver what makes the relay refuse); returns the output.
async fn refused(stack: &Stack, args: &[&str], token: &str, needle: &str) -> String {
    burrow_e2e::wait::until(&format!("a bind refused with {needle:?}"), T, || async {
        let mut agent = stack.agent_with(args, token).ok()?;
        let (code, out) = agent.wait_exit(Duration::from_secs(10)).await.ok()?;
        (code == Some(1) && out.contains(needle)).then_some(out)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_reserved_name_binds_only_for_its_account() {
    let stack = Stack::start().await.unwrap();
    let (a, a_token) = stack.account_with_token("holder").await.unwrap();
    let (_, b_token) = stack.account_with_token("squatter").await.unwrap();
    let name = format!("res{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{a}/reserved-names"),
            &stack.creds.admin_api_key,
            Some(json!({"name": name})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let port = free_port().to_string();
    let out = refused(
        &stack,
        &["http", &port, "--name", &name],
        &b_token,
        "reserved by another account",
    )
    .await;
    assert!(out.contains(&name), "{out}");
    // The holder binds it.
    let mut holder: Agent = stack
        .agent_with(&["http", &port, "--name", &name], &a_token)
        .unwrap();
    holder.wait_line("Forwarding", T).await.unwrap();

    // A name another account is serving when it gets reserved: that session is closed, and
    // its agent is told why.
    let taken = format!("late{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut serving = stack
        .agent_with(&["http", &port, "--name", &taken], &b_token)
        .unwrap();
    serving.wait_line("Forwarding", T).await.unwrap();
    // free allows one reserved name; the holder moves to pro for a second.
    let (status, body) = stack
        .call(
            Method::PUT,
            &format!("/v1/accounts/{a}/plan"),
            &stack.creds.admin_api_key,
            Some(json!({"plan": "pro"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{a}/reserved-names"),
            &stack.creds.admin_api_key,
            Some(json!({"name": taken})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    serving
        .expect_exit(1, "is now reserved by another account")
        .await
        .unwrap();
}

#[tokio::test]
async fn bandwidth_is_shaped_at_the_plan_rate_and_follows_a_plan_change_live() {
    let stack = Stack::start().await.unwrap();
    let (id, token) = stack.account_with_token("shaped").await.unwrap();
    // 3 MiB from the local service; the free plan moves 1 MiB/s (after a 1 MiB burst).
    const SIZE: usize = 3 * 1024 * 1024;
    let app = axum::Router::new().fallback(|| async { vec![b'x'; SIZE] });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let name = format!("bw{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (mut agent, _) = stack.online_agent(port, Some(&name), &token).await.unwrap();

    let started = Instant::now();
    let body = stack
        .ingress(Method::GET, &name, "/")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(body.len(), SIZE);
    // 2 MiB past the burst at 1 MiB/s: not before ~2 s (a lower bound only: shaping must
    // hold traffic back; how fast an unshaped transfer runs is the benchmark's business).
    assert!(
        took >= Duration::from_millis(1800),
        "3 MiB on free took {took:?}"
    );

    // Moving the account to enterprise (unlimited) reaches the relay through the feed; the
    // relay's gauge for the account drops to 0 (unlimited) with the agent still on its session.
    let metric = format!("burrow_relay_account_bandwidth_bytes_per_second{{account=\"{id}\"}}");
    let ops = stack.relay.ops.clone();
    let gauge = || burrow_e2e::metrics::value(&ops, &metric);
    assert_eq!(gauge().await.as_deref(), Some("1048576"));
    let (status, body) = stack
        .call(
            Method::PUT,
            &format!("/v1/accounts/{id}/plan"),
            &stack.creds.admin_api_key,
            Some(json!({"plan": "enterprise"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    burrow_e2e::wait::until(
        "the relay lifts the limit",
        Duration::from_secs(5),
        || async { (gauge().await.as_deref() == Some("0")).then_some(()) },
    )
    .await
    .unwrap();
    assert!(
        !agent.seen.iter().any(|l| l.contains("reconnect")),
        "{:?}",
        agent.seen
    );
    assert!(agent.child.try_wait().unwrap().is_none());
}

#[tokio::test]
async fn a_custom_domain_binds_once_verified_and_only_for_its_account() {
    let dns = burrow_e2e::dns::DnsServer::start("edge-e2e.test")
        .await
        .unwrap();
    let stack = Stack::start_with(burrow_e2e::StackOptions {
        api_env: vec![("BURROW_API_DNS_RESOLVER".into(), dns.addr.to_string())],
        ..Default::default()
    })
    .await
    .unwrap();
    let (a, a_token) = stack.account_with_token("domain-holder").await.unwrap();
    let (_, b_token) = stack.account_with_token("domain-other").await.unwrap();
    let admin = stack.creds.admin_api_key.clone();
    let (status, body) = stack
        .call(
            Method::PUT,
            &format!("/v1/accounts/{a}/plan"),
            &admin,
            Some(json!({"plan": "pro"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    let domain = "shop.edge-e2e.test";
    let python = python_http_server().await;
    let port = python.port.to_string();

    // Not verified yet: the bind is refused, saying how to verify.
    let mut early = stack
        .agent_with(&["http", &port, "--domain", domain], &a_token)
        .unwrap();
    early
        .expect_exit(1, "is not verified for this account")
        .await
        .unwrap();

    let (status, added) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{a}/domains"),
            &admin,
            Some(json!({"domain": domain})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{added}");
    let record = added["txt_record"]["name"].as_str().unwrap();
    let value = added["txt_record"]["value"].as_str().unwrap();
    dns.set_txt(record, &[value]).await.unwrap();
    let (status, verified) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{a}/domains/{domain}/verify"),
            &admin,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{verified}");

    // Another account cannot bind it; the holder can, and visitors reach it by host.
    refused(
        &stack,
        &["http", &port, "--domain", domain],
        &b_token,
        "is not verified for this account",
    )
    .await;
    let mut holder = burrow_e2e::wait::until("the holder binds its domain", T, || async {
        let mut agent = stack
            .agent_with(&["http", &port, "--domain", domain], &a_token)
            .ok()?;
        agent
            .wait_line("Forwarding", Duration::from_secs(10))
            .await
            .ok()?;
        Some(agent)
    })
    .await
    .unwrap();
    let line = holder.wait_line("Forwarding", T).await.unwrap();
    assert!(line.contains(&format!("http://{domain}:")), "{line}");
    let page = stack
        .http
        .get(format!("http://{}/", stack.relay.http))
        .header("host", domain)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("hello-from-burrow.txt"));
}

#[tokio::test]
async fn a_name_served_on_one_relay_is_refused_to_other_accounts_on_another() {
    let stack = Stack::start().await.unwrap();
    let second = stack.spawn_extra_relay("b").await.unwrap();
    let (_, a_token) = stack.account_with_token("relay-holder").await.unwrap();
    let (_, b_token) = stack.account_with_token("relay-other").await.unwrap();
    let name = format!("xr{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let port = free_port().to_string();
    let (_holder, _) = stack
        .online_agent(port.parse().unwrap(), Some(&name), &a_token)
        .await
        .unwrap();
    // B on the other relay: refused, naming the relay that serves it (its lease says so).
    let mut other = stack
        .agent_via(
            &second.addrs.agent,
            &["http", &port, "--name", &name],
            &b_token,
        )
        .unwrap();
    let out = other
        .expect_exit(1, "already in use by another account (on relay")
        .await
        .unwrap();
    assert!(out.contains(&name), "{out}");
    // The same account may serve it from the other relay too (it takes the name over there).
    let mut same = stack
        .agent_via(
            &second.addrs.agent,
            &["http", &port, "--name", &name],
            &a_token,
        )
        .unwrap();
    same.wait_line("Forwarding", T).await.unwrap();
}
