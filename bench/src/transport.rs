//! The transport experiment (`burrow-bench transport`): which agent↔relay link design carries
//! visitor connections best, measured on a loopback TLS 1.3 pair in one process.
//!
//! Designs:
//! - `h2-mux`: one TLS connection carrying HTTP/2, one stream per visitor (Burrow today);
//! - `tls-per-conn`: a dedicated TLS connection per visitor connection (full handshake, or
//!   resumed with a TLS 1.3 ticket);
//! - `tls-pool`: dedicated TLS connections handshaken in advance and kept in a pool;
//! - `tcp-plain`: plain TCP, no TLS: the ceiling.
//!
//! Measured: bulk throughput with 1 and 8 concurrent streams (receiver-counted bytes), the rate
//! of new visitor connections at 50 concurrent openers with the p50 time to open, and for the
//! dedicated connections the effect of the receive-side buffer below rustls (rustls asks the
//! socket for 4 KiB per read; a `BufReader` under it turns that into large reads) and of the
//! application's read buffer.

use crate::report::{self, Row};
use anyhow::Context;
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context as TaskContext, Poll},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

/// Size of each write a sender makes.
const CHUNK: usize = 64 * 1024;
/// Size of the answer to an "open" exchange.
const ANSWER: usize = 1024;
/// Concurrent openers in the new-connection test.
const OPENERS: usize = 50;

/// How the receiving side reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvBuffers {
    /// Capacity of a `BufReader` between the socket and rustls; 0 = none (4 KiB reads).
    pub socket: usize,
    /// Buffer the application reads plaintext into.
    pub app: usize,
}

impl RecvBuffers {
    fn label(self) -> String {
        let k = |n: usize| {
            if n == 0 {
                "none".to_owned()
            } else {
                format!("{}K", n / 1024)
            }
        };
        format!("sockbuf={},readbuf={}", k(self.socket), k(self.app))
    }
}

/// TLS material for the pair.
struct Pki {
    server: Arc<rustls::ServerConfig>,
    client_full: Arc<rustls::ClientConfig>,
    client_resume: Arc<rustls::ClientConfig>,
}

fn pki() -> anyhow::Result<Pki> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"raw".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let client = |resume: bool, alpn: &[u8]| -> anyhow::Result<rustls::ClientConfig> {
        let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        if !resume {
            c.resumption = rustls::client::Resumption::disabled();
        }
        Ok(c)
    };
    Ok(Pki {
        server: Arc::new(server),
        client_full: Arc::new(client(false, b"raw")?),
        client_resume: Arc::new(client(true, b"raw")?),
    })
}

fn h2_client_config(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut c = (*pki.client_full).clone();
    c.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(c)
}

/// The receiving end: counts bytes it was sent, answers opens.
struct Server {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_server(
    tls: Option<Arc<rustls::ServerConfig>>,
    bufs: RecvBuffers,
) -> anyhow::Result<Server> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let task = tokio::spawn(async move {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let counter = counter.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Some(acceptor) = acceptor else {
                    let _ = serve_raw(tcp, bufs.app, &counter).await;
                    return;
                };
                let result = if bufs.socket > 0 {
                    match acceptor
                        .accept(BufReader::with_capacity(bufs.socket, tcp))
                        .await
                    {
                        Ok(tls) => serve_tls(tls, bufs.app, counter).await,
                        Err(e) => Err(e.into()),
                    }
                } else {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => serve_tls(tls, bufs.app, counter).await,
                        Err(e) => Err(e.into()),
                    }
                };
                drop(result);
            });
        }
    });
    Ok(Server {
        addr,
        received,
        task,
    })
}

async fn serve_tls<S>(
    tls: tokio_rustls::server::TlsStream<S>,
    app_buf: usize,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let counter = counter.clone();
            async move {
                let mut body = req.into_body();
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(d) = frame.data_ref() {
                        counter.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    &[b'x'; ANSWER],
                ))))
            }
        });
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(8 << 20)
            .serve_connection(TokioIo::new(tls), service)
            .await?;
        Ok(())
    } else {
        serve_raw(tls, app_buf, &counter).await
    }
}

