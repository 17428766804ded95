//! The local service an endpoint forwards to: parsed from the CLI's target argument, plus how
//! the `Host` header reaches it.
//!
//! Targets: `8080` (localhost), `host:port`, `http://host[:port]`, `https://host[:port]`
//! (TLS to the local service, verified against the public web PKI plus `--upstream-ca`, or not
//! at all with `--upstream-insecure`); the local service speaks HTTP/1.1 or, with
//! `--upstream-protocol http2`, HTTP/2 (h2c in the clear, ALPN `h2` over TLS: gRPC).

use std::fmt;

/// Where visitor requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port` to connect to.
    pub authority: String,
    /// What `Host` the local service sees.
    pub host_header: HostHeader,
    /// HTTP version spoken to the local service.
    pub protocol: UpstreamProtocol,
    /// TCP: send a PROXY protocol v2 header with the visitor's address first.
    pub proxy_protocol: bool,
    /// `https://` targets: how the local service's certificate is checked.
    pub tls: Option<UpstreamTls>,
}

/// TLS to the local service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// Accept any certificate (a dev server's self-signed one).
    pub insecure: bool,
    /// PEM file of an extra CA to trust.
    pub ca_file: Option<String>,
}

/// The HTTP version the local service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (upgrades to WebSocket work).
    #[default]
    Http1,
    /// HTTP/2 without TLS (h2c, prior knowledge): gRPC servers.
    Http2,
}

impl UpstreamProtocol {
    /// Parses `--upstream-protocol`.
    pub fn parse(s: &str) -> Result<Self, UpstreamError> {
        match s {
            "http1" => Ok(UpstreamProtocol::Http1),
            "http2" => Ok(UpstreamProtocol::Http2),
            _ => Err(UpstreamError(format!(
                "--upstream-protocol {s:?} must be `http1` or `http2`"
            ))),
        }
    }
}

/// How the `Host` header is set on forwarded requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostHeader {
    /// The public host the visitor used (`demo.burrow.localhost`), like ngrok's default.
    #[default]
    Preserve,
    /// The upstream's own `host:port` (for dev servers that reject unknown hosts).
    Rewrite,
    /// A fixed value.
    Value(String),
}

impl HostHeader {
    /// Parses `--host-header`: `preserve`, `rewrite`, or a literal host.
    pub fn parse(s: &str) -> Result<Self, UpstreamError> {
        match s {
            "preserve" => Ok(HostHeader::Preserve),
            "rewrite" => Ok(HostHeader::Rewrite),
            v if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic()) => {
                Ok(HostHeader::Value(v.to_owned()))
            }
            _ => Err(UpstreamError(format!(
                "--host-header {s:?} must be `preserve`, `rewrite` or a host name"
            ))),
        }
    }
}

/// A target or option that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(pub String);

impl Upstream {
    /// Parses the target argument of `burrow http`.
    pub fn parse(target: &str, host_header: HostHeader) -> Result<Self, UpstreamError> {
        let bad = |why: &str| UpstreamError(format!("invalid target {target:?}: {why}"));
        let (scheme, rest) = match target.split_once("://") {
            Some(("http", rest)) => ("http", rest),
            Some(("https", rest)) => ("https", rest),
            Some((other, _)) => {
                return Err(bad(&format!(
                    "scheme {other}:// is not supported; use http:// or https://"
                )));
            }
            None => ("", target),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(bad("a path is not allowed; give host:port"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            _ if rest.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty() => {
                ("localhost", rest)
            }
            Some((h, p)) if !h.is_empty() => (h, p),
            None if scheme == "http" && !rest.is_empty() => (rest, "80"),
            None if scheme == "https" && !rest.is_empty() => (rest, "443"),
            _ => return Err(bad("expected a port, host:port or http://host:port")),
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be 1 to 65535"))?;
        Ok(Upstream {
            authority: format!("{host}:{port}"),
            host_header,
            protocol: UpstreamProtocol::Http1,
            proxy_protocol: false,
            tls: (scheme == "https").then(UpstreamTls::default),
        })
    }
}

impl Upstream {
    /// Parses the target argument of `burrow tcp`: a port (localhost) or `host:port`.
    pub fn parse_tcp(target: &str) -> Result<Self, UpstreamError> {
        if target.contains("://") {
            return Err(UpstreamError(format!(
                "invalid target {target:?}: a TCP target is a port or host:port, without a scheme"
            )));
        }
        Self::parse(target, HostHeader::Preserve)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(t: &str) -> Result<String, UpstreamError> {
        Upstream::parse(t, HostHeader::Preserve).map(|u| u.authority)
    }

    #[test]
    fn targets() {
        assert_eq!(parse("8080").unwrap(), "localhost:8080");
        assert_eq!(parse("127.0.0.1:3000").unwrap(), "127.0.0.1:3000");
        assert_eq!(parse("http://app.local:81/").unwrap(), "app.local:81");
        assert_eq!(parse("http://app.local").unwrap(), "app.local:80");
        assert_eq!(parse("https://x:1").unwrap(), "x:1");
        assert_eq!(parse("https://x").unwrap(), "x:443");
        assert!(parse("ftp://x:1").unwrap_err().0.contains("ftp://"));
        assert!(parse("0").unwrap_err().0.contains("1 to 65535"));
        assert!(parse("host:99999").is_err());
        assert!(parse("http://x:1/path").unwrap_err().0.contains("path"));
        assert!(parse("").is_err());
        assert!(parse(":80").is_err());
    }

    #[test]
    fn host_header_modes() {
        assert_eq!(HostHeader::parse("rewrite").unwrap(), HostHeader::Rewrite);
        assert_eq!(
            HostHeader::parse("example.test").unwrap(),
            HostHeader::Value("example.test".into())
        );
        assert!(HostHeader::parse("a b").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_ports_are_valid(t in "\\PC{0,40}") {
            if let Ok(a) = parse(&t) {
                let port: u16 = a.rsplit_once(':').unwrap().1.parse().unwrap();
                prop_assert!(port > 0);
            }
        }
    }
}
