//! The audit log: who did what, when, from where, and how it ended, for admin, ops and finance
//! actions. Rows live in `audit_log` (migration `0004_audit.sql`), which the database keeps
//! append-only: a statement trigger raises on every `UPDATE`, `DELETE` and `TRUNCATE`, so not
//! even a bug in the api can rewrite history.
//!
//! # What is recorded
//! Handlers take an [`Actor`] (the API key's [`Principal`] plus the TCP peer address) and call
//! [`record`] (or [`failed`] for an action that did not happen):
//! - **every mutation**, whatever the role, developers' own tokens included: `account.create`,
//!   `authtoken.create`, `authtoken.revoke`, `api_key.create`, `account.plan`,
//!   `dead_letter.replay` (also one row per run a replay-all replays, with
//!   `detail.via = "replay_all"`),
//!   `dead_letter.replay_all`, `session.kick`, `name.reserve`, `name.release`, `domain.add`,
//!   `domain.verify`, `domain.remove`, `policy.put`, `policy.delete`, `user.create`,
//!   `user.disable`, `api_key.revoke`, `incident.acknowledge`, `incident.resolve`,
//!   `certificate.renew`;
//! - **reads with a platform-wide role** (admin, ops, finance) of customer or sensitive data:
//!   `account.read`, `authtoken.list`, `api_key.list`, `user.list`, `usage.read`,
//!   `session.list`, `audit.read`, `certificate.list`, `certificate.read`,
//!   `cert_callback.list`. A developer
//!   reading its own account is not recorded, and neither is `GET /v1/ops/workflows`
//!   (the console polls it every 3 s; it holds workflow state, not customer data), nor are
//!   `GET /v1/incidents[/{id}]`, `GET /v1/ops/regions` and the callback mappings (polled
//!   likewise, or configuration);
//! - **refusals and failures** of all of these, `workflow.list`, `incident.list`,
//!   `incident.read`, `region.list` and `cert_callback.mappings` included: the outcome is the
//!   error code the caller got (`forbidden`, `not_found`, `conflict`, `invalid_name`, ...).
//!   A request whose API key is missing or unknown (401) has no actor and is not recorded.
//!
//! `target` is the id acted on: the record created, revoked, replayed or kicked, the account
//! read; for a refused or failed creation, the account it was for (none for accounts).
//! `detail` carries the rest (role of a new key, filters of a read); never a secret.
//!
//! # Where from
//! `source_ip` is the TCP peer ([`axum::extract::ConnectInfo`], wired in [`crate::run`]).
//! `X-Forwarded-For` is not trusted: the api has no notion of a trusted proxy, and any client
//! could write that header. Behind a reverse proxy the proxy's address is recorded.
//!
//! # When the row cannot be written
//! A failed audit write is never silent: it is logged at error level with every field of the
//! row, and the action answers 503 `unavailable`.
//! - Changes that are only database writes (accounts, authtokens, API keys, revocation) write
//!   their row **in the same transaction**: if the row cannot be written nothing changes.
//! - Actions with effects outside the database (kicking a session on a relay, signalling a
//!   Temporal workflow) write their row **right after**, with the real outcome. If that fails the
//!   effect has happened; the 503's message says so.
//! - Reads write their row after reading and before answering: without the row, no data.
//! - For refusals and failures ([`failed`]) the caller still gets the action's own error (the
//!   action did not happen); a failed write is only logged.
//!
//! # Reading: `GET /v1/audit`
//! `?actor=&action=&since=&until=&limit=&before=`, newest first. `actor` is an API key id, a
//! user id or a role name, `action` an exact action, `since`/`until` RFC 3339 instants
//! (`[since, until)`),
//! `limit` 1 to 1000 (default 100), `before` the `next_before` of the previous page. Admin and
//! ops read everything; finance reads finance actions (`usage.read`) and what finance keys did;
//! developers get 403.

use crate::extract::{Json, Query};
use crate::{
    AppState,
    auth::{Principal, Role},
    error::{ApiError, ApiResult},
};
use axum::{
    extract::{ConnectInfo, FromRequestParts, State},
    http::request::Parts,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use uuid::Uuid;

/// Actions finance keys may read in the audit log besides their own.
pub const FINANCE_ACTIONS: &[&str] = &["usage.read"];

/// Who is acting and from where: the authenticated API key and the TCP peer's address.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The API key.
    pub principal: Principal,
    /// The peer's IP address (none when the api is served without connection info, e.g. in
    /// tests that call the router directly).
    pub source_ip: Option<IpAddr>,
}

impl FromRequestParts<AppState> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let source_ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_canonical());
        Ok(Actor {
            principal,
            source_ip,
        })
    }
}