/// Raw protocol: one op byte, `S` = sink until EOF, `P` = answer [`ANSWER`] bytes and close.
async fn serve_raw<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    app_buf: usize,
    counter: &AtomicU64,
) -> anyhow::Result<()> {
    let mut op = [0u8; 1];
    s.read_exact(&mut op).await?;
    match op[0] {
        b'S' => {
            let mut buf = vec![0u8; app_buf.max(1024)];
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        _ => {
            s.write_all(&[b'x'; ANSWER]).await?;
            s.shutdown().await?;
            Ok(())
        }
    }
}

/// A request body that yields the same chunk until `stop`.
struct Source {
    chunk: Bytes,
    stop: Arc<AtomicBool>,
}

impl Body for Source {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.stop.load(Ordering::Relaxed) {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
        }
    }
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?)
}

/// Measures bytes/s the server receives while `streams` senders run for `secs`.
async fn measure_bulk(
    server: &Server,
    secs: f64,
    senders: Vec<tokio::task::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
) -> f64 {
    // Let connections and windows ramp up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_bytes = server.received.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let bytes = server.received.load(Ordering::Relaxed) - start_bytes;
    let took = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.abort();
    }
    bytes as f64 * 8.0 / took / 1e9
}

async fn bulk_h2(pki: &Pki, bufs: RecvBuffers, streams: usize, secs: f64) -> anyhow::Result<f64> {
    let server = start_server(Some(pki.server.clone()), bufs).await?;
    let tls = tls_connect(server.addr, h2_client_config(pki)).await?;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .handshake::<_, Source>(TokioIo::new(tls))
        .await?;
    let conn = tokio::spawn(conn);
    let stop = Arc::new(AtomicBool::new(false));
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let mut senders = Vec::new();
    for _ in 0..streams {
        let mut sender = sender.clone();
        let body = Source {
            chunk: chunk.clone(),
            stop: stop.clone(),
        };
        senders.push(tokio::spawn(async move {
            let req = Request::post("http://bench/sink")
                .body(body)
                .unwrap_or_default();
            if sender.ready().await.is_ok() {
                let _ = sender.send_request(req).await;
            }
        }));
    }
    let gbps = measure_bulk(&server, secs, senders, stop).await;
    conn.abort();
    Ok(gbps)
}

impl Default for Source {
    fn default() -> Self {
        Source {
            chunk: Bytes::new(),
            stop: Arc::new(AtomicBool::new(true)),
        }
    }
}

async fn bulk_dedicated(
    pki: Option<&Pki>,
    bufs: RecvBuffers,
    streams: usize,
    secs: f64,
) -> anyhow::Result<f64> {
    let server = start_server(pki.map(|p| p.server.clone()), bufs).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..streams {
        let stop = stop.clone();
        let addr = server.addr;
        let config = pki.map(|p| p.client_full.clone());
        senders.push(tokio::spawn(async move {
            let chunk = vec![7u8; CHUNK];
            let run = async {
                match config {
                    Some(c) => {
                        let mut s = tls_connect(addr, c).await?;
                        s.write_all(b"S").await?;
                        while !stop.load(Ordering::Relaxed) {
                            s.write_all(&chunk).await?;
                        }
                    }
                    None => {
                        let mut s = TcpStream::connect(addr).await?;
                        s.set_nodelay(true)?;
                        s.write_all(b"S").await?;
                        while !stop.load(Ordering::Relaxed) {
                            s.write_all(&chunk).await?;
                        }
                    }
                }
                anyhow::Ok(())
            };
            let _ = run.await;
        }));
    }
    Ok(measure_bulk(&server, secs, senders, stop).await)
}

/// Result of a new-connection test.
struct OpenRate {
    per_sec: f64,
    p50_ms: f64,
}

/// How a visitor connection is opened in the new-connection test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    H2Stream,
    TlsFull,
    TlsResumed,
    TlsPool,
}

