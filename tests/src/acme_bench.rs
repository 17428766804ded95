//! Certificate issuance end to end against Pebble: Burrow next to Debian's `lego`, the same
//! kind of certificate (one DNS name, ECDSA P-256 key, HTTP-01) from two Pebble instances with
//! the same settings ([`Pebble`]: `PEBBLE_VA_NOSLEEP=1`, no nonce rejection, no authz reuse).
//! The `acme-bench` binary runs it (`cargo run -p burrow-e2e --bin acme-bench -- --runs N`).
//!
//! - **burrow**: a [`Stack`] whose api starts certificate workflows when a domain is verified
//!   and whose worker orders from its Pebble, which validates HTTP-01 on the relay's HTTP
//!   port. A run times from the domain-verify call returning 200 until a TLS client trusting
//!   only Pebble's root completes a handshake with the relay for the domain (polled every
//!   20 ms): outbox, Temporal scheduling, ACME, storage and distribution. `stored_ms` is when
//!   the `certificates` row was written (`issued_at`), i.e. issuance without distribution.
//!   Each run is broken down from the workflow's Temporal history (time until the workflow
//!   started, each activity from scheduled to completed, workflow tasks in between).
//! - **lego**: `lego --http --http.port 127.0.0.1:<port> run` for a fresh domain, one `--path`
//!   (the account registered by the warm-up run), timed from process start to exit (the
//!   certificate written).
//!
//! Both sides make one warm-up issuance first (it creates the ACME account, reused after);
//! measured runs alternate which side goes first.

use crate::{Stack, StackOptions, dns::DnsServer, pebble::Pebble, tls};
use anyhow::Context as _;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio::process::Command;

/// The zone of the benchmark's custom domains (the api verifies TXT records in it).
const ZONE: &str = "acme-bench.test";
/// How often the TLS client retries the handshake while waiting for the certificate.
const POLL: Duration = Duration::from_millis(20);
/// How long one issuance may take before the benchmark gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Measured issuances per side (after one warm-up each).
    pub runs: usize,
    /// Where the JSON results go.
    pub out: PathBuf,
}

/// One named slice of a Burrow issuance.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// `api outbox -> workflow started`, an activity name, `workflow tasks`, or
    /// `relay install -> TLS client sees it`.
    pub name: String,
    /// Milliseconds.
    pub ms: f64,
}

/// One issuance.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `burrow` or `lego`.
    pub side: &'static str,
    /// 0 for the warm-up, then 1..=runs.
    pub run: usize,
    /// The warm-up (creates the ACME account; not in the summary).
    pub warmup: bool,
    /// The certificate's name.
    pub domain: String,
    /// End to end, milliseconds.
    pub total_ms: f64,
    /// Burrow: until the `certificates` row was written.
    pub stored_ms: Option<f64>,
    /// Burrow: where the time went (sums to `total_ms`).
    pub phases: Vec<Phase>,
    /// Burrow: activity attempts that failed or timed out (retries) before the certificate was served.
    pub activity_failures: usize,
}

/// Median, p90, min and max of a series, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// What the series is.
    pub series: String,
    /// Samples.
    pub n: usize,
    /// Median.
    pub median_ms: f64,
    /// 90th percentile (nearest rank).
    pub p90_ms: f64,
    /// Smallest.
    pub min_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Stats {
    /// `None` for an empty series.
    pub fn of(series: &str, values: &[f64]) -> Option<Stats> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let first = *v.first()?;
        let last = *v.last()?;
        let rank = |q: f64| v[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            series: series.to_owned(),
            n,
            median_ms: median,
            p90_ms: rank(0.9),
            min_ms: first,
            max_ms: last,
        })
    }
}

/// Everything a benchmark run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Machine, versions, date, command.
    pub meta: Value,
    /// Every issuance, warm-ups included.
    pub rows: Vec<Row>,
    /// burrow end to end, burrow stored, lego.
    pub summary: Vec<Stats>,
    /// Median of each Burrow phase over the measured runs.
    pub burrow_phases: Vec<Stats>,
}

