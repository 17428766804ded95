//! `RedisLimiter` against the real Redis: shared counting, and the local fallback through an
//! outage and back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burrow_policy::limit::{RateLimiter, RedisLimiter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::eventually;

fn redis_url() -> String {
    std::env::var("BURROW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test (or run) uses.
fn unique_prefix() -> String {
    format!("burrow-test:{:016x}:", rand::random::<u64>())
}

async fn manager(url: &str) -> ConnectionManager {
    let config = ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_max_delay(200);
    ConnectionManager::new_with_config(redis::Client::open(url).unwrap(), config)
        .await
        .unwrap()
}

#[tokio::test]
async fn relays_share_one_counter() {
    let prefix = unique_prefix();
    let a = RedisLimiter::new(manager(&redis_url()).await, prefix.clone());
    let b = RedisLimiter::new(manager(&redis_url()).await, prefix.clone());
    let window = Duration::from_secs(3600);
    let mut allowed = 0;
    for i in 0..6 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        let d = limiter.hit("acct/ep:api:10.0.0.1", 4, window).await;
        if d.allowed {
            allowed += 1;
            assert_eq!(d.remaining, 4 - allowed);
        } else {
            assert!(
                d.retry_after <= window && d.retry_after > Duration::ZERO,
                "{:?}",
                d.retry_after
            );
        }
    }
    // 4 unless the six hits straddled a window boundary (then up to 6, never fewer than 4).
    assert!(allowed >= 4, "{allowed}");
    assert!(!a.is_degraded() && !b.is_degraded());
    // Another prefix is another namespace.
    let c = RedisLimiter::new(manager(&redis_url()).await, unique_prefix());
    assert!(c.hit("acct/ep:api:10.0.0.1", 4, window).await.allowed);
}

/// A TCP proxy in front of Redis that can be cut and restored on the same port.
struct Proxy {
    addr: std::net::SocketAddr,
    upstream: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            upstream,
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (tasks, upstream) = (self.tasks.clone(), self.upstream.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut visitor, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut redis) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut visitor, &mut redis).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the listener and every proxied connection: Redis is "down".
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    async fn restore(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

#[tokio::test]
async fn falls_back_to_local_limits_and_returns_to_redis() {
    let url = redis_url();
    let host = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let proxy = Proxy::start(host).await;
    let limiter = RedisLimiter::new(
        manager(&format!("redis://{}", proxy.addr)).await,
        unique_prefix(),
    );
    let window = Duration::from_secs(3600);
    assert!(limiter.hit("k", 2, window).await.allowed);
    assert!(!limiter.is_degraded());

    proxy.cut();
    // Requests keep being limited, locally now: two allowed, then refused.
    let started = tokio::time::Instant::now();
    let decisions: Vec<bool> = hits(&limiter, "outage-key", 3, window).await;
    assert_eq!(decisions, [true, true, false]);
    assert!(limiter.is_degraded());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a dead Redis must not stall requests"
    );

    proxy.restore().await;
    eventually(Duration::from_secs(20), || async {
        limiter.hit("k", 1000, window).await;
        !limiter.is_degraded()
    })
    .await;
    // Back on Redis: the counter from before the outage is still there.
    let d = limiter.hit("k", 2, window).await;
    assert!(!d.allowed, "Redis counted the earlier hits: {d:?}");
}

#[tokio::test]
async fn closed_port_limits_locally_and_warns_once_per_outage() {
    let warnings = Arc::new(AtomicUsize::new(0));
    let _guard = tracing::subscriber::set_default(CountWarnings(warnings.clone()));
    // Connect through a proxy, then close it for good: the limiter never sees Redis again.
    let url = redis_url();
    let proxy = Proxy::start(
        url.trim_start_matches("redis://")
            .split('/')
            .next()
            .unwrap()
            .to_owned(),
    )
    .await;
    let limiter = RedisLimiter::new(
        manager(&format!("redis://{}", proxy.addr)).await,
        unique_prefix(),
    )
    // Try Redis on every hit, so each hit below is a failed Redis call.
    .with_probe_interval(Duration::ZERO);
    proxy.cut();
    let decisions = hits(&limiter, "k", 4, Duration::from_secs(60)).await;
    assert_eq!(decisions, [true, true, true, false]);
    assert!(limiter.is_degraded());
    assert_eq!(
        warnings.load(Ordering::SeqCst),
        1,
        "one warning for the whole outage"
    );
}

#[tokio::test]
async fn one_request_probes_a_failing_redis_per_interval() {
    let host = redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let hole = BlackHole::start(host).await;
    let probe_interval = Duration::from_millis(300);
    let limiter = Arc::new(
        RedisLimiter::new(
            manager(&format!("redis://{}", hole.addr)).await,
            unique_prefix(),
        )
        .with_probe_interval(probe_interval),
    );
    let window = Duration::from_secs(3600);
    assert!(limiter.hit("k", 100, window).await.allowed);
    assert!(!limiter.is_degraded());

    // Redis stops answering: the hit waits out the timeout and starts the outage.
    hole.swallow();
    assert!(limiter.hit("k", 100, window).await.allowed);
    assert!(limiter.is_degraded());
    tokio::time::sleep(probe_interval + Duration::from_millis(100)).await;

    // Due for a probe, many requests at once: one of them tries Redis (and waits for the
    // timeout), the others decide locally at once.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let limiter = limiter.clone();
        tasks.spawn(async move { limiter.hit("k", 100, window).await.allowed });
    }
    while let Some(allowed) = tasks.join_next().await {
        assert!(allowed.unwrap());
    }
    // Every hit has returned, so no more bytes are coming: wait for the proxy to have counted
    // what was sent, then check that nothing beyond it was.
    crate::eventually(Duration::from_secs(5), || async {
        hole.swallowed_hits() >= 2
    })
    .await;
    assert_eq!(
        hole.swallowed_hits(),
        2,
        "the hit that started the outage and one probe reached Redis"
    );
}

