//! Plumbing every Burrow process shares.
//!
//! # Layout
//! - [`config`]: layered configuration (defaults → TOML file → `BURROW_*` environment),
//!   validated at start; unknown keys are rejected by name.
//! - [`secret`]: a string wrapper that prints as `MASKED`.
//! - [`telemetry`]: `tracing` subscriber setup, with OpenTelemetry OTLP export when configured.
//! - [`ops`]: the `/healthz`, `/readyz` and Prometheus `/metrics` endpoints every binary serves.
//! - [`shutdown`]: a cancellation token fired by SIGINT/SIGTERM.
//! - [`hop`]: hop-by-hop header stripping shared by the relay and agent proxies.
//! - [`token`]: random credential generation and the one-way hash stored in place of a secret.
#![forbid(unsafe_code)]

pub mod config;
pub mod hop;
pub mod ops;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod token;

pub use secret::Secret;
