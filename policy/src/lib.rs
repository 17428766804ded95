//! Traffic policy: the document an account attaches to an endpoint, validated on submit (by
//! the api) and evaluated by the relay on every connection, request and response.
//!
//! ```
//! let policy = burrow_policy::parse(r#"
//! on_http_request:
//!   - match: { path_prefix: /admin }
//!     actions:
//!       - type: basic-auth
//!         config: { credentials: ["alice:s3cret"] }
//! "#).unwrap();
//! assert_eq!(burrow_policy::parse(&policy.to_json()).unwrap(), policy);
//! ```
//!
//! The document reference (every action and its configuration) is `docs/policy.md`.
//!
//! # Evaluating (the relay's side)
//! 1. A visitor connects: [`Policy::on_tcp_connect`]; `Err(Denied)` closes the connection.
//! 2. A request head arrives: capture [`Policy::request_facts`] (before anything edits the
//!    request); when [`Policy::request_body_limit`] of the request head is `Some(n)` (a
//!    rule that verifies webhooks applies to this request), buffer up to `n` body bytes
//!    (answer 413 past it); then [`Policy::on_http_request`] with a [`RequestContext`]
//!    (peer, `<account>/<endpoint>` scope, a shared [`limit::RateLimiter`] and
//!    [`JwksCache`], the clock). `Respond(res)` is sent as is; `Continue` forwards the request
//!    with the headers the policy set or removed.
//! 3. The service answers: [`Policy::on_http_response`] with the captured facts edits the
//!    response head in place, or returns a replacement response.
//!
//! Everything that can be compiled is compiled by [`parse`]; evaluation allocates little
//! (see `docs/BENCHMARKS.md`: about 1 µs per request for a four-action policy).
//!
//! # Layout
//! - [`parse`] and [`Policy`]: the entry points; `Policy` holds the compiled document.
//! - `yaml`: the submitted text as a tree of nodes that know their line (YAML and JSON).
//! - `read`: typed reads from that tree, each error naming the field path and line.
//! - `parse` (module), `config` and `values`: the document, phases, rules and matchers; each
//!   action's configuration; the scalar values they share (CIDRs, windows, headers).
//! - `model`: the compiled document and its canonical JSON form.
//! - `eval`, `matching`, `respond`: evaluation per connection, request and response; matchers
//!   and IP lists; the answers a policy sends.
//! - [`limit`]: the [`RateLimiter`](limit::RateLimiter) trait, in-memory and Redis limiters.
//! - [`jwks`]: JWKS fetching and caching, JWT validation.
//! - [`webhook`]: Stripe and Standard Webhooks signature verification.
#![forbid(unsafe_code)]

mod config;
mod eval;
pub mod jwks;
pub mod limit;
mod matching;
mod model;
mod parse;
mod read;
mod respond;
mod values;
pub mod webhook;
mod yaml;

use http::HeaderName;

pub use eval::{Denied, RequestContext, RequestFacts, RequestVerdict};
pub use jwks::JwksCache;
pub use parse::MAX_DOCUMENT_BYTES;
pub use respond::POLICY_HEADER;

/// Body size the relay buffers (and answers 413 beyond) when a rule that verifies webhooks
/// applies to the request (see [`Policy::request_body_limit`]).
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Why a document was refused: the field (a path such as `on_http_request[0].actions[1].config.allow`),
/// the 1-based line in the submitted text when known, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{field}: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
pub struct PolicyError {
    /// Path of the offending field (`(document)` for the document as a whole).
    pub field: String,
    /// 1-based line in the submitted text, when known.
    pub line: Option<usize>,
    /// What was wrong.
    pub message: String,
}

impl PolicyError {
    pub(crate) fn new(
        field: impl Into<String>,
        line: Option<usize>,
        message: impl Into<String>,
    ) -> Self {
        let field = field.into();
        let field = if field.is_empty() {
            "(document)".to_owned()
        } else {
            field
        };
        PolicyError {
            field,
            line,
            message: message.into(),
        }
    }
}

/// A validated, compiled policy. Cheap to share (`Arc<Policy>`); evaluation never mutates it.
#[derive(Debug, Clone)]
pub struct Policy {
    doc: model::Document,
    /// How many `on_http_request` rules [`Policy::request_body_limit`] looks at: up to the
    /// last one with a `verify-webhook` action (0 when none has one).
    webhook_rules: usize,
    /// Request headers `on_http_response` matchers read.
    response_headers: Vec<HeaderName>,
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        self.doc == other.doc
    }
}

/// Parses and validates a YAML or JSON policy document.
///
/// Every error names the field path and the line; unknown keys, unknown action types and
/// actions outside the phases that allow them are refused.
pub fn parse(text: &str) -> Result<Policy, PolicyError> {
    let doc = parse::document(text)?;
    let webhook_rules = doc
        .on_http_request
        .iter()
        .rposition(|r| {
            r.actions
                .iter()
                .any(|a| matches!(a, model::Action::VerifyWebhook(_)))
        })
        .map_or(0, |last| last + 1);
    let response_headers = Policy::headers_for_responses(&doc.on_http_response);
    Ok(Policy {
        webhook_rules,
        response_headers,
        doc,
    })
}

impl Policy {
    /// The validated document as canonical JSON (what the api stores and issues to relays).
    /// `parse(&p.to_json())` gives a policy equal to `p`.
    pub fn to_json(&self) -> String {
        // The model holds only strings, numbers, lists and string-keyed maps.
        serde_json::to_string(&self.doc).unwrap_or_default()
    }

    /// Whether `on_tcp_connect` has rules (the relay can skip the call otherwise).
    pub fn has_tcp_rules(&self) -> bool {
        !self.doc.on_tcp_connect.is_empty()
    }

    /// Whether `on_http_request` has rules.
    pub fn has_request_rules(&self) -> bool {
        !self.doc.on_http_request.is_empty()
    }

    /// Whether `on_http_response` has rules.
    pub fn has_response_rules(&self) -> bool {
        !self.doc.on_http_response.is_empty()
    }
}

#[cfg(test)]
mod tests;
