//! Child processes of the suite: stdout/stderr captured to files (printed when a test fails),
//! killed when dropped.

use crate::wait;
use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};
use tokio::process::{Child, Command};

/// Path of a workspace binary built next to the running executable: a test
/// (`target/<profile>/deps/<test>`) or a bench binary of this crate (`target/<profile>/<bin>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> or target/<profile>/<bin> → target/<profile>/<name>
    let parent = exe.parent().expect("target directory layout");
    let dir = if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent().expect("target directory layout")
    } else {
        parent
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`; scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running child process.
pub struct Proc {
    /// Name used in messages.
    pub name: String,
    /// The child.
    pub child: Child,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd`, logging to `<dir>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> anyhow::Result<Proc> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        cmd.stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawning {name}: {e}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The process's output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// [`wait::until`] `check` holds, failing at once if the process exits first; an error
    /// carries the process's output.
    pub async fn wait_until<T, F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        check: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let result = tokio::select! {
            r = wait::until(what, timeout, check) => r,
            status = self.child.wait() => Err(anyhow::anyhow!(
                "{} exited ({}) before {what}",
                self.name,
                status.map_or_else(|e| e.to_string(), |s| s.to_string())
            )),
        };
        result.map_err(|e| anyhow::anyhow!("{e}; {} output:\n{}", self.name, self.output()))
    }

    /// Sends SIGTERM and waits up to `grace` for it to exit (a service shuts down cleanly:
    /// a worker tells Temporal it is gone), then SIGKILL.
    pub async fn terminate(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        self.kill().await;
    }

    /// Sends SIGKILL and waits for it to go.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} log ({}) -----\n{}",
                self.name,
                self.log.display(),
                self.output()
            );
        }
    }
}
