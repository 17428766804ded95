//! The HTTPS ingress's certificate store: which certificate answers which SNI name.
//!
//! Certificates come from PEM files in `cert_dir`, one file per certificate holding the chain
//! (leaf first) and its private key (the "combined PEM" HAProxy and certbot's `--deploy-hook`
//! users know). The names a certificate serves are read from the leaf's subjectAltName DNS
//! entries, so file names do not matter; `*.example.com` serves one label under
//! `example.com`. The directory is polled and reloaded when a file appears, changes or
//! disappears, so a renewed certificate is served without a restart; a file that does not
//! parse is logged and skipped (the rest of the store keeps serving).
//!
//! **Managed certificates** are the ones the certificate-lifecycle workflows issue (ACME) and
//! push over `RelayControl.InstallCertificate`: one per domain, with a version that only goes
//! up. They are held beside the `cert_dir` ones and win for their domain; a `cert_dir` reload
//! never touches them. Each is persisted under the managed directory as `<domain>.json`
//! (`_` standing for a leading `*`), holding the domain, version, chain and key, written to a
//! temporary file (mode 0600) and renamed over the old one, so a crash leaves either version
//! whole; a restarted relay loads them before serving ([`CertStore::load_managed`]).
//!
//! A handshake whose SNI matches nothing (or that sends none) gets the fallback certificate:
//! in a dev setup the relay's own dev-CA certificate, which covers `*.<domain>`.

use crate::tls::TlsError;
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use serde::{Deserialize, Serialize};
use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
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

/// A managed certificate held for one domain.
struct Managed {
    version: u64,
    serial: String,
    not_after: i64,
    key: Arc<CertifiedKey>,
}

/// What [`CertStore::managed`] reports about one managed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedInfo {
    /// The domain it serves.
    pub domain: String,
    /// Its version.
    pub version: u64,
    /// The leaf's serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// The leaf's notAfter, unix seconds.
    pub not_after: i64,
}

/// Outcome of [`CertStore::install`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The certificate is served from the next handshake (also when this version was held).
    Installed {
        /// The version now held.
        version: u64,
    },
    /// Refused: the store holds a newer version.
    Stale {
        /// The version held.
        held: u64,
    },
}

/// Why a managed certificate could not be installed, removed or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    /// The request itself is wrong (bad domain, unparsable chain or key, SANs not covering).
    #[error("{0}")]
    Invalid(String),
    /// The store has no managed directory to persist to.
    #[error("this certificate store has no managed certificate directory")]
    NoDir,
    /// Reading or writing the managed directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// How a managed certificate is persisted.
#[derive(Serialize, Deserialize)]
struct ManagedFile {
    domain: String,
    version: u64,
    chain_pem: String,
    key_pem: String,
}

