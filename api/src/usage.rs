//! Metering: usage records relays flush, stored for billing, and per-account usage reports.
//!
//! - `POST /v1/internal/usage` (relays, internal key): one batch of per-endpoint deltas
//!   (`relay_id`, `batch_id`, `period_start`, `period_end`, `records[]` of `account_id`,
//!   `endpoint`, `proto`, `bytes_in`, `bytes_out`, `requests`, `connections`). Stored in
//!   `usage_records` in one transaction with `ON CONFLICT DO NOTHING` on
//!   `(batch_id, account_id, endpoint, proto)`: a relay re-sends a batch it is unsure about with
//!   the same id, and the re-send is answered `{"accepted": 0, "duplicates": n}` without
//!   counting anything twice. A malformed batch (negative count, `period_end` before
//!   `period_start`, a record twice, empty names) is a 400 `invalid_usage`; a batch naming an
//!   account the api does not know is a 422 `unknown_account` whose `error.accounts` lists them,
//!   and nothing of that batch is stored (the relay drops those records and re-sends the rest).
//! - `GET /v1/accounts/{id}/usage?since=&until=` (the account's developer keys, finance,
//!   admin): totals per endpoint and for the account over `[since, until)`, RFC 3339 instants
//!   (write `Z`, or `%2B` for a `+` offset); a record belongs to the window its `period_start`
//!   falls in. Defaults: `until` now, `since` the start of the current UTC month. Reads by
//!   finance and admin keys, and every refusal, are [`audit`]ed as `usage.read` (a finance
//!   action) before the answer goes out.

use crate::extract::{Json, Path, Query};
use crate::{
    AppState,
    audit::{self, Actor},
    auth::{Internal, Principal, Role},
    error::{ApiError, ErrorBody},
};
use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::HashSet;
use uuid::Uuid;

/// Most records one batch may carry.
pub const MAX_RECORDS: usize = 10_000;

/// `POST /v1/internal/usage` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct UsageBatch {
    /// Relay that counted it.
    #[schema(min_length = 1, max_length = 200)]
    pub relay_id: String,
    /// Idempotency key of the batch.
    pub batch_id: Uuid,
    /// Start of the counting period.
    pub period_start: DateTime<Utc>,
    /// End of the counting period.
    pub period_end: DateTime<Utc>,
    /// One row per (account, endpoint, proto).
    #[schema(max_items = 10_000)]
    pub records: Vec<UsageRecord>,
}

/// One endpoint's usage in a batch.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct UsageRecord {
    /// Account that held the endpoint.
    #[schema(min_length = 1, max_length = 64)]
    pub account_id: String,
    /// Endpoint name (`demo`, `tcp:20000`).
    #[schema(min_length = 1, max_length = 255)]
    pub endpoint: String,
    /// `http`, `tcp`, ...
    #[schema(min_length = 1, max_length = 32)]
    pub proto: String,
    /// Bytes visitor → agent.
    #[schema(minimum = 0)]
    pub bytes_in: i64,
    /// Bytes agent → visitor.
    #[schema(minimum = 0)]
    pub bytes_out: i64,
    /// HTTP requests.
    #[schema(minimum = 0)]
    pub requests: i64,
    /// Visitor connections.
    #[schema(minimum = 0)]
    pub connections: i64,
}

/// `POST /v1/internal/usage` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Ingested {
    /// Records stored now.
    pub accepted: u64,
    /// Records an earlier send of the same batch already stored.
    pub duplicates: u64,
}

/// Why a batch was not stored: an [`ApiError`], or accounts the api does not know (422).
#[derive(Debug)]
pub enum IngestError {
    /// Any other error.
    Api(ApiError),
    /// 422 `unknown_account`: these account ids (as sent) are not accounts.
    UnknownAccounts {
        /// The batch.
        batch_id: Uuid,
        /// The unknown ids.
        accounts: Vec<String>,
    },
}

impl From<ApiError> for IngestError {
    fn from(e: ApiError) -> Self {
        IngestError::Api(e)
    }
}

