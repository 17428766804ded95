//! TCP endpoints: public ports allocated from the relay's range; each visitor connection is
//! relayed as one HTTP/2 stream to the agent (request body: visitor → agent bytes, response
//! body: agent → visitor bytes), so TCP rides the same session, heartbeats and close reasons as
//! HTTP.
//!
//! A port's listener starts when the port is first bound and keeps running; while no session
//! routes the port (agent offline, name expired) its visitors are closed at once. A reconnecting
//! agent asks for the port it held, and gets it back unless another account took it.

use crate::Relay;
use crate::metering::{CountedIo, EndpointMeter};
use burrow_common::proxy::{self, Body};
use burrow_proto::tunnel::{
    ENDPOINT_HEADER, PUBLIC_HEADER, RejectCode, TCP_AUTHORITY, VISITOR_HEADER,
};
use bytes::Bytes;
use hyper::client::conn::http2::SendRequest;
use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};
use tokio::net::{TcpListener, TcpStream};

/// Registry key of the TCP endpoint on `port` (`:` cannot appear in an HTTP name, so the two
/// kinds never collide).
pub fn endpoint_name(port: u16) -> String {
    format!("tcp:{port}")
}

/// Parses `first-last` (inclusive).
pub fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a port range like 20000-20999"))?;
    let first: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a port"))?;
    let last: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a port"))?;
    if first == 0 || first > last {
        return Err(format!("{s:?} must be first-last with 0 < first <= last"));
    }
    Ok((first, last))
}

/// The ports this relay listens on for TCP endpoints.
pub struct TcpPorts {
    first: u16,
    last: u16,
    listen_host: String,
    listening: Mutex<HashSet<u16>>,
}

impl TcpPorts {
    /// Ports `first..=last` on `listen_host`.
    pub fn new(first: u16, last: u16, listen_host: &str) -> Self {
        Self {
            first,
            last,
            listen_host: listen_host.to_owned(),
            listening: Mutex::new(HashSet::new()),
        }
    }

    fn is_listening(&self, port: u16) -> bool {
        self.listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&port)
    }

    /// Chooses the port for a TCP bind (`requested` when possible) and makes sure it listens.
    pub async fn allocate(
        relay: &Arc<Relay>,
        requested: Option<u16>,
    ) -> Result<u16, (RejectCode, String)> {
        let ports = &relay.tcp;
        if let Some(p) = requested {
            if !(ports.first..=ports.last).contains(&p) {
                return Err((
                    RejectCode::InvalidName,
                    format!(
                        "port {p} is outside this relay's TCP range {}-{}",
                        ports.first, ports.last
                    ),
                ));
            }
            // The session bind that follows refuses it if another account holds the port.
            if ports.is_listening(p) || Self::listen(relay, p).await {
                return Ok(p);
            }
        }
        for p in ports.first..=ports.last {
            if relay.registry.is_routed(&endpoint_name(p)) {
                continue;
            }
            if ports.is_listening(p) || Self::listen(relay, p).await {
                return Ok(p);
            }
        }
        Err((
            RejectCode::Unavailable,
            format!("no free TCP port left in {}-{}", ports.first, ports.last),
        ))
    }

    /// Starts the listener for `port`; false when the port cannot be bound.
    async fn listen(relay: &Arc<Relay>, port: u16) -> bool {
        let listener = match TcpListener::bind((relay.tcp.listen_host.as_str(), port)).await {
            Ok(l) => l,
            Err(_) => return false,
        };
        relay
            .tcp
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port);
        tokio::spawn(serve_port(relay.clone(), listener, port));
        true
    }
}

