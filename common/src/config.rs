//! Layered configuration: built-in defaults, then an optional TOML file, then `BURROW_*`
//! environment variables, each layer overriding the one before.
//!
//! Each binary defines one flat struct implementing [`Config`]. Keys are the struct's field
//! names; the environment variable for field `foo_bar` is `<PREFIX>FOO_BAR`. A key in the file
//! that the struct does not have is an error naming the key (typos must not silently fall back to
//! defaults); environment variables are only read for known keys, because the environment is
//! shared with other programs. Values from the environment are parsed as the type of the
//! field's default (string, integer, float, bool, or a comma-separated list).

use serde::{Serialize, de::DeserializeOwned};
use std::path::{Path, PathBuf};

/// A binary's configuration struct.
pub trait Config: Serialize + DeserializeOwned + Default {
    /// Checks cross-field rules after loading; the message names the offending key.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// What was wrong with the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// The file has a key or value its struct does not accept, at `line`.
    #[error("{}:{line}: {message}", path.display())]
    AtLine {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// What is wrong (names the key).
        message: String,
    },
    /// A key the configuration does not have.
    #[error("unknown config key `{key}` in {origin} (known keys: {known})")]
    UnknownKey {
        /// The key.
        key: String,
        /// Where it came from.
        origin: String,
        /// The keys that exist.
        known: String,
    },
    /// A value of the wrong type.
    #[error("invalid value for `{key}` (from {origin}): {message}")]
    Invalid {
        /// The key.
        key: String,
        /// Where it came from.
        origin: String,
        /// What was wrong.
        message: String,
    },
    /// Cross-field validation failed.
    #[error("invalid configuration: {0}")]
    Rule(String),
}

/// Checks that config key `key` holds a `host:port` socket address.
pub fn check_socket_addr(key: &str, value: &str) -> Result<(), String> {
    value
        .parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|e| format!("`{key}` {value:?} is not host:port: {e}"))
}

/// Exit code for configuration errors (`EX_USAGE`).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// Loads `C` from defaults, `file` (if any) and the process environment.
pub fn load<C: Config>(file: Option<&Path>, env_prefix: &str) -> Result<C, ConfigError> {
    load_from(file, env_prefix, std::env::vars())
}

/// Loads `C` from defaults and `file` only, ignoring the environment (used to check example
/// config files).
pub fn load_file<C: Config>(file: &Path) -> Result<C, ConfigError> {
    load_from(Some(file), "", std::iter::empty())
}

/// [`load`] with an explicit environment (for tests).
pub fn load_from<C: Config>(
    file: Option<&Path>,
    env_prefix: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<C, ConfigError> {
    let mut table = match toml::Value::try_from(C::default()) {
        Ok(toml::Value::Table(t)) => t,
        other => {
            return Err(ConfigError::Rule(format!(
                "config defaults must serialize to a table, got {other:?}"
            )));
        }
    };
    let defaults = table.clone();
    let known = || table_keys(&C::default());
    // Where each overridden key came from, to name it when its value does not fit.
    let mut origins: Vec<(String, String)> = Vec::new();

    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let parsed: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
        // Deserializing the file alone finds unknown keys at any depth (every config struct
        // denies them) and values of the wrong type, with the line to fix.
        if let Err(e) = toml::from_str::<C>(&text) {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            return Err(ConfigError::AtLine {
                path: path.to_owned(),
                line: line.unwrap_or(1),
                message: e.message().to_owned(),
            });
        }
        for (key, value) in parsed {
            if !table.contains_key(&key) {
                return Err(ConfigError::UnknownKey {
                    key,
                    origin: path.display().to_string(),
                    known: known(),
                });
            }
            origins.push((key.clone(), path.display().to_string()));
            table.insert(key, value);
        }
    }

    let env: std::collections::HashMap<String, String> = env.into_iter().collect();
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let var = format!("{env_prefix}{}", key.to_uppercase());
        let Some(raw) = env.get(&var) else { continue };
        let origin = format!("environment variable {var}");
        let value = parse_like(&table[&key], raw).map_err(|message| ConfigError::Invalid {
            key: key.clone(),
            origin: origin.clone(),
            message,
        })?;
        origins.push((key.clone(), origin));
        table.insert(key, value);
    }

    let config: C = match toml::Value::Table(table.clone()).try_into() {
        Ok(c) => c,
        Err(merged) => {
            let merged: toml::de::Error = merged;
            // Find the override that does not fit its field (the latest one wins, as above).
            for (key, origin) in origins.iter().rev() {
                let mut single = defaults.clone();
                single.insert(key.clone(), table[key].clone());
                if let Err(e) = toml::Value::Table(single).try_into::<C>() {
                    return Err(ConfigError::Invalid {
                        key: key.clone(),
                        origin: origin.clone(),
                        message: e.message().to_owned(),
                    });
                }
            }
            return Err(ConfigError::Rule(merged.message().to_owned()));
        }
    };
    config.validate().map_err(ConfigError::Rule)?;
    Ok(config)
}

