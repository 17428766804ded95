//! Applying provider webhook events (Stripe-shaped) to accounts.
//!
//! Handled event types:
//! - `customer.subscription.created` / `customer.subscription.updated`: the account whose
//!   `provider_customer_id` is `data.object.customer` moves to the plan in `data.object.plan.id`
//!   (or the first item's `price.lookup_key`);
//! - `customer.subscription.deleted`: that account falls back to `free`.
//!
//! A plan that is not in the `plans` table is a non-retryable `invalid_payload` (parked until
//! the plan is added and the event replayed), never a silent downgrade.
//!
//! Any other type is recorded as `ignored` and acknowledged. Applying is idempotent: an event
//! already applied or ignored is not applied again, whatever the number of attempts or replays.
//! Events are ordered by their `created` time: an event older than the one that set the
//! account's current plan (say, a dead letter replayed late) is recorded as `superseded` and
//! changes nothing.

use crate::failure::{self, ACCOUNT_UNKNOWN, INTERNAL, INVALID_PAYLOAD};
use opentelemetry::trace::TraceContextExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgPool, Row};
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Which event to apply, for which workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyInput {
    /// Provider event id (`evt_...`).
    pub event_id: String,
    /// Workflow applying it (its `workflow_runs` row gets attempts and errors).
    pub workflow_id: String,
}

/// What applying did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApplyOutcome {
    /// The event changed the account (or had already).
    Applied {
        /// Human-readable effect, e.g. `account 3f.. plan pro`.
        effect: String,
    },
    /// The event type is not one Burrow acts on.
    Ignored {
        /// The type.
        event_type: String,
    },
    /// A newer event already set the account's plan; this older one changes nothing.
    Superseded {
        /// Creation time (unix seconds) of the event that set the current plan.
        newer_event_created: i64,
    },
}

/// Activities for provider events.
pub struct ProviderActivities {
    pool: PgPool,
}

impl ProviderActivities {
    /// Activities using `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[derive(Debug)]
struct Failure {
    kind: &'static str,
    message: String,
}

impl Failure {
    fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::new(INTERNAL, format!("database: {e}"))
    }
}

#[activities]
impl ProviderActivities {
    /// Applies one stored provider event; records the attempt on the workflow's row.
    #[activity]
    pub async fn apply_event(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ApplyInput,
    ) -> Result<ApplyOutcome, ActivityError> {
        let attempt = ctx.info().attempt;
        let span = tracing::info_span!(
            "apply_provider_event",
            event_id = %input.event_id,
            workflow_id = %input.workflow_id,
            attempt
        );
        // The Temporal tracing interceptor made the activity's trace context current; parent our
        // span on it so the api request, workflow and this activity form one trace.
        let cx = opentelemetry::Context::current();
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
        let result = apply(&self.pool, &input.event_id).instrument(span).await;
        let last_error = result.as_ref().err().map(|f| f.message.clone());
        if let Err(e) = sqlx::query(
            "UPDATE workflow_runs SET attempts = attempts + 1, last_error = COALESCE($2, last_error),
                    updated_at = now() WHERE workflow_id = $1",
        )
        .bind(&input.workflow_id)
        .bind(&last_error)
        .execute(&self.pool)
        .await
        {
            tracing::warn!(error = %e, "could not record the attempt on workflow_runs");
        }
        result.map_err(|f| {
            tracing::warn!(kind = f.kind, error = %f.message, attempt, "applying provider event failed");
            failure::error(f.kind, f.message, f.kind != INVALID_PAYLOAD)
        })
    }
}

