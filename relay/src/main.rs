//! `burrow-relay`: loads configuration and runs the relay until SIGINT/SIGTERM.

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
    let (cfg, _telemetry) = burrow_common::service::start::<RelayConfig>(
        "burrow-relay",
        "BURROW_RELAY_",
        args.config.as_deref(),
        |b| b,
    );
    let shutdown = burrow_common::shutdown::on_signal();
    if let Err(e) = burrow_relay::run(cfg, shutdown).await {
        tracing::error!(error = %e, "relay failed");
        eprintln!("burrow-relay: {e}");
        std::process::exit(1);
    }
}
