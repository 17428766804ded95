//! The HTTPS ingress's certificate store: which certificate answers which SNI name.
//!
//! Certificates come from PEM files in `cert_dir`, one file per certificate holding the chain
//! (leaf first) and its private key (the "combined PEM" HAProxy and certbot's `--deploy-hook`
//! users know). The names a certificate serves are read from the leaf's subjectAltName DNS
//! entries, so file names do not matter; `*.example.com` serves one label under
//! `example.com`. The directory is polled and reloaded when a file appears, changes or
//! disappears, so a renewed certificate is served without a restart; a file that does not
//! parse is logged and skipped (the rest of the store keeps serving). The certificate-lifecycle
//! workflows write into the same store.
//!
//! A handshake whose SNI matches nothing (or that sends none) gets the fallback certificate:
//! in a dev setup the relay's own dev-CA certificate, which covers `*.<domain>`.

use crate::tls::TlsError;
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};
use tokio_util::sync::CancellationToken;

/// Certificates by name.
#[derive(Default)]
struct Certs {
    /// `host` → certificate.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `parent` of `*.parent` → certificate.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl Certs {
    fn insert(&mut self, names: &[String], key: &Arc<CertifiedKey>) {
        for name in names {
            match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.insert(parent.to_owned(), key.clone()),
                None => self.exact.insert(name.clone(), key.clone()),
            };
        }
    }

    fn find(&self, host: &str) -> Option<&Arc<CertifiedKey>> {
        self.exact.get(host).or_else(|| {
            let (_, parent) = host.split_once('.')?;
            self.wildcard.get(parent)
        })
    }
}

/// SNI → certificate, shared by every HTTPS handshake and swapped whole on reload.
pub struct CertStore {
    certs: RwLock<Arc<Certs>>,
    fallback: Option<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = self.names();
        f.debug_struct("CertStore").field("names", &names).finish()
    }
}

impl CertStore {
    /// An empty store answering unknown names with `fallback`.
    pub fn new(fallback: Option<Arc<CertifiedKey>>) -> Self {
        Self {
            certs: RwLock::new(Arc::new(Certs::default())),
            fallback,
        }
    }

    /// The certificate for `host` (exact name, then a wildcard one level up).
    pub fn find(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.read().unwrap_or_else(|p| p.into_inner()).clone();
        certs.find(&host.to_ascii_lowercase()).cloned()
    }

    /// Every name the store serves (sorted), fallback excluded.
    pub fn names(&self) -> Vec<String> {
        let certs = self.certs.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut names: Vec<String> = certs
            .exact
            .keys()
            .cloned()
            .chain(certs.wildcard.keys().map(|p| format!("*.{p}")))
            .collect();
        names.sort();
        names
    }

    /// Replaces the store's contents with the certificates in `dir`. Files that do not parse
    /// are skipped and returned with the reason.
    pub fn reload_dir(&self, dir: &Path) -> Vec<(PathBuf, TlsError)> {
        let mut certs = Certs::default();
        let mut errors = Vec::new();
        for path in pem_files(dir) {
            match load_pem(&path) {
                Ok((names, key)) => certs.insert(&names, &Arc::new(key)),
                Err(e) => errors.push((path, e)),
            }
        }
        *self.certs.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certs);
        errors
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|sni| self.find(sni))
            .or_else(|| self.fallback.clone())
    }
}

/// `*.pem` files directly in `dir`, sorted (a missing directory is an empty store).
fn pem_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pem") && p.is_file())
        .collect();
    files.sort();
    files
}

/// What the directory looks like, to notice changes without reading every file.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Option<SystemTime>, u64)> {
    pem_files(dir)
        .into_iter()
        .filter_map(|p| {
            let meta = std::fs::metadata(&p).ok()?;
            Some((p, (meta.modified().ok(), meta.len())))
        })
        .collect()
}

/// Reads one combined PEM file: the chain and its key, and the DNS names the leaf serves.
pub fn load_pem(path: &Path) -> Result<(Vec<String>, CertifiedKey), TlsError> {
    let pem = read(path)?;
    certified(path, &pem, &pem)
}

