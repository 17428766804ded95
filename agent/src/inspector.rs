//! The agent's request inspector: what passed through the tunnel, for a person to look at.
//!
//! This module owns
//! - [`Inspector`]: a bounded ring buffer of the most recent HTTP exchanges (request and
//!   response heads, the first `body_cap` bytes of each body, timings, errors), the latency
//!   window behind the p50/p90/p99 figures ([`Stats`]), the stream counters, and the session
//!   [`Status`] that the web page and the terminal panel ([`crate::status`]) show;
//! - the capture taps for the data path: [`Inspector::tap_request`] and
//!   [`Exchange::tap_response`] wrap the bodies so that every frame is forwarded as it arrives
//!   and only a copy of the first `body_cap` bytes is kept (nothing is buffered on the way);
//! - the local web interface ([`serve`], normally on `127.0.0.1:4040`, see [`bind`]): an HTML
//!   page, a JSON API, and replay of a captured request through a [`Replayer`].
//!
//! Data path (forward.rs):
//! ```ignore
//! let (req, exchange) = inspector.tap_request(endpoint, req.map(proxy::incoming));
//! Ok(exchange.tap_response(forwarder.forward(req).await?))
//! ```
//! An exchange enters the buffer when its response body has been sent to the end (or is
//! dropped, or [`Exchange::failed`] is called), with the time to the response headers and the
//! time to the end of the response body.

use crate::status::Status;
use burrow_common::proxy::{self, Body, BodyError};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use serde::Serialize;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Where the web interface listens unless configured otherwise (ngrok's port).
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4040);

/// How many consecutive ports [`bind`] tries (4040 to 4049 from the default).
pub const BIND_ATTEMPTS: u16 = 10;

/// How long a replay waits for the local service's response body before answering anyway
/// (a streaming response goes on being captured in the background).
const REPLAY_WAIT: Duration = Duration::from_secs(10);

/// Sizes of the inspector's buffers.
#[derive(Debug, Clone, Copy)]
pub struct InspectorConfig {
    /// Exchanges kept; the oldest is dropped first. Default 200.
    pub capacity: usize,
    /// Bytes of each request and response body kept. Default 64 KiB.
    pub body_cap: usize,
    /// Latest response latencies the percentiles are computed from. Default 1000.
    pub latency_window: usize,
}

impl Default for InspectorConfig {
    fn default() -> Self {
        Self {
            capacity: 200,
            body_cap: 64 * 1024,
            latency_window: 1000,
        }
    }
}

/// Captured traffic, counters and session status; share it as `Arc<Inspector>`.
pub struct Inspector {
    store: Arc<Store>,
}

struct Store {
    config: InspectorConfig,
    ring: Mutex<Ring>,
    next_id: AtomicU64,
    requests_total: AtomicU64,
    requests_open: AtomicU64,
    connections_total: AtomicU64,
    connections_open: AtomicU64,
    errors: AtomicU64,
    status: watch::Sender<Status>,
}

#[derive(Default)]
struct Ring {
    /// Newest first.
    exchanges: VecDeque<Arc<Mutex<Record>>>,
    /// Oldest first.
    latencies: VecDeque<Duration>,
}

/// One exchange as captured. Shared between the buffer and the taps: a request body still
/// streaming when the response ended keeps filling in.
struct Record {
    id: u64,
    replay_of: Option<u64>,
    endpoint: String,
    started_at: SystemTime,
    method: Method,
    uri: http::Uri,
    request_headers: HeaderMap,
    request_body: Captured,
    status: Option<StatusCode>,
    response_headers: Option<HeaderMap>,
    response_body: Captured,
    headers_after: Option<Duration>,
    completed_after: Option<Duration>,
    error: Option<String>,
}

/// The first bytes of a body and what is known about the rest.
#[derive(Default)]
struct Captured {
    data: Vec<u8>,
    total: u64,
    truncated: bool,
    complete: bool,
}