/// SNI → certificate, shared by every HTTPS handshake and swapped whole on reload.
pub struct CertStore {
    certs: RwLock<Arc<Certs>>,
    fallback: Option<Arc<CertifiedKey>>,
    /// Managed certificates by domain (`*.parent` for a wildcard domain).
    managed: RwLock<HashMap<String, Arc<Managed>>>,
    /// Where managed certificates are persisted.
    managed_dir: Option<PathBuf>,
    /// Held across each install or removal: the stale-version check, the file write and the
    /// swap in memory happen as one step.
    managed_writes: Mutex<()>,
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
            managed: RwLock::default(),
            managed_dir: None,
            managed_writes: Mutex::new(()),
        }
    }

    /// The same store, persisting managed certificates under `dir` (created on the first
    /// install). Nothing is read until [`CertStore::load_managed`].
    pub fn with_managed_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.managed_dir = Some(dir.into());
        self
    }

    /// The certificate for `host`: a managed one (exact domain, then a wildcard domain one
    /// level up), else one from `cert_dir` (same order).
    pub fn find(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        let host = host.to_ascii_lowercase();
        {
            let managed = self.managed.read().unwrap_or_else(|p| p.into_inner());
            if !managed.is_empty() {
                let wildcard = || {
                    let (_, parent) = host.split_once('.')?;
                    managed.get(&format!("*.{parent}"))
                };
                if let Some(m) = managed.get(&host).or_else(wildcard) {
                    return Some(m.key.clone());
                }
            }
        }
        let certs = self.certs.read().unwrap_or_else(|p| p.into_inner()).clone();
        certs.find(&host).cloned()
    }

    /// Every managed certificate, sorted by domain.
    pub fn managed(&self) -> Vec<ManagedInfo> {
        let managed = self.managed.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<ManagedInfo> = managed
            .iter()
            .map(|(domain, m)| ManagedInfo {
                domain: domain.clone(),
                version: m.version,
                serial: m.serial.clone(),
                not_after: m.not_after,
            })
            .collect();
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        out
    }

    /// Installs version `version` of `domain`'s managed certificate: checks that the chain and
    /// key parse and match and that the leaf covers `domain`, refuses a version lower than
    /// the one held ([`Installed::Stale`]), persists it, then serves it from the next
    /// handshake. Blocking file I/O: call it off the async runtime's workers.
    pub fn install(
        &self,
        domain: &str,
        version: u64,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<Installed, ManagedError> {
        let domain = normalize_domain(domain)?;
        let managed = Arc::new(parse_managed(&domain, version, chain_pem, key_pem)?);
        let dir = self.managed_dir.as_ref().ok_or(ManagedError::NoDir)?;
        let _writing = self
            .managed_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let held = self.managed_version(&domain);
        if let Some(held) = held.filter(|&h| h > version) {
            return Ok(Installed::Stale { held });
        }
        let file = ManagedFile {
            domain: domain.clone(),
            version,
            chain_pem: chain_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        };
        write_atomically(dir, &managed_file_name(&domain), &file)?;
        self.managed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(domain, managed);
        metrics::gauge!("burrow_relay_managed_certificates").set(self.managed_count() as f64);
        Ok(Installed::Installed { version })
    }

    /// Stops serving `domain`'s managed certificate and deletes its file. `false` when none
    /// was held.
    pub fn remove(&self, domain: &str) -> Result<bool, ManagedError> {
        let domain = normalize_domain(domain)?;
        let dir = self.managed_dir.as_ref().ok_or(ManagedError::NoDir)?;
        let _writing = self
            .managed_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let path = dir.join(managed_file_name(&domain));
        let had_file = match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(ManagedError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let held = self
            .managed
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&domain)
            .is_some();
        metrics::gauge!("burrow_relay_managed_certificates").set(self.managed_count() as f64);
        Ok(held || had_file)
    }

    /// Loads every managed certificate persisted in the managed directory (replacing what
    /// the store held). A missing directory is an empty one; files that do not load are
    /// skipped and returned with the reason.
    pub fn load_managed(&self) -> Vec<(PathBuf, ManagedError)> {
        let Some(dir) = &self.managed_dir else {
            return Vec::new();
        };
        let _writing = self
            .managed_writes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut loaded = HashMap::new();
        let mut errors = Vec::new();
        for path in files_with_extension(dir, "json") {
            match load_managed_file(&path) {
                Ok((domain, managed)) => {
                    loaded.insert(domain, Arc::new(managed));
                }
                Err(e) => errors.push((path, e)),
            }
        }
        *self.managed.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        metrics::gauge!("burrow_relay_managed_certificates").set(self.managed_count() as f64);
        errors
    }

    fn managed_version(&self, domain: &str) -> Option<u64> {
        let managed = self.managed.read().unwrap_or_else(|p| p.into_inner());
        managed.get(domain).map(|m| m.version)
    }

    fn managed_count(&self) -> usize {
        self.managed.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Every name served from `cert_dir` (sorted); managed certificates and the fallback
    /// excluded.
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
    files_with_extension(dir, "pem")
}

/// Files named `*.<ext>` directly in `dir` (hidden ones, such as temporary files, excluded),
/// sorted; a missing directory has none.
fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == ext)
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                && p.is_file()
        })
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
    certified(&path.display().to_string(), &pem, &pem)
}

