//! A real ACME CA for certificate tests: Debian's `pebble` with `pebble-challtestsrv` as its DNS
//! server (every name resolves to 127.0.0.1), so pebble validates HTTP-01 and TLS-ALPN-01
//! challenges against the Burrow relay's own HTTP and HTTPS listeners.
//!
//! Pebble's ACME API is served over TLS with a certificate from a [`TestCa`] the suite
//! generates (the Debian package ships no test certificates); the CA that *issues* certificates
//! is pebble's own, regenerated on every start ([`Pebble::issuing_roots_pem`]).

use crate::{
    ports::{free_port, free_tcp_udp_port},
    procs::Proc,
    tls::TestPki,
};
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio::process::Command;

/// How long pebble and its DNS server get to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A throwaway CA and a leaf for `localhost` and `127.0.0.1` (the certificate of pebble's ACME
/// API, and of the ARI responder), written as PEM files.
pub struct TestCa {
    /// The CA certificate: the TLS root a client of the ACME API trusts.
    pub ca_file: PathBuf,
    /// The leaf certificate.
    pub cert_file: PathBuf,
    /// The leaf's private key.
    pub key_file: PathBuf,
    pki: TestPki,
}

impl TestCa {
    /// Generates the CA and leaf and writes `test-ca.pem`, `localhost-cert.pem` and
    /// `localhost-key.pem` into `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<TestCa> {
        std::fs::create_dir_all(dir)?;
        let pki = TestPki::new(&["localhost", "127.0.0.1"])?;
        let ca_file = dir.join("test-ca.pem");
        let cert_file = dir.join("localhost-cert.pem");
        let key_file = dir.join("localhost-key.pem");
        std::fs::write(&ca_file, &pki.ca_pem)?;
        std::fs::write(&cert_file, &pki.cert_pem)?;
        std::fs::write(&key_file, &pki.key_pem)?;
        Ok(TestCa {
            ca_file,
            cert_file,
            key_file,
            pki,
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// A rustls server config presenting the leaf.
    pub fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        self.pki.server_config(alpn)
    }

    /// An HTTP client that trusts only this CA.
    pub fn client(&self) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.pki.ca_pem.as_bytes())?)
            .timeout(Duration::from_secs(10))
            .build()?)
    }
}

/// Free loopback ports pebble and challtestsrv listen on, kept across restarts.
#[derive(Debug, Clone, Copy)]
struct Ports {
    acme: u16,
    management: u16,
    /// challtestsrv's DNS (UDP and TCP).
    dns: u16,
    /// challtestsrv's management HTTP.
    chall_management: u16,
}

/// A running pebble (and challtestsrv), killed on drop.
pub struct Pebble {
    dir: PathBuf,
    ca: TestCa,
    ports: Ports,
    http_port: u16,
    tls_port: u16,
    env: Vec<(String, String)>,
    /// External account binding keys (kid → base64url HMAC key); non-empty requires EAB.
    eab: Vec<(String, String)>,
    client: reqwest::Client,
    challtestsrv: Option<Proc>,
    pebble: Option<Proc>,
}

impl Pebble {
    /// Starts challtestsrv and pebble on free loopback ports, their files and logs under
    /// `<dir>/pebble`; pebble validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of
    /// 127.0.0.1. Returns once the ACME directory answers over TLS.
    pub async fn start(dir: &Path, http_port: u16, tls_port: u16) -> anyhow::Result<Pebble> {
        Self::start_with_env(dir, http_port, tls_port, &[]).await
    }

    /// [`Pebble::start`] with extra `PEBBLE_*` environment (e.g. `PEBBLE_VA_ALWAYS_VALID`),
    /// set after the defaults so it overrides them.
    pub async fn start_with_env(
        dir: &Path,
        http_port: u16,
        tls_port: u16,
        env: &[(String, String)],
    ) -> anyhow::Result<Pebble> {
        let dir = dir.join("pebble");
        let ca = TestCa::new(&dir)?;
        let client = ca.client()?;
        let ports = pick_ports();
        let mut pebble = Pebble {
            dir,
            ca,
            ports,
            http_port,
            tls_port,
            env: env.to_vec(),
            eab: Vec::new(),
            client,
            challtestsrv: None,
            pebble: None,
        };
        pebble.launch().await?;
        Ok(pebble)
    }

