//! ACME issuance as activities: place an order (inside Burrow's order budget) and publish its
//! challenges for the relays, wait for the CA to validate, finalize and store the certificate,
//! and plan the next renewal (ARI when the CA offers it, else 2/3 of the lifetime).
//!
//! Challenges are answered by every relay from Redis: HTTP-01 at
//! `<prefix>acme:http01:<token>` (the key authorization), TLS-ALPN-01 at
//! `<prefix>acme:alpn:<domain>` (a self-signed RFC 8737 certificate and its key, PEM).
//! Keys expire after an hour; validation removes them.
//!
//! Errors carry a failure type from [`crate::failure`] that the certificate workflow maps onto
//! its named failure states; names the CA refuses (and CAA, deactivated accounts) are not
//! retryable.

use crate::certinfo::leaf_info;
use crate::failure::{self, *};
use crate::seal::{self, KeySealer};
use burrow_common::redis_link::{RedisLink, timed};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Row};
use std::{sync::Arc, time::Duration};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tokio::sync::Mutex;

/// Which challenge the relays answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Challenge {
    /// `http-01` on the relays' HTTP listener (port 80 in production).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// `tls-alpn-01` on the relays' HTTPS listener (port 443 in production).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

/// ACME settings of the worker.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// Directory URL of the CA; empty disables issuance.
    pub directory_url: String,
    /// PEM root for the CA's API TLS (test CAs); empty uses the platform's roots.
    pub ca_file: String,
    /// Account contact, e.g. `mailto:ops@example.com`; empty for none.
    pub contact: String,
    /// External account binding (RFC 8555 §7.3.4) for CAs that require one (ZeroSSL, Google
    /// Trust Services, ...): the key id and the decoded HMAC key the CA issued. Used when the
    /// account is registered.
    pub external_account: Option<(String, EabKey)>,
    /// Challenge type.
    pub challenge: Challenge,
    /// New orders allowed per rolling 3 hours (Let's Encrypt allows 300 per account).
    pub order_budget: u32,
    /// Failed authorizations allowed per hostname per rolling hour (Let's Encrypt allows 5).
    pub failed_authz_per_host_hour: u32,
    /// Certificates issued per domain per rolling 7 days (Let's Encrypt allows 5 for the same
    /// set of names): renewal requests beyond it wait instead of spending the shared budget.
    pub issued_per_domain_week: u32,
    /// Shortest wait between two ARI lookups, whatever `Retry-After` says.
    pub ari_min_recheck: Duration,
    /// How long to wait for the CA to validate challenges.
    pub validation_timeout: Duration,
    /// Redis key prefix shared with the relays.
    pub redis_prefix: String,
}

/// An external account binding HMAC key; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct EabKey(pub Vec<u8>);

impl std::fmt::Debug for EabKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EabKey({} bytes)", self.0.len())
    }
}

/// Input of [`AcmeActivities::place_order`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequest {
    /// The domain to certify.
    pub domain: String,
    /// RFC 9773 identifier of the certificate this order replaces (ARI renewals).
    pub replaces: Option<String>,
}

/// A placed order whose challenges are published and marked ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    /// Row in `acme_orders`.
    pub order_id: i64,
    /// The CA's order URL.
    pub order_url: String,
    /// Redis keys holding challenge answers (removed after validation).
    pub challenge_keys: Vec<String>,
    /// SHA-1 (hex) of each answer, in the order of `challenge_keys`: the answer is removed only
    /// if it is still this order's (a TLS-ALPN-01 key is per domain, and a later attempt may
    /// have written its own).
    #[serde(default)]
    pub challenge_sha1: Vec<String>,
}

/// A certificate stored in `certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// Domain.
    pub domain: String,
    /// Version (1, 2, ... per domain).
    pub version: i64,
    /// Serial, hex.
    pub serial: String,
    /// Validity start, unix seconds.
    pub not_before: i64,
    /// Validity end, unix seconds.
    pub not_after: i64,
    /// RFC 9773 identifier, when the leaf has an AKI.
    pub ari_id: Option<String>,
}

/// Input of [`AcmeActivities::finalize_order`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizeRequest {
    /// Domain.
    pub domain: String,
    /// The order placed for it.
    pub order: PlacedOrder,
    /// The version this certificate renews.
    pub renews: Option<i64>,
}

/// Input of [`AcmeActivities::renewal_plan`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRequest {
    /// Domain.
    pub domain: String,
    /// Version served now.
    pub version: i64,
}

/// When to renew, and when to ask again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalPlan {
    /// Renew at this time (unix milliseconds).
    pub renew_at_ms: i64,
    /// Ask again at this time even if not due (ARI `Retry-After`); equals `renew_at_ms`
    /// without ARI.
    pub recheck_at_ms: i64,
    /// `ari` or `lifetime`.
    pub source: String,
    /// Human-readable reason (window, fraction).
    pub detail: String,
}

/// An activity failure before it becomes an `ActivityError`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn into_activity_error(self) -> ActivityError {
        let retryable = !matches!(
            self.kind,
            INVALID_DOMAIN | CAA_FORBIDDEN | ACCOUNT_DEACTIVATED
        );
        tracing::warn!(kind = self.kind, error = %self.message, "certificate activity failed");
        failure::error(self.kind, self.message, retryable)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        Failure::new(ISSUANCE_FAILED, format!("database: {e}"))
    }
}

