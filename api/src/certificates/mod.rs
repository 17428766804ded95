//! Certificates of custom domains, as the worker's certificate workflows issue and distribute
//! them (tables of migration 0009), and the api's part in their lifecycle:
//! - [`outbox`]: starting and stopping `certificate-<domain>` runs from `domain_events`;
//! - [`callbacks`]: signed callbacks (`POST /v1/cert-callbacks`) signalled to the runs;
//! - `GET /v1/certificates`: per domain the latest version, serial, validity, the run's state
//!   and what each relay serves (ops and admin: every domain; developers: their account's
//!   verified domains);
//! - `GET /v1/certificates/{domain}`: every version, replicas per relay and their drift;
//! - `POST /v1/certificates/{domain}/renew`: ask the run to renew now (ops, or a developer
//!   of the account holding the domain);
//! - `GET /v1/ops/regions` (ops): each region's latest replication snapshot and its drift.
//!
//! Private keys never leave the database through the api: no answer reads `key_encrypted`
//! (nor the chain, which carries nothing a listing needs).

pub mod callbacks;
pub mod outbox;

use crate::extract::{Json, Path};
use crate::{
    AppState,
    audit::{self, Actor},
    auth::{Principal, Role},
    error::{ApiError, ApiResult},
};
use axum::{extract::State, http::StatusCode};
use burrow_workflows::{certificate, kinds};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// A certificate version (never its key or chain).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CertVersion {
    /// Version, from 1.
    pub version: i64,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// RFC 9773 certificate identifier, when the CA supports ARI.
    pub ari_id: Option<String>,
    /// Valid from.
    pub not_before: DateTime<Utc>,
    /// Valid until.
    pub not_after: DateTime<Utc>,
    /// When it was stored.
    pub issued_at: DateTime<Utc>,
    /// The version it renewed.
    pub renewed_version: Option<i64>,
}

/// What one relay serves for a domain.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Replica {
    /// Relay id.
    pub relay_id: String,
    /// Its region.
    pub region: String,
    /// Version it reported serving.
    pub version: i64,
    /// When it reported it.
    pub reported_at: DateTime<Utc>,
    /// Whether it serves the latest version.
    #[sqlx(skip)]
    pub current: bool,
}

/// The certificate workflow of a domain, from `workflow_runs`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CertWorkflow {
    /// `certificate-<domain>`.
    pub workflow_id: String,
    /// Its state (`serving`, `retry_wait`, a failure state, ...).
    pub state: String,
    /// Whether it is parked in a failure state (replayable).
    #[sqlx(skip)]
    pub parked: bool,
    /// Last error.
    pub last_error: Option<String>,
    /// Attempts of the current step.
    pub attempts: i32,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A domain's certificate as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateSummary {
    /// The custom domain.
    pub domain: String,
    /// The latest version issued, if any.
    pub latest: Option<CertVersion>,
    /// Its certificate workflow, if one ever ran.
    pub workflow: Option<CertWorkflow>,
    /// What each relay serves.
    pub replicas: Vec<Replica>,
}

/// `GET /v1/certificates` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateList {
    /// Alphabetical by domain.
    pub certificates: Vec<CertificateSummary>,
}

/// `GET /v1/certificates/{domain}` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CertificateDetail {
    /// The custom domain.
    pub domain: String,
    /// Every version, newest first.
    pub versions: Vec<CertVersion>,
    /// Its certificate workflow, if one ever ran.
    pub workflow: Option<CertWorkflow>,
    /// What each relay serves.
    pub replicas: Vec<Replica>,
    /// Relays not serving the latest version.
    pub drift: Vec<Replica>,
}

const VERSION_COLUMNS: &str =
    "version, serial, ari_id, not_before, not_after, issued_at, renewed_version";

/// The domains `principal` may see: every domain that is verified, has a certificate or a
/// certificate run (ops, admin), or its account's verified domains (developer).
async fn visible_domains(state: &AppState, principal: &Principal) -> ApiResult<Vec<String>> {
    let domains =
        match principal.role {
            Role::Developer => sqlx::query_scalar(
                "SELECT domain FROM custom_domains WHERE account_id = $1 AND status = 'verified'
                 ORDER BY domain",
            )
            .bind(principal.account_id)
            .fetch_all(&state.db)
            .await?,
            _ => {
                sqlx::query_scalar(
                    "SELECT domain FROM custom_domains WHERE status = 'verified'
                 UNION SELECT domain FROM certificates
                 UNION SELECT subject FROM workflow_runs WHERE kind = $1
                 ORDER BY 1",
                )
                .bind(certificate::KIND)
                .fetch_all(&state.db)
                .await?
            }
        };
    Ok(domains)
}