/// The stable code of `e`, as the client sees it in `error.code`: the audit outcome.
pub fn outcome_of(e: &ApiError) -> &'static str {
    match e {
        ApiError::BadRequest { code, .. } => code,
        ApiError::Unauthorized(_) => "unauthorized",
        ApiError::Forbidden(_) => "forbidden",
        ApiError::NotFound(_) => "not_found",
        ApiError::Conflict(_) => "conflict",
        ApiError::TooLarge(_) => "payload_too_large",
        ApiError::Unprocessable { code, .. } => code,
        ApiError::InvalidPolicy { .. } => "invalid_policy",
        ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
        ApiError::Unavailable(_) => "unavailable",
        ApiError::Internal(_) => "internal",
    }
}

/// Appends one row. `db` is the pool, or the transaction of the change being recorded.
///
/// A failure is logged at error level with the whole row and returned as a 503.
pub async fn record<'e>(
    db: impl sqlx::PgExecutor<'e>,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    outcome: &str,
    detail: serde_json::Value,
) -> ApiResult<()> {
    let p = &actor.principal;
    let source_ip = actor.source_ip.map(|ip| ip.to_string());
    // PostgreSQL text and jsonb cannot hold U+0000: a caller putting one in a refused request
    // must not keep the refusal out of the log.
    let detail = without_nul(detail);
    let target = target.map(|t| t.replace('\0', "\u{fffd}"));
    let target = target.as_deref();
    let written = sqlx::query(
        "INSERT INTO audit_log (actor_key_id, actor_role, actor_account_id, action, target,
             source_ip, outcome, detail, actor_user_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(p.key_id)
    .bind(p.role.as_str())
    .bind(p.account_id)
    .bind(action)
    .bind(target)
    .bind(&source_ip)
    .bind(outcome)
    .bind(&detail)
    .bind(p.user_id)
    .execute(db)
    .await;
    if let Err(e) = written {
        tracing::error!(
            error = %e, actor_key_id = %p.key_id, actor_role = p.role.as_str(),
            actor_account_id = ?p.account_id, action, audit_target = ?target,
            source_ip = ?source_ip, outcome, detail = %detail, "audit log write failed"
        );
        return Err(ApiError::Unavailable(
            "the audit log cannot be written right now; retry later".into(),
        ));
    }
    Ok(())
}

/// `value` with every U+0000 in its strings (and keys) replaced by U+FFFD.
fn without_nul(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let clean = |s: String| {
        if s.contains('\0') {
            s.replace('\0', "\u{fffd}")
        } else {
            s
        }
    };
    match value {
        Value::String(s) => Value::String(clean(s)),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (clean(k), without_nul(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Writes the `ok` row of a database-only change inside its transaction `tx`, then commits:
/// the change and its audit row land together or not at all.
pub async fn commit(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    detail: serde_json::Value,
) -> ApiResult<()> {
    record(&mut *tx, actor, action, target, "ok", detail).await?;
    tx.commit().await?;
    Ok(())
}

/// Records `action` as refused or failed with `error` (outside any transaction: the change, if
/// any, was rolled back) and hands `error` back for the caller. A failed write is logged by
/// [`record`]; the caller still gets the action's own error.
pub async fn failed(
    db: &sqlx::PgPool,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    detail: serde_json::Value,
    error: ApiError,
) -> ApiError {
    let _ = record(db, actor, action, target, outcome_of(&error), detail).await;
    error
}

/// An audited read: runs `read` (which checks the caller may read, then reads); on success
/// records `action` as `ok` unless a developer read (its own account's data, the only kind a
/// developer key can read; not recorded, see the module docs); on error records the refusal
/// or failure and hands the error back.
pub async fn read<T>(
    db: &sqlx::PgPool,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    detail: serde_json::Value,
    read: impl std::future::Future<Output = ApiResult<T>>,
) -> ApiResult<T> {
    let result = async {
        let value = read.await?;
        if actor.principal.role != Role::Developer {
            record(db, actor, action, target, "ok", detail.clone()).await?;
        }
        Ok(value)
    }
    .await;
    or_failed(db, actor, action, target, detail, result).await
}

/// Hands `result` back, recording `action` as refused or failed first when it is an error
/// (see [`failed`]).
pub async fn or_failed<T>(
    db: &sqlx::PgPool,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    detail: serde_json::Value,
    result: ApiResult<T>,
) -> ApiResult<T> {
    match result {
        Ok(v) => Ok(v),
        Err(e) => Err(failed(db, actor, action, target, detail, e).await),
    }
}

/// The answer for an action whose effect outside the database happened but whose audit row
/// could not be written.
pub fn unaudited(what: &str) -> ApiError {
    ApiError::Unavailable(format!(
        "{what}, but the audit log could not be written; the api logs hold the record"
    ))
}

/// `GET /v1/audit` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// An API key id, a user id or a role name.
    pub actor: Option<String>,
    /// Exact action name.
    pub action: Option<String>,
    /// Inclusive start (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Exclusive end (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Only rows with a smaller id (the previous page's `next_before`).
    pub before: Option<i64>,
}

/// Default page size of `GET /v1/audit`.
pub const DEFAULT_LIMIT: i64 = 100;
/// Largest page size of `GET /v1/audit`.
pub const MAX_LIMIT: i64 = 1000;

/// An [`AuditQuery`] checked and resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// Only this API key, or the keys of this user.
    pub actor_key_id: Option<Uuid>,
    /// Only this role.
    pub actor_role: Option<Role>,
    /// Only this action.
    pub action: Option<String>,
    /// From (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Until (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// Page size.
    pub limit: i64,
    /// Cursor.
    pub before: Option<i64>,
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_query", message)
}

impl AuditQuery {
    /// Checks the parameters; every error is a 400 `invalid_query` naming the parameter.
    pub fn resolve(&self) -> ApiResult<Filter> {
        let (actor_key_id, actor_role) = match self.actor.as_deref().map(str::trim) {
            None | Some("") => (None, None),
            Some(a) => match (a.parse::<Uuid>(), Role::parse(a)) {
                (Ok(id), _) => (Some(id), None),
                (_, Some(role)) => (None, Some(role)),
                _ => {
                    return Err(invalid(format!(
                        "`actor` must be an API key id, a user id or a role (developer, ops, \
                         finance, admin); got {a:?}"
                    )));
                }
            },
        };
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(invalid(format!(
                "`limit` must be 1 to {MAX_LIMIT}; got {limit}"
            )));
        }
        if let Some(b) = self.before
            && b < 1
        {
            return Err(invalid(format!(
                "`before` is a row id (the `next_before` of the previous page); got {b}"
            )));
        }
        if let (Some(s), Some(u)) = (self.since, self.until)
            && s >= u
        {
            return Err(invalid(format!(
                "`since` ({}) must be before `until` ({})",
                s.to_rfc3339(),
                u.to_rfc3339()
            )));
        }
        let action = self
            .action
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        if action.as_ref().is_some_and(|a| a.len() > 100) {
            return Err(invalid("`action` is at most 100 characters".into()));
        }
        Ok(Filter {
            actor_key_id,
            actor_role,
            action,
            since: self.since,
            until: self.until,
            limit,
            before: self.before,
        })
    }
}

/// What `role` may read of the audit log: `Ok(None)` everything, `Ok(Some(actions))` only
/// those actions and the rows of its own role; developers may not read it.
pub fn readable_by(role: Role) -> ApiResult<Option<&'static [&'static str]>> {
    match role {
        Role::Admin | Role::Ops => Ok(None),
        Role::Finance => Ok(Some(FINANCE_ACTIONS)),
        Role::Developer => Err(ApiError::Forbidden(
            "reading the audit log needs an admin, ops or finance key; this API key has the \
             developer role"
                .into(),
        )),
    }
}

/// One audit row.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Row id (the cursor).
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// API key used.
    pub actor_key_id: Option<Uuid>,
    /// The user the key belongs to, if any.
    pub actor_user_id: Option<Uuid>,
    /// Its role.
    pub actor_role: String,
    /// Its account.
    pub actor_account_id: Option<Uuid>,
    /// What.
    pub action: String,
    /// The id acted on.
    pub target: Option<String>,
    /// From where.
    pub source_ip: Option<String>,
    /// `ok` or the error code.
    pub outcome: String,
    /// The rest.
    pub detail: serde_json::Value,
}

