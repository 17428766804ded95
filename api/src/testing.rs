//! Test support: a fresh PostgreSQL database per test (migrated), an [`AppState`] on it whose
//! Temporal address answers nothing (every Temporal call is a 503), and API key actors.
//!
//! The admin URL comes from `BURROW_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, what `scripts/test.sh` exports).

use crate::{
    ApiConfig, AppState,
    audit::Actor,
    auth::{Principal, Role},
    error::ApiError,
};
use burrow_common::Secret;
use burrow_common::test_db::{TestDatabase, admin_database_url};
use std::sync::Arc;
use uuid::Uuid;

/// A migrated database, dropped with this value.
pub struct TestDb {
    /// The api's state on it.
    pub state: AppState,
    /// Declared last: the pool above closes before the database is dropped.
    _db: TestDatabase,
}

impl TestDb {
    /// Creates `burrow_api_test_<random>` and an [`AppState`] on it, with `config` (its
    /// `database_url` and `temporal_address` are replaced).
    pub async fn with(config: ApiConfig) -> TestDb {
        let test_db = TestDatabase::create("burrow_api_test")
            .await
            .unwrap_or_else(|e| panic!("test PostgreSQL at {}: {e}", admin_database_url()));
        let db = crate::connect_db(&test_db.url)
            .await
            .expect("migrate the test database");
        // Nothing listens on port 1: every Temporal call fails fast as unavailable.
        let temporal_address = "http://127.0.0.1:1".to_owned();
        let redis = Arc::new(burrow_common::redis_link::RedisLink::new(""));
        let state = AppState {
            db,
            temporal: Arc::new(crate::temporal::Temporal::new(
                &temporal_address,
                "default",
                "burrow",
            )),
            relays: Arc::new(crate::relays::Relays::new(
                burrow_proto::directory::RelayDirectory::new(redis.clone(), "test:", "k"),
            )),
            redis,
            config: Arc::new(ApiConfig {
                temporal_address,
                ..config
            }),
        };
        TestDb {
            state,
            _db: test_db,
        }
    }

    /// [`TestDb::with`] the default test configuration.
    pub async fn new() -> TestDb {
        Self::with(config()).await
    }

    /// An account (on the free plan).
    pub async fn account(&self) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query("INSERT INTO accounts (id, name) VALUES ($1, 'test')")
            .bind(id)
            .execute(&self.state.db)
            .await
            .expect("insert account");
        id
    }

    /// An actor holding a new API key of `role` (of `account_id`).
    pub async fn actor(&self, role: Role, account_id: Option<Uuid>) -> Actor {
        let key_id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, role, key_hash) VALUES ($1, $2, $3, $4)",
        )
        .bind(key_id)
        .bind(account_id)
        .bind(role.as_str())
        .bind(format!("hash-{key_id}"))
        .execute(&self.state.db)
        .await
        .expect("insert api key");
        Actor {
            principal: Principal {
                key_id,
                account_id,
                role,
                user_id: None,
            },
            source_ip: None,
        }
    }

    /// Audit rows of `action`: (outcome, target).
    pub async fn audited(&self, action: &str) -> Vec<(String, Option<String>)> {
        sqlx::query_as("SELECT outcome, target FROM audit_log WHERE action = $1 ORDER BY id")
            .bind(action)
            .fetch_all(&self.state.db)
            .await
            .expect("read audit_log")
    }
}

/// The test configuration: secrets set, callbacks signed with `cbsec_test`.
pub fn config() -> ApiConfig {
    ApiConfig {
        internal_key: Secret::new("k"),
        webhook_secret: Secret::new("whsec_test"),
        cert_callback_secret: Secret::new(CALLBACK_SECRET),
        ..ApiConfig::default()
    }
}

/// `cert_callback_secret` of [`config`].
pub const CALLBACK_SECRET: &str = "cbsec_test";

/// The HTTP status of an error.
pub fn status_of(e: &ApiError) -> u16 {
    match e {
        ApiError::BadRequest { .. } => 400,
        ApiError::Unauthorized(_) => 401,
        ApiError::Forbidden(_) => 403,
        ApiError::NotFound(_) => 404,
        ApiError::Conflict(_) => 409,
        ApiError::TooLarge(_) => 413,
        ApiError::UnsupportedMediaType(_) => 415,
        ApiError::Unprocessable { .. } | ApiError::InvalidPolicy { .. } => 422,
        ApiError::Unavailable(_) => 503,
        ApiError::Internal(_) => 500,
    }
}

/// `expect_err` for handler results, whose answers (`Json<T>`) are not `Debug`.
pub trait MustFail {
    /// The error; panics naming `what` when the call succeeded.
    fn must_fail(self, what: &str) -> ApiError;
}

impl<T> MustFail for Result<T, ApiError> {
    fn must_fail(self, what: &str) -> ApiError {
        match self {
            Ok(_) => panic!("{what}: expected an error, got success"),
            Err(e) => e,
        }
    }
}
