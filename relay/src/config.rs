//! `burrow-relay` configuration (`BURROW_RELAY_*` environment, optional TOML file).

use burrow_common::{Secret, config::Config};
use serde::{Deserialize, Serialize};

/// Everything a relay needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Stable id of this relay, shown in `ListSessions` and in Redis presence.
    pub relay_id: String,
    /// Region label (`[a-z0-9-]`, e.g. `eu-west`), announced in Redis and reported with
    /// managed certificates, so the control plane can tell relays apart by location.
    pub region: String,
    /// Where agents connect (TLS 1.3).
    pub agent_listen: String,
    /// Public HTTP ingress.
    pub http_listen: String,
    /// Public TLS ingress: HTTPS terminated with certificates from `cert_dir` (chosen by SNI),
    /// and TLS passthrough endpoints routed by SNI. Empty disables it.
    pub https_listen: String,
    /// `RelayControl` gRPC server the api and the worker call.
    pub control_listen: String,
    /// PEM certificate chain of the `RelayControl` server; with `control_tls_key_file` it is
    /// served over TLS (announced as `https://`) — it carries certificates' private keys, so
    /// set this wherever the api or worker reach the relay over a network. The certificate must
    /// name the address they dial (e.g. an IP SAN for `10.0.0.5`); they trust it through their
    /// `relay_control_ca_file`. Empty: plain HTTP.
    pub control_tls_cert_file: String,
    /// PEM private key of `control_tls_cert_file`.
    pub control_tls_key_file: String,
    /// URL the api and the worker reach `control_listen` at, announced in Redis
    /// (`https://relay-7.internal:7090` — with TLS its certificate must name this host); empty
    /// announces `http(s)://<the address control_listen bound>`, which needs an explicit
    /// address (not `0.0.0.0`).
    pub control_url: String,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub ops_listen: String,
    /// Relay-to-relay link: other relays forward visitors of endpoints this relay holds here
    /// (authenticated with a credential derived from `internal_key`; plain HTTP, keep it on a
    /// private network). Announced in Redis as `peer_url`. Empty disables it: this relay then
    /// still forwards to others, but nobody forwards to it.
    pub peer_listen: String,
    /// URL other relays reach `peer_listen` at (`http://10.0.0.5:7445`); empty announces
    /// `http://<the address peer_listen bound>`, which is wrong for a wildcard bind
    /// (`0.0.0.0`).
    pub peer_url: String,
    /// Base domain: endpoint `demo` is served at `demo.<domain>`.
    pub domain: String,
    /// Port printed in public URLs; 0 means the port `http_listen` bound.
    pub public_http_port: u16,
    /// Port printed in `https://` and `tls://` URLs; 0 means the port `https_listen` bound.
    pub public_https_port: u16,
    /// Directory of combined PEM files (chain + key) the HTTPS ingress serves, chosen by the
    /// SNI name; reloaded when it changes. Empty uses `<state_dir>/certs`.
    pub cert_dir: String,
    /// How often `cert_dir` is checked for changes.
    pub cert_reload_secs: u64,
    /// Where managed certificates (pushed over `RelayControl.InstallCertificate` by the
    /// certificate workflows) are kept, one file per domain, so a restarted relay serves them
    /// at once. Empty uses `<state_dir>/managed-certs`. Not for hand-placed files: use
    /// `cert_dir`.
    pub managed_cert_dir: String,
    /// Base URL of burrow-api, used to verify authtokens.
    pub api_url: String,
    /// Shared secret the relay presents to the api's internal endpoints.
    pub internal_key: Secret,
    /// The api's gRPC address (`http://host:port`) whose `RelayFeed` stream issues traffic
    /// policies, reserved names, verified domains and plan changes; empty disables the feed
    /// (no policies, no reservations enforced).
    pub feed_url: String,
    /// Directory for the generated dev CA and relay certificate.
    pub state_dir: String,
    /// PEM certificate chain for the agent listener; empty uses the dev CA in `state_dir`.
    pub tls_cert_file: String,
    /// PEM private key for `tls_cert_file`.
    pub tls_key_file: String,
    /// How long a verified authtoken is trusted without asking the api again.
    pub auth_cache_secs: u64,
    /// How long a disconnected agent's names stay reserved (visitors get 502, not 404).
    pub offline_grace_secs: u64,
    /// Ports handed to TCP endpoints, `first-last`.
    pub tcp_ports: String,
    /// Address TCP endpoint ports listen on.
    pub tcp_listen_host: String,
    /// Host printed in `tcp://host:port` URLs; empty uses `tcp_listen_host`.
    pub tcp_public_host: String,
    /// Most visitor connections served at once; further ones wait to be accepted.
    pub max_visitor_connections: u32,
    /// How long a visitor may take to send a request's headers before the connection is
    /// closed (slow-header clients).
    pub header_read_timeout_secs: u64,
    /// How often usage (bytes, requests, connections per endpoint) is sent to the api.
    pub usage_flush_secs: u64,
    /// Redis for presence, endpoint leases (forwarding between relays) and shared rate limits;
    /// empty disables them (a single relay). May be down: the relay keeps serving and writes
    /// everything again when it answers.
    pub redis_url: String,
    /// Prefix for every Redis key this relay writes.
    pub redis_prefix: String,
    /// When set, the relay writes its bound addresses here as JSON once listening.
    pub addr_file: String,
    /// OTLP/gRPC endpoint for traces; empty disables export.
    pub otlp_endpoint: String,
    /// Log JSON lines.
    pub log_json: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            relay_id: "relay-local".into(),
            region: "local".into(),
            agent_listen: "127.0.0.1:7443".into(),
            http_listen: "127.0.0.1:7081".into(),
            https_listen: "127.0.0.1:7444".into(),
            control_listen: "127.0.0.1:7090".into(),
            control_tls_cert_file: String::new(),
            control_tls_key_file: String::new(),
            control_url: String::new(),
            ops_listen: "127.0.0.1:7082".into(),
            peer_listen: "127.0.0.1:7445".into(),
            peer_url: String::new(),
            domain: "burrow.localhost".into(),
            public_http_port: 0,
            public_https_port: 0,
            cert_dir: String::new(),
            cert_reload_secs: 2,
            managed_cert_dir: String::new(),
            api_url: "http://127.0.0.1:7080".into(),
            internal_key: Secret::default(),
            feed_url: String::new(),
            state_dir: ".burrow/relay".into(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            auth_cache_secs: 30,
            offline_grace_secs: 600,
            max_visitor_connections: 10_000,
            header_read_timeout_secs: 30,
            tcp_ports: "20000-20999".into(),
            tcp_listen_host: "127.0.0.1".into(),
            tcp_public_host: String::new(),
            usage_flush_secs: 60,
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "burrow:".into(),
            addr_file: String::new(),
            otlp_endpoint: String::new(),
            log_json: false,
        }
    }
}

