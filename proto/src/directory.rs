//! The relay directory: finding live relays through their Redis presence and calling their
//! `RelayControl` service with the internal key.
//!
//! Each relay announces itself (see `burrow-relay`'s presence module) under the shared Redis
//! prefix:
//! - `<prefix>relays` (set): ids of relays that announced themselves;
//! - `<prefix>relay:<id>` (string with a 30 s TTL, refreshed every 5 s): JSON with at least
//!   `relay_id`, `control_url` and (since relays have regions) `region`.
//!
//! A relay whose announcement expired is gone and is not listed. The api (sessions, kicks) and
//! the worker (certificates) share this module, so both see the same relays.
//!
//! `RelayControl` carries certificates' private keys, so it can run over TLS: a relay with
//! `control_tls_cert_file` announces an `https://` control URL, and a directory given the CA
//! that signed those certificates ([`RelayDirectory::with_control_ca`]) talks TLS to it and
//! refuses relays announcing plain `http://` (no downgrade through a forged announcement).

use crate::grpc_auth::Bearer;
use crate::relay::relay_control_client::RelayControlClient;
use burrow_common::redis_link::{RedisLink, timed};
use serde::Deserialize;
use std::{sync::Arc, time::Duration};
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig},
};

/// Region of a relay whose announcement predates regions.
pub const DEFAULT_REGION: &str = "local";

/// How long connecting to a relay may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one `RelayControl` call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A `RelayControl` client that sends the internal key on every call.
pub type Client = RelayControlClient<InterceptedService<Channel, Bearer>>;

/// A live relay, as announced in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RelayInfo {
    /// The relay's id.
    pub relay_id: String,
    /// `http://host:port` (or `https://` with TLS) of its `RelayControl` gRPC server.
    pub control_url: String,
    /// The relay's region label (`local` when the relay did not announce one).
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_region() -> String {
    DEFAULT_REGION.to_owned()
}

/// Why relays could not be found or called.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// Redis is not configured or unreachable, so relays cannot be found.
    #[error("relay discovery unavailable: {0}")]
    Discovery(String),
    /// A relay could not be reached or its call failed.
    #[error("relay {relay_id} at {url}: {message}")]
    Call {
        /// Relay id.
        relay_id: String,
        /// Its control URL.
        url: String,
        /// Why.
        message: String,
    },
}

impl DirectoryError {
    /// A failed call to `relay` (also for errors of calls made with [`RelayDirectory::client`]).
    pub fn call(relay: &RelayInfo, message: impl std::fmt::Display) -> Self {
        Self::Call {
            relay_id: relay.relay_id.clone(),
            url: relay.control_url.clone(),
            message: message.to_string(),
        }
    }
}

/// Finds relays in Redis and opens `RelayControl` clients to them.
pub struct RelayDirectory {
    redis: Arc<RedisLink>,
    prefix: String,
    /// The internal key as bearer; `None` when it cannot be a header value.
    bearer: Option<Bearer>,
    /// TLS settings (the roots `https://` control URLs are verified against), built once;
    /// when set, only TLS is used.
    control_tls: Option<ClientTlsConfig>,
}

