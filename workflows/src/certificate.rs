//! A custom domain's certificate, for as long as the domain is verified: issue, distribute to
//! relays, serve, renew, forever; one run per domain (`certificate-<domain>`).
//!
//! ```text
//!  pending ─▶ ordering ─▶ validating ─▶ finalizing ─▶ distributing ─▶ serving ──┐
//!                ▲  (any step fails, retryable)                           │     │ renewal due
//!                │        └─▶ retry_wait ──(timer, schedule)──▶ same step     │     │ (ARI window or
//!                │  retries exhausted / not retryable:                        │     │  2/3 of lifetime),
//!                │        └─▶ challenge_failed | rate_limited | ca_unreachable   │     │ or a callback
//!                │            | invalid_domain | caa_forbidden | account_deactivated
//!                │            | issuance_failed | distribution_partial   (parked: DLQ + incident)
//!                │               │ certificate near expiry ─▶ expiring_unrenewed (incident escalates)
//!                │               └─ `replay` signal from ops ─▶ the step that failed
//!                └────────────────────────────────────────────────────────────────┘
//!  `remove` signal (domain removed) ─▶ removed (run ends)
//! ```
//!
//! Every transition is mirrored to `workflow_runs` (console, `/v1/ops/workflows`), set as the
//! `BurrowCertState` search attribute, and answered by the `state` query. Entering a parked
//! state opens an incident; serving again resolves it. Retries follow the schedule in the
//! input (certmagic's by default), with ±10 % jitter drawn from workflow randomness so replays
//! stay deterministic; the global order budget and per-host failure limits are enforced by the
//! `place_order` activity (`rate_limited`).

use burrow_activities::acme::{
    AcmeActivities, FinalizeRequest, IssuedCert, OrderRequest, PlacedOrder, PlanRequest,
};
use burrow_activities::distribution::{DistributeRequest, DistributionActivities};
use burrow_activities::failure;
use burrow_activities::incidents::{IncidentActivities, IncidentReport, IncidentResolution};
use burrow_activities::{MirrorActivities, StateRecord};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use temporalio_common::RetryPolicy;
use temporalio_common::error::{ActivityExecutionError, IncomingError};
use temporalio_common::search_attributes::SearchAttributeKey;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ContinueAsNewOptions, LocalActivityOptions, SyncWorkflowContext,
    WorkflowContext, WorkflowContextView, WorkflowResult,
};

pub use crate::provider_webhook::ReplayRequest;

/// Kind name (`workflow_runs.kind`, runbook folder).
pub const KIND: &str = "certificate";

/// Search attribute carrying the state (register as Keyword; the worker does at start).
pub const STATE_ATTRIBUTE: &str = "BurrowCertState";

const STATE_KEY: SearchAttributeKey<String> = SearchAttributeKey::keyword(STATE_ATTRIBUTE);

/// Workflow id of `domain`'s certificate run.
pub fn workflow_id(domain: &str) -> String {
    format!("{KIND}-{}", domain.to_ascii_lowercase())
}

/// Every state of the certificate workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertState {
    /// Started, nothing done yet.
    Pending,
    /// Placing an ACME order and publishing challenge answers.
    Ordering,
    /// Waiting for the CA to validate the challenges.
    Validating,
    /// Finalizing, downloading and storing the certificate.
    Finalizing,
    /// Pushing the certificate to every relay.
    Distributing,
    /// Served by every relay; waiting for renewal time.
    Serving,
    /// A step failed; waiting out the retry schedule.
    RetryWait,
    /// The domain was removed; the run ended.
    Removed,
    /// The CA could not validate a challenge.
    ChallengeFailed,
    /// The CA rate-limited us, or Burrow's own order budget is spent.
    RateLimited,
    /// The CA did not answer.
    CaUnreachable,
    /// Some relays did not take the certificate.
    DistributionPartial,
    /// Parked while the served certificate nears expiry.
    ExpiringUnrenewed,
    /// The CA refuses the name.
    InvalidDomain,
    /// CAA forbids the CA from issuing.
    CaaForbidden,
    /// The ACME account is deactivated.
    AccountDeactivated,
    /// Anything else (finalize, storage, configuration).
    IssuanceFailed,
}

