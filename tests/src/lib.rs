//! Harness for Burrow's end-to-end suites: starts the real `burrow-api`, `burrow-relay`,
//! `burrow-worker` and `burrow` binaries as child processes on `127.0.0.1:0` ports, against
//! real PostgreSQL (a fresh database per stack), Redis (a key prefix per stack) and Temporal (a
//! task queue per stack).
//!
//! Where the stores are comes from the environment `scripts/test.sh` sets:
//! `BURROW_TEST_DATABASE_URL` (an admin URL; default `postgres://postgres@127.0.0.1:5432/postgres`),
//! `BURROW_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) and `BURROW_TEST_TEMPORAL_ADDRESS`
//! (when unset, a `temporal server start-dev` is started for the test binary on free ports).
//!
//! # Layout
//! - [`procs`]: child processes with captured logs, killed on drop.
//! - [`ports`]: ports to hand a process up front, from below the ephemeral range.
//! - [`stack`]: [`Stack`], the running platform.
//! - [`agent`]: [`Agent`], a `burrow` process whose output can be awaited.
//! - [`stores`]: per-test database, Temporal dev server.
//! - [`wait`]: polling a condition with a deadline (tests never sleep for a fixed time).
//! - [`webhook`]: signing provider events like the provider does.
//! - [`echo`]: a gRPC service with streaming calls, for tunnel tests.
//! - [`metrics`]: reading a process's Prometheus `/metrics`.
//! - [`jwt`]: an ES256 issuer with a served JWKS, for JWT policy tests.
//! - [`dns`]: an authoritative DNS server whose TXT records a test sets (domain verification).
//! - [`private_redis`]: a test's own `redis-server` it may stop and restart; reading keys.
//! - [`tls`]: test certificates, TLS clients with chosen SNI/ALPN, and local TLS servers.
//! - [`pebble`]: a real ACME CA (Debian's `pebble` + `pebble-challtestsrv`) for certificate tests.
//! - [`ari`]: an ACME Renewal Information (RFC 9773) responder in front of pebble.
//! - [`acme_bench`]: certificate issuance against Pebble, Burrow next to `lego` (the
//!   `acme-bench` binary).

pub mod acme_bench;
pub mod agent;
pub mod ari;
pub mod dns;
pub mod jwt;
pub mod metrics;
pub mod pebble;
pub mod ports;
pub mod private_redis;
pub mod procs;
pub mod stack;
pub mod stores;
pub mod tls;

/// The test-only gRPC service in `tests/proto/echo.proto` (streaming calls).
pub mod echo {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("burrow.test.echo");
}
pub mod wait;
pub mod webhook;

pub use agent::Agent;
pub use stack::{Stack, StackOptions};
