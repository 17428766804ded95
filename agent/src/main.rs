//! `burrow`: the agent CLI.

use burrow_agent::{AgentConfig, AgentError, Event, TunnelSpec};
use burrow_common::config;
use clap::{Parser, Subcommand};

/// Expose a local service through a Burrow relay.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML config file with `authtoken`, `relay`, `ca_file` (defaults to
    /// ~/.config/burrow/burrow.toml when it exists).
    #[arg(long, global = true, env = "BURROW_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Forward public HTTP traffic to a local port.
    Http {
        /// Local port to forward to.
        port: u16,
        /// Endpoint name: served at <name>.<domain>. Random when omitted.
        #[arg(long)]
        name: Option<String>,
        /// Local host to forward to.
        #[arg(long, default_value = "localhost")]
        host: String,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let file = cli.config.or_else(burrow_agent::config::default_file);
    let cfg: AgentConfig = match config::load(file.as_deref(), "BURROW_") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("burrow: {e}");
            std::process::exit(config::EXIT_BAD_CONFIG);
        }
    };
    let Command::Http { port, name, host } = cli.command;
    if let Some(Err(e)) = name.as_deref().map(burrow_proto::tunnel::validate_label) {
        eprintln!("burrow: invalid --name: {e}");
        std::process::exit(config::EXIT_BAD_CONFIG);
    }
    let local = format!("http://{host}:{port}");
    let shutdown = burrow_common::shutdown::on_signal();
    let spec = TunnelSpec { port, host, name };
    let result = burrow_agent::run(&cfg, spec, shutdown, |event| match event {
        Event::Online {
            endpoint,
            reconnected,
        } => {
            if reconnected {
                eprintln!("burrow: reconnected");
            }
            println!("Forwarding {} -> {local}", endpoint.url);
        }
        Event::Disconnected { reason, retry_in } => {
            eprintln!(
                "burrow: connection lost ({reason}); reconnecting in {:.1}s",
                retry_in.as_secs_f64()
            );
        }
    })
    .await;
    match result {
        Ok(()) => {}
        Err(e @ AgentError::TokenRejected(_)) => {
            eprintln!(
                "burrow: {e}. Check BURROW_AUTHTOKEN; create a new token with the api if it was revoked."
            );
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("burrow: {e}");
            std::process::exit(1);
        }
    }
}
