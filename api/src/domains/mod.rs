//! Custom domains: hostnames an account brings (`app.example.com`), proven theirs with a DNS
//! TXT record before relays serve them. Tables `custom_domains` and `domain_events` (the outbox
//! the certificate workflow consumes), migration 0006.
//!
//! - `POST /v1/accounts/{id}/domains` `{"domain": "app.example.com"}` → 201 [`Domain`] with
//!   `status: "pending"` and the `txt_record` to publish; 422 `invalid_domain` (not a hostname,
//!   or under the relays' `base_domain`), 409 when anyone added it already, 403 past the plan's
//!   `max_custom_domains`.
//! - `POST /v1/accounts/{id}/domains/{domain}/verify`: looks up `_burrow-challenge.<domain>`
//!   TXT ([`dns`]); a record holding the token → 200 `verified`, with a `domain.verified`
//!   outbox row and the audit row in the same transaction; none → 422 `verification_failed`
//!   naming the record, the expected value and what was found; resolver down → 503.
//! - `GET /v1/accounts/{id}/domains` → `{"domains": [...]}`;
//!   `DELETE /v1/accounts/{id}/domains/{domain}` → 204 (a verified one also writes
//!   `domain.removed` to the outbox).
//!
//! Relays learn verified domains (and their removal) over `RelayFeed`.

pub mod dns;

use crate::extract::{Json, Path};
use crate::{
    AppState,
    audit::{self, Actor},
    error::{ApiError, ApiResult},
    plans,
};
use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// Where the verification record lives: `_burrow-challenge.<domain>`.
pub const CHALLENGE_LABEL: &str = "_burrow-challenge";

/// The TXT record to publish.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TxtRecord {
    /// `_burrow-challenge.<domain>`.
    pub name: String,
    /// The verification token.
    pub value: String,
}

/// A custom domain as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Domain {
    /// The hostname (lowercase, no final dot).
    pub domain: String,
    /// The account holding it.
    pub account_id: Uuid,
    /// `pending` or `verified`.
    pub status: String,
    /// What to publish to verify it.
    pub txt_record: TxtRecord,
    /// When it was verified.
    pub verified_at: Option<DateTime<Utc>>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    domain: String,
    account_id: Uuid,
    verification_token: String,
    status: String,
    verified_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

const COLUMNS: &str = "domain, account_id, verification_token, status, verified_at, created_at";

impl From<Row> for Domain {
    fn from(r: Row) -> Self {
        Domain {
            txt_record: TxtRecord {
                name: format!("{CHALLENGE_LABEL}.{}", r.domain),
                value: r.verification_token,
            },
            domain: r.domain,
            account_id: r.account_id,
            status: r.status,
            verified_at: r.verified_at,
            created_at: r.created_at,
        }
    }
}

/// `POST /v1/accounts/{id}/domains` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// The hostname.
    #[schema(min_length = 1, max_length = 253, example = "app.example.com")]
    pub domain: String,
}

/// `GET /v1/accounts/{id}/domains` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DomainList {
    /// Alphabetical.
    pub domains: Vec<Domain>,
}

fn invalid(message: String) -> ApiError {
    ApiError::Unprocessable {
        code: "invalid_domain",
        message,
    }
}

/// Checks a hostname and returns it lowercased without a final dot: at least two labels of
/// a-z, 0-9 and '-' (1 to 63, not starting or ending with '-'), at most 253 characters, a
/// top-level label that is not all digits (no IP addresses), and not `base_domain` or a name
/// under it (those are the relays' own names: reserve them with `reserved-names`).
pub fn normalize(input: &str, base_domain: &str) -> ApiResult<String> {
    let domain = input.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() || domain.len() > 253 {
        return Err(invalid(format!(
            "{input:?} is not a hostname: it must be 1 to 253 characters"
        )));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(invalid(format!(
            "{input:?} is not a hostname: it needs at least two labels, like app.example.com"
        )));
    }
    for label in &labels {
        if burrow_proto::tunnel::validate_label(label).is_err() {
            return Err(invalid(format!(
                "{input:?} is not a hostname: label {label:?} must be 1 to 63 of a-z, 0-9 and \
                 '-', not starting or ending with '-'"
            )));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(format!(
            "{input:?} is not a hostname (an IP address is not a custom domain)"
        )));
    }
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    if domain == base || domain.ends_with(&format!(".{base}")) {
        return Err(invalid(format!(
            "{domain:?} is under the relays' base domain {base:?}; reserve the name with \
             POST /v1/accounts/{{id}}/reserved-names instead"
        )));
    }
    Ok(domain)
}