impl RelayDirectory {
    /// Relays announced through `redis` under `prefix`, called with `internal_key` as bearer.
    pub fn new(redis: Arc<RedisLink>, prefix: &str, internal_key: &str) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            bearer: Bearer::new(internal_key),
            control_tls: None,
        }
    }

    /// [`RelayDirectory::with_control_ca`] with the file at `path` (the `relay_control_ca_file`
    /// setting); an empty path leaves the directory as it is (plain-HTTP relays). The error
    /// names the setting and the file.
    pub fn with_control_ca_file(self, path: &str) -> Result<Self, String> {
        if path.is_empty() {
            return Ok(self);
        }
        let pem = std::fs::read(path)
            .map_err(|e| format!("`relay_control_ca_file` {path:?} cannot be read: {e}"))?;
        self.with_control_ca(&pem)
            .map_err(|e| format!("`relay_control_ca_file` {path:?} is not usable: {e}"))
    }

    /// Calls relays over TLS only, verifying their `RelayControl` certificates against the PEM
    /// certificate(s) `ca_pem` (`relay_control_ca_file`). Checks that `ca_pem` holds at least one
    /// certificate; the error says what was wrong with it.
    pub fn with_control_ca(mut self, ca_pem: &[u8]) -> Result<Self, String> {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| format!("it is not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("a certificate in it is not a usable CA: {e}"))?;
        }
        if roots.is_empty() {
            return Err("it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
        }
        // The timeout covers the handshake, which `connect_timeout` (TCP) does not.
        self.control_tls = Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .timeout(CONNECT_TIMEOUT),
        );
        Ok(self)
    }

    /// Every relay whose announcement is live, sorted by id. An announcement that does not
    /// parse is skipped (logged).
    pub async fn discover(&self) -> Result<Vec<RelayInfo>, DirectoryError> {
        let mut conn = self.redis.get().await.ok_or_else(|| {
            DirectoryError::Discovery(match self.redis.configured() {
                true => "redis is unreachable".into(),
                false => "redis is not configured".into(),
            })
        })?;
        let unavailable = |e: redis::RedisError| DirectoryError::Discovery(e.to_string());
        let mut ids: Vec<String> = timed(
            redis::cmd("SMEMBERS")
                .arg(format!("{}relays", self.prefix))
                .query_async(&mut conn),
        )
        .await
        .map_err(unavailable)?;
        ids.sort();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| format!("{}relay:{id}", self.prefix))
            .collect();
        let raws: Vec<Option<String>> = timed(redis::cmd("MGET").arg(&keys).query_async(&mut conn))
            .await
            .map_err(unavailable)?;
        let mut out = Vec::new();
        for (id, raw) in ids.iter().zip(raws) {
            // A relay whose announcement expired is gone.
            let Some(raw) = raw else { continue };
            match serde_json::from_str::<RelayInfo>(&raw) {
                Ok(info) => out.push(info),
                Err(e) => {
                    tracing::warn!(relay_id = %id, error = %e, "skipping a relay announcement that does not parse")
                }
            }
        }
        Ok(out)
    }

    /// A `RelayControl` client for `relay`, connected (3 s) and with a 5 s timeout per call.
    pub async fn client(&self, relay: &RelayInfo) -> Result<Client, DirectoryError> {
        let bearer = self.bearer.clone().ok_or_else(|| {
            DirectoryError::call(relay, "the internal key is not a valid header value")
        })?;
        let mut endpoint = tonic::transport::Endpoint::from_shared(relay.control_url.clone())
            .map_err(|e| DirectoryError::call(relay, format!("bad control_url: {e}")))?;
        let https = relay.control_url.starts_with("https://");
        match (&self.control_tls, https) {
            (Some(tls), true) => {
                endpoint = endpoint
                    .tls_config(tls.clone())
                    .map_err(|e| DirectoryError::call(relay, format!("TLS setup: {e}")))?;
            }
            (Some(_), false) => {
                return Err(DirectoryError::call(
                    relay,
                    "it announces plain-HTTP RelayControl, but relay_control_ca_file is set, so \
                     only TLS is used: give the relay control_tls_cert_file and control_tls_key_file",
                ));
            }
            (None, true) => {
                return Err(DirectoryError::call(
                    relay,
                    "it serves RelayControl over TLS: set relay_control_ca_file to the CA that \
                     signed its control certificate",
                ));
            }
            (None, false) => {}
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect()
            .await
            .map_err(|e| DirectoryError::call(relay, format!("cannot connect: {e}")))?;
        Ok(RelayControlClient::with_interceptor(channel, bearer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_without_a_region_is_local() {
        let old: RelayInfo = serde_json::from_str(
            r#"{"relay_id":"r1","control_url":"http://127.0.0.1:1","http_ingress":"x"}"#,
        )
        .unwrap();
        assert_eq!(old.region, "local");
        let new: RelayInfo = serde_json::from_str(
            r#"{"relay_id":"r1","control_url":"http://127.0.0.1:1","region":"eu-west"}"#,
        )
        .unwrap();
        assert_eq!(new.region, "eu-west");
    }

    /// A self-signed CA certificate (PEM).
    fn test_ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn relay(url: &str) -> RelayInfo {
        RelayInfo {
            relay_id: "r1".into(),
            control_url: url.into(),
            region: DEFAULT_REGION.into(),
        }
    }

    #[tokio::test]
    async fn tls_and_plain_relays_are_matched_to_the_configuration() {
        let plain = RelayDirectory::new(Arc::new(RedisLink::new("")), "p:", "k");
        let err = plain
            .client(&relay("https://127.0.0.1:1"))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("set relay_control_ca_file"), "{err}");

        let tls = RelayDirectory::new(Arc::new(RedisLink::new("")), "p:", "k")
            .with_control_ca(test_ca_pem().as_bytes())
            .unwrap();
        let err = tls
            .client(&relay("http://127.0.0.1:1"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("relay r1") && err.contains("only TLS is used"),
            "{err}"
        );
    }

    #[test]
    fn a_control_ca_must_hold_a_pem_certificate() {
        let dir = || RelayDirectory::new(Arc::new(RedisLink::new("")), "p:", "k");
        let err = dir().with_control_ca(b"not a cert").err().unwrap();
        assert!(err.contains("no PEM certificate"), "{err}");
        // A PEM block whose body is not a certificate.
        let garbage = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let err = dir().with_control_ca(garbage).err().unwrap();
        assert!(err.contains("not a usable CA"), "{err}");
        assert!(dir().with_control_ca(test_ca_pem().as_bytes()).is_ok());
        let err = dir()
            .with_control_ca_file("/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(
            err.contains("`relay_control_ca_file` \"/nonexistent/ca.pem\" cannot be read"),
            "{err}"
        );
        assert!(dir().with_control_ca_file("").is_ok(), "empty: plain HTTP");
    }

    #[tokio::test]
    async fn discovery_without_redis_says_why() {
        let dir = RelayDirectory::new(Arc::new(RedisLink::new("")), "p:", "k");
        let err = dir.discover().await.unwrap_err().to_string();
        assert!(err.contains("not configured"), "{err}");
    }

    /// Against the suite's Redis when reachable (skipped otherwise).
    #[tokio::test]
    async fn lists_live_relays_and_skips_expired_ones() {
        let url = std::env::var("BURROW_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let link = Arc::new(RedisLink::new(&url));
        let Some(mut conn) = link.get().await else {
            eprintln!("skipped: no redis at {url}");
            return;
        };
        let prefix = format!(
            "unit:dir:{}:",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let _: () = redis::pipe()
            .sadd(format!("{prefix}relays"), &["b", "a", "gone"])
            .ignore()
            .set_ex(
                format!("{prefix}relay:a"),
                r#"{"relay_id":"a","control_url":"http://127.0.0.1:1","region":"eu"}"#,
                30,
            )
            .ignore()
            .set_ex(
                format!("{prefix}relay:b"),
                r#"{"relay_id":"b","control_url":"http://127.0.0.1:2"}"#,
                30,
            )
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
        let dir = RelayDirectory::new(link, &prefix, "k");
        let relays = dir.discover().await.unwrap();
        let _: () = redis::pipe()
            .del(format!("{prefix}relays"))
            .del(format!("{prefix}relay:a"))
            .del(format!("{prefix}relay:b"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            relays,
            vec![
                RelayInfo {
                    relay_id: "a".into(),
                    control_url: "http://127.0.0.1:1".into(),
                    region: "eu".into(),
                },
                RelayInfo {
                    relay_id: "b".into(),
                    control_url: "http://127.0.0.1:2".into(),
                    region: "local".into(),
                },
            ]
        );
        // A relay that does not listen is a call error naming it.
        let err = dir.client(&relays[0]).await.unwrap_err().to_string();
        assert!(err.contains("relay a at http://127.0.0.1:1"), "{err}");
    }
}