impl CertState {
    /// States in which the run is parked until replayed (each has a runbook page).
    pub const FAILURES: [CertState; 9] = [
        CertState::ChallengeFailed,
        CertState::RateLimited,
        CertState::CaUnreachable,
        CertState::DistributionPartial,
        CertState::ExpiringUnrenewed,
        CertState::InvalidDomain,
        CertState::CaaForbidden,
        CertState::AccountDeactivated,
        CertState::IssuanceFailed,
    ];

    /// Every state.
    pub const ALL: [CertState; 17] = [
        CertState::Pending,
        CertState::Ordering,
        CertState::Validating,
        CertState::Finalizing,
        CertState::Distributing,
        CertState::Serving,
        CertState::RetryWait,
        CertState::Removed,
        CertState::ChallengeFailed,
        CertState::RateLimited,
        CertState::CaUnreachable,
        CertState::DistributionPartial,
        CertState::ExpiringUnrenewed,
        CertState::InvalidDomain,
        CertState::CaaForbidden,
        CertState::AccountDeactivated,
        CertState::IssuanceFailed,
    ];

    /// Name as stored, queried and used for runbook pages.
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Pending => "pending",
            CertState::Ordering => "ordering",
            CertState::Validating => "validating",
            CertState::Finalizing => "finalizing",
            CertState::Distributing => "distributing",
            CertState::Serving => "serving",
            CertState::RetryWait => "retry_wait",
            CertState::Removed => "removed",
            CertState::ChallengeFailed => "challenge_failed",
            CertState::RateLimited => "rate_limited",
            CertState::CaUnreachable => "ca_unreachable",
            CertState::DistributionPartial => "distribution_partial",
            CertState::ExpiringUnrenewed => "expiring_unrenewed",
            CertState::InvalidDomain => "invalid_domain",
            CertState::CaaForbidden => "caa_forbidden",
            CertState::AccountDeactivated => "account_deactivated",
            CertState::IssuanceFailed => "issuance_failed",
        }
    }

    /// Whether the run is parked in this state.
    pub fn is_failure(self) -> bool {
        Self::FAILURES.contains(&self)
    }

    /// The parked state for an activity failure type.
    pub fn from_failure_type(type_name: Option<&str>) -> Self {
        match type_name {
            Some(failure::CHALLENGE_FAILED) => CertState::ChallengeFailed,
            Some(failure::RATE_LIMITED) => CertState::RateLimited,
            Some(failure::CA_UNREACHABLE) => CertState::CaUnreachable,
            Some(failure::DISTRIBUTION_PARTIAL) => CertState::DistributionPartial,
            Some(failure::INVALID_DOMAIN) => CertState::InvalidDomain,
            Some(failure::CAA_FORBIDDEN) => CertState::CaaForbidden,
            Some(failure::ACCOUNT_DEACTIVATED) => CertState::AccountDeactivated,
            _ => CertState::IssuanceFailed,
        }
    }
}

/// certmagic's retry schedule: 1, 2, 2, 5, 10, 20, 20, 30, 30 minutes, 1 h, 3 h, then 6 h
/// four times (about 30 hours in all) before the run parks.
pub fn default_retry_schedule_ms() -> Vec<u64> {
    [1, 2, 2, 5, 10, 20, 20, 30, 30, 60, 180, 360, 360, 360, 360]
        .iter()
        .map(|m| m * 60_000)
        .collect()
}

/// Parses a retry schedule like `1m,2m,2m,5m,1h` (units `ms`, `s`, `m`, `h`) into milliseconds.
pub fn parse_schedule(text: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for (i, part) in text.split(',').map(str::trim).enumerate() {
        let digits = part.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let unit = &part[digits.len()..];
        let n: u64 = digits.parse().map_err(|_| {
            format!(
                "retry schedule entry {} ({part:?}) is not a number with a unit like 30s",
                i + 1
            )
        })?;
        let scale = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => {
                return Err(format!(
                    "retry schedule entry {} ({part:?}) needs a unit: ms, s, m or h",
                    i + 1
                ));
            }
        };
        let ms = n
            .checked_mul(scale)
            .filter(|ms| *ms > 0 && *ms <= 7 * 24 * 3_600_000)
            .ok_or_else(|| {
                format!(
                    "retry schedule entry {} ({part:?}) must be between 1ms and 7 days",
                    i + 1
                )
            })?;
        out.push(ms);
    }
    if out.len() > 100 {
        return Err("a retry schedule has at most 100 entries".into());
    }
    Ok(out)
}