fn new_token() -> String {
    format!("burrow-verify-{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Whether an account other than `account_id` holds `domain` verified.
pub async fn held_by_other(
    db: impl sqlx::PgExecutor<'_>,
    domain: &str,
    account_id: Uuid,
) -> ApiResult<bool> {
    Ok(sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM custom_domains
                        WHERE domain = $1 AND account_id <> $2 AND status = 'verified')",
    )
    .bind(domain)
    .bind(account_id)
    .fetch_one(db)
    .await?)
}

/// `POST /v1/accounts/{id}/domains`.
#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/domains",
    operation_id = "add_domain",
    tag = "domains",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    request_body = NewDomain,
    responses(
        (status = 201, description = "Added, `pending`: publish `txt_record`, then verify.", body = Domain),
        (status = 403, description = "Not admin or a developer key of this account; or past the plan's `max_custom_domains`.", body = crate::error::ErrorBody),
        (status = 404, description = "No such account.", body = crate::error::ErrorBody),
        (status = 409, description = "Someone added the domain already.", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_domain` (not a hostname, or under the relays' base domain).", body = crate::error::ErrorBody),
    )
)]
pub async fn add(
    State(state): State<AppState>,
    actor: Actor,
    Path(account_id): Path<Uuid>,
    Json(body): Json<NewDomain>,
) -> ApiResult<(StatusCode, Json<Domain>)> {
    let target = account_id.to_string();
    let detail = json!({ "account_id": account_id, "domain": body.domain });
    let created = async {
        actor
            .principal
            .require_account(account_id, "adding a domain to this account")?;
        let domain = normalize(&body.domain, &state.config.base_domain)?;
        let mut tx = state.db.begin().await?;
        let (plan, limits) = plans::lock_account_plan(&mut tx, account_id).await?;
        // Other accounts' pending claims do not count: whoever proves ownership first holds
        // the domain.
        let claims: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT account_id, status FROM custom_domains WHERE domain = $1")
                .bind(&domain)
                .fetch_all(&mut *tx)
                .await?;
        if claims.iter().any(|(a, _)| *a == account_id) {
            return Err(ApiError::Conflict(format!(
                "this account already added {domain:?}"
            )));
        }
        if claims.iter().any(|(_, status)| status == "verified") {
            return Err(taken(&domain));
        }
        if let Some(limit) = limits.max_custom_domains {
            let have: i64 =
                sqlx::query_scalar("SELECT count(*) FROM custom_domains WHERE account_id = $1")
                    .bind(account_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if have >= i64::from(limit) {
                return Err(plans::limit_reached(
                    &plan,
                    limit,
                    "custom domain",
                    have,
                    "remove one",
                ));
            }
        }
        let row = sqlx::query_as::<_, Row>(&format!(
            "INSERT INTO custom_domains (domain, account_id, verification_token)
             VALUES ($1, $2, $3) RETURNING {COLUMNS}"
        ))
        .bind(&domain)
        .bind(account_id)
        .bind(new_token())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => taken(&domain),
            _ => e.into(),
        })?;
        audit::commit(tx, &actor, "domain.add", Some(&domain), detail.clone()).await?;
        Ok(Domain::from(row))
    }
    .await;
    let domain = audit::or_failed(
        &state.db,
        &actor,
        "domain.add",
        Some(&target),
        detail,
        created,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(domain)))
}

fn taken(domain: &str) -> ApiError {
    ApiError::Conflict(format!(
        "the domain {domain:?} is verified for another account"
    ))
}

fn not_held(account_id: Uuid, domain: &str) -> ApiError {
    ApiError::NotFound(format!(
        "account {account_id} has not added the domain {domain:?}"
    ))
}

async fn fetch(db: &sqlx::PgPool, account_id: Uuid, domain: &str) -> ApiResult<Row> {
    sqlx::query_as::<_, Row>(&format!(
        "SELECT {COLUMNS} FROM custom_domains WHERE domain = $1 AND account_id = $2"
    ))
    .bind(domain)
    .bind(account_id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| not_held(account_id, domain))
}

/// `POST /v1/accounts/{id}/domains/{domain}/verify`.
#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/domains/{domain}/verify",
    operation_id = "verify_domain",
    tag = "domains",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id"), ("domain" = String, Path, description = "The hostname")),
    responses(
        (status = 200, description = "`verified`: relays serve it from now on.", body = Domain),
        (status = 403, description = "Not admin or a developer key of this account.", body = crate::error::ErrorBody),
        (status = 404, description = "The account has no such domain.", body = crate::error::ErrorBody),
        (status = 422, description = "`verification_failed`: names the record, the expected value and what was found.", body = crate::error::ErrorBody),
        (status = 503, description = "The DNS resolver is unreachable; retry.", body = crate::error::ErrorBody),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    actor: Actor,
    Path((account_id, domain)): Path<(Uuid, String)>,
) -> ApiResult<Json<Domain>> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let mut detail = json!({ "account_id": account_id });
    let verified = async {
        actor
            .principal
            .require_account(account_id, "verifying this account's domains")?;
        let row = fetch(&state.db, account_id, &domain).await?;
        if row.status == "verified" {
            return Ok(Domain::from(row));
        }
        let record = format!("{CHALLENGE_LABEL}.{domain}");
        let lookup = dns::Lookup::new(state.config.dns_resolver.parse().ok());
        let found = lookup
            .txt(&record)
            .await
            .map_err(|e| ApiError::Unavailable(format!("{e}; retry later")))?;
        let expected = &row.verification_token;
        match &found {
            dns::Txt::Found(values) if values.iter().any(|v| v == expected) => {}
            other => {
                let seen = match other {
                    dns::Txt::Found(values) => format!("found {values:?}"),
                    dns::Txt::None => "found no TXT record".to_owned(),
                };
                detail = json!({ "account_id": account_id, "seen": seen });
                return Err(ApiError::Unprocessable {
                    code: "verification_failed",
                    message: format!(
                        "TXT record {record} must hold {expected:?}; the resolver {} {seen} \
                         (DNS changes can take a while to appear; retry after publishing it)",
                        lookup.describe()
                    ),
                });
            }
        }
        let mut tx = state.db.begin().await?;
        let row = sqlx::query_as::<_, Row>(&format!(
            "UPDATE custom_domains SET status = 'verified', verified_at = now()
             WHERE domain = $1 AND account_id = $2 AND status = 'pending' RETURNING {COLUMNS}"
        ))
        .bind(&domain)
        .bind(account_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| match &e {
            // The unique index on verified domains: someone else proved it first.
            sqlx::Error::Database(d) if d.is_unique_violation() => taken(&domain),
            _ => e.into(),
        })?;
        let Some(row) = row else {
            // Verified (or removed) by a concurrent call meanwhile.
            tx.rollback().await?;
            return fetch(&state.db, account_id, &domain).await.map(Domain::from);
        };
        sqlx::query(
            "INSERT INTO domain_events (kind, domain, account_id) VALUES ('domain.verified', $1, $2)",
        )
        .bind(&domain)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        audit::commit(tx, &actor, "domain.verify", Some(&domain), detail.clone()).await?;
        Ok(Domain::from(row))
    }
    .await;
    let domain = audit::or_failed(
        &state.db,
        &actor,
        "domain.verify",
        Some(&domain),
        detail,
        verified,
    )
    .await?;
    Ok(Json(domain))
}

/// `GET /v1/accounts/{id}/domains`.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/domains",
    operation_id = "list_domains",
    tag = "domains",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account's domains, pending and verified.", body = DomainList),
        (status = 403, description = "Not admin or a developer key of this account.", body = crate::error::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Path(account_id): Path<Uuid>,
) -> ApiResult<Json<DomainList>> {
    let target = account_id.to_string();
    let allowed = actor
        .principal
        .require_account(account_id, "listing this account's domains");
    audit::or_failed(
        &state.db,
        &actor,
        "domain.list",
        Some(&target),
        json!({}),
        allowed,
    )
    .await?;
    let rows = sqlx::query_as::<_, Row>(&format!(
        "SELECT {COLUMNS} FROM custom_domains WHERE account_id = $1 ORDER BY domain"
    ))
    .bind(account_id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(DomainList {
        domains: rows.into_iter().map(Domain::from).collect(),
    }))
}

/// `DELETE /v1/accounts/{id}/domains/{domain}`.
#[utoipa::path(
    delete,
    path = "/v1/accounts/{id}/domains/{domain}",
    operation_id = "remove_domain",
    tag = "domains",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id"), ("domain" = String, Path, description = "The hostname")),
    responses(
        (status = 204, description = "Removed."),
        (status = 403, description = "Not admin or a developer key of this account.", body = crate::error::ErrorBody),
        (status = 404, description = "The account has no such domain.", body = crate::error::ErrorBody),
    )
)]
pub async fn remove(
    State(state): State<AppState>,
    actor: Actor,
    Path((account_id, domain)): Path<(Uuid, String)>,
) -> ApiResult<StatusCode> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let detail = json!({ "account_id": account_id });
    let removed = async {
        actor
            .principal
            .require_account(account_id, "removing this account's domains")?;
        let mut tx = state.db.begin().await?;
        let status: String = sqlx::query_scalar(
            "DELETE FROM custom_domains WHERE domain = $1 AND account_id = $2 RETURNING status",
        )
        .bind(&domain)
        .bind(account_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_held(account_id, &domain))?;
        if status == "verified" {
            sqlx::query(
                "INSERT INTO domain_events (kind, domain, account_id)
                 VALUES ('domain.removed', $1, $2)",
            )
            .bind(&domain)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        }
        audit::commit(tx, &actor, "domain.remove", Some(&domain), detail.clone()).await
    }
    .await;
    audit::or_failed(
        &state.db,
        &actor,
        "domain.remove",
        Some(&domain),
        detail,
        removed,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_normalized_and_checked() {
        let base = "burrow.localhost";
        assert_eq!(
            normalize("App.Example.COM.", base).unwrap(),
            "app.example.com"
        );
        for bad in [
            "",
            "localhost",
            "a..b",
            "-a.example.com",
            "a_b.example.com",
            "10.0.0.1",
            "*.example.com",
            "demo.burrow.localhost",
            "burrow.localhost",
        ] {
            let e = normalize(bad, base).unwrap_err();
            assert_eq!(audit::outcome_of(&e), "invalid_domain", "{bad}");
        }
        let long = format!("{}.com", vec!["a".repeat(63); 4].join("."));
        assert!(normalize(&long, base).is_err());
    }

    #[test]
    fn the_txt_record_is_under_the_challenge_label() {
        let token = new_token();
        assert!(token.starts_with("burrow-verify-") && token.len() == 14 + 32);
        assert_ne!(token, new_token());
    }

    proptest::proptest! {
        /// Whatever is submitted, an accepted domain is already normal (normalizing it again
        /// changes nothing), is a valid endpoint of kind `Domain`, and is never the base domain
        /// or under it.
        #[test]
        fn accepted_domains_are_normal_and_outside_the_base(
            labels in proptest::collection::vec("[a-zA-Z0-9_-]{0,12}", 1..5),
            base in "(burrow\\.localhost|example\\.net)",
            under_it in proptest::bool::ANY,
            final_dot in proptest::bool::ANY,
        ) {
            let mut input = labels.join(".");
            if under_it {
                input = format!("{input}.{}", base.to_uppercase());
            }
            if final_dot {
                input.push('.');
            }
            if let Ok(d) = normalize(&input, &base) {
                proptest::prop_assert_eq!(normalize(&d, &base).unwrap(), d.clone());
                let under_base = d == base || d.ends_with(&format!(".{base}"));
                proptest::prop_assert!(!under_base, "{} is under {}", d, base);
                proptest::prop_assert!(d.len() <= 253 && d.contains('.'));
                let (e, kind) = crate::policies::check_endpoint(&d, &base).unwrap();
                proptest::prop_assert_eq!(e, d);
                proptest::prop_assert_eq!(kind, crate::policies::EndpointKind::Domain);
            }
        }
    }
}
