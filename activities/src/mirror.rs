//! Mirrors workflow state into PostgreSQL (`workflow_runs`) for the console and `/v1/ops`.
//!
//! Temporal history is the source of truth for a workflow; this table is a projection written
//! by the workflow itself (through this activity) at each state change, so the console can list
//! and filter thousands of runs without scanning Temporal visibility.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// One state transition of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRecord {
    /// Temporal workflow id.
    pub workflow_id: String,
    /// Workflow kind, e.g. `provider-webhook`.
    pub kind: String,
    /// What the workflow is about (event id, domain, ...).
    pub subject: String,
    /// New state name.
    pub state: String,
    /// Error that led here, if any.
    pub last_error: Option<String>,
    /// Times ops replayed this workflow so far.
    pub replays: u32,
    /// Attempts of the current step, when the workflow counts them itself (the provider
    /// workflow's activity counts its own).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// Whether `state` is a failure (parked) state: counted by
    /// `burrow_workflow_failure_states_total{kind,state}`.
    #[serde(default)]
    pub failure: bool,
    /// The workflow is healthy again: forget `last_error`.
    #[serde(default)]
    pub clear_error: bool,
}

/// Activities writing the `workflow_runs` projection.
pub struct MirrorActivities {
    pool: PgPool,
}

impl MirrorActivities {
    /// Activities using `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[activities]
impl MirrorActivities {
    /// Upserts the workflow's row with its new state.
    #[activity]
    pub async fn record_state(
        self: Arc<Self>,
        _ctx: ActivityContext,
        record: StateRecord,
    ) -> Result<(), ActivityError> {
        sqlx::query(
            "INSERT INTO workflow_runs (workflow_id, kind, subject, state, last_error, replays,
                 attempts)
             VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, 0))
             ON CONFLICT (workflow_id) DO UPDATE
               SET state = EXCLUDED.state,
                   last_error = CASE WHEN $8 THEN NULL
                                     ELSE COALESCE(EXCLUDED.last_error, workflow_runs.last_error) END,
                   replays = EXCLUDED.replays,
                   attempts = COALESCE($7, workflow_runs.attempts),
                   updated_at = now()",
        )
        .bind(&record.workflow_id)
        .bind(&record.kind)
        .bind(&record.subject)
        .bind(&record.state)
        .bind(&record.last_error)
        .bind(record.replays as i32)
        .bind(record.attempts.map(|a| a as i32))
        .bind(record.clear_error)
        .execute(&self.pool)
        .await
        .map_err(|e| crate::failure::error(crate::failure::INTERNAL, e.to_string(), true))?;
        metrics::counter!("burrow_workflow_transitions_total",
            "kind" => record.kind.clone(), "state" => record.state.clone())
        .increment(1);
        if record.failure {
            metrics::counter!("burrow_workflow_failure_states_total",
                "kind" => record.kind.clone(), "state" => record.state.clone())
            .increment(1);
        }
        tracing::info!(workflow_id = %record.workflow_id, state = %record.state, "workflow state");
        Ok(())
    }
}
