//! The benchmark run: starts the shared upstreams and every target, measures idle memory,
//! runs each test on all targets in turn (test X on every target, then test Y; the target
//! order rotates between runs), charges CPU time and peak RSS of each target's relay and agent
//! to the work done, then measures idle endpoints and writes the results.

use crate::{
    endpoints, loadgen,
    peers::{self, Env, Target},
    procs::{self, Proc},
    report::{self, Machine, Row},
};
use anyhow::Context;
use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};
use tokio::process::Command;

/// Knobs of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds per load run.
    pub secs: u64,
    /// Runs per test and target (the median is reported).
    pub runs: usize,
    /// Where results.json and machine.json go.
    pub out_dir: PathBuf,
    /// The markdown file whose generated part is rewritten.
    pub doc: PathBuf,
    /// Idle burrow endpoints to open (0 skips).
    pub endpoints: usize,
    /// Endpoints per session in the batched variant.
    pub endpoints_per_session: usize,
    /// Idle rathole services to open (0 skips).
    pub rathole_endpoints: usize,
    /// Idle bore clients to open (0 skips).
    pub bore_endpoints: usize,
    /// Record a `perf` profile of the burrow relay and agent under bulk and keep-alive loads.
    pub perf: bool,
    /// Only these tests (names as in the rows); empty runs all.
    pub only: Vec<String>,
    /// The command line recorded in the report.
    pub command: String,
    /// Which burrow source was built.
    pub source: String,
    /// Merge into the results already in `out_dir`: rows measured now replace theirs, the
    /// rest (and the original run's machine description) stay.
    pub merge: bool,
}

/// `--only none` measures no load test and starts no target (idle endpoints only).
fn loads_wanted(opts: &Options) -> bool {
    !opts.only.iter().any(|o| o == "none")
}

/// Rows of `old` not re-measured in `new`, then `new`.
pub fn merge_rows(old: Vec<Row>, new: &[Row]) -> Vec<Row> {
    let mut out: Vec<Row> = old
        .into_iter()
        .filter(|o| !new.iter().any(|n| n.target == o.target && n.test == o.test))
        .collect();
    out.extend(new.iter().cloned());
    out
}

/// The tests, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// iperf3, `streams` parallel streams; `down` = service → visitor (`-R`).
    Bulk {
        /// Parallel streams.
        streams: u32,
        /// Service → visitor.
        down: bool,
    },
    /// wrk, 50 keep-alive connections, 1 KiB responses.
    KeepAlive,
    /// wrk, 50 connections, `Connection: close` on every request.
    Close,
    /// One keep-alive connection, one request at a time.
    Single,
}

impl Test {
    /// Row name of the test.
    pub fn name(self) -> String {
        match self {
            Test::Bulk { streams, down } => {
                format!("bulk_{}_{streams}", if down { "down" } else { "up" })
            }
            Test::KeepAlive => "http_keepalive_50".into(),
            Test::Close => "http_close_50".into(),
            Test::Single => "single_conn".into(),
        }
    }

    /// All tests.
    pub fn all() -> Vec<Test> {
        vec![
            Test::Bulk {
                streams: 1,
                down: false,
            },
            Test::Bulk {
                streams: 8,
                down: false,
            },
            Test::Bulk {
                streams: 1,
                down: true,
            },
            Test::Bulk {
                streams: 8,
                down: true,
            },
            Test::KeepAlive,
            Test::Close,
            Test::Single,
        ]
    }

    fn is_bulk(self) -> bool {
        matches!(self, Test::Bulk { .. })
    }
}