impl Captured {
    fn push(&mut self, chunk: &[u8], cap: usize) {
        self.total += chunk.len() as u64;
        let room = cap.saturating_sub(self.data.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.data.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Default for Inspector {
    fn default() -> Self {
        Self::new(InspectorConfig::default())
    }
}

impl Inspector {
    /// An empty inspector.
    pub fn new(config: InspectorConfig) -> Self {
        Self {
            store: Arc::new(Store {
                config,
                ring: Mutex::new(Ring::default()),
                next_id: AtomicU64::new(1),
                requests_total: AtomicU64::new(0),
                requests_open: AtomicU64::new(0),
                connections_total: AtomicU64::new(0),
                connections_open: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                status: watch::Sender::new(Status::default()),
            }),
        }
    }

    /// The buffer sizes in force.
    pub fn config(&self) -> InspectorConfig {
        self.store.config
    }

    /// Starts capturing one visitor request: returns the request to forward (its body is
    /// passed through frame by frame, the first `body_cap` bytes copied) and the [`Exchange`]
    /// that captures the response. `endpoint` names the tunnel endpoint it came through.
    pub fn tap_request(&self, endpoint: &str, req: Request<Body>) -> (Request<Body>, Exchange) {
        self.tap(endpoint, req, None)
    }

    fn tap(
        &self,
        endpoint: &str,
        req: Request<Body>,
        replay_of: Option<u64>,
    ) -> (Request<Body>, Exchange) {
        let store = &self.store;
        let id = store.next_id.fetch_add(1, Ordering::Relaxed);
        store.requests_total.fetch_add(1, Ordering::Relaxed);
        store.requests_open.fetch_add(1, Ordering::Relaxed);
        store.connections_total.fetch_add(1, Ordering::Relaxed);
        store.connections_open.fetch_add(1, Ordering::Relaxed);
        let (parts, body) = req.into_parts();
        let record = Arc::new(Mutex::new(Record {
            id,
            replay_of,
            endpoint: endpoint.to_owned(),
            started_at: SystemTime::now(),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            request_headers: parts.headers.clone(),
            request_body: Captured::default(),
            status: None,
            response_headers: None,
            response_body: Captured::default(),
            headers_after: None,
            completed_after: None,
            error: None,
        }));
        let body = Tap::new(
            body,
            record.clone(),
            Side::Request,
            store.config.body_cap,
            None,
        );
        let exchange = Exchange {
            pending: Pending {
                store: store.clone(),
                record,
                start: Instant::now(),
                done: false,
                on_drop: "the request was cancelled before the local service answered",
            },
        };
        (Request::from_parts(parts, body.boxed()), exchange)
    }

    /// Counts a stream that is not an HTTP exchange (a TCP connection, a WebSocket) in the
    /// connection figures until the returned guard is dropped.
    pub fn track_connection(&self) -> ConnectionGuard {
        self.store.connections_total.fetch_add(1, Ordering::Relaxed);
        self.store.connections_open.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            store: self.store.clone(),
        }
    }

    /// Counters and latency percentiles now.
    pub fn stats(&self) -> Stats {
        let s = &self.store;
        let samples: Vec<Duration> = lock(&s.ring).latencies.iter().copied().collect();
        Stats {
            connections_total: s.connections_total.load(Ordering::Relaxed),
            connections_open: s.connections_open.load(Ordering::Relaxed),
            requests_total: s.requests_total.load(Ordering::Relaxed),
            requests_open: s.requests_open.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            latency: Latency::of(&samples),
        }
    }

    /// The captured exchanges, newest first.
    pub fn list(&self) -> Vec<Summary> {
        let records: Vec<_> = lock(&self.store.ring).exchanges.iter().cloned().collect();
        records.iter().map(|r| lock(r).summary()).collect()
    }

    fn find(&self, id: u64) -> Option<Arc<Mutex<Record>>> {
        lock(&self.store.ring)
            .exchanges
            .iter()
            .find(|r| lock(r).id == id)
            .cloned()
    }

    /// The session status with the current [`Stats`] and the latest ten exchanges filled in.
    pub fn status(&self) -> Status {
        let mut status = self.store.status.borrow().clone();
        status.stats = self.stats();
        status.recent = self.list();
        status.recent.truncate(10);
        status
    }

    /// Changes the session status (state, relay, forwarding lines, inspector URL); the
    /// terminal panel redraws at once.
    pub fn update_status(&self, change: impl FnOnce(&mut Status)) {
        self.store.status.send_modify(change);
    }

    /// Notified whenever [`update_status`](Self::update_status) is called.
    pub fn subscribe_status(&self) -> watch::Receiver<Status> {
        self.store.status.subscribe()
    }
}

/// Keeps a stream counted as open; see [`Inspector::track_connection`].
pub struct ConnectionGuard {
    store: Arc<Store>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.store.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request being captured, waiting for its response; see [`Inspector::tap_request`].
pub struct Exchange {
    pending: Pending,
}

impl Exchange {
    /// The id the exchange has in the buffer and the API.
    pub fn id(&self) -> u64 {
        lock(&self.pending.record).id
    }

    /// Records the response head and returns the response to send on, its body tapped like
    /// the request's. The exchange is committed when that body ends or is dropped.
    pub fn tap_response(self, resp: Response<Body>) -> Response<Body> {
        let mut pending = self.pending;
        let (parts, body) = resp.into_parts();
        {
            let mut r = lock(&pending.record);
            r.status = Some(parts.status);
            r.response_headers = Some(parts.headers.clone());
            r.headers_after = Some(pending.start.elapsed());
        }
        pending.on_drop = "the response body was not sent to the end (the visitor went away?)";
        let record = pending.record.clone();
        let cap = pending.store.config.body_cap;
        let body = Tap::new(body, record, Side::Response, cap, Some(pending));
        Response::from_parts(parts, body.boxed())
    }

    /// Commits the exchange without a response: forwarding failed with `error`.
    pub fn failed(self, error: String) {
        let mut pending = self.pending;
        pending.commit(Some(error));
    }
}

/// Commits its exchange exactly once: explicitly, or with `on_drop` as the error when dropped.
struct Pending {
    store: Arc<Store>,
    record: Arc<Mutex<Record>>,
    start: Instant,
    done: bool,
    on_drop: &'static str,
}

impl Pending {
    fn commit(&mut self, error: Option<String>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.start.elapsed();
        let (headers_after, failed) = {
            let mut r = lock(&self.record);
            r.completed_after = Some(elapsed);
            if r.error.is_none() {
                r.error = error;
            }
            (r.headers_after, r.error.is_some())
        };
        let store = &self.store;
        store.requests_open.fetch_sub(1, Ordering::Relaxed);
        store.connections_open.fetch_sub(1, Ordering::Relaxed);
        if failed {
            store.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut ring = lock(&store.ring);
        ring.exchanges.push_front(self.record.clone());
        ring.exchanges.truncate(store.config.capacity);
        if let Some(latency) = headers_after {
            ring.latencies.push_back(latency);
            while ring.latencies.len() > store.config.latency_window.max(1) {
                ring.latencies.pop_front();
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let error = self.on_drop.to_owned();
        self.commit(Some(error));
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    Request,
    Response,
}

/// A body passed through unchanged while its first bytes are copied into the record.
struct Tap {
    inner: Body,
    record: Arc<Mutex<Record>>,
    side: Side,
    cap: usize,
    finished: bool,
    /// The response side commits the exchange when it ends.
    pending: Option<Pending>,
}

impl Tap {
    fn new(
        inner: Body,
        record: Arc<Mutex<Record>>,
        side: Side,
        cap: usize,
        pending: Option<Pending>,
    ) -> Self {
        Self {
            inner,
            record,
            side,
            cap,
            finished: false,
            pending,
        }
    }

    fn captured<'a>(&self, r: &'a mut Record) -> &'a mut Captured {
        match self.side {
            Side::Request => &mut r.request_body,
            Side::Response => &mut r.response_body,
        }
    }

    fn finish(&mut self, error: Option<String>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        {
            let mut r = lock(&self.record);
            if error.is_none() {
                self.captured(&mut r).complete = true;
            } else if r.error.is_none() {
                r.error = error.clone();
            }
        }
        if let Some(mut pending) = self.pending.take() {
            pending.commit(error);
        }
    }
}

impl hyper::body::Body for Tap {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let mut r = lock(&this.record);
                    this.captured(&mut r).push(data, this.cap);
                }
                // A peer may stop polling once the body says it is done.
                if this.inner.is_end_stream() {
                    this.finish(None);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let side = match this.side {
                    Side::Request => "request",
                    Side::Response => "response",
                };
                this.finish(Some(format!("{side} body failed: {e}")));
            }
            Poll::Ready(None) => this.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        // An empty body, or one known to be complete, is often dropped without a last poll.
        if self.inner.is_end_stream() {
            self.finish(None);
        }
        // Otherwise a pending response commits with its `on_drop` error.
    }
}

/// Request counters and latency percentiles, for the status panel and `/api/status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Streams through the tunnel so far: HTTP exchanges plus tracked TCP/WebSocket streams.
    pub connections_total: u64,
    /// Streams open now.
    pub connections_open: u64,
    /// HTTP exchanges so far.
    pub requests_total: u64,
    /// HTTP exchanges in flight now.
    pub requests_open: u64,
    /// Exchanges that ended with an error (no response, or a body cut short).
    pub errors: u64,
    /// Time to the response headers over the latest exchanges; `None` before the first.
    pub latency: Option<Latency>,
}

/// Percentiles (nearest rank) of a latency sample; each is one of the sampled values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Sample size.
    pub samples: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Latency {
    /// Percentiles of `samples` by the nearest-rank method; `None` when empty.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = |p: usize| sorted[(p * sorted.len()).div_ceil(100).max(1) - 1];
        Some(Self {
            samples: sorted.len(),
            p50: rank(50),
            p90: rank(90),
            p99: rank(99),
        })
    }
}

/// Milliseconds, to the microsecond.
fn ms(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

impl Serialize for Stats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let l = self.latency;
        serde_json::json!({
            "connections_total": self.connections_total,
            "connections_open": self.connections_open,
            "requests_total": self.requests_total,
            "requests_open": self.requests_open,
            "errors": self.errors,
            "latency_samples": l.map_or(0, |l| l.samples),
            "p50_ms": l.map(|l| ms(l.p50)),
            "p90_ms": l.map(|l| ms(l.p90)),
            "p99_ms": l.map(|l| ms(l.p99)),
        })
        .serialize(s)
    }
}

