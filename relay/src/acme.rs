//! ACME challenge answers, shared by every relay through Redis.
//!
//! The certificate workflows (burrow-worker) order certificates for custom domains; the CA
//! then checks whichever relay the domain resolves to, so each relay answers from Redis
//! (keys under the relay's `redis_prefix`, written by the worker):
//! - **HTTP-01**: `GET /.well-known/acme-challenge/<token>` on the public ingress, for any
//!   `Host`, is answered `200 text/plain` with the value of `acme:http01:<token>` (the key
//!   authorization). Without the key, or with Redis down, the request is routed as usual (an
//!   agent may answer its own challenges). The token must be `[A-Za-z0-9_-]+`.
//! - **TLS-ALPN-01** (RFC 8737): a ClientHello at the TLS ingress offering exactly the ALPN
//!   protocol `acme-tls/1` is answered with the certificate in `acme:alpn:<sni>` (combined PEM:
//!   the self-signed challenge certificate, then its PKCS#8 key), negotiating `acme-tls/1`;
//!   the connection is closed after the handshake. Without the key the handshake is refused.
//!   The ingress checks the peeked ALPN list first ([`is_tls_alpn_challenge`]), so ordinary
//!   handshakes never touch Redis.

use burrow_common::{
    proxy::{self, Body},
    redis_link::{RedisLink, timed},
};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use rustls::{server::ResolvesServerCert, sign::CertifiedKey};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Path prefix of HTTP-01 challenge requests.
pub const HTTP01_PREFIX: &str = "/.well-known/acme-challenge/";
/// The ALPN protocol of TLS-ALPN-01.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Reads challenge answers from Redis.
pub struct Challenges {
    link: Arc<RedisLink>,
    prefix: String,
}

impl Challenges {
    /// Answers read through `link` under `prefix`.
    pub fn new(link: Arc<RedisLink>, prefix: &str) -> Self {
        Self {
            link,
            prefix: prefix.to_owned(),
        }
    }

    /// Redis key of HTTP-01 token `token`.
    pub fn http01_key(&self, token: &str) -> String {
        format!("{}acme:http01:{token}", self.prefix)
    }

    /// Redis key of the TLS-ALPN-01 certificate for `name` (lowercase).
    pub fn alpn_key(&self, name: &str) -> String {
        format!("{}acme:alpn:{name}", self.prefix)
    }

    /// The answer to an HTTP-01 request for `path`, when `path` is a challenge whose key
    /// authorization is in Redis; `None` routes the request as usual.
    pub async fn http01(&self, path: &str) -> Option<Response<Body>> {
        let token = http01_token(path)?;
        let value = self.get(&self.http01_key(token)).await?;
        let mut resp = Response::new(proxy::full(Bytes::from(value)));
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        metrics::counter!("burrow_relay_acme_challenges_total", "type" => "http-01").increment(1);
        Some(resp)
    }

    /// The TLS-ALPN-01 certificate for `sni`, if Redis holds one that parses.
    pub async fn alpn_certificate(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let name = sni.to_ascii_lowercase();
        let pem = self.get(&self.alpn_key(&name)).await?;
        match challenge_key(&pem) {
            Ok(key) => Some(Arc::new(key)),
            Err(e) => {
                tracing::warn!(error = %e, %name, "TLS-ALPN-01 challenge certificate does not parse");
                None
            }
        }
    }

    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut conn = self.link.get().await?;
        match timed(redis::cmd("GET").arg(key).query_async(&mut conn)).await {
            Ok(value) => value,
            Err(e) => {
                tracing::debug!(error = %e, key, "redis: reading an ACME challenge failed");
                None
            }
        }
    }
}

/// The token of an HTTP-01 challenge path, if `path` is one and the token is well formed.
pub fn http01_token(path: &str) -> Option<&str> {
    let token = path.strip_prefix(HTTP01_PREFIX)?;
    let ok = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(token)
}

/// The challenge certificate and key in a combined PEM. Not checked by webpki (as
/// `CertifiedKey::from_der` would): it rejects the challenge certificate's critical
/// acmeIdentifier extension, which only the ACME server interprets.
fn challenge_key(pem: &[u8]) -> Result<CertifiedKey, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate found".into());
    }
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("private key: {e}"))?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("private key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Whether a ClientHello's ALPN list is exactly `acme-tls/1` (RFC 8737 §3).
pub fn is_tls_alpn_challenge(alpn: &[Vec<u8>]) -> bool {
    matches!(alpn, [only] if only == ACME_TLS_ALPN)
}

/// Serves `key` to whoever asks (the one certificate of a challenge handshake).
#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl ResolvesServerCert for One {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Completes a TLS-ALPN-01 handshake on `io` (whose ClientHello offered only `acme-tls/1`)
/// with `key`, negotiating `acme-tls/1`, then closes the connection.
pub async fn answer_tls_alpn<IO>(io: IO, key: Arc<CertifiedKey>) -> Result<(), std::io::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(One(key)));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    let mut tls = tokio_rustls::TlsAcceptor::from(Arc::new(config))
        .accept(io)
        .await?;
    metrics::counter!("burrow_relay_acme_challenges_total", "type" => "tls-alpn-01").increment(1);
    tls.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_are_challenges() {
        assert_eq!(
            http01_token("/.well-known/acme-challenge/Ab-9_z"),
            Some("Ab-9_z")
        );
        for bad in [
            "/.well-known/acme-challenge/",
            "/.well-known/acme-challenge/a/b",
            "/.well-known/acme-challenge/a.b",
            "/.well-known/acme-challenge/a%2fb",
            "/other/acme-challenge/x",
        ] {
            assert_eq!(http01_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_alpn_list_must_be_exactly_acme_tls() {
        assert!(is_tls_alpn_challenge(&[b"acme-tls/1".to_vec()]));
        assert!(!is_tls_alpn_challenge(&[]));
        assert!(!is_tls_alpn_challenge(&[
            b"h2".to_vec(),
            b"acme-tls/1".to_vec()
        ]));
        assert!(!is_tls_alpn_challenge(&[b"acme-tls/2".to_vec()]));
    }
}
