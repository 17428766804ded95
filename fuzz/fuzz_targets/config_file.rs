//! Config files: arbitrary TOML text must load or fail with an error, never panic.
#![no_main]

use burrow_common::config::{Config, load_from};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Sample {
    listen: String,
    port: u16,
    verbose: bool,
    peers: Vec<String>,
}

impl Config for Sample {}

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("burrow-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("config.toml");
    if std::fs::write(&file, data).is_ok() {
        let _ = load_from::<Sample>(Some(&file), "FUZZ_", std::iter::empty());
    }
});
