//! Load generators: `wrk` and `iperf3` runs with parsers for their output, and a small
//! single-connection HTTP/1.1 keep-alive client that measures per-request latency.
//!
//! The parsers ([`parse_wrk`], [`parse_iperf3`]) take arbitrary text and never panic: a tool
//! that printed something unexpected yields an error naming what was missing.

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// What one `wrk --latency` run reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkResult {
    /// Requests completed.
    pub requests: u64,
    /// Seconds the run lasted.
    pub secs: f64,
    /// `Requests/sec`.
    pub rps: f64,
    /// Latency percentiles in milliseconds (50, 75, 90, 99), when printed.
    pub p50_ms: Option<f64>,
    /// 75th percentile.
    pub p75_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Sum of `Socket errors: connect, read, write, timeout`.
    pub socket_errors: u64,
    /// `Non-2xx or 3xx responses`.
    pub non_2xx: u64,
}

/// Parses a wrk duration such as `2.51ms`, `812.00us`, `1.02s` or `1.50m` into milliseconds.
pub fn parse_wrk_time_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    let v = n * factor;
    v.is_finite().then_some(v)
}

/// Parses wrk's `--latency` text report.
pub fn parse_wrk(text: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut saw_rps = false;
    let mut saw_requests = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Requests/sec:") {
            r.rps = rest
                .trim()
                .parse()
                .context("Requests/sec is not a number")?;
            saw_rps = true;
        } else if let Some((count, rest)) = t.split_once(" requests in ") {
            // `75460 requests in 4.00s, 86.21MB read`
            if let (Ok(n), Some(dur)) = (count.trim().parse::<u64>(), rest.split(',').next()) {
                r.requests = n;
                r.secs = parse_wrk_time_ms(dur).map(|ms| ms / 1000.0).unwrap_or(0.0);
                saw_requests = true;
            }
        } else if let Some(rest) = t.strip_prefix("Socket errors:") {
            r.socket_errors = rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(rest) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = rest.trim().parse().unwrap_or(0);
        } else if let Some((pct, time)) = t.split_once('%') {
            let slot = match pct.trim() {
                "50" => &mut r.p50_ms,
                "75" => &mut r.p75_ms,
                "90" => &mut r.p90_ms,
                "99" => &mut r.p99_ms,
                _ => continue,
            };
            if let Some(ms) = parse_wrk_time_ms(time) {
                *slot = Some(ms);
            }
        }
    }
    if !saw_rps || !r.rps.is_finite() {
        bail!("wrk printed no Requests/sec line");
    }
    if !saw_requests {
        bail!("wrk printed no `N requests in` line");
    }
    Ok(r)
}

/// What one `iperf3 -J` client run reported (receiver side totals).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IperfResult {
    /// Bytes the receiver got.
    pub bytes: f64,
    /// Seconds measured.
    pub secs: f64,
    /// Receiver throughput, bits per second.
    pub bits_per_second: f64,
}

/// Parses `iperf3 -J` output: `end.sum_received`, or the `error` iperf3 reported.
pub fn parse_iperf3(text: &str) -> anyhow::Result<IperfResult> {
    let v: serde_json::Value = serde_json::from_str(text).context("iperf3 output is not JSON")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {e}");
    }
    let sum = v
        .get("end")
        .and_then(|e| e.get("sum_received"))
        .context("iperf3 output has no end.sum_received")?;
    let num = |k: &str| {
        sum.get(k)
            .and_then(|x| x.as_f64())
            .filter(|x| x.is_finite())
            .with_context(|| format!("iperf3 end.sum_received.{k} missing"))
    };
    Ok(IperfResult {
        bytes: num("bytes")?,
        secs: num("seconds")?,
        bits_per_second: num("bits_per_second")?,
    })
}

/// Runs wrk against `url` with `Host: host`: `conns` connections for `secs` seconds;
/// `close` adds `Connection: close` so every request opens a new connection.
pub async fn wrk(
    url: &str,
    host: &str,
    conns: u32,
    secs: u64,
    close: bool,
) -> anyhow::Result<WrkResult> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t", "2", "-c", &conns.to_string()])
        .args(["-d", &format!("{secs}s"), "--latency", "--timeout", "5s"])
        .args(["-H", &format!("Host: {host}")]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url);
    let out = run_tool(cmd, secs + 30).await.context("running wrk")?;
    parse_wrk(&out).with_context(|| format!("wrk output:\n{out}"))
}

/// Runs an iperf3 client to `127.0.0.1:port`: `streams` parallel streams for `secs` seconds;
/// `reverse` makes the server send (service → visitor).
pub async fn iperf3(
    port: u16,
    streams: u32,
    reverse: bool,
    secs: u64,
) -> anyhow::Result<IperfResult> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", "127.0.0.1", "-p", &port.to_string(), "-J"])
        .args(["-t", &secs.to_string(), "-P", &streams.to_string()])
        .args(["--connect-timeout", "3000"]);
    if reverse {
        cmd.arg("-R");
    }
    let out = run_tool(cmd, secs + 30).await.context("running iperf3")?;
    parse_iperf3(&out)
}