/// Input of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateInput {
    /// The custom domain.
    pub domain: String,
    /// Delays between attempts of a failing step (its length is the number of retries).
    pub retry_schedule_ms: Vec<u64>,
    /// A parked run escalates to `expiring_unrenewed` this long before the served
    /// certificate expires.
    pub expiry_warning_ms: u64,
    /// The certificate served, when continuing as new after a renewal.
    #[serde(default)]
    pub serving: Option<IssuedCert>,
    /// Renewals done by earlier runs of this domain.
    #[serde(default)]
    pub renewals: u32,
    /// Replays ops asked for in earlier runs of this domain.
    #[serde(default)]
    pub replays: u32,
}

impl CertificateInput {
    /// Input with default schedule and warning (14 days).
    pub fn new(domain: &str) -> Self {
        Self {
            domain: domain.to_ascii_lowercase(),
            retry_schedule_ms: default_retry_schedule_ms(),
            expiry_warning_ms: 14 * 24 * 3_600_000,
            serving: None,
            renewals: 0,
            replays: 0,
        }
    }
}

/// A callback event delivered to the run (`POST /v1/cert-callbacks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertEvent {
    /// The sender's id (deduplicated by the api; kept here for history).
    pub callback_id: String,
    /// Internal event type, e.g. `certificate.revoked`.
    pub event_type: String,
}

/// What an event type asks of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventEffect {
    /// Order a new certificate now.
    RenewNow,
    /// Ask the CA for the renewal window again now.
    Recheck,
    /// Nothing (unknown to this version of the workflow).
    None,
}

/// The effect of each internal event type.
pub fn event_effect(event_type: &str) -> EventEffect {
    match event_type {
        "certificate.revoked" | "certificate.renewal_requested" => EventEffect::RenewNow,
        "certificate.renewal_window_changed" | "certificate.expiry_warning" => EventEffect::Recheck,
        _ => EventEffect::None,
    }
}

/// The domain was removed: stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveRequest {
    /// Why, for history.
    pub reason: String,
}

/// Answer of the `status` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CertStatus {
    /// State name.
    pub state: String,
    /// Version served, if any.
    pub version: Option<i64>,
    /// Its expiry, unix seconds.
    pub not_after: Option<i64>,
    /// Planned renewal, unix milliseconds.
    pub renew_at_ms: Option<i64>,
    /// Where the plan came from (`ari`, `lifetime`).
    pub plan_source: Option<String>,
    /// Last error.
    pub last_error: Option<String>,
    /// Attempts of the current step.
    pub attempts: u32,
    /// Renewals completed (across continue-as-new).
    pub renewals: u32,
}

/// The certificate workflow.
#[workflow]
#[derive(Default)]
pub struct CertificateWorkflow {
    status: CertStatus,
    replays_requested: u32,
    renew_requests: u32,
    rechecks: u32,
    removed: bool,
    /// Callback ids already acted on (the last [`SEEN_CALLBACKS`]): a delivery signalled
    /// twice changes nothing the second time.
    seen_callbacks: std::collections::VecDeque<String>,
}

/// Callback ids a run remembers.
const SEEN_CALLBACKS: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Issue,
    /// Finalize this validated order (again, after a failure that left it usable).
    Finalize(PlacedOrder),
    Distribute,
    Serve,
}

/// A failed step.
struct StepFailure {
    state: CertState,
    message: String,
    retryable: bool,
    /// The order cannot be finalized any more: the next attempt places a new one.
    order_unusable: bool,
}

fn classify(e: &ActivityExecutionError) -> StepFailure {
    match e.cause() {
        Some(IncomingError::Application(af)) => StepFailure {
            state: CertState::from_failure_type(af.type_name()),
            message: af.source_error().to_string(),
            retryable: !af.is_non_retryable(),
            order_unusable: af.type_name() == Some(failure::ORDER_UNUSABLE),
        },
        _ => StepFailure {
            state: CertState::IssuanceFailed,
            message: e.to_string(),
            retryable: true,
            order_unusable: false,
        },
    }
}

