//! Getting certificates onto relays: push one version to every relay (`InstallCertificate`
//! over `RelayControl`), and converge: compare what each relay reports serving
//! (`ListCertificates`) with the latest version of every verified domain, push what lags,
//! remove what is no longer ours, and record a replication snapshot per region.
//!
//! Relays are found through their Redis announcements (`burrow_proto::directory`). The private
//! key leaves PostgreSQL sealed and is opened only here, to be sent to relays with the
//! internal key as bearer.

use crate::failure::{self, DISTRIBUTION_PARTIAL, INTERNAL, ISSUANCE_FAILED};
use crate::seal::{self, KeySealer};
use burrow_proto::directory::{RelayDirectory, RelayInfo};
use burrow_proto::relay::{
    InstallCertificateRequest, ListCertificatesRequest, RemoveCertificateRequest,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

/// Relays a distribution talks to at once.
const PARALLEL_INSTALLS: usize = 16;

/// Input of [`DistributionActivities::distribute`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributeRequest {
    /// Domain.
    pub domain: String,
    /// Version to push.
    pub version: i64,
}

/// One relay's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayResult {
    /// Relay id.
    pub relay_id: String,
    /// Its region.
    pub region: String,
    /// Version it serves afterwards (0 when unknown).
    pub version: i64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// What a push did on every relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DistributeOutcome {
    /// Per relay.
    pub relays: Vec<RelayResult>,
}

impl DistributeOutcome {
    /// Relays that did not take the version.
    pub fn failed(&self) -> Vec<&RelayResult> {
        self.relays.iter().filter(|r| r.error.is_some()).collect()
    }
}

/// One region's state after a convergence pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionState {
    /// Region label.
    pub region: String,
    /// Relays seen in it.
    pub relays: u32,
    /// Domains whose region version still lags the latest.
    pub drift: Vec<String>,
}

/// What a convergence pass did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConvergeOutcome {
    /// Per region, after pushing.
    pub regions: Vec<RegionState>,
    /// Certificates pushed to relays that lagged.
    pub pushed: u32,
    /// Pushes, removals or relays that failed.
    pub failed: u32,
}

/// Activities pushing certificates to relays.
pub struct DistributionActivities {
    pool: PgPool,
    directory: Arc<RelayDirectory>,
    sealer: Option<Arc<KeySealer>>,
}

struct Material {
    chain_pem: String,
    key_pem: String,
}

impl DistributionActivities {
    /// Activities finding relays through `directory`.
    pub fn new(
        pool: PgPool,
        directory: Arc<RelayDirectory>,
        sealer: Option<Arc<KeySealer>>,
    ) -> Self {
        Self {
            pool,
            directory,
            sealer,
        }
    }