/// One line of the exchange list (`GET /api/requests`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Exchange id.
    pub id: u64,
    /// The exchange this one replayed.
    pub replay_of: Option<u64>,
    /// Endpoint it came through.
    pub endpoint: String,
    /// Request method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Response status; `None` when forwarding failed.
    pub status: Option<u16>,
    /// When the request arrived (RFC 3339, UTC).
    pub started_at: String,
    /// Milliseconds to the response headers.
    pub response_headers_ms: Option<f64>,
    /// Milliseconds to the end of the response body.
    pub duration_ms: Option<f64>,
    /// Request body size in bytes (all of it, not only what was kept).
    pub request_size: u64,
    /// Response body size in bytes.
    pub response_size: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl Record {
    fn path(&self) -> String {
        self.uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
    }

    fn summary(&self) -> Summary {
        Summary {
            id: self.id,
            replay_of: self.replay_of,
            endpoint: self.endpoint.clone(),
            method: self.method.to_string(),
            path: self.path(),
            status: self.status.map(|s| s.as_u16()),
            started_at: rfc3339(self.started_at),
            response_headers_ms: self.headers_after.map(ms),
            duration_ms: self.completed_after.map(ms),
            request_size: self.request_body.total,
            response_size: self.response_body.total,
            error: self.error.clone(),
        }
    }

    fn detail(&self) -> serde_json::Value {
        let response = self.status.map(|status| {
            serde_json::json!({
                "status": status.as_u16(),
                "reason": status.canonical_reason(),
                "headers": headers_json(self.response_headers.as_ref()),
                "body": body_json(&self.response_body),
            })
        });
        serde_json::json!({
            "id": self.id,
            "replay_of": self.replay_of,
            "endpoint": self.endpoint,
            "started_at": rfc3339(self.started_at),
            "request": {
                "method": self.method.as_str(),
                "path": self.path(),
                "uri": self.uri.to_string(),
                "headers": headers_json(Some(&self.request_headers)),
                "body": body_json(&self.request_body),
            },
            "response": response,
            "response_headers_ms": self.headers_after.map(ms),
            "duration_ms": self.completed_after.map(ms),
            "error": self.error,
        })
    }
}

/// Headers as `[name, value]` pairs in order (repeated names stay separate).
fn headers_json(headers: Option<&HeaderMap>) -> serde_json::Value {
    headers
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            serde_json::json!([name.as_str(), String::from_utf8_lossy(value.as_bytes())])
        })
        .collect()
}

