//! Reserved names: labels under the relay's base domain (`demo` → `demo.<base_domain>`) that
//! only the account holding them may bind. Table `reserved_names` (migration 0006); relays
//! learn every change over `RelayFeed` ([`crate::feed`]).
//!
//! - `POST /v1/accounts/{id}/reserved-names` `{"name": "demo"}` → 201 `{name, account_id,
//!   created_at}`; 422 `invalid_name` (the relay's label rules), 409 when anyone holds it
//!   (without saying who), 403 past the plan's `max_reserved_names`.
//! - `GET /v1/accounts/{id}/reserved-names` → `{"reserved_names": [...]}`.
//! - `DELETE /v1/accounts/{id}/reserved-names/{name}` → 204; 404 unless this account holds it.
//!
//! Admin keys, or developer keys of that account ([`crate::auth::Principal::require_account`]).
//! Mutations are audited (`name.reserve`, `name.release`) in the transaction of the change.

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

/// A reserved name.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReservedName {
    /// The label.
    pub name: String,
    /// The account holding it.
    pub account_id: Uuid,
    /// When it was reserved.
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/accounts/{id}/reserved-names` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewName {
    /// The label to reserve.
    #[schema(min_length = 1, max_length = 63, example = "demo")]
    pub name: String,
}

/// `GET /v1/accounts/{id}/reserved-names` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NameList {
    /// Alphabetical.
    pub reserved_names: Vec<ReservedName>,
}

/// Checks `name` with the relay's own label rules; a 422 `invalid_name` naming the rule.
pub fn check_label(name: &str) -> ApiResult<()> {
    burrow_proto::tunnel::validate_label(name).map_err(|e| ApiError::Unprocessable {
        code: "invalid_name",
        message: format!(
            "{e}: a name is 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'"
        ),
    })
}

/// The account other than `account_id` that reserved `name`, if any.
pub async fn held_by_other(
    db: impl sqlx::PgExecutor<'_>,
    name: &str,
    account_id: Uuid,
) -> ApiResult<bool> {
    Ok(sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM reserved_names WHERE name = $1 AND account_id <> $2)",
    )
    .bind(name)
    .bind(account_id)
    .fetch_one(db)
    .await?)
}

/// `POST /v1/accounts/{id}/reserved-names`.
#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/reserved-names",
    operation_id = "reserve_name",
    tag = "names",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    request_body = NewName,
    responses(
        (status = 201, description = "Reserved.", body = ReservedName),
        (status = 403, description = "Not admin or a developer key of this account; or past the plan's `max_reserved_names`.", body = crate::error::ErrorBody),
        (status = 404, description = "No such account.", body = crate::error::ErrorBody),
        (status = 409, description = "Someone holds the name already.", body = crate::error::ErrorBody),
        (status = 422, description = "`invalid_name` (the relay's label rules).", body = crate::error::ErrorBody),
    )
)]
pub async fn reserve(
    State(state): State<AppState>,
    actor: Actor,
    Path(account_id): Path<Uuid>,
    Json(body): Json<NewName>,
) -> ApiResult<(StatusCode, Json<ReservedName>)> {
    let target = account_id.to_string();
    let detail = json!({ "account_id": account_id, "name": body.name });
    let created = async {
        actor
            .principal
            .require_account(account_id, "reserving a name for this account")?;
        check_label(&body.name)?;
        let mut tx = state.db.begin().await?;
        let (plan, limits) = plans::lock_account_plan(&mut tx, account_id).await?;
        let holder: Option<Uuid> =
            sqlx::query_scalar("SELECT account_id FROM reserved_names WHERE name = $1")
                .bind(&body.name)
                .fetch_optional(&mut *tx)
                .await?;
        match holder {
            Some(a) if a == account_id => {
                return Err(ApiError::Conflict(format!(
                    "this account already reserved {:?}",
                    body.name
                )));
            }
            Some(_) => return Err(taken(&body.name)),
            None => {}
        }
        if let Some(limit) = limits.max_reserved_names {
            let have: i64 =
                sqlx::query_scalar("SELECT count(*) FROM reserved_names WHERE account_id = $1")
                    .bind(account_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if have >= i64::from(limit) {
                return Err(plans::limit_reached(
                    &plan,
                    limit,
                    "reserved name",
                    have,
                    "release one",
                ));
            }
        }
        let name = sqlx::query_as::<_, ReservedName>(
            "INSERT INTO reserved_names (name, account_id) VALUES ($1, $2)
             RETURNING name, account_id, created_at",
        )
        .bind(&body.name)
        .bind(account_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            // Reserved by someone between the check and the insert.
            sqlx::Error::Database(d) if d.is_unique_violation() => taken(&body.name),
            _ => e.into(),
        })?;
        audit::commit(tx, &actor, "name.reserve", Some(&name.name), detail.clone()).await?;
        Ok(name)
    }
    .await;
    let name = audit::or_failed(
        &state.db,
        &actor,
        "name.reserve",
        Some(&target),
        detail,
        created,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(name)))
}

fn taken(name: &str) -> ApiError {
    ApiError::Conflict(format!(
        "the name {name:?} is reserved by another account; choose another name"
    ))
}

/// `GET /v1/accounts/{id}/reserved-names`.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/reserved-names",
    operation_id = "list_reserved_names",
    tag = "names",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account's reserved names.", body = NameList),
        (status = 403, description = "Not admin or a developer key of this account.", body = crate::error::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Path(account_id): Path<Uuid>,
) -> ApiResult<Json<NameList>> {
    let target = account_id.to_string();
    let allowed = actor
        .principal
        .require_account(account_id, "listing this account's reserved names");
    audit::or_failed(
        &state.db,
        &actor,
        "name.list",
        Some(&target),
        json!({}),
        allowed,
    )
    .await?;
    let reserved_names = sqlx::query_as::<_, ReservedName>(
        "SELECT name, account_id, created_at FROM reserved_names WHERE account_id = $1
         ORDER BY name",
    )
    .bind(account_id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(NameList { reserved_names }))
}

/// `DELETE /v1/accounts/{id}/reserved-names/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/accounts/{id}/reserved-names/{name}",
    operation_id = "release_name",
    tag = "names",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id"), ("name" = String, Path, description = "The reserved label")),
    responses(
        (status = 204, description = "Released."),
        (status = 403, description = "Not admin or a developer key of this account.", body = crate::error::ErrorBody),
        (status = 404, description = "This account does not hold the name.", body = crate::error::ErrorBody),
    )
)]
pub async fn release(
    State(state): State<AppState>,
    actor: Actor,
    Path((account_id, name)): Path<(Uuid, String)>,
) -> ApiResult<StatusCode> {
    let detail = json!({ "account_id": account_id, "name": name });
    let released = async {
        actor
            .principal
            .require_account(account_id, "releasing this account's reserved names")?;
        let mut tx = state.db.begin().await?;
        let gone = sqlx::query("DELETE FROM reserved_names WHERE name = $1 AND account_id = $2")
            .bind(&name)
            .bind(account_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(ApiError::NotFound(format!(
                "account {account_id} has not reserved the name {name:?}"
            )));
        }
        audit::commit(tx, &actor, "name.release", Some(&name), detail.clone()).await
    }
    .await;
    audit::or_failed(
        &state.db,
        &actor,
        "name.release",
        Some(&name),
        detail,
        released,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_relay_rules() {
        for ok in ["demo", "a", "my-app-2", &"a".repeat(63)] {
            assert!(check_label(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-demo",
            "demo-",
            "Demo",
            "my_app",
            "a.b",
            &"a".repeat(64),
        ] {
            let e = check_label(bad).unwrap_err();
            assert_eq!(audit::outcome_of(&e), "invalid_name", "{bad}");
        }
    }
}