/// Runs the benchmark, prints the tables and writes `opts.out`.
pub async fn run(opts: &Options) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.runs >= 1, "--runs must be at least 1");
    let load_start = read_trimmed("/proc/loadavg");
    eprintln!("acme-bench: starting the Burrow stack and two Pebbles ...");
    let burrow = BurrowSide::start()
        .await
        .context("starting the Burrow side (stack + Pebble)")?;
    let lego = LegoSide::start()
        .await
        .context("starting the lego side (Pebble)")?;

    let mut rows = Vec::new();
    let result = async {
        rows.push(burrow.issue(0).await.context("burrow warm-up issuance")?);
        report_row(rows.last());
        rows.push(lego.issue(0).await.context("lego warm-up issuance")?);
        report_row(rows.last());
        for i in 1..=opts.runs {
            // Alternate which side goes first, so neither always follows the other's load.
            let order = if i % 2 == 1 { [0, 1] } else { [1, 0] };
            for side in order {
                let row = if side == 0 {
                    burrow
                        .issue(i)
                        .await
                        .with_context(|| format!("burrow run {i}"))?
                } else {
                    lego.issue(i)
                        .await
                        .with_context(|| format!("lego run {i}"))?
                };
                rows.push(row);
                report_row(rows.last());
            }
        }
        anyhow::Ok(())
    }
    .await;
    let logs = opts
        .out
        .parent()
        .map(|d| d.join("acme-logs"))
        .unwrap_or_else(|| PathBuf::from("acme-logs"));
    burrow.keep_logs(&logs);
    lego.keep_logs(&logs);
    if let Err(e) = result {
        return Err(e.context(format!(
            "logs of the stack and both Pebbles are in {}",
            logs.display()
        )));
    }

    let measured = |side: &str| -> Vec<&Row> {
        rows.iter()
            .filter(|r| r.side == side && !r.warmup)
            .collect()
    };
    let burrow_rows = measured("burrow");
    let lego_rows = measured("lego");
    let summary: Vec<Stats> = [
        Stats::of(
            "burrow: verify 200 -> relay serves it (end to end)",
            &burrow_rows.iter().map(|r| r.total_ms).collect::<Vec<_>>(),
        ),
        Stats::of(
            "burrow: verify 200 -> certificates row (no distribution)",
            &burrow_rows
                .iter()
                .filter_map(|r| r.stored_ms)
                .collect::<Vec<_>>(),
        ),
        Stats::of(
            "lego: process start -> exit (certificate written)",
            &lego_rows.iter().map(|r| r.total_ms).collect::<Vec<_>>(),
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut names: Vec<String> = Vec::new();
    for r in &burrow_rows {
        for p in &r.phases {
            if !names.contains(&p.name) {
                names.push(p.name.clone());
            }
        }
    }
    let burrow_phases: Vec<Stats> = names
        .iter()
        .filter_map(|name| {
            // A phase missing from a run took 0 ms in it.
            let values: Vec<f64> = burrow_rows
                .iter()
                .map(|r| {
                    r.phases
                        .iter()
                        .filter(|p| &p.name == name)
                        .map(|p| p.ms)
                        .sum()
                })
                .collect();
            Stats::of(name, &values)
        })
        .collect();

    let meta = json!({
        "date": Utc::now().to_rfc3339(),
        "command": format!("cargo run -p burrow-e2e --bin acme-bench -- --runs {}", opts.runs),
        "runs": opts.runs,
        "commit": command_output("git", &["rev-parse", "--short", "HEAD"]).await,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu_model(),
        "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        "loadavg_start": load_start,
        "loadavg_end": read_trimmed("/proc/loadavg"),
        "lego": command_output("dpkg-query", &["-W", "-f=${Version}", "lego"]).await,
        "pebble": command_output("dpkg-query", &["-W", "-f=${Version}", "pebble"]).await,
        "pebble_env": "PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0",
        "challenge": "http-01",
        "key": "ECDSA P-256 (both)",
        "binaries": "debug builds of burrow-api, burrow-relay, burrow-worker",
    });
    let report = Report {
        meta,
        rows,
        summary,
        burrow_phases,
    };
    print_tables(&report);
    if let Some(dir) = opts.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&opts.out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", opts.out.display()))?;
    println!("\nwrote {}", opts.out.display());
    Ok(report)
}

fn report_row(row: Option<&Row>) {
    if let Some(r) = row {
        let stored = r
            .stored_ms
            .map(|s| format!(", stored after {s:.0} ms"))
            .unwrap_or_default();
        eprintln!(
            "  {:<6} run {:>2}{}: {:.0} ms{stored}",
            r.side,
            r.run,
            if r.warmup { " (warm-up)" } else { "" },
            r.total_ms
        );
    }
}

fn print_tables(report: &Report) {
    println!("\n| series | n | median ms | p90 ms | min ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for s in &report.summary {
        print_stats(s);
    }
    println!("\nBurrow end to end by phase (from the workflow's Temporal history):\n");
    println!("| phase | n | median ms | p90 ms | min ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for s in &report.burrow_phases {
        print_stats(s);
    }
    let retries: usize = report.rows.iter().map(|r| r.activity_failures).sum();
    println!("\nfailed activity attempts (retries) in burrow runs: {retries}");
}

fn print_stats(s: &Stats) {
    println!(
        "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
        s.series, s.n, s.median_ms, s.p90_ms, s.min_ms, s.max_ms
    );
}

fn fresh_domain(label: &str) -> String {
    format!(
        "{label}-{}.{ZONE}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

fn port_of(addr: &str) -> anyhow::Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no port in address {addr:?}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    read_trimmed("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default()
}

async fn command_output(cmd: &str, args: &[&str]) -> String {
    match Command::new(cmd).args(args).output().await {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        _ => String::new(),
    }
}

fn copy_log(from: &Path, dir: &Path, name: &str) {
    let _ = std::fs::create_dir_all(dir);
    if let Err(e) = std::fs::copy(from, dir.join(name)) {
        eprintln!("acme-bench: could not keep {}: {e}", from.display());
    }
}

/// The Burrow stack with its DNS authority and Pebble.
struct BurrowSide {
    stack: Stack,
    dns: DnsServer,
    /// Kept running for the whole benchmark (killed on drop).
    _pebble: Pebble,
    /// Pebble's issuing root (PEM): the only root the TLS client trusts.
    root: String,
    https: String,
}

impl BurrowSide {
    async fn start() -> anyhow::Result<BurrowSide> {
        let dns = DnsServer::start(ZONE).await?;
        let mut stack = Stack::start_with(StackOptions {
            api_env: vec![
                ("BURROW_API_DNS_RESOLVER".into(), dns.addr.to_string()),
                ("BURROW_API_ACME_ENABLED".into(), "true".into()),
                // As the e2e certificate tests: a failed step is retried quickly (and counted
                // in `activity_failures`) instead of parking the run for minutes.
                (
                    "BURROW_API_CERT_RETRY_SCHEDULE".into(),
                    "300ms,300ms".into(),
                ),
            ],
            ..StackOptions::default()
        })
        .await?;
        let https = stack
            .relay
            .https
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the relay reported no TLS listener"))?;
        let pebble = Pebble::start(
            stack.dir.path(),
            port_of(&stack.relay.http)?,
            port_of(&https)?,
        )
        .await?;
        let key = {
            use base64::Engine as _;
            let mut b = [0u8; 32];
            b[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            b[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            base64::engine::general_purpose::STANDARD.encode(b)
        };
        stack
            .restart_worker_with(&[
                (
                    "BURROW_WORKER_ACME_DIRECTORY_URL".into(),
                    pebble.directory_url(),
                ),
                (
                    "BURROW_WORKER_ACME_CA_FILE".into(),
                    pebble.ca_file().display().to_string(),
                ),
                ("BURROW_WORKER_CERT_ENCRYPTION_KEY".into(), key),
                (
                    "BURROW_WORKER_ACME_VALIDATION_TIMEOUT_SECS".into(),
                    "20".into(),
                ),
            ])
            .await?;
        let root = pebble.issuing_roots_pem().await?;
        Ok(BurrowSide {
            stack,
            dns,
            _pebble: pebble,
            root,
            https,
        })
    }

    async fn call_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        want: StatusCode,
    ) -> anyhow::Result<Value> {
        let (status, answer) = self
            .stack
            .call(method.clone(), path, &self.stack.creds.admin_api_key, body)
            .await?;
        anyhow::ensure!(
            status == want,
            "{method} {path}: {status} (wanted {want}): {answer}"
        );
        Ok(answer)
    }

    /// A fresh domain, added and verified for a new pro account; times until the relay serves
    /// its certificate.
    async fn issue(&self, run: usize) -> anyhow::Result<Row> {
        let domain = fresh_domain("burrow");
        let (account, _token) = self.stack.account_with_token(&domain).await?;
        self.call_ok(
            Method::PUT,
            &format!("/v1/accounts/{account}/plan"),
            Some(json!({"plan": "pro"})),
            StatusCode::OK,
        )
        .await?;
        let added = self
            .call_ok(
                Method::POST,
                &format!("/v1/accounts/{account}/domains"),
                Some(json!({ "domain": domain })),
                StatusCode::CREATED,
            )
            .await?;
        let txt = |k: &str| {
            added["txt_record"][k]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("no txt_record.{k} in {added}"))
        };
        self.dns.set_txt(&txt("name")?, &[&txt("value")?]).await?;

        self.call_ok(
            Method::POST,
            &format!("/v1/accounts/{account}/domains/{domain}/verify"),
            None,
            StatusCode::OK,
        )
        .await?;
        let t0 = Instant::now();
        let t0_wall = Utc::now();
        loop {
            let attempt = tokio::time::timeout(
                Duration::from_secs(2),
                tls::connect(&self.https, &domain, self.root.as_bytes(), &[b"http/1.1"]),
            )
            .await;
            if let Ok(Ok(_conn)) = attempt {
                break;
            }
            if t0.elapsed() > RUN_TIMEOUT {
                let state = self.workflow_state(&domain).await;
                anyhow::bail!(
                    "the relay did not serve a Pebble certificate for {domain} within {RUN_TIMEOUT:?}; \
                     workflow: {state}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
        let served = t0.elapsed();
        let served_wall =
            t0_wall + chrono::Duration::from_std(served).context("run duration out of range")?;

        let db = self.stack.db().await?;
        let issued_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT min(issued_at) FROM certificates WHERE domain = $1 AND version = 1",
        )
        .bind(&domain)
        .fetch_one(&db)
        .await?;
        db.close().await;
        let history = self
            .stack
            .workflow_history::<burrow_workflows::certificate::CertificateWorkflow>(
                &burrow_workflows::certificate::workflow_id(&domain),
            )
            .await
            .context("fetching the workflow history")?;
        let (phases, activity_failures) = phases(&history, t0_wall, served_wall)?;
        Ok(Row {
            side: "burrow",
            run,
            warmup: run == 0,
            domain,
            total_ms: ms(served),
            stored_ms: issued_at.map(|t| ms_between(t0_wall, t)),
            phases,
            activity_failures,
        })
    }

    async fn workflow_state(&self, domain: &str) -> String {
        let id = burrow_workflows::certificate::workflow_id(domain);
        let runs = self
            .stack
            .call(
                Method::GET,
                "/v1/ops/workflows",
                &self.stack.creds.ops_api_key,
                None,
            )
            .await;
        match runs {
            Ok((_, Value::Array(list))) => list
                .into_iter()
                .find(|r| r["workflow_id"] == id.as_str())
                .map(|r| r.to_string())
                .unwrap_or_else(|| format!("{id} not started")),
            Ok((status, body)) => format!("/v1/ops/workflows: {status} {body}"),
            Err(e) => format!("/v1/ops/workflows: {e}"),
        }
    }

    fn keep_logs(&self, dir: &Path) {
        for p in [&self.stack.api, &self.stack.relay_proc, &self.stack.worker] {
            copy_log(&p.log, dir, &format!("{}.log", p.name));
        }
        let pebble_dir = self.stack.dir.path().join("pebble");
        copy_log(&pebble_dir.join("pebble.log"), dir, "pebble-burrow.log");
    }
}

/// One activity of a history: (scheduled event id, name, scheduled at, closed at).
type Activity = (i64, String, DateTime<Utc>, Option<DateTime<Utc>>);

/// Splits `[t0, served]` of one issuance along the workflow's history: until the workflow
/// started (the api's outbox and Temporal), each activity from scheduled to completed (queue
/// wait included), workflow tasks between them, and the rest after the last activity began
/// (the relay install showing up to the TLS client). Returns the phases and the number of
/// failed or timed-out activity attempts.
fn phases(
    history: &Value,
    t0: DateTime<Utc>,
    served: DateTime<Utc>,
) -> anyhow::Result<(Vec<Phase>, usize)> {
    let events = history["events"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("history has no events"))?;
    let mut started = None;
    let mut activities: Vec<Activity> = Vec::new();
    let mut failures = 0;
    for e in events {
        let time: DateTime<Utc> = e["event_time"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| anyhow::anyhow!("event without a time: {e}"))?;
        if time > served {
            break;
        }
        let Some((kind, attrs)) = e["attributes"].as_object().and_then(|a| a.iter().next()) else {
            continue;
        };
        let id = e["event_id"].as_i64().unwrap_or_default();
        let scheduled_id = attrs["scheduled_event_id"].as_i64().unwrap_or_default();
        match kind.as_str() {
            "WorkflowExecutionStartedEventAttributes" => started = started.or(Some(time)),
            "ActivityTaskScheduledEventAttributes" => {
                let name = attrs["activity_type"]["name"]
                    .as_str()
                    .unwrap_or("activity")
                    .to_owned();
                activities.push((id, name, time, None));
            }
            "ActivityTaskCompletedEventAttributes"
            | "ActivityTaskFailedEventAttributes"
            | "ActivityTaskTimedOutEventAttributes"
            | "ActivityTaskCanceledEventAttributes" => {
                if kind != "ActivityTaskCompletedEventAttributes" {
                    failures += 1;
                }
                if let Some(a) = activities.iter_mut().find(|a| a.0 == scheduled_id) {
                    a.3 = Some(time);
                }
            }
            _ => {}
        }
    }
    let started =
        started.ok_or_else(|| anyhow::anyhow!("no WorkflowExecutionStarted in the history"))?;
    let mut out = vec![Phase {
        name: "api outbox -> workflow started".into(),
        ms: ms_between(t0, started),
    }];
    let mut cursor = started;
    for (_, name, scheduled, closed) in activities {
        let end = closed.unwrap_or(served).min(served);
        if scheduled > cursor {
            out.push(Phase {
                name: "workflow tasks (between activities)".into(),
                ms: ms_between(cursor, scheduled),
            });
        }
        let from = scheduled.max(cursor);
        if end > from {
            out.push(Phase {
                name: format!("activity {name}"),
                ms: ms_between(from, end),
            });
            cursor = end;
        }
    }
    if served > cursor {
        out.push(Phase {
            name: "after the last activity -> TLS client sees it".into(),
            ms: ms_between(cursor, served),
        });
    }
    Ok((out, failures))
}

/// lego with its own Pebble, validating HTTP-01 on the port lego listens on.
struct LegoSide {
    dir: tempfile::TempDir,
    pebble: Pebble,
    http_port: u16,
    path: PathBuf,
}

impl LegoSide {
    async fn start() -> anyhow::Result<LegoSide> {
        let dir = tempfile::tempdir()?;
        let http_port = crate::ports::free_port();
        // TLS-ALPN-01 is not used: any port number does.
        let pebble = Pebble::start(dir.path(), http_port, 1).await?;
        let path = dir.path().join("lego");
        Ok(LegoSide {
            dir,
            pebble,
            http_port,
            path,
        })
    }

    async fn issue(&self, run: usize) -> anyhow::Result<Row> {
        let domain = fresh_domain("lego");
        let mut cmd = Command::new("lego");
        cmd.env("LEGO_CA_CERTIFICATES", self.pebble.ca_file())
            .args(["--server", &self.pebble.directory_url()])
            .args(["--email", "bench@example.com", "--accept-tos"])
            .arg("--path")
            .arg(&self.path)
            .args([
                "--http",
                "--http.port",
                &format!("127.0.0.1:{}", self.http_port),
            ])
            .args(["-d", &domain, "run"])
            .kill_on_drop(true);
        let t0 = Instant::now();
        let out = tokio::time::timeout(RUN_TIMEOUT, cmd.output())
            .await
            .with_context(|| format!("lego did not finish within {RUN_TIMEOUT:?}"))?
            .context("running /usr/bin/lego (install Debian's lego package)")?;
        let took = t0.elapsed();
        anyhow::ensure!(
            out.status.success(),
            "lego failed ({}): {}\n{}\npebble:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.pebble.output()
        );
        let crt = self.path.join("certificates").join(format!("{domain}.crt"));
        anyhow::ensure!(crt.exists(), "lego exited 0 but wrote no {}", crt.display());
        Ok(Row {
            side: "lego",
            run,
            warmup: run == 0,
            domain,
            total_ms: ms(took),
            stored_ms: None,
            phases: Vec::new(),
            activity_failures: 0,
        })
    }

    fn keep_logs(&self, dir: &Path) {
        copy_log(
            &self.dir.path().join("pebble").join("pebble.log"),
            dir,
            "pebble-lego.log",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_median_and_nearest_rank_p90() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        let s = Stats::of("x", &v).unwrap();
        assert_eq!(
            (s.median_ms, s.p90_ms, s.min_ms, s.max_ms),
            (5.5, 9.0, 1.0, 10.0)
        );
        let s = Stats::of("y", &[3.0]).unwrap();
        assert_eq!((s.median_ms, s.p90_ms), (3.0, 3.0));
        assert!(Stats::of("z", &[]).is_none());
    }

    #[test]
    fn phases_split_the_run_along_the_history() {
        let t = |ms: i64| {
            (DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z").unwrap()
                + chrono::Duration::milliseconds(ms))
            .with_timezone(&Utc)
        };
        let ev = |id: i64, at: i64, kind: &str, attrs: Value| json!({"event_id": id, "event_time": t(at).to_rfc3339(), "attributes": {kind: attrs}});
        let history = json!({"events": [
            ev(1, 500, "WorkflowExecutionStartedEventAttributes", json!({})),
            ev(5, 520, "ActivityTaskScheduledEventAttributes", json!({"activity_type": {"name": "A::place_order"}})),
            ev(7, 620, "ActivityTaskCompletedEventAttributes", json!({"scheduled_event_id": 5})),
            ev(11, 640, "ActivityTaskScheduledEventAttributes", json!({"activity_type": {"name": "D::distribute"}})),
            ev(12, 700, "ActivityTaskFailedEventAttributes", json!({"scheduled_event_id": 11})),
            ev(13, 900, "ActivityTaskScheduledEventAttributes", json!({"activity_type": {"name": "late"}})),
        ]});
        let (phases, failures) = phases(&history, t(0), t(750)).unwrap();
        let got: Vec<(&str, f64)> = phases.iter().map(|p| (p.name.as_str(), p.ms)).collect();
        assert_eq!(
            got,
            [
                ("api outbox -> workflow started", 500.0),
                ("workflow tasks (between activities)", 20.0),
                ("activity A::place_order", 100.0),
                ("workflow tasks (between activities)", 20.0),
                ("activity D::distribute", 60.0),
                ("after the last activity -> TLS client sees it", 50.0),
            ]
        );
        assert_eq!(failures, 1);
        assert_eq!(phases.iter().map(|p| p.ms).sum::<f64>(), 750.0);
    }
}
