//! Ops endpoints (`/v1/ops/*`, ops or admin role): workflows and their states, dead-letter
//! replay (one, or all at a bounded rate), agent sessions across relays, and runbook pages.
//!
//! Replays, kicks, session listings and every refusal are [`audit`]ed. Their effects are outside
//! the database (Temporal signals, relay calls), so the row is written right after, with the
//! real outcome; the workflow listing the console polls is not recorded.

use crate::extract::{Json, Path, Query};
use crate::{
    AppState,
    audit::{self, Actor},
    auth::Role,
    error::{ApiError, ApiResult},
};
use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use burrow_workflows::{certificate, kinds, provider_webhook};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

/// A workflow as ops see it.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WorkflowRun {
    /// Temporal workflow id.
    pub workflow_id: String,
    /// Kind.
    pub kind: String,
    /// What it is about.
    pub subject: String,
    /// Current state.
    pub state: String,
    /// Attempts of its main activity so far.
    pub attempts: i32,
    /// Last error.
    pub last_error: Option<String>,
    /// Replays so far.
    pub replays: i32,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Whether it is parked in a failure state (replayable).
    #[sqlx(skip)]
    pub parked: bool,
    /// Runbook page for its state, when it is a failure state.
    #[sqlx(skip)]
    pub runbook: Option<String>,
}

/// Filters of `GET /v1/ops/workflows`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WorkflowFilter {
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this state; `parked` means any failure state.
    pub state: Option<String>,
    /// At most this many (default 200, max 1000).
    pub limit: Option<i64>,
}

/// `GET /v1/ops/workflows?kind=&state=&limit=`.
#[utoipa::path(
    get,
    path = "/v1/ops/workflows",
    tag = "ops",
    security(("api_key" = [])),
    params(WorkflowFilter),
    responses(
        (status = 200, description = "Runs, most recently changed first.", body = Vec<WorkflowRun>),
        (status = 400, description = "`unknown_kind`, `invalid_query`.", body = crate::error::ErrorBody),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
    )
)]
pub async fn list_workflows(
    State(state): State<AppState>,
    actor: Actor,
    Query(filter): Query<WorkflowFilter>,
) -> ApiResult<Json<Vec<WorkflowRun>>> {
    if let Err(e) = actor.principal.require(&[Role::Ops], "listing workflows") {
        return Err(audit::failed(&state.db, &actor, "workflow.list", None, json!({}), e).await);
    }
    let known = kinds::all();
    if let Some(k) = &filter.kind
        && !known.iter().any(|x| x.name == k)
    {
        let names: Vec<&str> = known.iter().map(|x| x.name).collect();
        return Err(ApiError::bad_request(
            "unknown_kind",
            format!("unknown workflow kind {k:?}; kinds: {}", names.join(", ")),
        ));
    }
    let parked_states = kinds::all_failure_states();
    let limit = filter.limit.unwrap_or(200).clamp(1, 1000);
    let mut runs = sqlx::query_as::<_, WorkflowRun>(
        "SELECT workflow_id, kind, subject, state, attempts, last_error, replays, updated_at
         FROM workflow_runs
         WHERE ($1::text IS NULL OR kind = $1)
           AND ($2::text IS NULL OR state = $2 OR ($2 = 'parked' AND state = ANY($3)))
         ORDER BY updated_at DESC LIMIT $4",
    )
    .bind(&filter.kind)
    .bind(&filter.state)
    .bind(&parked_states)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    for run in &mut runs {
        run.parked = kinds::is_failure_state(&run.kind, &run.state);
        if run.parked {
            run.runbook = Some(format!("/{}", kinds::runbook_path(&run.kind, &run.state)));
        }
    }
    Ok(Json(runs))
}

