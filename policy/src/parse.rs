//! From the [`yaml`](crate::yaml) tree to the validated [`model`](crate::model): the document,
//! its phases, rules and matchers, and which actions each phase allows.

use http::{HeaderValue, Method};

use crate::config;
use crate::model::{Document, Matcher, Rule};
use crate::read::{Fields, Result, fail, join, list, map, string, uint};
use crate::values::header_value;
use crate::yaml::Node;

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most rules in one phase.
const MAX_RULES: usize = 100;
/// Most actions in one rule.
const MAX_ACTIONS: usize = 32;

/// Every action type, in documentation order.
pub(crate) const ACTION_TYPES: [&str; 10] = [
    "restrict-ips",
    "basic-auth",
    "jwt-validation",
    "rate-limit",
    "add-headers",
    "remove-headers",
    "verify-webhook",
    "deny",
    "custom-response",
    "redirect",
];

/// The phases of a document.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    TcpConnect,
    HttpRequest,
    HttpResponse,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::TcpConnect, Phase::HttpRequest, Phase::HttpResponse];

    pub fn name(self) -> &'static str {
        match self {
            Phase::TcpConnect => "on_tcp_connect",
            Phase::HttpRequest => "on_http_request",
            Phase::HttpResponse => "on_http_response",
        }
    }

    /// Whether an action of type `kind` may run in this phase.
    pub fn allows(self, kind: &str) -> bool {
        match self {
            Phase::TcpConnect => kind == "restrict-ips",
            Phase::HttpRequest => true,
            Phase::HttpResponse => {
                matches!(kind, "add-headers" | "remove-headers" | "custom-response")
            }
        }
    }
}

/// Parses and validates a whole document.
pub(crate) fn document(text: &str) -> Result<Document> {
    if text.len() > MAX_DOCUMENT_BYTES {
        // The line on which the limit is crossed.
        let cut = (0..=MAX_DOCUMENT_BYTES)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        let line = text[..cut].matches('\n').count() + 1;
        let message = format!("the document is larger than {MAX_DOCUMENT_BYTES} bytes");
        return Err(crate::PolicyError::new("", Some(line), message));
    }
    let root = crate::yaml::parse(text)?;
    let keys = [
        "version",
        "on_tcp_connect",
        "on_http_request",
        "on_http_response",
    ];
    let f = Fields::new(&root, "", &keys)?;
    if let Some((n, p)) = f.get("version") {
        let v = uint(n, &p)?;
        if v != 1 {
            return Err(fail(
                &p,
                n,
                format!("unsupported version {v}; only 1 is accepted"),
            ));
        }
    }
    let rules = |phase: Phase| match f.get(phase.name()) {
        Some((n, p)) => list(n, &p, MAX_RULES, |n, p| rule(phase, n, p)),
        None => Ok(Vec::new()),
    };
    Ok(Document {
        version: 1,
        on_tcp_connect: rules(Phase::TcpConnect)?,
        on_http_request: rules(Phase::HttpRequest)?,
        on_http_response: rules(Phase::HttpResponse)?,
    })
}

fn rule(phase: Phase, node: &Node, path: &str) -> Result<Rule> {
    let f = Fields::new(node, path, &["name", "match", "actions"])?;
    let name = match f.get("name") {
        Some((n, p)) => {
            let s = string(n, &p)?;
            if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                return Err(fail(&p, n, "expected 1 to 64 printable ASCII characters"));
            }
            Some(s.to_owned())
        }
        None => None,
    };
    let matcher = match f.get("match") {
        Some((n, p)) if phase == Phase::TcpConnect => {
            return Err(fail(
                &p,
                n,
                "on_tcp_connect rules cannot have `match` (no HTTP request exists yet)",
            ));
        }
        Some((n, p)) => Some(matcher(phase, n, &p)?),
        None => None,
    };
    let (n, p) = f.req("actions")?;
    let actions = list(n, &p, MAX_ACTIONS, |n, p| action(phase, n, p))?;
    if actions.is_empty() {
        return Err(fail(&p, n, "a rule needs at least one action"));
    }
    // Printable ASCII (checked above) is always a valid header value.
    let label = name.clone().unwrap_or_else(|| path.to_owned());
    let label = HeaderValue::from_str(&label).unwrap_or(HeaderValue::from_static("policy"));
    Ok(Rule {
        name,
        matcher,
        actions,
        label,
    })
}

fn action(phase: Phase, node: &Node, path: &str) -> Result<crate::model::Action> {
    let f = Fields::new(node, path, &["type", "config"])?;
    let (n, p) = f.req("type")?;
    let kind = string(n, &p)?;
    if !ACTION_TYPES.contains(&kind) {
        return Err(fail(
            &p,
            n,
            format!(
                "unknown action type `{kind}`; expected one of: {}",
                ACTION_TYPES.join(", ")
            ),
        ));
    }
    if !phase.allows(kind) {
        let allowed: Vec<_> = Phase::ALL
            .iter()
            .filter(|ph| ph.allows(kind))
            .map(|ph| ph.name())
            .collect();
        return Err(fail(
            &p,
            n,
            format!(
                "`{kind}` is not allowed in {}; it is allowed in {}",
                phase.name(),
                allowed.join(" and ")
            ),
        ));
    }
    config::action(kind, f.get("config"), (path, node))
}

fn matcher(phase: Phase, node: &Node, path: &str) -> Result<Matcher> {
    let f = Fields::new(
        node,
        path,
        &["path_prefix", "methods", "headers", "status_codes"],
    )?;
    let mut m = Matcher::default();
    if let Some((n, p)) = f.get("path_prefix") {
        let s = string(n, &p)?;
        if !s.starts_with('/') {
            return Err(fail(&p, n, format!("`{s}` must start with `/`")));
        }
        m.path_prefix = Some(s.to_owned());
    }
    if let Some((n, p)) = f.get("methods") {
        m.methods = list(n, &p, 16, |n, p| {
            let s = string(n, p)?.to_ascii_uppercase();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(fail(p, n, format!("`{s}` is not an HTTP method")));
            }
            Method::from_bytes(s.as_bytes())
                .map_err(|_| fail(p, n, format!("`{s}` is not an HTTP method")))
        })?;
    }
    if let Some((n, p)) = f.get("headers") {
        m.headers = map(n, &p, 100)?
            .iter()
            .map(|e| {
                let path = join(&p, &e.key);
                let name = http::HeaderName::from_bytes(e.key.as_bytes()).map_err(|_| {
                    crate::PolicyError::new(
                        &path,
                        Some(e.line),
                        format!("`{}` is not a valid header name", e.key),
                    )
                })?;
                Ok((name, header_value(&e.value, &path)?))
            })
            .collect::<Result<_>>()?;
    }
    if let Some((n, p)) = f.get("status_codes") {
        if phase != Phase::HttpResponse {
            return Err(fail(
                &p,
                n,
                "`status_codes` only applies in on_http_response",
            ));
        }
        m.status_codes = list(n, &p, 100, |n, p| {
            let s = uint(n, p)?;
            if !(100..=599).contains(&s) {
                return Err(fail(
                    p,
                    n,
                    format!("status codes are between 100 and 599, found {s}"),
                ));
            }
            Ok(s as u16)
        })?;
    }
    Ok(m)
}
