//! Failure type names attached to activity errors (Temporal `ApplicationFailure` types).
//! Workflows map them onto their named failure states.

use temporalio_common::error::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

/// The event refers to a provider customer no account carries (yet). Retryable: provider events
/// can arrive before the account is linked.
pub const ACCOUNT_UNKNOWN: &str = "AccountUnknown";
/// The stored event lacks what its type requires. Not retryable: the payload will not change.
pub const INVALID_PAYLOAD: &str = "InvalidPayload";
/// Anything else (database unavailable, ...). Retryable.
pub const INTERNAL: &str = "Internal";

// Certificate lifecycle (see `burrow_workflows::certificate::CertState`).
/// The CA could not validate a challenge (relay unreachable from the CA, wrong answer, DNS).
pub const CHALLENGE_FAILED: &str = "ChallengeFailed";
/// The CA said `rateLimited`, or Burrow's own order budget is spent.
pub const RATE_LIMITED: &str = "RateLimited";
/// The CA did not answer (connection refused, timeout, 5xx, bad nonce storms).
pub const CA_UNREACHABLE: &str = "CaUnreachable";
/// The CA refuses the name itself (`rejectedIdentifier`, `malformed`). Not retryable.
pub const INVALID_DOMAIN: &str = "InvalidDomain";
/// A CAA record forbids the CA from issuing for the name. Not retryable.
pub const CAA_FORBIDDEN: &str = "CaaForbidden";
/// The ACME account was deactivated or is unauthorized. Not retryable.
pub const ACCOUNT_DEACTIVATED: &str = "AccountDeactivated";
/// Some relays did not take the new certificate.
pub const DISTRIBUTION_PARTIAL: &str = "DistributionPartial";
/// Issuance failed for another reason (finalize, storage, configuration).
pub const ISSUANCE_FAILED: &str = "IssuanceFailed";
/// The order can no longer be finalized (invalid, expired): a new order is needed.
pub const ORDER_UNUSABLE: &str = "OrderUnusable";

/// An activity error of failure type `kind`.
pub fn error(kind: &'static str, message: String, retryable: bool) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(message)
            .type_name(kind.to_owned())
            .non_retryable(!retryable)
            .build(),
    )
}
