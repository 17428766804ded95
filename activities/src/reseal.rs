//! Re-sealing stored secrets after a `cert_encryption_key` rotation.
//!
//! Rotation: put the new key in `cert_encryption_key` and the old one in
//! `cert_encryption_previous_keys`. Values still open (the sealer tries every key), and each
//! replication pass re-seals whatever opened under a previous key — certificate keys, ACME
//! account credentials, finalize keys of open orders — under the current key, with the same
//! associated data. Once a pass finds nothing under previous keys (gauge
//! `burrow_cert_sealed_under_previous_keys` is 0), the old key can be dropped.
//!
//! Each update is compare-and-set on the sealed bytes, so a value rewritten meanwhile (a new
//! order key, a re-registered account) is left alone.

use crate::seal::{self, KeySealer, SealedUnder};
use sqlx::PgPool;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResealReport {
    /// Values found under a previous key this pass.
    pub under_previous: u64,
    /// Values re-sealed under the current key.
    pub resealed: u64,
    /// Values no configured key opens (logged; left as they are).
    pub unopenable: u64,
}

/// A stored sealed value and where it lives.
enum Stored {
    Certificate { domain: String, version: i64 },
    Account { directory_url: String },
    Order { id: i64 },
}

impl Stored {
    fn aad(&self) -> Vec<u8> {
        match self {
            Stored::Certificate { domain, version } => seal::cert_key_aad(domain, *version),
            Stored::Account { directory_url } => seal::account_aad(directory_url),
            Stored::Order { id } => seal::order_key_aad(*id),
        }
    }

    fn describe(&self) -> String {
        match self {
            Stored::Certificate { domain, version } => format!("certificate {domain} v{version}"),
            Stored::Account { directory_url } => format!("ACME account at {directory_url}"),
            Stored::Order { id } => format!("finalize key of order {id}"),
        }
    }

    /// Replaces `old` with `new` if the row still holds `old`; whether it did.
    async fn replace(&self, pool: &PgPool, old: &[u8], new: &[u8]) -> Result<bool, sqlx::Error> {
        let query = match self {
            Stored::Certificate { domain, version } => sqlx::query(
                "UPDATE certificates SET key_encrypted = $1
                 WHERE domain = $3 AND version = $4 AND key_encrypted = $2",
            )
            .bind(new)
            .bind(old)
            .bind(domain)
            .bind(version),
            Stored::Account { directory_url } => sqlx::query(
                "UPDATE acme_accounts SET credentials = $1
                 WHERE directory_url = $3 AND credentials = $2",
            )
            .bind(new)
            .bind(old)
            .bind(directory_url),
            Stored::Order { id } => sqlx::query(
                "UPDATE acme_orders SET key_encrypted = $1 WHERE id = $3 AND key_encrypted = $2",
            )
            .bind(new)
            .bind(old)
            .bind(id),
        };
        Ok(query.execute(pool).await?.rows_affected() == 1)
    }
}

/// Re-seals every stored value that opens only under a previous key. Does nothing (and reads
/// nothing) when no previous key is configured.
pub async fn reseal_stale(pool: &PgPool, sealer: &KeySealer) -> Result<ResealReport, sqlx::Error> {
    let mut report = ResealReport::default();
    if !sealer.has_previous() {
        metrics::gauge!("burrow_cert_sealed_under_previous_keys").set(0.0);
        return Ok(report);
    }
    let mut stored: Vec<(Stored, Vec<u8>)> = Vec::new();
    let certs: Vec<(String, i64, Vec<u8>)> =
        sqlx::query_as("SELECT domain, version, key_encrypted FROM certificates")
            .fetch_all(pool)
            .await?;
    stored.extend(
        certs
            .into_iter()
            .map(|(domain, version, s)| (Stored::Certificate { domain, version }, s)),
    );
    let accounts: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT directory_url, credentials FROM acme_accounts")
            .fetch_all(pool)
            .await?;
    stored.extend(
        accounts
            .into_iter()
            .map(|(directory_url, s)| (Stored::Account { directory_url }, s)),
    );
    let orders: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, key_encrypted FROM acme_orders WHERE key_encrypted IS NOT NULL")
            .fetch_all(pool)
            .await?;
    stored.extend(orders.into_iter().map(|(id, s)| (Stored::Order { id }, s)));

    for (place, sealed) in stored {
        let aad = place.aad();
        match sealer.open_noting_key(&sealed, &aad) {
            Ok((_, SealedUnder::Current)) => {}
            Ok((plain, SealedUnder::Previous)) => {
                report.under_previous += 1;
                let fresh = sealer
                    .seal(&plain, &aad)
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
                if place.replace(pool, &sealed, &fresh).await? {
                    report.resealed += 1;
                }
            }
            Err(e) => {
                tracing::warn!(value = %place.describe(), error = %e, "a sealed value opens under no configured key");
                report.unopenable += 1;
            }
        }
    }
    metrics::counter!("burrow_cert_resealed_total").increment(report.resealed);
    metrics::gauge!("burrow_cert_sealed_under_previous_keys").set(report.under_previous as f64);
    metrics::gauge!("burrow_cert_sealed_unopenable").set(report.unopenable as f64);
    if report.resealed > 0 {
        tracing::info!(
            resealed = report.resealed,
            "re-sealed values stored under a previous cert_encryption_key"
        );
    }
    Ok(report)
}