/// Failure type for an ACME error.
pub fn classify(e: &instant_acme::Error) -> &'static str {
    match e {
        instant_acme::Error::Api(p) => classify_problem(p.r#type.as_deref(), p.detail.as_deref()),
        instant_acme::Error::Timeout(_) => CHALLENGE_FAILED,
        instant_acme::Error::Crypto | instant_acme::Error::KeyRejected => ISSUANCE_FAILED,
        // Transport: connection refused, TLS, HTTP framing, bodies that are not JSON.
        _ => CA_UNREACHABLE,
    }
}

/// Failure type for an RFC 8555 problem type.
pub fn classify_problem(kind: Option<&str>, detail: Option<&str>) -> &'static str {
    let short = kind
        .unwrap_or_default()
        .trim_start_matches("urn:ietf:params:acme:error:");
    match short {
        "rateLimited" => RATE_LIMITED,
        "rejectedIdentifier" | "unsupportedIdentifier" => INVALID_DOMAIN,
        "caa" => CAA_FORBIDDEN,
        "unauthorized"
            if detail.is_some_and(|d| d.to_ascii_lowercase().contains("deactivated")) =>
        {
            ACCOUNT_DEACTIVATED
        }
        "connection" | "dns" | "incorrectResponse" | "tls" | "unauthorized" => CHALLENGE_FAILED,
        "serverInternal" | "badNonce" => CA_UNREACHABLE,
        _ => ISSUANCE_FAILED,
    }
}

fn acme_failure(what: &str, e: instant_acme::Error) -> Failure {
    Failure::new(classify(&e), format!("{what}: {e}"))
}

/// Activities talking to the CA.
pub struct AcmeActivities {
    pool: PgPool,
    redis: Arc<RedisLink>,
    sealer: Option<Arc<KeySealer>>,
    settings: AcmeSettings,
    account: Mutex<Option<Account>>,
}

impl AcmeActivities {
    /// Activities for `settings`; `sealer` is `None` when no encryption key is configured
    /// (issuance then fails with a message saying so).
    pub fn new(
        pool: PgPool,
        redis: Arc<RedisLink>,
        sealer: Option<Arc<KeySealer>>,
        settings: AcmeSettings,
    ) -> Self {
        Self {
            pool,
            redis,
            sealer,
            settings,
            account: Mutex::new(None),
        }
    }