async fn apply(pool: &PgPool, event_id: &str) -> Result<ApplyOutcome, Failure> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT event_type, payload, status, extract(epoch FROM received_at)::bigint AS received
         FROM provider_events WHERE id = $1 FOR UPDATE",
    )
    .bind(event_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Failure::new(INVALID_PAYLOAD, format!("event {event_id} is not stored")))?;
    let event_type: String = row.get("event_type");
    let payload: Value = row.get("payload");
    let status: String = row.get("status");
    // The provider's creation time orders events; without one, arrival time does.
    let created = payload
        .get("created")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| row.get("received"));
    match status.as_str() {
        "applied" => {
            return Ok(ApplyOutcome::Applied {
                effect: "already applied".into(),
            });
        }
        "ignored" => return Ok(ApplyOutcome::Ignored { event_type }),
        "superseded" => {
            return Ok(ApplyOutcome::Superseded {
                newer_event_created: created,
            });
        }
        _ => {}
    }

    let plan = match event_type.as_str() {
        "customer.subscription.created" | "customer.subscription.updated" => {
            Some(plan_of(&payload).ok_or_else(|| {
                Failure::new(
                    INVALID_PAYLOAD,
                    format!("{event_type} {event_id} names no plan (data.object.plan.id)"),
                )
            })?)
        }
        "customer.subscription.deleted" => Some("free".to_owned()),
        _ => None,
    };
    let Some(plan) = plan else {
        sqlx::query("UPDATE provider_events SET status = 'ignored' WHERE id = $1")
            .bind(event_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(ApplyOutcome::Ignored { event_type });
    };
    let customer = payload
        .pointer("/data/object/customer")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            Failure::new(
                INVALID_PAYLOAD,
                format!("{event_type} {event_id} has no data.object.customer"),
            )
        })?;
    let account = sqlx::query(
        "SELECT id, plan_event_created FROM accounts WHERE provider_customer_id = $1 FOR UPDATE",
    )
    .bind(customer)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        Failure::new(
            ACCOUNT_UNKNOWN,
            format!("no account has provider customer id {customer:?} (event {event_id})"),
        )
    })?;
    let account_id: uuid::Uuid = account.get("id");
    if let Some(newer) = account
        .get::<Option<i64>, _>("plan_event_created")
        .filter(|newer| *newer > created)
    {
        sqlx::query(
            "UPDATE provider_events SET status = 'superseded', applied_at = now() WHERE id = $1",
        )
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(ApplyOutcome::Superseded {
            newer_event_created: newer,
        });
    }
    // `accounts.plan` references `plans`: a plan the provider knows and Burrow does not (a new
    // price nobody added yet) parks the event instead of retrying a foreign-key violation.
    let known: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM plans WHERE name = $1)")
        .bind(&plan)
        .fetch_one(&mut *tx)
        .await?;
    if !known {
        return Err(Failure::new(
            INVALID_PAYLOAD,
            format!(
                "{event_type} {event_id} names plan {plan:?}, which is not a Burrow plan \
                 (GET /v1/plans lists them); add it to `plans` or fix the provider's price, \
                 then replay"
            ),
        ));
    }
    sqlx::query(
        "UPDATE accounts SET plan = $1, plan_event_created = $2, updated_at = now() WHERE id = $3",
    )
    .bind(&plan)
    .bind(created)
    .bind(account_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE provider_events SET status = 'applied', applied_at = now() WHERE id = $1")
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ApplyOutcome::Applied {
        effect: format!("account {account_id} plan {plan}"),
    })
}

fn plan_of(payload: &Value) -> Option<String> {
    let object = payload.pointer("/data/object")?;
    object
        .pointer("/plan/id")
        .or_else(|| object.pointer("/items/data/0/price/lookup_key"))
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plan_comes_from_plan_id_or_first_price() {
        let a = json!({"data": {"object": {"plan": {"id": "pro"}}}});
        assert_eq!(plan_of(&a).as_deref(), Some("pro"));
        let b =
            json!({"data": {"object": {"items": {"data": [{"price": {"lookup_key": "team"}}]}}}});
        assert_eq!(plan_of(&b).as_deref(), Some("team"));
        let c = json!({"data": {"object": {"plan": {"id": ""}}}});
        assert_eq!(plan_of(&c), None);
    }
}
