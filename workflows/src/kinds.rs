//! The catalogue of workflow kinds and their named failure states.
//!
//! The console links each failure state to `runbooks/<kind>/<state>.md`, and a test fails when
//! a state has no page or a page names no state.

use crate::certificate::CertState;
use crate::provider_webhook::FailureState;

/// A workflow kind and its failure states.
#[derive(Debug, Clone)]
pub struct Kind {
    /// Kind name, as in `workflow_runs.kind` and the runbook folder.
    pub name: &'static str,
    /// Names of the states in which a run is parked and needs ops.
    pub failure_states: Vec<&'static str>,
}

/// Every workflow kind Burrow runs.
pub fn all() -> Vec<Kind> {
    vec![
        Kind {
            name: crate::provider_webhook::KIND,
            failure_states: FailureState::ALL.iter().map(|f| f.as_str()).collect(),
        },
        Kind {
            name: crate::certificate::KIND,
            failure_states: CertState::FAILURES.iter().map(|f| f.as_str()).collect(),
        },
    ]
}

/// Every failure state name of every kind (what "parked" means in queries).
pub fn all_failure_states() -> Vec<String> {
    all()
        .iter()
        .flat_map(|k| k.failure_states.iter().map(|s| s.to_string()))
        .collect()
}

/// Whether `state` is a failure state of `kind`.
pub fn is_failure_state(kind: &str, state: &str) -> bool {
    all()
        .iter()
        .any(|k| k.name == kind && k.failure_states.contains(&state))
}

/// Path of the runbook page for a failure state, relative to the repository root.
pub fn runbook_path(kind: &str, state: &str) -> String {
    format!("runbooks/{kind}/{state}.md")
}
