//! Several relays of one platform: endpoint leases in Redis, visitors forwarded over the
//! relay-to-relay link to the relay holding the endpoint, agents moving to another relay when
//! theirs dies, and Redis going away and coming back with tunnels still serving.
//!
//! Relays listen on distinct loopback addresses (127.0.0.1, .2, .3 — Linux routes all of
//! 127/8 to `lo`), except their agent listeners, which stay on 127.0.0.1 because the dev
//! certificate names only that address.

use crate::support::*;
use burrow_e2e::{
    Stack, StackOptions, private_redis, private_redis::PrivateRedis, stack::RelayAddrs,
};
use reqwest::StatusCode;
use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

/// The header a relay sets on answers it served for another relay.
const SERVED_BY: &str = "x-burrow-relay";

/// A local service answering GET with the request headers as JSON and POST with the body;
/// returns its port and how many requests reached it.
async fn echo() -> (u16, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(
        move |method: http::Method, headers: http::HeaderMap, body: bytes::Bytes| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if method == http::Method::POST {
                    return body.to_vec();
                }
                let map: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").into()))
                    .collect();
                serde_json::Value::Object(map).to_string().into_bytes()
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, hits)
}

/// A client whose connections come from `127.0.0.9`: the visitor address a tunnel must see.
fn visitor() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address("127.0.0.9".parse::<IpAddr>().unwrap())
        .timeout(T)
        .build()
        .unwrap()
}

fn get(client: &reqwest::Client, relay: &RelayAddrs, host: &str) -> reqwest::RequestBuilder {
    client
        .get(format!("http://{}/", relay.http))
        .header("host", host)
}

/// Waits until `relay` answers `host` with `status`; returns the response.
async fn until_status(
    client: &reqwest::Client,
    relay: &RelayAddrs,
    host: &str,
    status: StatusCode,
) -> reqwest::Response {
    burrow_e2e::wait::until(
        &format!("{} to answer {host} with {status}", relay.http),
        T,
        || async {
            let r = get(client, relay, host).send().await.ok()?;
            (r.status() == status).then_some(r)
        },
    )
    .await
    .unwrap()
}

