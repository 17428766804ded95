//! `burrow`: the agent CLI.

use burrow_agent::{
    AgentConfig, AgentError, Event, Observers, TunnelSpec,
    config::EndpointConfig,
    inspector::{self, Inspector, InspectorConfig},
    status::{Forwarding, SessionState},
};
use burrow_common::config;
use burrow_proto::tunnel::EndpointProto;
use clap::{Args, Parser, Subcommand};
use std::sync::Arc;

/// Expose a local service through a Burrow relay.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML config file with `authtoken`, `relay`, `ca_file` and named `[endpoints.<key>]`
    /// (defaults to ~/.config/burrow/burrow.toml when it exists).
    #[arg(long, global = true, env = "BURROW_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Relay agent address `host:port`, or several relays of one platform comma-separated
    /// (tried in order; the agent moves to the next when a session is lost). Overrides
    /// `BURROW_RELAY` and the file's `relay`.
    #[arg(long, global = true, value_name = "HOST:PORT[,...]")]
    relay: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Forward public HTTP(S) traffic to a local port.
    Http {
        /// The local service: a port (localhost), host:port, http://host:port or
        /// https://host:port.
        target: String,
        /// Endpoint name: served at <name>.<domain>. Random when omitted.
        #[arg(long)]
        name: Option<String>,
        /// Host header the local service sees: `preserve` (the public host), `rewrite` (the
        /// local host:port) or a literal host.
        #[arg(long, default_value = "preserve")]
        host_header: String,
        /// HTTP version the local service speaks: `http1`, or `http2` for h2/h2c servers (gRPC).
        #[arg(long, default_value = "http1")]
        upstream_protocol: String,
        /// https:// targets: accept any certificate (a dev server's self-signed one).
        #[arg(long)]
        upstream_insecure: bool,
        /// https:// targets: PEM file of a CA to trust for the local service.
        #[arg(long)]
        upstream_ca: Option<String>,
        #[command(flatten)]
        pool: Pool,
        /// Serve this custom domain (verified for your account: `burrow domains add`) instead
        /// of <name>.<domain>.
        #[arg(long, conflicts_with = "name")]
        domain: Option<String>,
        #[command(flatten)]
        policy: PolicyFile,
    },
    /// Forward a public TCP port to a local port.
    Tcp {
        /// The local service: a port (localhost) or host:port.
        target: String,
        /// Send a PROXY protocol v2 header with the visitor's address before its bytes.
        #[arg(long)]
        proxy_protocol: bool,
        #[command(flatten)]
        policy: PolicyFile,
    },
    /// Pass TLS connections whose SNI is <name>.<domain> through, unterminated, to a local
    /// port (the local service holds the certificate).
    Tls {
        /// The local service: a port (localhost) or host:port.
        target: String,
        /// Endpoint name: connections with SNI <name>.<domain> reach it. Random when omitted.
        #[arg(long)]
        name: Option<String>,
        /// Send a PROXY protocol v2 header with the visitor's address before its bytes.
        #[arg(long)]
        proxy_protocol: bool,
        #[command(flatten)]
        pool: Pool,
        /// Pass through connections whose SNI is this custom domain (verified for your
        /// account) instead of <name>.<domain>.
        #[arg(long, conflicts_with = "name")]
        domain: Option<String>,
        #[command(flatten)]
        policy: PolicyFile,
    },
    /// Start endpoints defined in the config file's `[endpoints.<key>]` tables.
    Start {
        /// Keys of the endpoints to start.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        keys: Vec<String>,
        /// Start every endpoint in the file.
        #[arg(long)]
        all: bool,
    },
    /// Account management over the api with an API key: `tokens`, `names`, `domains`, `policy`.
    #[command(flatten)]
    Manage(burrow_agent::manage::Command),
}

#[derive(Args)]
struct Pool {
    /// Serve the name together with other agents of the account that also pass --pool;
    /// visitors are balanced across them.
    #[arg(long)]
    pool: bool,
}

#[derive(Args)]
struct PolicyFile {
    /// A traffic policy (YAML or JSON, see docs/policy.md) the relay enforces on this
    /// endpoint, after the policy set at the api (`burrow policy set`), if any.
    #[arg(long, value_name = "FILE")]
    traffic_policy_file: Option<String>,
}

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("burrow: {message}");
    std::process::exit(config::EXIT_BAD_CONFIG);
}