/// A captured body: text when it is UTF-8 (a character cut by the cap is dropped), else
/// base64.
fn body_json(body: &Captured) -> serde_json::Value {
    let text = match std::str::from_utf8(&body.data) {
        Ok(s) => Some(s),
        Err(e) if body.truncated && e.error_len().is_none() => {
            std::str::from_utf8(&body.data[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    let (encoding, data) = match text {
        Some(t) => ("utf8", t.to_owned()),
        None => ("base64", base64(&body.data)),
    };
    serde_json::json!({
        "size": body.total,
        "captured": body.data.len(),
        "truncated": body.truncated,
        "complete": body.complete,
        "encoding": encoding,
        "data": data,
    })
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// `2024-05-01T12:00:00.123Z`.
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        since.subsec_millis()
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A future that borrows the replayer.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends a replayed request to the local service behind `endpoint`, as the forwarder would
/// a visitor's. The request carries the captured method, URI (as the relay sent it, with
/// the public authority), headers and body.
pub trait Replayer: Send + Sync {
    /// The local service's response, or why it could not be reached.
    fn replay(
        &self,
        endpoint: &str,
        req: Request<Body>,
    ) -> BoxFuture<'_, Result<Response<Body>, String>>;
}

/// Binds the web interface to `addr`, or to one of the next ports when it is taken (4040,
/// then 4041 up to 4049, like ngrok). Port 0 binds any free port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut last = None;
    for offset in 0..BIND_ATTEMPTS {
        let Some(port) = addr.port().checked_add(offset) else {
            break;
        };
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => {
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::ErrorKind::AddrInUse.into()))
}

struct Web {
    inspector: Arc<Inspector>,
    replay: Arc<dyn Replayer>,
    stop: CancellationToken,
    local: SocketAddr,
}

/// Serves the web interface on `listener` until `stop`: `GET /` (the page),
/// `GET /api/requests`, `GET /api/requests/{id}`, `POST /api/requests/{id}/replay`,
/// `GET /api/status`. Returns once the open connections have closed.
pub async fn serve(
    inspector: Arc<Inspector>,
    listener: TcpListener,
    replay: Arc<dyn Replayer>,
    stop: CancellationToken,
) {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let web = Arc::new(Web {
        inspector,
        replay,
        stop: stop.clone(),
        local,
    });
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let tcp = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "inspector: accept failed");
                    // Out of descriptors and the like: do not spin.
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let web = web.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let web = web.clone();
                async move { Ok::<_, Infallible>(web.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}

impl Web {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(refused) = self.check_origin(&req) {
            return refused;
        }
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = req.method().clone();
        match (segments.as_slice(), method) {
            ([""], Method::GET) => page(),
            (["api", "requests"], Method::GET) => json(StatusCode::OK, &self.inspector.list()),
            (["api", "requests", id], Method::GET) => match self.record(id) {
                Some(r) => json(StatusCode::OK, &lock(&r).detail()),
                None => not_found(id),
            },
            (["api", "requests", id, "replay"], Method::POST) => match self.record(id) {
                Some(r) => self.replay(r).await,
                None => not_found(id),
            },
            (["api", "status"], Method::GET) => {
                json(StatusCode::OK, &self.inspector.status().to_json())
            }
            ([""] | ["api", "requests"] | ["api", "requests", _] | ["api", "status"], _) => {
                method_not_allowed("GET")
            }
            (["api", "requests", _, "replay"], _) => method_not_allowed("POST"),
            _ => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no page at {path}"),
            ),
        }
    }

    fn record(&self, id: &str) -> Option<Arc<Mutex<Record>>> {
        id.parse().ok().and_then(|id| self.inspector.find(id))
    }

    /// The page shows captured bodies, which may hold secrets: refuse other sites' pages
    /// (DNS rebinding via `Host`, cross-site posts via `Origin`) while bound to loopback.
    fn check_origin(&self, req: &Request<Incoming>) -> Option<Response<Body>> {
        if !self.local.ip().is_loopback() {
            return None;
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Some(error(
                StatusCode::FORBIDDEN,
                "forbidden_host",
                format!("the inspector answers only to a loopback Host, not {host:?}"),
            ));
        }
        let origin = req.headers().get(header::ORIGIN).map(HeaderValue::as_bytes);
        if let Some(origin) = origin
            && origin != format!("http://{host}").as_bytes()
        {
            return Some(error(
                StatusCode::FORBIDDEN,
                "forbidden_origin",
                format!(
                    "requests from the page at {} are not allowed",
                    String::from_utf8_lossy(origin)
                ),
            ));
        }
        None
    }

    async fn replay(&self, record: Arc<Mutex<Record>>) -> Response<Body> {
        let (id, endpoint, req) = {
            let r = lock(&record);
            if r.request_body.truncated {
                return error(
                    StatusCode::CONFLICT,
                    "body_truncated",
                    format!(
                        "request {} cannot be replayed: only the first {} of its {} body bytes were kept",
                        r.id,
                        r.request_body.data.len(),
                        r.request_body.total
                    ),
                );
            }
            if !r.request_body.complete {
                return error(
                    StatusCode::CONFLICT,
                    "body_incomplete",
                    format!(
                        "request {} cannot be replayed: its body was not received to the end",
                        r.id
                    ),
                );
            }
            let mut req = Request::new(proxy::full(r.request_body.data.clone()));
            *req.method_mut() = r.method.clone();
            *req.uri_mut() = r.uri.clone();
            *req.headers_mut() = r.request_headers.clone();
            (r.id, r.endpoint.clone(), req)
        };
        let (req, exchange) = self.inspector.tap(&endpoint, req, Some(id));
        let new_id = exchange.id();
        match self.replay.replay(&endpoint, req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let mut body = exchange.tap_response(resp).into_body();
                // Read the response to the end so that it is captured; a long stream goes on
                // in the background.
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                let stop = self.stop.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            frame = body.frame() => if !matches!(frame, Some(Ok(_))) { break },
                        }
                    }
                    drop(body);
                    let _ = done_tx.send(());
                });
                let _ = tokio::time::timeout(REPLAY_WAIT, done_rx).await;
                json(
                    StatusCode::OK,
                    &serde_json::json!({"id": new_id, "replay_of": id, "status": status}),
                )
            }
            Err(e) => {
                exchange.failed(e.clone());
                json(
                    StatusCode::BAD_GATEWAY,
                    &serde_json::json!({
                        "id": new_id,
                        "replay_of": id,
                        "error": {"code": "replay_failed", "message": e},
                    }),
                )
            }
        }
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(proxy::full(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn error(status: StatusCode, code: &str, message: String) -> Response<Body> {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

fn not_found(id: &str) -> Response<Body> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no captured request with id {id}"),
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {allow}"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

fn page() -> Response<Body> {
    let mut resp = Response::new(proxy::full(PAGE));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    resp
}

/// The web page: self-contained, polls the JSON API every second.
const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Burrow Inspector</title>
<style>
:root { --bg: #fff; --fg: #1d2330; --muted: #6b7280; --line: #e3e6eb; --sel: #e8f0fe; --ok: #15803d; --warn: #b45309; --err: #b91c1c; --code: #f6f7f9; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #14171c; --fg: #e5e7eb; --muted: #9aa3b2; --line: #2a2f38; --sel: #1f2a3d; --ok: #4ade80; --warn: #fbbf24; --err: #f87171; --code: #1b1f26; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--fg); height: 100vh; display: flex; flex-direction: column; }
header { padding: 8px 14px; border-bottom: 1px solid var(--line); display: flex; gap: 18px; align-items: baseline; flex-wrap: wrap; }
header h1 { font-size: 16px; margin: 0; }
header .muted, .muted { color: var(--muted); }
main { flex: 1; display: flex; min-height: 0; }
#list { width: 42%; min-width: 320px; overflow-y: auto; border-right: 1px solid var(--line); }
#detail { flex: 1; overflow-y: auto; padding: 12px 16px; }
table { border-collapse: collapse; width: 100%; }
#list td { padding: 6px 10px; border-bottom: 1px solid var(--line); white-space: nowrap; }
#list tr { cursor: pointer; }
#list tr:hover { background: var(--sel); }
#list tr.sel { background: var(--sel); }
td.path { max-width: 0; width: 100%; overflow: hidden; text-overflow: ellipsis; font-family: ui-monospace, monospace; }
td.num { text-align: right; color: var(--muted); }
.s2, .s1 { color: var(--ok); } .s3 { color: var(--muted); } .s4 { color: var(--warn); } .s5, .fail { color: var(--err); }
h2 { font-size: 15px; margin: 18px 0 6px; }
h2:first-child { margin-top: 0; }
.kv td { padding: 2px 8px 2px 0; vertical-align: top; font-family: ui-monospace, monospace; font-size: 13px; word-break: break-all; }
.kv td:first-child { color: var(--muted); white-space: nowrap; width: 1%; }
pre { background: var(--code); border: 1px solid var(--line); padding: 8px; overflow: auto; max-height: 420px; white-space: pre-wrap; word-break: break-all; font-size: 13px; margin: 4px 0; }
button { font: inherit; padding: 4px 14px; cursor: pointer; }
button:disabled { cursor: not-allowed; }
.note { font-size: 12px; color: var(--muted); }
#empty { padding: 24px; color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>Burrow Inspector</h1>
  <span id="state" class="muted">…</span>
  <span id="forwarding" class="muted"></span>
  <span id="stats" class="muted"></span>
</header>
<main>
  <div id="list"><div id="empty">No requests yet. Requests through the tunnel show up here.</div><table><tbody id="rows"></tbody></table></div>
  <div id="detail"><p class="muted">Select a request.</p></div>
</main>
<script>
"use strict";
let selected = null, lastList = "";
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
const fmtMs = (ms) => ms == null ? "…" : ms < 1 ? ms.toFixed(2) + "ms" : ms < 100 ? ms.toFixed(1) + "ms" : ms < 10000 ? Math.round(ms) + "ms" : (ms / 1000).toFixed(1) + "s";
const fmtSize = (n) => n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB";
const statusClass = (s) => s ? "s" + String(s)[0] : "fail";

async function getJson(url, opts) {
  const r = await fetch(url, opts);
  return { status: r.status, body: await r.json() };
}

async function refresh() {
  try {
    const [list, status] = await Promise.all([getJson("/api/requests"), getJson("/api/status")]);
    renderStatus(status.body);
    const text = JSON.stringify(list.body);
    if (text !== lastList) { lastList = text; renderList(list.body); }
  } catch (e) {
    $("state").textContent = "agent not reachable";
  }
}

function renderStatus(s) {
  let state = s.state;
  if (s.state === "reconnecting") state += " in " + Math.ceil((s.retry_in_ms || 0) / 1000) + "s (" + s.reason + ")";
  if (s.state === "closed") state += ": " + s.reason;
  $("state").textContent = state;
  $("forwarding").textContent = s.forwarding.map((f) => f.public_url + " → " + f.local).join("   ");
  const t = s.stats;
  $("stats").textContent = "requests " + t.requests_total + " (open " + t.requests_open + ", errors " + t.errors + ")  p50 " +
    fmtMs(t.p50_ms) + "  p90 " + fmtMs(t.p90_ms) + "  p99 " + fmtMs(t.p99_ms);
}

function renderList(items) {
  $("empty").style.display = items.length ? "none" : "";
  const rows = $("rows");
  rows.replaceChildren(...items.map((x) => el("tr", { class: x.id === selected ? "sel" : "", onclick: () => select(x.id) },
    el("td", {}, x.method),
    el("td", { class: "path", title: x.path }, x.path, x.replay_of ? el("span", { class: "muted" }, "  (replay of #" + x.replay_of + ")") : null),
    el("td", { class: statusClass(x.status) }, x.status || "failed"),
    el("td", { class: "num" }, fmtMs(x.duration_ms)))));
}

function headersTable(headers) {
  return el("table", { class: "kv" }, ...headers.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v))));
}

function bodyView(b) {
  const parts = [];
  if (b.size === 0) return el("p", { class: "note" }, "No body.");
  let text = b.data;
  if (b.encoding === "utf8") {
    try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON */ }
  }
  parts.push(el("p", { class: "note" }, fmtSize(b.size) +
    (b.truncated ? " — only the first " + fmtSize(b.captured) + " kept" : "") +
    (b.complete ? "" : " — not received to the end") +
    (b.encoding === "base64" ? " — binary, shown as base64" : "")));
  parts.push(el("pre", {}, text));
  return el("div", {}, ...parts);
}