async fn serve_port(relay: Arc<Relay>, listener: TcpListener, port: u16) {
    let name = endpoint_name(port);
    let public = listener.local_addr().ok();
    while let Some((visitor, peer)) =
        burrow_common::net::accept(&listener, &relay.stop, "tcp endpoint").await
    {
        match relay.registry.lookup(&name) {
            crate::registry::Lookup::Online {
                senders,
                session_ids,
                account_id,
            } => {
                if relay
                    .enforcer
                    .refuses_connection(&relay.edge, &account_id, &name, peer.ip())
                {
                    continue;
                }
                let meter = relay.meter.endpoint(&account_id, &name, "tcp");
                // The bulk path: an idle data connection of a serving session.
                if let Some(conn) = take_data(&relay, &session_ids).await {
                    metrics::counter!("burrow_relay_tcp_connections_total", "path" => "data")
                        .increment(1);
                    let name = name.clone();
                    tokio::spawn(async move {
                        let prefix = Bytes::new();
                        if let Err(e) = crate::data::relay_visitor(
                            conn, prefix, visitor, peer, public, &name, meter,
                        )
                        .await
                        {
                            tracing::debug!(error = %e, %peer, port, "tcp visitor connection ended");
                        }
                    });
                    continue;
                }
                let Some(sender) = first_open(senders) else {
                    continue;
                };
                metrics::counter!("burrow_relay_tcp_connections_total", "path" => "stream")
                    .increment(1);
                let name = name.clone();
                tokio::spawn(async move {
                    let prefix = Bytes::new();
                    if let Err(e) =
                        relay_connection(sender, prefix, visitor, peer, public, &name, meter).await
                    {
                        tracing::debug!(error = %e, %peer, port, "tcp visitor connection ended");
                    }
                });
            }
            // Nobody serves the port right now: close the visitor at once.
            _ => drop(visitor),
        }
    }
}

/// An open idle data connection of the first serving session that has one.
pub async fn take_data(relay: &Relay, session_ids: &[String]) -> Option<crate::data::DataConn> {
    for s in session_ids {
        if let Some(conn) = relay.data.take(s).await {
            return Some(conn);
        }
    }
    None
}

/// The first member whose session connection is still open.
pub fn first_open(senders: Vec<SendRequest<Body>>) -> Option<SendRequest<Body>> {
    senders.into_iter().find(|s| !s.is_closed())
}

/// Relays one visitor connection as an h2 stream to the agent serving `endpoint` (a registry
/// key: `tcp:<port>` or `tls:<name>`). `prefix` holds bytes already read from the visitor (a
/// peeked ClientHello); they go first.
pub async fn relay_connection(
    mut sender: SendRequest<Body>,
    prefix: Bytes,
    visitor: TcpStream,
    peer: std::net::SocketAddr,
    public: Option<std::net::SocketAddr>,
    endpoint: &str,
    meter: EndpointMeter,
) -> Result<(), proxy::BodyError> {
    use tokio::io::AsyncReadExt;
    meter.add_connection();
    let (read, write) = visitor.into_split();
    let read = CountedIo::visitor(std::io::Cursor::new(prefix).chain(read), meter.clone());
    let write = CountedIo::visitor(write, meter);
    // Who connected, and to which public address: the agent can pass both on to the local
    // service as a PROXY protocol header.
    let mut req = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{TCP_AUTHORITY}/"))
        .header(VISITOR_HEADER, peer.to_string())
        .header(ENDPOINT_HEADER, endpoint);
    if let Some(public) = public {
        req = req.header(PUBLIC_HEADER, public.to_string());
    }
    let req = req.body(proxy::from_reader(read))?;
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        // The agent could not reach its local service; dropping `write` closes the visitor.
        return Err(format!("agent answered {}", resp.status()).into());
    }
    proxy::to_writer(resp.into_body(), write).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("20000-20999"), Ok((20000, 20999)));
        assert_eq!(parse_range("5-5"), Ok((5, 5)));
        assert!(parse_range("0-5").is_err());
        assert!(parse_range("9-5").is_err());
        assert!(parse_range("5").is_err());
        assert!(parse_range("a-b").is_err());
    }
}
