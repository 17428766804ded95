//! What Burrow reads from an issued certificate chain: the leaf's serial, validity, names and
//! its RFC 9773 certificate identifier (for ARI lookups and `replaces`).

use base64::Engine as _;
use rustls_pki_types::{CertificateDer, pem::PemObject};
use x509_parser::prelude::{FromDer, ParsedExtension, X509Certificate};

/// Facts about a chain's leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// Validity start, unix seconds.
    pub not_before: i64,
    /// Validity end, unix seconds.
    pub not_after: i64,
    /// DNS names from subjectAltName.
    pub dns_names: Vec<String>,
    /// `base64url(AKI keyIdentifier) "." base64url(DER serial)`, when the leaf has an AKI.
    pub ari_id: Option<String>,
}

/// Why a chain could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertInfoError {
    /// No `CERTIFICATE` block.
    #[error("the chain holds no PEM certificate")]
    Empty,
    /// The leaf is not valid DER X.509.
    #[error("the leaf certificate does not parse: {0}")]
    Parse(String),
}

/// Reads the first certificate (the leaf) of a PEM chain.
pub fn leaf_info(chain_pem: &str) -> Result<LeafInfo, CertInfoError> {
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or(CertInfoError::Empty)?
        .map_err(|e| CertInfoError::Parse(e.to_string()))?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| CertInfoError::Parse(e.to_string()))?;
    let raw_serial = cert.tbs_certificate.raw_serial();
    let serial = hex::encode(
        raw_serial
            .iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>(),
    );
    let mut dns_names = Vec::new();
    let mut aki = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                        dns_names.push(d.to_ascii_lowercase());
                    }
                }
            }
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec());
            }
            _ => {}
        }
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok(LeafInfo {
        serial,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        dns_names,
        ari_id: aki.map(|k| format!("{}.{}", b64.encode(k), b64.encode(raw_serial))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chain_for(names: &[&str]) -> (String, rcgen::Certificate) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0, 0x8a, 0x01, 0x02]));
        let leaf = params.signed_by(&key, &issuer).unwrap();
        (format!("{}{}", leaf.pem(), ca.pem()), leaf)
    }

    #[test]
    fn reads_names_serial_validity_and_ari_id() {
        let (chain, _) = chain_for(&["App.Example.com", "www.example.com"]);
        let info = leaf_info(&chain).unwrap();
        assert_eq!(info.dns_names, ["app.example.com", "www.example.com"]);
        assert_eq!(info.serial, "8a0102");
        assert!(info.not_after > info.not_before);
        let ari = info.ari_id.unwrap();
        let (aki, serial) = ari.split_once('.').unwrap();
        assert!(!aki.is_empty());
        // The identifier carries the DER serial as encoded, leading zero included.
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(serial)
                .unwrap(),
            [0, 0x8a, 0x01, 0x02]
        );
    }

    #[test]
    fn empty_and_garbage_chains_are_errors() {
        assert_eq!(leaf_info(""), Err(CertInfoError::Empty));
        let bogus = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(leaf_info(bogus), Err(CertInfoError::Parse(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = leaf_info(&s);
        }

        #[test]
        fn arbitrary_der_in_a_pem_block_never_panics(der in proptest::collection::vec(any::<u8>(), 0..600)) {
            let pem = format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                base64::engine::general_purpose::STANDARD.encode(der)
            );
            let _ = leaf_info(&pem);
        }
    }
}
