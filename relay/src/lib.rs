//! `burrow-relay`: the data plane.
//!
//! Agents connect over TLS 1.3 and bind endpoint names; visitors reach those endpoints through
//! the public HTTP ingress, routed by `Host: <name>.<domain>`. The api drives the relay over the
//! `RelayControl` gRPC service and finds it through Redis presence.
//!
//! # Layout
//! - [`config`]: [`RelayConfig`], layered from defaults, file and `BURROW_RELAY_*`.
//! - [`tls`]: rustls server config; dev CA generated on first start.
//! - [`certs`]: the HTTPS certificate store (SNI → certificate): `cert_dir` files (reloaded on
//!   change) and managed certificates pushed over `RelayControl` (persisted, versioned).
//! - [`acme`]: ACME HTTP-01 and TLS-ALPN-01 challenge answers, read from Redis.
//! - [`https`]: the TLS ingress: passthrough by SNI, or HTTPS terminated with the store.
//! - [`auth`]: authtoken verification through the api, cached briefly.
//! - [`registry`]: the route table (name → agent session) and session bookkeeping.
//! - [`session`]: agent handshake and the HTTP/2 connection that carries visitor requests.
//! - [`ingress`]: public HTTP listener: host routing, 404/502 answers, streaming proxy.
//! - [`data`]: dedicated data connections, the bulk path for TCP and TLS endpoints.
//! - [`tcp`]: TCP endpoints on allocated public ports, relayed over the session.
//! - [`metering`]: bytes, requests and connections per endpoint; Prometheus and the api.
//! - [`counted`]: streams and bodies that count into the meter and pace by [`shaping`].
//! - [`shaping`]: bandwidth per account (token buckets at the plan's rate, changed live).
//! - [`drain`]: requests in flight and the draining flag (503 + Retry-After on shutdown).
//! - [`control`]: the `RelayControl` gRPC server (sessions, kicks, managed certificates).
//! - [`presence`]: relay announcement and endpoint leases in Redis.
//! - [`lease`]: which relay holds which HTTP endpoint (Redis keys with a TTL).
//! - [`peer`]: the relay-to-relay link: forwarding visitors to the relay holding the endpoint.
//! - [`limiter`]: the rate limiter policies use, counting in Redis across relays.
//! - [`edge`]: what the api issued for the edge: traffic policies, reserved names, verified
//!   domains, plan limits (plus agents' own policy files).
//! - [`feed`]: the `RelayFeed` subscription that keeps [`edge`] current.
//! - [`enforce`]: traffic policy evaluation on connections, requests and responses.
#![forbid(unsafe_code)]

pub mod acme;
pub mod auth;
pub mod certs;
pub mod config;
pub mod control;
pub mod counted;
pub mod data;
pub mod drain;
pub mod edge;
pub mod enforce;
pub mod feed;
pub mod https;
pub mod ingress;
pub mod lease;
pub mod limiter;
pub mod metering;
pub mod peer;
pub mod presence;
pub mod registry;
pub mod session;
pub mod shaping;
pub mod tcp;
pub mod tls;

pub use config::RelayConfig;

/// Helpers for the unit tests of several modules.
#[cfg(test)]
pub(crate) mod test_support {
    use std::time::Duration;

