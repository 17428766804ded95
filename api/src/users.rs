//! Users: the people behind API keys. A user has one role; developers belong to an account and
//! act only on it, ops/finance/admin are platform staff without one. A user's API keys carry the
//! user's role and account, and stop authenticating the moment the user is disabled (the key
//! lookup in [`crate::auth`] joins `users`).
//!
//! Who may do what:
//! - `POST /v1/users`: admin creates anyone; a developer creates developers of its own account
//!   (team members), nothing else.
//! - `GET /v1/users[?account_id=]`: admin.
//! - `GET /v1/accounts/{id}/users`: admin, or a developer of that account.
//! - `DELETE /v1/users/{id}`: admin, or a developer of the user's account; disables the user
//!   and revokes its keys (the row stays, for the audit log's sake).
//! - `POST /v1/users/{id}/api-keys`: admin, or the user itself (a key of that user); the secret
//!   is shown once.
//!
//! Every change writes its audit row in the same transaction; refusals are audited too.

use crate::extract::{Json, Path, Query};
use crate::{
    AppState,
    accounts::{self, ApiKey, CreatedSecret},
    audit::{self, Actor},
    auth::Role,
    error::{ApiError, ApiResult},
};
use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

/// A user as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    /// Id.
    pub id: Uuid,
    /// Account of a developer; `null` for platform staff.
    pub account_id: Option<Uuid>,
    /// Lower-cased email, unique.
    pub email: String,
    /// Display name.
    pub name: String,
    /// `developer`, `ops`, `finance` or `admin`.
    pub role: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// When the user was disabled (its keys no longer work); `null` while active.
    pub disabled_at: Option<DateTime<Utc>>,
}

const USER_COLUMNS: &str = "id, account_id, email, name, role, created_at, disabled_at";

/// `POST /v1/users` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Email address (unique, case-insensitive).
    pub email: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Role.
    pub role: Role,
    /// Required for developers, refused for everyone else.
    #[serde(default)]
    pub account_id: Option<Uuid>,
}

impl NewUser {
    fn check(&self) -> ApiResult<String> {
        let email = self.email.trim().to_ascii_lowercase();
        let valid = email.len() <= 254
            && email
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
            && !email.chars().any(|c| c.is_whitespace() || c.is_control());
        if !valid {
            return Err(ApiError::bad_request(
                "invalid_email",
                format!("`email` {:?} is not an email address", self.email),
            ));
        }
        match (self.role, self.account_id) {
            (Role::Developer, None) => Err(ApiError::bad_request(
                "missing_account",
                "a developer belongs to an account: set `account_id`",
            )),
            (Role::Developer, Some(_)) | (_, None) => Ok(email),
            (role, Some(_)) => Err(ApiError::bad_request(
                "unexpected_account",
                format!(
                    "{} users are platform staff and belong to no account: remove `account_id`",
                    role.as_str()
                ),
            )),
        }
    }
}

