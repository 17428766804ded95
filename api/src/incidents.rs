//! Incidents (ops or admin): opened, escalated and auto-resolved by workflows entering and
//! leaving failure states (the worker's incident activities, actor `workflow`), acknowledged and
//! resolved by people here.
//!
//! - `GET /v1/incidents?status=open|acknowledged|resolved&limit=`: newest first.
//! - `GET /v1/incidents/{id}`: one, with its `timeline` (`incident_events`, oldest first).
//! - `POST /v1/incidents/{id}/acknowledge`: `open` → `acknowledged`; any other status → 409
//!   naming it.
//! - `POST /v1/incidents/{id}/resolve` `{"note": "..."}` (optional): `open` or `acknowledged`
//!   → `resolved`; already resolved → 409.
//!
//! Both changes add a timeline row whose actor is the API key id, and are [`audit`]ed in the
//! same transaction (`incident.acknowledge`, `incident.resolve`). Reads are not recorded (the
//! console polls them; they hold workflow state), refusals are.

use crate::extract::{Json, Path, Query};
use crate::{
    AppState,
    audit::{self, Actor},
    auth::Role,
    error::{ApiError, ApiResult},
};
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// Statuses of an incident.
pub const STATUSES: &[&str] = &["open", "acknowledged", "resolved"];

/// An incident.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Incident {
    /// Id.
    pub id: Uuid,
    /// The workflow that failed.
    pub workflow_id: String,
    /// Its kind (`certificate`, ...).
    pub kind: String,
    /// What it is about (the domain of a certificate run).
    pub subject: String,
    /// The failure state that opened it (or the latest one).
    pub failure_state: String,
    /// `sev1`, `sev2` or `sev3`.
    pub tier: String,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    /// Hostnames affected.
    pub hostnames: i32,
    /// Expiry of the certificate being served, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// What happened.
    pub summary: String,
    /// Opened.
    pub opened_at: DateTime<Utc>,
    /// Acknowledged.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Acknowledging API key id.
    pub acknowledged_by: Option<String>,
    /// Resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Resolving API key id, or `workflow` (auto-resolved).
    pub resolved_by: Option<String>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A timeline entry.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct IncidentEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// `opened`, `escalated`, `state_changed`, `acknowledged`, `resolved`, `auto_resolved`,
    /// `note`.
    pub event: String,
    /// Details.
    pub detail: String,
    /// API key id, or `workflow`.
    pub actor: String,
}

/// `GET /v1/incidents/{id}` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentDetail {
    /// The incident.
    #[serde(flatten)]
    pub incident: Incident,
    /// Oldest first.
    pub timeline: Vec<IncidentEvent>,
}

/// `GET /v1/incidents` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentList {
    /// Newest first.
    pub incidents: Vec<Incident>,
}

const COLUMNS: &str = "id, workflow_id, kind, subject, failure_state, tier, status, hostnames, \
                       expires_at, summary, opened_at, acknowledged_at, acknowledged_by, \
                       resolved_at, resolved_by, updated_at";

/// Filters of `GET /v1/incidents`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IncidentFilter {
    /// Only this status: `open`, `acknowledged`, `resolved`.
    pub status: Option<String>,
    /// At most this many (default 100, max 1000).
    pub limit: Option<i64>,
}