/// `POST /v1/ops/dead-letters/{id}/replay`.
#[utoipa::path(
    post,
    path = "/v1/ops/dead-letters/{id}/replay",
    tag = "ops",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Workflow id of a parked run")),
    responses(
        (status = 202, description = "The run was signalled to retry.", body = crate::openapi::shapes::ReplayRequested),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
        (status = 404, description = "No such run.", body = crate::error::ErrorBody),
        (status = 409, description = "The run is not parked (or another replay won).", body = crate::error::ErrorBody),
    )
)]
pub async fn replay_one(
    State(state): State<AppState>,
    actor: Actor,
    Path(workflow_id): Path<String>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let replayed = match actor
        .principal
        .require(&[Role::Ops], "replaying a dead letter")
    {
        Ok(()) => replay(&state, &workflow_id, &actor.principal.key_id.to_string()).await,
        Err(e) => Err(e),
    };
    if let Err(e) = replayed {
        let (target, detail) = (Some(workflow_id.as_str()), json!({}));
        return Err(
            audit::failed(&state.db, &actor, "dead_letter.replay", target, detail, e).await,
        );
    }
    audit::record(
        &state.db,
        &actor,
        "dead_letter.replay",
        Some(&workflow_id),
        "ok",
        json!({}),
    )
    .await
    .map_err(|_| audit::unaudited(&format!("replay of {workflow_id} was requested")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "workflow_id": workflow_id, "replay": "requested" })),
    ))
}

/// Moves a parked run to `replay_requested` (only one caller wins) and signals it.
async fn replay(state: &AppState, workflow_id: &str, requested_by: &str) -> ApiResult<()> {
    let current: Option<(String, String)> =
        sqlx::query_as("SELECT kind, state FROM workflow_runs WHERE workflow_id = $1")
            .bind(workflow_id)
            .fetch_optional(&state.db)
            .await?;
    let (kind, from) =
        current.ok_or_else(|| ApiError::NotFound(format!("no workflow {workflow_id}")))?;
    if !kinds::is_failure_state(&kind, &from) {
        return Err(ApiError::Conflict(format!(
            "workflow {workflow_id} is not in the dead-letter queue (state: {from})"
        )));
    }
    let claimed = sqlx::query(
        "UPDATE workflow_runs SET state = 'replay_requested', updated_at = now()
         WHERE workflow_id = $1 AND state = $2",
    )
    .bind(workflow_id)
    .bind(&from)
    .execute(&state.db)
    .await?
    .rows_affected();
    if claimed == 0 {
        return Err(ApiError::Conflict(format!(
            "workflow {workflow_id} changed state meanwhile; reload and retry"
        )));
    }
    let signalled = match kind.as_str() {
        provider_webhook::KIND => {
            state
                .temporal
                .replay_provider_event(workflow_id, requested_by)
                .await
        }
        certificate::KIND => {
            state
                .temporal
                .replay_certificate(workflow_id, requested_by)
                .await
        }
        other => Err(ApiError::Internal(format!("no replay for kind {other}"))),
    };
    if let Err(e) = signalled {
        // Put it back so it stays visible as parked.
        sqlx::query(
            "UPDATE workflow_runs SET state = $2 WHERE workflow_id = $1 AND state = 'replay_requested'",
        )
        .bind(workflow_id)
        .bind(&from)
        .execute(&state.db)
        .await?;
        return Err(e);
    }
    metrics::counter!("burrow_api_dead_letter_replays_total", "kind" => kind).increment(1);
    tracing::info!(%workflow_id, %requested_by, "dead letter replay requested");
    Ok(())
}

/// `POST /v1/ops/dead-letters/replay-all` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayAll {
    /// Only this kind.
    pub kind: Option<String>,
    /// Signals per second (capped by `replay_all_max_rate_per_sec`).
    #[schema(minimum = 1)]
    pub rate_per_sec: Option<u32>,
}

/// `POST /v1/ops/dead-letters/replay-all`: replays every parked run, paced.
#[utoipa::path(
    post,
    path = "/v1/ops/dead-letters/replay-all",
    tag = "ops",
    security(("api_key" = [])),
    request_body(content = Option<ReplayAll>, description = "Optional filters and pace."),
    responses(
        (status = 202, description = "Replaying every parked run (of `kind`), paced.", body = crate::openapi::shapes::ReplayAllQueued),
        (status = 400, description = "`invalid_rate`, `invalid_json`.", body = crate::error::ErrorBody),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
        (status = 409, description = "A replay-all is already running.", body = crate::error::ErrorBody),
    )
)]
pub async fn replay_all(
    State(state): State<AppState>,
    actor: Actor,
    body: Option<Json<ReplayAll>>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let body = body.map(|b| b.0).unwrap_or_default();
    let detail = json!({ "kind": body.kind, "rate_per_sec": body.rate_per_sec });
    match start_replay_all(&state, &actor, &body).await {
        Ok((queued, rate)) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "queued": queued, "rate_per_sec": rate })),
        )),
        Err(e) => {
            let action = "dead_letter.replay_all";
            Err(audit::failed(&state.db, &actor, action, None, detail, e).await)
        }
    }
}