async function select(id) {
  selected = id;
  history.replaceState(null, "", "#" + id);
  for (const tr of $("rows").children) tr.classList.remove("sel");
  lastList = ""; refresh();
  const r = await getJson("/api/requests/" + id);
  if (selected !== id) return;
  const d = $("detail");
  if (r.status !== 200) { d.replaceChildren(el("p", { class: "fail" }, r.body.error.message)); return; }
  const x = r.body, q = x.request, p = x.response;
  const replayable = !q.body.truncated && q.body.complete;
  const result = el("span", { class: "note" });
  const button = el("button", { onclick: () => replay(id, button, result) }, "Replay");
  if (!replayable) { button.disabled = true; button.title = "The request body was not captured in full"; }
  d.replaceChildren(...[
    el("h2", {}, q.method + " " + q.path),
    el("p", { class: "muted" }, "#" + x.id + (x.replay_of ? " (replay of #" + x.replay_of + ")" : "") + " · " + x.endpoint + " · " +
      x.started_at + " · headers after " + fmtMs(x.response_headers_ms) + " · done after " + fmtMs(x.duration_ms)),
    el("p", {}, button, " ", result),
    x.error ? el("p", { class: "fail" }, x.error) : null,
    el("h2", {}, "Request"), headersTable(q.headers), bodyView(q.body),
    el("h2", {}, "Response"),
    p ? el("div", {}, el("p", { class: statusClass(p.status) }, p.status + " " + (p.reason || "")), headersTable(p.headers), bodyView(p.body))
      : el("p", { class: "muted" }, "No response.")].filter((c) => c));
}

async function replay(id, button, result) {
  button.disabled = true;
  result.textContent = "replaying…";
  try {
    const r = await getJson("/api/requests/" + id + "/replay", { method: "POST" });
    if (r.body.id) { await refresh(); select(r.body.id); }
    else { result.textContent = r.body.error.message; button.disabled = false; }
  } catch (e) { result.textContent = String(e); button.disabled = false; }
}

