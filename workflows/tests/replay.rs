//! Determinism guard: every recorded history in `tests/histories/` must replay against the
//! current workflow code. A change that would break running workflows (reordering activities,
//! adding a timer before an existing command, ...) fails here instead of in production; the
//! second test proves it by replaying the certificate histories against a deliberately altered
//! copy of the workflow.
//!
//! Fixtures are recorded from real runs by the end-to-end suite:
//! `BURROW_RECORD_HISTORY_DIR=$PWD/workflows/tests/histories cargo test -p burrow-e2e -- webhooks certificates`.

use burrow_workflows::certificate::CertificateWorkflow;
use burrow_workflows::provider_webhook::ProviderWebhookWorkflow;
use burrow_workflows::replication::ReplicationWorkflow;
use std::path::PathBuf;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

fn fixtures(prefix: &str) -> Vec<PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    fixtures.sort();
    assert!(
        !fixtures.is_empty(),
        "no histories named {prefix}* in {}",
        dir.display()
    );
    fixtures
}

fn load(path: &PathBuf) -> WorkflowHistory {
    WorkflowHistory::from_json(&std::fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn recorded_histories_replay_against_current_code() {
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<ProviderWebhookWorkflow>()
            .unwrap()
            .register_workflow::<CertificateWorkflow>()
            .unwrap()
            .register_workflow::<ReplicationWorkflow>()
            .unwrap()
            .build(),
    )
    .unwrap();
    for path in fixtures("") {
        replayer
            .replay_workflow(load(&path))
            .await
            .unwrap_or_else(|e| panic!("{} no longer replays: {e}", path.display()));
    }
}

/// The certificate workflow with an injected nondeterministic change: after recording its
/// first state it sleeps instead of recording `ordering` (as if someone inserted a delay
/// before ordering, or reordered two steps).
#[allow(missing_docs)]
mod altered {
    use burrow_activities::{MirrorActivities, StateRecord};
    use burrow_workflows::certificate::CertificateInput;
    use std::time::Duration;
    use temporalio_common::search_attributes::SearchAttributeKey;
    use temporalio_macros::{workflow, workflow_methods};
    use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

    #[workflow]
    #[derive(Default)]
    pub struct AlteredCertificateWorkflow;

    #[workflow_methods]
    impl AlteredCertificateWorkflow {
        #[run(name = "CertificateWorkflow")]
        pub async fn run(
            ctx: &mut WorkflowContext<Self>,
            input: CertificateInput,
        ) -> WorkflowResult<String> {
            ctx.upsert_search_attributes([SearchAttributeKey::<String>::keyword(
                burrow_workflows::certificate::STATE_ATTRIBUTE,
            )
            .value_set("pending".to_owned())]);
            ctx.execute_activity(
                MirrorActivities::record_state,
                StateRecord {
                    workflow_id: ctx.workflow_id().to_owned(),
                    kind: "certificate".into(),
                    subject: input.domain.clone(),
                    state: "pending".into(),
                    last_error: None,
                    replays: 0,
                    attempts: Some(0),
                    failure: false,
                    clear_error: false,
                },
                ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30)).build(),
            )
            .await?;
            ctx.timer(Duration::from_secs(5)).await;
            Ok(String::new())
        }
    }
}

#[tokio::test]
async fn an_injected_nondeterministic_change_is_caught_by_the_certificate_fixtures() {
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<altered::AlteredCertificateWorkflow>()
            .unwrap()
            .build(),
    )
    .unwrap();
    for path in fixtures("certificate_") {
        let err = replayer
            .replay_workflow(load(&path))
            .await
            .err()
            .unwrap_or_else(|| {
                panic!(
                    "{} replayed against an altered workflow: the fixture guards nothing",
                    path.display()
                )
            });
        let text = err.to_string();
        assert!(
            text.contains("TMPRL1100") || text.to_lowercase().contains("nondetermin"),
            "{}: expected a nondeterminism error, got {text}",
            path.display()
        );
    }
}