    /// Waits until `cond` holds, checking every 10 ms; fails the test naming `what` after 10 s.
    pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never happened: {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

use serde::Serialize;
use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long in-flight visitor requests may finish after shutdown begins.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Shared state of a running relay.
pub struct Relay {
    /// Configuration it was started with.
    pub config: RelayConfig,
    /// Route table and sessions.
    pub registry: registry::Registry,
    /// Authtoken verifier.
    pub verifier: auth::Verifier,
    /// Redis presence and endpoint leases.
    pub presence: presence::Presence,
    /// Client and credential of the relay-to-relay link.
    pub peer: peer::PeerLink,
    /// Ports of TCP endpoints.
    pub tcp: tcp::TcpPorts,
    /// Fires when the relay stops accepting (listeners started later watch it too).
    pub stop: CancellationToken,
    /// Requests in flight; refuses new ones while the relay drains.
    pub drain: drain::Drain,
    /// Idle data connections of agent sessions.
    pub data: data::DataConns,
    /// Usage per endpoint, flushed to the api.
    pub meter: Arc<metering::Meter>,
    /// Policies, reservations, domains and plans issued by the api.
    pub edge: Arc<edge::EdgeState>,
    /// Evaluates traffic policies (rate limits shared through Redis, cached JWKS).
    pub enforcer: enforce::Enforcer,
    /// Certificates of the HTTPS ingress (`cert_dir` and managed ones).
    pub certs: Arc<certs::CertStore>,
    /// ACME challenge answers (from Redis).
    pub acme: acme::Challenges,
    /// Port printed in public URLs.
    public_port: u16,
    /// Port printed in `https://` and `tls://` URLs; `None` without a TLS listener.
    public_https_port: Option<u16>,
    /// `.<domain>`, precomputed for host matching.
    domain_suffix: String,
}

impl Relay {
    /// Public URL of HTTP endpoint `name`.
    pub fn public_url(&self, name: &str) -> String {
        format!("http://{name}.{}:{}", self.config.domain, self.public_port)
    }

    /// Public HTTPS URL of HTTP endpoint `name`, when the relay has a TLS listener.
    pub fn https_url(&self, name: &str) -> Option<String> {
        self.public_https_port
            .map(|port| format!("https://{name}.{}:{port}", self.config.domain))
    }

    /// Public URL of TLS passthrough endpoint `name`, when the relay has a TLS listener.
    pub fn tls_url(&self, name: &str) -> Option<String> {
        self.public_https_port
            .map(|port| format!("tls://{name}.{}:{port}", self.config.domain))
    }

    /// Public URL of the TCP endpoint on `port`.
    pub fn tcp_url(&self, port: u16) -> String {
        let host = if self.config.tcp_public_host.is_empty() {
            &self.config.tcp_listen_host
        } else {
            &self.config.tcp_public_host
        };
        format!("tcp://{host}:{port}")
    }

    /// The registry name `host` would be bound under: the label for `<label>.<domain>`, the
    /// host itself for anything outside the base domain (a custom domain); `None` for names
    /// under the base domain that cannot be endpoints (nested labels).
    pub fn endpoint_name<'h>(&self, host: &'h str) -> Option<&'h str> {
        match host.strip_suffix(&self.domain_suffix) {
            Some(label) => Some(label).filter(|l| !l.is_empty() && !l.contains('.')),
            None => Some(host).filter(|h| h.contains('.')),
        }
    }

    /// Public URL of HTTP endpoint `host` served on a custom domain.
    pub fn domain_url(&self, host: &str) -> String {
        format!("http://{host}:{}", self.public_port)
    }

    /// Public HTTPS URL of custom domain `host`, when the relay has a TLS listener.
    pub fn domain_https_url(&self, host: &str, scheme: &str) -> Option<String> {
        self.public_https_port
            .map(|port| format!("{scheme}://{host}:{port}"))
    }
}

/// Addresses the relay actually bound (useful with `:0` ports).
#[derive(Debug, Clone, Serialize)]
pub struct BoundAddrs {
    /// Agent TLS listener.
    pub agent: SocketAddr,
    /// Public HTTP ingress.
    pub http: SocketAddr,
    /// Public TLS ingress (HTTPS and passthrough), when enabled.
    pub https: Option<SocketAddr>,
    /// RelayControl gRPC.
    pub control: SocketAddr,
    /// Health and metrics.
    pub ops: SocketAddr,
    /// Relay-to-relay link, when enabled.
    pub peer: Option<SocketAddr>,
    /// CA file agents should trust (dev CA), if the relay generated one.
    pub ca_file: Option<String>,
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr} (`{key}`): {source}")]
    Bind {
        /// Config key.
        key: &'static str,
        /// Address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// TLS material could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The `RelayControl` TLS identity could not be loaded or was refused.
    #[error("RelayControl TLS (`control_tls_cert_file` / `control_tls_key_file`): {0}")]
    ControlTls(String),
    /// The address file could not be written.
    #[error("cannot write addr_file {path}: {source}")]
    AddrFile {
        /// Path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

async fn bind(key: &'static str, addr: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            key,
            addr: addr.to_owned(),
            source,
        })
}