/// The endpoints the command asks for, by display key.
fn endpoints(command: Command, cfg: &AgentConfig) -> Vec<(String, EndpointConfig)> {
    let one = |e: EndpointConfig| vec![(String::new(), e)];
    match command {
        Command::Http {
            target,
            name,
            host_header,
            upstream_protocol,
            upstream_insecure,
            upstream_ca,
            pool,
            domain,
            policy,
        } => one(EndpointConfig {
            proto: "http".into(),
            addr: target,
            name,
            host_header,
            upstream_protocol,
            upstream_insecure,
            upstream_ca,
            pool: pool.pool,
            domain,
            traffic_policy_file: policy.traffic_policy_file,
            ..EndpointConfig::default()
        }),
        Command::Tcp {
            target,
            proxy_protocol,
            policy,
        } => one(EndpointConfig {
            proto: "tcp".into(),
            addr: target,
            proxy_protocol,
            traffic_policy_file: policy.traffic_policy_file,
            ..EndpointConfig::default()
        }),
        Command::Tls {
            target,
            name,
            proxy_protocol,
            pool,
            domain,
            policy,
        } => one(EndpointConfig {
            proto: "tls".into(),
            addr: target,
            name,
            proxy_protocol,
            pool: pool.pool,
            domain,
            traffic_policy_file: policy.traffic_policy_file,
            ..EndpointConfig::default()
        }),
        Command::Start { keys, all } => {
            if cfg.endpoints.is_empty() {
                fail("the config file defines no [endpoints.<key>] to start");
            }
            if all {
                return cfg.endpoints.clone().into_iter().collect();
            }
            keys.into_iter()
                .map(|k| match cfg.endpoints.get(&k) {
                    Some(e) => (k, e.clone()),
                    None => fail(format!(
                        "no endpoint `{k}` in the config file (it has: {})",
                        cfg.endpoints.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                })
                .collect()
        }
        Command::Manage(_) => unreachable!("management commands are dispatched before this"),
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Command::Manage(command) = cli.command {
        std::process::exit(burrow_agent::manage::run(command).await);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let file = cli.config.or_else(burrow_agent::config::default_file);
    let mut cfg: AgentConfig = config::load(file.as_deref(), "BURROW_").unwrap_or_else(|e| fail(e));
    if let Some(relay) = cli.relay {
        cfg.relay = relay;
        if let Err(e) = config::Config::validate(&cfg) {
            fail(format!("--relay: {e}"));
        }
    }
    let specs: Vec<TunnelSpec> = endpoints(cli.command, &cfg)
        .into_iter()
        .map(|(key, e)| {
            e.to_spec().unwrap_or_else(|msg| match key.as_str() {
                "" => fail(msg),
                key => fail(format!("endpoint `{key}`: {msg}")),
            })
        })
        .collect();
    let locals: Vec<String> = specs
        .iter()
        .map(|s| match s.proto {
            EndpointProto::Http => s.upstream.to_string(),
            EndpointProto::Tcp | EndpointProto::Tls => s.upstream.authority.clone(),
        })
        .collect();
    let shutdown = burrow_common::shutdown::on_signal();
    let routes = burrow_agent::tunnel::Routes::default();
    let observers = Observers {
        inspector: start_inspector(&cfg, routes.clone(), &shutdown).await,
        routes,
    };
    let insp = observers.inspector.clone();
    let live = insp.clone().map(|i| {
        i.update_status(|s| s.relay = cfg.relay.clone());
        tokio::spawn(burrow_agent::status::run_live(i, shutdown.clone()))
    });
    let status = |change: &dyn Fn(&mut burrow_agent::status::Status)| {
        if let Some(i) = &insp {
            i.update_status(change);
        }
    };
    let result =
        burrow_agent::run(
            &cfg,
            specs,
            observers.clone(),
            shutdown.clone(),
            |event| match event {
                Event::Online {
                    index,
                    endpoint,
                    reconnected,
                } => {
                    if reconnected && index == 0 {
                        eprintln!("burrow: reconnected");
                        status(&|s| s.forwarding.clear());
                    }
                    let local = &locals[index];
                    let mut urls = vec![endpoint.url.clone()];
                    urls.extend(endpoint.https_url.clone());
                    for url in urls {
                        println!("Forwarding {url} -> {local}");
                        status(&|s| {
                            s.state = SessionState::Online;
                            s.forwarding.push(Forwarding {
                                public_url: url.clone(),
                                local: local.clone(),
                            });
                        });
                    }
                }
                Event::Disconnected { reason, retry_in } => {
                    eprintln!(
                        "burrow: connection lost ({reason}); reconnecting in {:.1}s",
                        retry_in.as_secs_f64()
                    );
                    status(&|s| s.state = SessionState::reconnecting(reason.clone(), retry_in));
                }
            },
        )
        .await;
    if let Err(e) = &result {
        status(&|s| {
            s.state = SessionState::Closed {
                reason: e.to_string(),
            }
        });
    }
    // Let the live panel draw its last frame before the final message goes below it.
    shutdown.cancel();
    if let Some(live) = live {
        let _ = live.await;
    }
    match result {
        Ok(()) => {}
        Err(e @ AgentError::TokenRejected(_)) => {
            eprintln!(
                "burrow: {e}. Check BURROW_AUTHTOKEN; create a new token with the api if it was revoked."
            );
            std::process::exit(2);
        }
        Err(e @ AgentError::Setup(_)) => fail(e),
        Err(e) => {
            eprintln!("burrow: {e}");
            std::process::exit(1);
        }
    }
}

/// Starts the inspector's web interface on `inspect_addr` (or the next free port); prints
/// where it is. A port that cannot be bound only costs the inspector, never the tunnel.
async fn start_inspector(
    cfg: &AgentConfig,
    routes: burrow_agent::tunnel::Routes,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Option<Arc<Inspector>> {
    let addr = cfg.inspect_addr.parse().ok()?;
    let listener = match inspector::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("burrow: inspector disabled: cannot listen on {addr}: {e}");
            return None;
        }
    };
    let url = format!("http://{}", listener.local_addr().ok()?);
    println!("Inspector {url}");
    let inspector = Arc::new(Inspector::new(InspectorConfig::default()));
    inspector.update_status(|s| s.inspector_url = Some(url));
    tokio::spawn(inspector::serve(
        inspector.clone(),
        listener,
        Arc::new(routes),
        shutdown.clone(),
    ));
    Some(inspector)
}