/// Reads a chain and its key from separate PEM files (the relay's own certificate).
pub fn load_pair(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let source = cert_file.display().to_string();
    certified(&source, &read(cert_file)?, &read(key_file)?).map(|(_, key)| key)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The chain and key in `chain_pem` / `key_pem` as a `CertifiedKey`, with the leaf's DNS
/// names; `source` (a file, or what was sent) names them in errors.
fn certified(
    source: &str,
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<(Vec<String>, CertifiedKey), TlsError> {
    let bad = |message: String| TlsError::Pem {
        path: source.to_owned(),
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

/// `domain` lowercased without a trailing dot, if it is a DNS name (optionally `*.` then one).
fn normalize_domain(domain: &str) -> Result<String, ManagedError> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = domain.strip_prefix("*.").unwrap_or(&domain);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if domain.len() > 253 || !name.contains('.') || !name.split('.').all(label_ok) {
        return Err(ManagedError::Invalid(format!(
            "domain {domain:?} is not a DNS name with at least two labels (a-z, 0-9, `-`)"
        )));
    }
    Ok(domain)
}

/// Whether a certificate naming `names` (lowercased DNS SANs) serves `domain`: an exact SAN,
/// or a wildcard SAN one label up.
fn covers(names: &[String], domain: &str) -> bool {
    if names.iter().any(|n| n == domain) {
        return true;
    }
    if domain.starts_with("*.") {
        return false;
    }
    domain
        .split_once('.')
        .is_some_and(|(_, parent)| names.iter().any(|n| n == &format!("*.{parent}")))
}

/// Checks and parses a managed certificate for `domain` (already normalized).
fn parse_managed(
    domain: &str,
    version: u64,
    chain_pem: &str,
    key_pem: &str,
) -> Result<Managed, ManagedError> {
    let source = format!("the certificate for {domain}");
    let (names, key) = certified(&source, chain_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|e| ManagedError::Invalid(e.to_string()))?;
    if !covers(&names, domain) {
        return Err(ManagedError::Invalid(format!(
            "the certificate's subjectAltNames {names:?} do not cover {domain}"
        )));
    }
    let (serial, not_after) = key
        .end_entity_cert()
        .map_err(|e| ManagedError::Invalid(format!("{source}: {e}")))
        .and_then(|leaf| leaf_facts(leaf).map_err(ManagedError::Invalid))?;
    Ok(Managed {
        version,
        serial,
        not_after,
        key: Arc::new(key),
    })
}

/// The leaf's serial (lowercase hex, two digits per byte, no leading zero bytes) and notAfter.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(String, i64), String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) =
        X509Certificate::from_der(leaf.as_ref()).map_err(|e| format!("certificate: {e}"))?;
    let raw = parsed.raw_serial();
    let first = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    let serial = raw[first..].iter().map(|b| format!("{b:02x}")).collect();
    Ok((serial, parsed.validity().not_after.timestamp()))
}

/// The file a managed certificate for `domain` is kept in (`*` becomes `_`, which a DNS
/// label never holds).
fn managed_file_name(domain: &str) -> String {
    format!("{}.json", domain.replacen('*', "_", 1))
}

/// Reads one persisted managed certificate.
fn load_managed_file(path: &Path) -> Result<(String, Managed), ManagedError> {
    let io = |source| ManagedError::Io {
        path: path.display().to_string(),
        source,
    };
    let raw = std::fs::read(path).map_err(io)?;
    let file: ManagedFile = serde_json::from_slice(&raw).map_err(|e| {
        ManagedError::Invalid(format!(
            "{}: not a managed certificate: {e}",
            path.display()
        ))
    })?;
    let domain = normalize_domain(&file.domain)?;
    if path.file_name().and_then(|n| n.to_str()) != Some(managed_file_name(&domain).as_str()) {
        return Err(ManagedError::Invalid(format!(
            "{}: holds the certificate of {domain}, expected in {}",
            path.display(),
            managed_file_name(&domain)
        )));
    }
    let managed = parse_managed(&domain, file.version, &file.chain_pem, &file.key_pem)?;
    Ok((domain, managed))
}

/// Writes `value` as JSON to `dir/name` atomically: a temporary file (mode 0600, it holds a
/// private key) in the same directory, synced, then renamed over the old file.
fn write_atomically(dir: &Path, name: &str, value: &ManagedFile) -> Result<(), ManagedError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| ManagedError::Io { path, source }
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(io(dir))?;
    let body = serde_json::to_vec_pretty(value)
        .map_err(|e| ManagedError::Invalid(format!("encoding {name}: {e}")))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    let path = dir.join(name);
    if let Err(e) = std::fs::rename(&tmp, &path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&path)(e));
    }
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
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

    fn pem_pair(names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn leaf_of(key: &CertifiedKey) -> Vec<u8> {
        key.end_entity_cert().unwrap().as_ref().to_vec()
    }

    #[test]
    fn managed_certificates_win_survive_reloads_and_a_new_store() {
        let certs = tempfile::tempdir().unwrap();
        let managed = tempfile::tempdir().unwrap();
        write_cert(certs.path(), "app.pem", &["app.example.test"]);
        let store = CertStore::new(None).with_managed_dir(managed.path());
        store.reload_dir(certs.path());
        let from_dir = leaf_of(&store.find("app.example.test").unwrap());

        let (chain, key) = pem_pair(&["app.example.test"]);
        let installed = store.install("app.example.test", 4, &chain, &key).unwrap();
        assert_eq!(installed, Installed::Installed { version: 4 });
        let managed_leaf = leaf_of(&store.find("APP.example.test").unwrap());
        assert_ne!(managed_leaf, from_dir, "the managed certificate wins");
        // A cert_dir reload keeps managed certificates.
        store.reload_dir(certs.path());
        assert_eq!(
            leaf_of(&store.find("app.example.test").unwrap()),
            managed_leaf
        );
        assert_eq!(
            store.install("app.example.test", 3, &chain, &key).unwrap(),
            Installed::Stale { held: 4 }
        );

        // A new store over the same directory serves it and knows its version.
        let restarted = CertStore::new(None).with_managed_dir(managed.path());
        assert!(restarted.find("app.example.test").is_none());
        assert!(restarted.load_managed().is_empty());
        assert_eq!(
            leaf_of(&restarted.find("app.example.test").unwrap()),
            managed_leaf
        );
        assert_eq!(restarted.managed(), store.managed());
        assert_eq!(restarted.managed()[0].version, 4);
        assert_eq!(
            restarted
                .install("app.example.test", 2, &chain, &key)
                .unwrap(),
            Installed::Stale { held: 4 }
        );

        // Removing it hands the name back to cert_dir, in this store and the next one.
        assert!(restarted.remove("app.example.test").unwrap());
        restarted.reload_dir(certs.path());
        assert_eq!(
            leaf_of(&restarted.find("app.example.test").unwrap()),
            from_dir
        );
        let again = CertStore::new(None).with_managed_dir(managed.path());
        assert!(again.load_managed().is_empty());
        assert!(again.managed().is_empty());
    }

    #[test]
    fn a_broken_managed_file_is_skipped_and_named() {
        let managed = tempfile::tempdir().unwrap();
        let store = CertStore::new(None).with_managed_dir(managed.path());
        let (chain, key) = pem_pair(&["*.wild.test"]);
        store.install("*.wild.test", 1, &chain, &key).unwrap();
        assert!(store.find("a.wild.test").is_some());
        std::fs::write(managed.path().join("broken.json"), "{").unwrap();
        let fresh = CertStore::new(None).with_managed_dir(managed.path());
        let errors = fresh.load_managed();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].0.ends_with("broken.json"));
        assert!(fresh.find("b.wild.test").is_some());
        assert!(managed.path().join("_.wild.test.json").is_file());
    }

    #[test]
    fn domains_are_checked_and_normalized() {
        assert_eq!(
            normalize_domain("App.Example.TEST.").unwrap(),
            "app.example.test"
        );
        assert_eq!(
            normalize_domain("*.example.test").unwrap(),
            "*.example.test"
        );
        for bad in ["", "localhost", "a..b", "-a.b", "a/b.c", "*.com.*", "a.*.b"] {
            assert!(normalize_domain(bad).is_err(), "{bad:?}");
        }
        let names = ["*.example.test".to_owned(), "exact.test".to_owned()];
        assert!(covers(&names, "a.example.test"));
        assert!(covers(&names, "*.example.test"));
        assert!(covers(&names, "exact.test"));
        assert!(!covers(&names, "a.b.example.test"));
        assert!(!covers(&names, "example.test"));
        assert!(!covers(&["a.example.test".to_owned()], "*.example.test"));
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
