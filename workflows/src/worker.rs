//! The `burrow-worker` process: hosts every workflow and activity on one task queue, registers
//! the search attributes workflows set, and keeps the replication workflow running.

use crate::certificate::CertificateWorkflow;
use crate::provider_webhook::ProviderWebhookWorkflow;
use crate::replication::{ReplicationInput, ReplicationWorkflow};
use burrow_activities::acme::{AcmeSettings, Challenge};
use burrow_activities::seal::KeySealer;
use burrow_activities::{
    AcmeActivities, DistributionActivities, IncidentActivities, MirrorActivities,
    ProviderActivities,
};
use burrow_common::config::Config;
use burrow_common::secret::Secret;
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
    /// Redis shared with the relays (challenge answers, relay discovery).
    pub redis_url: String,
    /// Key prefix in Redis; the same as the relays' `redis_prefix`.
    pub redis_prefix: String,
    /// The platform's internal key: bearer on `RelayControl` calls.
    pub internal_key: Secret,
    /// PEM CA that signed the relays' `RelayControl` TLS certificates; when set, certificates
    /// (and their keys) go to relays over TLS only. Empty: plain HTTP.
    pub relay_control_ca_file: String,
    /// ACME directory URL (`https://acme-v02.api.letsencrypt.org/directory`); empty disables
    /// certificate issuance (certificate workflows park in `issuance_failed` saying so).
    pub acme_directory_url: String,
    /// PEM root the CA's API is verified with (test CAs such as Pebble); empty uses the
    /// platform's roots.
    pub acme_ca_file: String,
    /// ACME account contact, e.g. `mailto:ops@example.com`.
    pub acme_contact: String,
    /// External account binding key id, for CAs that require one (ZeroSSL, Google Trust
    /// Services); with `acme_eab_hmac_key`. Empty: none.
    pub acme_eab_kid: String,
    /// The CA's EAB HMAC key, base64url (as CAs hand it out; padding optional).
    pub acme_eab_hmac_key: Secret,
    /// `http-01` (relays' HTTP listener) or `tls-alpn-01` (relays' HTTPS listener).
    pub acme_challenge: Challenge,
    /// New orders allowed per rolling 3 hours, all domains together (Let's Encrypt: 300).
    pub acme_order_budget: u32,
    /// Failed validations allowed per hostname per rolling hour (Let's Encrypt: 5).
    pub acme_failed_authz_per_host_hour: u32,
    /// Certificates issued per domain per rolling 7 days (Let's Encrypt: 5 per set of names);
    /// renewal requests beyond it wait in `rate_limited`.
    pub acme_issued_per_domain_week: u32,
    /// Shortest wait between two ARI lookups of a certificate, seconds, whatever the CA's
    /// `Retry-After` says.
    pub acme_ari_min_recheck_secs: u64,
    /// How long the CA gets to validate challenges, seconds.
    pub acme_validation_timeout_secs: u64,
    /// 32 bytes, base64: seals certificate private keys and ACME credentials in PostgreSQL.
    pub cert_encryption_key: Secret,
    /// Keys `cert_encryption_key` replaced, base64, comma-separated: values sealed under them
    /// still open, and replication passes re-seal them under the current key. Drop an old key
    /// once `burrow_cert_sealed_under_previous_keys` is 0.
    pub cert_encryption_previous_keys: Secret,
    /// Time between replication passes (relays' certificates vs the latest), milliseconds;
    /// 0 disables the replication workflow.
    pub replication_interval_ms: u64,
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
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "burrow:".into(),
            internal_key: Secret::default(),
            relay_control_ca_file: String::new(),
            acme_directory_url: String::new(),
            acme_ca_file: String::new(),
            acme_contact: String::new(),
            acme_eab_kid: String::new(),
            acme_eab_hmac_key: Secret::default(),
            acme_challenge: Challenge::Http01,
            acme_order_budget: 250,
            acme_failed_authz_per_host_hour: 4,
            acme_issued_per_domain_week: 4,
            acme_ari_min_recheck_secs: 600,
            acme_validation_timeout_secs: 90,
            cert_encryption_key: Secret::default(),
            cert_encryption_previous_keys: Secret::default(),
            replication_interval_ms: 60_000,
        }
    }
}

burrow_common::impl_service_config!(WorkerConfig);

