//! Every workflow failure state has a runbook page, and every page names an existing state.

use burrow_workflows::kinds;
use std::path::PathBuf;

fn runbooks_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runbooks")
}

#[test]
fn every_failure_state_has_a_runbook_page() {
    let root = runbooks_dir();
    for kind in kinds::all() {
        assert!(
            !kind.failure_states.is_empty(),
            "{} has no failure states",
            kind.name
        );
        for state in &kind.failure_states {
            let page =
                root.join(kinds::runbook_path(kind.name, state).trim_start_matches("runbooks/"));
            let text = std::fs::read_to_string(&page).unwrap_or_else(|e| {
                panic!(
                    "failure state {}/{state} has no runbook at {}: {e}",
                    kind.name,
                    page.display()
                )
            });
            assert!(
                text.contains(&format!("`{state}`")),
                "{} does not name its state `{state}`",
                page.display()
            );
        }
    }
}

#[test]
fn every_runbook_page_names_an_existing_failure_state() {
    let root = runbooks_dir();
    let kinds = kinds::all();
    for entry in std::fs::read_dir(&root).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_dir() {
            continue;
        }
        let kind_name = entry.file_name().to_string_lossy().into_owned();
        let kind = kinds
            .iter()
            .find(|k| k.name == kind_name)
            .unwrap_or_else(|| panic!("runbooks/{kind_name}/ is not a workflow kind"));
        for page in std::fs::read_dir(entry.path()).unwrap() {
            let name = page.unwrap().file_name().to_string_lossy().into_owned();
            let state = name
                .strip_suffix(".md")
                .unwrap_or_else(|| panic!("runbooks/{kind_name}/{name} is not a .md page"));
            assert!(
                kind.failure_states.contains(&state),
                "runbooks/{kind_name}/{name} names no failure state of {kind_name} (states: {:?})",
                kind.failure_states
            );
        }
    }
}