/// Reads a chain and its key from separate PEM files (the relay's own certificate).
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    certified(cert_file, &read(cert_file)?, &read(key_file)?).map(|(_, key)| key)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn certified(
    path: &Path,
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<String>, CertifiedKey), TlsError> {
    let bad = |message: String| TlsError::Pem {
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let leaf = chain
        .first()
        .ok_or_else(|| bad("no certificate found".into()))?;
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(format!("private key: {e}")))?;
    let names = dns_names(leaf).map_err(bad)?;
    if names.is_empty() {
        return Err(bad("the certificate names no DNS subjectAltName".into()));
    }
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| bad(format!("certificate and key do not match: {e}")))?;
    Ok((names, certified))
}

/// Lowercased DNS subjectAltNames of `cert`.
fn dns_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) =
        X509Certificate::from_der(cert.as_ref()).map_err(|e| format!("certificate: {e}"))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| format!("subjectAltName: {e}"))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.trim_end_matches('.').to_ascii_lowercase()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Reloads `store` from `dir` whenever the directory's files change, until `stop`.
pub async fn watch(store: Arc<CertStore>, dir: PathBuf, every: Duration, stop: CancellationToken) {
    let mut seen = None;
    loop {
        let now = snapshot(&dir);
        if seen.as_ref() != Some(&now) {
            for (path, e) in store.reload_dir(&dir) {
                tracing::warn!(path = %path.display(), error = %e, "skipping certificate file");
            }
            tracing::info!(dir = %dir.display(), names = ?store.names(), "certificate store loaded");
            metrics::gauge!("burrow_relay_certificates").set(now.len() as f64);
            seen = Some(now);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    fn write_cert(dir: &Path, file: &str, names: &[&str]) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = format!("{}{}", cert.pem(), key.serialize_pem());
        std::fs::write(dir.join(file), pem).unwrap();
    }

    #[test]
    fn exact_names_win_over_wildcards_and_files_reload() {
        let dir = tempfile::tempdir().unwrap();
        write_cert(dir.path(), "wild.pem", &["*.example.test"]);
        write_cert(dir.path(), "app.pem", &["app.example.test", "Other.Test"]);
        std::fs::write(dir.path().join("broken.pem"), "not a pem").unwrap();
        let store = CertStore::new(None);
        let errors = store.reload_dir(dir.path());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].1.to_string().contains("broken.pem"));
        let app = store.find("app.example.test").unwrap();
        let wild = store.find("x.example.test").unwrap();
        assert!(!Arc::ptr_eq(&app, &wild));
        assert!(store.find("other.test").is_some());
        assert!(
            store.find("a.b.example.test").is_none(),
            "a wildcard covers one label"
        );
        assert!(store.find("example.test").is_none());
        std::fs::remove_file(dir.path().join("app.pem")).unwrap();
        store.reload_dir(dir.path());
        assert!(Arc::ptr_eq(
            &store.find("app.example.test").unwrap(),
            &store.find("x.example.test").unwrap()
        ));
        assert_eq!(store.names(), vec!["*.example.test".to_owned()]);
    }

    #[test]
    fn a_key_that_does_not_match_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["a.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let path = dir.path().join("a.pem");
        std::fs::write(&path, format!("{}{}", cert.pem(), other.serialize_pem())).unwrap();
        let err = load_pem(&path).unwrap_err().to_string();
        assert!(err.contains("do not match"), "{err}");
    }

    #[tokio::test]
    async fn watch_picks_up_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(CertStore::new(None));
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(
            store.clone(),
            dir.path().to_owned(),
            Duration::from_millis(20),
            stop.clone(),
        ));
        write_cert(dir.path(), "n.pem", &["new.test"]);
        crate::test_support::eventually("the store reloads", || store.find("new.test").is_some())
            .await;
        stop.cancel();
        task.await.unwrap();
    }
}
