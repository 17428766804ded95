//! The TLS listener of the public ingress: TLS passthrough by SNI, or HTTPS terminated here.
//!
//! Every connection starts with a peek at its ClientHello (never more than
//! [`client_hello::MAX_PEEK`] bytes, within [`PEEK_TIMEOUT`]):
//! - SNI `<name>.<domain>` with a TLS endpoint bound as `<name>` (`burrow tls`): the connection
//!   is relayed byte for byte, ClientHello included, to that agent — the local service
//!   terminates TLS with its own certificate;
//! - otherwise, a ClientHello offering only the ALPN protocol `acme-tls/1` is an ACME
//!   TLS-ALPN-01 challenge, answered with the challenge certificate from Redis (see
//!   [`crate::acme`]) and closed; only this case reads Redis;
//! - otherwise the relay terminates TLS with the certificate the [`CertStore`] picks for the
//!   SNI (ALPN `h2` or `http/1.1`) and serves the decrypted HTTP like the plain ingress, with
//!   `X-Forwarded-Proto: https`;
//! - bytes that are not a ClientHello close the connection.

use crate::{Relay, certs::CertStore};
use burrow_proto::client_hello::{self, Peek};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// How long a client may take to send its ClientHello.
pub const PEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// Registry key of the TLS passthrough endpoint `name` (`:` never appears in an HTTP name).
pub fn endpoint_key(name: &str) -> String {
    format!("tls:{name}")
}

/// The rustls acceptor for terminated HTTPS, choosing certificates from `store`.
pub fn acceptor(store: Arc<CertStore>) -> Result<TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TLS connection the relay terminated, ready for HTTP.
pub type Terminated = TlsStream<Rewind<TcpStream>>;

/// Peeks the ClientHello of `tcp` and either hands the connection to a passthrough endpoint
/// (returns `None`) or completes the TLS handshake (returns the decrypted stream).
pub async fn accept(
    relay: &Arc<Relay>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
) -> Option<Terminated> {
    let mut buf = BytesMut::with_capacity(2048);
    let peeked = tokio::time::timeout(PEEK_TIMEOUT, async {
        loop {
            match client_hello::peek(&buf) {
                Peek::NeedMore if buf.len() < client_hello::MAX_PEEK => {}
                Peek::NeedMore => return Err("ClientHello larger than the peek limit"),
                Peek::Invalid(why) => return Err(why),
                Peek::Hello(hello) => return Ok(hello),
            }
            // Read straight into `buf`, never past the peek limit.
            let want = (client_hello::MAX_PEEK - buf.len()).min(4096);
            buf.reserve(want);
            match tcp.read_buf(&mut (&mut buf).limit(want)).await {
                Ok(0) | Err(_) => return Err("connection closed during the ClientHello"),
                Ok(_) => {}
            }
        }
    })
    .await;
    let hello = match peeked {
        Ok(Ok(hello)) => hello,
        Ok(Err(why)) => {
            tracing::debug!(%peer, why, "closing TLS ingress connection");
            return None;
        }
        Err(_) => {
            tracing::debug!(%peer, "ClientHello timed out");
            return None;
        }
    };
    let prefix = buf.freeze();
    if let Some(name) = hello
        .server_name
        .as_deref()
        .and_then(|sni| relay.endpoint_name(sni))
    {
        let key = endpoint_key(name);
        match relay.registry.lookup(&key) {
            crate::registry::Lookup::Online {
                senders,
                session_ids,
                account_id,
            } => {
                if relay
                    .enforcer
                    .refuses_connection(&relay.edge, &account_id, &key, peer.ip())
                {
                    return None;
                }
                let meter = relay.meter.endpoint(&account_id, &key, "tls");
                metrics::counter!("burrow_relay_tls_passthrough_total").increment(1);
                let public = tcp.local_addr().ok();
                if let Some(conn) = crate::tcp::take_data(relay, &session_ids).await {
                    if let Err(e) =
                        crate::data::relay_visitor(conn, prefix, tcp, peer, public, &key, meter)
                            .await
                    {
                        tracing::debug!(error = %e, %peer, endpoint = %key, "passthrough connection ended");
                    }
                    return None;
                }
                let sender = crate::tcp::first_open(senders)?;
                if let Err(e) =
                    crate::tcp::relay_connection(sender, prefix, tcp, peer, public, &key, meter)
                        .await
                {
                    tracing::debug!(error = %e, %peer, endpoint = %key, "passthrough connection ended");
                }
                return None;
            }
            // A TLS endpoint whose agent is away: closing is all a raw TLS client understands.
            crate::registry::Lookup::Offline(_) => return None,
            crate::registry::Lookup::Unknown => {}
        }
    }
    if crate::acme::is_tls_alpn_challenge(&hello.alpn) {
        tls_alpn_challenge(relay, hello.server_name.as_deref(), prefix, tcp, peer).await;
        return None;
    }
    match acceptor.accept(Rewind::new(prefix, tcp)).await {
        Ok(tls) => Some(tls),
        Err(e) => {
            tracing::debug!(error = %e, %peer, "HTTPS handshake failed");
            None
        }
    }
}

/// Answers a TLS-ALPN-01 challenge for `sni` with the certificate Redis holds for it, or
/// refuses the handshake (closes) when there is none.
async fn tls_alpn_challenge(
    relay: &Relay,
    sni: Option<&str>,
    prefix: Bytes,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let Some(sni) = sni else {
        tracing::debug!(%peer, "acme-tls/1 ClientHello without SNI refused");
        return;
    };
    let Some(key) = relay.acme.alpn_certificate(sni).await else {
        tracing::debug!(%peer, sni, "no TLS-ALPN-01 challenge for this name: handshake refused");
        return;
    };
    match crate::acme::answer_tls_alpn(Rewind::new(prefix, tcp), key).await {
        Ok(()) => tracing::info!(%peer, sni, "answered a TLS-ALPN-01 challenge"),
        Err(e) => tracing::debug!(error = %e, %peer, sni, "TLS-ALPN-01 handshake failed"),
    }
}

/// A stream that first yields bytes already read from it (the peeked ClientHello).
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, preceded by `prefix`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn rewind_yields_the_prefix_then_the_stream() {
        let inner: &[u8] = b" world";
        let mut r = Rewind::new(Bytes::from_static(b"hello"), inner);
        let mut out = String::new();
        r.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