/// What a run carries between steps.
struct Run {
    stage: Stage,
    /// The newest certificate issued (being distributed, or served).
    serving: Option<IssuedCert>,
    /// The newest certificate every relay took: what visitors get while a renewal's
    /// distribution is partial, and so what expiry escalation follows.
    distributed: Option<IssuedCert>,
    attempts: u32,
    replays_seen: u32,
    renews_seen: u32,
    rechecks_seen: u32,
    renewals: u32,
    replays: u32,
}

impl Run {
    /// The certificate visitors can count on: the last one fully distributed, else the newest.
    fn served(&self) -> Option<&IssuedCert> {
        self.distributed.as_ref().or(self.serving.as_ref())
    }
}

type Ctx = WorkflowContext<CertificateWorkflow>;
type Step = WorkflowResult<Result<(), StepFailure>>;

#[workflow_methods]
impl CertificateWorkflow {
    /// Issues, distributes, serves and renews `input.domain`'s certificate until removed.
    #[run]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: CertificateInput,
    ) -> WorkflowResult<String> {
        let mut run = Run {
            stage: match input.serving {
                Some(_) => Stage::Serve,
                None => Stage::Issue,
            },
            serving: input.serving.clone(),
            distributed: input.serving.clone(),
            attempts: 0,
            replays_seen: 0,
            renews_seen: 0,
            rechecks_seen: 0,
            renewals: input.renewals,
            replays: input.replays,
        };
        if run.serving.is_none() {
            record(ctx, &input, &run, CertState::Pending, None).await?;
        }
        loop {
            if ctx.state(|s| s.removed) {
                // Removed, then verified again before this run noticed (the api kept this run
                // for the new verification): carry on instead of leaving the domain without one.
                let verified = domain_verified(ctx, &input).await?;
                if verified {
                    ctx.state_mut(|s| s.removed = false);
                    continue;
                }
                // The domain left: its still-valid certificates are revoked at the CA (runs
                // that were mid-removal when this shipped replay without it). A CA that stays
                // unreachable through the retries does not keep the run alive: the
                // certificates then just expire (the next replication pass takes them off the
                // relays either way).
                if ctx.patched(REVOKE_ON_REMOVAL) {
                    let _revoked = ctx
                        .execute_activity(
                            AcmeActivities::revoke_certificates,
                            input.domain.clone(),
                            revocation_options(),
                        )
                        .await;
                    // Verified again while revoking: this run carries on with a fresh
                    // certificate (what it held may be revoked now).
                    let verified = domain_verified(ctx, &input).await?;
                    if verified {
                        ctx.state_mut(|s| s.removed = false);
                        run.serving = None;
                        run.distributed = None;
                        run.stage = Stage::Issue;
                        continue;
                    }
                }
                ctx.execute_activity(
                    IncidentActivities::resolve_incident,
                    IncidentResolution {
                        workflow_id: ctx.workflow_id().to_owned(),
                        detail: "the domain was removed".into(),
                    },
                    bookkeeping_options(),
                )
                .await?;
                record(ctx, &input, &run, CertState::Removed, None).await?;
                return Ok(CertState::Removed.as_str().to_owned());
            }
            let step = match run.stage.clone() {
                Stage::Issue => issue(ctx, &input, &mut run).await?,
                Stage::Finalize(order) => finalize(ctx, &input, &mut run, order).await?,
                Stage::Distribute => distribute(ctx, &input, &mut run).await?,
                Stage::Serve => {
                    serve(ctx, &input, &mut run).await?;
                    Ok(())
                }
            };
            if let Err(f) = step {
                on_failure(ctx, &input, &mut run, f).await?;
            }
        }
    }

    /// Ops: retry a parked run now (or cut a retry wait short).
    #[signal]
    pub fn replay(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _request: ReplayRequest) {
        self.replays_requested += 1;
    }

    /// A mapped callback event.
    #[signal]
    pub fn cert_event(&mut self, _ctx: &mut SyncWorkflowContext<Self>, event: CertEvent) {
        if self.seen_callbacks.contains(&event.callback_id) {
            return;
        }
        if self.seen_callbacks.len() >= SEEN_CALLBACKS {
            self.seen_callbacks.pop_front();
        }
        self.seen_callbacks.push_back(event.callback_id.clone());
        match event_effect(&event.event_type) {
            EventEffect::RenewNow => self.renew_requests += 1,
            EventEffect::Recheck => self.rechecks += 1,
            EventEffect::None => {}
        }
    }

    /// The domain was removed.
    #[signal]
    pub fn remove(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _request: RemoveRequest) {
        self.removed = true;
    }

    /// Current state name.
    #[query]
    pub fn state(&self, _ctx: &WorkflowContextView) -> String {
        self.status.state.clone()
    }

    /// Current state with the certificate served and the renewal plan.
    #[query]
    pub fn status(&self, _ctx: &WorkflowContextView) -> CertStatus {
        self.status.clone()
    }
}

