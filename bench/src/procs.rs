//! Child processes of the bench (tunnel relays and agents, upstreams) and what /proc says about
//! them: CPU time (`utime + stime` from `/proc/<pid>/stat`), current RSS (`VmRSS`) and peak RSS
//! (`VmHWM`, reset between loads through `/proc/<pid>/clear_refs`).

use anyhow::{Context, bail};
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};

/// A process the bench started; killed when dropped. Its stdout and stderr go to
/// `<dir>/<name>.out` and `<dir>/<name>.err`.
pub struct Proc {
    /// Name used for its log files and in errors.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    /// Starts `cmd`, sending its output to files under `dir`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> anyhow::Result<Proc> {
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        let pid = child.id().context("child has no pid")?;
        Ok(Proc {
            name: name.to_owned(),
            pid,
            child,
            out,
            err,
        })
    }

    /// The end of its stderr and stdout, for error messages.
    pub fn output_tail(&self) -> String {
        let tail = |p: &Path| {
            let t = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        format!(
            "--- {} stdout\n{}\n--- {} stderr\n{}",
            self.name,
            tail(&self.out),
            self.name,
            tail(&self.err)
        )
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status})\n{}", self.name, self.output_tail());
        }
        Ok(())
    }

    /// Waits until a stdout or stderr line contains `needle`; returns that line.
    pub async fn wait_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            for p in [&self.out, &self.err] {
                let text = std::fs::read_to_string(p).unwrap_or_default();
                if let Some(l) = text.lines().find(|l| l.contains(needle)) {
                    return Ok(l.to_owned());
                }
            }
            self.check_alive()?;
            if Instant::now() >= deadline {
                bail!(
                    "{} printed no line with {needle:?} within {timeout:?}\n{}",
                    self.name,
                    self.output_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it and waits for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Reads a JSON address file a process writes once listening (`*_ADDR_FILE`).
pub async fn read_addr_file(
    path: &Path,
    proc: &mut Proc,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(t) = std::fs::read_to_string(path)
            && let Ok(v) = serde_json::from_str(&t)
        {
            return Ok(v);
        }
        proc.check_alive()?;
        if Instant::now() >= deadline {
            bail!("{} did not write {}", proc.name, path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `utime + stime` (clock ticks) from the text of `/proc/<pid>/stat`. The command name in
/// parentheses may itself hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    utime.checked_add(stime)
}

/// A `kB` value (`VmRSS`, `VmHWM`, ...) from the text of `/proc/<pid>/status`.
pub fn parse_status_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k != key {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system, all threads) `pid` has used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_stat_ticks(&text)? as f64 / clk_tck())
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&text, key)
}

/// Current resident set size of `pid`, MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS").map(|k| k as f64 / 1024.0)
}

/// Peak resident set size of `pid` since start or the last [`reset_peak`], MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmHWM").map(|k| k as f64 / 1024.0)
}

/// Resets `pid`'s peak RSS to its current RSS (`echo 5 > /proc/<pid>/clear_refs`); false when
/// the kernel refused (then the peak covers the process lifetime).
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stat_ticks_count_fields_after_the_command_name() {
        let text =
            "1234 (burrow (x) relay) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_stat_ticks(text), Some(325));
        assert_eq!(parse_stat_ticks("1 (a) S 1 2"), None);
        assert_eq!(parse_stat_ticks("no parenthesis"), None);
    }

    #[test]
    fn status_values() {
        let text = "Name:\tburrow-relay\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(text, "VmRSS"), Some(10240));
        assert_eq!(parse_status_kib(text, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(text, "VmSwap"), None);
    }

    #[test]
    fn this_process_is_visible_in_proc() {
        let pid = std::process::id();
        assert!(cpu_secs(pid).is_some());
        assert!(rss_mib(pid).unwrap() > 0.0);
        assert!(peak_rss_mib(pid).unwrap() >= rss_mib(pid).unwrap() - 1.0);
    }

    proptest! {
        #[test]
        fn proc_parsers_never_panic(text in "\\PC{0,300}", key in "[A-Za-z]{0,8}") {
            let _ = parse_stat_ticks(&text);
            let _ = parse_status_kib(&text, &key);
        }
    }
}
