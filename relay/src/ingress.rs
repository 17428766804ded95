//! Public HTTP ingress: routes each request by `Host: <name>.<domain>` to the agent session
//! that bound `<name>`, streaming bodies both ways.
//!
//! ACME HTTP-01 challenges (`/.well-known/acme-challenge/<token>`, any host) are answered
//! from Redis when it holds the token (see [`crate::acme`]), and routed as usual otherwise.
//!
//! Answers the relay gives itself (never the agent's):
//! - 400 when the request has no usable `Host`;
//! - 404 naming the host when no tunnel is bound to it;
//! - 502 when the tunnel's agent is offline or its connection fails mid-request.

use crate::Relay;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::{body::Incoming, client::conn::http2::SendRequest};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::metering::{CountedIo, Direction, EndpointMeter, count_body};
use burrow_common::{net, proxy, proxy::Body};
use burrow_proto::tunnel::ENDPOINT_HEADER;

/// Largest request head accepted (HTTP/1.1 read buffer, HTTP/2 header list): beyond it the
/// visitor gets 431 (HTTP/1.1) or a stream error, never unbounded buffering.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves visitors on the HTTP listener and, when given, the TLS one (see [`crate::https`])
/// until `shutdown`, then drains in-flight requests for up to `grace`.
pub async fn serve(
    relay: Arc<Relay>,
    listener: TcpListener,
    https: Option<(TcpListener, TlsAcceptor)>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    // Draining: once `shutdown` fires, new requests get 503 + Retry-After while the ones in
    // flight finish; when none is left (or `grace` ran out) the listener closes.
    // One grace period covers both phases (waiting for requests, then for connections).
    let drained = CancellationToken::new();
    let deadline = Arc::new(std::sync::OnceLock::new());
    {
        let (relay, drained) = (relay.clone(), drained.clone());
        let (shutdown, deadline) = (shutdown.clone(), deadline.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            let until = *deadline.get_or_init(|| tokio::time::Instant::now() + grace);
            relay.drain.start();
            tracing::info!("draining visitor requests");
            tokio::select! {
                _ = relay.drain.idle() => {}
                _ = tokio::time::sleep_until(until) => tracing::warn!("drain grace over with requests in flight"),
            }
            drained.cancel();
        });
    }
    let shutdown = drained;
    let graceful = GracefulShutdown::new();
    // Caps concurrent visitor connections (mini-redis style): at the cap, accepting pauses
    // until one closes, so a flood degrades into queueing instead of exhausting the relay.
    let slots = Arc::new(tokio::sync::Semaphore::new(
        relay.config.max_visitor_connections as usize,
    ));
    let accept_tls = async |l: Option<&TcpListener>| match l {
        Some(l) => net::accept(l, &shutdown, "tls ingress").await,
        None => std::future::pending().await,
    };
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            a = net::accept(&listener, &shutdown, "ingress") => a.map(|a| (a, false)),
            a = accept_tls(https.as_ref().map(|(l, _)| l)) => a.map(|a| (a, true)),
        };
        let Some(((tcp, peer), tls)) = accepted else {
            break;
        };
        let (relay, watcher) = (relay.clone(), graceful.watcher());
        match (&https, tls) {
            (Some((_, acceptor)), true) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Some(tls) = crate::https::accept(&relay, tcp, peer, &acceptor).await {
                        serve_connection(relay, tls, peer, "https", watcher).await;
                    }
                    drop(permit);
                });
            }
            _ => {
                tokio::spawn(async move {
                    serve_connection(relay, tcp, peer, "http", watcher).await;
                    drop(permit);
                });
            }
        }
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep_until(
            *deadline.get_or_init(|| tokio::time::Instant::now() + grace),
        ) => tracing::warn!("ingress drain timed out"),
    }
}

