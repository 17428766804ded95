//! Start-up shared by every service binary: load its configuration, install telemetry, and
//! exit with [`EXIT_BAD_CONFIG`](crate::config::EXIT_BAD_CONFIG) and a message naming the
//! problem when either fails.

use crate::{
    config::{self, Config},
    telemetry::{self, TelemetryConfig, TelemetryGuard},
};
use opentelemetry_sdk::trace::TracerProviderBuilder;
use std::path::Path;

/// A service configuration that carries its telemetry settings.
pub trait ServiceConfig: Config {
    /// OTLP endpoint (empty: no export).
    fn otlp_endpoint(&self) -> &str;
    /// Whether to log JSON lines.
    fn log_json(&self) -> bool;
}

/// Loads `C` (file, then `env_prefix` variables) and installs telemetry as `service_name`;
/// exits the process with a clear message on failure.
pub fn start<C: ServiceConfig>(
    service_name: &str,
    env_prefix: &str,
    file: Option<&Path>,
    customize: impl FnOnce(TracerProviderBuilder) -> TracerProviderBuilder,
) -> (C, TelemetryGuard) {
    let bail = |e: &dyn std::fmt::Display| -> ! {
        eprintln!("{service_name}: {e}");
        std::process::exit(config::EXIT_BAD_CONFIG);
    };
    let cfg: C = config::load(file, env_prefix).unwrap_or_else(|e| bail(&e));
    let guard = telemetry::init(
        &TelemetryConfig {
            service_name: service_name.to_owned(),
            otlp_endpoint: cfg.otlp_endpoint().to_owned(),
            json_logs: cfg.log_json(),
        },
        customize,
    )
    .unwrap_or_else(|e| bail(&e));
    (cfg, guard)
}

/// Implements [`ServiceConfig`] for a config struct whose telemetry settings are the fields
/// `otlp_endpoint: String` and `log_json: bool`.
#[macro_export]
macro_rules! impl_service_config {
    ($ty:ty) => {
        impl $crate::service::ServiceConfig for $ty {
            fn otlp_endpoint(&self) -> &str {
                &self.otlp_endpoint
            }

            fn log_json(&self) -> bool {
                self.log_json
            }
        }
    };
}
