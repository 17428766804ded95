//! What the two HTTP proxies (relay ingress and agent) share: the body type they forward,
//! hop-by-hop header stripping, and the plain-text answers they give themselves.
//!
//! Headers that describe one connection (RFC 9110 §7.6.1) must not be forwarded to the next
//! hop; HTTP/2 forbids them outright, so forwarding one would fail the whole stream.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// Error type of forwarded bodies: a peer's HTTP error or a socket's I/O error.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Body of everything the proxies forward: visitor bodies streamed as they arrive, raw TCP
/// bytes, or small bodies a proxy makes itself.
pub type Body = BoxBody<Bytes, BodyError>;

/// A body from bytes in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A received HTTP body, re-boxed for forwarding.
pub fn incoming(body: hyper::body::Incoming) -> Body {
    body.map_err(BodyError::from).boxed()
}

/// A body that streams what `reader` yields until EOF (one TCP direction).
pub fn from_reader<R>(reader: R) -> Body
where
    R: tokio::io::AsyncRead + Send + Sync + 'static,
{
    use futures::TryStreamExt;
    let frames = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024)
        .map_ok(hyper::body::Frame::data)
        .map_err(BodyError::from);
    http_body_util::StreamBody::new(frames).boxed()
}

/// Copies `body`'s data into `writer` until the body ends, then shuts the writer down (the
/// other TCP direction; a half-close travels as the end of the body).
pub async fn to_writer<W>(mut body: hyper::body::Incoming, mut writer: W) -> Result<(), BodyError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            writer.write_all(&data).await?;
        }
    }
    writer.shutdown().await?;
    Ok(())
}

/// Whether an HTTP/1.1 request asks to switch to WebSocket.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// A plain-text answer made by the proxy itself; `origin` (`relay` or `agent`) goes into the
/// `X-Burrow-Error` header so a visitor can tell it from the application's own answers.
pub fn text_response(status: StatusCode, text: String, origin: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert("x-burrow-error", HeaderValue::from_static(origin));
    resp
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any named in `Connection`, and a `TE` other than
/// `trailers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let te_is_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_is_trailers {
        headers.remove(header::TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_standard_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::TE, "gzip".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn te_trailers_survives() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, "trailers".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key(header::TE));
    }
}