fn now_ms(ctx: &Ctx) -> i64 {
    ctx.workflow_time()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Timeouts and a single attempt: the workflow owns the retry schedule of ACME steps.
fn acme_options(timeout: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(timeout)
        .retry_policy(RetryPolicy::builder().maximum_attempts(1).build())
        .build()
}

/// Whether the run's domain is verified (removed, then verified again, keeps the run).
async fn domain_verified(ctx: &mut Ctx, input: &CertificateInput) -> WorkflowResult<bool> {
    Ok(ctx
        .execute_activity(
            DistributionActivities::domain_verified,
            input.domain.clone(),
            bookkeeping_options(),
        )
        .await?)
}

/// Patch id of revoking certificates when the domain is removed.
const REVOKE_ON_REMOVAL: &str = "revoke-on-removal";

/// Revocation at removal: a few tries over about two minutes, then the run ends anyway.
fn revocation_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_interval(Duration::from_secs(60))
                .maximum_attempts(5)
                .build(),
        )
        .build()
}

/// Bookkeeping activities (PostgreSQL only) retry until they succeed.
fn bookkeeping_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .maximum_interval(Duration::from_secs(60))
                .build(),
        )
        .build()
}

async fn record(
    ctx: &mut Ctx,
    input: &CertificateInput,
    run: &Run,
    state: CertState,
    last_error: Option<String>,
) -> WorkflowResult<()> {
    ctx.state_mut(|s| {
        s.status.state = state.as_str().to_owned();
        s.status.version = run.serving.as_ref().map(|c| c.version);
        s.status.not_after = run.serving.as_ref().map(|c| c.not_after);
        s.status.attempts = run.attempts;
        s.status.renewals = run.renewals;
        if state == CertState::Serving {
            s.status.last_error = None;
        } else if last_error.is_some() {
            s.status.last_error = last_error.clone();
        }
    });
    ctx.upsert_search_attributes([STATE_KEY.value_set(state.as_str().to_owned())]);
    // A local activity: the mirror write runs in this worker without a round trip through the
    // task queue (it is on the path of every transition).
    ctx.execute_local_activity(
        MirrorActivities::record_state,
        StateRecord {
            workflow_id: ctx.workflow_id().to_owned(),
            kind: KIND.to_owned(),
            subject: input.domain.clone(),
            state: state.as_str().to_owned(),
            last_error,
            replays: run.replays,
            attempts: Some(run.attempts),
            failure: state.is_failure(),
            clear_error: state == CertState::Serving,
        },
        LocalActivityOptions::builder()
            .start_to_close_timeout(Duration::from_secs(10))
            .retry_policy(
                RetryPolicy::builder()
                    .initial_interval(Duration::from_millis(500))
                    .maximum_interval(Duration::from_secs(60))
                    .build(),
            )
            .build(),
    )
    .await?;
    Ok(())
}

async fn issue(ctx: &mut Ctx, input: &CertificateInput, run: &mut Run) -> Step {
    // The certificate this issuance produces satisfies every renewal asked for so far.
    run.renews_seen = ctx.state(|s| s.renew_requests);
    record(ctx, input, run, CertState::Ordering, None).await?;
    let placed: PlacedOrder = match ctx
        .execute_activity(
            AcmeActivities::place_order,
            OrderRequest {
                domain: input.domain.clone(),
                replaces: run.serving.as_ref().and_then(|c| c.ari_id.clone()),
            },
            acme_options(Duration::from_secs(120)),
        )
        .await
    {
        Ok(p) => p,
        Err(e) => return Ok(Err(classify(&e))),
    };
    if ctx.state(|s| s.removed) {
        return Ok(Ok(()));
    }
    record(ctx, input, run, CertState::Validating, None).await?;
    if let Err(e) = ctx
        .execute_activity(
            AcmeActivities::await_validation,
            placed.clone(),
            acme_options(Duration::from_secs(300)),
        )
        .await
    {
        return Ok(Err(classify(&e)));
    }
    run.stage = Stage::Finalize(placed.clone());
    if ctx.state(|s| s.removed) {
        return Ok(Ok(()));
    }
    finalize(ctx, input, run, placed).await
}