/// `GET /v1/audit` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    pub next_before: Option<i64>,
}

/// `GET /v1/audit?actor=&action=&since=&until=&limit=&before=` (admin, ops; finance: finance
/// actions).
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "list_audit",
    tag = "audit",
    security(("api_key" = [])),
    params(AuditQuery),
    responses(
        (status = 200, description = "Rows newest first; pass `next_before` as `before` for the next page.", body = AuditPage),
        (status = 400, description = "`invalid_query`.", body = crate::error::ErrorBody),
        (status = 403, description = "A developer key.", body = crate::error::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    actor: Actor,
    Query(query): Query<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    let detail = json!({
        "actor": query.actor, "action": query.action, "since": query.since,
        "until": query.until, "limit": query.limit, "before": query.before,
    });
    let only = match readable_by(actor.principal.role) {
        Ok(only) => only,
        Err(e) => return Err(failed(&state.db, &actor, "audit.read", None, detail, e).await),
    };
    let filter = match query.resolve() {
        Ok(f) => f,
        Err(e) => return Err(failed(&state.db, &actor, "audit.read", None, detail, e).await),
    };
    let entries = sqlx::query_as::<_, AuditEntry>(
        "SELECT id, at, actor_key_id, actor_user_id, actor_role, actor_account_id, action,
                target, source_ip, outcome, detail
         FROM audit_log
         WHERE ($1::uuid IS NULL OR actor_key_id = $1 OR actor_user_id = $1)
           AND ($2::text IS NULL OR actor_role = $2)
           AND ($3::text IS NULL OR action = $3)
           AND ($4::timestamptz IS NULL OR at >= $4)
           AND ($5::timestamptz IS NULL OR at < $5)
           AND ($6::bigint IS NULL OR id < $6)
           AND ($7::text[] IS NULL OR action = ANY($7) OR actor_role = $8)
         ORDER BY id DESC LIMIT $9",
    )
    .bind(filter.actor_key_id)
    .bind(filter.actor_role.map(Role::as_str))
    .bind(&filter.action)
    .bind(filter.since)
    .bind(filter.until)
    .bind(filter.before)
    .bind(only)
    .bind(actor.principal.role.as_str())
    .bind(filter.limit)
    .fetch_all(&state.db)
    .await?;
    let next_before = (entries.len() as i64 == filter.limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    record(&state.db, &actor, "audit.read", None, "ok", detail).await?;
    Ok(Json(AuditPage {
        entries,
        next_before,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_never_reach_the_database() {
        let detail = json!({"email": "a\u{0}b", "nested": ["\u{0}"], "k\u{0}": 1, "n": 2});
        let clean = without_nul(detail);
        assert!(!clean.to_string().contains("\\u0000"), "{clean}");
        assert_eq!(clean["email"], "a\u{fffd}b");
        assert_eq!(clean["n"], 2);
    }

    fn q(v: serde_json::Value) -> AuditQuery {
        serde_json::from_value(v).unwrap()
    }

    fn message(r: ApiResult<Filter>) -> String {
        match r {
            Err(ApiError::BadRequest { code, message }) => {
                assert_eq!(code, "invalid_query");
                message
            }
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let f = AuditQuery::default().resolve().unwrap();
        assert_eq!(f.limit, DEFAULT_LIMIT);
        assert_eq!(f.actor_key_id, None);
        assert_eq!(f.actor_role, None);
        assert_eq!(f.action, None);
    }

    #[test]
    fn actor_is_a_key_id_or_a_role() {
        let id = Uuid::new_v4();
        let f = q(json!({"actor": id.to_string()})).resolve().unwrap();
        assert_eq!(f.actor_key_id, Some(id));
        let f = q(json!({"actor": "finance"})).resolve().unwrap();
        assert_eq!(f.actor_role, Some(Role::Finance));
        let m = message(q(json!({"actor": "bob"})).resolve());
        assert!(m.contains("`actor`") && m.contains("bob"), "{m}");
    }

    #[test]
    fn bad_limits_cursors_and_windows_are_named() {
        for limit in [0, -1, MAX_LIMIT + 1] {
            let m = message(q(json!({ "limit": limit })).resolve());
            assert!(m.contains("`limit`"), "{m}");
        }
        assert_eq!(
            q(json!({"limit": MAX_LIMIT})).resolve().unwrap().limit,
            MAX_LIMIT
        );
        assert!(message(q(json!({"before": 0})).resolve()).contains("`before`"));
        let m = message(
            q(json!({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"})).resolve(),
        );
        assert!(m.contains("`since`"), "{m}");
    }

    #[test]
    fn who_reads_what() {
        assert_eq!(readable_by(Role::Admin).unwrap(), None);
        assert_eq!(readable_by(Role::Ops).unwrap(), None);
        assert_eq!(readable_by(Role::Finance).unwrap(), Some(FINANCE_ACTIONS));
        assert!(matches!(
            readable_by(Role::Developer),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[test]
    fn outcomes_are_the_error_codes() {
        assert_eq!(outcome_of(&ApiError::Forbidden(String::new())), "forbidden");
        assert_eq!(
            outcome_of(&ApiError::bad_request("invalid_name", "x")),
            "invalid_name"
        );
        assert_eq!(outcome_of(&ApiError::NotFound(String::new())), "not_found");
    }
}
