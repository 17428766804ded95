//! `burrow-api` configuration (`BURROW_API_*` environment, optional TOML file).

use burrow_common::{Secret, config::Config};
use serde::{Deserialize, Serialize};

/// Everything the api needs to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// REST API, console and ops endpoints.
    pub listen: String,
    /// gRPC server relays subscribe to (`RelayFeed`, with server reflection).
    pub grpc_listen: String,
    /// Base domain relays serve endpoints under (the relays' `domain`): custom domains under
    /// it are refused, since its names are reserved through `reserved-names`.
    pub base_domain: String,
    /// DNS server (`host:port`, UDP and TCP) that custom-domain verification asks for TXT
    /// records; empty uses the system resolver (`/etc/resolv.conf`).
    pub dns_resolver: String,
    /// PostgreSQL (source of truth); migrations are applied on start.
    pub database_url: String,
    /// Redis (relay discovery, replay-all lock); empty disables those features.
    pub redis_url: String,
    /// Prefix of every Redis key (shared with the relays).
    pub redis_prefix: String,
    /// Temporal frontend, `http://host:port`.
    pub temporal_address: String,
    /// Temporal namespace.
    pub temporal_namespace: String,
    /// Task queue the worker polls.
    pub task_queue: String,
    /// Secret relays present on `/v1/internal/*`.
    pub internal_key: Secret,
    /// PEM CA that signed the relays' `RelayControl` TLS certificates (their
    /// `control_tls_cert_file`); when set, relays are called over TLS only. Empty: plain HTTP.
    pub relay_control_ca_file: String,
    /// Signing secret of provider webhooks (`whsec_...`).
    pub webhook_secret: Secret,
    /// Largest accepted age of a webhook signature timestamp, seconds.
    pub webhook_tolerance_secs: u64,
    /// First retry delay when applying a provider event fails.
    pub apply_initial_interval_ms: u64,
    /// Largest retry delay when applying a provider event.
    pub apply_maximum_interval_ms: u64,
    /// Attempts before a provider event's workflow parks in a failure state.
    pub apply_maximum_attempts: u32,
    /// Highest rate at which replay-all signals parked workflows.
    pub replay_all_max_rate_per_sec: u32,
    /// Directory holding the runbook pages the console links to.
    pub runbooks_dir: String,
    /// Start and stop certificate workflows from the `domain_events` outbox. Off: events stay
    /// unconsumed (nothing is lost; they are acted on once this is turned on).
    pub acme_enabled: bool,
    /// Retry schedule of a failing certificate step, like `1m,2m,5m,1h` (units `ms`, `s`,
    /// `m`, `h`); empty means certmagic's (`burrow_workflows::certificate::default_retry_schedule_ms`).
    pub cert_retry_schedule: String,
    /// A parked certificate run escalates this long before the served certificate expires.
    pub cert_expiry_warning_secs: u64,
    /// Signing secret of certificate callbacks (`Burrow-Signature`); empty refuses every
    /// callback (503).
    pub cert_callback_secret: Secret,
    /// Largest accepted age of a certificate callback's signature timestamp, seconds.
    pub cert_callback_tolerance_secs: u64,
    /// When set, the bound address is written here as JSON.
    pub addr_file: String,
    /// OTLP/gRPC endpoint for traces; empty disables export.
    pub otlp_endpoint: String,
    /// Log JSON lines.
    pub log_json: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7080".into(),
            grpc_listen: "127.0.0.1:7091".into(),
            base_domain: "burrow.localhost".into(),
            dns_resolver: String::new(),
            database_url: "postgres://postgres@127.0.0.1:5432/burrow".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "burrow:".into(),
            temporal_address: "http://127.0.0.1:7233".into(),
            temporal_namespace: "default".into(),
            task_queue: "burrow".into(),
            internal_key: Secret::default(),
            relay_control_ca_file: String::new(),
            webhook_secret: Secret::default(),
            webhook_tolerance_secs: 300,
            apply_initial_interval_ms: 1_000,
            apply_maximum_interval_ms: 300_000,
            apply_maximum_attempts: 10,
            replay_all_max_rate_per_sec: 10,
            runbooks_dir: "runbooks".into(),
            acme_enabled: false,
            cert_retry_schedule: String::new(),
            cert_expiry_warning_secs: 14 * 24 * 3600,
            cert_callback_secret: Secret::default(),
            cert_callback_tolerance_secs: 300,
            addr_file: String::new(),
            otlp_endpoint: String::new(),
            log_json: false,
        }
    }
}

burrow_common::impl_service_config!(ApiConfig);