refresh();
setInterval(refresh, 1000);
if (/^#\d+$/.test(location.hash)) select(Number(location.hash.slice(1)));
</script>
</body>
</html>
"##;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::{Client, connect::HttpConnector};
    use proptest::prelude::*;
    use tokio::sync::mpsc;

    /// A body whose chunks the test sends one at a time.
    struct ChanBody(mpsc::Receiver<Bytes>);

    impl hyper::body::Body for ChanBody {
        type Data = Bytes;
        type Error = BodyError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }

    fn chan_body() -> (mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = mpsc::channel(1);
        (tx, ChanBody(rx).boxed())
    }

    /// Sends each chunk and reads it back out of `body` before sending the next, so nothing
    /// can have been buffered; returns what came out.
    async fn pump(tx: mpsc::Sender<Bytes>, body: &mut Body, chunks: &[Bytes]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks {
            tx.send(chunk.clone()).await.unwrap();
            let frame = body.frame().await.unwrap().unwrap();
            out.extend_from_slice(frame.data_ref().unwrap());
        }
        drop(tx);
        assert!(
            body.frame().await.is_none(),
            "body ends after the last chunk"
        );
        out
    }

    fn chunks(count: u8, size: usize) -> Vec<Bytes> {
        (0..count)
            .map(|i| Bytes::from(vec![b'a' + i; size]))
            .collect()
    }

    fn detail(inspector: &Inspector, id: u64) -> serde_json::Value {
        lock(&inspector.find(id).unwrap()).detail()
    }

    #[tokio::test]
    async fn tap_streams_every_byte_unchanged_and_keeps_only_the_cap() {
        let inspector = Inspector::new(InspectorConfig {
            body_cap: 1000,
            ..InspectorConfig::default()
        });
        let (tx, body) = chan_body();
        let req = Request::post("http://demo.burrow.localhost/upload?x=1")
            .header("x-test", "1")
            .body(body)
            .unwrap();
        let (req, exchange) = inspector.tap_request("demo", req);
        let id = exchange.id();
        assert_eq!(req.uri().path(), "/upload");
        let sent = chunks(10, 300);
        let mut body = req.into_body();
        assert_eq!(pump(tx, &mut body, &sent).await, sent.concat());
        assert!(
            inspector.list().is_empty(),
            "committed only when the response ends"
        );
        assert_eq!(inspector.stats().requests_open, 1);

        let (tx, body) = chan_body();
        let resp = Response::builder().status(200).body(body).unwrap();
        let mut body = exchange.tap_response(resp).into_body();
        let returned = chunks(5, 400);
        assert_eq!(pump(tx, &mut body, &returned).await, returned.concat());
        drop(body);

        let list = inspector.list();
        assert_eq!(list.len(), 1);
        let s = &list[0];
        assert_eq!(
            (s.id, s.method.as_str(), s.path.as_str()),
            (id, "POST", "/upload?x=1")
        );
        assert_eq!(
            (s.status, s.request_size, s.response_size),
            (Some(200), 3000, 2000)
        );
        assert_eq!(s.error, None);
        assert!(s.response_headers_ms.unwrap() <= s.duration_ms.unwrap());
        let d = detail(&inspector, id);
        let req_body = &d["request"]["body"];
        assert_eq!(req_body["captured"], 1000);
        assert_eq!(req_body["size"], 3000);
        assert_eq!(req_body["truncated"], true);
        assert_eq!(req_body["complete"], true);
        assert_eq!(
            req_body["data"].as_str().unwrap().as_bytes(),
            &sent.concat()[..1000]
        );
        assert_eq!(d["response"]["body"]["captured"], 1000);
        assert_eq!(d["response"]["body"]["truncated"], true);
        assert_eq!(
            d["request"]["headers"][0],
            serde_json::json!(["x-test", "1"])
        );
        let stats = inspector.stats();
        assert_eq!((stats.requests_total, stats.requests_open), (1, 0));
        assert_eq!(stats.latency.unwrap().samples, 1);
    }

    #[tokio::test]
    async fn failures_and_early_ends_are_recorded() {
        let inspector = Inspector::default();
        let get = || Request::get("/x").body(proxy::full("")).unwrap();

        let (_, exchange) = inspector.tap_request("demo", get());
        exchange.failed("connection refused".into());
        let (_, exchange) = inspector.tap_request("demo", get());
        drop(exchange);
        let (_, exchange) = inspector.tap_request("demo", get());
        let (tx, body) = chan_body();
        let mut body = exchange.tap_response(Response::new(body)).into_body();
        tx.send(Bytes::from_static(b"partial")).await.unwrap();
        body.frame().await.unwrap().unwrap();
        drop(body); // the visitor went away mid-body

        let list = inspector.list();
        let errors: Vec<_> = list.iter().map(|s| s.error.clone().unwrap()).collect();
        assert!(errors[0].contains("not sent to the end"), "{errors:?}");
        assert!(errors[1].contains("cancelled"), "{errors:?}");
        assert_eq!(errors[2], "connection refused");
        assert_eq!(list[2].status, None);
        assert_eq!(list[0].status, Some(200));
        let stats = inspector.stats();
        assert_eq!((stats.errors, stats.requests_open), (3, 0));
        // Only the exchange that got response headers has a latency.
        assert_eq!(stats.latency.unwrap().samples, 1);
    }

    #[tokio::test]
    async fn buffer_and_latency_window_are_bounded() {
        let inspector = Inspector::new(InspectorConfig {
            capacity: 3,
            body_cap: 16,
            latency_window: 2,
        });
        for _ in 0..5 {
            let (_, exchange) = inspector.tap_request("demo", Request::new(proxy::full("")));
            drop(exchange.tap_response(Response::new(proxy::full(""))));
        }
        let ids: Vec<u64> = inspector.list().iter().map(|s| s.id).collect();
        assert_eq!(ids, [5, 4, 3]);
        let stats = inspector.stats();
        assert_eq!(stats.requests_total, 5);
        assert_eq!(
            stats.errors, 0,
            "an empty body dropped unpolled is complete"
        );
        assert_eq!(stats.latency.unwrap().samples, 2);
    }

    #[tokio::test]
    async fn connections_are_counted_while_open() {
        let inspector = Inspector::default();
        let guard = inspector.track_connection();
        let (_, exchange) = inspector.tap_request("demo", Request::new(proxy::full("")));
        let stats = inspector.stats();
        assert_eq!((stats.connections_total, stats.connections_open), (2, 2));
        drop(guard);
        exchange.failed("x".into());
        let stats = inspector.stats();
        assert_eq!((stats.connections_total, stats.connections_open), (2, 0));
    }

    #[test]
    fn percentiles_of_known_samples() {
        let mut ms: Vec<u64> = (1..=100).collect();
        ms.reverse();
        let d: Vec<Duration> = ms.into_iter().map(Duration::from_millis).collect();
        let l = Latency::of(&d).unwrap();
        assert_eq!(l.samples, 100);
        assert_eq!(
            (l.p50, l.p90, l.p99),
            (
                Duration::from_millis(50),
                Duration::from_millis(90),
                Duration::from_millis(99)
            )
        );
        let one = Latency::of(&[Duration::from_millis(7)]).unwrap();
        assert_eq!(
            (one.p50, one.p99),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
        let two = Latency::of(&[Duration::from_millis(20), Duration::from_millis(10)]).unwrap();
        assert_eq!(
            (two.p50, two.p90),
            (Duration::from_millis(10), Duration::from_millis(20))
        );
        assert_eq!(Latency::of(&[]), None);
    }

    proptest! {
        #[test]
        fn percentiles_are_ordered_members_of_the_sample(
            ms in proptest::collection::vec(0u64..100_000, 1..400)
        ) {
            let d: Vec<Duration> = ms.iter().copied().map(Duration::from_millis).collect();
            let l = Latency::of(&d).unwrap();
            prop_assert_eq!(l.samples, d.len());
            prop_assert!(l.p50 <= l.p90 && l.p90 <= l.p99);
            for p in [l.p50, l.p90, l.p99] {
                prop_assert!(d.contains(&p));
            }
            // Nearest rank: at least p% of the sample is at or below the p-th percentile.
            let at_or_below = |x: Duration| d.iter().filter(|&&v| v <= x).count() * 100;
            prop_assert!(at_or_below(l.p50) >= 50 * d.len());
            prop_assert!(at_or_below(l.p90) >= 90 * d.len());
            prop_assert!(at_or_below(l.p99) >= 99 * d.len());
        }
    }

    #[test]
    fn timestamps_and_base64() {
        let at = |secs: u64, ms: u64| {
            rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_700_000_000, 123), "2023-11-14T22:13:20.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn bodies_are_text_or_base64() {
        let cut = Captured {
            data: "héllo".as_bytes()[..2].to_vec(), // "h" and half of "é"
            total: 6,
            truncated: true,
            complete: true,
        };
        let j = body_json(&cut);
        assert_eq!(
            (j["encoding"].as_str(), j["data"].as_str()),
            (Some("utf8"), Some("h"))
        );
        let binary = Captured {
            data: vec![0xff, 0x00],
            total: 2,
            truncated: false,
            complete: true,
        };
        let j = body_json(&binary);
        assert_eq!(
            (j["encoding"].as_str(), j["data"].as_str()),
            (Some("base64"), Some("/wA="))
        );
    }

    // --- Real sockets: a local service, a tapping proxy, and the web interface. ---

    type TestClient = Client<HttpConnector, Body>;

    fn client() -> TestClient {
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
    }

    /// Serves HTTP/1.1 on a fresh 127.0.0.1 port with `handle`.
    async fn spawn_server<F, Fut>(handle: F) -> SocketAddr
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let fut = handle(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        addr
    }

    type Seen = (Method, String, Bytes);

    /// The local service: reports each request and answers 201 `got N bytes`.
    async fn local_service() -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let addr = spawn_server(move |req: Request<Incoming>| {
            let tx = tx.clone();
            async move {
                let method = req.method().clone();
                let path = req.uri().path_and_query().unwrap().to_string();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let answer = format!("got {} bytes", body.len());
                tx.send((method, path, body)).unwrap();
                let mut resp = Response::new(proxy::full(answer));
                *resp.status_mut() = StatusCode::CREATED;
                resp.headers_mut()
                    .insert("x-local", HeaderValue::from_static("yes"));
                resp
            }
        })
        .await;
        (addr, rx)
    }

    fn to_local(local: SocketAddr, mut req: Request<Body>) -> Request<Body> {
        let path = req.uri().path_and_query().unwrap().as_str().to_owned();
        *req.uri_mut() = format!("http://{local}{path}").parse().unwrap();
        req
    }

    /// What forward.rs does: tap, forward, tap the response.
    async fn tapping_proxy(inspector: Arc<Inspector>, local: SocketAddr) -> SocketAddr {
        let client = client();
        spawn_server(move |req: Request<Incoming>| {
            let (inspector, client) = (inspector.clone(), client.clone());
            async move {
                let (req, exchange) = inspector.tap_request("demo", req.map(proxy::incoming));
                match client.request(to_local(local, req)).await {
                    Ok(resp) => exchange.tap_response(resp.map(proxy::incoming)),
                    Err(e) => {
                        exchange.failed(e.to_string());
                        proxy::text_response(StatusCode::BAD_GATEWAY, e.to_string(), "agent")
                    }
                }
            }
        })
        .await
    }

    struct TestReplayer {
        local: SocketAddr,
        client: TestClient,
    }

    impl Replayer for TestReplayer {
        fn replay(
            &self,
            endpoint: &str,
            req: Request<Body>,
        ) -> BoxFuture<'_, Result<Response<Body>, String>> {
            assert_eq!(endpoint, "demo");
            let req = to_local(self.local, req);
            Box::pin(async move {
                self.client
                    .request(req)
                    .await
                    .map(|r| r.map(proxy::incoming))
                    .map_err(|e| e.to_string())
            })
        }
    }

    struct Harness {
        web: SocketAddr,
        proxy: SocketAddr,
        seen: mpsc::UnboundedReceiver<Seen>,
        inspector: Arc<Inspector>,
        stop: CancellationToken,
        server: tokio::task::JoinHandle<()>,
    }

    async fn harness(config: InspectorConfig) -> Harness {
        let (local, seen) = local_service().await;
        let inspector = Arc::new(Inspector::new(config));
        let proxy = tapping_proxy(inspector.clone(), local).await;
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let web = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let replayer = Arc::new(TestReplayer {
            local,
            client: client(),
        });
        let server = tokio::spawn(serve(inspector.clone(), listener, replayer, stop.clone()));
        Harness {
            web,
            proxy,
            seen,
            inspector,
            stop,
            server,
        }
    }

    impl Harness {
        async fn visit(
            &self,
            method: Method,
            path: &str,
            body: &'static str,
        ) -> (StatusCode, Bytes) {
            let req = Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", self.proxy))
                .header(header::CONTENT_TYPE, "text/plain")
                .body(proxy::full(body))
                .unwrap();
            let resp = client().request(req).await.unwrap();
            let status = resp.status();
            (status, resp.into_body().collect().await.unwrap().to_bytes())
        }

        async fn api(&self, method: Method, path: &str) -> (StatusCode, serde_json::Value) {
            let req = Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", self.web))
                .body(proxy::full(""))
                .unwrap();
            let resp = client().request(req).await.unwrap();
            let status = resp.status();
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice(&body).unwrap())
        }

        async fn shut_down(self) {
            self.stop.cancel();
            self.server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn api_lists_a_captured_post_and_replays_it() {
        let mut h = harness(InspectorConfig::default()).await;
        let (status, body) = h
            .visit(Method::POST, "/hooks/stripe?x=1", "hello replay")
            .await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::CREATED, &b"got 12 bytes"[..])
        );
        let original = h.seen.recv().await.unwrap();
        assert_eq!(
            original,
            (
                Method::POST,
                "/hooks/stripe?x=1".into(),
                Bytes::from("hello replay")
            )
        );

        // The response body was sent to the end before the visitor got it: already listed.
        let (status, list) = h.api(Method::GET, "/api/requests").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
        let item = &list[0];
        assert_eq!(item["method"], "POST");
        assert_eq!(item["path"], "/hooks/stripe?x=1");
        assert_eq!(item["status"], 201);
        assert_eq!(item["endpoint"], "demo");
        assert_eq!(item["replay_of"], serde_json::Value::Null);
        assert!(item["duration_ms"].as_f64().is_some(), "{item}");
        let id = item["id"].as_u64().unwrap();

        let (status, one) = h.api(Method::GET, &format!("/api/requests/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["request"]["body"]["data"], "hello replay");
        assert_eq!(one["request"]["body"]["encoding"], "utf8");
        assert!(
            one["request"]["headers"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(["content-type", "text/plain"])),
            "{one}"
        );
        assert_eq!(one["response"]["status"], 201);
        assert_eq!(one["response"]["reason"], "Created");
        assert_eq!(one["response"]["body"]["data"], "got 12 bytes");
        assert!(
            one["response"]["headers"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(["x-local", "yes"])),
            "{one}"
        );
        assert!(one["started_at"].as_str().unwrap().ends_with('Z'));

        let (status, replayed) = h
            .api(Method::POST, &format!("/api/requests/{id}/replay"))
            .await;
        assert_eq!(status, StatusCode::OK, "{replayed}");
        assert_eq!(replayed["status"], 201);
        assert_eq!(replayed["replay_of"], id);
        let new_id = replayed["id"].as_u64().unwrap();
        assert_ne!(new_id, id);
        assert_eq!(h.seen.recv().await.unwrap(), original);

        let (_, list) = h.api(Method::GET, "/api/requests").await;
        assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
        assert_eq!(list[0]["id"], new_id, "newest first");
        assert_eq!(list[0]["replay_of"], id);
        assert_eq!(list[0]["status"], 201);
        let (_, again) = h.api(Method::GET, &format!("/api/requests/{new_id}")).await;
        assert_eq!(again["request"]["body"]["data"], "hello replay");
        assert_eq!(again["response"]["body"]["data"], "got 12 bytes");

        let (status, s) = h.api(Method::GET, "/api/status").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(s["stats"]["requests_total"], 2);
        assert_eq!(s["stats"]["requests_open"], 0);
        assert_eq!(s["stats"]["latency_samples"], 2);
        assert!(s["stats"]["p50_ms"].as_f64().unwrap() <= s["stats"]["p99_ms"].as_f64().unwrap());
        h.shut_down().await;
    }

    #[tokio::test]
    async fn truncated_bodies_are_not_replayed() {
        let mut h = harness(InspectorConfig {
            body_cap: 8,
            ..InspectorConfig::default()
        })
        .await;
        let (status, _) = h
            .visit(Method::PUT, "/big", "a body longer than eight bytes")
            .await;
        assert_eq!(status, StatusCode::CREATED);
        h.seen.recv().await.unwrap();
        let id = h.inspector.list()[0].id;
        let (status, body) = h
            .api(Method::POST, &format!("/api/requests/{id}/replay"))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["error"]["code"], "body_truncated");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("only the first 8 of its 30 body bytes"),
            "{body}"
        );
        // The refusal came before any request could reach the local service.
        assert!(h.seen.try_recv().is_err());
        assert_eq!(h.inspector.list().len(), 1);
        h.shut_down().await;
    }

    #[tokio::test]
    async fn unknown_ids_and_paths_are_404_and_the_page_is_served() {
        let h = harness(InspectorConfig::default()).await;
        for (method, path) in [
            (Method::GET, "/api/requests/999"),
            (Method::GET, "/api/requests/abc"),
            (Method::POST, "/api/requests/999/replay"),
            (Method::GET, "/api/nothing"),
        ] {
            let (status, body) = h.api(method, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(body["error"]["code"], "not_found", "{path}");
        }
        let (status, body) = h.api(Method::DELETE, "/api/requests").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body["error"]["code"], "method_not_allowed");

        let resp = client()
            .get(format!("http://{}/", h.web).parse().unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let page = resp.into_body().collect().await.unwrap().to_bytes();
        let page = std::str::from_utf8(&page).unwrap();
        assert!(page.contains("<title>Burrow Inspector</title>"));
        assert!(page.contains("/api/requests"));
        assert!(
            !page.contains("://"),
            "the page loads nothing from elsewhere"
        );
        h.shut_down().await;
    }

    #[tokio::test]
    async fn other_hosts_and_origins_are_refused() {
        let h = harness(InspectorConfig::default()).await;
        let call = |host: &str, origin: Option<&str>| {
            let mut req =
                Request::get(format!("http://{}/api/requests", h.web)).header(header::HOST, host);
            if let Some(o) = origin {
                req = req.header(header::ORIGIN, o);
            }
            let req = req.body(proxy::full("")).unwrap();
            async move { client().request(req).await.unwrap().status() }
        };
        let port = h.web.port();
        assert_eq!(call("evil.example", None).await, StatusCode::FORBIDDEN);
        assert_eq!(
            call(&format!("evil.example:{port}"), None).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            call(&format!("localhost:{port}"), None).await,
            StatusCode::OK
        );
        let own = format!("127.0.0.1:{port}");
        assert_eq!(
            call(&own, Some(&format!("http://{own}"))).await,
            StatusCode::OK
        );
        assert_eq!(
            call(&own, Some("http://evil.example")).await,
            StatusCode::FORBIDDEN
        );
        h.shut_down().await;
    }

    #[tokio::test]
    async fn status_endpoint_reports_the_session() {
        let h = harness(InspectorConfig::default()).await;
        h.inspector.update_status(|s| {
            s.state = crate::status::SessionState::Online;
            s.relay = "relay.example:17443".into();
            s.forwarding.push(crate::status::Forwarding {
                public_url: "http://demo.burrow.localhost:17081".into(),
                local: "http://localhost:8000".into(),
            });
        });
        let (status, s) = h.api(Method::GET, "/api/status").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(s["state"], "online");
        assert_eq!(s["relay"], "relay.example:17443");
        assert_eq!(
            s["forwarding"][0]["public_url"],
            "http://demo.burrow.localhost:17081"
        );
        assert_eq!(s["stats"]["requests_total"], 0);
        assert_eq!(s["stats"]["p50_ms"], serde_json::Value::Null);
        h.shut_down().await;
    }

    #[tokio::test]
    async fn bind_moves_on_to_the_next_free_port() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let listener = bind(taken.local_addr().unwrap()).await.unwrap();
        let got = listener.local_addr().unwrap().port();
        assert!(got > port && got < port + BIND_ATTEMPTS, "{port} -> {got}");
    }
}