/// One run of one test on one target.
#[derive(Debug, Default, Clone)]
struct Sample {
    /// Headline value and named extras (`p50`, `p99`, ...).
    values: Vec<(String, f64, &'static str)>,
    /// Work done: GB moved (bulk) or thousands of requests (HTTP).
    work: f64,
    secs: f64,
    relay_cpu: f64,
    agent_cpu: f64,
    relay_peak: f64,
    agent_peak: f64,
    errors: f64,
}

/// Sum over pids (a role may have more than one process).
fn sum(pids: &[u32], f: impl Fn(u32) -> Option<f64>) -> f64 {
    pids.iter().filter_map(|p| f(*p)).sum()
}

async fn load(target: &Target, test: Test, secs: u64) -> anyhow::Result<Sample> {
    let host = peers::host_header();
    let mut s = Sample::default();
    match test {
        Test::Bulk { streams, down } => {
            let r = loadgen::iperf3(target.bulk_port, streams, down, secs).await?;
            s.values
                .push((String::new(), r.bits_per_second / 1e9, "Gbit/s"));
            s.work = r.bytes / 1e9;
            s.secs = r.secs;
        }
        Test::KeepAlive | Test::Close => {
            let close = test == Test::Close;
            let url = format!("http://{}/", target.http_addr);
            let r = loadgen::wrk(&url, &host, 50, secs, close).await?;
            let unit = if close { "conn/s" } else { "req/s" };
            s.values.push((String::new(), r.rps, unit));
            if let Some(p) = r.p50_ms {
                s.values.push(("p50".into(), p, "ms"));
            }
            if let Some(p) = r.p99_ms {
                s.values.push(("p99".into(), p, "ms"));
            }
            s.work = r.requests as f64 / 1000.0;
            s.secs = r.secs;
            s.errors = (r.socket_errors + r.non_2xx) as f64;
        }
        Test::Single => {
            let lat =
                loadgen::single_connection(&target.http_addr, &host, secs as f64, 200).await?;
            let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(f64::NAN);
            s.values
                .push(("p50".into(), ms(loadgen::percentile(&lat, 50.0)), "ms"));
            s.values
                .push(("p99".into(), ms(loadgen::percentile(&lat, 99.0)), "ms"));
            s.values
                .push(("rps".into(), lat.len() as f64 / secs as f64, "req/s"));
            s.work = lat.len() as f64 / 1000.0;
            s.secs = secs as f64;
        }
    }
    Ok(s)
}

async fn measure(target: &Target, test: Test, secs: u64) -> anyhow::Result<Sample> {
    let agent: Vec<u32> = if test.is_bulk() {
        target.tcp_agent
    } else {
        target.http_agent
    }
    .into_iter()
    .collect();
    let relay = &target.relay_pids;
    for p in relay.iter().chain(&agent) {
        procs::reset_peak(*p);
    }
    let relay_cpu0 = sum(relay, procs::cpu_secs);
    let agent_cpu0 = sum(&agent, procs::cpu_secs);
    let mut s = load(target, test, secs).await?;
    s.relay_cpu = sum(relay, procs::cpu_secs) - relay_cpu0;
    s.agent_cpu = sum(&agent, procs::cpu_secs) - agent_cpu0;
    s.relay_peak = sum(relay, procs::peak_rss_mib);
    s.agent_peak = sum(&agent, procs::peak_rss_mib);
    Ok(s)
}

/// Turns the samples of one test on one target into rows (medians; peaks are maxima).
fn rows_for(target: &str, test: Test, samples: &[Sample], tunnel: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let name = test.name();
    let mut keys: Vec<(String, &'static str)> = Vec::new();
    for s in samples {
        for (k, _, unit) in &s.values {
            if !keys.iter().any(|(kk, _)| kk == k) {
                keys.push((k.clone(), unit));
            }
        }
    }
    for (k, unit) in keys {
        let vals: Vec<f64> = samples
            .iter()
            .filter_map(|s| s.values.iter().find(|(kk, _, _)| *kk == k).map(|v| v.1))
            .collect();
        if let Some(m) = report::median(&vals) {
            let test = if k.is_empty() {
                name.clone()
            } else {
                format!("{name}.{k}")
            };
            rows.push(Row::new(target, &test, m, unit));
        }
    }
    let errors: f64 = samples.iter().map(|s| s.errors).sum();
    if errors > 0.0 {
        rows.push(Row::new(target, &format!("{name}.errors"), errors, "count"));
    }
    if !tunnel {
        return rows;
    }
    let (per, scale) = if test.is_bulk() {
        ("cpu_s/GB", 1.0)
    } else {
        ("cpu_ms/1k_req", 1000.0)
    };
    let per_work = |f: fn(&Sample) -> f64| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.work > 0.0)
            .map(|s| f(s) * scale / s.work)
            .collect();
        report::median(&v)
    };
    let util = |f: fn(&Sample) -> f64| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.secs > 0.0)
            .map(|s| f(s) / s.secs)
            .collect();
        report::median(&v)
    };
    let max = |f: fn(&Sample) -> f64| {
        samples
            .iter()
            .map(f)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let extra: [(&str, Option<f64>, &str); 6] = [
        ("relay_cpu", per_work(|s| s.relay_cpu), per),
        ("agent_cpu", per_work(|s| s.agent_cpu), per),
        ("relay_util", util(|s| s.relay_cpu), "cores"),
        ("agent_util", util(|s| s.agent_cpu), "cores"),
        ("relay_peak_rss", max(|s| s.relay_peak), "MiB"),
        ("agent_peak_rss", max(|s| s.agent_peak), "MiB"),
    ];
    for (k, v, unit) in extra {
        if let Some(v) = v {
            rows.push(Row::new(target, &format!("{name}.{k}"), v, unit));
        }
    }
    rows
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn loadavg() -> String {
    read_trim("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine_start(opts: &Options) -> Machine {
    let cpuinfo = read_trim("/proc/cpuinfo");
    Machine {
        command: opts.command.clone(),
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into()),
        kernel: read_trim("/proc/sys/kernel/osrelease"),
        loadavg_start: loadavg(),
        runs: opts.runs,
        secs: opts.secs,
        ..Default::default()
    }
}

/// Runs everything; returns the rows and the machine description (also written to
/// `out_dir` and into the doc).
pub async fn run(mut env: Env, opts: Options) -> anyhow::Result<(Vec<Row>, Machine)> {
    let mut machine = machine_start(&opts);
    machine.started = utc_now().await;
    std::fs::create_dir_all(&env.dir)?;
    std::fs::create_dir_all(&opts.out_dir)?;
    eprintln!(
        "burrow-bench: load average at start {}; scratch dir {}",
        machine.loadavg_start,
        env.dir.display()
    );
    let mut rows: Vec<Row> = Vec::new();

    // Shared local services.
    let exe = std::env::current_exe()?;
    let up_file = env.dir.join("upstream.json");
    let mut up_cmd = Command::new(&exe);
    up_cmd
        .args(["upstream", "--listen", "127.0.0.1:0", "--addr-file"])
        .arg(&up_file);
    let mut upstream = Proc::spawn("upstream", up_cmd, &env.dir)?;
    let a = procs::read_addr_file(&up_file, &mut upstream, Duration::from_secs(10)).await?;
    env.upstream_port = a["http"]
        .as_str()
        .and_then(|s| s.rsplit_once(':')?.1.parse().ok())
        .context("upstream addr")?;
    env.iperf_port = env.port_base + 50;
    peers::ensure_free(env.iperf_port)?;
    let mut iperf_cmd = Command::new("iperf3");
    iperf_cmd.args([
        "-s",
        "-p",
        &env.iperf_port.to_string(),
        "--bind",
        "127.0.0.1",
    ]);
    let mut iperf = Proc::spawn("iperf3-server", iperf_cmd, &env.dir)?;
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !peers::is_listening(env.iperf_port) {
            iperf.check_alive()?;
            anyhow::ensure!(Instant::now() < deadline, "iperf3 -s did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    machine.versions = vec![
        peers::version(&env.peers_bin_dir.join("rathole")).await,
        peers::version(&env.peers_bin_dir.join("bore")).await,
        format!(
            "{}{}",
            peers::version(&env.burrow_bin_dir.join("burrow")).await,
            if opts.source.is_empty() {
                String::new()
            } else {
                format!(" ({})", opts.source)
            }
        ),
        first_line(Command::new("iperf3").arg("--version")).await,
        first_line(Command::new("wrk").arg("--version")).await,
    ];

    eprintln!("burrow-bench: starting burrow-api");
    let api = peers::start_api(&env).await?;
    let keys = peers::rathole_keys(&env).await;

    let mut targets: Vec<Target> = Vec::new();
    let names: &[&str] = if loads_wanted(&opts) {
        targets.push(peers::direct(&env));
        &[
            "burrow",
            "burrow-policy",
            "rathole",
            "rathole-noise",
            "bore",
        ]
    } else {
        &[]
    };
    for &name in names {
        eprintln!("burrow-bench: starting {name}");
        let started = match name {
            "burrow" => peers::burrow(&env, &api).await,
            "burrow-policy" => peers::burrow_policy(&env, &api).await,
            "rathole" => peers::rathole(&env, None).await,
            "rathole-noise" => match &keys {
                Ok(k) => peers::rathole(&env, Some(k)).await,
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
            },
            _ => peers::bore(&env).await,
        };
        match started {
            Ok(t) => targets.push(t),
            Err(e) => {
                eprintln!("burrow-bench: {name} did not start: {e:#}");
                machine.notes.push(format!(
                    "{name} did not start, so it has no numbers: {}",
                    one_line(&format!("{e:#}"))
                ));
            }
        }
    }

    // Idle memory, shortly after start.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in targets.iter().filter(|t| !t.relay_pids.is_empty()) {
        rows.push(Row::new(
            t.name,
            "idle.relay_rss",
            sum(&t.relay_pids, procs::rss_mib),
            "MiB",
        ));
        if let Some(a) = t.http_agent {
            rows.push(Row::new(
                t.name,
                "idle.agent_rss",
                procs::rss_mib(a).unwrap_or(0.0),
                "MiB",
            ));
        }
    }

    let tests: Vec<Test> = Test::all()
        .into_iter()
        .filter(|t| opts.only.is_empty() || opts.only.iter().any(|o| *o == t.name()))
        .collect();
    let started = Instant::now();
    for test in &tests {
        let mut samples: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
        for run in 0..opts.runs {
            let n = targets.len();
            for i in 0..n {
                // Rotate the order between runs so no target always follows the same one.
                let t = &mut targets[(i + run) % n];
                // The policy target only differs from `burrow` on HTTP.
                if t.name == "burrow-policy" && matches!(test, Test::Bulk { .. }) {
                    continue;
                }
                if let Err(e) = t.check_alive() {
                    let note = format!(
                        "{}: a process died before {}: {}",
                        t.name,
                        test.name(),
                        one_line(&format!("{e:#}"))
                    );
                    if !machine
                        .notes
                        .iter()
                        .any(|n| n.starts_with(&format!("{}: a process died", t.name)))
                    {
                        eprintln!("burrow-bench: {note}");
                        machine.notes.push(note);
                    }
                    continue;
                }
                let mut result = measure(t, *test, opts.secs).await;
                if result.is_err() {
                    // One retry: a tunnel's data channel may still have been coming up.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    result = measure(t, *test, opts.secs).await;
                }
                match result {
                    Ok(s) => {
                        eprintln!(
                            "burrow-bench: [{:>4.0}s] {} run {} {}: {}",
                            started.elapsed().as_secs_f64(),
                            test.name(),
                            run + 1,
                            t.name,
                            s.values
                                .iter()
                                .map(|(k, v, u)| format!(
                                    "{k}{}{} {u}",
                                    if k.is_empty() { "" } else { " " },
                                    report::fmt_num(*v)
                                ))
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                        samples.entry(t.name).or_default().push(s);
                    }
                    Err(e) => {
                        let note = format!(
                            "{} run {} on {} failed: {e:#}",
                            test.name(),
                            run + 1,
                            t.name
                        );
                        eprintln!("burrow-bench: {note}");
                        machine
                            .notes
                            .push(note.lines().next().unwrap_or("").to_owned());
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        for t in &targets {
            if let Some(s) = samples.get(t.name) {
                rows.extend(rows_for(t.name, *test, s, !t.relay_pids.is_empty()));
            }
        }
        // Keep partial results on disk as the run goes.
        write_outputs(&opts, &rows, &machine)?;
    }

    if opts.perf
        && let Some(t) = targets.iter().find(|t| t.name == "burrow")
        && let Err(e) = profile(t, &opts).await
    {
        machine.notes.push(format!("perf profile failed: {e:#}"));
    }

    for t in targets {
        t.stop().await;
    }

    if opts.endpoints > 0 {
        eprintln!(
            "burrow-bench: {} idle burrow endpoints, one session each",
            opts.endpoints
        );
        match endpoints::burrow(&env, &api, opts.endpoints, 1, "endpoints").await {
            Ok(r) => rows.extend(r),
            Err(e) => machine.notes.push(format!("burrow idle endpoints: {e:#}")),
        }
        if opts.endpoints_per_session > 1 {
            eprintln!(
                "burrow-bench: {} idle burrow endpoints, {} per session",
                opts.endpoints, opts.endpoints_per_session
            );
            match endpoints::burrow(
                &env,
                &api,
                opts.endpoints,
                opts.endpoints_per_session,
                "endpoints_batched",
            )
            .await
            {
                Ok(r) => rows.extend(r),
                Err(e) => machine
                    .notes
                    .push(format!("burrow batched idle endpoints: {e:#}")),
            }
        }
    }
    if opts.rathole_endpoints > 0 {
        eprintln!(
            "burrow-bench: {} idle rathole services",
            opts.rathole_endpoints
        );
        match endpoints::rathole(&env, opts.rathole_endpoints).await {
            Ok(r) => rows.extend(r),
            Err(e) => machine.notes.push(format!("rathole idle endpoints: {e:#}")),
        }
    }
    if opts.bore_endpoints > 0 {
        eprintln!("burrow-bench: {} idle bore clients", opts.bore_endpoints);
        match endpoints::bore(&env, opts.bore_endpoints).await {
            Ok(r) => rows.extend(r),
            Err(e) => machine.notes.push(format!("bore idle endpoints: {e:#}")),
        }
    }

    api.proc.stop().await;
    iperf.stop().await;
    upstream.stop().await;
    machine.loadavg_end = loadavg();
    if opts.merge {
        let dir = &opts.out_dir;
        let old_rows = std::fs::read_to_string(dir.join("results.json"))
            .ok()
            .and_then(|t| report::rows_from_json(&t).ok())
            .unwrap_or_default();
        if let Some(mut old) = std::fs::read_to_string(dir.join("machine.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Machine>(&t).ok())
        {
            let endpoints_now = opts.endpoints + opts.rathole_endpoints + opts.bore_endpoints > 0;
            old.notes
                .retain(|n| !(endpoints_now && n.contains("idle endpoints")));
            old.notes.extend(machine.notes.iter().cloned());
            old.notes.push(format!(
                "{} rows re-measured {} with `{}` (load average `{}` → `{}`) and merged into this run",
                rows.len(),
                machine.started,
                opts.command,
                machine.loadavg_start,
                machine.loadavg_end
            ));
            machine = old;
        }
        rows = merge_rows(old_rows, &rows);
    }
    write_outputs(&opts, &rows, &machine)?;
    Ok((rows, machine))
}

/// The first informative line of an error (a panic message rather than a backtrace frame),
/// at most 240 characters, for the notes in the report.
pub fn one_line(text: &str) -> String {
    let mut parts = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("---") && !l.starts_with("at "));
    let first = parts.next().unwrap_or("").to_owned();
    let panic = text
        .lines()
        .skip_while(|l| !l.contains("panicked at"))
        .nth(1)
        .map(str::trim)
        .filter(|l| !l.is_empty());
    let line = match panic {
        Some(p) => format!("{first} (panic: {p})"),
        None => first,
    };
    line.chars().take(240).collect()
}

async fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .await
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// Writes results.json and machine.json to the output dir and regenerates the doc.
pub fn write_outputs(opts: &Options, rows: &[Row], machine: &Machine) -> anyhow::Result<()> {
    std::fs::write(
        opts.out_dir.join("results.json"),
        report::rows_to_json(rows),
    )?;
    std::fs::write(
        opts.out_dir.join("machine.json"),
        serde_json::to_string_pretty(machine)?,
    )?;
    regenerate_doc(&opts.doc, rows, machine)
}

/// Rewrites the generated part of `doc` from `rows`.
pub fn regenerate_doc(
    doc: &std::path::Path,
    rows: &[Row],
    machine: &Machine,
) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(doc).unwrap_or_default();
    let new = report::replace_between(
        &old,
        report::BEGIN,
        report::END,
        &report::markdown(rows, machine),
    );
    std::fs::write(doc, new).with_context(|| format!("writing {}", doc.display()))
}

/// Records `perf` profiles of the burrow relay and agent under single-stream bulk and
/// keep-alive loads (extra runs, not counted), into `<out_dir>/perf-*.txt`.
async fn profile(t: &Target, opts: &Options) -> anyhow::Result<()> {
    let plan = [
        (
            Test::Bulk {
                streams: 1,
                down: false,
            },
            "bulk_up_1",
        ),
        (Test::KeepAlive, "http_keepalive_50"),
    ];
    for (test, name) in plan {
        let agent = if test.is_bulk() {
            t.tcp_agent
        } else {
            t.http_agent
        };
        let mut recs = Vec::new();
        for (role, pid) in [("relay", t.relay_pids.first().copied()), ("agent", agent)] {
            let Some(pid) = pid else { continue };
            let data = opts.out_dir.join(format!("perf-{name}-{role}.data"));
            let mut cmd = Command::new("perf");
            cmd.args([
                "record",
                "-e",
                "cpu-clock",
                "-F",
                "499",
                "-g",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(&data)
            .args(["--", "sleep", &opts.secs.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
            recs.push((role, data, cmd.spawn().context("starting perf record")?));
        }
        let _ = load(t, test, opts.secs).await;
        for (role, data, mut child) in recs {
            let _ = child.wait().await;
            let mut report = Vec::new();
            for sort in [&["--sort", "dso"][..], &["--sort", "dso,sym"][..]] {
                let out = Command::new("perf")
                    .args(["report", "--stdio", "--no-children", "-g", "none"])
                    .args(sort)
                    .args(["--percent-limit", "0.7", "-i"])
                    .arg(&data)
                    .output()
                    .await?;
                report.extend_from_slice(&out.stdout);
            }
            std::fs::write(
                opts.out_dir.join(format!("perf-{name}-{role}.txt")),
                &report,
            )?;
            let _ = std::fs::remove_file(&data);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(v: f64, work: f64, relay_cpu: f64, peak: f64) -> Sample {
        Sample {
            values: vec![(String::new(), v, "Gbit/s"), ("p50".into(), v / 10.0, "ms")],
            work,
            secs: 4.0,
            relay_cpu,
            agent_cpu: relay_cpu / 2.0,
            relay_peak: peak,
            agent_peak: peak / 2.0,
            errors: 0.0,
        }
    }

    #[test]
    fn samples_become_median_rows_and_max_peaks() {
        let test = Test::Bulk {
            streams: 1,
            down: false,
        };
        let rows = rows_for(
            "burrow",
            test,
            &[
                sample(5.0, 2.0, 1.0, 10.0),
                sample(7.0, 2.0, 2.0, 30.0),
                sample(6.0, 2.0, 3.0, 20.0),
            ],
            true,
        );
        let get = |t: &str| {
            rows.iter()
                .find(|r| r.test == t)
                .map(|r| (r.value, r.unit.clone()))
        };
        assert_eq!(get("bulk_up_1"), Some((6.0, "Gbit/s".into())));
        assert_eq!(get("bulk_up_1.p50"), Some((0.6, "ms".into())));
        assert_eq!(get("bulk_up_1.relay_cpu"), Some((1.0, "cpu_s/GB".into())));
        assert_eq!(get("bulk_up_1.relay_util"), Some((0.5, "cores".into())));
        assert_eq!(get("bulk_up_1.relay_peak_rss"), Some((30.0, "MiB".into())));
        assert_eq!(get("bulk_up_1.agent_peak_rss"), Some((15.0, "MiB".into())));
        let direct = rows_for("direct", test, &[sample(9.0, 2.0, 0.0, 0.0)], false);
        assert_eq!(direct.len(), 2);
    }

    #[test]
    fn merging_replaces_only_re_measured_rows() {
        let old = vec![
            Row::new("burrow", "bulk_up_1", 1.0, "Gbit/s"),
            Row::new("burrow", "endpoints.count", 1.0, "endpoints"),
        ];
        let new = [Row::new("burrow", "endpoints.count", 2.0, "endpoints")];
        assert_eq!(
            merge_rows(old, &new),
            vec![
                Row::new("burrow", "bulk_up_1", 1.0, "Gbit/s"),
                Row::new("burrow", "endpoints.count", 2.0, "endpoints"),
            ]
        );
    }

    #[test]
    fn notes_are_one_informative_line() {
        let e = "burrow-agent-http exited (exit status: 101)\n--- out\n\n--- err\nthread 'main' panicked at x.rs:1:\nALPN protocols should not be pre-defined\n  0: frame";
        assert_eq!(
            one_line(e),
            "burrow-agent-http exited (exit status: 101) (panic: ALPN protocols should not be pre-defined)"
        );
        assert_eq!(one_line("a\nb"), "a");
        assert_eq!(one_line(&"x".repeat(500)).len(), 240);
    }

    #[test]
    fn test_names_match_the_report() {
        let names: Vec<String> = Test::all().into_iter().map(Test::name).collect();
        assert_eq!(
            names,
            [
                "bulk_up_1",
                "bulk_up_8",
                "bulk_down_1",
                "bulk_down_8",
                "http_keepalive_50",
                "http_close_50",
                "single_conn"
            ]
        );
    }
}