fn require_reader(principal: &Principal) -> ApiResult<()> {
    principal.require(&[Role::Ops, Role::Developer], "reading certificates")?;
    if principal.role == Role::Developer && principal.account_id.is_none() {
        return Err(ApiError::Forbidden(
            "this developer key belongs to no account".into(),
        ));
    }
    Ok(())
}

/// `GET /v1/certificates`.
#[utoipa::path(
    get,
    path = "/v1/certificates",
    operation_id = "list_certificates",
    tag = "certificates",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Per domain: latest version, workflow state and replicas. No key material.", body = CertificateList),
        (status = 403, description = "Not an ops, admin or developer key.", body = crate::error::ErrorBody),
    )
)]
pub async fn list(State(state): State<AppState>, actor: Actor) -> ApiResult<Json<CertificateList>> {
    let read = async {
        require_reader(&actor.principal)?;
        let domains = visible_domains(&state, &actor.principal).await?;
        let mut latest: HashMap<String, CertVersion> =
            sqlx::query_as::<_, CertVersionRow>(&format!(
                "SELECT DISTINCT ON (domain) domain, {VERSION_COLUMNS} FROM certificates
                 WHERE domain = ANY($1) ORDER BY domain, version DESC"
            ))
            .bind(&domains)
            .fetch_all(&state.db)
            .await?
            .into_iter()
            .map(|r| (r.domain, r.version))
            .collect();
        let mut workflows = workflows_of(&state, &domains).await?;
        let mut replicas = replicas_of(&state, &domains).await?;
        let certificates = domains
            .into_iter()
            .map(|domain| {
                let latest = latest.remove(&domain);
                let mut reps = replicas.remove(&domain).unwrap_or_default();
                mark_current(&mut reps, latest.as_ref().map(|v| v.version));
                CertificateSummary {
                    workflow: workflows.remove(&domain),
                    replicas: reps,
                    latest,
                    domain,
                }
            })
            .collect();
        Ok(CertificateList { certificates })
    };
    let list = audit::read(&state.db, &actor, "certificate.list", None, json!({}), read).await?;
    Ok(Json(list))
}

#[derive(sqlx::FromRow)]
struct CertVersionRow {
    domain: String,
    #[sqlx(flatten)]
    version: CertVersion,
}

async fn workflows_of(
    state: &AppState,
    domains: &[String],
) -> ApiResult<HashMap<String, CertWorkflow>> {
    let ids: Vec<String> = domains
        .iter()
        .map(|d| certificate::workflow_id(d))
        .collect();
    let rows: Vec<CertWorkflow> = sqlx::query_as(
        "SELECT workflow_id, state, last_error, attempts, updated_at FROM workflow_runs
         WHERE workflow_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&state.db)
    .await?;
    let by_id: HashMap<String, CertWorkflow> = rows
        .into_iter()
        .map(|mut w| {
            w.parked = kinds::is_failure_state(certificate::KIND, &w.state);
            (w.workflow_id.clone(), w)
        })
        .collect();
    Ok(domains
        .iter()
        .filter_map(|d| {
            by_id
                .get(&certificate::workflow_id(d))
                .map(|w| (d.clone(), w.clone()))
        })
        .collect())
}

async fn replicas_of(
    state: &AppState,
    domains: &[String],
) -> ApiResult<HashMap<String, Vec<Replica>>> {
    let rows: Vec<(String, String, String, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT domain, relay_id, region, version, reported_at FROM cert_replicas
         WHERE domain = ANY($1) ORDER BY domain, region, relay_id",
    )
    .bind(domains)
    .fetch_all(&state.db)
    .await?;
    let mut out: HashMap<String, Vec<Replica>> = HashMap::new();
    for (domain, relay_id, region, version, reported_at) in rows {
        out.entry(domain).or_default().push(Replica {
            relay_id,
            region,
            version,
            reported_at,
            current: false,
        });
    }
    Ok(out)
}

fn mark_current(replicas: &mut [Replica], latest: Option<i64>) {
    for r in replicas {
        r.current = latest.is_some_and(|v| r.version >= v);
    }
}

