//! Pools (`--pool`): several agents serve one endpoint; visitors are balanced across them and
//! losing one agent does not fail new requests.

use crate::support::*;
use burrow_e2e::Stack;

/// A local service answering every request with `who`.
async fn named_server(who: &'static str) -> u16 {
    use axum::{Router, routing::get};
    let app = Router::new().route("/", get(move || async move { who }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test]
async fn a_pooled_endpoint_balances_and_survives_losing_an_agent() {
    let (a, b) = (named_server("a").await, named_server("b").await);
    let stack = Stack::start().await.unwrap();
    let token = &stack.creds.authtoken;
    let pool = |port: u16| {
        let port = port.to_string();
        stack.agent_with(&["http", &port, "--name", "pooled", "--pool"], token)
    };
    let mut agent_a = pool(a).unwrap();
    agent_a.wait_line("Forwarding", T).await.unwrap();
    let mut agent_b = pool(b).unwrap();
    agent_b.wait_line("Forwarding", T).await.unwrap();

    let ask = || async {
        let resp = stack
            .ingress(reqwest::Method::GET, "pooled", "/")
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..10 {
        let (status, who) = ask().await;
        assert_eq!(status, 200, "{who}");
        *seen.entry(who).or_insert(0) += 1;
    }
    assert_eq!(seen.get("a"), Some(&5), "round robin over both: {seen:?}");
    assert_eq!(seen.get("b"), Some(&5), "round robin over both: {seen:?}");
    // Joining the pool did not close the first agent (no takeover).
    assert!(
        !agent_a.seen.iter().any(|l| l.contains("closed")),
        "{:?}",
        agent_a.seen
    );

    // Agent a dies without a word; every new request is still answered, by b.
    agent_a.child.kill().await.unwrap();
    for i in 0..20 {
        let (status, who) = ask().await;
        assert_eq!(
            (status, who.as_str()),
            (200, "b"),
            "request {i} after losing a"
        );
    }

    // Without --pool the same name is taken over, not shared.
    let c = named_server("c").await.to_string();
    let mut agent_c = stack
        .agent_with(&["http", &c, "--name", "pooled"], token)
        .unwrap();
    agent_c.wait_line("Forwarding", T).await.unwrap();
    agent_b.expect_exit(1, "bound the same name").await.unwrap();
    assert_eq!(ask().await, (200, "c".to_owned()));
}