impl WorkerConfig {
    /// `acme_eab_kid` and the decoded `acme_eab_hmac_key`, if set.
    fn external_account(
        &self,
    ) -> Result<Option<(String, burrow_activities::acme::EabKey)>, String> {
        use base64::Engine as _;
        match (
            self.acme_eab_kid.is_empty(),
            self.acme_eab_hmac_key.is_empty(),
        ) {
            (true, true) => Ok(None),
            (false, false) => {
                let encoded = self.acme_eab_hmac_key.expose().trim().trim_end_matches('=');
                let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(encoded)
                    .map_err(|e| format!("`acme_eab_hmac_key` is not base64url: {e}"))?;
                if key.is_empty() {
                    return Err("`acme_eab_hmac_key` decodes to no bytes".into());
                }
                Ok(Some((
                    self.acme_eab_kid.clone(),
                    burrow_activities::acme::EabKey(key),
                )))
            }
            _ => Err("`acme_eab_kid` and `acme_eab_hmac_key` must be set together".into()),
        }
    }

    /// The sealer for stored keys: `cert_encryption_key`, opening also under
    /// `cert_encryption_previous_keys`.
    fn sealer(&self) -> Result<KeySealer, burrow_activities::seal::SealError> {
        KeySealer::from_base64(self.cert_encryption_key.expose())?
            .with_previous_base64(self.cert_encryption_previous_keys.expose())
    }
}