/// Serves HTTP/1.1 or HTTP/2 (prior knowledge, or ALPN `h2` on TLS) on one visitor connection.
async fn serve_connection<IO>(
    relay: Arc<Relay>,
    io: IO,
    peer: SocketAddr,
    scheme: &'static str,
    watcher: Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = Duration::from_secs(relay.config.header_read_timeout_secs);
    let service = hyper::service::service_fn(move |req| {
        let relay = relay.clone();
        async move { Ok::<_, std::convert::Infallible>(route(&relay, req, peer, scheme).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Without a timer hyper skips its header-read timeout: a client dribbling headers
    // would hold a connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, %peer, "ingress connection error");
    }
}

/// Decides where one visitor request goes and returns the response to send back.
pub async fn route(
    relay: &Relay,
    req: Request<Incoming>,
    peer: SocketAddr,
    scheme: &'static str,
) -> Response<Body> {
    let Some(_in_flight) = relay.drain.enter() else {
        let mut resp = relay_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            "Burrow: this relay is shutting down; retry shortly.\n".into(),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return resp;
    };
    if req.method() == http::Method::GET
        && req.uri().path().starts_with(crate::acme::HTTP01_PREFIX)
        && let Some(answer) = relay.acme.http01(req.uri().path()).await
    {
        return answer;
    }
    forward(relay, req, peer, scheme).await
}

async fn forward(
    relay: &Relay,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    scheme: &'static str,
) -> Response<Body> {
    let Some(host) = request_host(&req) else {
        return relay_answer(
            StatusCode::BAD_REQUEST,
            "Burrow: the request has no Host header, so no tunnel can be chosen.\n".into(),
        );
    };
    let Some(name) = relay.endpoint_name(&host) else {
        return not_found(&host);
    };
    let (senders, account_id) = match relay.registry.lookup(name) {
        // Not served here: another relay may hold it (see `peer`).
        crate::registry::Lookup::Unknown => {
            let elsewhere = crate::peer::forward_elsewhere(relay, req, name, &host, peer, scheme);
            return elsewhere.await.unwrap_or_else(|| not_found(&host));
        }
        crate::registry::Lookup::Offline(ago) => {
            let elsewhere = crate::peer::forward_elsewhere(relay, req, name, &host, peer, scheme);
            if let Some(answer) = elsewhere.await {
                return answer;
            }
            return relay_answer(
                StatusCode::BAD_GATEWAY,
                format!(
                    "Burrow: the tunnel {host} is offline: its agent disconnected {}s ago.\n",
                    ago.as_secs()
                ),
            );
        }
        crate::registry::Lookup::Online {
            senders,
            account_id,
            ..
        } => (senders, account_id),
    };
    let meter = relay.meter.endpoint(&account_id, name, "http");
    meter.add_request();

    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let uri = match Uri::builder()
        .scheme("http")
        .authority(host.as_str())
        .path_and_query(path)
        .build()
    {
        Ok(u) => u,
        Err(e) => {
            return relay_answer(
                StatusCode::BAD_REQUEST,
                format!("Burrow: invalid request target: {e}\n"),
            );
        }
    };
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_2;
    let websocket = proxy::is_websocket_upgrade(req.headers());
    // Take the visitor's upgrade handle before the request is consumed.
    let visitor_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let headers = req.headers_mut();
    proxy::strip_hop_by_hop(headers);
    // A visitor's own relay-link headers never reach the agent (forwarded requests had them
    // checked and removed on arrival).
    for name in crate::peer::PEER_HEADERS {
        headers.remove(name);
    }
    headers.remove(header::HOST);
    append_forwarded(headers, peer, &host, scheme);
    if let Ok(v) = HeaderValue::from_str(name) {
        headers.insert(ENDPOINT_HEADER, v);
    }

    let policies = relay.edge.policies(&account_id, name);
    let (req, facts) = if policies.is_empty() {
        (req.map(proxy::incoming), None)
    } else {
        match relay
            .enforcer
            .request(&policies, &account_id, name, peer.ip(), req)
            .await
        {
            Ok((req, facts)) => (req, Some(facts)),
            Err(answer) => return answer,
        }
    };

    let started = std::time::Instant::now();
    let mut req = req.map(|b| count_body(b, meter.clone(), Direction::In));
    if websocket {
        // HTTP/2 extended CONNECT (RFC 8441) carries the upgrade to the agent.
        *req.method_mut() = http::Method::CONNECT;
        req.extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
    }
    let result = send_to_any(senders, req).await;
    match result {
        Ok(resp) => {
            metrics::counter!("burrow_relay_http_requests_total", "outcome" => "forwarded")
                .increment(1);
            metrics::histogram!("burrow_relay_http_upstream_seconds")
                .record(started.elapsed().as_secs_f64());
            if let (Some(visitor), true) = (visitor_upgrade, resp.status() == StatusCode::OK) {
                return switch_protocols(visitor, resp, meter);
            }
            let (mut parts, body) = resp.into_parts();
            proxy::strip_hop_by_hop(&mut parts.headers);
            if let Some(facts) = &facts
                && let Some(answer) = relay.enforcer.response(&policies, facts, &mut parts)
            {
                return answer;
            }
            Response::from_parts(
                parts,
                count_body(proxy::incoming(body), meter, Direction::Out),
            )
        }
        Err(e) => {
            tracing::info!(error = %e, %host, "forwarding to agent failed");
            relay_answer(
                StatusCode::BAD_GATEWAY,
                format!(
                    "Burrow: the tunnel {host} is offline: the connection to its agent failed ({e}).\n"
                ),
            )
        }
    }
}

/// Sends `req` through the first session that takes it. A request refused before any of it
/// was written (the session's connection is gone) moves on to the next pool member, and so
/// does a bodiless GET/HEAD/OPTIONS whose session failed under it (safe to send again), so
/// losing one agent of a pool does not fail new requests.
async fn send_to_any(
    senders: Vec<SendRequest<Body>>,
    mut req: Request<Body>,
) -> Result<Response<Incoming>, String> {
    use http_body::Body as _;
    let resendable = (req.body().is_end_stream()
        && matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        ))
    .then(|| {
        (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        )
    });
    let mut last = "no agent session serves it".to_owned();
    let count = senders.len();
    for (i, mut sender) in senders.into_iter().enumerate() {
        if let Err(e) = sender.ready().await {
            last = e.to_string();
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(resp) => return Ok(resp),
            Err(mut e) => {
                let unsent = e.take_message();
                last = e.into_error().to_string();
                req = match (unsent, &resendable) {
                    (Some(unsent), _) => unsent,
                    (None, Some((method, uri, headers))) if i + 1 < count => {
                        metrics::counter!("burrow_relay_http_resent_total").increment(1);
                        let mut again = Request::new(proxy::full(bytes::Bytes::new()));
                        *again.method_mut() = method.clone();
                        *again.uri_mut() = uri.clone();
                        *again.headers_mut() = headers.clone();
                        *again.version_mut() = Version::HTTP_2;
                        again
                    }
                    (None, _) => return Err(last),
                };
            }
        }
    }
    Err(last)
}

/// The agent accepted a WebSocket: answer the visitor 101 with the local service's handshake
/// headers, then join the two upgraded streams.
fn switch_protocols(
    visitor: hyper::upgrade::OnUpgrade,
    agent: Response<Incoming>,
    meter: EndpointMeter,
) -> Response<Body> {
    meter.add_connection();
    let mut resp = Response::new(proxy::full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in agent.headers() {
        resp.headers_mut().append(name, value.clone());
    }
    proxy::strip_hop_by_hop(resp.headers_mut());
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let agent = hyper::upgrade::on(agent);
    tokio::spawn(async move {
        match (visitor.await, agent.await) {
            (Ok(v), Ok(a)) => {
                let (mut v, mut a) = (CountedIo::visitor(TokioIo::new(v), meter), TokioIo::new(a));
                if let Err(e) = tokio::io::copy_bidirectional(&mut v, &mut a).await {
                    tracing::debug!(error = %e, "websocket bridge ended");
                }
            }
            (v, a) => {
                tracing::info!(visitor = ?v.err(), agent = ?a.err(), "websocket upgrade failed")
            }
        }
    });
    metrics::counter!("burrow_relay_websockets_total").increment(1);
    resp
}

fn request_host(req: &Request<Incoming>) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))?;
    let host = raw.rsplit_once(':').map_or(raw.as_str(), |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            raw.as_str()
        }
    });
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

fn append_forwarded(
    headers: &mut http::HeaderMap,
    peer: SocketAddr,
    host: &str,
    scheme: &'static str,
) {
    let ip = peer.ip().to_string();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert("x-forwarded-host", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(scheme));
}

fn not_found(host: &str) -> Response<Body> {
    metrics::counter!("burrow_relay_http_requests_total", "outcome" => "not_found").increment(1);
    relay_answer(
        StatusCode::NOT_FOUND,
        format!("Burrow: no tunnel is bound to {host}.\n"),
    )
}

fn relay_answer(status: StatusCode, body: String) -> Response<Body> {
    proxy::text_response(status, body, "relay")
}