    fn sealer(&self) -> Result<&KeySealer, Failure> {
        if self.settings.directory_url.is_empty() {
            return Err(Failure::new(
                ISSUANCE_FAILED,
                "ACME is not configured: set the worker's `acme_directory_url`",
            ));
        }
        self.sealer.as_deref().ok_or_else(|| {
            Failure::new(
                ISSUANCE_FAILED,
                "no `cert_encryption_key` is configured for the worker: private keys cannot be \
                 stored",
            )
        })
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder, Failure> {
        let built = match self.settings.ca_file.as_str() {
            "" => Account::builder(),
            path => Account::builder_with_root(path),
        };
        built.map_err(|e| {
            Failure::new(
                ISSUANCE_FAILED,
                format!(
                    "ACME client (acme_ca_file {:?}): {e}",
                    self.settings.ca_file
                ),
            )
        })
    }

    /// The ACME account: cached, else restored from PostgreSQL, else created (and stored).
    async fn account(&self, fresh: bool) -> Result<Account, Failure> {
        let sealer = self.sealer()?;
        let mut cached = self.account.lock().await;
        if !fresh && let Some(a) = cached.as_ref() {
            return Ok(a.clone());
        }
        let url = &self.settings.directory_url;
        let aad = seal::account_aad(url);
        if !fresh {
            let stored: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT credentials FROM acme_accounts WHERE directory_url = $1",
            )
            .bind(url)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(sealed) = stored {
                let plain = sealer
                    .open(&sealed, &aad)
                    .map_err(|e| Failure::new(ISSUANCE_FAILED, format!("ACME account: {e}")))?;
                let creds = serde_json::from_slice(&plain).map_err(|e| {
                    Failure::new(ISSUANCE_FAILED, format!("stored ACME account: {e}"))
                })?;
                let account = self
                    .builder()?
                    .from_credentials(creds)
                    .await
                    .map_err(|e| acme_failure("restoring the ACME account", e))?;
                *cached = Some(account.clone());
                return Ok(account);
            }
        }
        let contact: Vec<&str> = match self.settings.contact.as_str() {
            "" => Vec::new(),
            c => vec![c],
        };
        let eab = self
            .settings
            .external_account
            .as_ref()
            .map(|(kid, key)| instant_acme::ExternalAccountKey::new(kid.clone(), &key.0));
        let (account, creds) = self
            .builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                url.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(|e| {
                let eab_problem = matches!(&e, instant_acme::Error::Api(p)
                    if p.r#type.as_deref().is_some_and(|t| t.ends_with(":externalAccountRequired")
                        || (t.ends_with(":unauthorized") && eab.is_some())));
                let mut failure = acme_failure("creating the ACME account", e);
                if eab_problem {
                    // A configuration problem, not a validation one (`unauthorized` would
                    // otherwise read as a failed challenge).
                    failure.kind = ISSUANCE_FAILED;
                    failure.message.push_str(match eab.is_some() {
                        true => {
                            " (the CA refused the external account binding: check the \
                                  worker's `acme_eab_kid` and `acme_eab_hmac_key`)"
                        }
                        false => {
                            " (the CA requires external account binding: set the \
                                   worker's `acme_eab_kid` and `acme_eab_hmac_key`)"
                        }
                    });
                }
                failure
            })?;
        let json = serde_json::to_vec(&creds)
            .map_err(|e| Failure::new(ISSUANCE_FAILED, format!("ACME account: {e}")))?;
        let sealed = sealer
            .seal(&json, &aad)
            .map_err(|e| Failure::new(ISSUANCE_FAILED, e.to_string()))?;
        // `fresh` replaces an account the CA forgot; otherwise the first worker to register
        // wins and the others use its account (two workers starting together).
        let stored = sqlx::query(
            "INSERT INTO acme_accounts (directory_url, credentials) VALUES ($1, $2)
             ON CONFLICT (directory_url) DO UPDATE SET credentials = EXCLUDED.credentials,
                 created_at = now()
             WHERE $3",
        )
        .bind(url)
        .bind(sealed)
        .bind(fresh)
        .execute(&self.pool)
        .await?;
        if stored.rows_affected() == 0 {
            drop(cached);
            return Box::pin(self.account(false)).await;
        }
        tracing::info!(directory = %url, account = account.id(), "ACME account created");
        *cached = Some(account.clone());
        Ok(account)
    }

    /// Refuses a new order when the rolling budgets are spent; records the order otherwise.
    async fn reserve_order(&self, domain: &str) -> Result<i64, Failure> {
        let mut tx = self.pool.begin().await?;
        // One budget for every worker: orders are counted under one lock.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('burrow-acme-order-budget'))")
            .execute(&mut *tx)
            .await?;
        // The three rolling windows in one read: every order of the last 3 hours, and this
        // domain's failed validations (1 hour) and issued certificates (7 days).
        let (recent, failed, issued): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE created_at > now() - interval '3 hours'),
                    count(*) FILTER (WHERE domain = $1 AND outcome = 'authorization_failed'
                                       AND updated_at > now() - interval '1 hour'),
                    count(*) FILTER (WHERE domain = $1 AND outcome = 'valid'
                                       AND updated_at > now() - interval '7 days')
             FROM acme_orders
             WHERE created_at > now() - interval '3 hours' OR domain = $1",
        )
        .bind(domain)
        .fetch_one(&mut *tx)
        .await?;
        let s = &self.settings;
        let limits = [
            (
                recent,
                s.order_budget,
                format!(
                    "order budget spent: {recent} orders in the last 3 hours (budget {}, \
                     `acme_order_budget`); waiting keeps Burrow under the CA's limits",
                    s.order_budget
                ),
            ),
            (
                failed,
                s.failed_authz_per_host_hour,
                format!(
                    "{domain} failed validation {failed} times in the last hour (limit {}, \
                     `acme_failed_authz_per_host_hour`); fix what the last challenge error \
                     names, then replay",
                    s.failed_authz_per_host_hour
                ),
            ),
            (
                issued,
                s.issued_per_domain_week,
                format!(
                    "{domain} already got {issued} certificates in the last 7 days (limit {}, \
                     `acme_issued_per_domain_week`); repeated renewal requests wait instead of \
                     spending the CA budget every tenant shares",
                    s.issued_per_domain_week
                ),
            ),
        ];
        if let Some((_, _, message)) = limits
            .into_iter()
            .find(|(count, limit, _)| *count >= i64::from(*limit))
        {
            return Err(Failure::new(RATE_LIMITED, message));
        }
        let id: i64 =
            sqlx::query_scalar("INSERT INTO acme_orders (domain) VALUES ($1) RETURNING id")
                .bind(domain)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn mark_order(&self, id: i64, outcome: &str, detail: Option<&str>) {
        if let Err(e) = sqlx::query(
            // The finalize key copy is only needed until the certificate is stored.
            "UPDATE acme_orders SET outcome = $2, detail = $3, updated_at = now(),
                 key_encrypted = CASE WHEN $2 = 'valid' THEN NULL ELSE key_encrypted END
             WHERE id = $1",
        )
        .bind(id)
        .bind(outcome)
        .bind(detail)
        .execute(&self.pool)
        .await
        {
            tracing::warn!(error = %e, order = id, "could not record the order outcome");
        }
    }

    async fn place(&self, req: &OrderRequest, order_id: i64) -> Result<PlacedOrder, Failure> {
        let mut account = self.account(false).await?;
        let identifiers = [Identifier::Dns(req.domain.clone())];
        let replaces = req.replaces.as_deref().and_then(ari_cert_id);
        let mut strays = 0;
        let placed = match order_for(&account, &identifiers, replaces.clone(), &mut strays).await {
            Err(instant_acme::Error::Api(p))
                if p.r#type.as_deref()
                    == Some("urn:ietf:params:acme:error:accountDoesNotExist") =>
            {
                // The CA forgot the account (a test CA restarted, or the account was purged):
                // register again and retry once.
                tracing::warn!("the CA no longer knows Burrow's ACME account; registering again");
                account = self.account(true).await?;
                order_for(&account, &identifiers, replaces, &mut strays).await
            }
            other => other,
        };
        for _ in 0..strays {
            sqlx::query(
                "INSERT INTO acme_orders (domain, outcome, detail) VALUES ($1, 'failed',
                     'stray order: the CA ignored `replaces`; counted in the budget')",
            )
            .bind(&req.domain)
            .execute(&self.pool)
            .await?;
        }
        let mut order = placed.map_err(|e| acme_failure("placing the order", e))?;
        let order_url = order.url().to_owned();
        sqlx::query("UPDATE acme_orders SET order_url = $2, updated_at = now() WHERE id = $1")
            .bind(order_id)
            .bind(&order_url)
            .execute(&self.pool)
            .await?;

        let mut keys = Vec::new();
        let mut digests = Vec::new();
        let mut conn = self.redis.get().await.ok_or_else(|| {
            Failure::new(
                ISSUANCE_FAILED,
                "redis is unreachable: relays cannot be given the challenge answers",
            )
        })?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| acme_failure("reading authorizations", e))?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(Failure::new(
                        CHALLENGE_FAILED,
                        format!("authorization for {} is {other:?}", req.domain),
                    ));
                }
            }
            let kind = match self.settings.challenge {
                Challenge::Http01 => ChallengeType::Http01,
                Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                Failure::new(
                    INVALID_DOMAIN,
                    format!("the CA offers no {kind:?} challenge for {}", req.domain),
                )
            })?;
            let key_auth = challenge.key_authorization();
            let (key, value) = match self.settings.challenge {
                Challenge::Http01 => (
                    format!(
                        "{}acme:http01:{}",
                        self.settings.redis_prefix, challenge.token
                    ),
                    key_auth.as_str().to_owned(),
                ),
                Challenge::TlsAlpn01 => (
                    format!(
                        "{}acme:alpn:{}",
                        self.settings.redis_prefix,
                        req.domain.to_ascii_lowercase()
                    ),
                    alpn_certificate(&req.domain, key_auth.digest().as_ref())?,
                ),
            };
            let set: redis::RedisResult<()> = timed(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .arg("EX")
                    .arg(3600)
                    .query_async(&mut conn),
            )
            .await;
            set.map_err(|e| {
                Failure::new(
                    ISSUANCE_FAILED,
                    format!("redis: publishing the challenge: {e}"),
                )
            })?;
            keys.push(key);
            digests.push(sha1_hex(value.as_bytes()));
            challenge
                .set_ready()
                .await
                .map_err(|e| acme_failure("marking the challenge ready", e))?;
        }
        Ok(PlacedOrder {
            order_id,
            order_url,
            challenge_keys: keys,
            challenge_sha1: digests,
        })
    }

    async fn validate(&self, order: &PlacedOrder) -> Result<(), Failure> {
        let account = self.account(false).await?;
        let mut acme_order = account
            .order(order.order_url.clone())
            .await
            .map_err(|e| acme_failure("fetching the order", e))?;
        let polled = acme_order
            .poll_ready(
                // A CA that validates at once is asked again after 25 ms, a slow one at most
                // every few seconds (instant-acme honours Retry-After when the CA sends one).
                &RetryPolicy::new()
                    .initial_delay(Duration::from_millis(25))
                    .backoff(1.6)
                    .timeout(self.settings.validation_timeout),
            )
            .await;
        match polled {
            Ok(OrderStatus::Ready | OrderStatus::Valid | OrderStatus::Processing) => Ok(()),
            Ok(status) => {
                let mut details = Vec::new();
                let mut authorizations = acme_order.authorizations();
                while let Some(Ok(mut authz)) = authorizations.next().await {
                    let Ok(state) = authz.refresh().await else {
                        continue;
                    };
                    for c in &state.challenges {
                        if let Some(e) = &c.error {
                            details.push((
                                classify_problem(e.r#type.as_deref(), e.detail.as_deref()),
                                format!("{:?}: {e}", c.r#type),
                            ));
                        }
                    }
                }
                let kind = details.first().map(|d| d.0).unwrap_or(CHALLENGE_FAILED);
                let detail = match details.is_empty() {
                    true => format!("order became {status:?} without a challenge error"),
                    false => details
                        .into_iter()
                        .map(|d| d.1)
                        .collect::<Vec<_>>()
                        .join("; "),
                };
                Err(Failure::new(
                    kind,
                    format!("the CA could not validate the challenge: {detail}"),
                ))
            }
            Err(e) => Err(acme_failure("waiting for validation", e)),
        }
    }

    async fn remove_challenges(&self, keys: &[String], digests: &[String]) {
        if keys.is_empty() {
            return;
        }
        let Some(mut conn) = self.redis.get().await else {
            return;
        };
        for (i, key) in keys.iter().enumerate() {
            let removed: redis::RedisResult<i64> = match digests.get(i) {
                Some(digest) => {
                    timed(
                        redis::cmd("EVAL")
                            .arg(DELETE_IF_OURS)
                            .arg(1)
                            .arg(key)
                            .arg(digest)
                            .query_async(&mut conn),
                    )
                    .await
                }
                None => timed(redis::cmd("DEL").arg(key).query_async(&mut conn)).await,
            };
            if let Err(e) = removed {
                tracing::warn!(error = %e, "could not remove a challenge answer (it expires in an hour)");
            }
        }
    }

    async fn finalize(&self, req: &FinalizeRequest) -> Result<IssuedCert, Failure> {
        let sealer = self.sealer()?;
        let account = self.account(false).await?;
        let order_id = req.order.order_id;
        let mut order = account
            .order(req.order.order_url.clone())
            .await
            .map_err(|e| acme_failure("fetching the order", e))?;
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT key_encrypted FROM acme_orders WHERE id = $1")
                .bind(order_id)
                .fetch_optional(&self.pool)
                .await?
                .flatten();
        let aad = seal::order_key_aad(order_id);
        let key_pem = match (order.state().status, stored) {
            (OrderStatus::Ready, _) => {
                let key = rcgen::KeyPair::generate().map_err(|e| {
                    Failure::new(ISSUANCE_FAILED, format!("generating the key: {e}"))
                })?;
                let mut params = rcgen::CertificateParams::new(vec![req.domain.clone()])
                    .map_err(|e| Failure::new(INVALID_DOMAIN, format!("{}: {e}", req.domain)))?;
                params.distinguished_name = rcgen::DistinguishedName::new();
                let csr = params
                    .serialize_request(&key)
                    .map_err(|e| Failure::new(ISSUANCE_FAILED, format!("CSR: {e}")))?;
                let key_pem = key.serialize_pem();
                // Kept before the CA sees the CSR: a retry after a lost answer still has it.
                let sealed = sealer
                    .seal(key_pem.as_bytes(), &aad)
                    .map_err(|e| Failure::new(ISSUANCE_FAILED, e.to_string()))?;
                sqlx::query("UPDATE acme_orders SET key_encrypted = $2 WHERE id = $1")
                    .bind(order_id)
                    .bind(sealed)
                    .execute(&self.pool)
                    .await?;
                order
                    .finalize_csr(csr.der())
                    .await
                    .map_err(|e| acme_failure("finalizing the order", e))?;
                key_pem
            }
            (OrderStatus::Processing | OrderStatus::Valid, Some(sealed)) => {
                let plain = sealer
                    .open(&sealed, &aad)
                    .map_err(|e| Failure::new(ISSUANCE_FAILED, format!("order key: {e}")))?;
                String::from_utf8(plain)
                    .map_err(|_| Failure::new(ISSUANCE_FAILED, "order key is not UTF-8"))?
            }
            (status, _) => {
                return Err(Failure::new(
                    ORDER_UNUSABLE,
                    format!("order is {status:?} and cannot be finalized; a new order is needed"),
                ));
            }
        };
        let chain = order
            .poll_certificate(
                &RetryPolicy::new()
                    .initial_delay(Duration::from_millis(25))
                    .backoff(1.6)
                    .timeout(Duration::from_secs(60)),
            )
            .await
            .map_err(|e| acme_failure("downloading the certificate", e))?;
        let info = leaf_info(&chain)
            .map_err(|e| Failure::new(ISSUANCE_FAILED, format!("issued certificate: {e}")))?;
        if !info
            .dns_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&req.domain))
        {
            return Err(Failure::new(
                ISSUANCE_FAILED,
                format!(
                    "the CA issued a certificate for {:?}, not {}",
                    info.dns_names, req.domain
                ),
            ));
        }
        let issued = self
            .store(sealer, &req.domain, &chain, &key_pem, &info, req.renews)
            .await?;
        self.mark_order(order_id, "valid", None).await;
        metrics::counter!("burrow_certificates_issued_total").increment(1);
        tracing::info!(domain = %req.domain, version = issued.version, serial = %issued.serial, "certificate issued");
        Ok(issued)
    }

    async fn store(
        &self,
        sealer: &KeySealer,
        domain: &str,
        chain: &str,
        key_pem: &str,
        info: &crate::certinfo::LeafInfo,
        renews: Option<i64>,
    ) -> Result<IssuedCert, Failure> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('burrow-cert:' || $1))")
            .bind(domain)
            .execute(&mut *tx)
            .await?;
        // Idempotent: a retried activity finds the row it wrote.
        let existing =
            sqlx::query("SELECT version FROM certificates WHERE domain = $1 AND serial = $2")
                .bind(domain)
                .bind(&info.serial)
                .fetch_optional(&mut *tx)
                .await?;
        let version: i64 = match existing {
            Some(row) => row.get("version"),
            None => {
                let version: i64 = sqlx::query_scalar(
                    "SELECT COALESCE(max(version), 0) + 1 FROM certificates WHERE domain = $1",
                )
                .bind(domain)
                .fetch_one(&mut *tx)
                .await?;
                let sealed = sealer
                    .seal(key_pem.as_bytes(), &seal::cert_key_aad(domain, version))
                    .map_err(|e| Failure::new(ISSUANCE_FAILED, e.to_string()))?;
                sqlx::query(
                    "INSERT INTO certificates (domain, version, chain_pem, key_encrypted, serial,
                         ari_id, not_before, not_after, renewed_version, directory_url)
                     VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7), to_timestamp($8), $9, $10)",
                )
                .bind(domain)
                .bind(version)
                .bind(chain)
                .bind(sealed)
                .bind(&info.serial)
                .bind(&info.ari_id)
                .bind(info.not_before as f64)
                .bind(info.not_after as f64)
                .bind(renews)
                .bind(&self.settings.directory_url)
                .execute(&mut *tx)
                .await?;
                version
            }
        };
        tx.commit().await?;
        Ok(IssuedCert {
            domain: domain.to_owned(),
            version,
            serial: info.serial.clone(),
            not_before: info.not_before,
            not_after: info.not_after,
            ari_id: info.ari_id.clone(),
        })
    }

    async fn plan(&self, req: &PlanRequest) -> Result<RenewalPlan, Failure> {
        let row = sqlx::query(
            "SELECT extract(epoch FROM not_before)::bigint AS nb,
                    extract(epoch FROM not_after)::bigint AS na, ari_id
             FROM certificates WHERE domain = $1 AND version = $2",
        )
        .bind(&req.domain)
        .bind(req.version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| {
            Failure::new(
                ISSUANCE_FAILED,
                format!("certificate {} v{} is not stored", req.domain, req.version),
            )
        })?;
        let not_before: i64 = row.get("nb");
        let not_after: i64 = row.get("na");
        let ari_id: Option<String> = row.get("ari_id");
        let now_ms = chrono::Utc::now().timestamp_millis();
        if let Some(id) = ari_id.as_deref() {
            match self.ari_window(id).await {
                Ok(Some((start, end, retry_after))) => {
                    let (renew_at_ms, recheck_at_ms) = ari_times(
                        now_ms,
                        start,
                        end,
                        retry_after.max(self.settings.ari_min_recheck),
                        rand::rng().random(),
                    );
                    return Ok(RenewalPlan {
                        renew_at_ms,
                        recheck_at_ms,
                        source: "ari".into(),
                        detail: format!("CA window {} .. {}", fmt_ms(start), fmt_ms(end)),
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(domain = %req.domain, error = %e.message, "ARI lookup failed; using 2/3 of the lifetime")
                }
            }
        }
        let renew_at_ms = lifetime_renewal_ms(not_before, not_after, rand::rng().random());
        Ok(RenewalPlan {
            renew_at_ms,
            recheck_at_ms: renew_at_ms,
            source: "lifetime".into(),
            detail: "2/3 of the lifetime, minus jitter".into(),
        })
    }

    /// The CA's ARI window for `id`: `Ok(None)` when the CA offers no ARI.
    async fn ari_window(&self, id: &str) -> Result<Option<(i64, i64, Duration)>, Failure> {
        let account = self.account(false).await?;
        let cert_id = ari_cert_id(id)
            .ok_or_else(|| Failure::new(ISSUANCE_FAILED, format!("ARI id {id:?} is malformed")))?;
        match account.renewal_info(&cert_id).await {
            Ok((info, retry_after)) => {
                let ms = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
                Ok(Some((
                    ms(info.suggested_window.start),
                    ms(info.suggested_window.end),
                    retry_after,
                )))
            }
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(acme_failure("ARI", e)),
        }
    }
}

/// Deletes KEYS[1] only while it still holds the answer whose SHA-1 is ARGV[1].
const DELETE_IF_OURS: &str = "local v = redis.call('GET', KEYS[1]) \
    if v and redis.sha1hex(v) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        bytes,
    ))
}

