//! Idle endpoints: how much relay memory each endpoint costs when nothing flows.
//!
//! - burrow: a fresh relay; the bench opens agent sessions itself (TLS 1.3, the `Hello` frame
//!   from `burrow-proto`, then an HTTP/2 server that answers the relay's control requests and
//!   its PINGs), one endpoint per session like one `burrow http` each, or many binds per
//!   session (the batched variant).
//! - rathole: one server and one client with N services (rathole opens a control channel and
//!   pre-creates 8 data channels per service, ~10 sockets per service on each side, so N is
//!   bounded by the 20 000 open files a process may have here).
//! - bore: a server and N minimal bore clients (the bench speaks bore's null-delimited JSON
//!   `Hello`), since `bore local` is one process per port.
//!
//! Per endpoint = (relay RSS with the endpoints − relay RSS before) / N.

use crate::{
    peers::{self, Api, Env},
    procs::{self, Proc},
    report::Row,
};
use anyhow::{Context, bail};
use burrow_proto::tunnel::{
    ALPN, CONTROL_BOUND_PATH, PROTOCOL_VERSION, ServerMessage, read_frame, write_frame,
};
use http_body_util::Empty;
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
    task::JoinSet,
};

/// Sessions being set up at once.
const CONCURRENCY: usize = 128;

fn rows(
    prefix: &str,
    target: &str,
    count: usize,
    sessions: usize,
    before: f64,
    after: f64,
) -> Vec<Row> {
    vec![
        Row::new(
            target,
            &format!("{prefix}.count"),
            count as f64,
            "endpoints",
        ),
        Row::new(
            target,
            &format!("{prefix}.sessions"),
            sessions as f64,
            "sessions",
        ),
        Row::new(target, &format!("{prefix}.rss_before"), before, "MiB"),
        Row::new(target, &format!("{prefix}.rss_after"), after, "MiB"),
        Row::new(
            target,
            &format!("{prefix}.per_endpoint"),
            (after - before) * 1024.0 / count.max(1) as f64,
            "KiB",
        ),
    ]
}

async fn settle(pid: u32) -> f64 {
    // Let allocations from the set-up settle, then read RSS.
    tokio::time::sleep(Duration::from_secs(3)).await;
    procs::rss_mib(pid).unwrap_or(0.0)
}

