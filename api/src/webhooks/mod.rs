//! Provider webhook ingest: `POST /v1/webhooks/provider`.
//!
//! 1. The signature is verified against the raw body before anything else ([`signature`]).
//! 2. The body must be a JSON object with string `id` and `type`.
//! 3. The event is stored once by id (`provider_events`); a re-delivery only bumps
//!    `deliveries` and is not applied again.
//! 4. The event's workflow is started (idempotently, by a workflow id derived from the event
//!    id) and the request is answered. If Temporal is unreachable the event is still stored and
//!    acknowledged; [`sweep_unstarted`] starts its workflow once Temporal is back.
//!
//! Bad signature, stale timestamp or malformed JSON → 400 naming the reason, and nothing is
//! written.

pub mod signature;

use crate::{
    AppState,
    error::{ApiError, ApiResult},
};
use axum::{Json, body::Bytes, extract::State, http::HeaderMap};
use burrow_workflows::provider_webhook::{self, ProviderEventInput, RetrySchedule};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use std::time::Duration;

/// Answer to an accepted webhook.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Event id.
    pub event_id: String,
    /// Whether this delivery repeated an event already stored.
    pub duplicate: bool,
    /// Workflow processing the event.
    pub workflow_id: String,
}

/// `POST /v1/webhooks/provider`.
#[utoipa::path(
    post,
    path = "/v1/webhooks/provider",
    operation_id = "receive_provider_webhook",
    tag = "webhooks",
    params(("Stripe-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">`, with the webhook secret")),
    request_body(
        content = Object,
        description = "The provider event: a JSON object with string `id` and `type`.",
        content_type = "application/json"
    ),
    responses(
        (status = 200, description = "Stored (once per event id) and its workflow started.", body = Accepted),
        (status = 400, description = "Bad or stale signature, or not an event; nothing was written.", body = crate::error::ErrorBody),
    )
)]
#[tracing::instrument(name = "provider_webhook", skip_all, fields(event_id, event_type))]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Accepted>> {
    let header = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let now = chrono::Utc::now().timestamp();
    signature::verify(
        state.config.webhook_secret.expose().as_bytes(),
        header,
        &body,
        now,
        state.config.webhook_tolerance_secs,
    )
    .map_err(|e| {
        metrics::counter!("burrow_api_webhooks_rejected_total", "reason" => e.code()).increment(1);
        ApiError::bad_request(e.code(), e.to_string())
    })?;

    let payload: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("malformed_payload", format!("body is not JSON: {e}"))
    })?;
    let field = |name: &str| {
        payload
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "malformed_payload",
                    format!("event has no string `{name}` (1 to 255 characters)"),
                )
            })
    };
    if contains_nul(&payload) {
        return Err(ApiError::bad_request(
            "malformed_payload",
            "event contains a NUL character (\\u0000), which cannot be stored",
        ));
    }
    let event_id = field("id")?;
    let event_type = field("type")?;
    let span = tracing::Span::current();
    span.record("event_id", event_id.as_str());
    span.record("event_type", event_type.as_str());

    let row = sqlx::query(
        "INSERT INTO provider_events (id, event_type, payload) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET deliveries = provider_events.deliveries + 1
         RETURNING (xmax = 0) AS inserted, workflow_id",
    )
    .bind(&event_id)
    .bind(&event_type)
    .bind(&payload)
    .fetch_one(&state.db)
    .await?;
    let inserted: bool = row.get("inserted");
    let started: Option<String> = row.get("workflow_id");
    metrics::counter!("burrow_api_webhooks_received_total", "duplicate" => (!inserted).to_string())
        .increment(1);
    let workflow_id = provider_webhook::workflow_id(&event_id);
    if started.is_none()
        && let Err(e) = start(&state, &event_id).await
    {
        // Stored and acknowledged: the sweeper starts it when Temporal is back.
        tracing::warn!(error = %e, %event_id, "event stored; workflow start deferred");
    }
    Ok(Json(Accepted {
        event_id,
        duplicate: !inserted,
        workflow_id,
    }))
}

/// Whether any string (key or value) in `v` holds U+0000, which PostgreSQL text cannot store.
pub(crate) fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

fn retry_schedule(state: &AppState) -> RetrySchedule {
    RetrySchedule {
        initial_interval_ms: state.config.apply_initial_interval_ms,
        backoff_coefficient: 2.0,
        maximum_interval_ms: state.config.apply_maximum_interval_ms,
        maximum_attempts: state.config.apply_maximum_attempts,
    }
}

/// Records the run in `workflow_runs` and starts the event's workflow.
async fn start(state: &AppState, event_id: &str) -> ApiResult<()> {
    let workflow_id = provider_webhook::workflow_id(event_id);
    sqlx::query(
        "INSERT INTO workflow_runs (workflow_id, kind, subject, state) VALUES ($1, $2, $3, 'received')
         ON CONFLICT (workflow_id) DO NOTHING",
    )
    .bind(&workflow_id)
    .bind(provider_webhook::KIND)
    .bind(event_id)
    .execute(&state.db)
    .await?;
    // Bounded so a webhook is answered quickly even while Temporal is unreachable; the sweeper
    // starts what this could not.
    tokio::time::timeout(
        Duration::from_secs(2),
        state.temporal.start_provider_event(
            &workflow_id,
            ProviderEventInput {
                event_id: event_id.to_owned(),
                retry: retry_schedule(state),
            },
        ),
    )
    .await
    .map_err(|_| ApiError::Unavailable("starting the workflow timed out".into()))??;
    sqlx::query("UPDATE provider_events SET workflow_id = $2 WHERE id = $1")
        .bind(event_id)
        .bind(&workflow_id)
        .execute(&state.db)
        .await?;
    Ok(())
}

/// Starts workflows for stored events whose start was deferred, until `shutdown`.
pub async fn sweep_unstarted(state: AppState, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let pending: Vec<String> = match sqlx::query_scalar(
            "SELECT id FROM provider_events WHERE workflow_id IS NULL
               AND received_at < now() - interval '5 seconds' ORDER BY received_at LIMIT 100",
        )
        .fetch_all(&state.db)
        .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "sweeper: listing unstarted events failed");
                continue;
            }
        };
        for event_id in pending {
            match start(&state, &event_id).await {
                Ok(()) => tracing::info!(%event_id, "sweeper started deferred workflow"),
                Err(e) => {
                    tracing::warn!(error = %e, "sweeper: Temporal still unavailable");
                    break;
                }
            }
        }
    }
}