/// A new order, naming the certificate it replaces when the CA supports that (RFC 9773).
/// `strays` counts orders the CA created that cannot be used (they still count against the
/// CA's limits, so the caller records them in the budget).
async fn order_for(
    account: &Account,
    identifiers: &[Identifier],
    replaces: Option<instant_acme::CertificateIdentifier<'static>>,
    strays: &mut u32,
) -> Result<instant_acme::Order, instant_acme::Error> {
    if let Some(r) = replaces {
        match account
            .new_order(&NewOrder::new(identifiers).replaces(r))
            .await
        {
            // No ARI at this CA: instant-acme refuses before sending anything.
            Err(instant_acme::Error::Unsupported(_)) => {}
            // The certificate was already replaced by an order of ours (a retry after a lost
            // answer): order without naming it again.
            Err(instant_acme::Error::Api(p))
                if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:alreadyReplaced") => {}
            // A CA that offers ARI but does not reflect `replaces` (Pebble behind an ARI
            // responder) created a plain order we cannot see: order again without it; the
            // stray order expires unused.
            Err(instant_acme::Error::Other(e))
                if e.to_string().contains("replaces field mismatch") =>
            {
                tracing::warn!("the CA ignored `replaces`; ordering without it");
                *strays += 1;
            }
            other => return other,
        }
    }
    account.new_order(&NewOrder::new(identifiers)).await
}