impl From<sqlx::Error> for IngestError {
    fn from(e: sqlx::Error) -> Self {
        IngestError::Api(e.into())
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        match self {
            IngestError::Api(e) => e.into_response(),
            IngestError::UnknownAccounts { batch_id, accounts } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(serde_json::json!({ "error": {
                    "code": "unknown_account",
                    "message": format!(
                        "unknown account {}: nothing of batch {batch_id} was stored",
                        accounts.join(", ")
                    ),
                    "accounts": accounts,
                }})),
            )
                .into_response(),
        }
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_usage", message)
}

fn check_name(what: String, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > max {
        return Err(invalid(format!("{what} must be 1 to {max} characters")));
    }
    Ok(())
}

/// Checks a batch's shape and values (everything but whether its accounts exist).
pub fn validate(batch: &UsageBatch) -> Result<(), ApiError> {
    check_name("`relay_id`".into(), &batch.relay_id, 200)?;
    if batch.records.len() > MAX_RECORDS {
        return Err(invalid(format!(
            "a batch carries at most {MAX_RECORDS} records; this one has {}",
            batch.records.len()
        )));
    }
    if batch.period_end < batch.period_start {
        return Err(invalid(format!(
            "`period_end` ({}) is before `period_start` ({})",
            batch.period_end.to_rfc3339(),
            batch.period_start.to_rfc3339()
        )));
    }
    let mut seen = HashSet::new();
    for (i, r) in batch.records.iter().enumerate() {
        check_name(format!("`records[{i}].account_id`"), &r.account_id, 64)?;
        check_name(format!("`records[{i}].endpoint`"), &r.endpoint, 255)?;
        check_name(format!("`records[{i}].proto`"), &r.proto, 32)?;
        for (field, value) in [
            ("bytes_in", r.bytes_in),
            ("bytes_out", r.bytes_out),
            ("requests", r.requests),
            ("connections", r.connections),
        ] {
            if value < 0 {
                return Err(invalid(format!(
                    "`records[{i}].{field}` is {value}; counts must be 0 or more"
                )));
            }
        }
        if !seen.insert((&r.account_id, &r.endpoint, &r.proto)) {
            return Err(invalid(format!(
                "`records[{i}]` repeats account {} endpoint {} proto {}; send one record each",
                r.account_id, r.endpoint, r.proto
            )));
        }
    }
    Ok(())
}

