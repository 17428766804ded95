//! The data plane through real processes: agent → relay → visitor.

use burrow_e2e::Stack;
use reqwest::{Method, StatusCode};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `python3 -m http.server` serving a directory with one known file.
struct PyServer {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    port: u16,
}

async fn python_http_server() -> PyServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello-from-burrow.txt"), "hi\n").unwrap();
    let port = free_port();
    let child = tokio::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    burrow_e2e::wait::until("python http.server", T, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await
    .unwrap();
    PyServer {
        _child: child,
        _dir: dir,
        port,
    }
}

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

#[tokio::test]
async fn bodies_stream_both_ways_without_buffering() {
    use axum::{Router, body::Body, routing::get, routing::post};
    use futures::StreamExt;
    use tokio::sync::mpsc;

    // Upstream: GET /events sends one chunk, then the next only when the test allows it;
    // POST /upload counts the bytes it receives.
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

/// A stream fed by a producer task through a channel.
fn async_stream<F, Fut>(
    producer: F,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> + Send
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Result<String, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(producer(tx));
    tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
}

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
    let sessions: serde_json::Value = stack
        .api(Method::GET, "/v1/ops/sessions", &stack.creds.ops_api_key)
        .send()
        .await
        .unwrap()
        .json()
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
    let forbidden = stack
        .api(
            Method::GET,
            "/v1/ops/sessions",
            &stack.creds.developer_api_key,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);

    let revoked: serde_json::Value = stack
        .api(
            Method::DELETE,
            &format!("/v1/authtokens/{token_id}"),
            &admin,
        )
        .send()
        .await
        .unwrap()
        .json()
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
        .agent_with(&["http", "https://localhost:8443"], token)
        .unwrap();
    bad.expect_exit(64, "not supported yet").await.unwrap();
}

#[tokio::test]
async fn tcp_endpoint_relays_bytes_and_keeps_its_port_across_a_relay_restart() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Upstream: echoes every byte back, upper-cased.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    let mut stack = Stack::start().await.unwrap();
    let target = port.to_string();
    let mut agent = stack
        .agent_with(&["tcp", &target], &stack.creds.authtoken)
        .unwrap();
    let line = agent.wait_line("Forwarding", T).await.unwrap();
    let public = line
        .strip_prefix("Forwarding tcp://")
        .and_then(|rest| rest.split_once(' '))
        .map(|(addr, _)| addr.to_owned())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    assert!(line.ends_with(&format!("-> localhost:{port}")), "{line}");

    async fn echo(addr: &str, text: &[u8]) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(text).await.unwrap();
        s.shutdown().await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    }
    assert_eq!(echo(&public, b"hello burrow").await, b"HELLO BURROW");
    // 4 MiB each way, half-closed by the visitor.
    let big = vec![b'x'; 4 << 20];
    assert_eq!(echo(&public, &big).await, vec![b'X'; 4 << 20]);

    // The relay restarts; the agent reconnects and gets the same public port back.
    stack.restart_relay().await.unwrap();
    agent.wait_line("reconnected", T).await.unwrap();
    let again = burrow_e2e::wait::until("the TCP endpoint to answer again", T, || async {
        let mut s = tokio::net::TcpStream::connect(&public).await.ok()?;
        s.write_all(b"again").await.ok()?;
        s.shutdown().await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        (!out.is_empty()).then_some(out)
    })
    .await
    .unwrap();
    assert_eq!(again, b"AGAIN");
}

