//! The relay-to-relay link: a visitor who reaches this relay for an HTTP endpoint another relay
//! holds (per its [`crate::lease`]) is forwarded there.
//!
//! **Sending side** ([`forward_elsewhere`], called by the ingress when its own registry does
//! not serve the name): the request goes over HTTP/1.1 to the holder's `peer_url` (from its
//! Redis announcement) with
//! - [`AUTH_HEADER`]: a credential derived from the shared `internal_key` ([`credential`]);
//! - [`HOP_HEADER`]: the forwarding relay's id — the hop marker;
//! - [`VISITOR_HEADER`] / [`PROTO_HEADER`]: the visitor's address and the scheme it used.
//!
//! Bodies stream both ways; a WebSocket upgrade is carried as an HTTP/1.1 upgrade and both
//! upgraded streams are joined. The answer carries [`SERVED_BY_HEADER`] naming the relay that
//! served it.
//!
//! **Receiving side** ([`serve`], on `peer_listen`): a request without the right credential is
//! answered 401 and never routed ([`admit`], constant-time comparison). An admitted request is
//! served exactly as the ingress serves its own visitors ([`crate::ingress::route`]: policy,
//! metering — the holder owns the endpoint), with the visitor address taken from
//! [`VISITOR_HEADER`] (trusted only here, behind the credential), so `X-Forwarded-For`, IP
//! rules and per-IP rate limits see the real visitor. It is marked [`ArrivedFromPeer`] and is
//! never forwarded again: one hop at most, so no loops, whatever the leases say.
//!
//! Not forwarded: TCP endpoints (ports are per relay) and TLS passthrough (SNI routing happens
//! before any HTTP exists). HTTPS terminated by the first relay is forwarded like HTTP.
//! The link itself is plain HTTP: run it on a private network.

use crate::Relay;
use burrow_common::{net, proxy, proxy::Body};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Carries [`credential`] on requests between relays.
pub const AUTH_HEADER: &str = "x-burrow-peer-auth";
/// The hop marker: id of the relay that forwarded the request.
pub const HOP_HEADER: &str = "x-burrow-hop";
/// The visitor's `ip:port` as the forwarding relay saw it.
pub const VISITOR_HEADER: &str = "x-burrow-peer-visitor";
/// `http` or `https`: how the visitor reached the forwarding relay.
pub const PROTO_HEADER: &str = "x-burrow-peer-proto";
/// On forwarded answers: the id of the relay that served the request.
pub const SERVED_BY_HEADER: &str = "x-burrow-relay";

/// The headers of the relay link: stripped from every request before it reaches an agent.
pub const PEER_HEADERS: [&str; 4] = [AUTH_HEADER, HOP_HEADER, VISITOR_HEADER, PROTO_HEADER];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The peer-link credential for `internal_key`: a hash, so the key the api also accepts is
/// never sent to other relays' listeners.
pub fn credential(internal_key: &str) -> String {
    burrow_common::token::hash(&format!("burrow-peer-link/v1:{internal_key}"))
}

/// Marks a request that came over the peer link: it is served here or not at all.
#[derive(Debug, Clone)]
pub struct ArrivedFromPeer {
    /// The relay that forwarded it.
    pub from: String,
}

/// What the peer link needs: a pooled client and the credential.
pub struct PeerLink {
    client: Client<HttpConnector, Body>,
    credential: String,
}

impl PeerLink {
    /// A link authenticated with `internal_key`.
    pub fn new(internal_key: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .pool_timer(TokioTimer::new())
                .build(connector),
            credential: credential(internal_key),
        }
    }
}

/// Why a request on the peer listener is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No or a wrong credential.
    Unauthorized,
    /// Authenticated, but not a forwarded request (no hop marker, no visitor address).
    Malformed(&'static str),
}

/// An admitted forwarded request.
#[derive(Debug, PartialEq, Eq)]
pub struct Arrival {
    /// The relay that forwarded it.
    pub from: String,
    /// The original visitor.
    pub visitor: SocketAddr,
    /// The scheme the visitor used.
    pub scheme: &'static str,
}