/// `POST /v1/internal/usage` (relays, with the internal key).
#[utoipa::path(
    post,
    path = "/v1/internal/usage",
    operation_id = "ingest_usage",
    tag = "internal",
    security(("internal_key" = [])),
    request_body = UsageBatch,
    responses(
        (status = 200, description = "Stored; a re-sent batch counts its records as `duplicates`.", body = Ingested),
        (status = 400, description = "`invalid_usage` (negative count, period backwards, a record twice, empty names), `invalid_json`.", body = ErrorBody),
        (status = 422, description = "`unknown_account`: `error.accounts` lists them; nothing of the batch was stored.", body = ErrorBody),
    )
)]
pub async fn ingest(
    State(state): State<AppState>,
    _internal: Internal,
    Json(batch): Json<UsageBatch>,
) -> Result<Json<Ingested>, IngestError> {
    validate(&batch)?;
    if batch.records.is_empty() {
        return Ok(Json(Ingested {
            accepted: 0,
            duplicates: 0,
        }));
    }
    let parsed: Vec<Option<Uuid>> = batch
        .records
        .iter()
        .map(|r| r.account_id.parse().ok())
        .collect();
    let mut ids: Vec<Uuid> = parsed.iter().flatten().copied().collect();
    ids.sort();
    ids.dedup();

    let mut tx = state.db.begin().await?;
    // FOR KEY SHARE: an account cannot be deleted between this check and the insert.
    let known: HashSet<Uuid> =
        sqlx::query_scalar("SELECT id FROM accounts WHERE id = ANY($1) FOR KEY SHARE")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let mut unknown: Vec<String> = Vec::new();
    for (r, id) in batch.records.iter().zip(&parsed) {
        if !id.is_some_and(|id| known.contains(&id)) && !unknown.contains(&r.account_id) {
            unknown.push(r.account_id.clone());
        }
    }
    if !unknown.is_empty() {
        tx.rollback().await?;
        tracing::warn!(
            batch_id = %batch.batch_id, relay_id = %batch.relay_id, accounts = ?unknown,
            "usage batch names unknown accounts; nothing stored"
        );
        return Err(IngestError::UnknownAccounts {
            batch_id: batch.batch_id,
            accounts: unknown,
        });
    }

    let accounts: Vec<Uuid> = parsed.into_iter().flatten().collect();
    let column = |f: fn(&UsageRecord) -> i64| batch.records.iter().map(f).collect::<Vec<i64>>();
    let stored = sqlx::query(
        "INSERT INTO usage_records (relay_id, batch_id, period_start, period_end, account_id,
             endpoint, proto, bytes_in, bytes_out, requests, connections)
         SELECT $1, $2, $3, $4, r.*
         FROM UNNEST($5::uuid[], $6::text[], $7::text[], $8::bigint[], $9::bigint[],
                     $10::bigint[], $11::bigint[])
              AS r(account_id, endpoint, proto, bytes_in, bytes_out, requests, connections)
         ON CONFLICT ON CONSTRAINT usage_records_batch_key DO NOTHING",
    )
    .bind(&batch.relay_id)
    .bind(batch.batch_id)
    .bind(batch.period_start)
    .bind(batch.period_end)
    .bind(&accounts)
    .bind(
        batch
            .records
            .iter()
            .map(|r| r.endpoint.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        batch
            .records
            .iter()
            .map(|r| r.proto.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(column(|r| r.bytes_in))
    .bind(column(|r| r.bytes_out))
    .bind(column(|r| r.requests))
    .bind(column(|r| r.connections))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;

    let total = batch.records.len() as u64;
    let ingested = Ingested {
        accepted: stored,
        duplicates: total.saturating_sub(stored),
    };
    metrics::counter!("burrow_api_usage_records_total", "outcome" => "accepted")
        .increment(ingested.accepted);
    metrics::counter!("burrow_api_usage_records_total", "outcome" => "duplicate")
        .increment(ingested.duplicates);
    tracing::debug!(
        batch_id = %batch.batch_id, relay_id = %batch.relay_id,
        accepted = ingested.accepted, duplicates = ingested.duplicates, "usage batch stored"
    );
    Ok(Json(ingested))
}

/// `GET /v1/accounts/{id}/usage` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageWindow {
    /// Inclusive start (RFC 3339); default the start of the current UTC month.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Exclusive end (RFC 3339); default now.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

impl UsageWindow {
    /// The window `[since, until)` with defaults applied, as of `now`.
    pub fn resolve(&self, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
        let until = self.until.unwrap_or(now);
        let since = match self.since {
            Some(s) => s,
            None => Utc
                .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
                .single()
                .unwrap_or(now),
        };
        if since >= until {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "`since` ({}) must be before `until` ({}){}",
                    since.to_rfc3339(),
                    until.to_rfc3339(),
                    if self.since.is_none() {
                        "; `since` defaults to the start of the current month"
                    } else {
                        ""
                    }
                ),
            ));
        }
        Ok((since, until))
    }
}

/// Usage counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Totals {
    /// Bytes visitor → agent.
    pub bytes_in: i64,
    /// Bytes agent → visitor.
    pub bytes_out: i64,
    /// HTTP requests.
    pub requests: i64,
    /// Visitor connections.
    pub connections: i64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.bytes_in = self.bytes_in.saturating_add(o.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(o.bytes_out);
        self.requests = self.requests.saturating_add(o.requests);
        self.connections = self.connections.saturating_add(o.connections);
    }
}

