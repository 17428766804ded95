//! Metering: bytes in and out, requests and connections per endpoint, exposed as Prometheus
//! counters and flushed to the api as usage records for billing.
//!
//! # Model
//! A [`Meter`] (one per relay, shared as `Arc<Meter>`) holds one set of counters per
//! `(account id, endpoint name, proto)`. [`Meter::endpoint`] returns an [`EndpointMeter`], a
//! cheap clonable handle (an `Arc` of atomics) that the data path bumps:
//!
//! | counter | meaning |
//! |---|---|
//! | bytes in ([`Direction::In`]) | body/stream bytes from visitors towards the agent |
//! | bytes out ([`Direction::Out`]) | body/stream bytes from the agent back to visitors |
//! | requests | HTTP requests forwarded to the agent (a WebSocket upgrade is one) |
//! | connections | visitor connections: TCP endpoint connections and upgraded WebSockets |
//!
//! Only payload is counted (HTTP body data frames, raw TCP/WebSocket bytes), not headers or
//! framing. Each add is one relaxed atomic add for the usage record plus one increment of a
//! cached Prometheus counter handle; nothing is buffered or copied.
//!
//! Prometheus (through the `metrics` facade, like the rest of the relay):
//! `burrow_relay_endpoint_bytes_total{endpoint, direction="in|out"}`,
//! `burrow_relay_endpoint_requests_total{endpoint}`,
//! `burrow_relay_endpoint_connections_total{endpoint}`,
//! `burrow_relay_usage_flushes_total{outcome="ok|failed"}`,
//! `burrow_relay_usage_pending_batches`. Handles are bound to the recorder installed when
//! [`Meter::endpoint`] first sees a key, so create the `Meter`'s handles after telemetry is set up.
//!
//! # Flushing
//! [`flush_loop`] runs a [`Flusher`] every `every`: it swaps every counter to 0
//! ([`Meter::take_batches`]; all-zero rows are skipped, idle keys nobody holds a handle to are
//! forgotten) and `POST`s the deltas to `<api>/v1/internal/usage` with the internal key as
//! bearer (the convention of [`crate::auth`]), as [`UsageBatch`]es of at most
//! [`MAX_RECORDS_PER_BATCH`] records, each with its own `batch_id`. The api stores a batch
//! idempotently (unique per `batch_id`, account, endpoint, proto), so:
//! - a batch that failed (api down, 5xx, timeout — even if the api stored it and only the answer
//!   was lost) stays queued **unchanged, with the same `batch_id`**, and is re-sent first on the
//!   next tick; new deltas are only taken once the queue is empty, so they keep accumulating in
//!   the atomics meanwhile. Nothing is lost or counted twice.
//! - a `422 unknown_account` answer (the api stored nothing of the batch) drops the records of
//!   the accounts it names (logged with their counts) and re-sends the rest with the same id.
//! - when `stop` fires, one final flush sends what is queued and the last deltas; what still
//!   cannot be sent is logged as lost.
//!
//! # Wiring (done by the relay's `lib.rs`, `ingress` and `tcp`)
//! ```ignore
//! // lib.rs: one Meter in `Relay`, and the flusher task
//! let meter = Arc::new(metering::Meter::new());
//! let flusher = tokio::spawn(metering::flush_loop(
//!     meter.clone(), reqwest::Client::new(), config.api_url.clone(),
//!     config.internal_key.clone(), config.relay_id.clone(),
//!     Duration::from_secs(config.usage_flush_secs), usage_stop.clone(),
//! ));
//! // ... on shutdown, after the ingress drained: usage_stop.cancel(); flusher.await;
//!
//! // ingress.rs, once the route is known to be online:
//! let m = relay.meter.endpoint(&account_id, name, "http");
//! m.add_request();
//! let req = req.map(|b| metering::count_body(proxy::incoming(b), m.clone(), Direction::In));
//! // ... response:
//! Response::from_parts(parts, metering::count_body(proxy::incoming(body), m, Direction::Out))
//! // websocket bridge: m.add_connection();
//! //   copy_bidirectional(&mut CountedIo::visitor(TokioIo::new(v), m), &mut a)
//!
//! // tcp.rs, per visitor connection:
//! let m = relay.meter.endpoint(&account_id, &endpoint_name(port), "tcp");
//! m.add_connection();
//! let (read, write) = visitor.into_split();
//! proxy::from_reader(CountedIo::visitor(read, m.clone()))   // visitor → agent: in
//! proxy::to_writer(resp.into_body(), CountedIo::visitor(write, m))  // agent → visitor: out
//! ```