impl ApiConfig {
    /// `cert_retry_schedule` in milliseconds (the default schedule when empty).
    pub fn cert_retry_schedule_ms(&self) -> Result<Vec<u64>, String> {
        let text = self.cert_retry_schedule.trim();
        if text.is_empty() {
            return Ok(burrow_workflows::certificate::default_retry_schedule_ms());
        }
        burrow_workflows::certificate::parse_schedule(text).map_err(|e| {
            format!(
                "`cert_retry_schedule` (BURROW_API_CERT_RETRY_SCHEDULE) {:?}: {e}; write delays \
                 like \"1m,2m,5m,1h\", or leave it empty for the default schedule",
                self.cert_retry_schedule
            )
        })
    }

    /// The input of a new certificate run for `domain`, from this configuration.
    pub fn certificate_input(
        &self,
        domain: &str,
    ) -> Result<burrow_workflows::certificate::CertificateInput, String> {
        let mut input = burrow_workflows::certificate::CertificateInput::new(domain);
        input.retry_schedule_ms = self.cert_retry_schedule_ms()?;
        input.expiry_warning_ms = self.cert_expiry_warning_secs.saturating_mul(1000);
        Ok(input)
    }
}

impl Config for ApiConfig {
    fn validate(&self) -> Result<(), String> {
        if self.internal_key.is_empty() {
            return Err("`internal_key` (BURROW_API_INTERNAL_KEY) must be set".into());
        }
        if self.webhook_secret.is_empty() {
            return Err("`webhook_secret` (BURROW_API_WEBHOOK_SECRET) must be set".into());
        }
        if self.apply_maximum_attempts == 0 {
            return Err("`apply_maximum_attempts` must be at least 1".into());
        }
        self.cert_retry_schedule_ms()?;
        if self.cert_expiry_warning_secs == 0 || self.cert_expiry_warning_secs > 90 * 24 * 3600 {
            return Err(format!(
                "`cert_expiry_warning_secs` must be between 1 and {} (90 days); got {}",
                90 * 24 * 3600,
                self.cert_expiry_warning_secs
            ));
        }
        if self.replay_all_max_rate_per_sec == 0 {
            return Err("`replay_all_max_rate_per_sec` must be at least 1".into());
        }
        if !self.dns_resolver.is_empty()
            && self.dns_resolver.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(format!(
                "`dns_resolver` must be an IP address and port (e.g. 127.0.0.1:53) or empty \
                 for the system resolver; got {:?}",
                self.dns_resolver
            ));
        }
        if self.base_domain.is_empty() || self.base_domain.starts_with('.') {
            return Err(format!(
                "`base_domain` must be a DNS name; got {:?}",
                self.base_domain
            ));
        }
        burrow_common::config::check_socket_addr("grpc_listen", &self.grpc_listen)?;
        burrow_common::config::check_socket_addr("listen", &self.listen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/api.toml");
        let cfg: ApiConfig = burrow_common::config::load_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(cfg.webhook_tolerance_secs, 300);
        assert_eq!(cfg.validate(), Ok(()));
        assert!(!cfg.acme_enabled);
    }

    fn valid() -> ApiConfig {
        ApiConfig {
            internal_key: Secret::new("k"),
            webhook_secret: Secret::new("whsec_x"),
            ..ApiConfig::default()
        }
    }

    #[test]
    fn cert_retry_schedule_is_checked_at_load() {
        let cfg = valid();
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(
            cfg.cert_retry_schedule_ms(),
            Ok(burrow_workflows::certificate::default_retry_schedule_ms())
        );
        let cfg = ApiConfig {
            cert_retry_schedule: "1s, 2m,1h".into(),
            ..valid()
        };
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(
            cfg.certificate_input("App.Example.com")
                .map(|i| (i.domain, i.retry_schedule_ms)),
            Ok((
                "app.example.com".to_owned(),
                vec![1_000, 120_000, 3_600_000]
            ))
        );
        for bad in ["5", "1m,,2m", "10 parsecs", "0s", "1m,x"] {
            let cfg = ApiConfig {
                cert_retry_schedule: bad.into(),
                ..valid()
            };
            let e = cfg.validate().expect_err(bad);
            assert!(e.starts_with("`cert_retry_schedule`"), "{bad}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        let cfg = ApiConfig {
            cert_expiry_warning_secs: 0,
            ..valid()
        };
        assert!(
            cfg.validate()
                .is_err_and(|e| e.contains("cert_expiry_warning_secs"))
        );
    }

    #[test]
    fn acme_is_off_by_default() {
        let cfg = ApiConfig::default();
        assert!(!cfg.acme_enabled);
        assert_eq!(cfg.cert_expiry_warning_secs, 14 * 24 * 3600);
        assert_eq!(
            cfg.certificate_input("a.example.com")
                .map(|i| i.expiry_warning_ms),
            Ok(14 * 24 * 3_600_000)
        );
    }
}
