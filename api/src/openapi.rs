//! The OpenAPI document of the REST API, generated from the code and served at
//! `GET /openapi.json` (no auth).
//!
//! Operations come from the handlers' `#[utoipa::path(...)]` attributes, schemas from
//! `#[derive(ToSchema)]` on their request and response types; this module gathers them in
//! [`ApiDoc`] and adds what belongs to the whole document:
//! - the security schemes: `api_key` (`Authorization: Bearer bk_...`, see [`crate::auth`]) and
//!   `internal_key` (the relays' shared key, `/v1/internal/*` only);
//! - [`CommonErrors`]: the errors nearly every operation can answer, so handlers list only
//!   their own: 401 where a key is required, 400 (`invalid_path`, `invalid_query`,
//!   `invalid_json`) where a path, query or body is read, 413 where a body is, 500 and 503
//!   everywhere. Every error body is an [`ErrorBody`].
//! - the shapes of the few answers handlers build with `json!` ([`shapes`]).
//!
//! Every route [`crate::router`] registers is documented except the console, `/`, runbook
//! pages, this document and the ops probes (`/healthz`, `/readyz`, `/metrics`): a unit test
//! reads `lib.rs`'s `.route(...)` calls and fails on a (path, method) missing here, or
//! documented here but not routed.

use crate::error::ErrorBody;
use crate::{
    accounts, api_keys, audit, auth, domains, names, ops, plans, policies, usage, users, webhooks,
};
use axum::response::{IntoResponse, Response};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        RefOr, ResponseBuilder,
        content::ContentBuilder,
        path::Operation,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

/// The document: every documented operation and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Burrow API",
        description = "The control plane of Burrow, a self-hostable tunnel platform: accounts, \
                       credentials, plans, usage, reserved names, custom domains, traffic \
                       policies, the audit log, ops actions and the relays' internal calls. \
                       Errors answer `{\"error\": {\"code\", \"message\", ...}}` with a stable \
                       `code`."
    ),
    paths(
        accounts::create_account,
        accounts::get_account,
        accounts::create_authtoken,
        accounts::list_authtokens,
        accounts::revoke_authtoken,
        accounts::create_api_key,
        api_keys::list,
        api_keys::list_for_account,
        api_keys::revoke,
        users::create_user,
        users::list_users,
        users::list_account_users,
        users::disable_user,
        users::create_user_api_key,
        accounts::verify_authtoken,
        accounts::authtoken_status,
        auth::me,
        plans::list_plans,
        plans::set_account_plan,
        usage::account_usage,
        usage::ingest,
        audit::list,
        names::reserve,
        names::list,
        names::release,
        domains::add,
        domains::list,
        domains::remove,
        domains::verify,
        policies::put,
        policies::get,
        policies::delete,
        ops::list_workflows,
        ops::replay_one,
        ops::replay_all,
        ops::list_sessions,
        ops::kick_session,
        webhooks::receive,
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes, &OptionalBodies, &CommonErrors),
    tags(
        (name = "accounts", description = "Accounts (admin creates; developers read their own)."),
        (name = "authtokens", description = "Authtokens agents connect with (`bt_...`); the secret is shown once."),
        (name = "api-keys", description = "API keys (`bk_...`) and their roles: developer, ops, finance, admin."),
        (name = "users", description = "Users API keys belong to."),
        (name = "plans", description = "Plans and their limits; an account's plan."),
        (name = "usage", description = "Metered traffic per account and endpoint."),
        (name = "audit", description = "The append-only audit log of admin, ops and finance actions."),
        (name = "names", description = "Reserved names: labels under the base domain one account holds."),
        (name = "domains", description = "Custom domains and their DNS TXT verification."),
        (name = "policies", description = "Traffic policy documents per account endpoint, versioned."),
        (name = "ops", description = "Workflows, dead-letter replay and agent sessions (ops role)."),
        (name = "webhooks", description = "Signed payment provider events (`Stripe-Signature`), no API key."),
        (name = "internal", description = "Relays' calls, authenticated with the internal key; not for clients."),
    )
)]
pub struct ApiDoc;

/// `GET /openapi.json`: the document (no auth).
pub async fn serve() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

