//! Agent configuration: `BURROW_AUTHTOKEN`, `BURROW_RELAY`, `BURROW_CA_FILE` from the
//! environment, over a TOML file (`--config`, or `$XDG_CONFIG_HOME/burrow/burrow.toml`,
//! `~/.config/burrow/burrow.toml` if it exists).
//!
//! The file is versioned (`version = 1`) and may define named endpoints under
//! `[endpoints.<key>]`, started with `burrow start <key>…` or `burrow start --all`. The CLI's
//! `burrow http|tcp|tls` flags build the same [`EndpointConfig`], so both paths validate alike.
//! Unknown keys anywhere in the file are rejected with the key's name and line.

use crate::{
    tunnel::TunnelSpec,
    upstream::{HostHeader, Upstream, UpstreamProtocol, UpstreamTls},
};
use burrow_common::{Secret, config::Config};
use burrow_proto::tunnel::EndpointProto;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, path::PathBuf};

/// The config file format this agent reads.
pub const CONFIG_VERSION: u32 = 1;

/// What the agent needs to reach a relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Authtoken issued by the api (`BURROW_AUTHTOKEN`).
    pub authtoken: Secret,
    /// Relay agent address, `host:port` (`BURROW_RELAY`). Several relays of one platform:
    /// comma-separated (`a:7443,b:7443`), or a list in the file; the agent starts with the
    /// first and moves to the next when a session is lost ([`AgentConfig::relays`]).
    #[serde(deserialize_with = "one_or_many")]
    pub relay: String,
    /// PEM file of the CA that signed the relay's certificate (`BURROW_CA_FILE`).
    pub ca_file: String,
    /// Config file format version ([`CONFIG_VERSION`]).
    pub version: u32,
    /// Where the inspector listens (`127.0.0.1:4040`, trying the next ports when taken);
    /// empty disables it.
    pub inspect_addr: String,
    /// Named endpoints for `burrow start`.
    pub endpoints: BTreeMap<String, EndpointConfig>,
}

/// One endpoint: what `burrow http|tcp|tls` takes on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointConfig {
    /// `http`, `tcp` or `tls`.
    pub proto: String,
    /// The local service: a port, `host:port`, `http://…` or `https://…` (HTTP only).
    pub addr: String,
    /// Public name (HTTP and TLS): `<name>.<domain>`; relay-chosen when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// HTTP: `preserve`, `rewrite` or a literal host.
    pub host_header: String,
    /// HTTP: `http1`, or `http2` for h2/h2c services (gRPC).
    pub upstream_protocol: String,
    /// HTTP over `https://`: accept any certificate from the local service.
    pub upstream_insecure: bool,
    /// HTTP over `https://`: PEM file of a CA to trust for the local service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<String>,
    /// TCP and TLS: send a PROXY protocol v2 header first.
    pub proxy_protocol: bool,
    /// Share the name with other agents of the account; visitors are balanced across them.
    pub pool: bool,
    /// HTTP and TLS: a custom domain verified for the account, served instead of
    /// `<name>.<domain>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// A traffic policy file (YAML or JSON) sent to the relay with the bind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_policy_file: Option<String>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            proto: "http".into(),
            addr: String::new(),
            name: None,
            host_header: "preserve".into(),
            upstream_protocol: "http1".into(),
            upstream_insecure: false,
            upstream_ca: None,
            proxy_protocol: false,
            pool: false,
            domain: None,
            traffic_policy_file: None,
        }
    }
}

impl EndpointConfig {
    /// Checks the endpoint and turns it into what the tunnel runs.
    pub fn to_spec(&self) -> Result<TunnelSpec, String> {
        if let Some(Err(e)) = self
            .name
            .as_deref()
            .map(burrow_proto::tunnel::validate_label)
        {
            return Err(format!("invalid name: {e}"));
        }
        let err = |e: crate::upstream::UpstreamError| e.0;
        let only_http = |what: &str, set: bool| {
            if set {
                Err(format!("`{what}` applies to http endpoints only"))
            } else {
                Ok(())
            }
        };
        let (proto, upstream) = match self.proto.as_str() {
            "http" => {
                if self.proxy_protocol {
                    return Err("`proxy_protocol` applies to tcp and tls endpoints only".into());
                }
                let mut u = Upstream::parse(
                    &self.addr,
                    HostHeader::parse(&self.host_header).map_err(err)?,
                )
                .map_err(err)?;
                u.protocol = UpstreamProtocol::parse(&self.upstream_protocol).map_err(err)?;
                match &mut u.tls {
                    Some(tls) => {
                        *tls = UpstreamTls {
                            insecure: self.upstream_insecure,
                            ca_file: self.upstream_ca.clone(),
                        }
                    }
                    None if self.upstream_insecure || self.upstream_ca.is_some() => {
                        return Err(format!(
                            "`upstream_insecure` and `upstream_ca` need an https:// target, not {:?}",
                            self.addr
                        ));
                    }
                    None => {}
                }
                (EndpointProto::Http, u)
            }
            proto @ ("tcp" | "tls") => {
                only_http("upstream_insecure", self.upstream_insecure)?;
                only_http("upstream_ca", self.upstream_ca.is_some())?;
                only_http("host_header", self.host_header != "preserve")?;
                only_http("upstream_protocol", self.upstream_protocol != "http1")?;
                if proto == "tcp" && self.name.is_some() {
                    return Err("tcp endpoints get a port, not a name: remove `name`".into());
                }
                let mut u = Upstream::parse_tcp(&self.addr).map_err(err)?;
                u.proxy_protocol = self.proxy_protocol;
                let proto = if proto == "tcp" {
                    EndpointProto::Tcp
                } else {
                    EndpointProto::Tls
                };
                (proto, u)
            }
            other => {
                return Err(format!(
                    "proto {other:?} is not one of `http`, `tcp`, `tls`"
                ));
            }
        };
        let domain = match &self.domain {
            Some(_) if proto == EndpointProto::Tcp => {
                return Err("tcp endpoints get a port, not a domain: remove `domain`".into());
            }
            Some(_) if self.name.is_some() => {
                return Err("set `name` or `domain`, not both".into());
            }
            Some(d) => Some(validate_domain(d)?),
            None => None,
        };
        let traffic_policy = match &self.traffic_policy_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the traffic policy file {path}: {e}"))?,
            ),
            None => None,
        };
        Ok(TunnelSpec {
            proto,
            upstream,
            name: self.name.clone(),
            pool: self.pool,
            domain,
            traffic_policy,
        })
    }
}

