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
    accounts, api_keys, audit, auth, certificates, domains, incidents, names, ops, plans, policies,
    usage, users, webhooks,
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
        certificates::list,
        certificates::get,
        certificates::renew,
        certificates::regions,
        certificates::callbacks::receive,
        certificates::callbacks::list_mappings,
        certificates::callbacks::list_callbacks,
        incidents::list,
        incidents::get,
        incidents::acknowledge,
        incidents::resolve,
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
        (name = "certificates", description = "Custom domains' certificates, their renewal and replication across regions, and signed certificate callbacks (`Burrow-Signature`, no API key)."),
        (name = "incidents", description = "Incidents workflows open in failure states; acknowledging and resolving them (ops role)."),
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

pub mod shapes;

#[cfg(test)]
mod tests;