use crate::shaping::{Bucket, Shapers};
use burrow_common::Secret;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use crate::counted::{CountedBody, CountedIo, count_body};

/// Most records one [`UsageBatch`] carries (keeps a request well under the api's 1 MiB limit).
pub const MAX_RECORDS_PER_BATCH: usize = 1000;

/// Path of the api endpoint usage batches are posted to.
pub const USAGE_PATH: &str = "/v1/internal/usage";

/// Which way bytes flow, seen from the visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Visitor → agent (request bodies, bytes a TCP visitor sends).
    In,
    /// Agent → visitor (response bodies, bytes sent back to a TCP visitor).
    Out,
}

impl Direction {
    /// The other direction.
    pub fn opposite(self) -> Direction {
        match self {
            Direction::In => Direction::Out,
            Direction::Out => Direction::In,
        }
    }

    /// Prometheus label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// Counter values of one endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Bytes visitor → agent.
    pub bytes_in: u64,
    /// Bytes agent → visitor.
    pub bytes_out: u64,
    /// HTTP requests.
    pub requests: u64,
    /// Visitor connections (TCP, WebSocket).
    pub connections: u64,
}

impl Counts {
    fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

/// Prometheus counter handles of one endpoint, resolved once.
struct Prom {
    bytes_in: metrics::Counter,
    bytes_out: metrics::Counter,
    requests: metrics::Counter,
    connections: metrics::Counter,
}

struct Counters {
    account_id: String,
    endpoint: String,
    proto: String,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    requests: AtomicU64,
    connections: AtomicU64,
    prom: Prom,
    /// The account's bandwidth bucket ([`crate::shaping`]).
    bucket: Arc<Bucket>,
}

/// Handle on one endpoint's counters: clone it freely (an `Arc`), bump it on the data path.
#[derive(Clone)]
pub struct EndpointMeter(Arc<Counters>);

impl std::fmt::Debug for EndpointMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointMeter")
            .field("account_id", &self.0.account_id)
            .field("endpoint", &self.0.endpoint)
            .field("proto", &self.0.proto)
            .field("unflushed", &self.unflushed())
            .finish()
    }
}

