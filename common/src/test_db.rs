//! Test support (feature `test-db`): a fresh PostgreSQL database per test, dropped with the
//! value. The admin URL comes from `BURROW_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, what `scripts/test.sh` exports).

use sqlx::Connection;

/// Admin URL of the test PostgreSQL.
pub fn admin_database_url() -> String {
    std::env::var("BURROW_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test, dropped (forcibly) when this value is.
pub struct TestDatabase {
    /// Database name.
    pub name: String,
    /// URL of the database.
    pub url: String,
}

impl TestDatabase {
    /// Creates `<prefix>_<random>` on the test PostgreSQL.
    pub async fn create(prefix: &str) -> Result<TestDatabase, sqlx::Error> {
        let admin = admin_database_url();
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await?;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(admin.clone());
        Ok(TestDatabase {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl Drop for TestDatabase {
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
