//! `burrow-relay`: loads configuration and runs the relay until SIGINT/SIGTERM.

use burrow_common::{config, telemetry};
use burrow_relay::RelayConfig;
use clap::Parser;

/// Burrow relay: agent sessions and public ingress.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file (keys as in `BURROW_RELAY_*`, lowercased).
    #[arg(long, env = "BURROW_RELAY_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let cfg: RelayConfig = match config::load(args.config.as_deref(), "BURROW_RELAY_") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("burrow-relay: {e}");
            std::process::exit(config::EXIT_BAD_CONFIG);
        }
    };
    let _telemetry = match telemetry::init(
        &telemetry::TelemetryConfig {
            service_name: "burrow-relay".into(),
            otlp_endpoint: cfg.otlp_endpoint.clone(),
            json_logs: cfg.log_json,
        },
        |b| b,
    ) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("burrow-relay: {e}");
            std::process::exit(config::EXIT_BAD_CONFIG);
        }
    };
    let shutdown = burrow_common::shutdown::on_signal();
    if let Err(e) = burrow_relay::run(cfg, shutdown).await {
        tracing::error!(error = %e, "relay failed");
        eprintln!("burrow-relay: {e}");
        std::process::exit(1);
    }
}
