//! Accounts, authtokens and API keys: REST handlers and the queries behind them.
//!
//! Secrets (authtokens `bt_...`, API keys `bk_...`) are returned exactly once, in the response
//! that creates them; only their SHA-256 is stored. Each credential records its
//! `last_used_at`: an authtoken when a relay verifies it or reports a live session using it, an
//! API key when it authenticates a request (at most one write a minute per credential).
//!
//! Creations and revocations write their [`audit`] row in the same transaction as the change;
//! reads by admin, ops and finance keys and every refusal are audited too.

use crate::extract::{Json, Path};
use crate::{
    AppState,
    audit::{self, Actor},
    auth::{Internal, Role},
    error::{ApiError, ApiResult, ErrorBody},
    plans::{self, LIMIT_COLUMNS, Limits},
};
use axum::{extract::State, http::StatusCode};
use burrow_common::token;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{FromRow, PgExecutor, Row};
use utoipa::ToSchema;
use uuid::Uuid;

/// An account as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Account {
    /// Id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
    /// Current plan.
    pub plan: String,
    /// Payment provider customer id.
    pub provider_customer_id: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/accounts` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Display name.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Initial plan (default `free`).
    #[serde(default)]
    pub plan: Option<String>,
    /// Payment provider customer id, linking provider events to this account.
    #[serde(default)]
    pub provider_customer_id: Option<String>,
}

/// `POST /v1/accounts` (admin).
#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    security(("api_key" = [])),
    request_body = NewAccount,
    responses(
        (status = 201, description = "Created.", body = Account),
        (status = 400, description = "`invalid_name`, `invalid_json`.", body = ErrorBody),
        (status = 403, description = "Not an admin key.", body = ErrorBody),
        (status = 409, description = "The provider customer id is linked to another account.", body = ErrorBody),
        (status = 422, description = "`unknown_plan`.", body = ErrorBody),
    )
)]
pub async fn create_account(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<NewAccount>,
) -> ApiResult<(StatusCode, Json<Account>)> {
    let plan = body.plan.as_deref().unwrap_or("free");
    let detail = json!({
        "name": body.name, "plan": plan, "provider_customer_id": body.provider_customer_id,
    });
    let created = async {
        actor.principal.require(&[], "creating an account")?;
        let name = body.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(ApiError::bad_request(
                "invalid_name",
                "`name` must be 1 to 200 characters",
            ));
        }
        let mut tx = state.db.begin().await?;
        let account =
            insert_account(&mut *tx, name, plan, body.provider_customer_id.as_deref()).await?;
        let id = account.id.to_string();
        audit::commit(tx, &actor, "account.create", Some(&id), detail.clone()).await?;
        Ok(account)
    }
    .await;
    match created {
        Ok(account) => Ok((StatusCode::CREATED, Json(account))),
        Err(e) => Err(audit::failed(&state.db, &actor, "account.create", None, detail, e).await),
    }
}

/// Inserts an account; a duplicate provider customer id is a 409.
pub async fn insert_account(
    db: impl PgExecutor<'_>,
    name: &str,
    plan: &str,
    provider_customer_id: Option<&str>,
) -> ApiResult<Account> {
    sqlx::query_as::<_, Account>(
        "INSERT INTO accounts (id, name, plan, provider_customer_id) VALUES ($1, $2, $3, $4)
         RETURNING id, name, plan, provider_customer_id, created_at",
    )
    .bind(Uuid::new_v4())
    .bind(name)
    .bind(plan)
    .bind(provider_customer_id)
    .fetch_one(db)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => ApiError::Conflict(format!(
            "provider customer id {:?} is already linked to another account",
            provider_customer_id.unwrap_or_default()
        )),
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => plans::unknown_plan(plan, &[]),
        _ => e.into(),
    })
}

/// `GET /v1/accounts/{id}`.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}",
    tag = "accounts",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account.", body = Account),
        (status = 403, description = "Not admin, ops, finance or a developer key of this account.", body = ErrorBody),
        (status = 404, description = "No such account.", body = ErrorBody),
    )
)]
pub async fn get_account(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Account>> {
    let principal = &actor.principal;
    let target = id.to_string();
    let audited = principal.role != Role::Developer;
    let read = async {
        if principal
            .require(&[Role::Ops, Role::Finance], "reading an account")
            .is_err()
        {
            principal.require_account(id, "reading this account")?;
        }
        sqlx::query_as::<_, Account>(
            "SELECT id, name, plan, provider_customer_id, created_at FROM accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account {id}")))
    }
    .await;
    match read {
        Ok(account) => {
            if audited {
                audit::record(
                    &state.db,
                    &actor,
                    "account.read",
                    Some(&target),
                    "ok",
                    json!({}),
                )
                .await?;
            }
            Ok(Json(account))
        }
        Err(e) if audited || matches!(e, ApiError::Forbidden(_)) => Err(audit::failed(
            &state.db,
            &actor,
            "account.read",
            Some(&target),
            json!({}),
            e,
        )
        .await),
        Err(e) => Err(e),
    }
}

/// An authtoken without its secret.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct Authtoken {
    /// Id.
    pub id: Uuid,
    /// Owning account.
    pub account_id: Uuid,
    /// Free text.
    pub description: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last verified by a relay or seen in a live session (to the minute); never, if `null`.
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A newly created credential: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedSecret<T> {
    /// The record.
    #[serde(flatten)]
    pub record: T,
    /// The secret. Store it now: it cannot be shown again.
    pub token: String,
}

/// `POST /v1/accounts/{id}/authtokens` body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Role (API keys only).
    #[serde(default)]
    pub role: Option<Role>,
}

/// `POST /v1/accounts/{id}/authtokens` (admin, or developer of the account).
#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/authtokens",
    tag = "authtokens",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    request_body(content = Option<NewCredential>, description = "Optional; `role` is refused."),
    responses(
        (status = 201, description = "Created; `token` is shown only now.", body = CreatedSecret<Authtoken>),
        (status = 400, description = "`unexpected_role`, `invalid_json`.", body = ErrorBody),
        (status = 403, description = "Not admin or a developer key of this account.", body = ErrorBody),
        (status = 404, description = "No such account.", body = ErrorBody),
    )
)]
pub async fn create_authtoken(
    State(state): State<AppState>,
    actor: Actor,
    Path(account_id): Path<Uuid>,
    body: Option<Json<NewCredential>>,
) -> ApiResult<(StatusCode, Json<CreatedSecret<Authtoken>>)> {
    let body = body.map(|b| b.0).unwrap_or_default();
    let detail = json!({ "account_id": account_id, "description": body.description });
    let created = async {
        actor
            .principal
            .require_account(account_id, "creating an authtoken")?;
        if body.role.is_some() {
            return Err(ApiError::bad_request(
                "unexpected_role",
                "authtokens have no role; `role` applies to API keys",
            ));
        }
        let mut tx = state.db.begin().await?;
        let created = insert_authtoken(&mut *tx, account_id, &body.description).await?;
        let id = created.record.id.to_string();
        audit::commit(tx, &actor, "authtoken.create", Some(&id), detail.clone()).await?;
        Ok(created)
    }
    .await;
    match created {
        Ok(created) => Ok((StatusCode::CREATED, Json(created))),
        Err(e) => {
            let target = account_id.to_string();
            Err(audit::failed(
                &state.db,
                &actor,
                "authtoken.create",
                Some(&target),
                detail,
                e,
            )
            .await)
        }
    }
}

/// Creates an authtoken for `account_id`.
pub async fn insert_authtoken(
    db: impl PgExecutor<'_>,
    account_id: Uuid,
    description: &str,
) -> ApiResult<CreatedSecret<Authtoken>> {
    let secret = token::generate("bt");
    let record = sqlx::query_as::<_, Authtoken>(
        "INSERT INTO authtokens (id, account_id, token_hash, description)
         SELECT $1, id, $3, $4 FROM accounts WHERE id = $2
         RETURNING id, account_id, description, created_at, revoked_at, last_used_at",
    )
    .bind(Uuid::new_v4())
    .bind(account_id)
    .bind(token::hash(&secret))
    .bind(description)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no account {account_id}")))?;
    Ok(CreatedSecret {
        record,
        token: secret,
    })
}

/// `GET /v1/accounts/{id}/authtokens`.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/authtokens",
    tag = "authtokens",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account's authtokens, oldest first, revoked ones included.", body = Vec<Authtoken>),
        (status = 403, description = "Not admin or a developer key of this account.", body = ErrorBody),
    )
)]
pub async fn list_authtokens(
    State(state): State<AppState>,
    actor: Actor,
    Path(account_id): Path<Uuid>,
) -> ApiResult<Json<Vec<Authtoken>>> {
    let target = account_id.to_string();
    let read = async {
        actor
            .principal
            .require_account(account_id, "listing authtokens")?;
        Ok(sqlx::query_as::<_, Authtoken>(
            "SELECT id, account_id, description, created_at, revoked_at, last_used_at
             FROM authtokens WHERE account_id = $1 ORDER BY created_at",
        )
        .bind(account_id)
        .fetch_all(&state.db)
        .await?)
    };
    let tokens = audit::read(
        &state.db,
        &actor,
        "authtoken.list",
        Some(&target),
        json!({}),
        read,
    )
    .await?;
    Ok(Json(tokens))
}

/// `DELETE /v1/authtokens/{id}`: revokes the token and closes every agent session using it.
#[utoipa::path(
    delete,
    path = "/v1/authtokens/{id}",
    tag = "authtokens",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Authtoken id")),
    responses(
        (status = 200, description = "Revoked (again, if it was); its sessions closed.", body = crate::openapi::shapes::RevokedAuthtoken),
        (status = 403, description = "Not admin or a developer key of its account.", body = ErrorBody),
        (status = 404, description = "No such authtoken.", body = ErrorBody),
    )
)]
pub async fn revoke_authtoken(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<serde_json::Value>> {
    let target = id.to_string();
    let mut detail = json!({});
    let revoked = async {
        let owner: Uuid = sqlx::query("SELECT account_id FROM authtokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no authtoken {id}")))?
            .get("account_id");
        detail = json!({ "account_id": owner });
        actor
            .principal
            .require_account(owner, "revoking this authtoken")?;
        let mut tx = state.db.begin().await?;
        sqlx::query("UPDATE authtokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit::commit(
            tx,
            &actor,
            "authtoken.revoke",
            Some(&target),
            detail.clone(),
        )
        .await?;
        Ok::<_, ApiError>(())
    }
    .await;
    if let Err(e) = revoked {
        return Err(audit::failed(
            &state.db,
            &actor,
            "authtoken.revoke",
            Some(&target),
            detail,
            e,
        )
        .await);
    }
    // Relays that miss this call still close the sessions within their auth cache period.
    let outcome = state.relays.kick_authtoken(&id.to_string()).await;
    for e in &outcome.errors {
        tracing::warn!(error = %e, authtoken_id = %id, "revoked, but a relay could not be told");
    }
    Ok(Json(serde_json::json!({
        "id": id,
        "revoked": true,
        "sessions_closed": outcome.kicked,
        "relays_unreachable": outcome.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })))
}

/// An API key without its secret.
#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct ApiKey {
    /// Id.
    pub id: Uuid,
    /// Owning account, if any.
    pub account_id: Option<Uuid>,
    /// Role.
    pub role: String,
    /// Free text.
    pub description: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last authenticated a request (to the minute); never, if `null`.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The user the key belongs to, if any (see [`crate::users`]).
    pub user_id: Option<Uuid>,
    /// When the key was revoked; `null` while it works.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The columns of [`ApiKey`], for `SELECT` and `RETURNING`.
pub const API_KEY_COLUMNS: &str =
    "id, account_id, role, description, created_at, last_used_at, user_id, revoked_at";

/// `POST /v1/accounts/{id}/api-keys` (admin).
#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/api-keys",
    tag = "api-keys",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    request_body = NewCredential,
    responses(
        (status = 201, description = "Created; `token` is shown only now.", body = CreatedSecret<ApiKey>),
        (status = 400, description = "`missing_role`, `invalid_json`.", body = ErrorBody),
        (status = 403, description = "Not an admin key.", body = ErrorBody),
        (status = 404, description = "No such account.", body = ErrorBody),
    )
)]
pub async fn create_api_key(
    State(state): State<AppState>,
    actor: Actor,
    Path(account_id): Path<Uuid>,
    Json(body): Json<NewCredential>,
) -> ApiResult<(StatusCode, Json<CreatedSecret<ApiKey>>)> {
    let detail = json!({
        "account_id": account_id, "role": body.role, "description": body.description,
    });
    let created = async {
        actor.principal.require(&[], "creating an API key")?;
        let role = body.role.ok_or_else(|| {
            ApiError::bad_request(
                "missing_role",
                "`role` is required: developer, ops, finance or admin",
            )
        })?;
        let mut tx = state.db.begin().await?;
        let created =
            insert_api_key(&mut *tx, Some(account_id), None, role, &body.description).await?;
        let id = created.record.id.to_string();
        audit::commit(tx, &actor, "api_key.create", Some(&id), detail.clone()).await?;
        Ok::<_, ApiError>(created)
    }
    .await;
    match created {
        Ok(created) => Ok((StatusCode::CREATED, Json(created))),
        Err(e) => {
            let target = account_id.to_string();
            Err(audit::failed(
                &state.db,
                &actor,
                "api_key.create",
                Some(&target),
                detail,
                e,
            )
            .await)
        }
    }
}

/// Creates an API key (of `user_id`, when given).
pub async fn insert_api_key(
    db: impl PgExecutor<'_>,
    account_id: Option<Uuid>,
    user_id: Option<Uuid>,
    role: Role,
    description: &str,
) -> ApiResult<CreatedSecret<ApiKey>> {
    let secret = token::generate("bk");
    let record = sqlx::query_as::<_, ApiKey>(&format!(
        "INSERT INTO api_keys (id, account_id, role, key_hash, description, user_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING {API_KEY_COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(account_id)
    .bind(role.as_str())
    .bind(token::hash(&secret))
    .bind(description)
    .bind(user_id)
    .fetch_one(db)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
            ApiError::NotFound(format!("no account {}", account_id.unwrap_or_default()))
        }
        _ => e.into(),
    })?;
    Ok(CreatedSecret {
        record,
        token: secret,
    })
}

/// `POST /v1/internal/authtokens/verify` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyRequest {
    /// The authtoken an agent presented.
    pub token: String,
}

/// What a relay learns about a valid authtoken.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifiedToken {
    /// Token id.
    pub authtoken_id: String,
    /// Owning account.
    pub account_id: String,
    /// The account's plan.
    pub plan: String,
    /// What the plan allows (`null` = unlimited); the relay enforces them at bind.
    pub limits: Limits,
}

/// `POST /v1/internal/authtokens/verify` (relays, with the internal key).
#[utoipa::path(
    post,
    path = "/v1/internal/authtokens/verify",
    tag = "internal",
    security(("internal_key" = [])),
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "A valid token: its account, plan and limits.", body = VerifiedToken),
        (status = 401, description = "Not the internal key; or the authtoken is unknown or revoked.", body = ErrorBody),
    )
)]
pub async fn verify_authtoken(
    State(state): State<AppState>,
    _internal: Internal,
    Json(body): Json<VerifyRequest>,
) -> ApiResult<Json<VerifiedToken>> {
    // Look up and record the use in one round trip (a write at most once a minute per token).
    let row = sqlx::query(&format!(
        "WITH t AS (
             SELECT id, account_id, revoked_at IS NOT NULL AS revoked, last_used_at
             FROM authtokens WHERE token_hash = $1
         ), used AS (
             UPDATE authtokens SET last_used_at = now() FROM t
             WHERE authtokens.id = t.id AND NOT t.revoked
               AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '60 seconds')
         )
         SELECT t.id, t.account_id, t.revoked, a.plan, {LIMIT_COLUMNS}
         FROM t JOIN accounts a ON a.id = t.account_id JOIN plans p ON p.name = a.plan"
    ))
    .bind(token::hash(&body.token))
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::Unauthorized("the authtoken is not valid".into()))?;
    if row.get::<bool, _>("revoked") {
        return Err(ApiError::Unauthorized("the authtoken was revoked".into()));
    }
    Ok(Json(VerifiedToken {
        authtoken_id: row.get::<Uuid, _>("id").to_string(),
        account_id: row.get::<Uuid, _>("account_id").to_string(),
        plan: row.get("plan"),
        limits: Limits::from_row(&row)?,
    }))
}

/// `POST /v1/internal/authtokens/status` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StatusRequest {
    /// Authtoken ids of live sessions.
    pub ids: Vec<String>,
}

/// Which of the asked ids may no longer be used.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    /// Revoked or unknown ids.
    pub revoked: Vec<String>,
}

/// `POST /v1/internal/authtokens/status` (relays): which tokens of live sessions were revoked.
/// The ones still valid are in use, so their `last_used_at` moves on (at most once a minute).
#[utoipa::path(
    post,
    path = "/v1/internal/authtokens/status",
    tag = "internal",
    security(("internal_key" = [])),
    request_body = StatusRequest,
    responses(
        (status = 200, description = "The asked ids that are revoked or unknown.", body = StatusResponse),
        (status = 400, description = "`too_many_ids` (over 10000), `invalid_json`.", body = ErrorBody),
    )
)]
pub async fn authtoken_status(
    State(state): State<AppState>,
    _internal: Internal,
    Json(body): Json<StatusRequest>,
) -> ApiResult<Json<StatusResponse>> {
    if body.ids.len() > 10_000 {
        return Err(ApiError::bad_request(
            "too_many_ids",
            "ask about at most 10000 authtokens at once",
        ));
    }
    let parsed: Vec<Uuid> = body.ids.iter().filter_map(|i| i.parse().ok()).collect();
    let active: Vec<Uuid> = sqlx::query_scalar(
        "WITH active AS (
             SELECT id, last_used_at FROM authtokens WHERE id = ANY($1) AND revoked_at IS NULL
         ), used AS (
             UPDATE authtokens SET last_used_at = now() FROM active
             WHERE authtokens.id = active.id
               AND (active.last_used_at IS NULL
                    OR active.last_used_at < now() - interval '60 seconds')
         )
         SELECT id FROM active",
    )
    .bind(&parsed)
    .fetch_all(&state.db)
    .await?;
    let revoked = body
        .ids
        .into_iter()
        .filter(|i| !i.parse::<Uuid>().is_ok_and(|u| active.contains(&u)))
        .collect();
    Ok(Json(StatusResponse { revoked }))
}
