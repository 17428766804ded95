//! `burrow-bench`: runs direct, burrow, rathole (plain and Noise) and bore side by side on
//! loopback and writes `{target, test, value, unit}` rows plus the table in
//! `docs/BENCHMARKS.md`; `burrow-bench transport` runs the transport experiment behind
//! `docs/transport.md`. `scripts/bench.sh` installs the tools and peers and calls it.
//!
//! Modules: [`runner`] (the run), [`peers`] (starting targets), [`loadgen`] (wrk, iperf3,
//! latency client), [`endpoints`] (idle endpoints), [`procs`] (child processes and /proc),
//! [`report`] (rows and markdown), [`transport`] (the link experiment), [`upstream`] (the
//! local HTTP service).

mod endpoints;
mod loadgen;
mod peers;
mod procs;
mod report;
mod runner;
mod transport;
mod upstream;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Benchmarks Burrow against direct, rathole and bore on loopback.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the benchmark and regenerates the table in the doc.
    Run(Box<RunArgs>),
    /// Runs the transport experiment (loopback TLS 1.3 pair) and regenerates docs/transport.md's table.
    Transport {
        /// Seconds each measurement counts.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// Repetitions; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Where the rows go.
        #[arg(long, default_value = "target/bench/transport.json")]
        out: PathBuf,
        /// Markdown file whose generated part is rewritten.
        #[arg(long, default_value = "docs/transport.md")]
        doc: PathBuf,
    },
    /// Regenerates the doc's table from an earlier run's results.json and machine.json.
    Table {
        /// Directory holding results.json and machine.json.
        #[arg(long, default_value = "target/bench")]
        out_dir: PathBuf,
        /// Markdown file whose generated part is rewritten.
        #[arg(long, default_value = "docs/BENCHMARKS.md")]
        doc: PathBuf,
    },
    /// Serves the 1 KiB HTTP upstream (started by `run`).
    Upstream {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Where to write `{"http": addr}` once listening.
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Directory with release `burrow-relay` and `burrow`.
    #[arg(long)]
    burrow_bin_dir: PathBuf,
    /// The `burrow-api` binary.
    #[arg(long)]
    api_bin: PathBuf,
    /// Directory with `rathole` and `bore`.
    #[arg(long)]
    peers_bin_dir: PathBuf,
    /// PostgreSQL database created for this run.
    #[arg(long)]
    database_url: String,
    /// Redis.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// First fixed port (below 32768) for peers and TCP endpoints; uses about 100 + the idle
    /// endpoint counts from here.
    #[arg(long, default_value_t = 21000)]
    port_base: u16,
    /// Seconds per load run.
    #[arg(long, default_value_t = 4)]
    secs: u64,
    /// Runs per test and target; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where results.json and machine.json go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
    /// Markdown file whose generated part is rewritten.
    #[arg(long, default_value = "docs/BENCHMARKS.md")]
    doc: PathBuf,
    /// Idle burrow endpoints (0 skips).
    #[arg(long, default_value_t = 10_000)]
    endpoints: usize,
    /// Endpoints per session in the batched variant (1 skips it). The relay's `Welcome` frame
    /// (64 KiB at most) lists every bound endpoint, which caps a session near 500 binds.
    #[arg(long, default_value_t = 200)]
    endpoints_per_session: usize,
    /// Idle rathole services (each holds ~10 sockets per side).
    #[arg(long, default_value_t = 1_000)]
    rathole_endpoints: usize,
    /// Idle bore endpoints.
    #[arg(long, default_value_t = 5_000)]
    bore_endpoints: usize,
    /// Record perf profiles of the burrow relay and agent (extra, uncounted runs).
    #[arg(long)]
    perf: bool,
    /// Only these tests (e.g. bulk_up_1,http_keepalive_50); `none` starts no target and only
    /// measures idle endpoints.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Scratch directory for logs and configs.
    #[arg(long, default_value = "target/bench/scratch")]
    scratch: PathBuf,
    /// The command line to record in the report.
    #[arg(long, default_value = "scripts/bench.sh")]
    command: String,
    /// Which burrow source was built (commit), recorded in the report.
    #[arg(long, default_value = "")]
    source: String,
    /// Merge into the results already in --out-dir (rows measured now replace theirs).
    #[arg(long)]
    merge: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Upstream { listen, addr_file } => upstream::serve(&listen, addr_file.as_deref()).await,
        Cmd::Run(a) => {
            let a = *a;
            let scratch = std::path::absolute(&a.scratch)?;
            let _ = std::fs::remove_dir_all(&scratch);
            let env = peers::Env {
                dir: scratch,
                burrow_bin_dir: a.burrow_bin_dir,
                api_bin: a.api_bin,
                peers_bin_dir: a.peers_bin_dir,
                database_url: a.database_url,
                redis_url: a.redis_url,
                repo_root: std::env::current_dir()?,
                port_base: a.port_base,
                upstream_port: 0,
                iperf_port: 0,
            };
            let opts = runner::Options {
                secs: a.secs,
                runs: a.runs.max(1),
                out_dir: a.out_dir,
                doc: a.doc,
                endpoints: a.endpoints,
                endpoints_per_session: a.endpoints_per_session,
                rathole_endpoints: a.rathole_endpoints,
                bore_endpoints: a.bore_endpoints,
                perf: a.perf,
                only: a.only,
                command: a.command,
                source: a.source,
                merge: a.merge,
            };
            let (rows, _) = runner::run(env, opts.clone()).await?;
            eprintln!(
                "burrow-bench: {} rows in {}; table regenerated in {}",
                rows.len(),
                opts.out_dir.join("results.json").display(),
                opts.doc.display()
            );
            Ok(())
        }
        Cmd::Table { out_dir, doc } => {
            let rows =
                report::rows_from_json(&std::fs::read_to_string(out_dir.join("results.json"))?)?;
            let machine: report::Machine =
                serde_json::from_str(&std::fs::read_to_string(out_dir.join("machine.json"))?)?;
            runner::regenerate_doc(&doc, &rows, &machine)
        }
        Cmd::Transport {
            secs,
            runs,
            out,
            doc,
        } => {
            let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let rows = transport::run(&transport::Options {
                secs,
                runs: runs.max(1),
            })
            .await?;
            if let Some(dir) = out.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&out, report::rows_to_json(&rows))?;
            let header = format!(
                "Generated by `burrow-bench transport --secs {secs} --runs {runs}` (median of {runs}); \
                 {} CPUs; load average at start `{}`.",
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(0),
                load.split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let md = transport::markdown(&rows, &header);
            let old = std::fs::read_to_string(&doc).unwrap_or_default();
            std::fs::write(
                &doc,
                report::replace_between(&old, report::BEGIN, report::END, &md),
            )?;
            println!("{md}");
            Ok(())
        }
    }
}