/// Checks `principal` may see `domain` (normalized) and that it is a certificate domain.
async fn visible_domain(
    state: &AppState,
    principal: &Principal,
    domain: &str,
) -> ApiResult<String> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let known: bool = match principal.role {
        Role::Developer => {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM custom_domains
                                WHERE domain = $1 AND account_id = $2 AND status = 'verified')",
            )
            .bind(&domain)
            .bind(principal.account_id)
            .fetch_one(&state.db)
            .await?
        }
        _ => sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM custom_domains WHERE domain = $1 AND status = 'verified')
                     OR EXISTS (SELECT 1 FROM certificates WHERE domain = $1)
                     OR EXISTS (SELECT 1 FROM workflow_runs WHERE workflow_id = $2)",
        )
        .bind(&domain)
        .bind(certificate::workflow_id(&domain))
        .fetch_one(&state.db)
        .await?,
    };
    if !known {
        return Err(ApiError::NotFound(match principal.role {
            Role::Developer => {
                format!("{domain:?} is not a verified custom domain of this key's account")
            }
            _ => {
                format!("no certificate, certificate workflow or verified custom domain {domain:?}")
            }
        }));
    }
    Ok(domain)
}

/// `GET /v1/certificates/{domain}`.
#[utoipa::path(
    get,
    path = "/v1/certificates/{domain}",
    operation_id = "get_certificate",
    tag = "certificates",
    security(("api_key" = [])),
    params(("domain" = String, Path, description = "The custom domain")),
    responses(
        (status = 200, description = "Versions (no key material), replicas and drift.", body = CertificateDetail),
        (status = 403, description = "Not an ops, admin or developer key.", body = crate::error::ErrorBody),
        (status = 404, description = "Not a certificate domain (for developers: not a verified domain of their account).", body = crate::error::ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    actor: Actor,
    Path(domain): Path<String>,
) -> ApiResult<Json<CertificateDetail>> {
    let target = domain.clone();
    let read = async {
        require_reader(&actor.principal)?;
        let domain = visible_domain(&state, &actor.principal, &domain).await?;
        let versions: Vec<CertVersion> = sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS} FROM certificates WHERE domain = $1 ORDER BY version DESC"
        ))
        .bind(&domain)
        .fetch_all(&state.db)
        .await?;
        let one = std::slice::from_ref(&domain);
        let workflow = workflows_of(&state, one).await?.remove(&domain);
        let mut replicas = replicas_of(&state, one)
            .await?
            .remove(&domain)
            .unwrap_or_default();
        mark_current(&mut replicas, versions.first().map(|v| v.version));
        let drift = replicas.iter().filter(|r| !r.current).cloned().collect();
        Ok(CertificateDetail {
            domain,
            versions,
            workflow,
            replicas,
            drift,
        })
    };
    let detail = audit::read(
        &state.db,
        &actor,
        "certificate.read",
        Some(&target),
        json!({}),
        read,
    )
    .await?;
    Ok(Json(detail))
}

/// `POST /v1/certificates/{domain}/renew` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RenewRequested {
    /// The domain.
    pub domain: String,
    /// Its certificate workflow.
    pub workflow_id: String,
    /// `certificate.renewal_requested`.
    pub event_type: String,
}

/// Event type a renewal request signals.
pub const RENEWAL_REQUESTED: &str = "certificate.renewal_requested";