    async fn material(&self, domain: &str, version: i64) -> Result<Material, ActivityError> {
        let sealer = self.sealer.as_deref().ok_or_else(|| {
            failure::error(
                ISSUANCE_FAILED,
                "no `cert_encryption_key` is configured for the worker".into(),
                true,
            )
        })?;
        let row = sqlx::query(
            "SELECT chain_pem, key_encrypted FROM certificates WHERE domain = $1 AND version = $2",
        )
        .bind(domain)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| {
            failure::error(
                ISSUANCE_FAILED,
                format!("certificate {domain} v{version} is not stored"),
                false,
            )
        })?;
        let sealed: Vec<u8> = row.get("key_encrypted");
        let key = sealer
            .open(&sealed, &seal::cert_key_aad(domain, version))
            .map_err(|e| {
                failure::error(
                    ISSUANCE_FAILED,
                    format!("{domain} v{version} key: {e}"),
                    false,
                )
            })?;
        Ok(Material {
            chain_pem: row.get("chain_pem"),
            key_pem: String::from_utf8(key).map_err(|_| {
                failure::error(ISSUANCE_FAILED, "stored key is not UTF-8".into(), false)
            })?,
        })
    }

    async fn install(
        &self,
        relay: &RelayInfo,
        domain: &str,
        version: i64,
        m: &Material,
    ) -> RelayResult {
        let installed = async {
            let mut client = self
                .directory
                .client(relay)
                .await
                .map_err(|e| e.to_string())?;
            let resp = client
                .install_certificate(InstallCertificateRequest {
                    domain: domain.to_owned(),
                    version: version as u64,
                    chain_pem: m.chain_pem.clone(),
                    key_pem: m.key_pem.clone(),
                })
                .await
                .map_err(|s| format!("{}: {}", s.code(), s.message()))?
                .into_inner();
            Ok::<_, String>(resp.version as i64)
        }
        .await;
        let (held, error) = match installed {
            Ok(v) => (v, None),
            Err(e) => (0, Some(e)),
        };
        if error.is_none()
            && let Err(e) = record_replica(&self.pool, domain, relay, held).await
        {
            tracing::warn!(error = %e, "could not record the replica");
        }
        RelayResult {
            relay_id: relay.relay_id.clone(),
            region: relay.region.clone(),
            version: held,
            error,
        }
    }

    async fn converge(&self, ctx: &ActivityContext) -> Result<ConvergeOutcome, ActivityError> {
        // After a key rotation, values still under a previous key move to the current one
        // (first, so a pass that fails on relays or snapshots still does it).
        if let Some(sealer) = self.sealer.as_deref()
            && let Err(e) = crate::reseal::reseal_stale(&self.pool, sealer).await
        {
            tracing::warn!(error = %e, "re-sealing under the current key failed");
        }
        let latest: BTreeMap<String, i64> = sqlx::query(
            "SELECT DISTINCT ON (c.domain) c.domain, c.version
             FROM certificates c
             JOIN custom_domains d ON d.domain = c.domain AND d.status = 'verified'
             WHERE c.revoked_at IS NULL
             ORDER BY c.domain, c.version DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .into_iter()
        .map(|r| (r.get("domain"), r.get("version")))
        .collect();
        let relays = self.directory.discover().await.map_err(|e| {
            failure::error(DISTRIBUTION_PARTIAL, format!("relay discovery: {e}"), true)
        })?;
        let mut outcome = ConvergeOutcome::default();
        let mut materials: HashMap<(String, i64), Material> = HashMap::new();
        // region -> relays, region -> domain -> lowest version held.
        let mut by_region: BTreeMap<String, (u32, BTreeMap<String, i64>)> = BTreeMap::new();
        for relay in &relays {
            // Alive: a worker that dies mid-pass is noticed within the heartbeat timeout.
            let _ = ctx.record_heartbeat(relay.relay_id.clone()).await;
            let listed = async {
                let mut client = self
                    .directory
                    .client(relay)
                    .await
                    .map_err(|e| e.to_string())?;
                client
                    .list_certificates(ListCertificatesRequest {})
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| format!("{}: {}", s.code(), s.message()))
            }
            .await;
            let region = by_region.entry(relay.region.clone()).or_default();
            region.0 += 1;
            let held: HashMap<String, i64> = match listed {
                Ok(l) => l
                    .certificates
                    .into_iter()
                    .map(|c| (c.domain, c.version as i64))
                    .collect(),
                Err(e) => {
                    tracing::warn!(relay = %relay.relay_id, error = %e, "relay did not list its certificates");
                    outcome.failed += 1;
                    for domain in latest.keys() {
                        region.1.insert(domain.clone(), 0);
                    }
                    continue;
                }
            };
            for (domain, &want) in &latest {
                let mut have = held.get(domain).copied().unwrap_or(0);
                if have < want {
                    let _ = ctx.record_heartbeat(relay.relay_id.clone()).await;
                    let key = (domain.clone(), want);
                    let m = match materials.entry(key) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => {
                            match self.material(domain, want).await {
                                Ok(m) => e.insert(m),
                                // One unreadable row must not stop every other domain.
                                Err(err) => {
                                    tracing::warn!(%domain, version = want, error = ?err,
                                        "certificate cannot be read for convergence");
                                    outcome.failed += 1;
                                    let slot = region.1.entry(domain.clone()).or_insert(have);
                                    *slot = (*slot).min(have);
                                    continue;
                                }
                            }
                        }
                    };
                    let m = &*m;
                    let r = self.install(relay, domain, want, m).await;
                    match r.error {
                        None => {
                            outcome.pushed += 1;
                            have = r.version;
                        }
                        Some(e) => {
                            tracing::warn!(relay = %relay.relay_id, %domain, error = %e, "push failed");
                            outcome.failed += 1;
                        }
                    }
                } else if let Err(e) = record_replica(&self.pool, domain, relay, have).await {
                    tracing::warn!(error = %e, "could not record the replica");
                }
                let slot = region.1.entry(domain.clone()).or_insert(have);
                *slot = (*slot).min(have);
            }
            for domain in held.keys().filter(|d| !latest.contains_key(*d)) {
                // `latest` was read at the start of the pass: a domain verified and issued
                // since then is not a leftover.
                if still_wanted(&self.pool, domain).await.unwrap_or(true) {
                    continue;
                }
                let removed = async {
                    let mut client = self
                        .directory
                        .client(relay)
                        .await
                        .map_err(|e| e.to_string())?;
                    client
                        .remove_certificate(RemoveCertificateRequest {
                            domain: domain.clone(),
                        })
                        .await
                        .map_err(|s| s.message().to_owned())
                }
                .await;
                match removed {
                    Ok(_) => {
                        let _ = sqlx::query(
                            "DELETE FROM cert_replicas WHERE domain = $1 AND relay_id = $2",
                        )
                        .bind(domain)
                        .bind(&relay.relay_id)
                        .execute(&self.pool)
                        .await;
                    }
                    Err(e) => {
                        tracing::warn!(relay = %relay.relay_id, %domain, error = %e, "removing a certificate failed");
                        outcome.failed += 1;
                    }
                }
            }
        }
        // One pass's snapshots land together, so a reader never pairs this pass's row for one
        // region with the previous pass's row for another.
        let mut snapshots = self.pool.begin().await.map_err(db)?;
        for (region, (count, versions)) in by_region {
            let drift: Vec<String> = versions
                .iter()
                .filter(|(d, v)| latest.get(*d).is_some_and(|want| **v < *want))
                .map(|(d, _)| d.clone())
                .collect();
            sqlx::query(
                "INSERT INTO region_snapshots (region, relays, certificates, drift)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&region)
            .bind(count as i32)
            .bind(serde_json::to_value(&versions).unwrap_or_default())
            .bind(serde_json::to_value(&drift).unwrap_or_default())
            .execute(&mut *snapshots)
            .await
            .map_err(db)?;
            metrics::gauge!("burrow_cert_region_drift", "region" => region.clone())
                .set(drift.len() as f64);
            outcome.regions.push(RegionState {
                region,
                relays: count,
                drift,
            });
        }
        snapshots.commit().await.map_err(db)?;
        // Retention: snapshots are history (a week); a finalize key left in an order the run
        // gave up on is dropped after a day; handled callbacks are kept 90 days (unmapped ones,
        // kept for review, stay).
        for retention in [
            "DELETE FROM region_snapshots WHERE taken_at < now() - interval '7 days'",
            "UPDATE acme_orders SET key_encrypted = NULL
             WHERE key_encrypted IS NOT NULL AND updated_at < now() - interval '1 day'",
            "DELETE FROM cert_callbacks
             WHERE status IN ('signalled', 'no_workflow') AND received_at < now() - interval '90 days'",
        ] {
            if let Err(e) = sqlx::query(retention).execute(&self.pool).await {
                tracing::warn!(error = %e, "retention cleanup failed");
            }
        }
        Ok(outcome)
    }
}

