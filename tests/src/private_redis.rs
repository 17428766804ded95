//! A `redis-server` of one test's own, which the test may stop and start again on the same port
//! (the machine's shared Redis must never be stopped), and a minimal RESP client for reading
//! keys in assertions.

use crate::procs::Proc;
use std::{path::Path, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::Command,
};

/// A private Redis on `127.0.0.1:<port>`, without persistence: a restart comes back empty, as
/// after losing the machine.
pub struct PrivateRedis {
    port: u16,
    proc: Option<Proc>,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts one on a free port and waits until it answers `PING`.
    pub async fn start() -> anyhow::Result<PrivateRedis> {
        let port = crate::ports::free_port();
        let mut redis = PrivateRedis {
            port,
            proc: None,
            dir: tempfile::tempdir()?,
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill().await;
        }
    }

    /// Starts it (again) on the same port and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", &self.dir.path().display().to_string()]);
        let mut proc = Proc::spawn(&format!("redis-{}", self.port), cmd, self.dir.path())?;
        let addr = format!("127.0.0.1:{}", self.port);
        proc.wait_until(
            "private redis to answer PING",
            Duration::from_secs(15),
            || {
                let addr = addr.clone();
                async move {
                    (command(&addr, &["PING"]).await.ok()? == Some("PONG".into())).then_some(())
                }
            },
        )
        .await?;
        self.proc = Some(proc);
        Ok(())
    }

    /// The directory its log goes to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Sends one command to the Redis at `addr` (`host:port`, or a `redis://host:port` URL) and
/// returns its answer when it is a simple or bulk string (`None` for nil, or other kinds).
pub async fn command(addr: &str, args: &[&str]) -> anyhow::Result<Option<String>> {
    let addr = addr.trim_start_matches("redis://").trim_end_matches('/');
    let mut conn = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await??;
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Enough for the short answers assertions read: one line, or one line plus its bulk body.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut chunk)).await??;
        anyhow::ensure!(n > 0, "redis closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let Some((head, rest)) = text.split_once("\r\n") else {
            continue;
        };
        match head.as_bytes().first() {
            Some(b'+') => return Ok(Some(head[1..].to_owned())),
            Some(b'-') => anyhow::bail!("redis error: {}", &head[1..]),
            Some(b'$') => {
                let len: i64 = head[1..].parse()?;
                if len < 0 {
                    return Ok(None);
                }
                if rest.len() >= len as usize + 2 {
                    return Ok(Some(rest[..len as usize].to_owned()));
                }
            }
            _ => return Ok(None),
        }
    }
}
