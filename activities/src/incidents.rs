//! Incidents: a workflow entering a failure state opens one (or updates the one it has open),
//! with a tier from how soon the certificate expires and how many hostnames it covers; a
//! workflow that is healthy again resolves it. Every change is a row in the incident's
//! timeline (`incident_events`). Ops acknowledge and resolve through the api.

use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// Incident severity tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Page now: expiry within 7 days (or already expired).
    Sev1,
    /// Today: expiry within 21 days, or a domain with no certificate at all.
    Sev2,
    /// This week: plenty of time left.
    Sev3,
}

impl Tier {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Sev1 => "sev1",
            Tier::Sev2 => "sev2",
            Tier::Sev3 => "sev3",
        }
    }

    fn raise(self) -> Tier {
        match self {
            Tier::Sev3 => Tier::Sev2,
            _ => Tier::Sev1,
        }
    }
}

/// Hostnames at which an incident is one tier more urgent.
pub const MANY_HOSTNAMES: i32 = 10;

/// Tier of an incident whose certificate expires at `expires_at` (unix seconds; `None` when
/// none was ever issued) covering `hostnames` names, at time `now`.
pub fn tier(now: i64, expires_at: Option<i64>, hostnames: i32) -> Tier {
    let base = match expires_at {
        None => Tier::Sev2,
        Some(at) if at - now <= 7 * 86_400 => Tier::Sev1,
        Some(at) if at - now <= 21 * 86_400 => Tier::Sev2,
        Some(_) => Tier::Sev3,
    };
    if hostnames >= MANY_HOSTNAMES {
        base.raise()
    } else {
        base
    }
}

/// A workflow in a failure state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentReport {
    /// Workflow id.
    pub workflow_id: String,
    /// Workflow kind.
    pub kind: String,
    /// What it is about (the domain).
    pub subject: String,
    /// The failure state it entered.
    pub failure_state: String,
    /// Hostnames affected.
    pub hostnames: i32,
    /// Expiry of the certificate still served, unix seconds.
    pub expires_at: Option<i64>,
    /// The error that led here.
    pub summary: String,
}

/// A workflow that is healthy again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentResolution {
    /// Workflow id.
    pub workflow_id: String,
    /// Why it is resolved, for the timeline.
    pub detail: String,
}

/// Activities writing `incidents`.
pub struct IncidentActivities {
    pool: PgPool,
}

impl IncidentActivities {
    /// Activities using `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn internal(e: sqlx::Error) -> ActivityError {
    crate::failure::error(crate::failure::INTERNAL, format!("database: {e}"), true)
}

/// Opens or updates the workflow's unresolved incident; returns its id.
pub async fn open(pool: &PgPool, report: &IncidentReport) -> Result<uuid::Uuid, sqlx::Error> {
    let now = chrono::Utc::now().timestamp();
    let tier = tier(now, report.expires_at, report.hostnames);
    let mut tx = pool.begin().await?;
    let existing = sqlx::query(
        "SELECT id, tier, failure_state FROM incidents
         WHERE workflow_id = $1 AND status <> 'resolved' FOR UPDATE",
    )
    .bind(&report.workflow_id)
    .fetch_optional(&mut *tx)
    .await?;
    let expires = report.expires_at.map(|t| t as f64);
    let id = match existing {
        Some(row) => {
            let id: uuid::Uuid = row.get("id");
            let old_tier: String = row.get("tier");
            let old_state: String = row.get("failure_state");
            // Tiers only escalate while an incident is open.
            let new_tier = match old_tier.as_str() {
                t if t <= tier.as_str() => old_tier.clone(),
                _ => tier.as_str().to_owned(),
            };
            sqlx::query(
                "UPDATE incidents SET failure_state = $2, tier = $3, hostnames = $4,
                     expires_at = to_timestamp($5), summary = $6, updated_at = now()
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&report.failure_state)
            .bind(&new_tier)
            .bind(report.hostnames)
            .bind(expires)
            .bind(&report.summary)
            .execute(&mut *tx)
            .await?;
            if old_state != report.failure_state {
                event(
                    &mut tx,
                    id,
                    "state_changed",
                    &format!(
                        "{old_state} -> {}: {}",
                        report.failure_state, report.summary
                    ),
                )
                .await?;
            }
            if new_tier != old_tier {
                event(
                    &mut tx,
                    id,
                    "escalated",
                    &format!("{old_tier} -> {new_tier}"),
                )
                .await?;
            }
            id
        }
        None => {
            let id = uuid::Uuid::new_v4();
            sqlx::query(
                "INSERT INTO incidents (id, workflow_id, kind, subject, failure_state, tier, status,
                     hostnames, expires_at, summary)
                 VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, to_timestamp($8), $9)",
            )
            .bind(id)
            .bind(&report.workflow_id)
            .bind(&report.kind)
            .bind(&report.subject)
            .bind(&report.failure_state)
            .bind(tier.as_str())
            .bind(report.hostnames)
            .bind(expires)
            .bind(&report.summary)
            .execute(&mut *tx)
            .await?;
            event(
                &mut tx,
                id,
                "opened",
                &format!(
                    "{} ({}): {}",
                    report.failure_state,
                    tier.as_str(),
                    report.summary
                ),
            )
            .await?;
            metrics::counter!("burrow_incidents_opened_total", "kind" => report.kind.clone(), "tier" => tier.as_str()).increment(1);
            id
        }
    };
    tx.commit().await?;
    Ok(id)
}

