//! [`Agent`]: a running `burrow` agent process whose output lines can be awaited.

use std::time::Duration;
use tokio::sync::mpsc;

/// A running `burrow` agent whose output lines can be awaited.
pub struct Agent {
    /// The process.
    pub child: tokio::process::Child,
    pub(crate) lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Agent {
    /// Waits for an output line containing `needle`; returns it.
    pub async fn wait_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Ok(l.clone());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Ok(None) => anyhow::bail!(
                    "agent exited before printing {needle:?}; output: {:?}",
                    self.seen
                ),
                Err(_) => anyhow::bail!(
                    "agent did not print {needle:?} within {timeout:?}; output: {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Waits for the agent to exit and checks it exited with `code` saying `needle`.
    pub async fn expect_exit(&mut self, code: i32, needle: &str) -> anyhow::Result<String> {
        let (got, output) = self.wait_exit(Duration::from_secs(30)).await?;
        anyhow::ensure!(
            got == Some(code),
            "agent exited with {got:?}, not {code}: {output}"
        );
        anyhow::ensure!(
            output.contains(needle),
            "agent output lacks {needle:?}: {output}"
        );
        Ok(output)
    }

    /// Waits for the agent to exit; returns its exit code and all output.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<(Option<i32>, String)> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("agent still running after {timeout:?}"))??;
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(2), self.lines.recv()).await
        {
            self.seen.push(line);
        }
        Ok((status.code(), self.seen.join("\n")))
    }
}