/// `POST /v1/users`.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    security(("api_key" = [])),
    request_body = NewUser,
    responses(
        (status = 201, description = "Created.", body = User),
        (status = 400, description = "`invalid_email`, `missing_account` (a developer needs one), `unexpected_account` (staff have none), `invalid_json`.", body = crate::error::ErrorBody),
        (status = 403, description = "A developer key creating anything but a developer of its own account; or ops/finance.", body = crate::error::ErrorBody),
        (status = 404, description = "No such account.", body = crate::error::ErrorBody),
        (status = 409, description = "A user with this email exists.", body = crate::error::ErrorBody),
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    actor: Actor,
    Json(body): Json<NewUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let detail = json!({"email": body.email, "role": body.role, "account_id": body.account_id});
    let created = async {
        match (actor.principal.role, body.role, body.account_id) {
            (Role::Admin, _, _) => {}
            (Role::Developer, Role::Developer, Some(account)) => actor
                .principal
                .require_account(account, "adding a developer to this account")?,
            _ => {
                return Err(ApiError::Forbidden(format!(
                    "creating {} users needs an admin key; a developer key adds developers to \
                     its own account only",
                    body.role.as_str()
                )));
            }
        }
        let email = body.check()?;
        let mut tx = state.db.begin().await?;
        let user = sqlx::query_as::<_, User>(&format!(
            "INSERT INTO users (id, account_id, email, name, role) VALUES ($1, $2, $3, $4, $5)
             RETURNING {USER_COLUMNS}"
        ))
        .bind(Uuid::new_v4())
        .bind(body.account_id)
        .bind(&email)
        .bind(body.name.trim())
        .bind(body.role.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                ApiError::Conflict(format!("a user with email {email} already exists"))
            }
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => ApiError::NotFound(
                format!("no account {}", body.account_id.unwrap_or_default()),
            ),
            _ => e.into(),
        })?;
        let id = user.id.to_string();
        audit::commit(tx, &actor, "user.create", Some(&id), detail.clone()).await?;
        Ok(user)
    }
    .await;
    let user = audit::or_failed(&state.db, &actor, "user.create", None, detail, created).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// `GET /v1/users` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// Only users of this account.
    #[serde(default)]
    pub account_id: Option<Uuid>,
}

/// `GET /v1/users` answer (and `GET /v1/accounts/{id}/users`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    /// Oldest first.
    pub users: Vec<User>,
}

async fn select_users(state: &AppState, account: Option<Uuid>) -> ApiResult<UserList> {
    let users = sqlx::query_as::<_, User>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE ($1::uuid IS NULL OR account_id = $1)
         ORDER BY created_at, id"
    ))
    .bind(account)
    .fetch_all(&state.db)
    .await?;
    Ok(UserList { users })
}

/// `GET /v1/users[?account_id=]` (admin).
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    security(("api_key" = [])),
    params(UserQuery),
    responses(
        (status = 200, description = "Users, disabled ones included.", body = UserList),
        (status = 403, description = "Not an admin key.", body = crate::error::ErrorBody),
    )
)]
pub async fn list_users(
    State(state): State<AppState>,
    actor: Actor,
    Query(query): Query<UserQuery>,
) -> ApiResult<Json<UserList>> {
    let detail = json!({"account_id": query.account_id});
    let read = async {
        actor.principal.require(&[], "listing every user")?;
        select_users(&state, query.account_id).await
    };
    let list = audit::read(&state.db, &actor, "user.list", None, detail, read).await?;
    Ok(Json(list))
}

/// `GET /v1/accounts/{id}/users` (admin, or a developer of the account).
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/users",
    tag = "users",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account's users, disabled ones included.", body = UserList),
        (status = 403, description = "Not admin or a developer key of this account.", body = crate::error::ErrorBody),
    )
)]
pub async fn list_account_users(
    State(state): State<AppState>,
    actor: Actor,
    Path(account_id): Path<Uuid>,
) -> ApiResult<Json<UserList>> {
    let target = account_id.to_string();
    let read = async {
        actor
            .principal
            .require_account(account_id, "listing this account's users")?;
        select_users(&state, Some(account_id)).await
    };
    let list = audit::read(
        &state.db,
        &actor,
        "user.list",
        Some(&target),
        json!({}),
        read,
    )
    .await?;
    Ok(Json(list))
}

/// The user `id`, if the actor may manage it (admin, or a developer of its account); another
/// account's user is reported as missing, so ids of other tenants leak nothing.
async fn managed_user(state: &AppState, actor: &Actor, id: Uuid, what: &str) -> ApiResult<User> {
    let user =
        sqlx::query_as::<_, User>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    let p = &actor.principal;
    match user {
        Some(u) if p.role == Role::Admin => Ok(u),
        Some(u)
            if p.role == Role::Developer
                && u.account_id.is_some()
                && u.account_id == p.account_id =>
        {
            Ok(u)
        }
        Some(_) if p.role != Role::Developer => Err(ApiError::Forbidden(format!(
            "{what} needs an admin key or a developer key of the user's account"
        ))),
        _ => Err(ApiError::NotFound(format!("no user {id}"))),
    }
}

