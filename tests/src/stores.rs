//! The stores a stack runs against: a fresh PostgreSQL database per stack, and the Temporal
//! server (from the environment, or one started for this test binary).

use crate::{procs::Proc, wait};
use sqlx::Connection;
use std::{sync::OnceLock, time::Duration};

/// Admin URL of the test PostgreSQL.
pub fn admin_database_url() -> String {
    std::env::var("BURROW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// URL of the test Redis.
pub fn redis_url() -> String {
    std::env::var("BURROW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A database created for one stack, dropped with it.
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// URL of the database.
    pub url: String,
}

impl TestDb {
    /// Creates `burrow_e2e_<random>`.
    pub async fn create() -> anyhow::Result<TestDb> {
        let admin = admin_database_url();
        let name = format!("burrow_e2e_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(admin.clone());
        Ok(TestDb {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside async; use a private runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_database_url())
                    .await
                    .ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

struct OwnTemporal {
    address: String,
    // Kept alive for the test binary's lifetime.
    _proc: Proc,
    _dir: tempfile::TempDir,
}

static OWN_TEMPORAL: OnceLock<anyhow::Result<String>> = OnceLock::new();

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

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
            "{server} & t=$!; while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $t; wait $t; rm -rf {}",
            dir.display()
        ),
    };
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(script);
    let proc = Proc::spawn("temporal", cmd, dir)?;
    wait::until(
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