/// An RFC 9773 identifier (`aki.serial`, both base64url) as instant-acme takes it.
fn ari_cert_id(id: &str) -> Option<instant_acme::CertificateIdentifier<'static>> {
    let (aki, serial) = id.split_once('.')?;
    if aki.is_empty() || serial.is_empty() || serial.contains('.') {
        return None;
    }
    Some(instant_acme::CertificateIdentifier {
        authority_key_identifier: aki.to_owned().into(),
        serial: serial.to_owned().into(),
    })
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| ms.to_string())
}

/// Renewal time at 2/3 of the lifetime, moved earlier by up to 1/30 of the lifetime (capped at
/// 12 hours) so certificates issued together do not all renew at once. `unit` in [0, 1).
pub fn lifetime_renewal_ms(not_before: i64, not_after: i64, unit: f64) -> i64 {
    let lifetime_ms = (not_after - not_before).max(0) * 1000;
    let at = not_before * 1000 + lifetime_ms * 2 / 3;
    let spread = (lifetime_ms / 30).min(12 * 3600 * 1000);
    at - (spread as f64 * unit.clamp(0.0, 1.0)) as i64
}

/// RFC 9773 §4.2: a uniformly random time inside the window (now when it has passed), and the
/// next check after `Retry-After`, clamped to [1 s, 24 h].
pub fn ari_times(
    now_ms: i64,
    start_ms: i64,
    end_ms: i64,
    retry_after: Duration,
    unit: f64,
) -> (i64, i64) {
    let renew = if end_ms <= now_ms {
        now_ms
    } else {
        let from = start_ms.max(now_ms);
        from + ((end_ms - from) as f64 * unit.clamp(0.0, 1.0)) as i64
    };
    let wait = retry_after.clamp(Duration::from_secs(1), Duration::from_secs(24 * 3600));
    (renew, now_ms + wait.as_millis() as i64)
}

