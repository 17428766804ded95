//! The agent's side of visitor traffic: an HTTP/2 server on the relay connection whose every
//! request is replayed as HTTP/1.1 against the local service, bodies streaming both ways.

use crate::upstream::{HostHeader, Upstream};
use burrow_common::proxy::{self, Body};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use std::convert::Infallible;

/// Forwards requests to the [`Upstream`].
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Incoming>,
    authority: String,
    host_header: HostHeader,
}

impl Forwarder {
    /// A forwarder to `upstream`.
    pub fn new(upstream: &Upstream) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            authority: upstream.authority.clone(),
            host_header: upstream.host_header.clone(),
        }
    }

    /// The local target, `http://host:port`.
    pub fn target(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// Sends one visitor request to the local service.
    pub async fn forward(&self, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let public_host = req.uri().authority().map(|a| a.to_string());
        let path = req
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let uri = match Uri::builder()
            .scheme("http")
            .authority(self.authority.as_str())
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
        *req.version_mut() = Version::HTTP_11;
        proxy::strip_hop_by_hop(req.headers_mut());
        let host = match &self.host_header {
            // The public Host, as the visitor's browser sent it (ngrok's default too).
            HostHeader::Preserve => public_host,
            HostHeader::Rewrite => Some(self.authority.clone()),
            HostHeader::Value(v) => Some(v.clone()),
        };
        if let Some(host) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
            req.headers_mut().insert(header::HOST, host);
        }
        match self.client.request(req).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                proxy::strip_hop_by_hop(&mut parts.headers);
                Ok(Response::from_parts(parts, proxy::incoming(body)))
            }
            Err(e) => {
                tracing::warn!(error = %e, target = %self.target(), "local service unreachable");
                let cause = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.to_string());
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
}

impl Forwarder {
    /// Relays one TCP visitor connection (an h2 stream from the relay) to the local service:
    /// the request body is written to the local socket, the local socket's bytes are the
    /// response body. 502 if the local service refuses the connection.
    pub async fn forward_tcp(&self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let local = match tokio::net::TcpStream::connect(&self.authority).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, target = %self.authority, "local TCP service unreachable");
                return Ok(answer(
                    StatusCode::BAD_GATEWAY,
                    format!("Burrow agent: cannot reach {}: {e}\n", self.authority),
                ));
            }
        };
        let _ = local.set_nodelay(true);
        let (read, write) = local.into_split();
        tokio::spawn(async move {
            if let Err(e) = proxy::to_writer(req.into_body(), write).await {
                tracing::debug!(error = %e, "tcp visitor → local copy ended");
            }
        });
        Ok(Response::new(proxy::from_reader(read)))
    }
}

fn answer(status: StatusCode, body: String) -> Response<Body> {
    proxy::text_response(status, body, "agent")
}