/// Checks a request on the peer listener against `expected` (the credential) and removes the
/// peer headers from it.
pub fn admit(headers: &mut HeaderMap, expected: &str) -> Result<Arrival, Refusal> {
    let presented = headers
        .get(AUTH_HEADER)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let ok: bool = subtle::ConstantTimeEq::ct_eq(presented.as_slice(), expected.as_bytes()).into();
    if !ok || expected.is_empty() {
        return Err(Refusal::Unauthorized);
    }
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let from = text(HOP_HEADER)
        .filter(|f| !f.is_empty())
        .ok_or(Refusal::Malformed("no hop marker"))?;
    let visitor = text(VISITOR_HEADER)
        .and_then(|v| v.parse().ok())
        .ok_or(Refusal::Malformed("no visitor address"))?;
    let scheme = match text(PROTO_HEADER).as_deref() {
        Some("https") => "https",
        _ => "http",
    };
    for name in PEER_HEADERS {
        headers.remove(name);
    }
    Ok(Arrival {
        from,
        visitor,
        scheme,
    })
}

/// Serves forwarded requests on `listener` until `shutdown`.
pub async fn serve(relay: Arc<Relay>, listener: TcpListener, shutdown: CancellationToken) {
    while let Some((tcp, remote)) = net::accept(&listener, &shutdown, "peer link").await {
        let relay = relay.clone();
        tokio::spawn(async move {
            let header_timeout = Duration::from_secs(relay.config.header_read_timeout_secs);
            let service = hyper::service::service_fn(move |req| {
                let relay = relay.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&relay, req, remote).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // The ingress's limits: a peer is trusted only after its headers were read.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(crate::ingress::MAX_HEADER_BYTES);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(crate::ingress::MAX_HEADER_BYTES as u32);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %remote, "peer connection error");
            }
        });
    }
}

async fn handle(relay: &Relay, mut req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    let arrival = match admit(req.headers_mut(), &relay.peer.credential) {
        Ok(a) => a,
        Err(refusal) => {
            metrics::counter!("burrow_relay_peer_refused_total").increment(1);
            tracing::warn!(%remote, ?refusal, "peer link request refused");
            return match refusal {
                Refusal::Unauthorized => proxy::text_response(
                    StatusCode::UNAUTHORIZED,
                    "Burrow: the relay link needs the relays' credential.\n".into(),
                    "relay",
                ),
                Refusal::Malformed(why) => proxy::text_response(
                    StatusCode::BAD_REQUEST,
                    format!("Burrow: not a forwarded request: {why}.\n"),
                    "relay",
                ),
            };
        }
    };
    let span = tracing::debug_span!("peer", from = %arrival.from, visitor = %arrival.visitor);
    req.extensions_mut()
        .insert(ArrivedFromPeer { from: arrival.from });
    let mut resp = crate::ingress::route(relay, req, arrival.visitor, arrival.scheme)
        .instrument(span)
        .await;
    if let Ok(v) = HeaderValue::from_str(relay.presence.relay_id()) {
        resp.headers_mut().insert(SERVED_BY_HEADER, v);
    }
    resp
}

/// Forwards `req` for endpoint `name` (visitor `host`) to the relay holding its lease.
/// `None` when it cannot be forwarded — it came over the peer link already, or no other relay
/// holds the name (or Redis cannot tell) — and the ingress answers as it would alone.
pub async fn forward_elsewhere(
    relay: &Relay,
    mut req: Request<Incoming>,
    name: &str,
    host: &str,
    visitor: SocketAddr,
    scheme: &'static str,
) -> Option<Response<Body>> {
    if req.extensions().get::<ArrivedFromPeer>().is_some() {
        return None;
    }
    let holder = relay.presence.holder(name).await?;
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_owned();
    let uri: Uri = match format!("{}{path}", holder.peer_url.trim_end_matches('/')).parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, peer_url = %holder.peer_url, "bad peer_url in announcement");
            return None;
        }
    };
    let websocket = proxy::is_websocket_upgrade(req.headers());
    let visitor_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let headers = &mut parts.headers;
    proxy::strip_hop_by_hop(headers);
    if websocket {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    let set = |headers: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set(headers, header::HOST.as_str(), host);
    set(headers, AUTH_HEADER, &relay.peer.credential);
    set(headers, HOP_HEADER, relay.presence.relay_id());
    set(headers, VISITOR_HEADER, &visitor.to_string());
    set(headers, PROTO_HEADER, scheme);
    let out = Request::from_parts(parts, proxy::incoming(body));

    let outcome = |o: &'static str| {
        metrics::counter!("burrow_relay_peer_forwarded_total", "outcome" => o).increment(1);
    };
    match relay.peer.client.request(out).await {
        Ok(resp) => {
            outcome("forwarded");
            if let (Some(visitor), StatusCode::SWITCHING_PROTOCOLS) =
                (visitor_upgrade, resp.status())
            {
                return Some(join_upgrades(visitor, resp));
            }
            let (mut parts, body) = resp.into_parts();
            proxy::strip_hop_by_hop(&mut parts.headers);
            Some(Response::from_parts(parts, proxy::incoming(body)))
        }
        Err(e) => {
            outcome("failed");
            tracing::info!(error = %e, %host, relay = %holder.relay_id, "forwarding to the holding relay failed");
            Some(proxy::text_response(
                StatusCode::BAD_GATEWAY,
                format!(
                    "Burrow: the tunnel {host} is served by relay {}, which cannot be reached ({e}).\n",
                    holder.relay_id
                ),
                "relay",
            ))
        }
    }
}

