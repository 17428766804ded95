//! TLS for the agent listener: rustls, TLS 1.3 only, ALPN `burrow/1`; and the optional TLS
//! identity of the `RelayControl` server.
//!
//! Without a configured certificate the relay runs on a development CA it generates on first
//! start under `state_dir` (`ca.pem` is what agents trust through `BURROW_CA_FILE`), issuing
//! itself a certificate for `localhost`, `127.0.0.1` and `*.<domain>`. Both are reused on later
//! starts so agents keep trusting the same CA.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::{path::Path, sync::Arc};

/// Errors preparing TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a PEM file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Certificate generation failed.
    #[error("generating the dev certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Paths of the development CA and the relay certificate it issued.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// CA certificate agents trust.
    pub ca_file: std::path::PathBuf,
    /// Relay certificate chain.
    pub cert_file: std::path::PathBuf,
    /// Relay private key.
    pub key_file: std::path::PathBuf,
}

/// Creates (or reuses) the dev CA and a relay certificate for `domain` under `dir`.
pub fn ensure_dev_pki(dir: &Path, domain: &str) -> Result<DevPki, TlsError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let pki = DevPki {
        ca_file: dir.join("ca.pem"),
        cert_file: dir.join("relay.pem"),
        key_file: dir.join("relay.key"),
    };
    let ca_key_file = dir.join("ca.key");
    if !pki.ca_file.exists() || !ca_key_file.exists() {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Burrow development CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write_private(&ca_key_file, &key.serialize_pem())?;
        std::fs::write(&pki.ca_file, cert.pem()).map_err(io_err(&pki.ca_file))?;
        // A new CA invalidates any certificate the old one issued.
        let _ = std::fs::remove_file(&pki.cert_file);
    }
    if !pki.cert_file.exists() || !pki.key_file.exists() {
        let ca_pem = std::fs::read_to_string(&pki.ca_file).map_err(io_err(&pki.ca_file))?;
        let ca_key_pem = std::fs::read_to_string(&ca_key_file).map_err(io_err(&ca_key_file))?;
        let ca_key = KeyPair::from_pem(&ca_key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
        let mut params = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            domain.to_owned(),
            format!("*.{domain}"),
        ])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Burrow development relay");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&pki.key_file, &key.serialize_pem())?;
        std::fs::write(&pki.cert_file, cert.pem()).map_err(io_err(&pki.cert_file))?;
    }
    Ok(pki)
}

fn write_private(path: &Path, pem: &str) -> Result<(), TlsError> {
    burrow_common::secret::write_private_file(path, pem.as_bytes()).map_err(io_err(path))
}

/// Builds the rustls server config for the agent listener from PEM files.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (certs, key) = load_cert_and_key(cert_file, key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![
        burrow_proto::tunnel::ALPN.to_vec(),
        burrow_proto::tunnel::DATA_ALPN.to_vec(),
    ];
    Ok(Arc::new(config))
}

/// The TLS identity of the `RelayControl` server (`control_tls_cert_file` and
/// `control_tls_key_file`), checked here so a bad file is named at start rather than at the
/// first handshake.
pub fn control_identity(
    cert_file: &Path,
    key_file: &Path,
) -> Result<tonic::transport::Identity, TlsError> {
    let (certs, key) = load_cert_and_key(cert_file, key_file)?;
    // rustls checks that the key matches the certificate.
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let cert = std::fs::read(cert_file).map_err(io_err(cert_file))?;
    let key = std::fs::read(key_file).map_err(io_err(key_file))?;
    Ok(tonic::transport::Identity::from_pem(cert, key))
}

/// A certificate chain and its private key from PEM files; errors name the file.
fn load_cert_and_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Pem {
            path: cert_file.display().to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert_file.display().to_string(),
            message: "no certificate found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Pem {
        path: key_file.display().to_string(),
        message: e.to_string(),
    })?;
    Ok((certs, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_identity_needs_a_matching_pair_and_names_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure_dev_pki(dir.path(), "burrow.test").unwrap();
        control_identity(&pki.cert_file, &pki.key_file).unwrap();

        // The CA's key does not belong to the relay's certificate.
        let err = control_identity(&pki.cert_file, &dir.path().join("ca.key"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("TLS configuration"), "{err}");

        let missing = dir.path().join("missing.pem");
        let err = control_identity(&missing, &pki.key_file)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
