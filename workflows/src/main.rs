//! `burrow-worker`: hosts Burrow's Temporal workflows and activities.

use burrow_workflows::worker::WorkerConfig;
use clap::Parser;

/// Burrow worker: runs durable workflows on Temporal.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file (keys as in `BURROW_WORKER_*`, lowercased).
    #[arg(long, env = "BURROW_WORKER_CONFIG")]
    config: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (cfg, _telemetry) = burrow_common::service::start::<WorkerConfig>(
        "burrow-worker",
        "BURROW_WORKER_",
        args.config.as_deref(),
        // Replay-safe span ids for workflow spans (the Temporal tracing plugin requires it).
        |b| b.with_id_generator(temporalio_sdk::opentelemetry::WorkflowIdGenerator::default()),
    );
    let shutdown = burrow_common::shutdown::on_signal();
    if let Err(e) = burrow_workflows::worker::run(cfg, shutdown).await {
        tracing::error!(error = %e, "worker failed");
        eprintln!("burrow-worker: {e}");
        std::process::exit(1);
    }
}