/// The holding relay switched protocols: answer the visitor 101 with its headers and join the
/// two upgraded streams (the holder meters the bytes).
fn join_upgrades(visitor: hyper::upgrade::OnUpgrade, peer: Response<Incoming>) -> Response<Body> {
    let mut resp = Response::new(proxy::full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = peer.headers().clone();
    let peer = hyper::upgrade::on(peer);
    tokio::spawn(async move {
        match (visitor.await, peer.await) {
            (Ok(v), Ok(p)) => {
                let (mut v, mut p) = (TokioIo::new(v), TokioIo::new(p));
                if let Err(e) = tokio::io::copy_bidirectional(&mut v, &mut p).await {
                    tracing::debug!(error = %e, "forwarded websocket ended");
                }
            }
            (v, p) => {
                tracing::info!(visitor = ?v.err(), peer = ?p.err(), "forwarded websocket upgrade failed")
            }
        }
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTH_HEADER, HeaderValue::from_str(auth).unwrap());
        h.insert(HOP_HEADER, HeaderValue::from_static("relay-a"));
        h.insert(VISITOR_HEADER, HeaderValue::from_static("203.0.113.7:5555"));
        h.insert(PROTO_HEADER, HeaderValue::from_static("https"));
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        h
    }

    #[test]
    fn the_credential_is_derived_and_differs_per_key() {
        let c = credential("ik_one");
        assert_eq!(c, credential("ik_one"));
        assert_ne!(c, credential("ik_two"));
        assert!(!c.contains("ik_one"));
    }

    #[test]
    fn a_forwarded_request_is_admitted_and_loses_the_peer_headers() {
        let cred = credential("ik");
        let mut h = forwarded(&cred);
        let arrival = admit(&mut h, &cred).unwrap();
        assert_eq!(
            arrival,
            Arrival {
                from: "relay-a".into(),
                visitor: "203.0.113.7:5555".parse().unwrap(),
                scheme: "https",
            }
        );
        for name in PEER_HEADERS {
            assert!(!h.contains_key(name), "{name} left in");
        }
        // The visitor's own chain goes on unchanged.
        assert_eq!(h["x-forwarded-for"], "198.51.100.1");
    }

    #[test]
    fn without_the_credential_nothing_is_admitted() {
        let cred = credential("ik");
        let mut wrong = forwarded(&credential("other"));
        assert_eq!(admit(&mut wrong, &cred), Err(Refusal::Unauthorized));
        let mut missing = forwarded("x");
        missing.remove(AUTH_HEADER);
        assert_eq!(admit(&mut missing, &cred), Err(Refusal::Unauthorized));
        // The visitor address is not trusted, nor stripped, on a refused request.
        assert!(missing.contains_key(VISITOR_HEADER));
        // An empty expected credential (misconfiguration) admits nobody.
        let mut empty = forwarded("");
        assert_eq!(admit(&mut empty, ""), Err(Refusal::Unauthorized));
    }

    #[test]
    fn a_request_without_hop_marker_or_visitor_is_refused() {
        let cred = credential("ik");
        let mut no_hop = forwarded(&cred);
        no_hop.remove(HOP_HEADER);
        assert_eq!(
            admit(&mut no_hop, &cred),
            Err(Refusal::Malformed("no hop marker"))
        );
        let mut bad_visitor = forwarded(&cred);
        bad_visitor.insert(VISITOR_HEADER, HeaderValue::from_static("nope"));
        assert_eq!(
            admit(&mut bad_visitor, &cred),
            Err(Refusal::Malformed("no visitor address"))
        );
    }
}
