//! `acme-bench`: certificate issuance end to end against Pebble, Burrow next to Debian's `lego`
//! (see `burrow_e2e::acme_bench` and docs/BENCHMARKS.md).
//!
//! ```sh
//! cargo build -p burrow-api -p burrow-relay -p burrow-workflows -p burrow-agent --bins
//! cargo run -p burrow-e2e --bin acme-bench -- --runs 10
//! ```

use anyhow::Context as _;
use burrow_e2e::acme_bench::{self, Options};
use std::path::PathBuf;

const USAGE: &str = "usage: acme-bench [--runs N] [--out FILE]

Times certificate issuance against Pebble: Burrow (verify -> relay serves the certificate)
next to lego (run -> certificate written), one warm-up each, then N runs per side
(default 10). Writes JSON to FILE (default target/bench/acme.json in the repository).
Needs the e2e environment (BURROW_TEST_DATABASE_URL, BURROW_TEST_REDIS_URL,
BURROW_TEST_TEMPORAL_ADDRESS), the debug binaries built, and Debian's pebble and lego.";

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .context("the crate has no parent directory")?;
    let mut opts = Options {
        runs: 10,
        out: repo.join("target").join("bench").join("acme.json"),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .with_context(|| format!("{name} needs a value\n\n{USAGE}"))
        };
        match arg.as_str() {
            "--runs" => {
                let v = value("--runs")?;
                opts.runs = v
                    .parse()
                    .with_context(|| format!("--runs {v:?} is not a number"))?;
            }
            "--out" => opts.out = PathBuf::from(value("--out")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    Ok(opts)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = parse(&args)?;
    acme_bench::run(&opts).await?;
    Ok(())
}
