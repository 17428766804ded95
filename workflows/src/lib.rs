//! Burrow's durable workflows on Temporal, and the worker that hosts them.
//!
//! Workflow code here is deterministic: no I/O, no clocks, no randomness; every side effect is
//! an activity from `burrow-activities`. Each workflow is an explicit state machine whose
//! states are mirrored to PostgreSQL (`workflow_runs`) and whose failure states each have a
//! runbook page `runbooks/<kind>/<state>.md`.
//!
//! # Layout
//! - [`provider_webhook`]: provider webhook ingest: apply with retry/backoff, park in a named
//!   failure state (the dead-letter queue) until ops replays it.
//! - [`certificate`]: a custom domain's certificate: ACME issuance, distribution to relays,
//!   renewal (ARI or 2/3 of the lifetime), retry schedule, parking, incidents, callbacks.
//! - [`replication`]: converging what every relay region serves, with snapshots.
//! - [`kinds`]: the catalogue of workflow kinds and their failure states (runbooks, console).
//! - [`temporal`]: connecting to Temporal with trace-context propagation (used by api and
//!   worker; not workflow code).
//! - [`worker`]: the `burrow-worker` process: registration, configuration, health.
#![forbid(unsafe_code)]

#[allow(missing_docs)]
pub mod certificate;
pub mod kinds;
// `#[workflow]`/`#[workflow_methods]` generate undocumented items next to each definition.
#[allow(missing_docs)]
pub mod provider_webhook;
#[allow(missing_docs)]
pub mod replication;
pub mod temporal;
pub mod worker;
