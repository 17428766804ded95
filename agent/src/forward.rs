//! The agent's side of visitor traffic: an HTTP/2 server on the relay connection whose every
//! request is replayed against the local service (HTTP/1.1 or h2, in the clear or over TLS),
//! bodies streaming both ways.

use crate::upstream::{HostHeader, Upstream, UpstreamProtocol};
use burrow_common::proxy::{self, Body};
use burrow_proto::tunnel::ENDPOINT_HEADER;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use std::{convert::Infallible, net::SocketAddr, sync::Arc};

/// Copy buffer per direction on a data connection (large reads under rustls pay off: see
/// `docs/transport.md`).
const COPY_BUFFER: usize = 256 * 1024;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to the local service (plain TCP or TLS).
trait LocalIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> LocalIo for T {}

/// Forwards requests to the [`Upstream`].
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    upstream: Arc<Upstream>,
    /// For upgraded (WebSocket) connections to an `https://` local service.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Forwarder {
    /// A forwarder to `upstream`; fails when its TLS settings cannot be used (a CA file that
    /// does not read).
    pub fn new(upstream: &Upstream) -> Result<Self, String> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        let h2 = upstream.protocol == UpstreamProtocol::Http2;
        let settings = upstream.tls.clone().unwrap_or_default();
        // Upgraded (WebSocket) connections are always HTTP/1.1.
        let tls = match upstream.tls {
            Some(_) => Some(tokio_rustls::TlsConnector::from(Arc::new(
                crate::tls::upstream_config(&settings, &[b"http/1.1"])?,
            ))),
            None => None,
        };
        // The connector offers ALPN itself: `h2` only for HTTP/2 services, else `http/1.1`.
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::upstream_config(&settings, &[])?)
            .https_or_http();
        let connector = if h2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        Ok(Self {
            client: Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(h2)
                .build(connector),
            upstream: Arc::new(upstream.clone()),
            tls,
        })
    }

    /// The local target, `http(s)://host:port`.
    pub fn target(&self) -> String {
        self.upstream.to_string()
    }

    fn scheme(&self) -> &'static str {
        if self.upstream.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Sends one visitor request to the local service.
    pub async fn forward(&self, mut req: Request<Body>) -> Result<Response<Body>, Infallible> {
        let public_host = req.uri().authority().map(|a| a.to_string()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        });
        let path = req
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let uri = match Uri::builder()
            .scheme(self.scheme())
            .authority(self.upstream.authority.as_str())
            .path_and_query(path)
            .build()
        {
            Ok(u) => u,
            Err(e) => {
                return Ok(answer(
                    StatusCode::BAD_REQUEST,
                    format!("bad request target: {e}"),
                ));
            }
        };
        *req.uri_mut() = uri;
        *req.version_mut() = match self.upstream.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => Version::HTTP_2,
        };
        proxy::strip_hop_by_hop(req.headers_mut());
        req.headers_mut().remove(ENDPOINT_HEADER);
        self.set_host(req.headers_mut(), public_host);
        match self.client.request(req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                proxy::strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, proxy::incoming(body)))
            }
            Err(e) => {
                tracing::warn!(error = %e, target = %self.target(), "local service unreachable");
                let mut cause = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    cause = s.to_string();
                    source = s.source();
                }
                Ok(answer(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "Burrow agent: cannot reach the local service at {}: {cause}\n",
                        self.target()
                    ),
                ))
            }
        }
    }

    /// Opens a raw connection to the local service (TLS when it is `https://`).
    async fn connect_raw(&self) -> Result<Box<dyn LocalIo>, String> {
        let tcp = tokio::net::TcpStream::connect(&self.upstream.authority)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let host = self
            .upstream
            .authority
            .rsplit_once(':')
            .map_or(self.upstream.authority.as_str(), |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name = rustls::pki_types::ServerName::try_from(host).map_err(|e| e.to_string())?;
        let stream = tls.connect(name, tcp).await.map_err(|e| e.to_string())?;
        Ok(Box::new(stream))
    }
}

