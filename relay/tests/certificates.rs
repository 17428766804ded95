//! The relay side of the certificate lifecycle, against a running relay on real sockets:
//! managed certificates over `RelayControl` (with the internal key as bearer), served at the
//! TLS ingress from the next handshake and after a restart, and the ACME HTTP-01 and
//! TLS-ALPN-01 challenge answers read from Redis (`BURROW_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`; the tests needing it are skipped when it does not answer).

use burrow_proto::{
    directory::RelayDirectory,
    grpc_auth::Bearer,
    relay::{
        InstallCertificateRequest, ListCertificatesRequest, RemoveCertificateRequest,
        relay_control_client::RelayControlClient,
    },
};
use burrow_relay::RelayConfig;
use rcgen::{CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio::{io::AsyncReadExt, net::TcpStream, task::JoinHandle};
use tokio_util::sync::CancellationToken;

const KEY: &str = "ik_cert_test";
/// Anything slower than this is a failure, not a slow machine.
const T: Duration = Duration::from_secs(10);

fn redis_url() -> String {
    std::env::var("BURROW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

#[derive(serde::Deserialize)]
struct Addrs {
    http: SocketAddr,
    https: SocketAddr,
    control: SocketAddr,
}

/// A relay running in this process.
struct Running {
    addrs: Addrs,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(T, self.task)
            .await
            .expect("relay stops")
            .expect("relay task");
    }
}

/// Starts a relay keeping its state in `state`, with every listener on a free port.
async fn start(state: &Path, redis_url: &str, prefix: &str) -> Running {
    let addr_file = state.join(format!("addrs-{}.json", uuid::Uuid::new_v4().simple()));
    let any = "127.0.0.1:0".to_owned();
    let config = RelayConfig {
        relay_id: format!("relay-{}", uuid::Uuid::new_v4().simple()),
        region: "eu-test".into(),
        agent_listen: any.clone(),
        http_listen: any.clone(),
        https_listen: any.clone(),
        control_listen: any.clone(),
        ops_listen: any.clone(),
        peer_listen: String::new(),
        state_dir: state.display().to_string(),
        internal_key: burrow_common::Secret::new(KEY),
        // Nothing here calls the api; a closed port is enough.
        api_url: "http://127.0.0.1:1".into(),
        redis_url: redis_url.to_owned(),
        redis_prefix: prefix.to_owned(),
        addr_file: addr_file.display().to_string(),
        ..RelayConfig::default()
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { burrow_relay::run(config, stop).await.expect("relay runs") }
    });
    // The address file is written once every listener is bound.
    let what = format!("the relay to write {}", addr_file.display());
    let addrs = until(&what, || async {
        let raw = std::fs::read_to_string(&addr_file).ok()?;
        serde_json::from_str::<Addrs>(&raw).ok()
    })
    .await;
    Running { addrs, stop, task }
}

/// Polls `check` until it yields a value; fails the test after [`T`] naming `what`.
async fn until<V, F, Fut>(what: &str, mut check: F) -> V
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<V>>,
{
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {T:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

type Control = RelayControlClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

async fn control(addr: SocketAddr) -> Control {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    RelayControlClient::with_interceptor(channel, Bearer::new(KEY).unwrap())
}

/// A test CA and leaf certificates it issues.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate as the worker would send it.
struct Leaf {
    chain_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn leaf(&self, names: &[&str], serial: &[u8]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.serial_number = Some(serial.to_vec().into());
        params.not_after = rcgen::date_time_ymd(2031, 3, 4);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.issuer.pem()),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A client trusting only this CA, offering `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        client_config(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
            alpn,
        )
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(mut config: rustls::ClientConfig, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A client that accepts any certificate (to look at what the relay presents).
fn any_cert_client(alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    client_config(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth(),
        alpn,
    )
}

#[derive(Debug)]
struct AnyCert;

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    // Not checked: webpki refuses the challenge certificate's critical acmeIdentifier
    // extension (an ACME server does not use webpki), and this client only looks at what
    // the relay presents.
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Handshakes with `addr` as `sni`; the leaf the relay presented and the ALPN it chose.
async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    sni: &str,
) -> std::io::Result<(
    CertificateDer<'static>,
    Option<Vec<u8>>,
    tokio_rustls::client::TlsStream<TcpStream>,
)> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let tls = tokio::time::timeout(T, connector.connect(name, tcp))
        .await
        .expect("handshake finishes")?;
    let (_, conn) = tls.get_ref();
    let leaf = conn.peer_certificates().unwrap()[0].clone().into_owned();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    Ok((leaf, alpn, tls))
}

fn install(domain: &str, version: u64, leaf: &Leaf) -> InstallCertificateRequest {
    InstallCertificateRequest {
        domain: domain.into(),
        version,
        chain_pem: leaf.chain_pem.clone(),
        key_pem: leaf.key_pem.clone(),
    }
}

fn managed_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn managed_certificates_are_installed_listed_served_and_removed_over_relay_control() {
    let state = tempfile::tempdir().unwrap();
    let relay = start(state.path(), "", "unused:").await;
    let ca = Ca::new();
    let https = relay.addrs.https;
    let domain = "app.example.test";

    // Without the internal key nothing is installed.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", relay.addrs.control))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let v2 = ca.leaf(&[domain], &[0x00, 0x8a, 0x01]);
    let refused = RelayControlClient::new(channel)
        .install_certificate(install(domain, 2, &v2))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let mut client = control(relay.addrs.control).await;
    // Before any install the relay answers with its own (dev CA) certificate.
    let verified = ca.client(&[b"h2"]);
    assert!(handshake(&verified, https, domain).await.is_err());

    let answer = client
        .install_certificate(install(domain, 2, &v2))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.installed);
    assert_eq!(answer.version, 2);
    assert_eq!(answer.region, "eu-test");
    assert!(answer.relay_id.starts_with("relay-"));
    // Served from the next handshake, verified against the CA for the name.
    let (leaf, alpn, _) = handshake(&verified, https, domain).await.unwrap();
    assert_eq!(leaf, v2.der);
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    // Lower versions are stale (not an error), the same version is idempotent.
    let v1 = ca.leaf(&[domain], &[0x01]);
    let stale = client
        .install_certificate(install(domain, 1, &v1))
        .await
        .unwrap()
        .into_inner();
    assert!(!stale.installed);
    assert_eq!(stale.version, 2);
    let again = client
        .install_certificate(install(domain, 2, &v2))
        .await
        .unwrap()
        .into_inner();
    assert!(again.installed);
    assert_eq!(again.version, 2);
    assert_eq!(handshake(&verified, https, domain).await.unwrap().0, v2.der);

    // Invalid requests say what is wrong.
    let other = ca.leaf(&["other.example.test"], &[0x02]);
    let uncovered = client
        .install_certificate(install(domain, 3, &other))
        .await
        .unwrap_err();
    assert_eq!(uncovered.code(), tonic::Code::InvalidArgument);
    assert!(
        uncovered
            .message()
            .contains("do not cover app.example.test"),
        "{uncovered:?}"
    );
    let garbage = client
        .install_certificate(InstallCertificateRequest {
            domain: domain.into(),
            version: 3,
            chain_pem: "not a certificate".into(),
            key_pem: v2.key_pem.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), tonic::Code::InvalidArgument);
    assert!(garbage.message().contains("no certificate"), "{garbage:?}");
    let mismatched = client
        .install_certificate(InstallCertificateRequest {
            key_pem: other.key_pem.clone(),
            ..install(domain, 3, &v2)
        })
        .await
        .unwrap_err();
    assert_eq!(mismatched.code(), tonic::Code::InvalidArgument);
    assert!(
        mismatched.message().contains("do not match"),
        "{mismatched:?}"
    );

    // A wildcard certificate may serve a domain it covers.
    let wild = ca.leaf(&["*.wild.test"], &[0x03]);
    assert!(
        client
            .install_certificate(install("API.wild.test.", 7, &wild))
            .await
            .unwrap()
            .into_inner()
            .installed
    );

    let listed = client
        .list_certificates(ListCertificatesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.region, "eu-test");
    assert_eq!(listed.relay_id, answer.relay_id);
    let not_after = chrono::NaiveDate::from_ymd_opt(2031, 3, 4)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp();
    let summary: Vec<(String, u64, String, i64)> = listed
        .certificates
        .into_iter()
        .map(|c| (c.domain, c.version, c.serial, c.not_after))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("api.wild.test".into(), 7, "03".into(), not_after),
            (domain.into(), 2, "8a01".into(), not_after),
        ]
    );

    // Persisted one file per domain, private, with no temporary file left behind.
    let managed_dir = state.path().join("managed-certs");
    let files = managed_files(&managed_dir);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["api.wild.test.json", "app.example.test.json"]);
    for file in &files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }

    // A newer version replaces it without a restart.
    let v3 = ca.leaf(&[domain, "www.example.test"], &[0x04]);
    assert!(
        client
            .install_certificate(install(domain, 3, &v3))
            .await
            .unwrap()
            .into_inner()
            .installed
    );
    assert_eq!(handshake(&verified, https, domain).await.unwrap().0, v3.der);

    // Removed: the relay's own certificate answers again, and only once.
    let removed = client
        .remove_certificate(RemoveCertificateRequest {
            domain: domain.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(removed.removed);
    let any = any_cert_client(&[b"h2"]);
    assert_ne!(handshake(&any, https, domain).await.unwrap().0, v3.der);
    assert!(handshake(&verified, https, domain).await.is_err());
    let twice = client
        .remove_certificate(RemoveCertificateRequest {
            domain: domain.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!twice.removed);
    assert_eq!(
        managed_files(&managed_dir)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        ["api.wild.test.json"]
    );
    relay.stop().await;
}

#[tokio::test]
async fn a_restarted_relay_serves_its_managed_certificates_at_once() {
    let state = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let domain = "kept.example.test";
    let leaf = ca.leaf(&[domain], &[0x05]);
    let first = start(state.path(), "", "unused:").await;
    let installed = control(first.addrs.control)
        .await
        .install_certificate(install(domain, 9, &leaf))
        .await
        .unwrap()
        .into_inner();
    assert!(installed.installed);
    first.stop().await;

    let second = start(state.path(), "", "unused:").await;
    let (served, _, _) = handshake(&ca.client(&[]), second.addrs.https, domain)
        .await
        .unwrap();
    assert_eq!(served, leaf.der);
    let listed = control(second.addrs.control)
        .await
        .list_certificates(ListCertificatesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.certificates.len(), 1);
    assert_eq!(listed.certificates[0].domain, domain);
    assert_eq!(listed.certificates[0].version, 9);
    // The version survived too: an older one is still stale.
    let stale = control(second.addrs.control)
        .await
        .install_certificate(install(domain, 8, &leaf))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stale.installed, stale.version), (false, 9));
    second.stop().await;
}

/// A Redis connection and a prefix of this test's own, or `None` (test skipped).
async fn redis() -> Option<(redis::aio::ConnectionManager, String)> {
    let url = redis_url();
    let link = burrow_common::redis_link::RedisLink::new(&url);
    let Some(conn) = link.get().await else {
        eprintln!("skipped: no redis at {url}");
        return None;
    };
    Some((conn, format!("test:{}:", uuid::Uuid::new_v4().simple())))
}

/// Waits until the relay announced itself under `prefix`: its Redis link is up, so challenge
/// lookups reach Redis (until then they fall through, as with Redis down).
async fn announced(conn: &mut redis::aio::ConnectionManager, prefix: &str) {
    until("the relay to announce itself", || {
        let mut conn = conn.clone();
        async move {
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(format!("{prefix}relays"))
                .query_async(&mut conn)
                .await
                .unwrap();
            (!members.is_empty()).then_some(())
        }
    })
    .await
}

async fn set(conn: &mut redis::aio::ConnectionManager, key: &str, value: &str) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("EX")
        .arg(60)
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_directory_finds_the_relay_with_its_region_and_calls_it() {
    let Some((_conn, prefix)) = redis().await else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let relay = start(state.path(), &redis_url(), &prefix).await;
    let link = Arc::new(burrow_common::redis_link::RedisLink::new(&redis_url()));
    let directory = RelayDirectory::new(link, &prefix, KEY);
    // The announcement is written by the relay's first presence round.
    let found = until("the relay to be discovered", || async {
        let found = directory.discover().await.unwrap();
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].region, "eu-test");
    assert_eq!(
        found[0].control_url,
        format!("http://{}", relay.addrs.control)
    );
    let listed = directory
        .client(&found[0])
        .await
        .unwrap()
        .list_certificates(ListCertificatesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.relay_id, found[0].relay_id);
    assert!(listed.certificates.is_empty());
    relay.stop().await;
}

#[tokio::test]
async fn http01_challenges_are_answered_from_redis_for_any_host() {
    let Some((mut conn, prefix)) = redis().await else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let relay = start(state.path(), &redis_url(), &prefix).await;
    announced(&mut conn, &prefix).await;
    set(
        &mut conn,
        &format!("{prefix}acme:http01:tok_En-1"),
        "tok_En-1.thumbprint",
    )
    .await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", relay.addrs.http);
    let answered = http
        .get(format!("{base}/.well-known/acme-challenge/tok_En-1"))
        .header("host", "shop.customer.example")
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.headers()["content-type"], "text/plain");
    assert_eq!(answered.text().await.unwrap(), "tok_En-1.thumbprint");

    // An unknown token, or one that is not a token, is routed as usual (no tunnel here: 404).
    for path in [
        "/.well-known/acme-challenge/unknown",
        "/.well-known/acme-challenge/tok_En-1.x",
    ] {
        let routed = http
            .get(format!("{base}{path}"))
            .header("host", "shop.customer.example")
            .send()
            .await
            .unwrap();
        assert_eq!(routed.status(), 404, "{path}");
        assert!(
            routed
                .text()
                .await
                .unwrap()
                .contains("shop.customer.example"),
            "{path}"
        );
    }
    relay.stop().await;
}

#[tokio::test]
async fn http01_falls_through_when_redis_is_down() {
    let state = tempfile::tempdir().unwrap();
    // Port 1 refuses at once: Redis configured but down.
    let relay = start(state.path(), "redis://127.0.0.1:1", "down:").await;
    let routed = reqwest::Client::new()
        .get(format!(
            "http://{}/.well-known/acme-challenge/abc",
            relay.addrs.http
        ))
        .header("host", "shop.customer.example")
        .send()
        .await
        .unwrap();
    assert_eq!(routed.status(), 404);
    relay.stop().await;
}

#[tokio::test]
async fn tls_alpn01_challenges_are_answered_with_the_certificate_in_redis() {
    let Some((mut conn, prefix)) = redis().await else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let relay = start(state.path(), &redis_url(), &prefix).await;
    announced(&mut conn, &prefix).await;
    let https = relay.addrs.https;
    let domain = "shop.customer.example";

    // The challenge certificate as RFC 8737 describes it: self-signed, the domain as its one
    // SAN, the critical acmeIdentifier extension holding the key authorization's digest.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![domain.to_owned()]).unwrap();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(&[7u8; 32]));
    let challenge = params.self_signed(&key).unwrap();
    set(
        &mut conn,
        &format!("{prefix}acme:alpn:{domain}"),
        &format!("{}{}", challenge.pem(), key.serialize_pem()),
    )
    .await;

    let acme = any_cert_client(&[b"acme-tls/1"]);
    let (leaf, alpn, mut tls) = handshake(&acme, https, "Shop.Customer.Example")
        .await
        .unwrap();
    assert_eq!(&leaf, challenge.der());
    assert_eq!(alpn.as_deref(), Some(&b"acme-tls/1"[..]));
    // The relay closes the connection after the handshake.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(T, tls.read_to_end(&mut rest))
        .await
        .expect("the relay closes the challenge connection");
    assert!(read.is_err() || rest.is_empty(), "{read:?} {rest:?}");

    // No challenge for the name: the handshake is refused.
    assert!(
        handshake(&acme, https, "other.customer.example")
            .await
            .is_err()
    );
    // An ordinary client for the same name is not answered with the challenge certificate.
    let (ordinary, alpn, _) = handshake(&any_cert_client(&[b"h2", b"http/1.1"]), https, domain)
        .await
        .unwrap();
    assert_ne!(&ordinary, challenge.der());
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    relay.stop().await;
}