impl EndpointMeter {
    fn new(account_id: &str, endpoint: &str, proto: &str, bucket: Arc<Bucket>) -> Self {
        let label = endpoint.to_owned();
        let prom = Prom {
            bytes_in: metrics::counter!("burrow_relay_endpoint_bytes_total", "endpoint" => label.clone(), "direction" => "in"),
            bytes_out: metrics::counter!("burrow_relay_endpoint_bytes_total", "endpoint" => label.clone(), "direction" => "out"),
            requests: metrics::counter!("burrow_relay_endpoint_requests_total", "endpoint" => label.clone()),
            connections: metrics::counter!("burrow_relay_endpoint_connections_total", "endpoint" => label),
        };
        EndpointMeter(Arc::new(Counters {
            account_id: account_id.to_owned(),
            endpoint: endpoint.to_owned(),
            proto: proto.to_owned(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            prom,
            bucket,
        }))
    }

    /// Counts `n` bytes flowing in `direction`.
    #[inline]
    pub fn add_bytes(&self, direction: Direction, n: u64) {
        if n == 0 {
            return;
        }
        match direction {
            Direction::In => {
                self.0.bytes_in.fetch_add(n, Relaxed);
                self.0.prom.bytes_in.increment(n);
            }
            Direction::Out => {
                self.0.bytes_out.fetch_add(n, Relaxed);
                self.0.prom.bytes_out.increment(n);
            }
        }
    }

    /// Counts `n` bytes from the visitor towards the agent.
    #[inline]
    pub fn add_bytes_in(&self, n: u64) {
        self.add_bytes(Direction::In, n);
    }

    /// Counts `n` bytes from the agent back to the visitor.
    #[inline]
    pub fn add_bytes_out(&self, n: u64) {
        self.add_bytes(Direction::Out, n);
    }

    /// Takes `n` bytes just moved from the account's bandwidth bucket: how long the stream
    /// should wait before moving more (`None` when unshaped or within the burst).
    #[inline]
    pub fn pace(&self, n: usize) -> Option<Duration> {
        self.0.bucket.take(n)
    }

    /// Counts one HTTP request forwarded to the agent.
    pub fn add_request(&self) {
        self.0.requests.fetch_add(1, Relaxed);
        self.0.prom.requests.increment(1);
    }

    /// Counts one visitor connection (TCP endpoint connection, upgraded WebSocket).
    pub fn add_connection(&self) {
        self.0.connections.fetch_add(1, Relaxed);
        self.0.prom.connections.increment(1);
    }

    /// What was counted since the last flush took the deltas.
    pub fn unflushed(&self) -> Counts {
        Counts {
            bytes_in: self.0.bytes_in.load(Relaxed),
            bytes_out: self.0.bytes_out.load(Relaxed),
            requests: self.0.requests.load(Relaxed),
            connections: self.0.connections.load(Relaxed),
        }
    }

    /// Swaps every counter to 0 and returns what they held.
    fn take(&self) -> Counts {
        Counts {
            bytes_in: self.0.bytes_in.swap(0, Relaxed),
            bytes_out: self.0.bytes_out.swap(0, Relaxed),
            requests: self.0.requests.swap(0, Relaxed),
            connections: self.0.connections.swap(0, Relaxed),
        }
    }

    fn is(&self, account_id: &str, proto: &str) -> bool {
        self.0.account_id == account_id && self.0.proto == proto
    }
}

struct MeterState {
    /// endpoint name → one handle per (account, proto) using it (almost always one), so a
    /// lookup by `&str` allocates nothing.
    endpoints: HashMap<String, Vec<EndpointMeter>>,
    /// When the deltas not yet taken started accumulating.
    period_start: DateTime<Utc>,
}

/// Usage counters of every endpoint this relay served (see the module docs).
pub struct Meter {
    state: Mutex<MeterState>,
    shapers: Arc<Shapers>,
}

impl Default for Meter {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Meter")
            .field(
                "keys",
                &state.endpoints.values().map(Vec::len).sum::<usize>(),
            )
            .field("period_start", &state.period_start)
            .finish()
    }
}

impl Meter {
    /// An empty meter whose first period starts now, with unshaped accounts.
    pub fn new() -> Self {
        Self::with_shapers(Arc::default())
    }

    /// An empty meter whose endpoints pace their streams with `shapers`' account buckets.
    pub fn with_shapers(shapers: Arc<Shapers>) -> Self {
        Self {
            state: Mutex::new(MeterState {
                endpoints: HashMap::new(),
                period_start: Utc::now(),
            }),
            shapers,
        }
    }

    /// The counters of `endpoint` (its registry name: `demo`, `tcp:20000`) used by
    /// `account_id` over `proto` (`http`, `tcp`, ...), created on first use. A short lock and a
    /// map lookup; cheap enough per request, or keep the handle with the route.
    pub fn endpoint(&self, account_id: &str, endpoint: &str, proto: &str) -> EndpointMeter {
        let mut state = self.lock();
        if let Some(m) = state
            .endpoints
            .get(endpoint)
            .and_then(|v| v.iter().find(|m| m.is(account_id, proto)))
        {
            return m.clone();
        }
        let m = EndpointMeter::new(account_id, endpoint, proto, self.shapers.bucket(account_id));
        state
            .endpoints
            .entry(endpoint.to_owned())
            .or_default()
            .push(m.clone());
        m
    }