fn table_keys<C: Serialize>(c: &C) -> String {
    match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => t.keys().cloned().collect::<Vec<_>>().join(", "),
        _ => String::new(),
    }
}

fn parse_like(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match default {
        toml::Value::String(_) => toml::Value::String(raw.to_owned()),
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected an integer, got {raw:?}"))?,
        ),
        toml::Value::Float(_) => toml::Value::Float(
            raw.trim()
                .parse()
                .map_err(|_| format!("expected a number, got {raw:?}"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(format!("expected true or false, got {raw:?}")),
        }),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        other => return Err(format!("cannot be set from the environment ({other})")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        listen: String,
        port: u16,
        verbose: bool,
        peers: Vec<String>,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                listen: "127.0.0.1".into(),
                port: 80,
                verbose: false,
                peers: vec![],
            }
        }
    }

    impl Config for Sample {
        fn validate(&self) -> Result<(), String> {
            if self.port == 0 {
                return Err("`port` must not be 0".into());
            }
            Ok(())
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "port = 81\nverbose = true\n").unwrap();
        let c: Sample = load_from(
            Some(&file),
            "T_",
            env(&[("T_PORT", "82"), ("T_PEERS", "a, b"), ("OTHER", "x")]),
        )
        .unwrap();
        assert_eq!(
            c,
            Sample {
                listen: "127.0.0.1".into(),
                port: 82,
                verbose: true,
                peers: vec!["a".into(), "b".into()],
            }
        );
    }

    #[test]
    fn unknown_file_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "port = 81\n\nprot = 81\n").unwrap();
        let err = load_from::<Sample>(Some(&file), "T_", env(&[])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`prot`") && msg.contains("port"), "{msg}");
        assert!(msg.contains("c.toml:3:"), "names the line: {msg}");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let err = load_from::<Sample>(None, "T_", env(&[("T_PORT", "eighty")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("T_PORT") && msg.contains("eighty"), "{msg}");
    }

    proptest::proptest! {
        #[test]
        fn env_strings_round_trip_and_numbers_parse_or_name_the_variable(
            listen in "\\PC{0,40}",
            port in proptest::prelude::any::<i64>(),
        ) {
            let result = load_from::<Sample>(
                None,
                "T_",
                env(&[("T_LISTEN", &listen), ("T_PORT", &port.to_string())]),
            );
            match result {
                Ok(c) => {
                    proptest::prop_assert_eq!(c.listen, listen);
                    proptest::prop_assert_eq!(i64::from(c.port), port);
                }
                Err(e) => {
                    // Only an out-of-range or zero port may fail, and the message says which key.
                    proptest::prop_assert!(port <= 0 || port > i64::from(u16::MAX));
                    let msg = e.to_string();
                    proptest::prop_assert!(msg.contains("port"), "{}", msg);
                }
            }
        }

        #[test]
        fn arbitrary_file_text_never_panics(text in "\\PC{0,200}") {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("c.toml");
            std::fs::write(&file, &text).unwrap();
            let _ = load_from::<Sample>(Some(&file), "T_", env(&[]));
        }
    }

    #[test]
    fn validation_runs_after_merge() {
        let err = load_from::<Sample>(None, "T_", env(&[("T_PORT", "0")])).unwrap_err();
        assert!(err.to_string().contains("`port` must not be 0"));
    }
}