/// Checks a replay-all, takes the lock, audits it and starts it; returns how many runs it
/// queued and the rate. Nothing has happened yet when the audit row is written, so a failed
/// write starts nothing. Each run it replays is audited as `dead_letter.replay` with
/// `via: replay_all`.
async fn start_replay_all(
    state: &AppState,
    actor: &Actor,
    body: &ReplayAll,
) -> ApiResult<(usize, u32)> {
    actor
        .principal
        .require(&[Role::Ops], "replaying dead letters")?;
    let max = state.config.replay_all_max_rate_per_sec;
    let rate = match body.rate_per_sec {
        Some(0) => {
            return Err(ApiError::bad_request(
                "invalid_rate",
                "`rate_per_sec` must be at least 1",
            ));
        }
        Some(r) => r.min(max),
        None => max,
    };
    // Only parked runs, selected in the database (not every run loaded and filtered here).
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT workflow_id FROM workflow_runs
         WHERE ($1::text IS NULL OR kind = $1) AND state = ANY($2) ORDER BY updated_at",
    )
    .bind(&body.kind)
    .bind(kinds::all_failure_states())
    .fetch_all(&state.db)
    .await?;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let lock = ReplayAllLock {
        redis: state.redis.clone(),
        key: format!("{}lock:replay-all", state.config.redis_prefix),
        token: uuid::Uuid::new_v4().to_string(),
    };
    if !lock.acquire().await {
        return Err(ApiError::Conflict(
            "a replay-all is already running; wait for it to finish".into(),
        ));
    }
    let queued = ids.len();
    let detail = json!({ "kind": body.kind, "queued": queued, "rate_per_sec": rate });
    if let Err(e) = audit::record(
        &state.db,
        actor,
        "dead_letter.replay_all",
        None,
        "ok",
        detail,
    )
    .await
    {
        lock.release().await;
        return Err(e);
    }
    let requested_by = actor.principal.key_id.to_string();
    let task_state = state.clone();
    let actor = actor.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        // A slow signal must not be followed by a burst above the rate.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut done = 0usize;
        for id in ids {
            tick.tick().await;
            lock.refresh().await;
            let replayed = replay(&task_state, &id, &requested_by).await;
            let outcome = match &replayed {
                Ok(()) => {
                    done += 1;
                    "ok"
                }
                Err(e) => {
                    tracing::warn!(workflow_id = %id, error = %e, "replay-all: skipped");
                    audit::outcome_of(e)
                }
            };
            // Nobody waits for this task's answer: a failed write is logged by `record`.
            let detail = json!({ "via": "replay_all" });
            let _ = audit::record(
                &task_state.db,
                &actor,
                "dead_letter.replay",
                Some(&id),
                outcome,
                detail,
            )
            .await;
        }
        tracing::info!(done, "replay-all finished");
        lock.release().await;
    });
    Ok((queued, rate))
}

/// The Redis lock that keeps two replay-alls from running at once. It holds a per-run token,
/// so a run only ever extends or deletes its own lock. Without Redis there is no lock (the
/// replays themselves stay safe: each is a compare-and-set on the parked state).
struct ReplayAllLock {
    redis: std::sync::Arc<burrow_common::redis_link::RedisLink>,
    key: String,
    token: String,
}

impl ReplayAllLock {
    const TTL_SECS: u64 = 30;

    async fn acquire(&self) -> bool {
        let Some(mut redis) = self.redis.get().await else {
            return true;
        };
        let got: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.token)
            .arg("NX")
            .arg("EX")
            .arg(Self::TTL_SECS)
            .query_async(&mut redis)
            .await;
        // Redis down: proceed unlocked rather than block ops.
        got.map_or(true, |v| v.is_some())
    }

    /// Runs `script` (KEYS[1] = key, ARGV[1] = token, ARGV[2] = TTL) if the lock is still ours.
    async fn if_ours(&self, action: &str) {
        let Some(mut redis) = self.redis.get().await else {
            return;
        };
        let script = format!(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call({action}) else return 0 end"
        );
        let _: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(&self.key)
            .arg(&self.token)
            .arg(Self::TTL_SECS)
            .query_async(&mut redis)
            .await;
    }

    async fn refresh(&self) {
        self.if_ours("'EXPIRE', KEYS[1], ARGV[2]").await;
    }

    async fn release(&self) {
        self.if_ours("'DEL', KEYS[1]").await;
    }
}