/// Whether `domain` is verified and has a certificate (so relays should serve it).
async fn still_wanted(pool: &PgPool, domain: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM certificates c JOIN custom_domains d
             ON d.domain = c.domain AND d.status = 'verified'
             WHERE c.domain = $1 AND c.revoked_at IS NULL)",
    )
    .bind(domain)
    .fetch_one(pool)
    .await
}

async fn record_replica(
    pool: &PgPool,
    domain: &str,
    relay: &RelayInfo,
    version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cert_replicas (domain, relay_id, region, version) VALUES ($1, $2, $3, $4)
         ON CONFLICT (domain, relay_id) DO UPDATE
           SET region = EXCLUDED.region, version = EXCLUDED.version, reported_at = now()",
    )
    .bind(domain)
    .bind(&relay.relay_id)
    .bind(&relay.region)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}

fn db(e: sqlx::Error) -> ActivityError {
    failure::error(INTERNAL, format!("database: {e}"), true)
}

#[activities]
impl DistributionActivities {
    /// Pushes `version` of `domain` to every relay; a relay that fails is reported, not fatal.
    #[activity]
    pub async fn distribute(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: DistributeRequest,
    ) -> Result<DistributeOutcome, ActivityError> {
        let m = self.material(&req.domain, req.version).await?;
        let relays = self.directory.discover().await.map_err(|e| {
            failure::error(DISTRIBUTION_PARTIAL, format!("relay discovery: {e}"), true)
        })?;
        // Relays are asked in parallel (a few unreachable ones, 8 s each, must not use up the
        // activity's timeout and turn a partial distribution into a timeout).
        let mut results = Vec::with_capacity(relays.len());
        for chunk in relays.chunks(PARALLEL_INSTALLS) {
            let installs: Vec<_> = chunk
                .iter()
                .map(|relay| Box::pin(self.install(relay, &req.domain, req.version, &m)))
                .collect();
            results.extend(futures::future::join_all(installs).await);
        }
        let mut outcome = DistributeOutcome { relays: results };
        outcome.relays.sort_by(|a, b| a.relay_id.cmp(&b.relay_id));
        tracing::info!(domain = %req.domain, version = req.version, relays = relays.len(),
            failed = outcome.failed().len(), "certificate distributed");
        Ok(outcome)
    }

    /// Whether `domain` is (still, or again) verified by some account.
    #[activity]
    pub async fn domain_verified(
        self: Arc<Self>,
        _ctx: ActivityContext,
        domain: String,
    ) -> Result<bool, ActivityError> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM custom_domains WHERE domain = $1 AND status = 'verified')",
        )
        .bind(&domain)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    /// One convergence pass over every relay and verified domain; writes region snapshots.
    #[activity]
    pub async fn converge_replicas(
        self: Arc<Self>,
        ctx: ActivityContext,
        _input: (),
    ) -> Result<ConvergeOutcome, ActivityError> {
        self.converge(&ctx).await
    }
}