async fn event(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: uuid::Uuid,
    kind: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO incident_events (incident_id, event, detail, actor) VALUES ($1, $2, $3, 'workflow')",
    )
    .bind(id)
    .bind(kind)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Resolves the workflow's unresolved incident, if any; returns whether there was one.
pub async fn resolve(pool: &PgPool, res: &IncidentResolution) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let id: Option<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE incidents SET status = 'resolved', resolved_at = now(), resolved_by = 'workflow',
             updated_at = now()
         WHERE workflow_id = $1 AND status <> 'resolved' RETURNING id",
    )
    .bind(&res.workflow_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = id {
        event(&mut tx, id, "auto_resolved", &res.detail).await?;
    }
    tx.commit().await?;
    Ok(id.is_some())
}

#[activities]
impl IncidentActivities {
    /// Opens (or escalates) the workflow's incident.
    #[activity]
    pub async fn open_incident(
        self: Arc<Self>,
        _ctx: ActivityContext,
        report: IncidentReport,
    ) -> Result<String, ActivityError> {
        let id = open(&self.pool, &report).await.map_err(internal)?;
        tracing::warn!(workflow_id = %report.workflow_id, state = %report.failure_state, incident = %id, "incident open");
        Ok(id.to_string())
    }

    /// Resolves the workflow's incident, if it has one open.
    #[activity]
    pub async fn resolve_incident(
        self: Arc<Self>,
        _ctx: ActivityContext,
        res: IncidentResolution,
    ) -> Result<bool, ActivityError> {
        resolve(&self.pool, &res).await.map_err(internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_time_to_expiry_and_breadth() {
        let now = 1_000_000_000;
        let day = 86_400;
        assert_eq!(tier(now, Some(now - day), 1), Tier::Sev1);
        assert_eq!(tier(now, Some(now + 6 * day), 1), Tier::Sev1);
        assert_eq!(tier(now, Some(now + 20 * day), 1), Tier::Sev2);
        assert_eq!(tier(now, Some(now + 60 * day), 1), Tier::Sev3);
        assert_eq!(tier(now, None, 1), Tier::Sev2);
        assert_eq!(tier(now, Some(now + 60 * day), MANY_HOSTNAMES), Tier::Sev2);
        assert_eq!(tier(now, None, MANY_HOSTNAMES), Tier::Sev1);
        assert_eq!(tier(now, Some(now + day), 50), Tier::Sev1);
    }

    #[test]
    fn tier_names_sort_most_urgent_first() {
        assert!(Tier::Sev1.as_str() < Tier::Sev2.as_str());
        assert!(Tier::Sev2.as_str() < Tier::Sev3.as_str());
    }
}