impl Forwarder {
    /// Sets `Host` per the `--host-header` policy.
    fn set_host(&self, headers: &mut http::HeaderMap, public_host: Option<String>) {
        let host = match &self.upstream.host_header {
            // The public Host, as the visitor's browser sent it (ngrok's default too).
            HostHeader::Preserve => public_host,
            HostHeader::Rewrite => Some(self.upstream.authority.clone()),
            HostHeader::Value(v) => Some(v.clone()),
        };
        if let Some(host) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            headers.insert(header::HOST, host);
        }
    }

    /// A WebSocket (an HTTP/2 extended CONNECT from the relay): performs the HTTP/1.1 upgrade
    /// against the local service, answers 200 with its handshake headers, then joins the two
    /// upgraded streams. A local answer other than 101 is passed back as is.
    pub async fn forward_websocket(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let relay_side = hyper::upgrade::on(&mut req);
        let public_host = req.uri().authority().map(|a| a.to_string());
        let path = req
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let mut local_req = Request::new(http_body_util::Empty::<bytes::Bytes>::new());
        *local_req.uri_mut() = match path.parse() {
            Ok(u) => u,
            Err(e) => return Ok(answer(StatusCode::BAD_REQUEST, format!("bad path: {e}"))),
        };
        *local_req.headers_mut() = req.headers().clone();
        local_req.headers_mut().remove(ENDPOINT_HEADER);
        self.set_host(local_req.headers_mut(), public_host);
        let h = local_req.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));

        let unreachable = |e: &dyn std::fmt::Display| {
            answer(
                StatusCode::BAD_GATEWAY,
                format!(
                    "Burrow agent: cannot reach the local service at {}: {e}\n",
                    self.target()
                ),
            )
        };
        let tcp = match self.connect_raw().await {
            Ok(t) => t,
            Err(e) => return Ok(unreachable(&e)),
        };
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await {
                Ok(pair) => pair,
                Err(e) => return Ok(unreachable(&e)),
            };
        tokio::spawn(conn.with_upgrades());
        let local_resp = match sender.send_request(local_req).await {
            Ok(r) => r,
            Err(e) => return Ok(unreachable(&e)),
        };
        if local_resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let (mut parts, body) = local_resp.into_parts();
            proxy::strip_hop_by_hop(&mut parts.headers);
            return Ok(Response::from_parts(parts, proxy::incoming(body)));
        }
        let mut resp = Response::new(proxy::full(bytes::Bytes::new()));
        *resp.headers_mut() = local_resp.headers().clone();
        proxy::strip_hop_by_hop(resp.headers_mut());
        let local_side = hyper::upgrade::on(local_resp);
        tokio::spawn(async move {
            match (relay_side.await, local_side.await) {
                (Ok(r), Ok(l)) => {
                    let (mut r, mut l) = (
                        hyper_util::rt::TokioIo::new(r),
                        hyper_util::rt::TokioIo::new(l),
                    );
                    if let Err(e) = tokio::io::copy_bidirectional(&mut r, &mut l).await {
                        tracing::debug!(error = %e, "websocket bridge ended");
                    }
                }
                (r, l) => {
                    tracing::info!(relay = ?r.err(), local = ?l.err(), "websocket upgrade failed")
                }
            }
        });
        Ok(resp)
    }

    /// Relays one TCP visitor connection (an h2 stream from the relay) to the local service:
    /// the request body is written to the local socket, the local socket's bytes are the
    /// response body. 502 if the local service refuses the connection.
    pub async fn forward_tcp(&self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let addr = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<SocketAddr>().ok())
        };
        let visitor = addr(burrow_proto::tunnel::VISITOR_HEADER);
        let public = addr(burrow_proto::tunnel::PUBLIC_HEADER);
        let local = match self.connect_tcp(visitor, public).await {
            Ok(s) => s,
            Err(e) => return Ok(answer(StatusCode::BAD_GATEWAY, format!("{e}\n"))),
        };
        let (read, write) = local.into_split();
        tokio::spawn(async move {
            if let Err(e) = proxy::to_writer(req.into_body(), write).await {
                tracing::debug!(error = %e, "tcp visitor → local copy ended");
            }
        });
        Ok(Response::new(proxy::from_reader(read)))
    }

    /// Relays one visitor connection handed over on a data connection (`stream`, positioned
    /// after its `DataOpen`) to the local service, both directions until each ends. Closing
    /// `stream` is all a raw TCP visitor can be told when the local service is down.
    pub async fn splice<S>(&self, mut stream: S, open: &burrow_proto::tunnel::DataOpen)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let visitor = open.visitor.parse().ok();
        let public = open.public.as_deref().and_then(|p| p.parse().ok());
        let mut local = match self.connect_tcp(visitor, public).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "data connection visitor refused");
                return;
            }
        };
        if let Err(e) = tokio::io::copy_bidirectional_with_sizes(
            &mut stream,
            &mut local,
            COPY_BUFFER,
            COPY_BUFFER,
        )
        .await
        {
            tracing::debug!(error = %e, "data connection visitor ended");
        }
    }

    /// Connects to the local TCP service, writing the PROXY v2 header first when asked to
    /// and the visitor's addresses are known.
    async fn connect_tcp(
        &self,
        visitor: Option<SocketAddr>,
        public: Option<SocketAddr>,
    ) -> Result<tokio::net::TcpStream, String> {
        use tokio::io::AsyncWriteExt;
        let authority = &self.upstream.authority;
        let mut local = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, target = %authority, "local TCP service unreachable");
                format!("Burrow agent: cannot reach {authority}: {e}")
            })?;
        let _ = local.set_nodelay(true);
        if let (true, Some(visitor), Some(public)) = (self.upstream.proxy_protocol, visitor, public)
        {
            let header = burrow_proto::proxy_protocol::encode_v2(visitor, public);
            local
                .write_all(&header)
                .await
                .map_err(|e| format!("Burrow agent: writing the PROXY header failed: {e}"))?;
        }
        Ok(local)
    }
}

fn answer(status: StatusCode, body: String) -> Response<Body> {
    proxy::text_response(status, body, "agent")
}
