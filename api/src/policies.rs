//! Traffic policies: one YAML or JSON document per account endpoint, validated by
//! [`burrow_policy::parse`] when submitted and issued to relays (as canonical JSON) over
//! `RelayFeed`. Tables `endpoint_policies` (current) and `endpoint_policy_versions` (every
//! version, append-only), migration 0006.
//!
//! An endpoint is a label under the base domain (`demo`), a custom domain (`app.example.com`)
//! or `tcp-<port>`; anything else is a 422 `invalid_endpoint`. A label reserved by another
//! account, or a domain another account added, is a 409 and nothing changes.
//!
//! - `PUT /v1/accounts/{id}/endpoints/{endpoint}/policy`, body = the document
//!   (`Content-Type` `application/yaml`, `text/yaml`, `application/json` or `text/plain`) →
//!   200 `{endpoint, version, document, updated_at}`; a refused document is a 422
//!   `invalid_policy` with `error.field` and `error.line`. `version` counts every change of
//!   the endpoint's policy, removals included, so it never goes backwards.
//! - `GET` → `{endpoint, version, document, source, updated_at}`; 404 when there is none.
//! - `DELETE` → 204.
//!
//! Audited as `policy.put` and `policy.delete` in the transaction of the change.

use crate::extract::{Json, Path};
use crate::{
    AppState,
    audit::{self, Actor},
    domains,
    error::{ApiError, ApiResult},
    names, plans,
};
use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// Largest policy document the api reads (the policy format's own limit, 256 KiB; a smaller
/// limit there is enforced by `burrow_policy::parse` with its own message).
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

/// Content types a policy is accepted in.
pub const CONTENT_TYPES: &[&str] = &[
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "application/json",
    "text/plain",
];

/// What an endpoint name denotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// A label under the base domain.
    Label,
    /// A custom domain.
    Domain,
    /// `tcp-<port>`.
    Tcp,
}

/// Checks an endpoint and returns its normal form (domains lowercased) and kind.
pub fn check_endpoint(endpoint: &str, base_domain: &str) -> ApiResult<(String, EndpointKind)> {
    let invalid = |why: String| ApiError::Unprocessable {
        code: "invalid_endpoint",
        message: format!(
            "{endpoint:?} is not an endpoint: {why}; an endpoint is a name under the base \
             domain (\"demo\"), a custom domain (\"app.example.com\") or \"tcp-<port>\""
        ),
    };
    if endpoint.contains('.') {
        return match domains::normalize(endpoint, base_domain) {
            Ok(d) => Ok((d, EndpointKind::Domain)),
            Err(e) => Err(invalid(e.to_string())),
        };
    }
    if let Some(port) = endpoint.strip_prefix("tcp-")
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        return match port.parse::<u16>() {
            Ok(p) if p > 0 && !port.starts_with('0') => {
                Ok((endpoint.to_owned(), EndpointKind::Tcp))
            }
            _ => Err(invalid(format!("{port} is not a TCP port (1 to 65535)"))),
        };
    }
    names::check_label(endpoint).map_err(|e| invalid(e.to_string()))?;
    Ok((endpoint.to_owned(), EndpointKind::Label))
}

/// `PUT` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stored {
    /// The endpoint.
    pub endpoint: String,
    /// Its policy's version.
    pub version: i64,
    /// The canonical document.
    pub document: serde_json::Value,
    /// When it was set.
    pub updated_at: DateTime<Utc>,
}

/// `GET` answer.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Current {
    /// The endpoint.
    pub endpoint: String,
    /// Its policy's version.
    pub version: i64,
    /// The canonical document.
    pub document: serde_json::Value,
    /// The document as submitted.
    pub source: String,
    /// When it was set.
    pub updated_at: DateTime<Utc>,
}

fn check_content_type(headers: &HeaderMap) -> ApiResult<()> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let mime = value
        .to_str()
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if CONTENT_TYPES.contains(&mime.as_str()) {
        return Ok(());
    }
    Err(ApiError::UnsupportedMediaType(format!(
        "a policy is sent as YAML or JSON with Content-Type {}; got {mime:?}",
        CONTENT_TYPES.join(", ")
    )))
}