    /// Takes the deltas of every endpoint (swapping its counters to 0) as batches of at most
    /// [`MAX_RECORDS_PER_BATCH`] records, each with a new `batch_id`, for the period since the
    /// previous call. All-zero rows are skipped; keys that were idle and that no handle refers
    /// to any more are forgotten. No batch when nothing was counted.
    pub fn take_batches(&self, relay_id: &str) -> Vec<UsageBatch> {
        let now = Utc::now();
        let mut records = Vec::new();
        let period_start = {
            let mut state = self.lock();
            state.endpoints.retain(|_, meters| {
                meters.retain(|m| {
                    let counts = m.take();
                    if counts.is_zero() {
                        // Only the map holds it (and the lock stops anyone cloning it from the
                        // map): nobody can count into it any more.
                        return Arc::strong_count(&m.0) > 1;
                    }
                    records.push(UsageRecord {
                        account_id: m.0.account_id.clone(),
                        endpoint: m.0.endpoint.clone(),
                        proto: m.0.proto.clone(),
                        counts,
                    });
                    true
                });
                !meters.is_empty()
            });
            std::mem::replace(&mut state.period_start, now)
        };
        records.sort_by(|a, b| {
            (&a.account_id, &a.endpoint, &a.proto).cmp(&(&b.account_id, &b.endpoint, &b.proto))
        });
        let mut batches = Vec::new();
        while !records.is_empty() {
            let rest = records.split_off(records.len().min(MAX_RECORDS_PER_BATCH));
            batches.push(UsageBatch {
                relay_id: relay_id.to_owned(),
                batch_id: Uuid::new_v4(),
                period_start,
                period_end: now,
                records: std::mem::replace(&mut records, rest),
            });
        }
        batches
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MeterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One endpoint's usage in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Account that held the endpoint.
    pub account_id: String,
    /// Endpoint name (`demo`, `tcp:20000`).
    pub endpoint: String,
    /// `http`, `tcp`, ...
    pub proto: String,
    /// The deltas.
    #[serde(flatten)]
    pub counts: Counts,
}

/// What the relay posts to `POST /v1/internal/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBatch {
    /// Relay that counted it.
    pub relay_id: String,
    /// Idempotency key: the same batch is always re-sent with the same id.
    pub batch_id: Uuid,
    /// Start of the counting period.
    pub period_start: DateTime<Utc>,
    /// End of the counting period.
    pub period_end: DateTime<Utc>,
    /// Non-zero rows.
    pub records: Vec<UsageRecord>,
}

/// The api's answer to a stored batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageAck {
    /// Records stored now.
    pub accepted: u64,
    /// Records already stored by an earlier send of the same batch.
    pub duplicates: u64,
}

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// The api could not be reached or did not answer in time.
    #[error("cannot reach the api: {0}")]
    Transport(#[from] reqwest::Error),
    /// The api answered something other than success.
    #[error("the api answered {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: reqwest::StatusCode,
        /// The api's error message.
        message: String,
    },
}

/// Result of one flush that sent everything it had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Batches the api acknowledged.
    pub batches: u64,
    /// Records stored now.
    pub accepted: u64,
    /// Records the api already had.
    pub duplicates: u64,
    /// Records dropped because the api does not know their account.
    pub dropped: u64,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    error: ApiErrorInner,
}

#[derive(Deserialize)]
struct ApiErrorInner {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    accounts: Vec<String>,
}

enum Sent {
    Ack(UsageAck),
    UnknownAccounts(Vec<String>),
}

/// Sends the [`Meter`]'s deltas to the api, keeping unsent batches for the next try.
pub struct Flusher {
    meter: Arc<Meter>,
    client: reqwest::Client,
    url: String,
    key: Secret,
    relay_id: String,
    timeout: Duration,
    pending: VecDeque<UsageBatch>,
}

impl Flusher {
    /// A flusher posting to `<api_url>/v1/internal/usage` as relay `relay_id`.
    pub fn new(
        meter: Arc<Meter>,
        client: reqwest::Client,
        api_url: &str,
        internal_key: Secret,
        relay_id: impl Into<String>,
    ) -> Self {
        Self {
            meter,
            client,
            url: format!("{}{USAGE_PATH}", api_url.trim_end_matches('/')),
            key: internal_key,
            relay_id: relay_id.into(),
            timeout: Duration::from_secs(10),
            pending: VecDeque::new(),
        }
    }

    /// Batches taken from the meter but not acknowledged yet, oldest first.
    pub fn pending(&self) -> &VecDeque<UsageBatch> {
        &self.pending
    }