async fn run_tool(mut cmd: Command, timeout_secs: u64) -> anyhow::Result<String> {
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(timeout_secs), cmd.output())
        .await
        .context("timed out")??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if stdout.trim().is_empty() {
        bail!(
            "no output (status {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// One GET of `path` on a fresh connection to `addr` with `Host: host`; returns the status.
pub async fn http_get(addr: &str, host: &str, path: &str) -> anyhow::Result<u16> {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        let conn = tokio::spawn(conn);
        let req = http::Request::get(path)
            .header(http::header::HOST, host)
            .body(Empty::<bytes::Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        conn.abort();
        anyhow::Ok(status)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .context("timed out")?
}

/// [`http_get`] of `/`.
pub async fn http_status(addr: &str, host: &str) -> anyhow::Result<u16> {
    http_get(addr, host, "/").await
}

/// The `p`-th percentile (0–100, nearest rank) of ascending `sorted`.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Sends GET requests one after another on one keep-alive HTTP/1.1 connection to `addr`
/// (with `Host: host`) for `secs` seconds after `warmup` requests; returns each request's
/// latency, ascending.
pub async fn single_connection(
    addr: &str,
    host: &str,
    secs: f64,
    warmup: usize,
) -> anyhow::Result<Vec<Duration>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    let conn = tokio::spawn(conn);
    let mut latencies = Vec::new();
    let warmup_deadline = Instant::now() + Duration::from_secs(30);
    let mut done = 0usize;
    let mut measuring_until = None;
    loop {
        let req = http::Request::get("/")
            .header(http::header::HOST, host)
            .body(Empty::<bytes::Bytes>::new())?;
        sender.ready().await?;
        let start = Instant::now();
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        let took = start.elapsed();
        if !status.is_success() {
            bail!("single connection: status {status}");
        }
        done += 1;
        if done > warmup {
            let until = *measuring_until
                .get_or_insert_with(|| Instant::now() + Duration::from_secs_f64(secs));
            latencies.push(took);
            if Instant::now() >= until {
                break;
            }
        } else if Instant::now() >= warmup_deadline {
            bail!("single connection: warm-up did not finish in 30 s");
        }
    }
    conn.abort();
    latencies.sort();
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const WRK: &str = "Running 4s test @ http://127.0.0.1:8080/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.66ms    1.04ms  25.28ms   87.64%
    Req/Sec     9.48k     0.98k   11.43k    72.50%
  Latency Distribution
     50%  812.00us
     75%    2.93ms
     90%    3.49ms
     99%    1.02s
  75460 requests in 4.00s, 86.21MB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:  18857.91
Transfer/sec:     21.54MB
";

    #[test]
    fn wrk_report() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 75460);
        assert!((r.secs - 4.0).abs() < 1e-9);
        assert!((r.rps - 18857.91).abs() < 1e-9);
        assert_eq!(r.p50_ms, Some(0.812));
        assert_eq!(r.p75_ms, Some(2.93));
        assert_eq!(r.p99_ms, Some(1020.0));
        assert_eq!(r.socket_errors, 6);
        assert_eq!(r.non_2xx, 5);
    }

    #[test]
    fn wrk_without_errors_lines_and_failures() {
        let short = "  10 requests in 1.00s, 1KB read\nRequests/sec: 10.00\n";
        let r = parse_wrk(short).unwrap();
        assert_eq!((r.requests, r.socket_errors, r.p50_ms), (10, 0, None));
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused").is_err());
        assert!(parse_wrk("Requests/sec: abc\n").is_err());
    }

    #[test]
    fn wrk_times() {
        assert_eq!(parse_wrk_time_ms("2.51ms"), Some(2.51));
        assert_eq!(parse_wrk_time_ms("1.50m"), Some(90_000.0));
        assert_eq!(parse_wrk_time_ms("5"), None);
        assert_eq!(parse_wrk_time_ms("5xs"), None);
    }

    #[test]
    fn iperf3_report() {
        let json = r#"{"start":{},"intervals":[],"end":{"sum_sent":{"bytes":2,"seconds":4,"bits_per_second":4},
            "sum_received":{"start":0,"end":4.0,"seconds":4.0,"bytes":2500000000,"bits_per_second":5.0e9}}}"#;
        let r = parse_iperf3(json).unwrap();
        assert_eq!(r.bytes, 2.5e9);
        assert_eq!(r.secs, 4.0);
        assert_eq!(r.bits_per_second, 5.0e9);
        let err = parse_iperf3(r#"{"start":{},"end":{},"error":"unable to connect to server"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unable to connect"), "{err}");
        assert!(parse_iperf3("{}").is_err());
        assert!(parse_iperf3("iperf3: error").is_err());
    }

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = parse_wrk(&text);
            let _ = parse_iperf3(&text);
            let _ = parse_wrk_time_ms(&text);
        }

        #[test]
        fn parsers_never_panic_on_wrk_like_lines(
            lines in proptest::collection::vec(
                prop_oneof![
                    "Requests/sec: \\PC{0,12}",
                    "\\PC{0,8} requests in \\PC{0,12}",
                    "Socket errors: \\PC{0,30}",
                    "[0-9]{0,3}% \\PC{0,10}",
                    "Non-2xx or 3xx responses: \\PC{0,8}",
                ],
                0..12,
            )
        ) {
            let _ = parse_wrk(&lines.join("\n"));
        }

        #[test]
        fn parsers_never_panic_on_json_shapes(bytes in "\\{\"end\":\\{\"sum_received\":\\{\\PC{0,60}\\}\\}\\}") {
            let _ = parse_iperf3(&bytes);
        }
    }
}
