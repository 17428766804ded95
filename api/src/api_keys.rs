//! Listing and revoking API keys (creation lives with accounts and users). Listings never carry
//! secrets or hashes: id, role, account, user, description, when created, last used and revoked.
//!
//! - `GET /v1/accounts/{id}/api-keys`: admin, or a developer of the account.
//! - `GET /v1/api-keys[?account_id=&user_id=]`: admin (platform keys included).
//! - `DELETE /v1/api-keys/{id}`: admin, or a developer of the key's account for its developer
//!   keys (staff keys attached to an account are the admin's to revoke); idempotent (a
//!   revoked key stays revoked, its first `revoked_at` kept). Another account's key is reported
//!   as missing. The key stops authenticating at once (every request looks it up).

use crate::extract::{Json, Path, Query};
use crate::{
    AppState,
    accounts::{API_KEY_COLUMNS, ApiKey},
    audit::{self, Actor},
    auth::Role,
    error::{ApiError, ApiResult},
};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// A list of keys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyList {
    /// Oldest first.
    pub api_keys: Vec<ApiKey>,
}

/// `GET /v1/api-keys` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    /// Only keys of this account.
    #[serde(default)]
    pub account_id: Option<Uuid>,
    /// Only keys of this user.
    #[serde(default)]
    pub user_id: Option<Uuid>,
}

async fn select(state: &AppState, q: &KeyQuery) -> ApiResult<ApiKeyList> {
    let api_keys = sqlx::query_as::<_, ApiKey>(&format!(
        "SELECT {API_KEY_COLUMNS} FROM api_keys
         WHERE ($1::uuid IS NULL OR account_id = $1) AND ($2::uuid IS NULL OR user_id = $2)
         ORDER BY created_at, id"
    ))
    .bind(q.account_id)
    .bind(q.user_id)
    .fetch_all(&state.db)
    .await?;
    Ok(ApiKeyList { api_keys })
}

/// `GET /v1/api-keys` (admin).
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    operation_id = "list_api_keys",
    tag = "api-keys",
    security(("api_key" = [])),
    params(KeyQuery),
    responses(
        (status = 200, description = "Keys (never secrets), platform keys included.", body = ApiKeyList),
        (status = 403, description = "Not an admin key.", body = crate::error::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Query(query): Query<KeyQuery>,
) -> ApiResult<Json<ApiKeyList>> {
    let detail = json!({"account_id": query.account_id, "user_id": query.user_id});
    let read = async {
        actor.principal.require(&[], "listing every API key")?;
        select(&state, &query).await
    };
    let list = audit::read(&state.db, &actor, "api_key.list", None, detail, read).await?;
    Ok(Json(list))
}

/// `GET /v1/accounts/{id}/api-keys` (admin, or a developer of the account).
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/api-keys",
    operation_id = "list_account_api_keys",
    tag = "api-keys",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account's keys (never secrets).", body = ApiKeyList),
        (status = 403, description = "Not admin or a developer key of this account.", body = crate::error::ErrorBody),
    )
)]
pub async fn list_for_account(
    State(state): State<AppState>,
    actor: Actor,
    Path(account_id): Path<Uuid>,
) -> ApiResult<Json<ApiKeyList>> {
    let target = account_id.to_string();
    let read = async {
        actor
            .principal
            .require_account(account_id, "listing this account's API keys")?;
        let query = KeyQuery {
            account_id: Some(account_id),
            user_id: None,
        };
        select(&state, &query).await
    };
    let list = audit::read(
        &state.db,
        &actor,
        "api_key.list",
        Some(&target),
        json!({}),
        read,
    )
    .await?;
    Ok(Json(list))
}

/// `DELETE /v1/api-keys/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    operation_id = "revoke_api_key",
    tag = "api-keys",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "API key id")),
    responses(
        (status = 200, description = "Revoked (its first `revoked_at` kept); it stops authenticating at once.", body = ApiKey),
        (status = 403, description = "An ops or finance key; or a developer key revoking a staff (ops, finance) key of its account.", body = crate::error::ErrorBody),
        (status = 404, description = "No such key (or another account's).", body = crate::error::ErrorBody),
        (status = 409, description = "The key used for the call is the one to revoke.", body = crate::error::ErrorBody),
    )
)]
pub async fn revoke(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ApiKey>> {
    let target = id.to_string();
    let revoked = async {
        let owner: Option<(Option<Uuid>, String)> =
            sqlx::query_as("SELECT account_id, role FROM api_keys WHERE id = $1")
                .bind(id)
                .fetch_optional(&state.db)
                .await?;
        let p = &actor.principal;
        match owner {
            Some(_) if p.role == Role::Admin => {}
            // A developer revokes its account's developer keys; staff keys attached to the
            // account (finance, ops) are the admin's to revoke.
            Some((Some(account), role))
                if p.role == Role::Developer && p.account_id == Some(account) =>
            {
                if role != Role::Developer.as_str() {
                    return Err(ApiError::Forbidden(format!(
                        "this is a {role} key: revoking it needs an admin key"
                    )));
                }
            }
            Some(_) if p.role != Role::Developer => {
                return Err(ApiError::Forbidden(
                    "revoking an API key needs an admin key or a developer key of its account"
                        .into(),
                ));
            }
            _ => return Err(ApiError::NotFound(format!("no API key {id}"))),
        }
        if p.key_id == id {
            return Err(ApiError::Conflict(
                "an API key cannot revoke itself: use another key (this one would lock its \
                 holder out)"
                    .into(),
            ));
        }
        let mut tx = state.db.begin().await?;
        let key = sqlx::query_as::<_, ApiKey>(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        audit::commit(tx, &actor, "api_key.revoke", Some(&target), json!({})).await?;
        Ok(key)
    }
    .await;
    Ok(Json(
        audit::or_failed(
            &state.db,
            &actor,
            "api_key.revoke",
            Some(&target),
            json!({}),
            revoked,
        )
        .await?,
    ))
}
