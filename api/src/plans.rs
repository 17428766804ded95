//! Plans and their entitlements (table `plans`, migration `0005_plans.sql`).
//!
//! Every account has a plan (`accounts.plan`, a foreign key to `plans.name`). Relays learn the
//! plan and its [`Limits`] with each authtoken verification and enforce them when an agent
//! binds: online endpoints and TCP endpoints per account on the relay. The api enforces reserved
//! names and custom domains when they are created; bandwidth is carried for the feature that
//! will enforce it. Relays also get every account's plan and limits over `RelayFeed`.
//!
//! - `GET /v1/plans` (any API key): every plan and its limits (`null` = unlimited).
//! - `PUT /v1/accounts/{id}/plan` `{"plan": "pro"}` (admin): moves the account to that plan;
//!   an unknown plan is a 422 `unknown_plan` naming it and the plans there are. Audited as
//!   `account.plan` in the same transaction. Relays see the new limits within their
//!   `auth_cache_secs`; sessions already online are not closed when a plan shrinks, only
//!   binds after that are refused. A later provider event still sets the plan (the provider
//!   is the billing source of truth).

use crate::extract::{Json, Path};
use crate::{
    AppState,
    accounts::Account,
    audit::{self, Actor},
    auth::Principal,
    error::{ApiError, ApiResult, ErrorBody},
};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// What a plan allows; `None` (`null` in JSON) is unlimited.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema,
)]
pub struct Limits {
    /// Endpoints (HTTP, TCP, TLS) of the account online at once on one relay.
    pub max_online_endpoints: Option<i32>,
    /// TCP endpoints of the account online at once on one relay.
    pub max_tcp_endpoints: Option<i32>,
    /// Reserved names of the account (enforced by `POST .../reserved-names`).
    pub max_reserved_names: Option<i32>,
    /// Custom domains of the account, pending or verified (enforced by `POST .../domains`).
    pub max_custom_domains: Option<i32>,
    /// Bandwidth per account (not enforced yet).
    pub bandwidth_bytes_per_sec: Option<i64>,
}

/// The columns of [`Limits`], for queries selecting them from `plans`.
pub const LIMIT_COLUMNS: &str = "max_online_endpoints, max_tcp_endpoints, max_reserved_names, \
                                 max_custom_domains, bandwidth_bytes_per_sec";

/// A plan as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Plan {
    /// Name (`free`, `pro`, ...).
    pub name: String,
    /// What it allows.
    #[sqlx(flatten)]
    pub limits: Limits,
}

/// `GET /v1/plans` (any API key): plans from the smallest to unlimited.
#[utoipa::path(
    get,
    path = "/v1/plans",
    tag = "plans",
    security(("api_key" = [])),
    responses((status = 200, description = "Every plan, smallest first.", body = Vec<Plan>))
)]
pub async fn list_plans(
    State(state): State<AppState>,
    _principal: Principal,
) -> ApiResult<Json<Vec<Plan>>> {
    Ok(Json(all(&state.db).await?))
}

async fn all(db: impl sqlx::PgExecutor<'_>) -> ApiResult<Vec<Plan>> {
    Ok(sqlx::query_as::<_, Plan>(&format!(
        "SELECT name, {LIMIT_COLUMNS} FROM plans
         ORDER BY max_online_endpoints NULLS LAST, max_tcp_endpoints NULLS LAST, name"
    ))
    .fetch_all(db)
    .await?)
}

/// Locks account `id` (`FOR UPDATE`, so concurrent creations for one account count in turn)
/// and returns its plan and limits; 404 when there is no such account.
pub async fn lock_account_plan(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
) -> ApiResult<(String, Limits)> {
    use sqlx::{FromRow, Row};
    let row = sqlx::query(&format!(
        "SELECT a.plan, {LIMIT_COLUMNS} FROM accounts a JOIN plans p ON p.name = a.plan
         WHERE a.id = $1 FOR UPDATE OF a"
    ))
    .bind(id)
    .fetch_optional(tx)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no account {id}")))?;
    Ok((row.get("plan"), Limits::from_row(&row)?))
}

/// The 403 for a creation past a plan limit, worded like the relay's bind refusals:
/// `plan "free" allows 1 reserved name; this account already has 1 (...)`.
pub fn limit_reached(plan: &str, limit: i32, what: &str, have: i64, remedy: &str) -> ApiError {
    let s = if limit == 1 { "" } else { "s" };
    ApiError::Forbidden(format!(
        "plan {plan:?} allows {limit} {what}{s}; this account already has {have} ({remedy}, or \
         move the account to a larger plan)"
    ))
}