/// `POST /v1/certificates/{domain}/renew`: ask the domain's run to renew now.
#[utoipa::path(
    post,
    path = "/v1/certificates/{domain}/renew",
    operation_id = "renew_certificate",
    tag = "certificates",
    security(("api_key" = [])),
    params(("domain" = String, Path, description = "The custom domain")),
    responses(
        (status = 202, description = "Signalled; the run orders a new certificate.", body = RenewRequested),
        (status = 403, description = "Not an ops or admin key, nor a developer key of the domain's account.", body = crate::error::ErrorBody),
        (status = 404, description = "Not a certificate domain (for developers: not a verified domain of their account).", body = crate::error::ErrorBody),
        (status = 409, description = "No certificate workflow is running for the domain, and it is not a verified domain a run could be started for (or `acme_enabled` is off).", body = crate::error::ErrorBody),
    )
)]
pub async fn renew(
    State(state): State<AppState>,
    actor: Actor,
    Path(domain): Path<String>,
) -> ApiResult<(StatusCode, Json<RenewRequested>)> {
    let target = domain.clone();
    let result = async {
        actor
            .principal
            .require(&[Role::Ops, Role::Developer], "renewing a certificate")?;
        let domain = visible_domain(&state, &actor.principal, &domain).await?;
        let workflow_id = certificate::workflow_id(&domain);
        // Each request is its own event (the run ignores an id it has seen).
        let event = certificate::CertEvent {
            callback_id: format!("api:{}:{}", actor.principal.key_id, uuid::Uuid::new_v4()),
            event_type: RENEWAL_REQUESTED.to_owned(),
        };
        let verified: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM custom_domains WHERE domain = $1 AND status = 'verified')",
        )
        .bind(&domain)
        .fetch_one(&state.db)
        .await?;
        let signalled = async {
            if verified && state.config.acme_enabled {
                // A verified domain whose run is gone (terminated by an operator, say) gets
                // one again, seeing this request first.
                let input = state
                    .config
                    .certificate_input(&domain)
                    .map_err(ApiError::Internal)?;
                state
                    .temporal
                    .certificate_event_or_start(&workflow_id, input, event)
                    .await
                    .map(|()| true)
            } else {
                state.temporal.certificate_event(&workflow_id, event).await
            }
        };
        let open = tokio::time::timeout(Duration::from_secs(5), signalled)
            .await
            .map_err(|_| ApiError::Unavailable("Temporal did not answer in time".into()))??;
        if !open {
            return Err(ApiError::Conflict(format!(
                "no certificate workflow is running for {domain} (workflow {workflow_id}); it \
                 starts once the domain is verified and `acme_enabled` is on"
            )));
        }
        Ok(RenewRequested {
            domain,
            workflow_id,
            event_type: RENEWAL_REQUESTED.to_owned(),
        })
    }
    .await;
    let requested = match result {
        Ok(r) => r,
        Err(e) => {
            let t = Some(target.as_str());
            return Err(
                audit::failed(&state.db, &actor, "certificate.renew", t, json!({}), e).await,
            );
        }
    };
    audit::record(
        &state.db,
        &actor,
        "certificate.renew",
        Some(&requested.domain),
        "ok",
        json!({ "workflow_id": requested.workflow_id }),
    )
    .await
    .map_err(|_| audit::unaudited(&format!("renewal of {} was requested", requested.domain)))?;
    Ok((StatusCode::ACCEPTED, Json(requested)))
}

/// A region's latest replication snapshot.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RegionSnapshot {
    /// Region label.
    pub region: String,
    /// Relays in it when the snapshot was taken.
    pub relays: i32,
    /// Per domain, the lowest version any of its relays serves.
    #[schema(value_type = Object)]
    pub certificates: Value,
    /// Domains whose region version lags the latest issued one.
    #[schema(value_type = Object)]
    pub drift: Value,
    /// Whether `drift` lists anything.
    #[sqlx(skip)]
    pub drifted: bool,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

/// `GET /v1/ops/regions` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegionList {
    /// Alphabetical.
    pub regions: Vec<RegionSnapshot>,
    /// Whether any region drifts.
    pub drifted: bool,
}

fn is_drift(drift: &Value) -> bool {
    match drift {
        Value::Null => false,
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// `GET /v1/ops/regions` (ops): each region's latest snapshot.
#[utoipa::path(
    get,
    path = "/v1/ops/regions",
    operation_id = "list_regions",
    tag = "certificates",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Latest snapshot per region, with drift.", body = RegionList),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
    )
)]
pub async fn regions(State(state): State<AppState>, actor: Actor) -> ApiResult<Json<RegionList>> {
    if let Err(e) = actor.principal.require(&[Role::Ops], "listing regions") {
        return Err(audit::failed(&state.db, &actor, "region.list", None, json!({}), e).await);
    }
    let mut regions: Vec<RegionSnapshot> = sqlx::query_as(
        "SELECT DISTINCT ON (region) region, relays, certificates, drift, taken_at
         FROM region_snapshots ORDER BY region, taken_at DESC, id DESC",
    )
    .fetch_all(&state.db)
    .await?;
    for r in &mut regions {
        r.drifted = is_drift(&r.drift);
    }
    let drifted = regions.iter().any(|r| r.drifted);
    Ok(Json(RegionList { regions, drifted }))
}

#[cfg(test)]
mod tests;