/// Parses a submitted document: its source text and canonical JSON.
fn parse_document(headers: &HeaderMap, body: &[u8]) -> ApiResult<(String, serde_json::Value)> {
    check_content_type(headers)?;
    if body.len() > MAX_POLICY_BYTES {
        return Err(ApiError::TooLarge(format!(
            "a policy document is at most {MAX_POLICY_BYTES} bytes; this one has {}",
            body.len()
        )));
    }
    let source = std::str::from_utf8(body).map_err(|e| ApiError::InvalidPolicy {
        message: format!("the document is not UTF-8 text: {e}"),
        field: String::new(),
        line: None,
    })?;
    let policy = burrow_policy::parse(source).map_err(|e| ApiError::InvalidPolicy {
        message: e.to_string(),
        field: e.field.clone(),
        line: e.line,
    })?;
    let canonical = policy.to_json();
    // Relays parse the canonical form, which can be longer than what was sent (bare IPs
    // become CIDRs, flow style becomes JSON): refuse what they could not take.
    if canonical.len() > burrow_policy::MAX_DOCUMENT_BYTES {
        return Err(ApiError::InvalidPolicy {
            message: format!(
                "the document is {} bytes once normalized to JSON, over the {} bytes relays \
                 accept; split it across endpoints or shorten its lists",
                canonical.len(),
                burrow_policy::MAX_DOCUMENT_BYTES
            ),
            field: String::new(),
            line: None,
        });
    }
    let document = serde_json::from_str(&canonical)
        .map_err(|e| ApiError::Internal(format!("policy JSON does not parse: {e}")))?;
    Ok((source.to_owned(), document))
}

/// Refuses an endpoint another account holds (reserved name or added domain).
async fn check_holder(
    tx: &mut sqlx::PgConnection,
    account_id: Uuid,
    endpoint: &str,
    kind: EndpointKind,
) -> ApiResult<()> {
    let (held, what) = match kind {
        EndpointKind::Label => (
            names::held_by_other(&mut *tx, endpoint, account_id).await?,
            "name is reserved",
        ),
        EndpointKind::Domain => (
            domains::held_by_other(&mut *tx, endpoint, account_id).await?,
            "domain is verified",
        ),
        EndpointKind::Tcp => (false, ""),
    };
    if held {
        return Err(ApiError::Conflict(format!(
            "the {what} by another account: this account cannot set a policy for {endpoint:?}"
        )));
    }
    Ok(())
}

/// Most endpoints of one account with a policy: every relay holds every policy in memory and
/// receives them all in one snapshot, so one account cannot grow that without bound.
pub const MAX_POLICIES_PER_ACCOUNT: i64 = 1000;

/// Refuses a new endpoint policy past [`MAX_POLICIES_PER_ACCOUNT`] (replacing one is fine).
async fn check_policy_count(
    tx: &mut sqlx::PgConnection,
    account_id: Uuid,
    endpoint: &str,
) -> ApiResult<()> {
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM endpoint_policies WHERE account_id = $1 AND endpoint <> $2",
    )
    .bind(account_id)
    .bind(endpoint)
    .fetch_one(&mut *tx)
    .await?;
    if others >= MAX_POLICIES_PER_ACCOUNT {
        return Err(ApiError::Forbidden(format!(
            "an account may hold traffic policies for at most {MAX_POLICIES_PER_ACCOUNT} \
             endpoints; this one has {others} (delete one first)"
        )));
    }
    Ok(())
}

async fn next_version(
    tx: &mut sqlx::PgConnection,
    account_id: Uuid,
    endpoint: &str,
) -> ApiResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(max(version), 0) + 1 FROM endpoint_policy_versions
         WHERE account_id = $1 AND endpoint = $2",
    )
    .bind(account_id)
    .bind(endpoint)
    .fetch_one(tx)
    .await?)
}

