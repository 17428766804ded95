//! Bad input at the public edge: conflicting framing (request smuggling), oversized and
//! malformed heads, slow-header clients and connection floods get a 4xx or a closed
//! connection — never a desync, a panic or a stuck relay.

use crate::support::*;
use burrow_e2e::{Stack, StackOptions};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A local service recording every path it is asked for.
async fn recording_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    use axum::{Router, extract::Request};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = Router::new().fallback(move |req: Request| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(req.uri().path().to_owned());
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, seen)
}

/// Writes `raw` on a fresh connection to `addr` and reads until the relay closes it (or T).
async fn exchange(addr: &str, raw: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn smuggling_oversized_and_malformed_requests_are_refused_cleanly() {
    let (port, seen) = recording_server().await;
    let stack = Stack::start().await.unwrap();
    let (_agent, _) = stack
        .online_agent(port, Some("edge"), &stack.creds.authtoken)
        .await
        .unwrap();
    let addr = stack.relay.http.clone();
    let host = "edge.burrow.localhost";

    // Content-Length and Transfer-Encoding together, with a second request hidden in the
    // body: the smuggled request must never reach the local service as a request of its own.
    let smuggle = format!(
        "POST /front HTTP/1.1\r\nHost: {host}\r\nContent-Length: 44\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    // hyper frames such a request by Transfer-Encoding (RFC 9112 §6.3) and closes the
    // connection after answering it, so the bytes after the chunked body are never read as a
    // request: one answer, then a closed connection.
    let answer = exchange(&addr, smuggle.as_bytes()).await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(
        answer.starts_with("HTTP/1.1 400") || answer.contains("connection: close"),
        "{answer}"
    );
    // Two Content-Lengths that disagree.
    let twice = format!(
        "POST /twice HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
    );
    let answer = exchange(&addr, twice.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // A head larger than the relay accepts.
    let big = format!(
        "GET /big HTTP/1.1\r\nHost: {host}\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(128 * 1024)
    );
    let answer = exchange(&addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Not HTTP at all.
    let answer = exchange(&addr, b"\x16\x03\x01garbage\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // The relay is still healthy; the local service saw no smuggled or refused request.
    let resp = stack
        .ingress(reqwest::Method::GET, "edge", "/after")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.last().map(String::as_str), Some("/after"), "{seen:?}");
    for refused in ["/smuggled", "/twice", "/big"] {
        assert!(
            !seen.iter().any(|p| p == refused),
            "{refused} reached the service: {seen:?}"
        );
    }
}

/// A stack whose relay runs with `env`, and an agent serving `cap` on it.
async fn stack_with(env: &[(&str, &str)]) -> (Stack, burrow_e2e::Agent) {
    let (port, _) = recording_server().await;
    let stack = Stack::start_with(StackOptions {
        relay_env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let (agent, _) = stack
        .online_agent(port, Some("cap"), &stack.creds.authtoken)
        .await
        .unwrap();
    (stack, agent)
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let (stack, _agent) = stack_with(&[("BURROW_RELAY_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let answer = exchange(
        &stack.relay.http,
        b"GET / HTTP/1.1\r\nHost: cap.burrow.localhost\r\n",
    )
    .await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_connection_flood_waits_at_the_cap() {
    let (stack, _agent) = stack_with(&[("BURROW_RELAY_MAX_VISITOR_CONNECTIONS", "3")]).await;
    let addr = stack.relay.http.clone();

    // Three keep-alive connections hold every slot; a fourth is accepted by the kernel but
    // not served until one of them closes.
    let request = b"GET / HTTP/1.1\r\nHost: cap.burrow.localhost\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let mut waiting = tokio::net::TcpStream::connect(&addr).await.unwrap();
    waiting.write_all(request).await.unwrap();
    let mut buf = [0u8; 512];
    assert!(
        tokio::time::timeout(
            std::time::Duration::from_millis(500),
            waiting.read(&mut buf)
        )
        .await
        .is_err(),
        "served beyond the connection cap"
    );
    drop(held.pop());
    let n = tokio::time::timeout(T, waiting.read(&mut buf))
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}
