//! `burrow-api`: serves the control plane, or seeds the dev account (`seed-dev`).

use burrow_api::ApiConfig;
use clap::{Parser, Subcommand};

/// Burrow control plane.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML config file (keys as in `BURROW_API_*`, lowercased).
    #[arg(long, env = "BURROW_API_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API, console and ops endpoints (the default).
    Serve,
    /// Create (or keep) the dev account and credentials; print them as shell variables.
    SeedDev {
        /// JSON file holding the credentials between runs.
        #[arg(long, default_value = ".burrow/dev-credentials.json")]
        file: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (cfg, _telemetry) = burrow_common::service::start::<ApiConfig>(
        "burrow-api",
        "BURROW_API_",
        args.config.as_deref(),
        |b| b,
    );
    match args.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = burrow_common::shutdown::on_signal();
            if let Err(e) = burrow_api::run(cfg, shutdown).await {
                eprintln!("burrow-api: {e}");
                std::process::exit(1);
            }
        }
        Command::SeedDev { file } => {
            let result = async {
                let db = burrow_api::connect_db(&cfg.database_url)
                    .await
                    .map_err(|e| e.to_string())?;
                burrow_api::seed::seed_dev(&db, &file)
                    .await
                    .map_err(|e| format!("{e}: {e:?}"))
            }
            .await;
            match result {
                Ok(c) => {
                    println!("BURROW_AUTHTOKEN={}", c.authtoken);
                    println!("BURROW_DEVELOPER_API_KEY={}", c.developer_api_key);
                    println!("BURROW_OPS_API_KEY={}", c.ops_api_key);
                    println!("BURROW_ADMIN_API_KEY={}", c.admin_api_key);
                }
                Err(e) => {
                    eprintln!("burrow-api seed-dev: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}