async fn open_once_raw(s: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> anyhow::Result<()> {
    s.write_all(b"P").await?;
    let mut buf = [0u8; ANSWER];
    s.read_exact(&mut buf).await?;
    Ok(())
}

async fn open_rate(pki: &Pki, how: Open, secs: f64) -> anyhow::Result<OpenRate> {
    let server = start_server(
        Some(pki.server.clone()),
        RecvBuffers {
            socket: 0,
            app: 16 * 1024,
        },
    )
    .await?;
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let h2 = if how == Open::H2Stream {
        let tls = tls_connect(addr, h2_client_config(pki)).await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
            .await?;
        tokio::spawn(conn);
        Some(sender)
    } else {
        None
    };
    // The pool: refillers keep handshaken connections ready.
    let (pool_tx, pool_rx) =
        tokio::sync::mpsc::channel::<tokio_rustls::client::TlsStream<TcpStream>>(64);
    let pool_rx = Arc::new(tokio::sync::Mutex::new(pool_rx));
    let mut refillers = Vec::new();
    if how == Open::TlsPool {
        for _ in 0..4 {
            let (tx, cfg) = (pool_tx.clone(), pki.client_resume.clone());
            refillers.push(tokio::spawn(async move {
                while let Ok(c) = tls_connect(addr, cfg.clone()).await {
                    if tx.send(c).await.is_err() {
                        break;
                    }
                }
            }));
        }
        // Start with a full pool.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool_tx.capacity() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut workers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    for _ in 0..OPENERS {
        let (stop, h2, pool_rx) = (stop.clone(), h2.clone(), pool_rx.clone());
        let (full, resume) = (pki.client_full.clone(), pki.client_resume.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let t = Instant::now();
                let ok = match how {
                    Open::H2Stream => {
                        let Some(mut s) = h2.clone() else { break };
                        async {
                            s.ready().await?;
                            let resp = s
                                .send_request(Request::get("http://bench/open").body(Empty::new())?)
                                .await?;
                            resp.into_body().collect().await?;
                            anyhow::Ok(())
                        }
                        .await
                    }
                    Open::TlsFull | Open::TlsResumed => {
                        let cfg = if how == Open::TlsFull {
                            full.clone()
                        } else {
                            resume.clone()
                        };
                        async {
                            let mut s = tls_connect(addr, cfg).await?;
                            open_once_raw(&mut s).await
                        }
                        .await
                    }
                    Open::TlsPool => {
                        let c = pool_rx.lock().await.recv().await;
                        match c {
                            Some(mut s) => open_once_raw(&mut s).await,
                            None => break,
                        }
                    }
                };
                if ok.is_ok() {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap_or_default());
    }
    let took = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for r in refillers {
        r.abort();
    }
    all.sort();
    Ok(OpenRate {
        per_sec: all.len() as f64 / took,
        p50_ms: crate::loadgen::percentile(&all, 50.0)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN),
    })
}

/// Options of the experiment.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds each measurement counts.
    pub secs: f64,
    /// Repetitions (median reported).
    pub runs: usize,
}