/// `PUT /v1/accounts/{id}/plan` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    /// The plan to move the account to.
    pub plan: String,
}

/// The 422 for a plan that does not exist, naming the ones that do.
/// With no `known` plans at hand, the message points to `GET /v1/plans`.
pub fn unknown_plan(plan: &str, known: &[String]) -> ApiError {
    let listed = if known.is_empty() {
        "`GET /v1/plans` lists them".to_owned()
    } else {
        format!("the plans are: {}", known.join(", "))
    };
    ApiError::Unprocessable {
        code: "unknown_plan",
        message: format!("there is no plan {plan:?}; {listed}"),
    }
}

/// The 422 for an unknown plan, listing the plans (best effort).
pub async fn unknown_plan_error(db: &sqlx::PgPool, plan: &str) -> ApiError {
    match all(db).await {
        Ok(plans) => unknown_plan(plan, &plans.into_iter().map(|p| p.name).collect::<Vec<_>>()),
        Err(e) => e,
    }
}

/// `PUT /v1/accounts/{id}/plan` (admin).
#[utoipa::path(
    put,
    path = "/v1/accounts/{id}/plan",
    tag = "plans",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    request_body = PlanChange,
    responses(
        (status = 200, description = "The account on its new plan.", body = Account),
        (status = 403, description = "Not an admin key.", body = ErrorBody),
        (status = 404, description = "No such account.", body = ErrorBody),
        (status = 422, description = "`unknown_plan`, naming the plans there are.", body = ErrorBody),
    )
)]
pub async fn set_account_plan(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    Json(body): Json<PlanChange>,
) -> ApiResult<Json<Account>> {
    let target = id.to_string();
    let mut detail = json!({ "plan": body.plan });
    let changed = async {
        actor.principal.require(&[], "changing an account's plan")?;
        let mut tx = state.db.begin().await?;
        let previous: String =
            sqlx::query_scalar("SELECT plan FROM accounts WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("no account {id}")))?;
        detail = json!({ "plan": body.plan, "previous": previous });
        let account = sqlx::query_as::<_, Account>(
            "UPDATE accounts SET plan = $1, updated_at = now() WHERE id = $2
             RETURNING id, name, plan, provider_customer_id, created_at",
        )
        .bind(&body.plan)
        .bind(id)
        .fetch_one(&mut *tx)
        .await;
        let account = match account {
            Ok(a) => a,
            Err(sqlx::Error::Database(d)) if d.is_foreign_key_violation() => {
                return Err(unknown_plan_error(&state.db, &body.plan).await);
            }
            Err(e) => return Err(e.into()),
        };
        audit::commit(tx, &actor, "account.plan", Some(&target), detail.clone()).await?;
        Ok(account)
    }
    .await;
    match changed {
        Ok(account) => Ok(Json(account)),
        Err(e) => {
            Err(audit::failed(&state.db, &actor, "account.plan", Some(&target), detail, e).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    #[test]
    fn limits_serialize_unlimited_as_null() {
        let plan = Plan {
            name: "free".into(),
            limits: Limits {
                max_online_endpoints: Some(4),
                max_tcp_endpoints: Some(1),
                ..Limits::default()
            },
        };
        assert_eq!(
            serde_json::to_value(&plan).unwrap(),
            json!({"name": "free", "limits": {
                "max_online_endpoints": 4, "max_tcp_endpoints": 1, "max_reserved_names": null,
                "max_custom_domains": null, "bandwidth_bytes_per_sec": null,
            }})
        );
    }

    #[test]
    fn an_unknown_plan_is_a_422_naming_it_and_the_known_ones() {
        let e = unknown_plan("gold", &["free".into(), "pro".into()]);
        assert_eq!(audit::outcome_of(&e), "unknown_plan");
        let message = e.to_string();
        assert!(
            message.contains("\"gold\"") && message.contains("free, pro"),
            "{message}"
        );
        assert_eq!(
            e.into_response().status(),
            axum::http::StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn plan_changes_reject_unknown_fields() {
        assert!(serde_json::from_value::<PlanChange>(json!({"plan": "pro"})).is_ok());
        assert!(serde_json::from_value::<PlanChange>(json!({"plna": "pro"})).is_err());
    }
}