/// Adds the `api_key` and `internal_key` bearer schemes.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("bk_...")
                    .description(Some(
                        "An API key: `Authorization: Bearer bk_...`. Its role (developer, ops, \
                         finance, admin) decides what it may do; see `GET /v1/me`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "internal_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The key relays share with the api (`BURROW_API_INTERNAL_KEY`): \
                         `Authorization: Bearer <key>`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// An optional JSON body (`body: Option<Json<T>>`) may be left out, but when sent it must be
/// a `T`: utoipa writes `Option<T>` as "`T` or `null`" (and a `null` body is a 400), so the
/// schema becomes `T` and the body stays not required.
struct OptionalBodies;

impl Modify for OptionalBodies {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{
            Required, Type,
            schema::{Schema, SchemaType},
        };
        let is_null = |s: &RefOr<Schema>| matches!(s, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::Type(Type::Null));
        for op in operations(doc) {
            let Some(body) = op.request_body.as_mut() else {
                continue;
            };
            if body.required == Some(Required::True) {
                continue;
            }
            for content in body.content.values_mut() {
                let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema else {
                    continue;
                };
                let not_null: Vec<_> = one_of
                    .items
                    .iter()
                    .filter(|s| !is_null(s))
                    .cloned()
                    .collect();
                if let [only] = not_null.as_slice() {
                    content.schema = Some(only.clone());
                }
            }
        }
    }
}

/// Every operation of the document.
fn operations(doc: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
    })
}

/// Adds the errors every operation of a kind can answer (see the module docs) where the
/// handler did not list them itself.
struct CommonErrors;

impl CommonErrors {
    fn add(op: &mut Operation, status: &str, description: &str) {
        if op.responses.responses.contains_key(status) {
            return;
        }
        let content = ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "ErrorBody",
            ))))
            .build();
        let response = ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build();
        op.responses
            .responses
            .insert(status.to_owned(), RefOr::T(response));
    }
}

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for op in operations(doc) {
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            if secured {
                Self::add(
                    op,
                    "401",
                    "`unauthorized`: no key, or an unknown or revoked one.",
                );
            }
            let reads_input =
                op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            if reads_input {
                Self::add(
                    op,
                    "400",
                    "`invalid_path`, `invalid_query` or `invalid_json` (the message names \
                         the field), or a code of this operation.",
                );
            }
            if op.request_body.is_some() {
                Self::add(
                    op,
                    "413",
                    "`payload_too_large`: the body is over the api's limit.",
                );
            }
            Self::add(op, "500", "`internal`: a bug; the api logs hold the cause.");
            Self::add(
                op,
                "503",
                "`unavailable`: a dependency (database, Temporal, relays) is down; retry.",
            );
        }
    }
}

/// Documentation of answers handlers build with `json!` rather than a type of their own.
/// Keep them in step with the handler named on each.
pub mod shapes {
    use utoipa::ToSchema;
    use uuid::Uuid;

    /// `DELETE /v1/authtokens/{id}` answer ([`crate::accounts::revoke_authtoken`]).
    #[derive(ToSchema)]
    #[allow(dead_code)]
    pub struct RevokedAuthtoken {
        /// The authtoken.
        pub id: Uuid,
        /// Always `true` (revoking twice is not an error).
        pub revoked: bool,
        /// Agent sessions the relays closed.
        pub sessions_closed: u32,
        /// Relays that could not be told; they close the sessions within their auth cache
        /// period.
        pub relays_unreachable: Vec<String>,
    }

    /// `POST /v1/ops/dead-letters/{id}/replay` answer ([`crate::ops::replay_one`]).
    #[derive(ToSchema)]
    #[allow(dead_code)]
    pub struct ReplayRequested {
        /// The run.
        pub workflow_id: String,
        /// Always `requested`.
        #[schema(example = "requested")]
        pub replay: String,
    }

    /// `POST /v1/ops/dead-letters/replay-all` answer ([`crate::ops::replay_all`]).
    #[derive(ToSchema)]
    #[allow(dead_code)]
    pub struct ReplayAllQueued {
        /// Parked runs it will replay.
        pub queued: u64,
        /// Signals per second it replays them at.
        pub rate_per_sec: u32,
    }

    /// `GET /v1/ops/sessions` answer ([`crate::ops::list_sessions`]).
    #[derive(ToSchema)]
    #[allow(dead_code)]
    pub struct SessionList {
        /// One entry per known relay.
        pub relays: Vec<RelaySessions>,
    }