/// Lower-cases `domain` and checks it is a DNS name of at least two labels.
fn validate_domain(domain: &str) -> Result<String, String> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2
        || labels
            .iter()
            .any(|l| burrow_proto::tunnel::validate_label(l).is_err())
    {
        return Err(format!(
            "domain {domain:?} is not a DNS name like app.example.com"
        ));
    }
    Ok(d)
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            authtoken: Secret::default(),
            relay: "127.0.0.1:7443".into(),
            ca_file: String::new(),
            version: CONFIG_VERSION,
            inspect_addr: "127.0.0.1:4040".into(),
            endpoints: BTreeMap::new(),
        }
    }
}

impl Config for AgentConfig {
    fn validate(&self) -> Result<(), String> {
        if self.version != CONFIG_VERSION {
            return Err(format!(
                "config `version` {} is not supported: this agent reads version {CONFIG_VERSION}",
                self.version
            ));
        }
        for (key, endpoint) in &self.endpoints {
            endpoint
                .to_spec()
                .map_err(|e| format!("endpoint `{key}`: {e}"))?;
        }
        if !self.inspect_addr.is_empty() {
            burrow_common::config::check_socket_addr("inspect_addr", &self.inspect_addr)?;
        }
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
        let relays = self.relays();
        if relays.is_empty() {
            return Err("no relay: set BURROW_RELAY (or `relay`) to host:port".into());
        }
        for relay in relays {
            if relay
                .rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
            {
                return Err(format!("relay address {relay:?} must be host:port"));
            }
        }
        Ok(())
    }
}

impl AgentConfig {
    /// The relay addresses in `relay`, in the order they are tried.
    pub fn relays(&self) -> Vec<String> {
        self.relay
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// `relay` is a string in the environment and may be a list in the file: a list is kept
/// comma-joined, so both read alike.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s,
        OneOrMany::Many(list) => list.join(","),
    })
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
        let names: Vec<&str> = cfg.endpoints.keys().map(String::as_str).collect();
        assert_eq!(names, ["api", "db", "secure", "web"]);
        let api = cfg.endpoints["api"].to_spec().unwrap();
        assert_eq!(api.upstream.to_string(), "https://localhost:8443");
        assert!(api.upstream.tls.unwrap().insecure);
        assert_eq!(
            cfg.endpoints["secure"].to_spec().unwrap().proto,
            EndpointProto::Tls
        );
    }

    fn load(text: &str) -> Result<AgentConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("burrow.toml");
        let base = "authtoken = \"t\"\nca_file = \"ca.pem\"\n";
        std::fs::write(&path, format!("{base}{text}")).unwrap();
        burrow_common::config::load_file(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn several_relays_come_as_a_comma_list_or_a_file_list() {
        let listed = load("relay = [\"a:7443\", \"b:7443\"]\n").unwrap();
        assert_eq!(listed.relays(), ["a:7443", "b:7443"]);
        let joined = load("relay = \"a:7443, b:7443,c:1\"\n").unwrap();
        assert_eq!(joined.relays(), ["a:7443", "b:7443", "c:1"]);
        let err = load("relay = \"a:7443,b\"\n").unwrap_err();
        assert!(err.contains("\"b\""), "{err}");
        let err = load("relay = \" , \"\n").unwrap_err();
        assert!(err.contains("no relay"), "{err}");
    }

    #[test]
    fn an_unknown_endpoint_key_is_named_with_its_line() {
        let err = load("[endpoints.web]\naddr = \"3000\"\nadr = \"x\"\n").unwrap_err();
        assert!(err.contains("`adr`"), "{err}");
        assert!(err.contains("burrow.toml:5:"), "{err}");
    }

    #[test]
    fn endpoint_rules_name_the_endpoint() {
        let err =
            load("[endpoints.db]\nproto = \"tcp\"\naddr = \"5432\"\nname = \"x\"\n").unwrap_err();
        assert!(
            err.contains("endpoint `db`") && err.contains("name"),
            "{err}"
        );
        let err = load("[endpoints.w]\naddr = \"3000\"\nupstream_insecure = true\n").unwrap_err();
        assert!(err.contains("https://"), "{err}");
        let err = load("[endpoints.w]\nproto = \"udp\"\naddr = \"1\"\n").unwrap_err();
        assert!(err.contains("\"udp\""), "{err}");
        let err = load("version = 2\n").unwrap_err();
        assert!(err.contains("version"), "{err}");
    }
}