/// A self-signed RFC 8737 challenge certificate for `domain` carrying `digest` (SHA-256 of the
/// key authorization), and its key: combined PEM.
fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<String, Failure> {
    let failed =
        |e: rcgen::Error| Failure::new(ISSUANCE_FAILED, format!("TLS-ALPN-01 certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_owned()]).map_err(failed)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// Output of [`AcmeActivities::revoke_certificates`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeOutcome {
    /// Versions revoked now.
    pub revoked: Vec<i64>,
    /// Versions the CA did not revoke, with why.
    pub failed: Vec<String>,
    /// Versions issued by another ACME directory than the configured one (left to expire).
    #[serde(default)]
    pub skipped: Vec<i64>,
}

impl AcmeActivities {
    /// Revokes every still-valid, not yet revoked certificate of `domain` (reason
    /// cessationOfOperation: the domain left the platform), recording `revoked_at`. A CA that
    /// says one is revoked already counts as revoked. Stops if the domain is verified again
    /// meanwhile. Fails (retryably) if the CA refused any, after recording the others.
    async fn revoke_all(&self, domain: &str) -> Result<RevokeOutcome, Failure> {
        // Nothing to revoke (say, removed before its first certificate) needs no CA.
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT version, chain_pem, directory_url FROM certificates
             WHERE domain = $1 AND revoked_at IS NULL AND not_after > now() ORDER BY version",
        )
        .bind(domain)
        .fetch_all(&self.pool)
        .await?;
        let mut outcome = RevokeOutcome::default();
        // Only the CA that issued a certificate revokes it with this account.
        let current = &self.settings.directory_url;
        let rows: Vec<(i64, String)> = rows
            .into_iter()
            .filter_map(|(version, chain, issuer)| match issuer {
                Some(other) if other != *current => {
                    tracing::warn!(%domain, version, issuer = %other, "not revoking a certificate another ACME directory issued; it will expire");
                    outcome.skipped.push(version);
                    None
                }
                _ => Some((version, chain)),
            })
            .collect();
        if rows.is_empty() {
            return Ok(outcome);
        }
        let account = self.account(false).await?;
        for (version, chain) in rows {
            let verified: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM custom_domains WHERE domain = $1 AND status = 'verified')",
            )
            .bind(domain)
            .fetch_one(&self.pool)
            .await?;
            if verified {
                tracing::info!(%domain, "domain verified again: not revoking its certificates");
                break;
            }
            use rustls_pki_types::pem::PemObject as _;
            let Some(Ok(leaf)) =
                rustls_pki_types::CertificateDer::pem_slice_iter(chain.as_bytes()).next()
            else {
                outcome
                    .failed
                    .push(format!("v{version}: the stored chain does not parse"));
                continue;
            };
            let request = instant_acme::RevocationRequest {
                certificate: &leaf,
                reason: Some(instant_acme::RevocationReason::CessationOfOperation),
            };
            let revoked = match account.revoke(&request).await {
                Ok(()) => true,
                Err(instant_acme::Error::Api(p))
                    if p.r#type
                        .as_deref()
                        .is_some_and(|t| t.ends_with(":alreadyRevoked")) =>
                {
                    true
                }
                Err(e) => {
                    outcome.failed.push(format!("v{version}: {e}"));
                    false
                }
            };
            if revoked {
                sqlx::query(
                    "UPDATE certificates SET revoked_at = now() WHERE domain = $1 AND version = $2",
                )
                .bind(domain)
                .bind(version)
                .execute(&self.pool)
                .await?;
                outcome.revoked.push(version);
            }
        }
        tracing::info!(%domain, revoked = ?outcome.revoked, failed = ?outcome.failed, skipped = ?outcome.skipped, "certificates of a removed domain revoked");
        if !outcome.failed.is_empty() {
            return Err(Failure::new(
                ISSUANCE_FAILED,
                format!("revoking: {}", outcome.failed.join("; ")),
            ));
        }
        Ok(outcome)
    }
}

