//! The `burrow-worker` process: hosts every workflow and activity on one task queue.

use crate::provider_webhook::ProviderWebhookWorkflow;
use burrow_activities::{MirrorActivities, ProviderActivities};
use burrow_common::config::Config;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio_util::sync::CancellationToken;

/// Worker configuration (`BURROW_WORKER_*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Temporal frontend, `http://host:port`.
    pub temporal_address: String,
    /// Temporal namespace.
    pub temporal_namespace: String,
    /// Task queue the api starts workflows on.
    pub task_queue: String,
    /// PostgreSQL the activities write to.
    pub database_url: String,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub ops_listen: String,
    /// When set, the bound ops address is written here as JSON.
    pub addr_file: String,
    /// OTLP/gRPC endpoint for traces; empty disables export.
    pub otlp_endpoint: String,
    /// Log JSON lines.
    pub log_json: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            temporal_address: "http://127.0.0.1:7233".into(),
            temporal_namespace: "default".into(),
            task_queue: "burrow".into(),
            database_url: "postgres://postgres@127.0.0.1:5432/burrow".into(),
            ops_listen: "127.0.0.1:7083".into(),
            addr_file: String::new(),
            otlp_endpoint: String::new(),
            log_json: false,
        }
    }
}

burrow_common::impl_service_config!(WorkerConfig);

impl Config for WorkerConfig {
    fn validate(&self) -> Result<(), String> {
        if self.task_queue.is_empty() {
            return Err("`task_queue` must not be empty".into());
        }
        burrow_common::config::check_socket_addr("ops_listen", &self.ops_listen)
    }
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// PostgreSQL unreachable or misconfigured.
    #[error("database {0}")]
    Database(String),
    /// Temporal unreachable.
    #[error(transparent)]
    Temporal(#[from] crate::temporal::ConnectError),
    /// The SDK refused to build or run the worker.
    #[error("temporal worker: {0}")]
    Sdk(String),
    /// The ops listener could not bind.
    #[error("cannot listen on {addr} (`ops_listen`): {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Runs the worker until `shutdown`, then lets in-flight tasks finish.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_lazy(&config.database_url)
        .map_err(|e| WorkerError::Database(format!("url is invalid: {e}")))?;
    let ops = tokio::net::TcpListener::bind(&config.ops_listen)
        .await
        .map_err(|source| WorkerError::Bind {
            addr: config.ops_listen.clone(),
            source,
        })?;
    if !config.addr_file.is_empty() {
        let addr = ops.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let _ = std::fs::write(&config.addr_file, format!("{{\"ops\":\"{addr}\"}}"));
    }
    let ready_pool = pool.clone();
    let ready: burrow_common::ops::ReadinessCheck = Arc::new(move || {
        let pool = ready_pool.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| format!("database: {e}"))
        })
    });
    let ops_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let app = burrow_common::ops::router(ready);
        if let Err(e) = axum::serve(ops, app)
            .with_graceful_shutdown(ops_shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "ops server failed");
        }
    });

    // Temporal may come up after the worker (or restart under it): keep trying rather than
    // exiting, so the worker needs no supervisor to recover.
    let mut delay = std::time::Duration::from_millis(500);
    let client = loop {
        match crate::temporal::connect(
            &config.temporal_address,
            &config.temporal_namespace,
            "burrow-worker",
        )
        .await
        {
            Ok(c) => break c,
            Err(e @ crate::temporal::ConnectError::Address { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "temporal unavailable");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
        }
    };
    let runtime = Runtime::from_current_tokio(Default::default())
        .map_err(|e| WorkerError::Sdk(e.to_string()))?;
    let options = WorkerOptions::new(config.task_queue.clone())
        .register_workflow::<ProviderWebhookWorkflow>()
        .map_err(|e| WorkerError::Sdk(e.to_string()))?
        .register_activities(ProviderActivities::new(pool.clone()))
        .register_activities(MirrorActivities::new(pool))
        .build();
    let mut worker =
        Worker::new(&runtime, client, options).map_err(|e| WorkerError::Sdk(e.to_string()))?;
    let stop = worker.shutdown_handle();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stop();
    });
    tracing::info!(task_queue = %config.task_queue, temporal = %config.temporal_address, "worker polling");
    worker
        .run()
        .await
        .map_err(|e| WorkerError::Sdk(e.to_string()))?;
    tracing::info!("worker stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/worker.toml");
        let cfg: WorkerConfig = burrow_common::config::load_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(cfg.task_queue, "burrow");
    }
}