/// One endpoint's totals.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EndpointUsage {
    /// Endpoint name.
    pub endpoint: String,
    /// Protocol.
    pub proto: String,
    /// Its totals over the window.
    #[serde(flatten)]
    pub totals: Totals,
}

/// `GET /v1/accounts/{id}/usage` answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccountUsage {
    /// The account.
    pub account_id: Uuid,
    /// Window start (inclusive).
    pub since: DateTime<Utc>,
    /// Window end (exclusive).
    pub until: DateTime<Utc>,
    /// Per endpoint, by name.
    pub endpoints: Vec<EndpointUsage>,
    /// The account's totals.
    pub total: Totals,
}

fn may_read_usage(principal: &Principal, account_id: Uuid) -> Result<(), ApiError> {
    match principal.role {
        Role::Admin | Role::Finance => Ok(()),
        Role::Developer if principal.account_id == Some(account_id) => Ok(()),
        role => Err(ApiError::Forbidden(format!(
            "reading the usage of account {account_id} needs a finance or admin key, or a \
             developer key of that account; this API key has the {} role{}",
            role.as_str(),
            if role == Role::Developer {
                " for another account"
            } else {
                ""
            }
        ))),
    }
}

/// `GET /v1/accounts/{id}/usage?since=&until=`.
#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/usage",
    tag = "usage",
    security(("api_key" = [])),
    params(("id" = Uuid, Path, description = "Account id"), UsageWindow),
    responses(
        (status = 200, description = "Totals per endpoint and for the account over `[since, until)`.", body = AccountUsage),
        (status = 400, description = "`invalid_query` (a bad instant, or `since` not before `until`).", body = ErrorBody),
        (status = 403, description = "Not finance, admin or a developer key of this account.", body = ErrorBody),
        (status = 404, description = "No such account.", body = ErrorBody),
    )
)]
pub async fn account_usage(
    State(state): State<AppState>,
    actor: Actor,
    Path(account_id): Path<Uuid>,
    Query(window): Query<UsageWindow>,
) -> Result<Json<AccountUsage>, ApiError> {
    let target = account_id.to_string();
    let audited = actor.principal.role != Role::Developer;
    let read = async {
        may_read_usage(&actor.principal, account_id)?;
        read_usage(&state, account_id, &window).await
    }
    .await;
    match read {
        Ok(usage) => {
            if audited {
                let detail = serde_json::json!({ "since": usage.since, "until": usage.until });
                audit::record(&state.db, &actor, "usage.read", Some(&target), "ok", detail).await?;
            }
            Ok(Json(usage))
        }
        Err(e) if audited || matches!(e, ApiError::Forbidden(_)) => {
            let detail = serde_json::json!({ "since": window.since, "until": window.until });
            Err(audit::failed(&state.db, &actor, "usage.read", Some(&target), detail, e).await)
        }
        Err(e) => Err(e),
    }
}

