//! Region replication: one long-running run per worker task queue
//! (`cert-replication-<task queue>`) that, every interval, asks every relay which certificate
//! versions it serves, pushes what lags the latest issued version, removes certificates of
//! domains that are gone, and records one snapshot per region (`region_snapshots`: versions
//! and drift). A new relay, or one that was down during a distribution, converges within one
//! interval. The `converge_now` signal runs a pass at once; the run continues as new every
//! `passes_per_run` passes to keep its history short.

use burrow_activities::distribution::{ConvergeOutcome, DistributionActivities};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ContinueAsNewOptions, SyncWorkflowContext, WorkflowContext,
    WorkflowContextView, WorkflowResult,
};

/// Workflow id of the replication run of `task_queue`.
pub fn workflow_id(task_queue: &str) -> String {
    format!("cert-replication-{task_queue}")
}

/// Input of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationInput {
    /// Time between passes.
    pub interval_ms: u64,
    /// Passes before continuing as new.
    pub passes_per_run: u32,
}

/// The replication workflow.
#[workflow]
#[derive(Default)]
pub struct ReplicationWorkflow {
    passes: u32,
    requested: u32,
    last: Option<ConvergeOutcome>,
}

#[workflow_methods]
impl ReplicationWorkflow {
    /// Converges forever.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ReplicationInput,
    ) -> WorkflowResult<()> {
        loop {
            let outcome = ctx
                .execute_activity(
                    DistributionActivities::converge_replicas,
                    (),
                    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
                        // The pass heartbeats per relay: a worker lost mid-pass is retried
                        // after seconds, not after the whole timeout.
                        .heartbeat_timeout(Duration::from_secs(10))
                        .retry_policy(
                            RetryPolicy::builder()
                                .initial_interval(Duration::from_secs(1))
                                .maximum_interval(Duration::from_secs(60))
                                .maximum_attempts(3)
                                .build(),
                        )
                        .build(),
                )
                .await
                .ok();
            let passes = ctx.state_mut(|s| {
                s.passes += 1;
                if outcome.is_some() {
                    s.last = outcome;
                }
                s.passes
            });
            if passes >= input.passes_per_run.max(1) {
                ctx.continue_as_new(input.clone(), ContinueAsNewOptions::default())?;
            }
            let seen = ctx.state(|s| s.requested);
            temporalio_sdk::workflows::select! {
                _ = ctx.timer(Duration::from_millis(input.interval_ms.max(1))) => {}
                _ = ctx.wait_condition(move |s: &ReplicationWorkflow| s.requested > seen) => {}
            }
        }
    }

    /// Runs a pass now.
    #[signal]
    pub fn converge_now(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _reason: String) {
        self.requested += 1;
    }

    /// The last pass's outcome.
    #[query]
    pub fn last(&self, _ctx: &WorkflowContextView) -> Option<ConvergeOutcome> {
        self.last.clone()
    }
}
