//! The Burrow agent: exposes a local service through a relay.
//!
//! # Layout
//! - [`config`]: [`AgentConfig`] from `BURROW_*` environment and an optional TOML file, with
//!   named endpoints for `burrow start`.
//! - [`tunnel`]: session handshake, serving, and the reconnect loop.
//! - [`data`]: the pool of data connections (the bulk path for TCP and TLS endpoints).
//! - [`forward`]: proxies each visitor request (an h2 stream from the relay) to the local service.
//! - [`upstream`]: the local service target (`8080`, `host:port`, `http://…`) and `Host` handling.
//! - [`tls`]: rustls client configs for the relay session and `https://` local services.
//! - [`backoff`]: jittered exponential reconnect delays.
//! - [`inspector`]: captured HTTP exchanges, latency stats, the local web interface and replay.
//! - [`status`]: the live terminal status panel.
//! - [`api_client`]: a REST client for the api, authenticated with an API key.
//! - [`manage`]: `burrow tokens | names | domains | policy`, account management over the api.
#![forbid(unsafe_code)]

pub mod api_client;
pub mod backoff;
pub mod config;
pub mod data;
pub mod forward;
pub mod inspector;
pub mod manage;
pub mod status;
pub mod tls;
pub mod tunnel;
pub mod upstream;

pub use config::AgentConfig;
pub use tunnel::{AgentError, Event, Observers, TunnelSpec, run};