/// Finalizes a validated order. A failure keeps the order for the next attempt (the key is
/// sealed in its row, so a certificate the CA already issued is picked up, not ordered again)
/// unless the order can no longer be finalized.
async fn finalize(
    ctx: &mut Ctx,
    input: &CertificateInput,
    run: &mut Run,
    order: PlacedOrder,
) -> Step {
    record(ctx, input, run, CertState::Finalizing, None).await?;
    let issued = match ctx
        .execute_activity(
            AcmeActivities::finalize_order,
            FinalizeRequest {
                domain: input.domain.clone(),
                order,
                renews: run.serving.as_ref().map(|c| c.version),
            },
            acme_options(Duration::from_secs(180)),
        )
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let f = classify(&e);
            if f.order_unusable {
                run.stage = Stage::Issue;
            }
            return Ok(Err(f));
        }
    };
    if run.serving.is_some() {
        run.renewals += 1;
    }
    run.serving = Some(issued);
    run.stage = Stage::Distribute;
    run.attempts = 0;
    Ok(Ok(()))
}

async fn distribute(ctx: &mut Ctx, input: &CertificateInput, run: &mut Run) -> Step {
    let Some(cert) = run.serving.clone() else {
        run.stage = Stage::Issue;
        return Ok(Ok(()));
    };
    record(ctx, input, run, CertState::Distributing, None).await?;
    let outcome = match ctx
        .execute_activity(
            DistributionActivities::distribute,
            DistributeRequest {
                domain: input.domain.clone(),
                version: cert.version,
            },
            acme_options(Duration::from_secs(120)),
        )
        .await
    {
        Ok(o) => o,
        Err(e) => return Ok(Err(classify(&e))),
    };
    if outcome.relays.is_empty() {
        return Ok(Err(StepFailure {
            state: CertState::DistributionPartial,
            message: format!(
                "no relay is announced in Redis, so nothing serves v{} yet (check the relays' \
                 redis_url and redis_prefix)",
                cert.version
            ),
            retryable: true,
            order_unusable: false,
        }));
    }
    let failed = outcome.failed();
    if failed.is_empty() {
        run.distributed = run.serving.clone();
        run.stage = Stage::Serve;
        run.attempts = 0;
        return Ok(Ok(()));
    }
    let detail: Vec<String> = failed
        .iter()
        .map(|r| {
            format!(
                "{} ({}): {}",
                r.relay_id,
                r.region,
                r.error.as_deref().unwrap_or("")
            )
        })
        .collect();
    Ok(Err(StepFailure {
        state: CertState::DistributionPartial,
        message: format!(
            "{} of {} relays did not take v{}: {}",
            failed.len(),
            outcome.relays.len(),
            cert.version,
            detail.join("; ")
        ),
        retryable: true,
        order_unusable: false,
    }))
}

