//! Protocols beyond plain HTTP/1.1: TCP endpoints (with PROXY protocol), WebSocket upgrades
//! and gRPC over h2c.

use crate::support::*;
use burrow_e2e::Stack;

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
    let public = tcp_public_addr(&line);
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
    // Once the agent's data connections are parked, visitors ride them (the bulk path; the
    // first visitors may have used h2 streams on the session).
    let metrics = format!("http://{}/metrics", stack.relay.ops);
    burrow_e2e::wait::until("a visitor on a data connection", T, || async {
        assert_eq!(echo(&public, b"bulk").await, b"BULK");
        let text = reqwest::get(&metrics).await.ok()?.text().await.ok()?;
        text.lines()
            .any(|l| l.starts_with(r#"burrow_relay_tcp_connections_total{path="data"}"#))
            .then_some(())
    })
    .await
    .unwrap();
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
    let public = tcp_public_addr(&line);
    let mut visitor = tokio::net::TcpStream::connect(&public).await.unwrap();
    let me = visitor.local_addr().unwrap();
    let mut seen = String::new();
    tokio::time::timeout(T, visitor.read_to_string(&mut seen))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, me.to_string());
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
    // The visitor speaks h2c with prior knowledge to the plain ingress, routed by :authority.
    let (_stack, _agent, channel) = grpc_through_tunnel(
        tonic::transport::Server::builder().add_service(RelayControlServer::new(Upstream)),
        "grpc",
    )
    .await;
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
async fn grpc_streaming_calls_stream_both_ways_through_the_tunnel() {
    use burrow_e2e::echo::{
        Note,
        echo_client::EchoClient,
        echo_server::{Echo, EchoServer},
    };
    use futures::StreamExt;
    type Notes = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<Note, tonic::Status>> + Send + 'static>,
    >;
    struct Upstream;
    #[tonic::async_trait]
    impl Echo for Upstream {
        type ChatStream = Notes;
        type CountdownStream = Notes;
        async fn chat(
            &self,
            request: tonic::Request<tonic::Streaming<Note>>,
        ) -> Result<tonic::Response<Notes>, tonic::Status> {
            let incoming = request.into_inner();
            let out = incoming.map(|note| {
                note.map(|n| Note {
                    text: n.text.to_uppercase(),
                    seq: n.seq,
                })
            });
            Ok(tonic::Response::new(Box::pin(out)))
        }
        async fn countdown(
            &self,
            request: tonic::Request<Note>,
        ) -> Result<tonic::Response<Notes>, tonic::Status> {
            let from = request.into_inner().seq;
            let notes = (0..from).rev().map(|seq| {
                Ok(Note {
                    text: format!("t-{seq}"),
                    seq,
                })
            });
            Ok(tonic::Response::new(Box::pin(futures::stream::iter(notes))))
        }
    }
    let (_stack, _agent, channel) = grpc_through_tunnel(
        tonic::transport::Server::builder().add_service(EchoServer::new(Upstream)),
        "stream",
    )
    .await;
    let mut client = EchoClient::new(channel);

    // Bidirectional: each note's answer arrives before the next note is sent, so neither
    // direction is buffered anywhere on the way.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut answers = client
        .chat(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for (seq, word) in ["tunnel", "streams", "both", "ways"].iter().enumerate() {
        tx.send(Note {
            text: word.to_string(),
            seq: seq as u32,
        })
        .unwrap();
        let answer = tokio::time::timeout(T, answers.next())
            .await
            .expect("answer before the next note")
            .unwrap()
            .unwrap();
        assert_eq!((answer.text, answer.seq), (word.to_uppercase(), seq as u32));
    }
    drop(tx);
    assert!(
        answers.next().await.is_none(),
        "the call ends when the client ends"
    );

    // Server streaming.
    let notes: Vec<u32> = client
        .countdown(Note {
            text: String::new(),
            seq: 5,
        })
        .await
        .unwrap()
        .into_inner()
        .map(|n| n.unwrap().seq)
        .collect()
        .await;
    assert_eq!(notes, vec![4, 3, 2, 1, 0]);
}

/// Serves `router` (a tonic server) on a free port; starts a stack and an agent forwarding
/// `name` to it over h2c; returns them with a gRPC channel to `<name>.<domain>` through the
/// relay's plain ingress (h2c with prior knowledge, routed by `:authority`).
async fn grpc_through_tunnel(
    router: tonic::transport::server::Router,
    name: &str,
) -> (Stack, burrow_e2e::Agent, tonic::transport::Channel) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let stack = Stack::start().await.unwrap();
    let target = port.to_string();
    let mut agent = stack
        .agent_with(
            &[
                "http",
                &target,
                "--name",
                name,
                "--upstream-protocol",
                "http2",
            ],
            &stack.creds.authtoken,
        )
        .unwrap();
    agent.wait_line("Forwarding", T).await.unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", stack.relay.http))
        .unwrap()
        .origin(format!("http://{name}.burrow.localhost").parse().unwrap())
        .connect()
        .await
        .unwrap();
    (stack, agent, channel)
}