burrow_common::impl_service_config!(RelayConfig);

impl Config for RelayConfig {
    fn validate(&self) -> Result<(), String> {
        if self.internal_key.is_empty() {
            return Err(
                "`internal_key` (BURROW_RELAY_INTERNAL_KEY) must be set: the relay \
                        presents it to the api to verify authtokens"
                    .into(),
            );
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "`region` {:?} (BURROW_RELAY_REGION) must be non-empty and only a-z, 0-9 and `-`",
                self.region
            ));
        }
        crate::tcp::parse_range(&self.tcp_ports).map_err(|e| format!("`tcp_ports`: {e}"))?;
        if self.max_visitor_connections == 0 {
            return Err("`max_visitor_connections` must be at least 1".into());
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            return Err("`tls_cert_file` and `tls_key_file` must be set together".into());
        }
        if self.control_tls_cert_file.is_empty() != self.control_tls_key_file.is_empty() {
            return Err(
                "`control_tls_cert_file` and `control_tls_key_file` must be set together".into(),
            );
        }
        let scheme = match self.control_tls_cert_file.is_empty() {
            true => "http",
            false => "https",
        };
        if self.control_url.is_empty() {
            let unspecified = self
                .control_listen
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| a.ip().is_unspecified());
            if unspecified {
                return Err(format!(
                    "`control_listen` {:?} binds every address: set `control_url` to the \
                     {scheme}://host:port the api and the worker reach it at",
                    self.control_listen
                ));
            }
        } else if !self.control_url.starts_with(&format!("{scheme}://"))
            || self.control_url.parse::<http::Uri>().is_err()
        {
            return Err(format!(
                "`control_url` {:?} must be {scheme}://host:port ({})",
                self.control_url,
                match scheme {
                    "https" => "control_tls_cert_file is set, so RelayControl speaks TLS",
                    _ => "control_tls_cert_file is not set, so RelayControl is plain HTTP",
                }
            ));
        }
        if burrow_proto::tunnel::validate_label(self.domain.split('.').next().unwrap_or(""))
            .is_err()
        {
            return Err(format!("`domain` {:?} is not a DNS name", self.domain));
        }
        for (key, value) in [
            ("agent_listen", &self.agent_listen),
            ("http_listen", &self.http_listen),
            ("control_listen", &self.control_listen),
            ("ops_listen", &self.ops_listen),
        ] {
            burrow_common::config::check_socket_addr(key, value)?;
        }
        if !self.https_listen.is_empty() {
            burrow_common::config::check_socket_addr("https_listen", &self.https_listen)?;
        }
        if !self.peer_listen.is_empty() {
            burrow_common::config::check_socket_addr("peer_listen", &self.peer_listen)?;
        }
        if !self.peer_url.is_empty()
            && (!self.peer_url.starts_with("http://")
                || self.peer_url.parse::<http::Uri>().is_err())
        {
            return Err(format!(
                "`peer_url` {:?} must be http://host:port (the peer link is plain HTTP)",
                self.peer_url
            ));
        }
        if self.header_read_timeout_secs == 0 {
            return Err("`header_read_timeout_secs` must be at least 1".into());
        }
        if self.usage_flush_secs == 0 {
            return Err("`usage_flush_secs` must be at least 1".into());
        }
        if self.cert_reload_secs == 0 {
            return Err("`cert_reload_secs` must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/relay.toml");
        let cfg: RelayConfig = burrow_common::config::load_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(cfg.domain, "burrow.localhost");
    }

    #[test]
    fn peer_url_must_be_plain_http() {
        let mut cfg = RelayConfig {
            internal_key: Secret::new("k"),
            ..RelayConfig::default()
        };
        assert_eq!(cfg.validate(), Ok(()));
        cfg.peer_url = "http://10.0.0.5:7445".into();
        assert_eq!(cfg.validate(), Ok(()));
        cfg.peer_url = "https://10.0.0.5:7445".into();
        assert!(cfg.validate().unwrap_err().contains("`peer_url`"));
    }

    #[test]
    fn control_tls_files_come_in_pairs() {
        let mut cfg = RelayConfig {
            internal_key: Secret::new("k"),
            control_tls_cert_file: "control.pem".into(),
            ..RelayConfig::default()
        };
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("`control_tls_key_file`"), "{err}");
        cfg.control_tls_key_file = "control-key.pem".into();
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn control_url_matches_the_control_scheme_and_a_wildcard_bind_needs_one() {
        let mut cfg = RelayConfig {
            internal_key: Secret::new("k"),
            control_listen: "0.0.0.0:7090".into(),
            ..RelayConfig::default()
        };
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("set `control_url`"), "{err}");
        cfg.control_url = "http://relay-7.internal:7090".into();
        assert_eq!(cfg.validate(), Ok(()));
        cfg.control_tls_cert_file = "c.pem".into();
        cfg.control_tls_key_file = "k.pem".into();
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("must be https://"), "{err}");
        cfg.control_url = "https://relay-7.internal:7090".into();
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn region_is_a_lowercase_label() {
        let mut cfg = RelayConfig {
            internal_key: Secret::new("k"),
            ..RelayConfig::default()
        };
        assert_eq!(cfg.region, "local");
        cfg.region = "eu-west-1".into();
        assert_eq!(cfg.validate(), Ok(()));
        for bad in ["", "EU", "eu west", "eu_west"] {
            cfg.region = bad.into();
            assert!(cfg.validate().unwrap_err().contains("`region`"), "{bad:?}");
        }
    }
}