fn local(l: &TcpListener) -> SocketAddr {
    l.local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Runs the relay until `shutdown` fires, then drains.
pub async fn run(config: RelayConfig, shutdown: CancellationToken) -> Result<(), StartError> {
    let agent_l = bind("agent_listen", &config.agent_listen).await?;
    let http_l = bind("http_listen", &config.http_listen).await?;
    let https_l = match config.https_listen.as_str() {
        "" => None,
        addr => Some(bind("https_listen", addr).await?),
    };
    let control_l = bind("control_listen", &config.control_listen).await?;
    let (mut control_server, control_scheme) = match config.control_tls_cert_file.as_str() {
        "" => (tonic::transport::Server::builder(), "http"),
        cert => {
            let identity =
                tls::control_identity(Path::new(cert), Path::new(&config.control_tls_key_file))
                    .map_err(|e| StartError::ControlTls(e.to_string()))?;
            // A client that connects and never finishes the handshake is dropped.
            let tls = tonic::transport::ServerTlsConfig::new()
                .identity(identity)
                .timeout(std::time::Duration::from_secs(10));
            let server = tonic::transport::Server::builder()
                .tls_config(tls)
                .map_err(|e| StartError::ControlTls(e.to_string()))?;
            (server, "https")
        }
    };
    let ops_l = bind("ops_listen", &config.ops_listen).await?;
    let peer_l = match config.peer_listen.as_str() {
        "" => None,
        addr => Some(bind("peer_listen", addr).await?),
    };

    let (cert, key, ca_file) = if config.tls_cert_file.is_empty() {
        let pki = tls::ensure_dev_pki(Path::new(&config.state_dir), &config.domain)?;
        let ca = pki.ca_file.display().to_string();
        (pki.cert_file, pki.key_file, Some(ca))
    } else {
        (
            config.tls_cert_file.clone().into(),
            config.tls_key_file.clone().into(),
            None,
        )
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls::server_config(&cert, &key)?);
    // HTTPS answers names the store does not hold with the relay's own certificate (in dev,
    // the dev CA's `*.<domain>` one).
    let managed_dir = match config.managed_cert_dir.as_str() {
        "" => Path::new(&config.state_dir).join("managed-certs"),
        dir => dir.into(),
    };
    let cert_store = Arc::new(
        certs::CertStore::new(Some(Arc::new(certs::load_pair(&cert, &key)?)))
            .with_managed_dir(&managed_dir),
    );
    // Managed certificates are served from the first handshake after a restart.
    for (path, e) in cert_store.load_managed() {
        tracing::warn!(path = %path.display(), error = %e, "skipping managed certificate file");
    }
    tracing::info!(dir = %managed_dir.display(), managed = cert_store.managed().len(), "managed certificates loaded");
    let cert_dir = match config.cert_dir.as_str() {
        "" => Path::new(&config.state_dir).join("certs"),
        dir => dir.into(),
    };

    let addrs = BoundAddrs {
        agent: local(&agent_l),
        http: local(&http_l),
        https: https_l.as_ref().map(local),
        control: local(&control_l),
        ops: local(&ops_l),
        peer: peer_l.as_ref().map(local),
        ca_file,
    };
    let public_port = match config.public_http_port {
        0 => addrs.http.port(),
        p => p,
    };
    // One Redis connection for presence, leases and rate limits.
    let redis = Arc::new(burrow_common::redis_link::RedisLink::new(&config.redis_url));
    let presence = presence::Presence::new(
        redis.clone(),
        &config.redis_prefix,
        presence::RelayAnnouncement {
            relay_id: config.relay_id.clone(),
            control_url: match config.control_url.as_str() {
                "" => format!("{control_scheme}://{}", addrs.control),
                url => url.to_owned(),
            },
            region: config.region.clone(),
            http_ingress: addrs.http.to_string(),
            peer_url: match (addrs.peer, config.peer_url.as_str()) {
                (None, _) => String::new(),
                (Some(a), "") => format!("http://{a}"),
                (Some(_), url) => url.to_owned(),
            },
        },
    );
    let edge = Arc::new(edge::EdgeState::new(!config.feed_url.is_empty()));
    let relay = Arc::new(Relay {
        registry: registry::Registry::new(Duration::from_secs(config.offline_grace_secs)),
        verifier: auth::Verifier::new(
            &config.api_url,
            config.internal_key.clone(),
            Duration::from_secs(config.auth_cache_secs),
        ),
        presence,
        peer: peer::PeerLink::new(config.internal_key.expose()),
        tcp: {
            let (first, last) = tcp::parse_range(&config.tcp_ports).unwrap_or((20000, 20999));
            tcp::TcpPorts::new(first, last, &config.tcp_listen_host)
        },
        stop: shutdown.clone(),
        drain: drain::Drain::default(),
        meter: Arc::new(metering::Meter::with_shapers(edge.shapers.clone())),
        edge,
        acme: acme::Challenges::new(redis.clone(), &config.redis_prefix),
        enforcer: enforce::Enforcer::connect(redis, &config.redis_prefix).await,
        certs: cert_store.clone(),
        data: data::DataConns::default(),
        public_port,
        public_https_port: addrs.https.map(|a| match config.public_https_port {
            0 => a.port(),
            p => p,
        }),
        domain_suffix: format!(".{}", config.domain),
        config,
    });

    if !relay.config.addr_file.is_empty() {
        let path = &relay.config.addr_file;
        let json = serde_json::to_string_pretty(&addrs).unwrap_or_default();
        std::fs::write(path, json).map_err(|source| StartError::AddrFile {
            path: path.clone(),
            source,
        })?;
    }
    tracing::info!(
        agent = %addrs.agent, http = %addrs.http, https = ?addrs.https, control = %addrs.control, ops = %addrs.ops, peer = ?addrs.peer,
        domain = %relay.config.domain, "relay listening"
    );

    let mut tasks = tokio::task::JoinSet::new();
    // Shutdown order: stop accepting, let in-flight visitor requests drain through the agent
    // sessions, then close the sessions (telling agents to reconnect elsewhere).
    let end_sessions = CancellationToken::new();
    tasks.spawn(session::serve(
        relay.clone(),
        agent_l,
        acceptor,
        shutdown.clone(),
        end_sessions.clone(),
    ));
    // Health and metrics stay up while draining (readyz answers "draining").
    let ops_stop = end_sessions.clone();
    tasks.spawn(certs::watch(
        cert_store.clone(),
        cert_dir,
        Duration::from_secs(relay.config.cert_reload_secs),
        shutdown.clone(),
    ));
    // Usage is flushed until the sessions end (after the ingress drained), then once more.
    let usage_stop = end_sessions.clone();
    tasks.spawn(metering::flush_loop(
        relay.meter.clone(),
        reqwest::Client::new(),
        relay.config.api_url.clone(),
        relay.config.internal_key.clone(),
        relay.config.relay_id.clone(),
        Duration::from_secs(relay.config.usage_flush_secs),
        usage_stop,
    ));
    {
        let relay = relay.clone();
        let shutdown = shutdown.clone();
        let https = match https_l {
            Some(l) => Some((l, https::acceptor(cert_store).map_err(tls::TlsError::from)?)),
            None => None,
        };
        tasks.spawn(async move {
            ingress::serve(relay, http_l, https, shutdown, DRAIN_GRACE).await;
            end_sessions.cancel();
        });
    }
    tasks.spawn(auth::recheck_sessions(relay.clone(), shutdown.clone()));
    if !relay.config.feed_url.is_empty() {
        tasks.spawn(feed::follow(
            relay.clone(),
            relay.config.feed_url.clone(),
            relay.config.internal_key.clone(),
            relay.config.relay_id.clone(),
            shutdown.clone(),
        ));
    }
    {
        let relay = relay.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            // Only the api (holding the internal key) may list and close sessions.
            let auth = burrow_proto::grpc_auth::require_bearer(
                relay.config.internal_key.expose().to_owned(),
                "RelayControl",
            );
            let svc =
                burrow_proto::relay::relay_control_server::RelayControlServer::with_interceptor(
                    control::ControlService::new(relay),
                    auth,
                );
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(control_l);
            if let Err(e) = control_server
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "RelayControl server failed");
            }
        });
    }
    {
        let shutdown = ops_stop;
        let ready_relay = relay.clone();
        tasks.spawn(async move {
            let ready: burrow_common::ops::ReadinessCheck = Arc::new(move || {
                let draining = ready_relay.drain.is_draining();
                let synced = ready_relay.edge.is_synced();
                Box::pin(async move {
                    if draining {
                        Err("draining for shutdown".to_owned())
                    } else if !synced {
                        Err("waiting for the api's relay feed (reservations, policies)".to_owned())
                    } else {
                        Ok(())
                    }
                })
            });
            let app = burrow_common::ops::router(ready);
            if let Err(e) = axum::serve(ops_l, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "ops server failed");
            }
        });
    }
    {
        let relay = relay.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move { relay.presence.announce_until(shutdown).await });
    }
    if let Some(l) = peer_l {
        tasks.spawn(peer::serve(relay.clone(), l, shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    tracing::info!("relay stopped");
    Ok(())
}
