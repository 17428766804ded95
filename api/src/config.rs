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
            webhook_secret: Secret::default(),
            webhook_tolerance_secs: 300,
            apply_initial_interval_ms: 1_000,
            apply_maximum_interval_ms: 300_000,
            apply_maximum_attempts: 10,
            replay_all_max_rate_per_sec: 10,
            runbooks_dir: "runbooks".into(),
            addr_file: String::new(),
            otlp_endpoint: String::new(),
            log_json: false,
        }
    }
}

burrow_common::impl_service_config!(ApiConfig);

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
    }
}