/// `PUT /v1/accounts/{id}/endpoints/{endpoint}/policy`.
#[utoipa::path(
    put,
    path = "/v1/accounts/{id}/endpoints/{endpoint}/policy",
    operation_id = "put_policy",
    tag = "policies",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id"), ("endpoint" = String, Path, description = "A label under the base domain (`demo`), a custom domain or `tcp-<port>`")),
    request_body(
        description = "The policy document as YAML or JSON text (at most 256 KiB).",
        content(
            (String = "application/yaml"),
            (String = "application/x-yaml"),
            (String = "text/yaml"),
            (String = "text/x-yaml"),
            (Object = "application/json"),
            (String = "text/plain"),
        )
    ),
    responses(
        (status = 200, description = "Stored as the endpoint's next version; relays get it over `RelayFeed`.", body = Stored),
        (status = 403, description = "Not admin or a developer key of this account; or a new endpoint past 1000 policies per account.", body = crate::error::ErrorBody),
        (status = 404, description = "No such account.", body = crate::error::ErrorBody),
        (status = 409, description = "Another account holds the endpoint's name or domain.", body = crate::error::ErrorBody),
        (status = 413, description = "The document is over 256 KiB.", body = crate::error::ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not one of the content types above.", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_policy` with `error.field` and `error.line`; or `invalid_endpoint`.", body = crate::error::ErrorBody),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    actor: Actor,
    Path((account_id, endpoint)): Path<(Uuid, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Stored>> {
    let mut detail = json!({ "account_id": account_id, "endpoint": endpoint });
    let stored = async {
        actor
            .principal
            .require_account(account_id, "setting this account's traffic policies")?;
        let (endpoint, kind) = check_endpoint(&endpoint, &state.config.base_domain)?;
        let (source, document) = parse_document(&headers, &body)?;
        let mut tx = state.db.begin().await?;
        // The account row lock serializes version numbering of its endpoints.
        plans::lock_account_plan(&mut tx, account_id).await?;
        check_holder(&mut tx, account_id, &endpoint, kind).await?;
        check_policy_count(&mut tx, account_id, &endpoint).await?;
        let version = next_version(&mut tx, account_id, &endpoint).await?;
        sqlx::query(
            "INSERT INTO endpoint_policy_versions
                 (account_id, endpoint, version, source, document, actor_key_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(account_id)
        .bind(&endpoint)
        .bind(version)
        .bind(&source)
        .bind(&document)
        .bind(actor.principal.key_id)
        .execute(&mut *tx)
        .await?;
        let updated_at: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO endpoint_policies (account_id, endpoint, version, source, document)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account_id, endpoint) DO UPDATE
                 SET version = EXCLUDED.version, source = EXCLUDED.source,
                     document = EXCLUDED.document, updated_at = now()
             RETURNING updated_at",
        )
        .bind(account_id)
        .bind(&endpoint)
        .bind(version)
        .bind(&source)
        .bind(&document)
        .fetch_one(&mut *tx)
        .await?;
        detail = json!({ "account_id": account_id, "endpoint": endpoint, "version": version });
        audit::commit(tx, &actor, "policy.put", Some(&endpoint), detail.clone()).await?;
        Ok(Stored {
            endpoint,
            version,
            document,
            updated_at,
        })
    }
    .await;
    let target = endpoint.clone();
    let stored = audit::or_failed(
        &state.db,
        &actor,
        "policy.put",
        Some(&target),
        detail,
        stored,
    )
    .await?;
    Ok(Json(stored))
}

/// `GET /v1/accounts/{id}/endpoints/{endpoint}/policy`.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/endpoints/{endpoint}/policy",
    operation_id = "get_policy",
    tag = "policies",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id"), ("endpoint" = String, Path, description = "A label under the base domain (`demo`), a custom domain or `tcp-<port>`")),
    responses(
        (status = 200, description = "The current policy: canonical JSON and the submitted text.", body = Current),
        (status = 403, description = "Not admin or a developer key of this account.", body = crate::error::ErrorBody),
        (status = 404, description = "The endpoint has no policy.", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_endpoint`.", body = crate::error::ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    actor: Actor,
    Path((account_id, endpoint)): Path<(Uuid, String)>,
) -> ApiResult<Json<Current>> {
    let allowed = actor
        .principal
        .require_account(account_id, "reading this account's traffic policies");
    audit::or_failed(
        &state.db,
        &actor,
        "policy.read",
        Some(&endpoint),
        json!({ "account_id": account_id }),
        allowed,
    )
    .await?;
    let (endpoint, _) = check_endpoint(&endpoint, &state.config.base_domain)?;
    let current = sqlx::query_as::<_, Current>(
        "SELECT endpoint, version, document, source, updated_at FROM endpoint_policies
         WHERE account_id = $1 AND endpoint = $2",
    )
    .bind(account_id)
    .bind(&endpoint)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| none(account_id, &endpoint))?;
    Ok(Json(current))
}

fn none(account_id: Uuid, endpoint: &str) -> ApiError {
    ApiError::NotFound(format!(
        "endpoint {endpoint:?} of account {account_id} has no traffic policy"
    ))
}

/// `DELETE /v1/accounts/{id}/endpoints/{endpoint}/policy`.
#[utoipa::path(
    delete,
    path = "/v1/accounts/{id}/endpoints/{endpoint}/policy",
    operation_id = "delete_policy",
    tag = "policies",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id"), ("endpoint" = String, Path, description = "A label under the base domain (`demo`), a custom domain or `tcp-<port>`")),
    responses(
        (status = 204, description = "Removed; relays stop applying it."),
        (status = 403, description = "Not admin or a developer key of this account.", body = crate::error::ErrorBody),
        (status = 404, description = "The endpoint has no policy.", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_endpoint`.", body = crate::error::ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    actor: Actor,
    Path((account_id, endpoint)): Path<(Uuid, String)>,
) -> ApiResult<StatusCode> {
    let mut detail = json!({ "account_id": account_id, "endpoint": endpoint });
    let deleted = async {
        actor
            .principal
            .require_account(account_id, "removing this account's traffic policies")?;
        let (endpoint, _) = check_endpoint(&endpoint, &state.config.base_domain)?;
        let mut tx = state.db.begin().await?;
        plans::lock_account_plan(&mut tx, account_id).await?;
        let gone =
            sqlx::query("DELETE FROM endpoint_policies WHERE account_id = $1 AND endpoint = $2")
                .bind(account_id)
                .bind(&endpoint)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if gone == 0 {
            return Err(none(account_id, &endpoint));
        }
        let version = next_version(&mut tx, account_id, &endpoint).await?;
        sqlx::query(
            "INSERT INTO endpoint_policy_versions (account_id, endpoint, version, actor_key_id)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(account_id)
        .bind(&endpoint)
        .bind(version)
        .bind(actor.principal.key_id)
        .execute(&mut *tx)
        .await?;
        detail = json!({ "account_id": account_id, "endpoint": endpoint, "version": version });
        audit::commit(tx, &actor, "policy.delete", Some(&endpoint), detail.clone()).await
    }
    .await;
    let target = endpoint.clone();
    audit::or_failed(
        &state.db,
        &actor,
        "policy.delete",
        Some(&target),
        detail,
        deleted,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_too_large_once_normalized_is_refused() {
        // 20 rules of 1000 bare IPs: about 245 KB as sent, over 256 KiB as canonical JSON
        // (each IP becomes a quoted "/32" CIDR), which relays would refuse to parse.
        let mut yaml = String::from("on_tcp_connect:\n");
        for r in 0..20 {
            let ips: Vec<String> = (0..1000)
                .map(|i| format!("10.{r}.{}.{}", i / 250, i % 250))
                .collect();
            yaml.push_str(&format!(
                "  - actions: [{{type: restrict-ips, config: {{allow: [{}]}}}}]\n",
                ips.join(", ")
            ));
        }
        assert!(yaml.len() < MAX_POLICY_BYTES, "{}", yaml.len());
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/yaml".parse().unwrap());
        match parse_document(&headers, yaml.as_bytes()) {
            Err(ApiError::InvalidPolicy { message, .. }) => {
                assert!(message.contains("once normalized"), "{message}")
            }
            other => panic!("expected invalid_policy, got {other:?}"),
        }
    }

    #[test]
    fn endpoints_are_labels_domains_or_tcp_ports() {
        let base = "burrow.localhost";
        let kind = |e: &str| check_endpoint(e, base).map(|(_, k)| k);
        assert_eq!(kind("demo").unwrap(), EndpointKind::Label);
        assert_eq!(kind("App.Example.com").unwrap(), EndpointKind::Domain);
        assert_eq!(
            check_endpoint("App.Example.com", base).unwrap().0,
            "app.example.com"
        );
        assert_eq!(kind("tcp-20001").unwrap(), EndpointKind::Tcp);
        for bad in [
            "Demo",
            "tcp-0",
            "tcp-65536",
            "tcp-007",
            "a_b",
            "x.burrow.localhost",
            "",
        ] {
            let e = kind(bad).unwrap_err();
            assert_eq!(audit::outcome_of(&e), "invalid_endpoint", "{bad}");
        }
    }

    #[test]
    fn content_types_are_yaml_json_or_text() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_ok());
        h.insert(header::CONTENT_TYPE, "application/yaml".parse().unwrap());
        assert!(check_content_type(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            "text/plain; charset=utf-8".parse().unwrap(),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert(header::CONTENT_TYPE, "image/png".parse().unwrap());
        assert_eq!(
            audit::outcome_of(&check_content_type(&h).unwrap_err()),
            "unsupported_media_type"
        );
    }

    #[test]
    fn a_refused_document_names_field_and_line() {
        let h = HeaderMap::new();
        match parse_document(&h, b"a: [1, 2\n") {
            Err(ApiError::InvalidPolicy { line, .. }) => assert!(line.is_some()),
            other => panic!("not refused: {other:?}"),
        }
    }
}