/// A TCP proxy in front of Redis that, once told to, swallows what clients send (Redis never
/// answers: every call runs into the limiter's timeout), counting the rate-limit hits.
struct BlackHole {
    addr: std::net::SocketAddr,
    swallowing: Arc<std::sync::atomic::AtomicBool>,
    swallowed: Arc<Mutex<Vec<u8>>>,
}

impl BlackHole {
    async fn start(upstream: String) -> BlackHole {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hole = BlackHole {
            addr: listener.local_addr().unwrap(),
            swallowing: Arc::default(),
            swallowed: Arc::default(),
        };
        let (swallowing, swallowed) = (hole.swallowing.clone(), hole.swallowed.clone());
        tokio::spawn(async move {
            while let Ok((visitor, _)) = listener.accept().await {
                let Ok(redis) = TcpStream::connect(upstream.clone()).await else {
                    continue;
                };
                let (mut from_visitor, mut to_visitor) = visitor.into_split();
                let (mut from_redis, mut to_redis) = redis.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_redis, &mut to_visitor).await;
                });
                let (swallowing, swallowed) = (swallowing.clone(), swallowed.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = from_visitor.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if swallowing.load(Ordering::SeqCst) {
                            swallowed.lock().unwrap().extend_from_slice(&buf[..n]);
                        } else if to_redis.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        hole
    }

    fn swallow(&self) {
        self.swallowing.store(true, Ordering::SeqCst);
    }

    /// `INCR` commands sent since [`BlackHole::swallow`].
    fn swallowed_hits(&self) -> usize {
        let bytes = self.swallowed.lock().unwrap();
        bytes.windows(4).filter(|w| w == b"INCR").count()
    }
}

/// Counts WARN events from this crate.
struct CountWarnings(Arc<AtomicUsize>);

impl tracing::Subscriber for CountWarnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let meta = event.metadata();
        if *meta.level() == tracing::Level::WARN && meta.target().starts_with("burrow_policy") {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// `n` sequential hits with capacity `n - 1`.
async fn hits(limiter: &RedisLimiter, key: &str, n: u64, window: Duration) -> Vec<bool> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(limiter.hit(key, n - 1, window).await.allowed);
    }
    out
}
