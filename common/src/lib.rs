//! Plumbing every Burrow process shares.
//!
//! # Layout
//! - [`config`]: layered configuration (defaults → TOML file → `BURROW_*` environment),
//!   validated at start; unknown keys are rejected by name.
//! - [`secret`]: a string wrapper that prints as `MASKED`.
//! - [`telemetry`]: `tracing` subscriber setup, with OpenTelemetry OTLP export when configured.
//! - [`ops`]: the `/healthz`, `/readyz` and Prometheus `/metrics` endpoints every binary serves.
//! - [`service`]: start-up shared by service binaries (config + telemetry, exit 64 on error).
//! - [`shutdown`]: a cancellation token fired by SIGINT/SIGTERM.
//! - [`proxy`]: what the relay and agent HTTP proxies share (body type, hop-by-hop headers,
//!   their own plain-text answers).
//! - [`net`]: the accept loop step every listener uses; URLs redacted for logs.
//! - [`redis_link`]: a Redis connection that may come and go (nothing waits for it).
//! - [`token`]: random credential generation and the one-way hash stored in place of a secret.
//! - `test_db` (feature `test-db`, tests only): a fresh PostgreSQL database per test.
#![forbid(unsafe_code)]

pub mod config;
pub mod net;
pub mod ops;
pub mod proxy;
pub mod redis_link;
pub mod secret;
pub mod service;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "test-db")]
pub mod test_db;
pub mod token;

pub use secret::Secret;