    /// Sends the queued batches (unchanged, same ids), then — when they all went through — the
    /// meter's new deltas. Stops at the first failure, keeping that batch and those after it.
    pub async fn flush(&mut self) -> Result<FlushReport, FlushError> {
        let mut report = FlushReport::default();
        let mut took = false;
        let result = loop {
            if self.pending.is_empty() {
                if took {
                    break Ok(report);
                }
                took = true;
                self.pending.extend(self.meter.take_batches(&self.relay_id));
                continue;
            }
            let batch = &self.pending[0];
            match self.send(batch).await {
                Ok(Sent::Ack(ack)) => {
                    report.batches += 1;
                    report.accepted += ack.accepted;
                    report.duplicates += ack.duplicates;
                    self.pending.pop_front();
                }
                Ok(Sent::UnknownAccounts(accounts)) => {
                    // The api stored nothing of this batch: drop what it will never take and
                    // send the rest under the same id.
                    let batch = &mut self.pending[0];
                    let before = batch.records.len();
                    let mut dropped = Vec::new();
                    batch.records.retain(|r| {
                        let unknown = accounts.contains(&r.account_id);
                        if unknown {
                            dropped.push(r.clone());
                        }
                        !unknown
                    });
                    if batch.records.len() == before {
                        break Err(FlushError::Rejected {
                            status: reqwest::StatusCode::UNPROCESSABLE_ENTITY,
                            message: format!(
                                "unknown accounts {accounts:?} are not in batch {}",
                                batch.batch_id
                            ),
                        });
                    }
                    for r in &dropped {
                        tracing::warn!(
                            account_id = %r.account_id, endpoint = %r.endpoint, proto = %r.proto,
                            bytes_in = r.counts.bytes_in, bytes_out = r.counts.bytes_out,
                            requests = r.counts.requests, connections = r.counts.connections,
                            "the api does not know this account: dropping its usage"
                        );
                    }
                    report.dropped += dropped.len() as u64;
                    if batch.records.is_empty() {
                        self.pending.pop_front();
                    }
                }
                Err(e) => break Err(e),
            }
        };
        metrics::counter!(
            "burrow_relay_usage_flushes_total",
            "outcome" => if result.is_ok() { "ok" } else { "failed" }
        )
        .increment(1);
        metrics::gauge!("burrow_relay_usage_pending_batches").set(self.pending.len() as f64);
        result
    }

    async fn send(&self, batch: &UsageBatch) -> Result<Sent, FlushError> {
        let resp = self
            .client
            .post(&self.url)
            .bearer_auth(self.key.expose())
            .timeout(self.timeout)
            .json(batch)
            .send()
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Sent::Ack(resp.json().await?));
        }
        let body = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ApiErrorBody>(&body) {
            Ok(e)
                if status == reqwest::StatusCode::UNPROCESSABLE_ENTITY
                    && e.error.code == "unknown_account"
                    && !e.error.accounts.is_empty() =>
            {
                Ok(Sent::UnknownAccounts(e.error.accounts))
            }
            Ok(e) => Err(FlushError::Rejected {
                status,
                message: e.error.message,
            }),
            Err(_) => Err(FlushError::Rejected {
                status,
                message: body.chars().take(200).collect(),
            }),
        }
    }
}

