//! Starting and stopping certificate workflows from the `domain_events` outbox.
//!
//! When `acme_enabled` is on, [`run`] takes unconsumed events in id order as soon as one
//! commits (a trigger notifies channel `burrow_domain_events`, which it listens on), and about
//! once a second in any case:
//! - `domain.verified` starts `CertificateWorkflow` as `certificate-<domain>` with the retry
//!   schedule and expiry warning of the api configuration (a run already open is kept; a
//!   closed one, e.g. after the domain was removed, gets a new run);
//! - `domain.removed` sends the run `remove` (no open run is fine: nothing to stop).
//!
//! An event is marked `consumed_at` only after Temporal accepted it. The first event Temporal
//! does not accept stops the pass, so later events of the same domain never overtake it, and
//! the next pass retries it. Passes hold a transaction-scoped advisory lock: with several api
//! processes only one consumes at a time. With `acme_enabled` off the events stay queued.

use crate::{
    AppState,
    error::{ApiError, ApiResult},
};
use burrow_workflows::certificate;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Advisory lock key of the consumer (`pg_try_advisory_xact_lock`): "burrow.domain_events".
const LOCK_KEY: i64 = 0x6275_7272_6f77_0d01;

/// How often the outbox is polled.
const POLL: Duration = Duration::from_secs(1);

/// How long one Temporal call may take before the pass stops and retries later.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Events taken per query.
const BATCH: i64 = 100;

/// Consumes the outbox until `shutdown` (returns at once when `acme_enabled` is off).
pub async fn run(state: AppState, shutdown: CancellationToken) {
    if !state.config.acme_enabled {
        tracing::info!(
            "acme_enabled is off: domain events stay queued and no certificate workflows start"
        );
        return;
    }
    let mut failing = false;
    let mut listener = listen(&state).await;
    loop {
        if listener.is_none() {
            listener = listen(&state).await;
        }
        match drain(&state).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(events = n, "domain events consumed");
                }
                if failing {
                    tracing::info!("domain event outbox: Temporal accepts events again");
                }
                failing = false;
            }
            Err(e) => {
                // Log the first failure of a streak, not one line a second while Temporal is down.
                if !failing {
                    tracing::warn!(error = %e, "domain event outbox: will retry");
                }
                failing = true;
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
            ok = notified => {
                if !ok {
                    // The listening connection dropped: poll until it is back.
                    listener = listen(&state).await;
                }
            }
        }
    }
}

/// Listens for new domain events; `None` (polling only) when the database refuses.
async fn listen(state: &AppState) -> Option<sqlx::postgres::PgListener> {
    let mut listener = sqlx::postgres::PgListener::connect_with(&state.db)
        .await
        .map_err(|e| tracing::debug!(error = %e, "domain event outbox: cannot listen; polling"))
        .ok()?;
    listener
        .listen("burrow_domain_events")
        .await
        .map_err(|e| tracing::debug!(error = %e, "domain event outbox: cannot listen; polling"))
        .ok()?;
    Some(listener)
}

/// One pass: acts on unconsumed events in id order until none is left or one fails. Returns
/// how many were consumed; `Err` when one could not be acted on (it and every later event stay
/// queued, those before it are consumed).
pub async fn drain(state: &AppState) -> ApiResult<usize> {
    let mut consumed = 0;
    loop {
        let mut tx = state.db.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            // Another api process is consuming.
            return Ok(consumed);
        }
        let events: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT id, kind, domain FROM domain_events WHERE consumed_at IS NULL
             ORDER BY id LIMIT $1",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if events.is_empty() {
            return Ok(consumed);
        }
        let full = events.len() as i64 == BATCH;
        let mut failed = None;
        for (id, kind, domain) in events {
            if let Err(e) = act(state, &kind, &domain).await {
                failed = Some(e);
                break;
            }
            sqlx::query("UPDATE domain_events SET consumed_at = now() WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            consumed += 1;
            metrics::counter!("burrow_api_domain_events_consumed_total", "kind" => kind)
                .increment(1);
        }
        tx.commit().await?;
        if let Some(e) = failed {
            return Err(e);
        }
        if !full {
            return Ok(consumed);
        }
    }
}

/// Acts on one event.
async fn act(state: &AppState, kind: &str, domain: &str) -> ApiResult<()> {
    let workflow_id = certificate::workflow_id(domain);
    match kind {
        "domain.verified" => {
            let input = state
                .config
                .certificate_input(domain)
                .map_err(ApiError::Internal)?;
            // Visible to ops before the worker's first mirror write.
            sqlx::query(
                "INSERT INTO workflow_runs (workflow_id, kind, subject, state)
                 VALUES ($1, $2, $3, 'pending') ON CONFLICT (workflow_id) DO NOTHING",
            )
            .bind(&workflow_id)
            .bind(certificate::KIND)
            .bind(&input.domain)
            .execute(&state.db)
            .await?;
            timed(state.temporal.start_certificate(&workflow_id, input)).await?;
            tracing::info!(%domain, %workflow_id, "certificate workflow started");
        }
        "domain.removed" => {
            let reason = "the custom domain was removed";
            let open = timed(state.temporal.remove_certificate(&workflow_id, reason)).await?;
            tracing::info!(%domain, %workflow_id, open, "certificate workflow told to stop");
        }
        other => {
            // The table's CHECK allows only the two kinds; a new kind needs code here first.
            return Err(ApiError::Internal(format!(
                "domain event kind {other:?} is not handled"
            )));
        }
    }
    Ok(())
}

async fn timed<T>(call: impl Future<Output = ApiResult<T>>) -> ApiResult<T> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .map_err(|_| ApiError::Unavailable("Temporal did not answer in time".into()))?
}