/// Serves until renewal is due (or asked for), re-planning whenever the CA's Retry-After or a
/// callback says so.
async fn serve(ctx: &mut Ctx, input: &CertificateInput, run: &mut Run) -> WorkflowResult<()> {
    let Some(cert) = run.serving.clone() else {
        run.stage = Stage::Issue;
        return Ok(());
    };
    record(ctx, input, run, CertState::Serving, None).await?;
    ctx.execute_activity(
        IncidentActivities::resolve_incident,
        IncidentResolution {
            workflow_id: ctx.workflow_id().to_owned(),
            detail: format!("serving v{} (serial {})", cert.version, cert.serial),
        },
        bookkeeping_options(),
    )
    .await?;
    loop {
        // Keep history short: a fresh run carries the served certificate on, unless a signal
        // is waiting to be acted on here (it would not carry over).
        let pending = ctx.state(|s| {
            s.removed || s.renew_requests > run.renews_seen || s.rechecks > run.rechecks_seen
        });
        if !pending && (ctx.continue_as_new_suggested() || ctx.history_length() > 5_000) {
            let mut next = input.clone();
            next.serving = run.serving.clone();
            next.renewals = run.renewals;
            next.replays = run.replays;
            ctx.continue_as_new(next, ContinueAsNewOptions::default())?;
        }
        let plan = ctx
            .execute_activity(
                AcmeActivities::renewal_plan,
                PlanRequest {
                    domain: input.domain.clone(),
                    version: cert.version,
                },
                bookkeeping_options(),
            )
            .await?;
        ctx.state_mut(|s| {
            s.status.renew_at_ms = Some(plan.renew_at_ms);
            s.status.plan_source = Some(plan.source.clone());
        });
        let wake = plan.renew_at_ms.min(plan.recheck_at_ms);
        let delay = wake - now_ms(ctx);
        if delay > 0 {
            let (renews, rechecks) = (run.renews_seen, run.rechecks_seen);
            temporalio_sdk::workflows::select! {
                _ = ctx.timer(Duration::from_millis(delay as u64)) => {}
                _ = ctx.wait_condition(move |s: &CertificateWorkflow| {
                    s.removed || s.renew_requests > renews || s.rechecks > rechecks
                }) => {}
            }
        }
        if ctx.state(|s| s.removed) {
            return Ok(());
        }
        let renew_requests = ctx.state(|s| s.renew_requests);
        if renew_requests > run.renews_seen {
            run.renews_seen = renew_requests;
            run.stage = Stage::Issue;
            return Ok(());
        }
        run.rechecks_seen = ctx.state(|s| s.rechecks);
        if now_ms(ctx) >= plan.renew_at_ms {
            run.stage = Stage::Issue;
            return Ok(());
        }
    }
}

/// Waits out the retry schedule, or parks (DLQ, incident) until ops replay.
async fn on_failure(
    ctx: &mut Ctx,
    input: &CertificateInput,
    run: &mut Run,
    f: StepFailure,
) -> WorkflowResult<()> {
    run.attempts += 1;
    let message = format!("{}: {}", f.state.as_str(), f.message);
    if f.retryable
        && let Some(base) = input.retry_schedule_ms.get(run.attempts as usize - 1)
    {
        // ±10 % jitter, from workflow randomness (replayed identically).
        let unit: f64 = ctx.random();
        let delay = (*base as f64 * (0.9 + 0.2 * unit)).max(1.0) as u64;
        record(ctx, input, run, CertState::RetryWait, Some(message)).await?;
        let seen = run.replays_seen;
        temporalio_sdk::workflows::select! {
            _ = ctx.timer(Duration::from_millis(delay)) => {}
            _ = ctx.wait_condition(move |s: &CertificateWorkflow| s.removed || s.replays_requested > seen) => {}
        }
        run.replays_seen = ctx.state(|s| s.replays_requested);
        return Ok(());
    }

    record(ctx, input, run, f.state, Some(message.clone())).await?;
    open_incident(ctx, input, run, f.state, &message).await?;
    // While parked, the incident escalates as the served certificate nears expiry: at the
    // warning point, and again 7 days before expiry (where its tier becomes sev1).
    let mut checkpoints: Vec<i64> = run
        .served()
        .map(|c| {
            vec![
                c.not_after * 1000 - input.expiry_warning_ms as i64,
                c.not_after * 1000 - 7 * 24 * 3_600_000,
            ]
        })
        .unwrap_or_default();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let mut next = 0;
    loop {
        let seen = run.replays_seen;
        let Some(&at) = checkpoints.get(next) else {
            ctx.wait_condition(move |s: &CertificateWorkflow| {
                s.removed || s.replays_requested > seen
            })
            .await?;
            break;
        };
        let delay = at - now_ms(ctx);
        let mut due = delay <= 0;
        if !due {
            temporalio_sdk::workflows::select! {
                _ = ctx.timer(Duration::from_millis(delay as u64)) => { due = true; }
                _ = ctx.wait_condition(move |s: &CertificateWorkflow| s.removed || s.replays_requested > seen) => {}
            }
        }
        if !due {
            break;
        }
        let now = now_ms(ctx);
        while checkpoints.get(next).is_some_and(|c| *c <= now) {
            next += 1;
        }
        let expiring = format!(
            "{}: the served certificate expires soon and renewal is parked ({message})",
            CertState::ExpiringUnrenewed.as_str()
        );
        record(
            ctx,
            input,
            run,
            CertState::ExpiringUnrenewed,
            Some(expiring.clone()),
        )
        .await?;
        open_incident(ctx, input, run, CertState::ExpiringUnrenewed, &expiring).await?;
    }
    run.replays_seen = ctx.state(|s| s.replays_requested);
    run.replays += 1;
    run.attempts = 0;
    Ok(())
}

