//! The stores a stack runs against: a fresh PostgreSQL database per stack, and the Temporal
//! server (from the environment, or one started for this test binary).

use crate::{ports::free_port, procs::Proc};
use std::{sync::OnceLock, time::Duration};

pub use burrow_common::test_db::admin_database_url;

/// URL of the test Redis.
pub fn redis_url() -> String {
    std::env::var("BURROW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A database created for one stack, dropped with it.
pub struct TestDb(burrow_common::test_db::TestDatabase);

impl TestDb {
    /// Creates `burrow_e2e_<random>`.
    pub async fn create() -> anyhow::Result<TestDb> {
        Ok(TestDb(
            burrow_common::test_db::TestDatabase::create("burrow_e2e").await?,
        ))
    }
}

impl std::ops::Deref for TestDb {
    type Target = burrow_common::test_db::TestDatabase;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

struct OwnTemporal {
    address: String,
    // Kept alive for the test binary's lifetime.
    _proc: Proc,
    _dir: tempfile::TempDir,
}

static OWN_TEMPORAL: OnceLock<anyhow::Result<String>> = OnceLock::new();

/// Address (`http://host:port`) of the Temporal frontend the suite uses.
pub async fn temporal_address() -> anyhow::Result<String> {
    if let Ok(a) = std::env::var("BURROW_TEST_TEMPORAL_ADDRESS") {
        return Ok(a);
    }
    let result = OWN_TEMPORAL.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Runtime::new()?;
            let own = rt.block_on(start_temporal())?;
            let address = own.address.clone();
            // Leak the runtime and server on purpose: they must outlive every test.
            std::mem::forget(own);
            std::mem::forget(rt);
            anyhow::Ok(address)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("temporal start thread panicked"))?
    });
    match result {
        Ok(address) => Ok(address.clone()),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

/// A Temporal dev server on `port` with its SQLite file in `dir`, stopped when the returned
/// process is dropped — or, with `watch_pid`, once that process exits (for a server that lives
/// in a static and is never dropped).
pub async fn start_temporal_on(
    port: u16,
    dir: &std::path::Path,
    watch_pid: Option<u32>,
) -> anyhow::Result<Proc> {
    let server = format!(
        "temporal server start-dev --headless --ip 127.0.0.1 --log-level warn --port {port} \
         --http-port {} --metrics-port {} --db-filename {}",
        free_port(),
        free_port(),
        dir.join("temporal.db").display()
    );
    let script = match watch_pid {
        None => format!("exec {server}"),
        Some(pid) => format!(
            // Ends with the server too (so a server that fails to start is noticed at once).
            "{server} & t=$!; while kill -0 {pid} 2>/dev/null && kill -0 $t 2>/dev/null; do sleep 1; done; kill $t 2>/dev/null; wait $t; s=$?; rm -rf {}; exit $s",
            dir.display()
        ),
    };
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(script);
    let mut proc = Proc::spawn("temporal", cmd, dir)?;
    proc.wait_until(
        "temporal to accept connections",
        Duration::from_secs(60),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        },
    )
    .await?;
    Ok(proc)
}

async fn start_temporal() -> anyhow::Result<OwnTemporal> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let proc = start_temporal_on(port, dir.path(), Some(std::process::id())).await?;
    Ok(OwnTemporal {
        address: format!("http://127.0.0.1:{port}"),
        _proc: proc,
        _dir: dir,
    })
}
