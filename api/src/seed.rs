//! `burrow-api seed-dev`: the development account and credentials the up command hands out.
//!
//! Idempotent: credentials saved in the file by an earlier run are kept while they still
//! verify; missing or revoked ones are created again. Secrets are only ever in that file
//! (mode 0600) and in the printed environment lines.

use crate::{accounts, auth::Role, error::ApiError};
use burrow_common::token;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use std::path::Path;
use uuid::Uuid;

/// What the seed produces.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct DevCredentials {
    /// The dev account.
    pub account_id: Option<Uuid>,
    /// Agent authtoken of the dev account.
    pub authtoken: String,
    /// Developer API key of the dev account.
    pub developer_api_key: String,
    /// Ops API key.
    pub ops_api_key: String,
    /// Admin API key.
    pub admin_api_key: String,
}

/// Ensures the dev account and credentials exist; reads and rewrites `file`.
pub async fn seed_dev(db: &PgPool, file: &Path) -> Result<DevCredentials, ApiError> {
    let mut creds: DevCredentials = std::fs::read_to_string(file)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let account_id: Uuid = match sqlx::query_scalar::<_, Uuid>(
        "SELECT id FROM accounts WHERE provider_customer_id = 'cus_dev'",
    )
    .fetch_optional(db)
    .await?
    {
        Some(id) => id,
        // The unlimited plan: local experiments and the benchmark (10 000 endpoints) must
        // never stop at a plan limit.
        None => {
            accounts::insert_account(db, "dev", "enterprise", Some("cus_dev"))
                .await?
                .id
        }
    };
    creds.account_id = Some(account_id);
    if !valid(db, "authtokens", "token_hash", &creds.authtoken).await? {
        creds.authtoken = accounts::insert_authtoken(db, account_id, "dev (seed)")
            .await?
            .token;
    }
    for (field, role, account) in [
        (
            &mut creds.developer_api_key,
            Role::Developer,
            Some(account_id),
        ),
        (&mut creds.ops_api_key, Role::Ops, None),
        (&mut creds.admin_api_key, Role::Admin, None),
    ] {
        if !valid(db, "api_keys", "key_hash", field).await? {
            *field = accounts::insert_api_key(db, account, None, role, "dev (seed)")
                .await?
                .token;
        }
    }
    let json =
        serde_json::to_string_pretty(&creds).map_err(|e| ApiError::Internal(e.to_string()))?;
    write_private(file, &json)
        .map_err(|e| ApiError::Internal(format!("writing {}: {e}", file.display())))?;
    Ok(creds)
}

async fn valid(db: &PgPool, table: &str, column: &str, secret: &str) -> Result<bool, ApiError> {
    if secret.is_empty() {
        return Ok(false);
    }
    // Table and column come from the fixed list above, never from input.
    let sql =
        format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} = $1 AND revoked_at IS NULL)");
    Ok(sqlx::query_scalar(&sql)
        .bind(token::hash(secret))
        .fetch_one(db)
        .await?)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    burrow_common::secret::write_private_file(path, text.as_bytes())
}