async fn open_incident(
    ctx: &mut Ctx,
    input: &CertificateInput,
    run: &Run,
    state: CertState,
    message: &str,
) -> WorkflowResult<()> {
    ctx.execute_activity(
        IncidentActivities::open_incident,
        IncidentReport {
            workflow_id: ctx.workflow_id().to_owned(),
            kind: KIND.to_owned(),
            subject: input.domain.clone(),
            failure_state: state.as_str().to_owned(),
            hostnames: 1,
            expires_at: run.served().map(|c| c.not_after),
            summary: message.to_owned(),
        },
        bookkeeping_options(),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn state_names_match_serde_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for s in CertState::ALL {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
            assert!(seen.insert(s.as_str()));
        }
        assert!(CertState::FAILURES.iter().all(|f| f.is_failure()));
        assert!(!CertState::Serving.is_failure() && !CertState::RetryWait.is_failure());
    }

    #[test]
    fn every_activity_failure_type_has_a_state() {
        for (t, s) in [
            (failure::CHALLENGE_FAILED, CertState::ChallengeFailed),
            (failure::RATE_LIMITED, CertState::RateLimited),
            (failure::CA_UNREACHABLE, CertState::CaUnreachable),
            (
                failure::DISTRIBUTION_PARTIAL,
                CertState::DistributionPartial,
            ),
            (failure::INVALID_DOMAIN, CertState::InvalidDomain),
            (failure::CAA_FORBIDDEN, CertState::CaaForbidden),
            (failure::ACCOUNT_DEACTIVATED, CertState::AccountDeactivated),
            (failure::ISSUANCE_FAILED, CertState::IssuanceFailed),
            (failure::INTERNAL, CertState::IssuanceFailed),
        ] {
            assert_eq!(CertState::from_failure_type(Some(t)), s);
        }
    }

    #[test]
    fn default_schedule_is_certmagics() {
        let minutes: Vec<u64> = default_retry_schedule_ms()
            .iter()
            .map(|m| m / 60_000)
            .collect();
        assert_eq!(&minutes[..11], &[1, 2, 2, 5, 10, 20, 20, 30, 30, 60, 180]);
        assert!(minutes[11..].iter().all(|m| *m == 360));
    }

    #[test]
    fn schedules_parse_with_units_and_errors_name_the_entry() {
        assert_eq!(
            parse_schedule("500ms, 2s,1m,1h").unwrap(),
            [500, 2_000, 60_000, 3_600_000]
        );
        let e = parse_schedule("1s,2").unwrap_err();
        assert!(e.contains("entry 2") && e.contains("unit"), "{e}");
        let e = parse_schedule("1s,xs").unwrap_err();
        assert!(e.contains("entry 2"), "{e}");
        assert!(parse_schedule("0s").unwrap_err().contains("between"));
        assert!(parse_schedule("200h").unwrap_err().contains("7 days"));
    }

    #[test]
    fn events_map_to_effects() {
        assert_eq!(event_effect("certificate.revoked"), EventEffect::RenewNow);
        assert_eq!(
            event_effect("certificate.renewal_requested"),
            EventEffect::RenewNow
        );
        assert_eq!(
            event_effect("certificate.renewal_window_changed"),
            EventEffect::Recheck
        );
        assert_eq!(
            event_effect("certificate.expiry_warning"),
            EventEffect::Recheck
        );
        assert_eq!(event_effect("something.else"), EventEffect::None);
    }

    proptest! {
        #[test]
        fn any_schedule_text_parses_or_errors_without_panicking(s in "\\PC{0,60}") {
            if let Ok(v) = parse_schedule(&s) {
                prop_assert!(v.iter().all(|ms| *ms >= 1 && *ms <= 7 * 24 * 3_600_000));
            }
        }

        #[test]
        fn rendered_schedules_round_trip(v in proptest::collection::vec(1u64..100_000, 1..20)) {
            let text = v.iter().map(|ms| format!("{ms}ms")).collect::<Vec<_>>().join(",");
            prop_assert_eq!(parse_schedule(&text).unwrap(), v);
        }
    }
}