/// `GET /v1/incidents`.
#[utoipa::path(
    get,
    path = "/v1/incidents",
    operation_id = "list_incidents",
    tag = "incidents",
    security(("api_key" = [])),
    params(IncidentFilter),
    responses(
        (status = 200, description = "Incidents, newest first.", body = IncidentList),
        (status = 400, description = "`invalid_status`, `invalid_query`.", body = crate::error::ErrorBody),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Query(filter): Query<IncidentFilter>,
) -> ApiResult<Json<IncidentList>> {
    let result = async {
        actor.principal.require(&[Role::Ops], "listing incidents")?;
        if let Some(s) = &filter.status
            && !STATUSES.contains(&s.as_str())
        {
            return Err(ApiError::bad_request(
                "invalid_status",
                format!("`status` {s:?} is not one of {}", STATUSES.join(", ")),
            ));
        }
        let incidents = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM incidents WHERE ($1::text IS NULL OR status = $1)
             ORDER BY opened_at DESC, id LIMIT $2"
        ))
        .bind(&filter.status)
        .bind(filter.limit.unwrap_or(100).clamp(1, 1000))
        .fetch_all(&state.db)
        .await?;
        Ok(IncidentList { incidents })
    }
    .await;
    let detail = json!({ "status": filter.status });
    let list = audit::or_failed(&state.db, &actor, "incident.list", None, detail, result).await?;
    Ok(Json(list))
}

async fn fetch<'e>(db: impl sqlx::PgExecutor<'e>, id: Uuid, lock: bool) -> ApiResult<Incident> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM incidents WHERE id = $1{lock}"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no incident {id}")))
}