    /// Restarts pebble requiring external account binding (RFC 8555 §7.3.4) with the key
    /// `kid` / `hmac_b64url` (what a CA such as ZeroSSL hands out), as a new CA would be.
    pub async fn require_eab(&mut self, kid: &str, hmac_b64url: &str) -> anyhow::Result<()> {
        self.eab = vec![(kid.to_owned(), hmac_b64url.to_owned())];
        self.restart().await
    }

    /// `https://127.0.0.1:<port>/dir`.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.ports.acme)
    }

    /// The TLS root of the ACME API (the worker's `acme_ca_file`).
    pub fn ca_file(&self) -> &Path {
        &self.ca.ca_file
    }

    /// The [`TestCa`] serving the ACME API.
    pub fn test_ca(&self) -> &TestCa {
        &self.ca
    }

    /// `127.0.0.1:<port>` of challtestsrv's DNS server (answers every A query with 127.0.0.1).
    pub fn dns_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports.dns)
    }

    /// The root certificate(s) (PEM) issued certificates chain up to, from the management
    /// interface. Each start makes a new root.
    pub async fn issuing_roots_pem(&self) -> anyhow::Result<String> {
        self.management_get("/roots/0").await
    }

    /// The intermediate (PEM) that signs issued certificates.
    pub async fn intermediate_pem(&self) -> anyhow::Result<String> {
        self.management_get("/intermediates/0").await
    }

    /// What pebble's management interface says of the certificate with serial `serial_hex`
    /// (JSON with `Status`: `Valid` or `Revoked`, and `Reason`).
    pub async fn cert_status(&self, serial_hex: &str) -> anyhow::Result<serde_json::Value> {
        let body = self
            .management_get(&format!("/cert-status-by-serial/{serial_hex}"))
            .await?;
        Ok(serde_json::from_str(&body)?)
    }

    async fn management_get(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("https://127.0.0.1:{}{path}", self.ports.management);
        let resp = self.client.get(&url).send().await?;
        anyhow::ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
        Ok(resp.text().await?)
    }

    /// Kills pebble and challtestsrv and waits for them to exit (the CA is down).
    pub async fn stop(&mut self) {
        for mut p in [self.pebble.take(), self.challtestsrv.take()]
            .into_iter()
            .flatten()
        {
            p.kill().await;
        }
    }

    /// Stops, then starts both again on the same ports with the same [`TestCa`] (pebble makes
    /// a new issuing root and forgets accounts and orders). Returns once the directory answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        self.launch().await
    }

    /// pebble's log so far.
    pub fn output(&self) -> String {
        self.pebble.as_ref().map(Proc::output).unwrap_or_default()
    }

    async fn launch(&mut self) -> anyhow::Result<()> {
        let Ports {
            acme,
            management,
            dns,
            chall_management,
        } = self.ports;
        let mut chall = Command::new("pebble-challtestsrv");
        chall
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{chall_management}")]);
        let mut chall = Proc::spawn("pebble-challtestsrv", chall, &self.dir)
            .map_err(|e| anyhow::anyhow!("{e} (install Debian's pebble package)"))?;
        let chall_url = format!("http://127.0.0.1:{chall_management}/");
        let plain = reqwest::Client::new();
        // Any HTTP answer (its root is a 404) means it is up; DNS starts before it.
        chall
            .wait_until(
                "pebble-challtestsrv management interface",
                START_TIMEOUT,
                || async { plain.get(&chall_url).send().await.ok().map(|_| ()) },
            )
            .await?;
        self.challtestsrv = Some(chall);

        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": self.ca.cert_file,
                "privateKey": self.ca.key_file,
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": !self.eab.is_empty(),
                "externalAccountMACKeys": self.eab.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            }
        });
        let config_file = self.dir.join("pebble-config.json");
        std::fs::write(&config_file, serde_json::to_vec_pretty(&config)?)?;
        let mut cmd = Command::new("pebble");
        cmd.arg("-config")
            .arg(&config_file)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let mut proc = Proc::spawn("pebble", cmd, &self.dir)
            .map_err(|e| anyhow::anyhow!("{e} (install Debian's pebble package)"))?;
        let url = self.directory_url();
        let client = &self.client;
        proc.wait_until(&format!("pebble at {url}"), START_TIMEOUT, || async {
            let r = client.get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await?;
        self.pebble = Some(proc);
        Ok(())
    }
}