/// The relay holding `name`'s lease (the value is `<relay id> <account id>`).
async fn lease(stack: &Stack, name: &str) -> Option<String> {
    let (url, prefix) = stack.redis();
    private_redis::command(url, &["GET", &format!("{prefix}lease:{name}")])
        .await
        .unwrap()
        .map(|v| v.split(' ').next().unwrap_or_default().to_owned())
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

#[tokio::test]
async fn visitors_on_any_relay_reach_an_agent_on_another_and_follow_it_when_its_relay_dies() {
    let stack = Stack::start().await.unwrap();
    let a = stack.relay.clone();
    let mut b = stack.spawn_extra_relay_on("b", "127.0.0.2").await.unwrap();
    let c = stack.spawn_extra_relay_on("c", "127.0.0.3").await.unwrap();
    assert!(b.addrs.http.starts_with("127.0.0.2:"), "{:?}", b.addrs);
    let token = stack.creds.authtoken.clone();
    let (port, hits) = echo().await;
    let name = unique("mr");
    let host = format!("{name}.{}", stack.domain);

    // The agent knows all three relays and starts on B.
    let relays = format!("{},{},{}", b.addrs.agent, a.agent, c.addrs.agent);
    let mut agent = stack
        .agent_via(
            &relays,
            &["http", &port.to_string(), "--name", &name],
            &token,
        )
        .unwrap();
    agent.wait_line("Forwarding", T).await.unwrap();
    agent
        .wait_line(&format!("on relay {}", b.addrs.agent), T)
        .await
        .unwrap();
    // A second agent that knows only B: when B dies, its endpoint has nowhere to go.
    let pinned = unique("pin");
    let pinned_host = format!("{pinned}.{}", stack.domain);
    let mut stuck = stack
        .agent_via(
            &b.addrs.agent,
            &["http", &port.to_string(), "--name", &pinned],
            &token,
        )
        .unwrap();
    stuck.wait_line("Forwarding", T).await.unwrap();
    assert_eq!(lease(&stack, &name).await.as_deref(), Some("relay-b"));

    // Visitors on A and C are forwarded to B, which serves them as its own: the answer says
    // so, and the tunnel sees the visitor's address, not relay A's or C's.
    let client = visitor();
    for relay in [&a, &c.addrs] {
        let resp = get(&client, relay, &host).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "via {}", relay.http);
        assert_eq!(resp.headers()[SERVED_BY], "relay-b");
        let seen: serde_json::Value = resp.json().await.unwrap();
        let xff = seen["x-forwarded-for"].as_str().unwrap_or_default();
        assert!(xff.starts_with("127.0.0.9"), "x-forwarded-for {xff:?}");
        assert_eq!(seen["host"], host.as_str());
    }
    // On B itself nothing is forwarded.
    let direct = get(&client, &b.addrs, &host).send().await.unwrap();
    assert_eq!(direct.status(), StatusCode::OK);
    assert!(direct.headers().get(SERVED_BY).is_none());
    // Bodies stream both ways through the link.
    let big: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let echoed = client
        .post(format!("http://{}/upload", c.addrs.http))
        .header("host", &host)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.status(), StatusCode::OK);
    assert_eq!(echoed.bytes().await.unwrap().as_ref(), big.as_slice());

    // A request to B's peer link without the relays' credential is refused and never routed,
    // however it claims to have been forwarded.
    let peer = b.addrs.peer.clone().expect("relay b has a peer listener");
    let before = hits.load(Ordering::SeqCst);
    for credential in [None, Some("0".repeat(64))] {
        let mut forged = reqwest::Client::new()
            .get(format!("http://{peer}/"))
            .header("host", &host)
            .header("x-burrow-hop", "relay-local")
            .header("x-burrow-peer-visitor", "203.0.113.1:1234");
        if let Some(c) = credential {
            forged = forged.header("x-burrow-peer-auth", c);
        }
        let resp = forged.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["x-burrow-error"], "relay");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "a forged request reached the tunnel"
    );
    // With the credential, the visitor address is trusted — on the peer link only.
    let credential = {
        use sha2::Digest;
        let seed = format!("burrow-peer-link/v1:{}", stack.internal_key());
        hex::encode(sha2::Sha256::digest(seed.as_bytes()))
    };
    let forwarded = |peer: &str| {
        reqwest::Client::new()
            .get(format!("http://{peer}/"))
            .header("host", &host)
            .header("x-burrow-hop", "relay-test")
            .header("x-burrow-peer-visitor", "203.0.113.1:1234")
            .header("x-burrow-peer-auth", &credential)
    };
    let seen: serde_json::Value = forwarded(&peer).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen["x-forwarded-for"], "203.0.113.1");
    for name in [
        "x-burrow-peer-auth",
        "x-burrow-hop",
        "x-burrow-peer-visitor",
    ] {
        assert!(
            seen.get(name).is_none(),
            "{name} reached the tunnel: {seen}"
        );
    }
    let spoofed: serde_json::Value = get(&client, &a, &host)
        .header("x-burrow-peer-visitor", "203.0.113.1:1234")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let xff = spoofed["x-forwarded-for"].as_str().unwrap_or_default();
    assert!(
        xff.starts_with("127.0.0.9"),
        "a visitor chose its address: {xff:?}"
    );
    // A forwarded request is never forwarded again: A's peer link does not pass it on to B.
    let a_peer = a.peer.clone().expect("relay a has a peer listener");
    let once = forwarded(&a_peer).send().await.unwrap();
    assert_eq!(once.status(), StatusCode::NOT_FOUND);

    // B dies. The agent moves to the next relay (A), and visitors on every remaining relay
    // reach it again.
    b.proc.kill().await;
    agent
        .wait_line(&format!("on relay {}", a.agent), T)
        .await
        .unwrap();
    let via_c = until_status(&client, &c.addrs, &host, StatusCode::OK).await;
    assert_eq!(via_c.headers()[SERVED_BY], "relay-local");
    let via_a = until_status(&client, &a, &host, StatusCode::OK).await;
    assert!(via_a.headers().get(SERVED_BY).is_none());
    assert_eq!(lease(&stack, &name).await.as_deref(), Some("relay-local"));

    // The pinned endpoint's lease still names dead B until it expires: A answers 502 naming
    // it, then — once the lease is gone — 404 as if there were a single relay.
    let pinned_now = get(&client, &a, &pinned_host)
        .send()
        .await
        .unwrap()
        .status();
    assert!(
        [StatusCode::BAD_GATEWAY, StatusCode::NOT_FOUND].contains(&pinned_now),
        "{pinned_now}"
    );
    until_status(&client, &a, &pinned_host, StatusCode::NOT_FOUND).await;
    until_status(&client, &c.addrs, &pinned_host, StatusCode::NOT_FOUND).await;
    assert_eq!(lease(&stack, &pinned).await, None);
}

