//! Who is calling: API keys (`Authorization: Bearer bk_...`) resolved to a role (recording the
//! key's `last_used_at`, at most once a minute), and the internal key relays present;
//! `GET /v1/me`.

use crate::{AppState, error::ApiError};
use axum::{extract::FromRequestParts, http::request::Parts};
use burrow_common::token;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Roles an API key can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages their own account's tokens.
    Developer,
    /// Sees and drives workflows, sessions and dead letters.
    Ops,
    /// Finance operations (reports, reconciliation).
    Finance,
    /// Everything.
    Admin,
}

impl Role {
    /// Parses a stored role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "developer" => Some(Role::Developer),
            "ops" => Some(Role::Ops),
            "finance" => Some(Role::Finance),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Developer => "developer",
            Role::Ops => "ops",
            Role::Finance => "finance",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated API key.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Key id.
    pub key_id: Uuid,
    /// Account the key belongs to (none for platform-wide keys).
    pub account_id: Option<Uuid>,
    /// Its role.
    pub role: Role,
    /// The user the key belongs to (none for keys created without a user).
    pub user_id: Option<Uuid>,
}

impl Principal {
    /// Requires one of `roles` (admin always passes).
    pub fn require(&self, roles: &[Role], action: &str) -> Result<(), ApiError> {
        if self.role == Role::Admin || roles.contains(&self.role) {
            return Ok(());
        }
        let needed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::Forbidden(format!(
            "{action} needs the {} role; this API key has the {} role",
            needed.join(" or "),
            self.role.as_str()
        )))
    }

    /// Requires admin, or a developer key of `account_id`.
    pub fn require_account(&self, account_id: Uuid, action: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Developer if self.account_id == Some(account_id) => Ok(()),
            _ => Err(ApiError::Forbidden(format!(
                "{action} needs an admin key or a developer key of account {account_id}"
            ))),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or_else(|| {
            ApiError::Unauthorized("missing API key: send `Authorization: Bearer <key>`".into())
        })?;
        // One round trip: look the key up and record its use, writing `last_used_at` at most
        // once a minute per key (not a row write on every request).
        let row = sqlx::query(
            "WITH k AS (
                 SELECT k.id, k.account_id, k.role, k.user_id, k.last_used_at FROM api_keys k
                 LEFT JOIN users u ON u.id = k.user_id
                 WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND u.disabled_at IS NULL
             ), used AS (
                 UPDATE api_keys SET last_used_at = now() FROM k
                 WHERE api_keys.id = k.id
                   AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '60 seconds')
             )
             SELECT id, account_id, role, user_id FROM k",
        )
        .bind(token::hash(key))
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| {
            ApiError::Unauthorized("unknown or revoked API key (or its user is disabled)".into())
        })?;
        let role: String = row.get("role");
        Ok(Principal {
            key_id: row.get("id"),
            user_id: row.get("user_id"),
            account_id: row.get("account_id"),
            role: Role::parse(&role)
                .ok_or_else(|| ApiError::Internal(format!("stored role {role:?} is unknown")))?,
        })
    }
}

/// A caller that presented the internal key (a relay).
pub struct Internal;

impl FromRequestParts<AppState> for Internal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = bearer(parts).unwrap_or_default();
        let expected = state.config.internal_key.expose();
        if presented.as_bytes().ct_eq(expected.as_bytes()).into() {
            Ok(Internal)
        } else {
            Err(ApiError::Unauthorized(
                "internal endpoints need the relay internal key".into(),
            ))
        }
    }
}

/// `GET /v1/me` answer: which key this is and what it may do.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The API key's id.
    pub key_id: Uuid,
    /// Its account; `null` for platform-wide keys (admin, ops, finance without an account).
    pub account_id: Option<Uuid>,
    /// Its role.
    pub role: Role,
    /// The user the key belongs to (`null` for keys created without a user).
    pub user_id: Option<Uuid>,
}

/// `GET /v1/me` (any API key): the CLI finds its account with it.
#[utoipa::path(
    get,
    path = "/v1/me",
    operation_id = "get_me",
    tag = "api-keys",
    security(("api_key" = [])),
    responses((status = 200, description = "The calling key.", body = Me))
)]
pub async fn me(principal: Principal) -> axum::Json<Me> {
    axum::Json(Me {
        key_id: principal.key_id,
        account_id: principal.account_id,
        role: principal.role,
        user_id: principal.user_id,
    })
}
