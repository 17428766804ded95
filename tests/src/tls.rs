//! TLS for the end-to-end suites: certificates from a throwaway CA (rcgen), a client that
//! connects with a chosen SNI and ALPN and trusts only the given CA, one HTTP exchange over
//! such a connection (HTTP/1.1 or h2, whichever ALPN chose), and local TLS servers standing in
//! for a developer's HTTPS or TLS service.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A CA and one certificate it issued.
pub struct TestPki {
    /// The CA certificate (PEM), to trust.
    pub ca_pem: String,
    /// The leaf certificate (PEM).
    pub cert_pem: String,
    /// The leaf's private key (PEM).
    pub key_pem: String,
}

impl TestPki {
    /// A fresh CA and a leaf certificate for `names`.
    pub fn new(names: &[&str]) -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let leaf = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?
            .signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The leaf chain and key in one PEM (the relay's certificate store format).
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    /// A rustls server config presenting the leaf, offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Connects to `addr` with SNI `sni`, trusting only the CA certificates in `ca_pem`, offering
/// `alpn`. The handshake fails unless the server proves a name-matching certificate from it.
pub async fn connect(
    addr: &str,
    sni: &str,
    ca_pem: &[u8],
    alpn: &[&[u8]],
) -> anyhow::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned())?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?)
}

/// What one HTTP exchange returned.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// HTTP version the server answered with.
    pub version: http::Version,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// The whole body.
    pub body: String,
}

/// Sends `GET path` for `host` over `tls`, speaking h2 if ALPN chose it, else HTTP/1.1.
pub async fn get(tls: TlsStream<TcpStream>, host: &str, path: &str) -> anyhow::Result<Answer> {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(tls);
    let req = http::Request::builder()
        .uri(format!("https://{host}{path}"))
        .header(http::header::HOST, host)
        .body(Full::new(Bytes::new()))?;
    let resp = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        let (mut parts, body) = req.into_parts();
        // h2 carries the host as :authority only.
        parts.headers.remove(http::header::HOST);
        sender
            .send_request(http::Request::from_parts(parts, body))
            .await?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let (mut parts, body) = req.into_parts();
        parts.uri = path.parse()?;
        sender
            .send_request(http::Request::from_parts(parts, body))
            .await?
    };
    let status = resp.status().as_u16();
    let version = resp.version();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        version,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Accepts TLS with `config` on a free port and runs `handle` on each handshaken connection;
/// returns the port.
async fn serve_tls<F, Fut>(config: Arc<rustls::ServerConfig>, handle: F) -> anyhow::Result<u16>
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    serve_tls_on(listener, config, handle);
    Ok(port)
}

/// Accepts TLS with `config` on `listener` and runs `handle` on each handshaken connection, in
/// a task; aborting the returned handle stops accepting.
pub fn serve_tls_on<F, Fut>(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, handle) = (acceptor.clone(), handle.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    handle(tls).await;
                }
            });
        }
    })
}

/// Serves HTTP (1.1, or h2 when ALPN picks it) over TLS on a free port, answering every request
/// with `text`; returns the port. The answer echoes the request's version in `x-seen-version`.
pub async fn https_server(
    config: Arc<rustls::ServerConfig>,
    text: &'static str,
) -> anyhow::Result<u16> {
    serve_tls(config, move |tls| async move {
        let service = hyper::service::service_fn(
            move |req: http::Request<hyper::body::Incoming>| async move {
                let mut resp = http::Response::new(Full::new(Bytes::from(text)));
                let version = format!("{:?}", req.version());
                if let Ok(v) = http::HeaderValue::from_str(&version) {
                    resp.headers_mut().insert("x-seen-version", v);
                }
                Ok::<_, std::convert::Infallible>(resp)
            },
        );
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tls), service)
            .await;
    })
    .await
}

/// Accepts TLS on a free port and writes `greeting` and the SNI the client sent to every
/// connection, then closes it; returns the port.
pub async fn tls_greeter(
    config: Arc<rustls::ServerConfig>,
    greeting: &'static str,
) -> anyhow::Result<u16> {
    use tokio::io::AsyncWriteExt;
    serve_tls(config, move |mut tls| async move {
        let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
        let _ = tls
            .write_all(format!("{greeting} (sni {sni})").as_bytes())
            .await;
        let _ = tls.shutdown().await;
    })
    .await
}