/// `GET /v1/ops/sessions`: agent sessions on every relay (a relay that does not answer is
/// listed with its error).
#[utoipa::path(
    get,
    path = "/v1/ops/sessions",
    tag = "ops",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Sessions per relay; a relay that did not answer has `error`.", body = crate::openapi::shapes::SessionList),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
        (status = 503, description = "Relay discovery (Redis) is unavailable.", body = crate::error::ErrorBody),
    )
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<Json<serde_json::Value>> {
    let listed = match actor.principal.require(&[Role::Ops], "listing sessions") {
        Ok(()) => state
            .relays
            .list_sessions()
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string())),
        Err(e) => Err(e),
    };
    let relays = match listed {
        Ok(r) => r,
        Err(e) => {
            return Err(audit::failed(&state.db, &actor, "session.list", None, json!({}), e).await);
        }
    };
    let out: Vec<serde_json::Value> = relays
        .into_iter()
        .map(|r| match r {
            Err(e) => serde_json::json!({ "error": e.to_string() }),
            Ok(r) => serde_json::json!({
                "relay_id": r.relay_id,
                "sessions": r.sessions.into_iter().map(|s| serde_json::json!({
                    "session_id": s.session_id,
                    "account_id": s.account_id,
                    "authtoken_id": s.authtoken_id,
                    "peer": s.peer,
                    "connected_at": s.connected_at,
                    "agent_version": s.agent_version,
                    "endpoints": s.endpoints.into_iter().map(|e| serde_json::json!({
                        "proto": e.proto, "name": e.name, "url": e.url,
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            }),
        })
        .collect();
    let detail = json!({ "relays": out.len() });
    audit::record(&state.db, &actor, "session.list", None, "ok", detail).await?;
    Ok(Json(serde_json::json!({ "relays": out })))
}

/// `POST /v1/ops/sessions/{id}/kick`.
#[utoipa::path(
    post,
    path = "/v1/ops/sessions/{id}/kick",
    tag = "ops",
    security(("api_key" = [])),
    params(("id" = String, Path, description = "Session id")),
    responses(
        (status = 200, description = "Closed.", body = crate::openapi::shapes::KickedSession),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
        (status = 404, description = "No relay holds the session.", body = crate::error::ErrorBody),
        (status = 503, description = "Not found on the relays that answered, and some did not.", body = crate::error::ErrorBody),
    )
)]
pub async fn kick_session(
    State(state): State<AppState>,
    actor: Actor,
    Path(session_id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let target = Some(session_id.as_str());
    if let Err(e) = actor.principal.require(&[Role::Ops], "closing a session") {
        return Err(audit::failed(&state.db, &actor, "session.kick", target, json!({}), e).await);
    }
    let outcome = state.relays.kick_session(&session_id).await;
    let errors: Vec<String> = outcome.errors.iter().map(ToString::to_string).collect();
    let detail = json!({ "kicked": outcome.kicked, "relays_unreachable": errors });
    if outcome.kicked == 0 {
        let e = if errors.is_empty() {
            ApiError::NotFound(format!("no session {session_id} on any relay"))
        } else {
            ApiError::Unavailable(format!(
                "session {session_id} not found on the relays that answered; unreachable: {}",
                errors.join("; ")
            ))
        };
        return Err(audit::failed(&state.db, &actor, "session.kick", target, detail, e).await);
    }
    audit::record(&state.db, &actor, "session.kick", target, "ok", detail)
        .await
        .map_err(|_| audit::unaudited(&format!("session {session_id} was closed")))?;
    Ok(Json(serde_json::json!({
        "session_id": session_id,
        "kicked": outcome.kicked,
        "relays_unreachable": errors,
    })))
}

/// `GET /runbooks/{kind}/{page}`: a runbook page (markdown), for known failure states only.
pub async fn runbook(
    State(state): State<AppState>,
    Path((kind, page)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let failure_state = page.strip_suffix(".md").unwrap_or(&page);
    if !kinds::is_failure_state(&kind, failure_state) {
        return Err(ApiError::NotFound(format!(
            "no runbook for {kind}/{failure_state}"
        )));
    }
    let path = std::path::Path::new(&state.config.runbooks_dir)
        .join(&kind)
        .join(format!("{failure_state}.md"));
    let text = tokio::fs::read_to_string(&path)
        .await
        .map_err(|e| ApiError::NotFound(format!("runbook {}: {e}", path.display())))?;
    Ok((
        [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
        text,
    ))
}
