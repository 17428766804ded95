//! Provider webhook ingest as a durable state machine.
//!
//! ```text
//!  received ──▶ applying ──▶ applied
//!                  │    ├──▶ ignored            (event type Burrow does not act on)
//!                  │    └──▶ superseded         (a newer event already set the plan)
//!                  ▼ retries exhausted / non-retryable
//!        account_unknown | invalid_payload | apply_failed   (parked: the dead-letter queue)
//!                  │ `replay` signal from ops
//!                  └──────▶ applying ...
//! ```
//!
//! The api starts one run per stored event (`provider-webhook-<event id>`), so a re-delivered
//! event can never start a second run. Applying retries with the backoff carried in the input;
//! when retries are exhausted the run does not fail: it parks in a named failure state, waiting
//! for a `replay` signal, so nothing is lost and ops decide when to try again.

use burrow_activities::{
    ApplyInput, ApplyOutcome, MirrorActivities, ProviderActivities, StateRecord, failure,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use temporalio_common::RetryPolicy;
use temporalio_common::error::{ActivityExecutionError, IncomingError};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};

/// Kind name of this workflow (`workflow_runs.kind`, runbook folder).
pub const KIND: &str = "provider-webhook";

/// Workflow id of the run for provider event `event_id`.
pub fn workflow_id(event_id: &str) -> String {
    format!("{KIND}-{event_id}")
}

/// Retry schedule for applying an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrySchedule {
    /// First retry delay.
    pub initial_interval_ms: u64,
    /// Growth factor between retries.
    pub backoff_coefficient: f64,
    /// Largest delay between retries.
    pub maximum_interval_ms: u64,
    /// Attempts before the run parks in a failure state.
    pub maximum_attempts: u32,
}

impl Default for RetrySchedule {
    /// About 20 minutes of retries: 1 s doubling to 5 min, 10 attempts.
    fn default() -> Self {
        Self {
            initial_interval_ms: 1_000,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 300_000,
            maximum_attempts: 10,
        }
    }
}

/// Input of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderEventInput {
    /// Provider event id.
    pub event_id: String,
    /// Retry schedule (fixed at start so replays of history stay deterministic).
    pub retry: RetrySchedule,
}

/// Ops' request to try a parked run again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRequest {
    /// Who asked (API key id), for the audit trail in history.
    pub requested_by: String,
}

/// States in which a run is parked until replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureState {
    /// The event names a provider customer no account is linked to. Usually events arrived
    /// before the account was linked; replay once it is.
    AccountUnknown,
    /// The stored event lacks what its type requires; replaying will not help until the code
    /// handling it changes.
    InvalidPayload,
    /// Anything else kept failing (e.g. the database was unreachable for the whole schedule).
    ApplyFailed,
}

impl FailureState {
    /// Every failure state.
    pub const ALL: [FailureState; 3] = [
        FailureState::AccountUnknown,
        FailureState::InvalidPayload,
        FailureState::ApplyFailed,
    ];

    /// State name, as stored and as the runbook page is named.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureState::AccountUnknown => "account_unknown",
            FailureState::InvalidPayload => "invalid_payload",
            FailureState::ApplyFailed => "apply_failed",
        }
    }

    /// Failure state for an activity failure of type `type_name`.
    pub fn from_failure_type(type_name: Option<&str>) -> Self {
        match type_name {
            Some(failure::ACCOUNT_UNKNOWN) => FailureState::AccountUnknown,
            Some(failure::INVALID_PAYLOAD) => FailureState::InvalidPayload,
            _ => FailureState::ApplyFailed,
        }
    }
}

/// The provider webhook workflow.
#[workflow]
#[derive(Default)]
pub struct ProviderWebhookWorkflow {
    /// Replay signals received so far.
    replays_requested: u32,
    /// Current state name (for the `state` query).
    state: String,
}