/// Runs the whole experiment; returns rows (`target` = design, `test` = measurement).
pub async fn run(opts: &Options) -> anyhow::Result<Vec<Row>> {
    let pki = pki().context("generating the loopback certificate")?;
    let none = RecvBuffers {
        socket: 0,
        app: 16 * 1024,
    };
    let big = RecvBuffers {
        socket: 256 * 1024,
        app: 256 * 1024,
    };
    let dedicated_bufs = [
        none,
        RecvBuffers {
            socket: 0,
            app: 256 * 1024,
        },
        RecvBuffers {
            socket: 64 * 1024,
            app: 64 * 1024,
        },
        big,
    ];
    let mut samples: Vec<(String, String, f64, &'static str)> = Vec::new();
    for run in 0..opts.runs {
        eprintln!("burrow-bench transport: run {}", run + 1);
        for streams in [1usize, 8] {
            let test = format!("bulk_{streams}");
            let v = bulk_dedicated(None, none, streams, opts.secs).await?;
            samples.push(("tcp-plain".into(), test.clone(), v, "Gbit/s"));
            for bufs in [none, big] {
                let v = bulk_h2(&pki, bufs, streams, opts.secs).await?;
                samples.push((
                    format!("h2-mux {}", bufs.label()),
                    test.clone(),
                    v,
                    "Gbit/s",
                ));
            }
            for bufs in dedicated_bufs {
                let v = bulk_dedicated(Some(&pki), bufs, streams, opts.secs).await?;
                samples.push((
                    format!("tls-per-conn {}", bufs.label()),
                    test.clone(),
                    v,
                    "Gbit/s",
                ));
            }
        }
        for (how, name) in [
            (Open::H2Stream, "h2-mux (stream per visitor)"),
            (Open::TlsFull, "tls-per-conn (full handshake)"),
            (Open::TlsResumed, "tls-per-conn (resumed)"),
            (Open::TlsPool, "tls-pool (pre-warmed, resumed refills)"),
        ] {
            let r = open_rate(&pki, how, opts.secs).await?;
            samples.push((name.into(), "open_rate".into(), r.per_sec, "conn/s"));
            samples.push((name.into(), "open_p50".into(), r.p50_ms, "ms"));
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    for (target, test, _, unit) in &samples {
        if rows.iter().any(|r| &r.target == target && &r.test == test) {
            continue;
        }
        let vals: Vec<f64> = samples
            .iter()
            .filter(|(t, k, _, _)| t == target && k == test)
            .map(|s| s.2)
            .collect();
        if let Some(m) = report::median(&vals) {
            rows.push(Row::new(target, test, m, unit));
        }
    }
    Ok(rows)
}

/// Markdown tables of the experiment's rows.
pub fn markdown(rows: &[Row], header: &str) -> String {
    let mut s =
        format!("{header}\n\n| design | 1 stream, Gbit/s | 8 streams, Gbit/s |\n|---|---:|---:|\n");
    let mut seen: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.test.starts_with("bulk_")) {
        if seen.contains(&r.target.as_str()) {
            continue;
        }
        seen.push(&r.target);
        let get = |t: &str| {
            rows.iter()
                .find(|x| x.target == r.target && x.test == t)
                .map(|x| report::fmt_num(x.value))
                .unwrap_or_else(|| "–".into())
        };
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            r.target,
            get("bulk_1"),
            get("bulk_8")
        ));
    }
    s.push_str(&format!(
        "\n| opening a visitor connection ({OPENERS} concurrent) | conn/s | p50, ms |\n|---|---:|---:|\n"
    ));
    let mut seen: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.test == "open_rate") {
        if seen.contains(&r.target.as_str()) {
            continue;
        }
        seen.push(&r.target);
        let p50 = rows
            .iter()
            .find(|x| x.target == r.target && x.test == "open_p50")
            .map(|x| report::fmt_num(x.value))
            .unwrap_or_else(|| "–".into());
        s.push_str(&format!(
            "| {} | {} | {p50} |\n",
            r.target,
            report::fmt_num(r.value)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_labels() {
        assert_eq!(
            RecvBuffers {
                socket: 0,
                app: 16 * 1024
            }
            .label(),
            "sockbuf=none,readbuf=16K"
        );
        assert_eq!(
            RecvBuffers {
                socket: 256 * 1024,
                app: 256 * 1024
            }
            .label(),
            "sockbuf=256K,readbuf=256K"
        );
    }

    #[test]
    fn markdown_lists_each_design_once() {
        let rows = vec![
            Row::new("h2-mux", "bulk_1", 5.0, "Gbit/s"),
            Row::new("h2-mux", "bulk_8", 6.0, "Gbit/s"),
            Row::new("tls-pool", "open_rate", 9000.0, "conn/s"),
            Row::new("tls-pool", "open_p50", 0.2, "ms"),
        ];
        let md = markdown(&rows, "hdr");
        assert!(md.contains("| h2-mux | 5.00 | 6.00 |"), "{md}");
        assert!(md.contains("| tls-pool | 9000 | 0.200 |"), "{md}");
        assert_eq!(md.matches("| h2-mux |").count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_short_pair_moves_bytes_and_opens_connections() {
        let pki = pki().unwrap();
        let bufs = RecvBuffers {
            socket: 0,
            app: 16 * 1024,
        };
        assert!(bulk_h2(&pki, bufs, 2, 0.2).await.unwrap() > 0.0);
        assert!(bulk_dedicated(Some(&pki), bufs, 1, 0.2).await.unwrap() > 0.0);
        for how in [Open::H2Stream, Open::TlsFull, Open::TlsPool] {
            let r = open_rate(&pki, how, 0.3).await.unwrap();
            assert!(r.per_sec > 0.0, "{how:?}");
        }
    }
}