fn tls_config(ca_file: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// One idle agent session binding `names`; returns once the relay announced them bound (the
/// connection is then served by a spawned task in `set`).
async fn session(
    tls: Arc<rustls::ClientConfig>,
    relay: String,
    authtoken: String,
    names: Vec<String>,
    set: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(&relay).await?;
    let _ = tcp.set_nodelay(true);
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    // Only the fields every relay version knows (relays refuse unknown fields), so the bench
    // can measure an older or newer relay than the `burrow-proto` it was built with.
    let binds: Vec<serde_json::Value> = names
        .into_iter()
        .map(|n| serde_json::json!({"proto": "http", "name": n}))
        .collect();
    let hello = serde_json::json!({
        "version": PROTOCOL_VERSION,
        "authtoken": authtoken,
        "agent": "burrow-bench/idle",
        "binds": binds,
    });
    write_frame(&mut stream, &hello).await?;
    match read_frame::<ServerMessage, _>(&mut stream).await? {
        ServerMessage::Welcome { .. } => {}
        ServerMessage::Rejected { code, message } => bail!("rejected ({code:?}): {message}"),
    }
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel::<()>();
    let bound_tx = Arc::new(std::sync::Mutex::new(Some(bound_tx)));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let bound_tx = bound_tx.clone();
        async move {
            if req.uri().path() == CONTROL_BOUND_PATH
                && let Some(tx) = bound_tx.lock().ok().and_then(|mut g| g.take())
            {
                let _ = tx.send(());
            }
            let mut resp = Response::new(Empty::<bytes::Bytes>::new());
            *resp.status_mut() = http::StatusCode::NO_CONTENT;
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    set.spawn(async move {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    tokio::time::timeout(Duration::from_secs(30), bound_rx)
        .await
        .context("no bound announcement within 30 s")?
        .context("session ended before it was bound")?;
    Ok(())
}

/// Opens `count` idle HTTP endpoints on a fresh relay, `per_session` per agent session.
pub async fn burrow(
    env: &Env,
    api: &Api,
    count: usize,
    per_session: usize,
    prefix: &str,
) -> anyhow::Result<Vec<Row>> {
    let relay = peers::start_relay(env, api, &format!("burrow-relay-{prefix}"), "1-1").await?;
    let pid = relay.proc.pid;
    let before = settle(pid).await;
    let tls = tls_config(&relay.ca_file)?;
    let per_session = per_session.max(1);
    let sessions = count.div_ceil(per_session);
    let mut set = JoinSet::new();
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut pending = JoinSet::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for s in 0..sessions {
        let names: Vec<String> = (s * per_session..((s + 1) * per_session).min(count))
            .map(|i| format!("{prefix}-{i}").replace('_', "-"))
            .collect();
        let (tls, relay_addr, token) =
            (tls.clone(), relay.agent_addr.clone(), api.authtoken.clone());
        let permit = limit.clone().acquire_owned().await?;
        let done_tx = done_tx.clone();
        pending.spawn(async move {
            let mut own = JoinSet::new();
            let r = session(tls, relay_addr, token, names, &mut own).await;
            drop(permit);
            let _ = done_tx.send(r.map(|_| own));
        });
        // The first session fills the relay's authtoken cache before the rest arrive.
        if s == 0 {
            match done_rx.recv().await {
                Some(Ok(own)) => absorb(&mut set, own),
                Some(Err(e)) => return Err(e.context("first idle session")),
                None => bail!("session task vanished"),
            }
        }
    }
    drop(done_tx);
    let mut failed = 0usize;
    let mut first_error = None;
    while let Some(r) = done_rx.recv().await {
        match r {
            Ok(own) => absorb(&mut set, own),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        bail!("{failed} of {sessions} idle sessions failed; first: {e:#}");
    }
    eprintln!(
        "burrow-bench: {sessions} sessions with {count} endpoints up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let after = settle(pid).await;
    // CPU the relay spends keeping them (h2 PINGs every 5 s per session).
    let cpu0 = procs::cpu_secs(pid).unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cores = (procs::cpu_secs(pid).unwrap_or(0.0) - cpu0) / 5.0;
    let mut out = rows(prefix, "burrow", count, sessions, before, after);
    out.push(Row::new(
        "burrow",
        &format!("{prefix}.relay_idle_util"),
        idle_cores,
        "cores",
    ));
    set.abort_all();
    relay.proc.stop().await;
    Ok(out)
}

/// Moves the connection task(s) one session spawned into the set that keeps them alive.
fn absorb(set: &mut JoinSet<()>, mut own: JoinSet<()>) {
    // JoinSets cannot be merged; keep the inner set alive inside a task of the outer one.
    set.spawn(async move { while own.join_next().await.is_some() {} });
}

/// Counts LISTEN sockets on `first..first+n` in /proc/net/tcp.
fn listening_in_range(first: u16, n: usize) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let last = first as usize + n;
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(3) == Some(&"0A")
                && f.get(1)
                    .and_then(|a| a.rsplit_once(':'))
                    .and_then(|(_, p)| usize::from_str_radix(p, 16).ok())
                    .is_some_and(|p| p >= first as usize && p < last)
        })
        .count()
}

async fn wait_all_listening(first: u16, n: usize, procs: &mut [&mut Proc]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let up = listening_in_range(first, n);
        if up >= n {
            return Ok(());
        }
        for p in procs.iter_mut() {
            p.check_alive()?;
        }
        if Instant::now() >= deadline {
            bail!("only {up} of {n} endpoint ports listen after 180 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn first_endpoint_port(env: &Env) -> u16 {
    env.port_base + 100
}

/// `count` idle rathole services (plain TCP transport).
pub async fn rathole(env: &Env, count: usize) -> anyhow::Result<Vec<Row>> {
    let first = first_endpoint_port(env);
    let services: Vec<(String, u16, u16)> = (0..count)
        .map(|i| (format!("s{i}"), first + i as u16, env.upstream_port))
        .collect();
    // Server alone first: its baseline, before any service is bound.
    let control = env.port_base + 90;
    let (server_toml, client_toml) = peers::rathole_configs(control, &services, None);
    let sp = env.dir.join("rathole-idle-server.toml");
    let cp = env.dir.join("rathole-idle-client.toml");
    std::fs::write(&sp, server_toml)?;
    std::fs::write(&cp, client_toml)?;
    let bin = env.peers_bin_dir.join("rathole");
    let mut s = tokio::process::Command::new(&bin);
    s.arg("-s").arg(&sp).env("RUST_LOG", "warn");
    peers::ensure_free(control)?;
    let mut server = Proc::spawn("rathole-idle-server", s, &env.dir)?;
    let before = settle(server.pid).await;
    let mut c = tokio::process::Command::new(&bin);
    c.arg("-c").arg(&cp).env("RUST_LOG", "warn");
    let mut client = Proc::spawn("rathole-idle-client", c, &env.dir)?;
    wait_all_listening(first, count, &mut [&mut server, &mut client]).await?;
    let after = settle(server.pid).await;
    let out = rows("endpoints", "rathole", count, 1, before, after);
    client.stop().await;
    server.stop().await;
    Ok(out)
}

/// One minimal bore client: `Hello(port)`, then reads (and drops) heartbeats forever.
async fn bore_client(port: u16) -> anyhow::Result<TcpStream> {
    let mut tcp = TcpStream::connect(("127.0.0.1", peers::BORE_CONTROL_PORT)).await?;
    tcp.write_all(format!("{{\"Hello\":{port}}}\0").as_bytes())
        .await?;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if tcp.read(&mut byte).await? == 0 {
            bail!("bore server closed the control connection");
        }
        if byte[0] == 0 {
            break;
        }
        buf.push(byte[0]);
        if buf.len() > 256 {
            bail!("bore frame too long");
        }
    }
    let answer = String::from_utf8_lossy(&buf);
    if answer != format!("{{\"Hello\":{port}}}") {
        bail!("bore answered {answer}");
    }
    Ok(tcp)
}

/// `count` idle bore endpoints (one control connection each, as `bore local` would hold).
pub async fn bore(env: &Env, count: usize) -> anyhow::Result<Vec<Row>> {
    let first = first_endpoint_port(env);
    let last = first + count as u16 - 1;
    let mut server = peers::start_bore_server(env, "bore-idle-server", first, last).await?;
    let before = settle(server.pid).await;
    let mut set = JoinSet::new();
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let ok = Arc::new(AtomicUsize::new(0));
    for i in 0..count {
        let permit = limit.clone().acquire_owned().await?;
        let ok = ok.clone();
        set.spawn(async move {
            let tcp = bore_client(first + i as u16).await;
            drop(permit);
            if let Ok(mut tcp) = tcp {
                ok.fetch_add(1, Ordering::Relaxed);
                let mut sink = [0u8; 256];
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
            }
        });
    }
    // All clients have answered (or failed) once the semaphore is whole again.
    let deadline = Instant::now() + Duration::from_secs(120);
    while limit.available_permits() < CONCURRENCY || set.len() < count {
        server.check_alive()?;
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = ok.load(Ordering::Relaxed);
    // A port of the range may be held by another process; a handful missing changes nothing.
    if connected * 100 < count * 99 {
        bail!("only {connected} of {count} bore clients connected");
    }
    let after = settle(server.pid).await;
    let out = rows("endpoints", "bore", connected, connected, before, after);
    set.abort_all();
    server.stop().await;
    Ok(out)
}
