//! TXT lookups for custom-domain verification, through the resolver the api is configured with
//! (`dns_resolver`, `ip:port` over UDP and TCP) or the system one (`/etc/resolv.conf`).
//!
//! A resolver is built per lookup with caching off: a customer who just published the record
//! and presses verify again must not get an answer cached from the first try.

use hickory_resolver::{
    Resolver, TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts},
    net::runtime::TokioRuntimeProvider,
    proto::rr::RData,
};
use std::{net::SocketAddr, time::Duration};

/// What a TXT lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txt {
    /// The values of the TXT records at the name (character-strings of one record joined).
    Found(Vec<String>),
    /// The name does not exist, or has no TXT record.
    None,
}

/// The resolver could not be asked, or did not answer (→ 503 naming it).
#[derive(Debug, thiserror::Error)]
#[error("the DNS resolver {resolver} did not answer: {message}")]
pub struct Unreachable {
    /// Which resolver.
    pub resolver: String,
    /// Why.
    pub message: String,
}

/// How lookups are made.
#[derive(Debug, Clone)]
pub struct Lookup {
    server: Option<SocketAddr>,
}

impl Lookup {
    /// Through `server` (`ip:port`), or the system resolver when `None`.
    pub fn new(server: Option<SocketAddr>) -> Self {
        Self { server }
    }

    /// The resolver, as messages name it.
    pub fn describe(&self) -> String {
        match self.server {
            Some(s) => s.to_string(),
            None => "of the system (/etc/resolv.conf)".to_owned(),
        }
    }

    fn resolver(&self) -> Result<TokioResolver, Unreachable> {
        let mut opts = ResolverOpts::default();
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 1;
        let builder = match self.server {
            Some(addr) => {
                let connection = |mut c: ConnectionConfig| {
                    c.port = addr.port();
                    c
                };
                let server = NameServerConfig::new(
                    addr.ip(),
                    true,
                    vec![
                        connection(ConnectionConfig::udp()),
                        connection(ConnectionConfig::tcp()),
                    ],
                );
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => Resolver::builder_tokio().map_err(|e| self.unreachable(e))?,
        };
        builder
            .with_options(opts)
            .build()
            .map_err(|e| self.unreachable(e))
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> Unreachable {
        Unreachable {
            resolver: self.describe(),
            message: e.to_string(),
        }
    }

    /// The TXT records at `name` (a fully qualified name; a final dot is added).
    pub async fn txt(&self, name: &str) -> Result<Txt, Unreachable> {
        let resolver = self.resolver()?;
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match resolver.txt_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let values: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|s| String::from_utf8_lossy(s))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect();
                Ok(if values.is_empty() {
                    Txt::None
                } else {
                    Txt::Found(values)
                })
            }
            Err(e) if e.is_no_records_found() => Ok(Txt::None),
            Err(e) => Err(self.unreachable(e)),
        }
    }
}