impl Config for WorkerConfig {
    fn validate(&self) -> Result<(), String> {
        if self.task_queue.is_empty() {
            return Err("`task_queue` must not be empty".into());
        }
        if !self.cert_encryption_key.is_empty() {
            self.sealer().map_err(|e| e.to_string())?;
        } else if !self.cert_encryption_previous_keys.is_empty() {
            return Err(
                "`cert_encryption_previous_keys` is set but `cert_encryption_key` is not".into(),
            );
        }
        if !self.acme_directory_url.is_empty() && self.cert_encryption_key.is_empty() {
            return Err(
                "`acme_directory_url` is set but `cert_encryption_key` is not: issued \
                        private keys are only stored encrypted (generate one with \
                        `openssl rand -base64 32`)"
                    .into(),
            );
        }
        if !self.acme_ca_file.is_empty() && !std::path::Path::new(&self.acme_ca_file).is_file() {
            return Err(format!(
                "`acme_ca_file` {:?} is not a readable file",
                self.acme_ca_file
            ));
        }
        self.external_account()?;
        if self.acme_order_budget == 0 {
            return Err("`acme_order_budget` must be at least 1".into());
        }
        if self.acme_failed_authz_per_host_hour == 0 || self.acme_issued_per_domain_week == 0 {
            return Err(
                "`acme_failed_authz_per_host_hour` and `acme_issued_per_domain_week` \
                        must be at least 1 (0 would refuse every order)"
                    .into(),
            );
        }
        if !(1..=280).contains(&self.acme_validation_timeout_secs) {
            return Err(
                "`acme_validation_timeout_secs` must be between 1 and 280 (the \
                        validation activity times out at 300 s)"
                    .into(),
            );
        }
        burrow_common::config::check_socket_addr("ops_listen", &self.ops_listen)
    }
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting names a file that is missing or unusable.
    #[error("{0}")]
    Config(String),
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
    register_search_attributes(&client, &config.temporal_namespace).await;
    let redis = Arc::new(burrow_common::redis_link::RedisLink::new(&config.redis_url));
    let sealer = match config.cert_encryption_key.is_empty() {
        true => None,
        false => Some(Arc::new(
            config
                .sealer()
                .map_err(|e| WorkerError::Config(e.to_string()))?,
        )),
    };
    let directory = Arc::new(
        burrow_proto::directory::RelayDirectory::new(
            redis.clone(),
            &config.redis_prefix,
            config.internal_key.expose(),
        )
        .with_control_ca_file(&config.relay_control_ca_file)
        .map_err(WorkerError::Config)?,
    );
    let acme = AcmeSettings {
        directory_url: config.acme_directory_url.clone(),
        ca_file: config.acme_ca_file.clone(),
        contact: config.acme_contact.clone(),
        external_account: config
            .external_account()
            .map_err(|e| WorkerError::Config(e.to_string()))?,
        challenge: config.acme_challenge,
        order_budget: config.acme_order_budget,
        failed_authz_per_host_hour: config.acme_failed_authz_per_host_hour,
        issued_per_domain_week: config.acme_issued_per_domain_week,
        ari_min_recheck: std::time::Duration::from_secs(config.acme_ari_min_recheck_secs),
        validation_timeout: std::time::Duration::from_secs(config.acme_validation_timeout_secs),
        redis_prefix: config.redis_prefix.clone(),
    };
    let runtime = Runtime::from_current_tokio(Default::default())
        .map_err(|e| WorkerError::Sdk(e.to_string()))?;
    let sdk = |e: &dyn std::fmt::Display| WorkerError::Sdk(e.to_string());
    let options = WorkerOptions::new(config.task_queue.clone())
        .register_workflow::<ProviderWebhookWorkflow>()
        .map_err(|e| sdk(&e))?
        .register_workflow::<CertificateWorkflow>()
        .map_err(|e| sdk(&e))?
        .register_workflow::<ReplicationWorkflow>()
        .map_err(|e| sdk(&e))?
        .register_activities(ProviderActivities::new(pool.clone()))
        .register_activities(MirrorActivities::new(pool.clone()))
        .register_activities(IncidentActivities::new(pool.clone()))
        .register_activities(AcmeActivities::new(
            pool.clone(),
            redis,
            sealer.clone(),
            acme,
        ))
        .register_activities(DistributionActivities::new(pool, directory, sealer))
        .build();
    if config.replication_interval_ms > 0 {
        start_replication(&client, &config).await;
    } else {
        stop_replication(&client, &config).await;
    }
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

/// Registers the search attributes Burrow's workflows set (idempotent; an attribute that
/// exists already is fine). Without them, a workflow upserting one would fail its task.
async fn register_search_attributes(client: &temporalio_client::Client, namespace: &str) {
    use temporalio_common::protos::temporal::api::enums::v1::IndexedValueType;
    use temporalio_common::protos::temporal::api::operatorservice::v1::AddSearchAttributesRequest;
    let mut operator = client.connection().operator_service();
    let request = AddSearchAttributesRequest {
        search_attributes: [(
            crate::certificate::STATE_ATTRIBUTE.to_owned(),
            IndexedValueType::Keyword as i32,
        )]
        .into(),
        namespace: namespace.to_owned(),
    };
    match operator
        .add_search_attributes(tonic::Request::new(request))
        .await
    {
        Ok(_) => tracing::info!("search attributes registered"),
        Err(s) if s.code() == tonic::Code::AlreadyExists => {}
        Err(s) => tracing::warn!(error = %s.message(), code = ?s.code(),
            "could not register search attributes; workflows setting them will fail their tasks"),
    }
}

/// Ends this task queue's replication run, if one is open (`replication_interval_ms = 0`).
async fn stop_replication(client: &temporalio_client::Client, config: &WorkerConfig) {
    let id = crate::replication::workflow_id(&config.task_queue);
    let stopped = client
        .get_workflow_handle::<ReplicationWorkflow>(id.clone())
        .terminate(
            temporalio_client::WorkflowTerminateOptions::builder()
                .reason("replication_interval_ms is 0".to_owned())
                .build(),
        )
        .await;
    match stopped {
        Ok(()) => tracing::info!(workflow_id = %id, "replication workflow stopped"),
        Err(temporalio_client::errors::WorkflowInteractionError::NotFound(_)) => {}
        Err(e) => {
            tracing::warn!(workflow_id = %id, error = %e, "could not stop the replication workflow")
        }
    }
}

/// Starts this task queue's replication workflow, replacing a running one so a changed
/// `replication_interval_ms` takes effect.
async fn start_replication(client: &temporalio_client::Client, config: &WorkerConfig) {
    use temporalio_client::{WorkflowIdConflictPolicy, WorkflowStartOptions};
    let id = crate::replication::workflow_id(&config.task_queue);
    let started = client
        .start_workflow(
            ReplicationWorkflow::run,
            ReplicationInput {
                interval_ms: config.replication_interval_ms,
                passes_per_run: 500,
            },
            WorkflowStartOptions::new(config.task_queue.clone(), id.clone())
                .id_conflict_policy(WorkflowIdConflictPolicy::TerminateExisting)
                .build(),
        )
        .await;
    match started {
        Ok(_) => tracing::info!(workflow_id = %id, "replication workflow running"),
        Err(e) => {
            tracing::warn!(workflow_id = %id, error = %e, "could not start the replication workflow")
        }
    }
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

    #[test]
    fn eab_settings_come_in_pairs_and_the_key_is_base64url() {
        let mut cfg = WorkerConfig {
            acme_eab_kid: "kid-1".into(),
            ..WorkerConfig::default()
        };
        let err = cfg.validate().unwrap_err();
        assert!(err.contains("set together"), "{err}");
        cfg.acme_eab_hmac_key = Secret::new("not base64url!");
        let err = cfg.validate().unwrap_err();
        assert!(
            err.contains("`acme_eab_hmac_key` is not base64url"),
            "{err}"
        );
        // ZeroSSL-style keys: base64url, with or without padding.
        for key in [
            "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W",
            "_-8=",
        ] {
            cfg.acme_eab_hmac_key = Secret::new(key);
            let (kid, raw) = cfg.external_account().unwrap().unwrap();
            assert_eq!(kid, "kid-1");
            assert!(!raw.0.is_empty());
        }
        assert_eq!(cfg.validate(), Ok(()));
    }
}