/// Flushes `meter` to the api every `every` until `stop` fires, then once more (see the module
/// docs). Fire `stop` after the ingress drained, and await the task, so the last counts go out.
pub async fn flush_loop(
    meter: Arc<Meter>,
    client: reqwest::Client,
    api_url: String,
    internal_key: Secret,
    relay_id: String,
    every: Duration,
    stop: CancellationToken,
) {
    let mut flusher = Flusher::new(meter, client, &api_url, internal_key, relay_id);
    let every = every.max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if let Err(e) = flusher.flush().await {
            tracing::warn!(
                error = %e,
                pending_batches = flusher.pending().len(),
                "usage flush failed; the batch is kept and re-sent next time"
            );
        }
    }
    match flusher.flush().await {
        Ok(r) => tracing::debug!(batches = r.batches, "final usage flush done"),
        Err(e) => {
            for b in flusher.pending() {
                tracing::error!(
                    error = %e, batch_id = %b.batch_id, records = b.records.len(),
                    "final usage flush failed: this batch is lost"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Secret {
        Secret::new("ik_test")
    }

    #[test]
    fn handles_of_one_key_share_counters() {
        let meter = Meter::new();
        let a = meter.endpoint("acct-1", "demo", "http");
        let b = meter.endpoint("acct-1", "demo", "http");
        let other_account = meter.endpoint("acct-2", "demo", "http");
        a.add_bytes_in(10);
        b.add_bytes_out(20);
        a.clone().add_request();
        b.add_connection();
        other_account.add_request();
        assert_eq!(
            a.unflushed(),
            Counts {
                bytes_in: 10,
                bytes_out: 20,
                requests: 1,
                connections: 1
            }
        );
        assert_eq!(other_account.unflushed().requests, 1);
        assert_eq!(other_account.unflushed().bytes_in, 0);
    }

    #[test]
    fn take_swaps_deltas_and_skips_zero_rows() {
        let meter = Meter::new();
        let demo = meter.endpoint("acct-1", "demo", "http");
        let idle = meter.endpoint("acct-1", "idle", "http");
        let tcp = meter.endpoint("acct-2", "tcp:20000", "tcp");
        demo.add_bytes_in(5);
        demo.add_request();
        tcp.add_connection();
        tcp.add_bytes_out(7);

        let batches = meter.take_batches("relay-a");
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.relay_id, "relay-a");
        assert!(b.period_end >= b.period_start);
        let rows: Vec<_> = b
            .records
            .iter()
            .map(|r| (r.endpoint.as_str(), r.counts))
            .collect();
        assert_eq!(
            rows,
            vec![
                (
                    "demo",
                    Counts {
                        bytes_in: 5,
                        requests: 1,
                        ..Counts::default()
                    }
                ),
                (
                    "tcp:20000",
                    Counts {
                        bytes_out: 7,
                        connections: 1,
                        ..Counts::default()
                    }
                ),
            ]
        );
        assert_eq!(b.records[1].account_id, "acct-2");
        assert_eq!(b.records[1].proto, "tcp");
        assert_eq!(demo.unflushed(), Counts::default(), "swapped to 0");

        // Nothing new: no batch. Counting on an old handle shows up in the next one, and the
        // next period starts where the last one ended.
        assert!(meter.take_batches("relay-a").is_empty());
        demo.add_bytes_out(3);
        let next = meter.take_batches("relay-a");
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].records.len(), 1);
        assert_eq!(next[0].records[0].counts.bytes_out, 3);
        assert_ne!(next[0].batch_id, b.batch_id);
        assert!(next[0].period_start >= b.period_end);
        drop(idle);
    }

    #[test]
    fn idle_keys_without_handles_are_forgotten() {
        let meter = Meter::new();
        meter.endpoint("acct-1", "gone", "http").add_request();
        let kept = meter.endpoint("acct-1", "kept", "http");
        assert_eq!(meter.take_batches("r")[0].records.len(), 1);
        // `gone` was idle this time and nobody holds it: dropped; `kept` stays while held.
        assert!(meter.take_batches("r").is_empty());
        let state = meter.lock();
        assert!(!state.endpoints.contains_key("gone"));
        assert!(state.endpoints.contains_key("kept"));
        drop(state);
        drop(kept);
    }

    #[test]
    fn large_takes_are_split_into_batches() {
        let meter = Meter::new();
        let handles: Vec<_> = (0..MAX_RECORDS_PER_BATCH + 5)
            .map(|i| {
                let m = meter.endpoint("acct", &format!("e{i}"), "http");
                m.add_request();
                m
            })
            .collect();
        let batches = meter.take_batches("r");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].records.len(), MAX_RECORDS_PER_BATCH);
        assert_eq!(batches[1].records.len(), 5);
        assert_ne!(batches[0].batch_id, batches[1].batch_id);
        assert_eq!(batches[0].period_start, batches[1].period_start);
        drop(handles);
    }

    /// A recorder whose counters are plain atomics, to check the Prometheus side.
    #[derive(Default)]
    struct TestRecorder {
        counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    }

    impl TestRecorder {
        fn get(&self, key: &str) -> u64 {
            self.counters
                .lock()
                .unwrap()
                .get(key)
                .map_or(0, |c| c.load(Relaxed))
        }
    }

    impl metrics::Recorder for TestRecorder {
        fn describe_counter(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_gauge(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn describe_histogram(
            &self,
            _: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
        }
        fn register_counter(
            &self,
            key: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Counter {
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            let c = self
                .counters
                .lock()
                .unwrap()
                .entry(name)
                .or_default()
                .clone();
            metrics::Counter::from_arc(c)
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
            metrics::Gauge::noop()
        }
        fn register_histogram(
            &self,
            _: &metrics::Key,
            _: &metrics::Metadata<'_>,
        ) -> metrics::Histogram {
            metrics::Histogram::noop()
        }
    }

    #[test]
    fn prometheus_counters_follow_the_handles() {
        let recorder = TestRecorder::default();
        let meter = Meter::new();
        let m = metrics::with_local_recorder(&recorder, || meter.endpoint("a", "demo", "http"));
        m.add_bytes_in(100);
        m.add_bytes_out(40);
        m.add_bytes_out(2);
        m.add_request();
        m.add_connection();
        m.add_connection();
        // Taking deltas for the api does not reset Prometheus counters.
        let _ = meter.take_batches("r");
        m.add_request();
        assert_eq!(
            recorder.get("burrow_relay_endpoint_bytes_total{direction=in,endpoint=demo}"),
            100
        );
        assert_eq!(
            recorder.get("burrow_relay_endpoint_bytes_total{direction=out,endpoint=demo}"),
            42
        );
        assert_eq!(
            recorder.get("burrow_relay_endpoint_requests_total{endpoint=demo}"),
            2
        );
        assert_eq!(
            recorder.get("burrow_relay_endpoint_connections_total{endpoint=demo}"),
            2
        );
    }

    /// A stand-in for the api: stores batches idempotently by id, answering per `script`.
    #[derive(Default)]
    struct FakeApi {
        /// Every batch received, in order (failed attempts included).
        received: Mutex<Vec<UsageBatch>>,
        /// Batch ids stored.
        stored: Mutex<Vec<UsageBatch>>,
        /// Answers for the first calls: status (200 = store) and optional unknown accounts.
        script: Mutex<VecDeque<(u16, Vec<String>)>>,
        /// Bearer tokens presented.
        bearers: Mutex<Vec<String>>,
    }

    impl FakeApi {
        fn totals(&self) -> Counts {
            let mut t = Counts::default();
            for b in self.stored.lock().unwrap().iter() {
                for r in &b.records {
                    t.bytes_in += r.counts.bytes_in;
                    t.bytes_out += r.counts.bytes_out;
                    t.requests += r.counts.requests;
                    t.connections += r.counts.connections;
                }
            }
            t
        }
    }

    async fn fake_api(script: Vec<(u16, Vec<String>)>) -> (Arc<FakeApi>, String) {
        use axum::{
            Json, Router,
            extract::State,
            http::{HeaderMap, StatusCode},
            response::{IntoResponse, Response},
            routing::post,
        };
        async fn usage(
            State(api): State<Arc<FakeApi>>,
            headers: HeaderMap,
            Json(batch): Json<UsageBatch>,
        ) -> Response {
            let bearer = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            api.bearers.lock().unwrap().push(bearer);
            api.received.lock().unwrap().push(batch.clone());
            let (status, unknown) = api
                .script
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or((200, vec![]));
            if status == 422 {
                let body = serde_json::json!({"error": {
                    "code": "unknown_account", "message": "unknown", "accounts": unknown}});
                return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
            }
            if status != 200 {
                let body = serde_json::json!({"error": {"code": "unavailable", "message": "down"}});
                return (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
            }
            let mut stored = api.stored.lock().unwrap();
            let n = batch.records.len() as u64;
            let ack = if stored.iter().any(|b| b.batch_id == batch.batch_id) {
                UsageAck {
                    accepted: 0,
                    duplicates: n,
                }
            } else {
                stored.push(batch);
                UsageAck {
                    accepted: n,
                    duplicates: 0,
                }
            };
            Json(ack).into_response()
        }
        let api = Arc::new(FakeApi {
            script: Mutex::new(script.into()),
            ..FakeApi::default()
        });
        let app = Router::new()
            .route(USAGE_PATH, post(usage))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (api, format!("http://{addr}/"))
    }

    #[tokio::test]
    async fn failed_batch_is_resent_with_the_same_id_then_new_deltas_follow() {
        let (api, url) = fake_api(vec![(503, vec![])]).await;
        let meter = Arc::new(Meter::new());
        let m = meter.endpoint("acct-1", "demo", "http");
        let mut flusher = Flusher::new(
            meter.clone(),
            reqwest::Client::new(),
            &url,
            key(),
            "relay-a",
        );
        m.add_request();
        m.add_bytes_in(100);

        let err = flusher.flush().await.unwrap_err();
        assert!(
            matches!(err, FlushError::Rejected { status, .. } if status == 503),
            "{err}"
        );
        assert_eq!(flusher.pending().len(), 1, "the failed batch is kept");
        let first_id = flusher.pending()[0].batch_id;

        // Counted while the api was down: goes out as a new batch after the kept one.
        m.add_request();
        m.add_bytes_out(50);
        let report = flusher.flush().await.unwrap();
        assert_eq!(report.batches, 2);
        assert_eq!(report.accepted, 2);
        assert!(flusher.pending().is_empty());

        let received = api.received.lock().unwrap().clone();
        assert_eq!(received.len(), 3);
        assert_eq!(received[0].batch_id, first_id);
        assert_eq!(received[1], received[0], "re-sent unchanged, same batch id");
        assert_ne!(received[2].batch_id, first_id);
        assert_eq!(received[2].period_start, received[0].period_end);
        assert_eq!(
            api.totals(),
            Counts {
                bytes_in: 100,
                bytes_out: 50,
                requests: 2,
                connections: 0
            },
            "nothing lost, nothing counted twice"
        );
        assert!(
            api.bearers
                .lock()
                .unwrap()
                .iter()
                .all(|b| b == "Bearer ik_test")
        );
        // Nothing new: no request at all.
        assert_eq!(flusher.flush().await.unwrap(), FlushReport::default());
        assert_eq!(api.received.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn api_unreachable_keeps_the_batch() {
        // Bind and drop a listener: nothing answers on that port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let meter = Arc::new(Meter::new());
        meter.endpoint("a", "demo", "http").add_request();
        let mut flusher = Flusher::new(
            meter,
            reqwest::Client::new(),
            &format!("http://127.0.0.1:{port}"),
            key(),
            "r",
        );
        assert!(matches!(
            flusher.flush().await,
            Err(FlushError::Transport(_))
        ));
        let id = flusher.pending()[0].batch_id;
        assert!(flusher.flush().await.is_err());
        assert_eq!(flusher.pending().len(), 1);
        assert_eq!(flusher.pending()[0].batch_id, id);
    }

    #[tokio::test]
    async fn unknown_accounts_are_dropped_and_the_rest_resent_under_the_same_id() {
        let (api, url) = fake_api(vec![(422, vec!["ghost".into()])]).await;
        let meter = Arc::new(Meter::new());
        meter.endpoint("ghost", "old", "http").add_request();
        meter.endpoint("acct-1", "demo", "http").add_bytes_in(9);
        let mut flusher = Flusher::new(meter, reqwest::Client::new(), &url, key(), "r");
        let report = flusher.flush().await.unwrap();
        assert_eq!(report.dropped, 1);
        assert_eq!(report.accepted, 1);
        let received = api.received.lock().unwrap().clone();
        assert_eq!(received.len(), 2);
        assert_eq!(received[0].batch_id, received[1].batch_id);
        assert_eq!(received[0].records.len(), 2);
        assert_eq!(received[1].records.len(), 1);
        assert_eq!(received[1].records[0].account_id, "acct-1");
    }

    #[tokio::test]
    async fn flush_loop_flushes_on_ticks_and_once_more_on_stop() {
        let (api, url) = fake_api(vec![]).await;
        let meter = Arc::new(Meter::new());
        let m = meter.endpoint("acct-1", "demo", "http");
        let stop = CancellationToken::new();
        let task = tokio::spawn(flush_loop(
            meter.clone(),
            reqwest::Client::new(),
            url,
            key(),
            "relay-a".into(),
            Duration::from_millis(50),
            stop.clone(),
        ));
        m.add_request();
        crate::test_support::eventually("the api stores the request", || {
            api.totals().requests == 1
        })
        .await;
        m.add_bytes_in(7);
        m.add_connection();
        // The final flush sends what the last tick did not (stop fires before the next tick
        // most of the time; either way the totals must come out exact).
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            api.totals(),
            Counts {
                bytes_in: 7,
                bytes_out: 0,
                requests: 1,
                connections: 1
            }
        );
        assert!(
            api.received
                .lock()
                .unwrap()
                .iter()
                .all(|b| b.relay_id == "relay-a")
        );
    }
}