#[activities]
impl AcmeActivities {
    /// Places an order within the budget and publishes its challenge answers to the relays.
    #[activity]
    pub async fn place_order(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: OrderRequest,
    ) -> Result<PlacedOrder, ActivityError> {
        self.sealer().map_err(Failure::into_activity_error)?;
        // The account first: a CA refusing it (say, a wrong EAB key) spends no order budget.
        self.account(false)
            .await
            .map_err(Failure::into_activity_error)?;
        let order_id = self
            .reserve_order(&req.domain)
            .await
            .map_err(Failure::into_activity_error)?;
        match self.place(&req, order_id).await {
            Ok(placed) => Ok(placed),
            Err(f) => {
                self.mark_order(order_id, "failed", Some(&f.message)).await;
                Err(f.into_activity_error())
            }
        }
    }

    /// Waits until the CA validated every challenge of the order; removes the answers.
    #[activity]
    pub async fn await_validation(
        self: Arc<Self>,
        _ctx: ActivityContext,
        order: PlacedOrder,
    ) -> Result<(), ActivityError> {
        let validated = self.validate(&order).await;
        self.remove_challenges(&order.challenge_keys, &order.challenge_sha1)
            .await;
        if let Err(f) = &validated {
            let outcome = match f.kind {
                CHALLENGE_FAILED => "authorization_failed",
                _ => "failed",
            };
            self.mark_order(order.order_id, outcome, Some(&f.message))
                .await;
        }
        validated.map_err(Failure::into_activity_error)
    }

