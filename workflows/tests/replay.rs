//! Determinism guard: every recorded history in `tests/histories/` must replay against the
//! current workflow code. A change that would break running workflows (reordering activities,
//! adding a timer before an existing command, ...) fails here instead of in production.
//!
//! Fixtures are recorded from real runs by the end-to-end suite:
//! `BURROW_RECORD_HISTORY_DIR=$PWD/workflows/tests/histories cargo test -p burrow-e2e -- webhooks`.

use burrow_workflows::provider_webhook::ProviderWebhookWorkflow;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

#[tokio::test]
async fn recorded_histories_replay_against_current_code() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    fixtures.sort();
    assert!(!fixtures.is_empty(), "no histories in {}", dir.display());

    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<ProviderWebhookWorkflow>()
            .unwrap()
            .build(),
    )
    .unwrap();
    for path in fixtures {
        let history = WorkflowHistory::from_json(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        replayer
            .replay_workflow(history)
            .await
            .unwrap_or_else(|e| panic!("{} no longer replays: {e}", path.display()));
    }
}