async fn read_usage(
    state: &AppState,
    account_id: Uuid,
    window: &UsageWindow,
) -> Result<AccountUsage, ApiError> {
    let (since, until) = window.resolve(Utc::now())?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)")
        .bind(account_id)
        .fetch_one(&state.db)
        .await?;
    if !exists {
        return Err(ApiError::NotFound(format!("no account {account_id}")));
    }
    let rows = sqlx::query(
        "SELECT endpoint, proto,
                SUM(bytes_in)::BIGINT AS bytes_in, SUM(bytes_out)::BIGINT AS bytes_out,
                SUM(requests)::BIGINT AS requests, SUM(connections)::BIGINT AS connections
         FROM usage_records
         WHERE account_id = $1 AND period_start >= $2 AND period_start < $3
         GROUP BY endpoint, proto
         ORDER BY endpoint, proto",
    )
    .bind(account_id)
    .bind(since)
    .bind(until)
    .fetch_all(&state.db)
    .await?;
    let mut total = Totals::default();
    let endpoints = rows
        .into_iter()
        .map(|row| {
            let totals = Totals {
                bytes_in: row.get("bytes_in"),
                bytes_out: row.get("bytes_out"),
                requests: row.get("requests"),
                connections: row.get("connections"),
            };
            total.add(&totals);
            EndpointUsage {
                endpoint: row.get("endpoint"),
                proto: row.get("proto"),
                totals,
            }
        })
        .collect();
    Ok(AccountUsage {
        account_id,
        since,
        until,
        endpoints,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: serde_json::Value) -> UsageBatch {
        serde_json::from_value(serde_json::json!({
            "relay_id": "relay-a",
            "batch_id": Uuid::new_v4(),
            "period_start": "2026-01-01T00:00:00Z",
            "period_end": "2026-01-01T00:01:00Z",
            "records": records,
        }))
        .unwrap()
    }

    fn record(endpoint: &str) -> serde_json::Value {
        serde_json::json!({
            "account_id": Uuid::nil(), "endpoint": endpoint, "proto": "http",
            "bytes_in": 1, "bytes_out": 2, "requests": 3, "connections": 0,
        })
    }

    fn message(e: ApiError) -> String {
        match e {
            ApiError::BadRequest { code, message } => {
                assert_eq!(code, "invalid_usage");
                message
            }
            other => panic!("not a 400: {other:?}"),
        }
    }

    #[test]
    fn valid_batches_pass() {
        validate(&batch(serde_json::json!([record("a"), record("b")]))).unwrap();
        validate(&batch(serde_json::json!([]))).unwrap();
    }

    #[test]
    fn negative_counts_are_named() {
        let mut r = record("a");
        r["bytes_out"] = (-5).into();
        let m = message(validate(&batch(serde_json::json!([record("x"), r]))).unwrap_err());
        assert!(
            m.contains("records[1].bytes_out") && m.contains("-5"),
            "{m}"
        );
    }

    #[test]
    fn period_must_not_run_backwards() {
        let mut b = batch(serde_json::json!([record("a")]));
        std::mem::swap(&mut b.period_start, &mut b.period_end);
        let m = message(validate(&b).unwrap_err());
        assert!(m.contains("period_end"), "{m}");
        // An empty period (start == end) is fine.
        b.period_end = b.period_start;
        validate(&b).unwrap();
    }

    #[test]
    fn repeated_records_and_empty_names_are_rejected() {
        let m =
            message(validate(&batch(serde_json::json!([record("a"), record("a")]))).unwrap_err());
        assert!(m.contains("records[1]") && m.contains("repeats"), "{m}");
        let m = message(validate(&batch(serde_json::json!([record(" ")]))).unwrap_err());
        assert!(m.contains("records[0].endpoint"), "{m}");
        let mut b = batch(serde_json::json!([]));
        b.relay_id = String::new();
        assert!(message(validate(&b).unwrap_err()).contains("relay_id"));
    }

    #[test]
    fn window_defaults_to_this_month_until_now() {
        let now = Utc.with_ymd_and_hms(2026, 3, 17, 12, 30, 0).unwrap();
        let (since, until) = UsageWindow::default().resolve(now).unwrap();
        assert_eq!(since, Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap());
        assert_eq!(until, now);
        let w = UsageWindow {
            since: Some(now),
            until: Some(now),
        };
        assert!(matches!(
            w.resolve(now),
            Err(ApiError::BadRequest {
                code: "invalid_query",
                ..
            })
        ));
    }

    #[test]
    fn readers_of_usage() {
        let acct = Uuid::new_v4();
        let p = |role, account_id| Principal {
            key_id: Uuid::nil(),
            account_id,
            role,
            user_id: None,
        };
        assert!(may_read_usage(&p(Role::Developer, Some(acct)), acct).is_ok());
        assert!(may_read_usage(&p(Role::Finance, None), acct).is_ok());
        assert!(may_read_usage(&p(Role::Admin, None), acct).is_ok());
        assert!(may_read_usage(&p(Role::Developer, Some(Uuid::new_v4())), acct).is_err());
        assert!(may_read_usage(&p(Role::Ops, None), acct).is_err());
    }
}