    /// Finalizes a validated order, downloads the chain and stores it with its sealed key.
    #[activity]
    pub async fn finalize_order(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: FinalizeRequest,
    ) -> Result<IssuedCert, ActivityError> {
        match self.finalize(&req).await {
            Ok(issued) => Ok(issued),
            Err(f) => {
                self.mark_order(req.order.order_id, "failed", Some(&f.message))
                    .await;
                Err(f.into_activity_error())
            }
        }
    }

    /// Revokes the still-valid certificates of a removed domain at the CA.
    #[activity]
    pub async fn revoke_certificates(
        self: Arc<Self>,
        _ctx: ActivityContext,
        domain: String,
    ) -> Result<RevokeOutcome, ActivityError> {
        self.revoke_all(&domain)
            .await
            .map_err(Failure::into_activity_error)
    }

    /// When to renew the certificate now served.
    #[activity]
    pub async fn renewal_plan(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: PlanRequest,
    ) -> Result<RenewalPlan, ActivityError> {
        self.plan(&req).await.map_err(Failure::into_activity_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn problem_types_map_to_failure_types() {
        let p = |t: &str| classify_problem(Some(&format!("urn:ietf:params:acme:error:{t}")), None);
        assert_eq!(p("rateLimited"), RATE_LIMITED);
        assert_eq!(p("rejectedIdentifier"), INVALID_DOMAIN);
        assert_eq!(p("caa"), CAA_FORBIDDEN);
        assert_eq!(p("connection"), CHALLENGE_FAILED);
        assert_eq!(p("incorrectResponse"), CHALLENGE_FAILED);
        assert_eq!(p("serverInternal"), CA_UNREACHABLE);
        assert_eq!(p("somethingNew"), ISSUANCE_FAILED);
        // A malformed request is usually our bug, not the name's: retry, do not park at once.
        assert_eq!(p("malformed"), ISSUANCE_FAILED);
        assert_eq!(
            classify_problem(
                Some("urn:ietf:params:acme:error:unauthorized"),
                Some("Account is Deactivated")
            ),
            ACCOUNT_DEACTIVATED
        );
        assert_eq!(classify_problem(None, None), ISSUANCE_FAILED);
    }

    #[test]
    fn non_retryable_failures_are_the_ones_the_ca_will_refuse_again() {
        for (kind, retryable) in [
            (INVALID_DOMAIN, false),
            (CAA_FORBIDDEN, false),
            (ACCOUNT_DEACTIVATED, false),
            (CA_UNREACHABLE, true),
            (RATE_LIMITED, true),
            (CHALLENGE_FAILED, true),
        ] {
            let e = Failure::new(kind, "x").into_activity_error();
            assert_eq!(
                format!("{e:?}").contains("non_retryable: true"),
                !retryable,
                "{kind}: {e:?}"
            );
        }
    }

    #[test]
    fn lifetime_renewal_is_two_thirds_in_minus_bounded_jitter() {
        let nb = 1_700_000_000;
        let na = nb + 90 * 86_400;
        let at = lifetime_renewal_ms(nb, na, 0.0);
        assert_eq!(at, (nb + 60 * 86_400) * 1000);
        let earliest = lifetime_renewal_ms(nb, na, 1.0);
        assert_eq!(at - earliest, 12 * 3600 * 1000, "jitter capped at 12 h");
    }

    proptest! {
        #[test]
        fn lifetime_renewal_stays_inside_the_validity(
            nb in 0i64..4_000_000_000, life in 60i64..400 * 86_400, unit in 0.0f64..1.0
        ) {
            let at = lifetime_renewal_ms(nb, nb + life, unit);
            prop_assert!(at > nb * 1000);
            prop_assert!(at < (nb + life) * 1000);
        }

        #[test]
        fn ari_renewal_falls_inside_the_window_or_now(
            now in 0i64..1_000_000_000, start_off in -100_000i64..100_000, len in 0i64..100_000,
            retry in 0u64..200_000, unit in 0.0f64..1.0
        ) {
            let start = now + start_off;
            let end = start + len;
            let (renew, recheck) = ari_times(now, start, end, Duration::from_secs(retry), unit);
            if end <= now {
                prop_assert_eq!(renew, now);
            } else {
                prop_assert!(renew >= start.max(now) && renew <= end);
            }
            prop_assert!(recheck >= now + 1000 && recheck <= now + 24 * 3600 * 1000);
        }
    }
}

#[cfg(test)]
mod challenge_tests {
    use super::*;

    /// Against the suite's Redis: an answer is removed only while it is still this order's.
    #[tokio::test]
    async fn a_challenge_answer_is_removed_only_while_it_is_still_ours() {
        let url = std::env::var("BURROW_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let key = format!("burrow-test:{}:acme:alpn:x.example", uuid::Uuid::new_v4());
        let ours = "our answer";
        let theirs = "a later attempt's answer";
        let eval = |digest: String| {
            redis::cmd("EVAL")
                .arg(DELETE_IF_OURS)
                .arg(1)
                .arg(&key)
                .arg(digest)
                .clone()
        };
        // Holding `held`, delete if the answer is still ours: how many keys went.
        let mut set_then_delete_ours = async |held: &str| -> i64 {
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(held)
                .query_async(&mut conn)
                .await
                .unwrap();
            eval(sha1_hex(ours.as_bytes()))
                .query_async(&mut conn)
                .await
                .unwrap()
        };
        assert_eq!(
            set_then_delete_ours(theirs).await,
            0,
            "another attempt's answer stays"
        );
        assert_eq!(set_then_delete_ours(ours).await, 1);
        let left: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(left, None);
    }
}
