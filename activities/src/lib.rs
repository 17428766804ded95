//! The side effects Burrow's workflows call. Everything here may do I/O; nothing here decides
//! workflow control flow (that is `burrow-workflows`' job, deterministically).
//!
//! # Layout
//! - [`provider`]: applying provider (billing) webhook events to accounts in PostgreSQL.
//! - [`mirror`]: writing each workflow's state to `workflow_runs`, which the console reads.
//! - [`failure`]: the failure type names activities attach so workflows can classify errors.
#![forbid(unsafe_code)]

pub mod failure;
// `#[activities]` generates undocumented activity-definition items next to each impl.
#[allow(missing_docs)]
pub mod mirror;
#[allow(missing_docs)]
pub mod provider;

pub use mirror::{MirrorActivities, StateRecord};
pub use provider::{ApplyInput, ApplyOutcome, ProviderActivities};