/// Four distinct free ports (see [`crate::ports`]); the DNS one is free for UDP too.
fn pick_ports() -> Ports {
    Ports {
        acme: free_port(),
        management: free_port(),
        dns: free_tcp_udp_port(),
        chall_management: free_port(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    #[tokio::test]
    async fn pebble_starts_stops_and_restarts() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // No challenge is validated here: the ports only have to be numbers.
        let mut pebble = Pebble::start(dir.path(), 1, 2).await?;
        let client = pebble.test_ca().client()?;

        let dir_json: serde_json::Value = client
            .get(pebble.directory_url())
            .send()
            .await?
            .json()
            .await?;
        for key in ["newNonce", "newAccount", "newOrder"] {
            let url = dir_json[key].as_str().unwrap_or_default();
            assert!(
                url.starts_with(&format!("https://127.0.0.1:{}/", pebble.ports.acme)),
                "{key}: {dir_json}"
            );
        }

        let roots = pebble.issuing_roots_pem().await?;
        let certs =
            CertificateDer::pem_slice_iter(roots.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        assert_eq!(certs.len(), 1, "{roots}");
        let intermediate = pebble.intermediate_pem().await?;
        assert!(CertificateDer::pem_slice_iter(intermediate.as_bytes()).count() >= 1);

        pebble.stop().await;
        let down = client.get(pebble.directory_url()).send().await;
        assert!(down.is_err(), "directory answered while stopped: {down:?}");

        pebble.restart().await?;
        let again = client.get(pebble.directory_url()).send().await?;
        assert!(again.status().is_success());
        let new_roots = pebble.issuing_roots_pem().await?;
        assert_ne!(roots, new_roots, "a restarted pebble makes a new root");
        Ok(())
    }

    /// The plumbing works for a real client: `lego` answers HTTP-01 on the port pebble was
    /// given, for a name only challtestsrv resolves, and gets a certificate from pebble's
    /// intermediate.
    #[tokio::test]
    async fn lego_gets_a_certificate_over_http01() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let http_port = free_port();
        let pebble = Pebble::start(dir.path(), http_port, 1).await?;
        let lego_dir = dir.path().join("lego");
        let run = Command::new("lego")
            .env("LEGO_CA_CERTIFICATES", pebble.ca_file())
            .args(["--accept-tos", "--email", "ops@example.com", "--server"])
            .arg(pebble.directory_url())
            .arg("--path")
            .arg(&lego_dir)
            .args(["--domains", "acme-test.burrow.localhost", "--http"])
            .args(["--http.port", &format!("127.0.0.1:{http_port}"), "run"])
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), run).await??;
        assert!(
            out.status.success(),
            "lego: {}\n{}\npebble:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            pebble.output()
        );
        let certs = lego_dir.join("certificates");
        let leaf = std::fs::read_to_string(certs.join("acme-test.burrow.localhost.crt"))?;
        let issuer = std::fs::read_to_string(certs.join("acme-test.burrow.localhost.issuer.crt"))?;
        assert!(CertificateDer::pem_slice_iter(leaf.as_bytes()).count() >= 1);
        let first = |pem: &str| CertificateDer::pem_slice_iter(pem.as_bytes()).next();
        let intermediate = pebble.intermediate_pem().await?;
        assert_eq!(
            first(&issuer).transpose()?,
            first(&intermediate).transpose()?
        );
        Ok(())
    }

    #[tokio::test]
    async fn directory_refuses_clients_without_the_test_ca() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let pebble = Pebble::start(dir.path(), 1, 2).await?;
        let other = TestCa::new(&dir.path().join("other"))?.client()?;
        let refused = other.get(pebble.directory_url()).send().await;
        assert!(refused.is_err(), "{refused:?}");
        Ok(())
    }
}