    /// One relay's sessions, or why it did not answer (`error` alone).
    #[derive(ToSchema)]
    #[allow(dead_code)]
    pub struct RelaySessions {
        /// The relay (absent with `error`).
        pub relay_id: Option<String>,
        /// Its agent sessions (absent with `error`).
        pub sessions: Option<Vec<Session>>,
        /// Why the relay could not be asked (only field when present).
        pub error: Option<String>,
    }

    /// An agent session on a relay.
    #[derive(ToSchema)]
    #[allow(dead_code)]
    pub struct Session {
        /// Session id (`POST /v1/ops/sessions/{id}/kick`).
        pub session_id: String,
        /// Account.
        pub account_id: String,
        /// Authtoken it authenticated with.
        pub authtoken_id: String,
        /// Agent's address, `host:port`.
        pub peer: String,
        /// Unix seconds.
        pub connected_at: i64,
        /// Agent version.
        pub agent_version: String,
        /// Its endpoints.
        pub endpoints: Vec<SessionEndpoint>,
    }

    /// An endpoint of a session.
    #[derive(ToSchema)]
    #[allow(dead_code)]
    pub struct SessionEndpoint {
        /// `http`, `tcp`, `tls`.
        pub proto: String,
        /// Label, domain or `tcp-<port>`.
        pub name: String,
        /// Public URL.
        pub url: String,
    }

    /// `POST /v1/ops/sessions/{id}/kick` answer ([`crate::ops::kick_session`]).
    #[derive(ToSchema)]
    #[allow(dead_code)]
    pub struct KickedSession {
        /// The session.
        pub session_id: String,
        /// Sessions closed (1, or more if relays disagreed).
        pub kicked: u32,
        /// Relays that could not be asked.
        pub relays_unreachable: Vec<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Routes that are not part of the REST API: pages, this document, the ops probes.
    fn undocumented(path: &str) -> bool {
        matches!(
            path,
            "/" | "/console" | "/openapi.json" | "/healthz" | "/readyz" | "/metrics"
        ) || path.starts_with("/runbooks/")
    }

    /// The (path, method) pairs `.route("<path>", <method router>)` calls in `src` register:
    /// methods are the `get(`, `.post(`, ... calls at the top level of the second argument
    /// (handlers and closures inside them are not looked into).
    fn routes(src: &str) -> Vec<(String, String)> {
        const METHODS: &[&str] = &["get", "post", "put", "delete", "patch", "head", "options"];
        let code: String = src
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut found = Vec::new();
        let mut rest = code.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let Some(args) = rest.trim_start().strip_prefix('"') else {
                continue;
            };
            let path = &args[..args.find('"').expect("unterminated route path")];
            let mut depth = 1;
            let mut word = String::new();
            for c in args[path.len() + 1..].chars() {
                match c {
                    '(' => {
                        if depth == 1 && METHODS.contains(&word.as_str()) {
                            found.push((path.to_owned(), word.clone()));
                        }
                        depth += 1;
                    }
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                if c.is_alphanumeric() || c == '_' {
                    word.push(c);
                } else {
                    word.clear();
                }
            }
        }
        found
    }

