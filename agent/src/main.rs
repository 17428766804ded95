//! `burrow`: the agent CLI.

use burrow_agent::{
    AgentConfig, AgentError, Event, TunnelSpec,
    upstream::{HostHeader, Upstream, UpstreamProtocol},
};
use burrow_common::config;
use burrow_proto::tunnel::EndpointProto;
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
        /// The local service: a port (localhost), host:port, or http://host:port.
        target: String,
        /// Endpoint name: served at <name>.<domain>. Random when omitted.
        #[arg(long)]
        name: Option<String>,
        /// Host header the local service sees: `preserve` (the public host), `rewrite` (the
        /// local host:port) or a literal host.
        #[arg(long, default_value = "preserve")]
        host_header: String,
        /// HTTP version the local service speaks: `http1`, or `http2` for h2c servers (gRPC).
        #[arg(long, default_value = "http1")]
        upstream_protocol: String,
    },
    /// Forward a public TCP port to a local port.
    Tcp {
        /// The local service: a port (localhost) or host:port.
        target: String,
        /// Send a PROXY protocol v2 header with the visitor's address before its bytes.
        #[arg(long)]
        proxy_protocol: bool,
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
    let (proto, upstream, name) = match cli.command {
        Command::Http {
            target,
            name,
            host_header,
            upstream_protocol,
        } => {
            if let Some(Err(e)) = name.as_deref().map(burrow_proto::tunnel::validate_label) {
                eprintln!("burrow: invalid --name: {e}");
                std::process::exit(config::EXIT_BAD_CONFIG);
            }
            let upstream = HostHeader::parse(&host_header).and_then(|h| {
                let mut u = Upstream::parse(&target, h)?;
                u.protocol = UpstreamProtocol::parse(&upstream_protocol)?;
                Ok(u)
            });
            (EndpointProto::Http, upstream, name)
        }
        Command::Tcp {
            target,
            proxy_protocol,
        } => {
            let upstream = Upstream::parse_tcp(&target).map(|mut u| {
                u.proxy_protocol = proxy_protocol;
                u
            });
            (EndpointProto::Tcp, upstream, None)
        }
    };
    let upstream = upstream.unwrap_or_else(|e| {
        eprintln!("burrow: {e}");
        std::process::exit(config::EXIT_BAD_CONFIG);
    });
    let local = match proto {
        EndpointProto::Http => upstream.to_string(),
        EndpointProto::Tcp => upstream.authority.clone(),
    };
    let shutdown = burrow_common::shutdown::on_signal();
    let spec = TunnelSpec {
        proto,
        upstream,
        name,
    };
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
