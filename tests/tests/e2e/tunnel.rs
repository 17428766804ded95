//! HTTP through the tunnel: the local service answers visitors, bodies stream, and the relay
//! and agent answer 404/502 themselves when they must.

use crate::support::*;
use burrow_e2e::Stack;
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn http_tunnel_serves_a_local_directory_listing() {
    let stack = Stack::start().await.unwrap();
    let py = python_http_server().await;
    let (_agent, line) = stack
        .online_agent(py.port, Some("demo"), &stack.creds.authtoken)
        .await
        .unwrap();
    let ingress_port = stack.relay.http.rsplit_once(':').unwrap().1;
    assert_eq!(
        line,
        format!(
            "Forwarding http://demo.burrow.localhost:{ingress_port} -> http://localhost:{}",
            py.port
        )
    );

    let resp = stack
        .ingress(Method::GET, "demo", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.text().await.unwrap();
    assert!(body.contains("Directory listing"), "{body}");
    assert!(body.contains("hello-from-burrow.txt"), "{body}");

    let file = stack
        .ingress(Method::GET, "demo", "/hello-from-burrow.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(file.text().await.unwrap(), "hi\n");
}

#[tokio::test]
async fn unknown_host_is_404_and_offline_agent_is_502() {
    let stack = Stack::start().await.unwrap();
    let resp = stack
        .ingress(Method::GET, "nobody", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body = resp.text().await.unwrap();
    assert!(body.contains("nobody.burrow.localhost"), "{body}");

    let py = python_http_server().await;
    let (mut agent, _) = stack
        .online_agent(py.port, Some("gone"), &stack.creds.authtoken)
        .await
        .unwrap();
    assert_eq!(
        stack
            .ingress(Method::GET, "gone", "/")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    agent.child.kill().await.unwrap();
    let body = burrow_e2e::wait::until("the relay to notice the agent left", T, || async {
        let r = stack.ingress(Method::GET, "gone", "/").send().await.ok()?;
        (r.status() == StatusCode::BAD_GATEWAY).then_some(r.text().await.ok()?)
    })
    .await
    .unwrap();
    assert!(body.contains("gone.burrow.localhost is offline"), "{body}");

    // A local service that is down: the agent answers 502 naming the target.
    let dead_port = free_port();
    let (_agent, _) = stack
        .online_agent(dead_port, Some("dead"), &stack.creds.authtoken)
        .await
        .unwrap();
    let r = stack
        .ingress(Method::GET, "dead", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let body = r.text().await.unwrap();
    assert!(body.contains(&format!("localhost:{dead_port}")), "{body}");
}

/// A local service for streaming tests: `GET /events` sends one server-sent event, then the
/// next only when the returned sender allows it; `POST /upload` answers how many bytes it
/// received.
async fn streaming_upstream() -> (u16, tokio::sync::mpsc::UnboundedSender<()>) {
    use axum::{Router, body::Body, routing::get, routing::post};
    use futures::StreamExt;
    use tokio::sync::mpsc;
    let (release_tx, release_rx) = mpsc::unbounded_channel::<()>();
    let release_rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let app = Router::new()
        .route(
            "/events",
            get(move || {
                let rx = release_rx.clone();
                async move {
                    let mut rx = rx.lock().await.take().expect("one stream");
                    let stream = async_stream(move |tx| async move {
                        let _ = tx.send(Ok::<_, std::io::Error>("data: one\n\n".to_owned()));
                        rx.recv().await;
                        let _ = tx.send(Ok("data: two\n\n".to_owned()));
                    });
                    axum::response::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(Body::from_stream(stream))
                        .unwrap()
                }
            }),
        )
        .route(
            "/upload",
            post(|body: Body| async move {
                let mut n = 0usize;
                let mut s = body.into_data_stream();
                while let Some(chunk) = s.next().await {
                    n += chunk.unwrap().len();
                }
                n.to_string()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, release_tx)
}

#[tokio::test]
async fn bodies_stream_both_ways_without_buffering() {
    use futures::StreamExt;
    let (port, release_tx) = streaming_upstream().await;
    let stack = Stack::start().await.unwrap();
    let (_agent, _) = stack
        .online_agent(port, Some("stream"), &stack.creds.authtoken)
        .await
        .unwrap();

    let resp = stack
        .ingress(Method::GET, "stream", "/events")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    // The first event must arrive while the upstream is still holding back the second.
    let first = tokio::time::timeout(T, body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"data: one\n\n");
    release_tx.send(()).unwrap();
    let second = tokio::time::timeout(T, body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&second[..], b"data: two\n\n");

    // 16 MiB upload, sent as a stream of 64 KiB chunks.
    let chunks = futures::stream::iter(
        (0..256).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 64 * 1024]))),
    );
    let resp = stack
        .ingress(Method::POST, "stream", "/upload")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), (16 * 1024 * 1024).to_string());
}

#[tokio::test]
async fn host_header_is_preserved_rewritten_or_set_and_targets_take_host_port() {
    use axum::{Router, http::HeaderMap, routing::get};
    let app = Router::new().route(
        "/",
        get(|headers: HeaderMap| async move {
            headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_owned()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let stack = Stack::start().await.unwrap();
    let token = &stack.creds.authtoken;
    let cases = [
        ("keep", vec![], "keep.burrow.localhost".to_owned()),
        ("rw", vec!["--host-header", "rewrite"], local.clone()),
        (
            "lit",
            vec!["--host-header", "app.test"],
            "app.test".to_owned(),
        ),
    ];
    let mut agents = Vec::new();
    for (name, extra, expected) in cases {
        let target = format!("http://{local}");
        let mut args = vec!["http", target.as_str(), "--name", name];
        args.extend(extra);
        let mut agent = stack.agent_with(&args, token).unwrap();
        let line = agent.wait_line("Forwarding", T).await.unwrap();
        assert!(line.ends_with(&format!("-> http://{local}")), "{line}");
        let seen = stack
            .ingress(Method::GET, name, "/")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(seen, expected, "{name}: the Host the upstream saw");
        agents.push(agent);
    }

    // A target the agent cannot use is refused before connecting, naming the problem.
    let mut bad = stack
        .agent_with(&["http", "ftp://localhost:21"], token)
        .unwrap();
    bad.expect_exit(64, "scheme ftp:// is not supported")
        .await
        .unwrap();
}

#[tokio::test]
async fn curl_sees_sse_as_written_and_uploads_chunked_over_http1() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let (port, release_tx) = streaming_upstream().await;
    let stack = Stack::start().await.unwrap();
    let (_agent, _) = stack
        .online_agent(port, Some("curl"), &stack.creds.authtoken)
        .await
        .unwrap();
    let host = format!("Host: curl.{}", stack.domain);
    let url = |path: &str| format!("http://{}{path}", stack.relay.http);

    // SSE: curl prints the first event while the service still holds back the second.
    let mut sse = tokio::process::Command::new("curl")
        .args(["-sS", "-N", "--http1.1", "-H", &host, &url("/events")])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sse.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(T, lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some("data: one"));
    release_tx.send(()).unwrap();
    let mut rest = Vec::new();
    while let Some(line) = tokio::time::timeout(T, lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        rest.push(line);
    }
    assert_eq!(rest, ["", "data: two", ""]);
    assert!(sse.wait().await.unwrap().success());

    // A chunked upload of 3 MiB from curl's stdin.
    let mut upload = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--http1.1",
            "-H",
            &host,
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "@-",
            &url("/upload"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = upload.stdin.take().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(&vec![b'z'; 3 << 20]).await.unwrap();
    });
    let out = upload.wait_with_output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), (3 << 20).to_string());
}