#[tokio::test]
async fn tunnels_keep_serving_through_a_redis_outage_and_relays_rejoin_without_a_restart() {
    let mut redis = PrivateRedis::start().await.unwrap();
    let stack = Stack::start_with(StackOptions {
        redis_url: Some(redis.url()),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let a = stack.relay.clone();
    let b = stack.spawn_extra_relay_on("b", "127.0.0.2").await.unwrap();
    let token = stack.creds.authtoken.clone();
    let (port, _) = echo().await;
    let client = visitor();
    let first = unique("out");
    let first_host = format!("{first}.{}", stack.domain);
    let mut on_b = stack
        .agent_via(
            &b.addrs.agent,
            &["http", &port.to_string(), "--name", &first],
            &token,
        )
        .unwrap();
    on_b.wait_line("Forwarding", T).await.unwrap();
    let forwarded = until_status(&client, &a, &first_host, StatusCode::OK).await;
    assert_eq!(forwarded.headers()[SERVED_BY], "relay-b");

    redis.stop().await;
    // B keeps serving what it holds, from its own registry.
    for _ in 0..5 {
        let resp = get(&client, &b.addrs, &first_host).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    // A cannot learn who holds it: it answers as a lone relay would.
    until_status(&client, &a, &first_host, StatusCode::NOT_FOUND).await;
    // The api keeps working on PostgreSQL and says what it cannot do.
    let (status, body) = stack.ops_sessions().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _) = stack
        .call(
            reqwest::Method::GET,
            &format!("/v1/accounts/{}", stack.creds.account_id),
            &stack.creds.admin_api_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);

    // A relay started during the outage, and an agent binding on it, work locally.
    let c = stack.spawn_extra_relay_on("c", "127.0.0.3").await.unwrap();
    let second = unique("late");
    let second_host = format!("{second}.{}", stack.domain);
    let mut on_c = stack
        .agent_via(
            &c.addrs.agent,
            &["http", &port.to_string(), "--name", &second],
            &token,
        )
        .unwrap();
    on_c.wait_line("Forwarding", T).await.unwrap();
    assert_eq!(
        get(&client, &c.addrs, &second_host)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    // Redis returns, empty. Without restarting anything, every relay writes its presence and
    // leases again: forwarding works in every direction, and the api lists sessions again.
    redis.restart().await.unwrap();
    let via_a = until_status(&client, &a, &first_host, StatusCode::OK).await;
    assert_eq!(via_a.headers()[SERVED_BY], "relay-b");
    let via_b = until_status(&client, &b.addrs, &second_host, StatusCode::OK).await;
    assert_eq!(via_b.headers()[SERVED_BY], "relay-c");
    let via_c = until_status(&client, &c.addrs, &first_host, StatusCode::OK).await;
    assert_eq!(via_c.headers()[SERVED_BY], "relay-b");
    let listed = burrow_e2e::wait::until("the api to list sessions again", T, || async {
        let (status, body) = stack.ops_sessions().await.ok()?;
        // Each relay re-announces on its own tick after the restart: wait for all three,
        // not just the two holding sessions.
        let text = body.to_string();
        let relays = body["relays"].as_array().map_or(0, Vec::len);
        (status == StatusCode::OK && text.contains(&first) && text.contains(&second) && relays >= 3)
            .then_some(body)
    })
    .await;
    assert!(listed.is_ok(), "{listed:?}");
}

#[tokio::test]
async fn websockets_and_https_visitors_are_forwarded_to_the_holding_relay() {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use futures::{SinkExt, StreamExt};
    // Upstream: a WebSocket echo that upper-cases, and the scheme the visitor used elsewhere.
    let app = axum::Router::new()
        .route(
            "/ws",
            axum::routing::get(|ws: WebSocketUpgrade| async move {
                ws.on_upgrade(|mut socket| async move {
                    while let Some(Ok(Message::Text(t))) = socket.recv().await {
                        let reply = Message::Text(t.to_uppercase().into());
                        if socket.send(reply).await.is_err() {
                            break;
                        }
                    }
                })
            }),
        )
        .fallback(|headers: http::HeaderMap| async move {
            let proto = headers.get("x-forwarded-proto").cloned();
            format!(
                "proto={}",
                proto.as_ref().and_then(|p| p.to_str().ok()).unwrap_or("")
            )
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let stack = Stack::start().await.unwrap();
    let b = stack.spawn_extra_relay_on("b", "127.0.0.2").await.unwrap();
    let name = unique("ws");
    let host = format!("{name}.{}", stack.domain);
    let mut agent = stack
        .agent_via(
            &b.addrs.agent,
            &["http", &port.to_string(), "--name", &name],
            &stack.creds.authtoken,
        )
        .unwrap();
    agent.wait_line("Forwarding", T).await.unwrap();

    // A WebSocket opened on relay A talks to the service behind relay B.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/ws",
            stack.relay.http
        ))
        .unwrap();
    request.headers_mut().insert("host", host.parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()[SERVED_BY], "relay-b");
    for word in ["over", "two", "relays"] {
        socket
            .send(tokio_tungstenite::tungstenite::Message::text(word))
            .await
            .unwrap();
        let reply = tokio::time::timeout(T, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), word.to_uppercase());
    }
    socket.close(None).await.unwrap();

    // HTTPS terminated by relay A (h2) is forwarded, and the service learns it was https.
    let https = stack.relay.https.clone().unwrap();
    let ca = std::fs::read(stack.relay.ca_file.clone().unwrap()).unwrap();
    let conn = burrow_e2e::tls::connect(&https, &host, &ca, &[b"h2"])
        .await
        .unwrap();
    let answer = burrow_e2e::tls::get(conn, &host, "/").await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, "proto=https");
    assert_eq!(answer.headers[SERVED_BY], "relay-b");
}

#[tokio::test]
async fn an_api_and_a_relay_started_while_redis_is_down_join_when_it_returns() {
    let mut redis = PrivateRedis::start().await.unwrap();
    redis.stop().await;
    let stack = Stack::start_with(StackOptions {
        redis_url: Some(redis.url()),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let name = unique("early");
    let (port, _) = echo().await;
    let (_agent, _) = stack
        .online_agent(port, Some(&name), &stack.creds.authtoken)
        .await
        .unwrap();
    let host = format!("{name}.{}", stack.domain);
    let served = get(&visitor(), &stack.relay, &host).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    let (status, body) = stack.ops_sessions().await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.to_string().contains("redis is unreachable"), "{body}");

    redis.restart().await.unwrap();
    burrow_e2e::wait::until(
        "the api to list the session and relay-local to hold its lease",
        T,
        || async {
            let (status, body) = stack.ops_sessions().await.ok()?;
            // The relay announces itself, then refreshes the lease, in one tick.
            let listed = status == StatusCode::OK && body.to_string().contains(&name);
            (listed && lease(&stack, &name).await.as_deref() == Some("relay-local")).then_some(())
        },
    )
    .await
    .unwrap();
}