/// `DELETE /v1/users/{id}`: disables the user and revokes its API keys.
#[utoipa::path(
    delete,
    path = "/v1/users/{id}",
    tag = "users",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "Disabled (again, if it was); its API keys revoked.", body = User),
        (status = 403, description = "Not admin or a developer key of the user's account.", body = crate::error::ErrorBody),
        (status = 404, description = "No such user (or another account's).", body = crate::error::ErrorBody),
        (status = 409, description = "A user cannot disable itself.", body = crate::error::ErrorBody),
    )
)]
pub async fn disable_user(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<User>> {
    let target = id.to_string();
    let disabled = async {
        managed_user(&state, &actor, id, "disabling a user").await?;
        if actor.principal.user_id == Some(id) {
            return Err(ApiError::Conflict(
                "a user cannot disable itself: use another key".into(),
            ));
        }
        let mut tx = state.db.begin().await?;
        let user = sqlx::query_as::<_, User>(&format!(
            "UPDATE users SET disabled_at = COALESCE(disabled_at, now()) WHERE id = $1
             RETURNING {USER_COLUMNS}"
        ))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let keys = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        audit::commit(
            tx,
            &actor,
            "user.disable",
            Some(&target),
            json!({"keys_revoked": keys}),
        )
        .await?;
        Ok(user)
    }
    .await;
    Ok(Json(
        audit::or_failed(
            &state.db,
            &actor,
            "user.disable",
            Some(&target),
            json!({}),
            disabled,
        )
        .await?,
    ))
}

/// `POST /v1/users/{id}/api-keys` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserKey {
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// `POST /v1/users/{id}/api-keys`: a key with the user's role and account (admin, or the user).
#[utoipa::path(
    post,
    path = "/v1/users/{id}/api-keys",
    tag = "users",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    request_body(content = Option<NewUserKey>, description = "Optional."),
    responses(
        (status = 201, description = "Created with the user's role and account; `token` is shown only now.", body = CreatedSecret<ApiKey>),
        (status = 403, description = "Not admin or a key of this user.", body = crate::error::ErrorBody),
        (status = 404, description = "No such user.", body = crate::error::ErrorBody),
        (status = 409, description = "The user is disabled.", body = crate::error::ErrorBody),
    )
)]
pub async fn create_user_api_key(
    State(state): State<AppState>,
    actor: Actor,
    Path(id): Path<Uuid>,
    body: Option<Json<NewUserKey>>,
) -> ApiResult<(StatusCode, Json<CreatedSecret<ApiKey>>)> {
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let detail = json!({"user_id": id, "description": body.description});
    let created = async {
        let user =
            sqlx::query_as::<_, User>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                .bind(id)
                .fetch_optional(&state.db)
                .await?;
        let user = match user {
            Some(u)
                if actor.principal.role == Role::Admin || actor.principal.user_id == Some(id) =>
            {
                u
            }
            Some(_) if actor.principal.role != Role::Developer => {
                return Err(ApiError::Forbidden(
                    "creating a key for a user needs an admin key or a key of that user".into(),
                ));
            }
            _ => return Err(ApiError::NotFound(format!("no user {id}"))),
        };
        if user.disabled_at.is_some() {
            return Err(ApiError::Conflict(format!("user {id} is disabled")));
        }
        let role = Role::parse(&user.role)
            .ok_or_else(|| ApiError::Internal(format!("stored role {:?} is unknown", user.role)))?;
        let mut tx = state.db.begin().await?;
        let created =
            accounts::insert_api_key(&mut *tx, user.account_id, Some(id), role, &body.description)
                .await?;
        let key_id = created.record.id.to_string();
        audit::commit(tx, &actor, "api_key.create", Some(&key_id), detail.clone()).await?;
        Ok(created)
    }
    .await;
    let target = id.to_string();
    let created = audit::or_failed(
        &state.db,
        &actor,
        "api_key.create",
        Some(&target),
        detail,
        created,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}
