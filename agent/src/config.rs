//! Agent configuration: `BURROW_AUTHTOKEN`, `BURROW_RELAY`, `BURROW_CA_FILE` from the
//! environment, over a TOML file (`--config`, or `$XDG_CONFIG_HOME/burrow/burrow.toml`,
//! `~/.config/burrow/burrow.toml` if it exists).

use burrow_common::{Secret, config::Config};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What the agent needs to reach a relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Authtoken issued by the api (`BURROW_AUTHTOKEN`).
    pub authtoken: Secret,
    /// Relay agent address, `host:port` (`BURROW_RELAY`).
    pub relay: String,
    /// PEM file of the CA that signed the relay's certificate (`BURROW_CA_FILE`).
    pub ca_file: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            authtoken: Secret::default(),
            relay: "127.0.0.1:7443".into(),
            ca_file: String::new(),
        }
    }
}

impl Config for AgentConfig {
    fn validate(&self) -> Result<(), String> {
        if self.authtoken.is_empty() {
            return Err(
                "no authtoken: set BURROW_AUTHTOKEN or `authtoken` in the config file".into(),
            );
        }
        if self.ca_file.is_empty() {
            return Err(
                "no CA file: set BURROW_CA_FILE (or `ca_file`) to the PEM of the CA that signed \
                 the relay's certificate"
                    .into(),
            );
        }
        if self
            .relay
            .rsplit_once(':')
            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return Err(format!("relay address {:?} must be host:port", self.relay));
        }
        Ok(())
    }
}

/// The config file to read when none is given: the user's, if it exists.
pub fn default_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let path = base.join("burrow").join("burrow.toml");
    path.exists().then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/agent.toml");
        let cfg: AgentConfig = burrow_common::config::load_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(cfg.relay, "127.0.0.1:7443");
    }
}