    fn document() -> Value {
        let json = ApiDoc::openapi()
            .to_json()
            .expect("the document serializes");
        serde_json::from_str(&json).expect("the document is JSON")
    }

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut ops = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                ops.push((path.clone(), method.clone(), op.clone()));
            }
        }
        ops
    }

    #[test]
    fn the_route_scan_finds_chained_and_nested_methods() {
        let src = r#"
            Router::new()
                .route("/a/{id}", post(m::create).get(m::list))
                // .route("/commented", get(m::x))
                .route(
                    "/b",
                    put(m::put)
                        .get(m::get)
                        .delete(m::delete),
                )
                .route("/", get(|| async { Redirect::to("/console") }))
                .route("/c", axum::routing::get(m::get_thing))
        "#;
        let found = routes(src);
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|(p, m)| (p.as_str(), m.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("/a/{id}", "post"),
                ("/a/{id}", "get"),
                ("/b", "put"),
                ("/b", "get"),
                ("/b", "delete"),
                ("/", "get"),
                ("/c", "get"),
            ]
        );
    }

    #[test]
    fn every_routed_operation_is_documented_and_nothing_else() {
        let routed: Vec<(String, String)> = routes(include_str!("lib.rs"))
            .into_iter()
            .filter(|(path, _)| !undocumented(path))
            .collect();
        assert!(
            routed.len() >= 30,
            "the scan found too few routes: {routed:?}"
        );
        let doc = document();
        let missing: Vec<String> = routed
            .iter()
            .filter(|(path, method)| doc["paths"][path][method].is_null())
            .map(|(path, method)| format!("{} {path}", method.to_uppercase()))
            .collect();
        assert!(
            missing.is_empty(),
            "routed in lib.rs but not in the OpenAPI document (add #[utoipa::path] to the \
             handler and list it in ApiDoc's paths): {missing:?}"
        );
        let stale: Vec<String> = operations(&doc)
            .into_iter()
            .filter(|(path, method, _)| !routed.contains(&(path.clone(), method.clone())))
            .map(|(path, method, _)| format!("{} {path}", method.to_uppercase()))
            .collect();
        assert!(stale.is_empty(), "documented but not routed: {stale:?}");
    }

    #[test]
    fn the_document_is_openapi_3() {
        let doc = document();
        let version = doc["openapi"].as_str().expect("openapi version");
        assert!(version.starts_with("3."), "{version}");
        assert_eq!(doc["info"]["title"], "Burrow API");
        for scheme in ["api_key", "internal_key"] {
            assert_eq!(
                doc["components"]["securitySchemes"][scheme]["scheme"], "bearer",
                "{scheme}"
            );
        }
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    }

    #[test]
    fn every_operation_is_tagged_secured_and_declares_its_path_parameters() {
        let known: Vec<String> = document()["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|t| t["name"].as_str().expect("tag name").to_owned())
            .collect();
        for (path, method, op) in operations(&document()) {
            let what = format!("{} {path}", method.to_uppercase());
            let tags = op["tags"]
                .as_array()
                .unwrap_or_else(|| panic!("{what}: no tag"));
            assert_eq!(tags.len(), 1, "{what}: one tag");
            let tag = tags[0].as_str().expect("tag");
            assert!(known.iter().any(|k| k == tag), "{what}: unknown tag {tag}");
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r.as_object().expect("requirement").keys())
                .map(String::as_str)
                .collect();
            let expected: &[&str] = if path.starts_with("/v1/internal/") {
                assert_eq!(tag, "internal", "{what}");
                &["internal_key"]
            } else if path.starts_with("/v1/webhooks/") {
                &[]
            } else {
                &["api_key"]
            };
            assert_eq!(schemes, expected, "{what}: security");
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().expect("parameter name"))
                .collect();
            let templated: Vec<&str> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            assert_eq!(declared, templated, "{what}: path parameters");
            assert!(
                op["responses"]
                    .as_object()
                    .is_some_and(|r| r.keys().any(|k| k.starts_with('2'))),
                "{what}: no success response"
            );
        }
    }

    #[test]
    fn optional_bodies_may_be_left_out_but_are_not_null() {
        let doc = document();
        for (path, method) in [
            ("/v1/accounts/{id}/authtokens", "post"),
            ("/v1/ops/dead-letters/replay-all", "post"),
            ("/v1/users/{id}/api-keys", "post"),
        ] {
            let body = &doc["paths"][path][method]["requestBody"];
            assert_ne!(body["required"], true, "{method} {path}: {body}");
            assert!(
                body["content"]["application/json"]["schema"]["$ref"].is_string(),
                "{method} {path}: {body}"
            );
        }
    }

    #[test]
    fn the_documented_batch_size_is_the_enforced_one() {
        let schemas = &document()["components"]["schemas"];
        assert_eq!(
            schemas["UsageBatch"]["properties"]["records"]["maxItems"],
            usage::MAX_RECORDS
        );
    }

    #[test]
    fn the_policy_put_documents_its_text_content_types() {
        let doc = document();
        let body = &doc["paths"]["/v1/accounts/{id}/endpoints/{endpoint}/policy"]["put"]["requestBody"]
            ["content"];
        for content_type in policies::CONTENT_TYPES {
            assert!(body[content_type].is_object(), "{content_type}: {body}");
        }
    }
}
