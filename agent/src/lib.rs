//! The Burrow agent: exposes a local service through a relay.
//!
//! # Layout
//! - [`config`]: [`AgentConfig`] from `BURROW_*` environment and an optional TOML file.
//! - [`tunnel`]: session handshake, serving, and the reconnect loop.
//! - [`forward`]: proxies each visitor request (an h2 stream from the relay) to the local service.
//! - [`upstream`]: the local service target (`8080`, `host:port`, `http://…`) and `Host` handling.
//! - [`backoff`]: jittered exponential reconnect delays.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod config;
pub mod forward;
pub mod tunnel;
pub mod upstream;

pub use config::AgentConfig;
pub use tunnel::{AgentError, Event, TunnelSpec, run};