#[tokio::test]
async fn websocket_upgrades_pass_through_the_tunnel() {
    use axum::extract::ws::{Message, WebSocketUpgrade};
    use futures::{SinkExt, StreamExt};
    // Upstream: a WebSocket echo server that upper-cases text messages.
    let app = axum::Router::new().route(
        "/ws",
        axum::routing::get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                while let Some(Ok(msg)) = socket.recv().await {
                    if let Message::Text(t) = msg {
                        let reply = Message::Text(t.to_uppercase().into());
                        if socket.send(reply).await.is_err() {
                            break;
                        }
                    }
                }
            })
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let stack = Stack::start().await.unwrap();
    let (_agent, _) = stack
        .online_agent(port, Some("ws"), &stack.creds.authtoken)
        .await
        .unwrap();
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}/ws",
            stack.relay.http
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("host", "ws.burrow.localhost".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    for word in ["hello", "burrow", "tunnel"] {
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
}

#[tokio::test]
async fn grpc_over_h2c_reaches_an_http2_upstream_with_trailers_intact() {
    use burrow_proto::relay::{
        KickSessionRequest, KickSessionResponse, ListSessionsRequest, ListSessionsResponse,
        relay_control_client::RelayControlClient,
        relay_control_server::{RelayControl, RelayControlServer},
    };
    // Upstream: a gRPC server (h2c) — any service will do; this one is Burrow's own contract.
    struct Upstream;
    #[tonic::async_trait]
    impl RelayControl for Upstream {
        async fn list_sessions(
            &self,
            request: tonic::Request<ListSessionsRequest>,
        ) -> Result<tonic::Response<ListSessionsResponse>, tonic::Status> {
            Ok(tonic::Response::new(ListSessionsResponse {
                relay_id: format!("echo:{}", request.into_inner().account_id),
                sessions: vec![],
            }))
        }
        async fn kick_session(
            &self,
            _request: tonic::Request<KickSessionRequest>,
        ) -> Result<tonic::Response<KickSessionResponse>, tonic::Status> {
            Err(tonic::Status::not_found("no such session upstream"))
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RelayControlServer::new(Upstream))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let stack = Stack::start().await.unwrap();
    let target = port.to_string();
    let mut agent = stack
        .agent_with(
            &[
                "http",
                &target,
                "--name",
                "grpc",
                "--upstream-protocol",
                "http2",
            ],
            &stack.creds.authtoken,
        )
        .unwrap();
    agent.wait_line("Forwarding", T).await.unwrap();

    // The visitor speaks h2c with prior knowledge to the plain ingress, routed by :authority.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", stack.relay.http))
        .unwrap()
        .origin("http://grpc.burrow.localhost".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let mut client = RelayControlClient::new(channel);
    let reply = client
        .list_sessions(ListSessionsRequest {
            account_id: "acct-7".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.relay_id, "echo:acct-7");
    // A gRPC error lives in the trailers: it must arrive as sent.
    let err = client
        .kick_session(KickSessionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "no such session upstream");
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

#[tokio::test]
async fn tcp_endpoint_can_tell_the_local_service_the_visitor_address_with_proxy_protocol() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Upstream: reads a PROXY v2 header and answers with the source address it names.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 256];
                let header = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    match burrow_proto::proxy_protocol::decode_v2(&buf) {
                        Ok(Some(h)) => break h,
                        Ok(None) => continue,
                        Err(e) => {
                            let _ = s.write_all(format!("error: {e}").as_bytes()).await;
                            return;
                        }
                    }
                };
                let (source, _) = header.addresses.unwrap();
                let _ = s.write_all(source.to_string().as_bytes()).await;
            });
        }
    });

    let stack = Stack::start().await.unwrap();
    let target = port.to_string();
    let mut agent = stack
        .agent_with(
            &["tcp", &target, "--proxy-protocol"],
            &stack.creds.authtoken,
        )
        .unwrap();
    let line = agent.wait_line("Forwarding", T).await.unwrap();
    let public = line
        .strip_prefix("Forwarding tcp://")
        .and_then(|rest| rest.split_once(' '))
        .map(|(addr, _)| addr.to_owned())
        .unwrap();
    let mut visitor = tokio::net::TcpStream::connect(&public).await.unwrap();
    let me = visitor.local_addr().unwrap();
    let mut seen = String::new();
    tokio::time::timeout(T, visitor.read_to_string(&mut seen))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, me.to_string());
}
