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

/// An activity error of failure type `kind`.
pub fn error(kind: &'static str, message: String, retryable: bool) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(message)
            .type_name(kind.to_owned())
            .non_retryable(!retryable)
            .build(),
    )
}