#[workflow_methods]
impl ProviderWebhookWorkflow {
    /// Applies the event, parking in a failure state until replayed if it cannot.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ProviderEventInput,
    ) -> WorkflowResult<String> {
        let workflow_id = ctx.workflow_id().to_owned();
        let mut replays = 0u32;
        loop {
            record(ctx, &workflow_id, &input, "applying", None, replays).await?;
            let applied = ctx
                .execute_activity(
                    ProviderActivities::apply_event,
                    ApplyInput {
                        event_id: input.event_id.clone(),
                        workflow_id: workflow_id.clone(),
                    },
                    apply_options(&input.retry),
                )
                .await;
            match applied {
                Ok(outcome) => {
                    let state = match outcome {
                        ApplyOutcome::Applied { .. } => "applied",
                        ApplyOutcome::Ignored { .. } => "ignored",
                        ApplyOutcome::Superseded { .. } => "superseded",
                    };
                    record(ctx, &workflow_id, &input, state, None, replays).await?;
                    return Ok(state.to_owned());
                }
                Err(e) => {
                    let (failure, message) = classify(&e);
                    record(
                        ctx,
                        &workflow_id,
                        &input,
                        failure.as_str(),
                        Some(message),
                        replays,
                    )
                    .await?;
                    ctx.wait_condition(|s| s.replays_requested > replays)
                        .await?;
                    replays += 1;
                }
            }
        }
    }

    /// Ops: try a parked run again.
    #[signal]
    pub fn replay(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _request: ReplayRequest) {
        self.replays_requested += 1;
    }

    /// Current state name.
    #[query]
    pub fn state(&self, _ctx: &WorkflowContextView) -> String {
        self.state.clone()
    }
}

async fn record(
    ctx: &mut WorkflowContext<ProviderWebhookWorkflow>,
    workflow_id: &str,
    input: &ProviderEventInput,
    state: &str,
    last_error: Option<String>,
    replays: u32,
) -> WorkflowResult<()> {
    ctx.state_mut(|s| s.state = state.to_owned());
    ctx.execute_activity(
        MirrorActivities::record_state,
        StateRecord {
            workflow_id: workflow_id.to_owned(),
            kind: KIND.to_owned(),
            subject: input.event_id.clone(),
            state: state.to_owned(),
            last_error,
            replays,
            attempts: None,
            failure: FailureState::ALL.iter().any(|f| f.as_str() == state),
            clear_error: false,
        },
        ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_millis(500))
                    .maximum_interval(Duration::from_secs(30))
                    .build(),
            )
            .build(),
    )
    .await?;
    Ok(())
}

fn apply_options(retry: &RetrySchedule) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(retry.initial_interval_ms))
                .backoff_coefficient(retry.backoff_coefficient)
                .maximum_interval(Duration::from_millis(retry.maximum_interval_ms))
                .maximum_attempts(retry.maximum_attempts)
                .non_retryable_error_types([failure::INVALID_PAYLOAD])
                .build(),
        )
        .build()
}

fn classify(e: &ActivityExecutionError) -> (FailureState, String) {
    match e.cause() {
        Some(IncomingError::Application(af)) => (
            FailureState::from_failure_type(af.type_name()),
            af.source_error().to_string(),
        ),
        _ => (FailureState::ApplyFailed, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_state_names_match_their_serialized_form_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for f in FailureState::ALL {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.as_str()));
            assert!(
                seen.insert(f.as_str()),
                "duplicate state name {}",
                f.as_str()
            );
        }
    }

    #[test]
    fn activity_failure_types_map_to_failure_states() {
        assert_eq!(
            FailureState::from_failure_type(Some(failure::ACCOUNT_UNKNOWN)),
            FailureState::AccountUnknown
        );
        assert_eq!(
            FailureState::from_failure_type(Some(failure::INVALID_PAYLOAD)),
            FailureState::InvalidPayload
        );
        assert_eq!(
            FailureState::from_failure_type(Some(failure::INTERNAL)),
            FailureState::ApplyFailed
        );
        assert_eq!(
            FailureState::from_failure_type(None),
            FailureState::ApplyFailed
        );
    }
}
