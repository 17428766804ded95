//! The validated document: phases, rules, matchers and actions, already compiled for
//! evaluation (CIDRs parsed, header names interned, secrets decoded) and serializable back to
//! canonical JSON.
//!
//! Canonical means: `version: 1` always written, absent optional fields omitted, empty lists
//! omitted, header names lower-case, methods upper-case, CIDRs as `addr/len`, windows in their
//! largest whole unit (`60s` is written `1m`). Parsing the canonical JSON gives an equal model.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::jwks::JwtConfig;
use crate::webhook::WebhookConfig;

/// The three phases and their rules.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Document {
    pub version: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_tcp_connect: Vec<Rule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_http_request: Vec<Rule>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_http_response: Vec<Rule>,
}

/// One rule: when `matcher` holds (or is absent), run `actions` in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<Matcher>,
    pub actions: Vec<Action>,
    /// `x-burrow-policy` value of answers from this rule: its name, else `phase[i]`.
    #[serde(skip)]
    pub label: HeaderValue,
}

/// Conditions on the request (and, in `on_http_response`, the status); all given must hold.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
pub(crate) struct Matcher {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "methods")]
    pub methods: Vec<Method>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "header_map")]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u16>,
}

/// Every action type, with its compiled configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", content = "config", rename_all = "kebab-case")]
pub(crate) enum Action {
    RestrictIps(RestrictIps),
    BasicAuth(BasicAuth),
    JwtValidation(JwtConfig),
    RateLimit(RateLimit),
    AddHeaders(AddHeaders),
    RemoveHeaders(RemoveHeaders),
    VerifyWebhook(WebhookConfig),
    Deny(Deny),
    CustomResponse(CustomResponse),
    Redirect(Redirect),
}

/// `restrict-ips`: a peer in `deny` is refused; otherwise, when `allow` is non-empty, a peer
/// outside it is refused.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct RestrictIps {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<IpNet>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<IpNet>,
}

/// `basic-auth`: `user:password` pairs (secrets: masked in `Debug`).
#[derive(Clone, PartialEq, Serialize)]
pub(crate) struct BasicAuth {
    pub credentials: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// SHA-256 of each credential: comparing fixed-length digests in constant time hides the
    /// credentials' lengths as well as their bytes.
    #[serde(skip)]
    pub digests: Vec<[u8; 32]>,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field(
                "credentials",
                &format_args!("[{} MASKED]", self.credentials.len()),
            )
            .field("realm", &self.realm)
            .finish()
    }
}

/// `rate-limit`: at most `capacity` requests per `window` per key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct RateLimit {
    pub name: String,
    pub capacity: u64,
    #[serde(serialize_with = "window")]
    pub window: Duration,
    pub key: RateKey,
}

/// What a rate limit counts by.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RateKey {
    /// The visitor's IP address.
    Ip,
    /// A request header's value (hashed before it reaches a key); the IP when it is absent.
    Header(HeaderName),
}

impl Serialize for RateKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RateKey::Ip => s.serialize_str("ip"),
            RateKey::Header(h) => s.serialize_str(&format!("header:{h}")),
        }
    }
}

/// `add-headers`: set each header (replacing any of the same name).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct AddHeaders {
    #[serde(serialize_with = "header_map")]
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// `remove-headers`: drop every value of each header.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct RemoveHeaders {
    #[serde(serialize_with = "header_names")]
    pub headers: Vec<HeaderName>,
}

/// `deny`: answer `status` (403) with `body`.
#[derive(Clone, Debug, PartialEq, Default, Serialize)]
pub(crate) struct Deny {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

/// `custom-response`: answer with this status, body and headers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct CustomResponse {
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "header_map")]
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// `redirect`: answer `status` (302) with `Location: to`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Redirect {
    #[serde(serialize_with = "header_value")]
    pub to: HeaderValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// `90s`, `2m`, `1h`: the largest unit that divides the window.
pub(crate) fn window_text(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn window<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&window_text(*d))
}

fn methods<S: Serializer>(m: &[Method], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(m.len()))?;
    for m in m {
        seq.serialize_element(m.as_str())?;
    }
    seq.end()
}

fn header_names<S: Serializer>(h: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(h.len()))?;
    for h in h {
        seq.serialize_element(h.as_str())?;
    }
    seq.end()
}

fn header_value<S: Serializer>(v: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    // Values are built from validated `&str`s, so they are visible ASCII.
    s.serialize_str(v.to_str().unwrap_or_default())
}

fn header_map<S: Serializer>(h: &[(HeaderName, HeaderValue)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(h.len()))?;
    for (k, v) in h {
        map.serialize_entry(k.as_str(), v.to_str().unwrap_or_default())?;
    }
    map.end()
}
