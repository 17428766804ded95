//! The side effects Burrow's workflows call. Everything here may do I/O; nothing here decides
//! workflow control flow (that is `burrow-workflows`' job, deterministically).
//!
//! # Layout
//! - [`provider`]: applying provider (billing) webhook events to accounts in PostgreSQL.
//! - [`acme`]: ACME orders, challenges (published to Redis for the relays), finalize, storage
//!   and renewal planning (ARI or 2/3 of the lifetime).
//! - [`distribution`]: pushing certificates to relays and converging what regions serve.
//! - [`incidents`]: opening, escalating and auto-resolving incidents for failure states.
//! - [`mirror`]: writing each workflow's state to `workflow_runs`, which the console reads.
//! - [`seal`]: AES-256-GCM sealing of private keys at rest (with previous keys for rotation).
//! - [`reseal`]: re-sealing stored values under the current key after a rotation.
//! - [`certinfo`]: reading serial, validity, names and the ARI id from a certificate chain.
//! - [`failure`]: the failure type names activities attach so workflows can classify errors.
#![forbid(unsafe_code)]

// `#[activities]` generates undocumented activity-definition items next to each impl.
#[allow(missing_docs)]
pub mod acme;
pub mod certinfo;
#[allow(missing_docs)]
pub mod distribution;
pub mod failure;
#[allow(missing_docs)]
pub mod incidents;
#[allow(missing_docs)]
pub mod mirror;
#[allow(missing_docs)]
pub mod provider;
pub mod reseal;
pub mod seal;

pub use acme::{AcmeActivities, AcmeSettings};
pub use distribution::DistributionActivities;
pub use incidents::IncidentActivities;
pub use mirror::{MirrorActivities, StateRecord};
pub use provider::{ApplyInput, ApplyOutcome, ProviderActivities};