async fn detail_of(state: &AppState, id: Uuid) -> ApiResult<IncidentDetail> {
    let incident = fetch(&state.db, id, false).await?;
    let timeline = sqlx::query_as(
        "SELECT at, event, detail, actor FROM incident_events WHERE incident_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    Ok(IncidentDetail { incident, timeline })
}

/// `GET /v1/incidents/{id}`.
#[utoipa::path(
    get,
    path = "/v1/incidents/{id}",
    operation_id = "get_incident",
    tag = "incidents",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Incident id")),
    responses(
        (status = 200, description = "The incident and its timeline.", body = IncidentDetail),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
        (status = 404, description = "No such incident.", body = crate::error::ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<IncidentDetail>> {
    let result = async {
        actor.principal.require(&[Role::Ops], "reading incidents")?;
        detail_of(&state, id).await
    }
    .await;
    let target = id.to_string();
    let detail = audit::or_failed(
        &state.db,
        &actor,
        "incident.read",
        Some(&target),
        json!({}),
        result,
    )
    .await?;
    Ok(Json(detail))
}

/// `POST /v1/incidents/{id}/acknowledge`.
#[utoipa::path(
    post,
    path = "/v1/incidents/{id}/acknowledge",
    operation_id = "acknowledge_incident",
    tag = "incidents",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Incident id")),
    responses(
        (status = 200, description = "Acknowledged.", body = IncidentDetail),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
        (status = 404, description = "No such incident.", body = crate::error::ErrorBody),
        (status = 409, description = "The incident is not open (the message names its status).", body = crate::error::ErrorBody),
    )
)]
pub async fn acknowledge(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<IncidentDetail>> {
    let target = id.to_string();
    let changed = async {
        actor
            .principal
            .require(&[Role::Ops], "acknowledging an incident")?;
        let mut tx = state.db.begin().await?;
        let current = fetch(&mut *tx, id, true).await?;
        if current.status != "open" {
            return Err(ApiError::Conflict(format!(
                "incident {id} is {}, not open; only an open incident can be acknowledged",
                current.status
            )));
        }
        let by = actor.principal.key_id.to_string();
        sqlx::query(
            "UPDATE incidents SET status = 'acknowledged', acknowledged_at = now(),
                 acknowledged_by = $2, updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(&by)
        .execute(&mut *tx)
        .await?;
        timeline(&mut tx, id, "acknowledged", "", &by).await?;
        let detail = json!({ "from": current.status, "workflow_id": current.workflow_id });
        audit::commit(tx, &actor, "incident.acknowledge", Some(&target), detail).await
    }
    .await;
    let action = "incident.acknowledge";
    audit::or_failed(&state.db, &actor, action, Some(&target), json!({}), changed).await?;
    Ok(Json(detail_of(&state, id).await?))
}

/// `POST /v1/incidents/{id}/resolve` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    /// What was done, for the timeline.
    #[schema(max_length = 2000)]
    pub note: Option<String>,
}

/// `POST /v1/incidents/{id}/resolve`.
#[utoipa::path(
    post,
    path = "/v1/incidents/{id}/resolve",
    operation_id = "resolve_incident",
    tag = "incidents",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Incident id")),
    request_body(content = Option<Resolve>, description = "Optional note."),
    responses(
        (status = 200, description = "Resolved.", body = IncidentDetail),
        (status = 400, description = "`invalid_note`: longer than 2000 characters or holding a NUL.", body = crate::error::ErrorBody),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
        (status = 404, description = "No such incident.", body = crate::error::ErrorBody),
        (status = 409, description = "Already resolved.", body = crate::error::ErrorBody),
    )
)]
pub async fn resolve(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    body: Option<Json<Resolve>>,
) -> ApiResult<Json<IncidentDetail>> {
    let note = body.and_then(|b| b.0.note).unwrap_or_default();
    let target = id.to_string();
    let changed = async {
        actor
            .principal
            .require(&[Role::Ops], "resolving an incident")?;
        if note.chars().count() > 2000 || note.contains('\0') {
            return Err(ApiError::bad_request(
                "invalid_note",
                "`note` must be at most 2000 characters, without NUL",
            ));
        }
        let mut tx = state.db.begin().await?;
        let current = fetch(&mut *tx, id, true).await?;
        if current.status == "resolved" {
            return Err(ApiError::Conflict(format!(
                "incident {id} is already resolved (by {})",
                current.resolved_by.as_deref().unwrap_or("unknown")
            )));
        }
        let by = actor.principal.key_id.to_string();
        sqlx::query(
            "UPDATE incidents SET status = 'resolved', resolved_at = now(), resolved_by = $2,
                 updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(&by)
        .execute(&mut *tx)
        .await?;
        timeline(&mut tx, id, "resolved", note.trim(), &by).await?;
        let detail = json!({ "from": current.status, "workflow_id": current.workflow_id });
        audit::commit(tx, &actor, "incident.resolve", Some(&target), detail).await
    }
    .await;
    let action = "incident.resolve";
    audit::or_failed(&state.db, &actor, action, Some(&target), json!({}), changed).await?;
    Ok(Json(detail_of(&state, id).await?))
}

async fn timeline(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
    event: &str,
    detail: &str,
    actor: &str,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO incident_events (incident_id, event, detail, actor) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(event)
    .bind(detail)
    .bind(actor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{MustFail, TestDb, status_of};

    async fn incident(db: &TestDb, status: &str) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO incidents (id, workflow_id, kind, subject, failure_state, tier, status,
                 summary)
             VALUES ($1, $2, 'certificate', 'a.example.com', 'ca_unreachable', 'sev2', $3, 'CA down')",
        )
        .bind(id)
        .bind(format!("certificate-{id}"))
        .bind(status)
        .execute(&db.state.db)
        .await
        .expect("incident");
        sqlx::query(
            "INSERT INTO incident_events (incident_id, event, detail, actor)
             VALUES ($1, 'opened', 'ca_unreachable', 'workflow')",
        )
        .bind(id)
        .execute(&db.state.db)
        .await
        .expect("event");
        id
    }

    #[tokio::test]
    async fn acknowledge_then_resolve_with_409s_naming_the_status() {
        let db = TestDb::new().await;
        let ops = db.actor(Role::Ops, None).await;
        let id = incident(&db, "open").await;
        let st = || State(db.state.clone());

        let Json(acked) = acknowledge(st(), ops.clone(), Path(id)).await.expect("ack");
        assert_eq!(acked.incident.status, "acknowledged");
        let key = ops.principal.key_id.to_string();
        assert_eq!(
            acked.incident.acknowledged_by.as_deref(),
            Some(key.as_str())
        );
        let e = acknowledge(st(), ops.clone(), Path(id))
            .await
            .must_fail("twice");
        assert_eq!(status_of(&e), 409);
        assert!(e.to_string().contains("is acknowledged, not open"), "{e}");

        let note = Json(Resolve {
            note: Some("  rotated the CA account  ".into()),
        });
        let Json(done) = resolve(st(), ops.clone(), Path(id), Some(note))
            .await
            .expect("resolve");
        assert_eq!(done.incident.status, "resolved");
        let timeline: Vec<(&str, &str, &str)> = done
            .timeline
            .iter()
            .map(|e| (e.event.as_str(), e.detail.as_str(), e.actor.as_str()))
            .collect();
        assert_eq!(
            timeline,
            [
                ("opened", "ca_unreachable", "workflow"),
                ("acknowledged", "", key.as_str()),
                ("resolved", "rotated the CA account", key.as_str()),
            ]
        );
        let e = resolve(st(), ops.clone(), Path(id), None)
            .await
            .must_fail("twice");
        assert_eq!(status_of(&e), 409);
        assert!(e.to_string().contains("already resolved"), "{e}");
        let e = acknowledge(st(), ops.clone(), Path(id))
            .await
            .must_fail("resolved");
        assert!(e.to_string().contains("is resolved, not open"), "{e}");

        // Open straight to resolved is allowed.
        let other = incident(&db, "open").await;
        resolve(st(), ops.clone(), Path(other), None)
            .await
            .expect("resolve open");

        let outcomes = |rows: Vec<(String, Option<String>)>| -> Vec<String> {
            rows.into_iter().map(|(o, _)| o).collect()
        };
        assert_eq!(
            outcomes(db.audited("incident.acknowledge").await),
            ["ok", "conflict", "conflict"]
        );
        assert_eq!(
            outcomes(db.audited("incident.resolve").await),
            ["ok", "conflict", "ok"]
        );
    }

    #[tokio::test]
    async fn listing_filters_by_status_and_refuses_others() {
        let db = TestDb::new().await;
        let ops = db.actor(Role::Ops, None).await;
        let open = incident(&db, "open").await;
        incident(&db, "resolved").await;
        let st = || State(db.state.clone());
        let filter = |s: Option<&str>| {
            Query(IncidentFilter {
                status: s.map(str::to_owned),
                limit: None,
            })
        };
        let Json(all) = list(st(), ops.clone(), filter(None)).await.expect("all");
        assert_eq!(all.incidents.len(), 2);
        let Json(o) = list(st(), ops.clone(), filter(Some("open")))
            .await
            .expect("open");
        assert_eq!(o.incidents.iter().map(|i| i.id).collect::<Vec<_>>(), [open]);
        let e = list(st(), ops.clone(), filter(Some("closed")))
            .await
            .must_fail("bad");
        assert_eq!(status_of(&e), 400);
        assert!(e.to_string().contains("\"closed\""), "{e}");
        let e = get(st(), ops.clone(), Path(Uuid::new_v4()))
            .await
            .must_fail("missing");
        assert_eq!(status_of(&e), 404);
        let Json(one) = get(st(), ops.clone(), Path(open)).await.expect("one");
        assert_eq!(one.timeline.len(), 1);
        let dev = db.actor(Role::Developer, Some(db.account().await)).await;
        let e = acknowledge(st(), dev.clone(), Path(open))
            .await
            .must_fail("developer");
        assert_eq!(status_of(&e), 403);
        let e = resolve(
            st(),
            ops,
            Path(open),
            Some(Json(Resolve {
                note: Some("x".repeat(2001)),
            })),
        )
        .await
        .must_fail("long note");
        assert_eq!(status_of(&e), 400);
        let Json(still) = get(st(), db.actor(Role::Admin, None).await, Path(open))
            .await
            .expect("admin reads");
        assert_eq!(still.incident.status, "open");
    }
}
