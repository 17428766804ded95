//! Reading feed content from PostgreSQL: the full [`Snapshot`], and the events one trigger
//! notification ([`Change`]) stands for.

use crate::plans::{LIMIT_COLUMNS, Limits};
use burrow_proto::relay::{
    AccountPlan, DomainClaim, EndpointPolicy, FeedEvent, NameClaim, Snapshot, feed_event::Event,
};
use serde::Deserialize;
use sqlx::{FromRow, PgPool, Row, postgres::PgRow};
use uuid::Uuid;

/// A notification's payload, as the `burrow_feed_notify` trigger writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A name was reserved (`account_id` set) or released (empty).
    Name {
        /// The label.
        name: String,
        /// Holder, or empty.
        account_id: String,
    },
    /// A domain was verified (`account_id` set) or removed (empty).
    Domain {
        /// The hostname.
        domain: String,
        /// Holder, or empty.
        account_id: String,
    },
    /// A policy version was written (a removal has no document).
    Policy {
        /// Account.
        account_id: Uuid,
        /// Endpoint.
        endpoint: String,
        /// The version written.
        version: i64,
    },
    /// An account was created or changed plan.
    Account {
        /// Account.
        account_id: Uuid,
    },
    /// A plan's limits were edited: every account on it.
    Plan {
        /// Plan name.
        plan: String,
    },
}

fn event(e: Event) -> FeedEvent {
    FeedEvent { event: Some(e) }
}

fn account_plan(row: &PgRow) -> Result<AccountPlan, sqlx::Error> {
    let limits = Limits::from_row(row)?;
    Ok(AccountPlan {
        account_id: row.get::<Uuid, _>("id").to_string(),
        plan: row.get("plan"),
        limits: serde_json::to_string(&limits).unwrap_or_default(),
    })
}

fn policy(row: &PgRow) -> EndpointPolicy {
    EndpointPolicy {
        account_id: row.get::<Uuid, _>("account_id").to_string(),
        endpoint: row.get("endpoint"),
        version: row.get::<i64, _>("version").max(0) as u64,
        // Compact JSON, as `Policy::to_json` wrote it: PostgreSQL's `jsonb::text` adds spaces,
        // which could push a document the api accepted past the size relays parse.
        document: row
            .get::<Option<serde_json::Value>, _>("document")
            .map(|d| d.to_string())
            .unwrap_or_default(),
    }
}

fn accounts_query(filter: &str) -> String {
    format!(
        "SELECT a.id, a.plan, {LIMIT_COLUMNS} FROM accounts a JOIN plans p ON p.name = a.plan
         {filter} ORDER BY a.id"
    )
}

/// Everything relays enforce, as of one consistent read.
pub async fn snapshot(db: &PgPool) -> Result<Snapshot, sqlx::Error> {
    // One repeatable-read transaction: the four lists describe the same moment.
    let mut tx = db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let policies = sqlx::query(
        "SELECT account_id, endpoint, version, document FROM endpoint_policies
         ORDER BY account_id, endpoint",
    )
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(policy)
    .collect();
    let names = sqlx::query_as::<_, (String, Uuid)>(
        "SELECT name, account_id FROM reserved_names ORDER BY name",
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(name, a)| NameClaim {
        name,
        account_id: a.to_string(),
    })
    .collect();
    let domains = sqlx::query_as::<_, (String, Uuid)>(
        "SELECT domain, account_id FROM custom_domains WHERE status = 'verified' ORDER BY domain",
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(domain, a)| DomainClaim {
        domain,
        account_id: a.to_string(),
    })
    .collect();
    let accounts = sqlx::query(&accounts_query(""))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(account_plan)
        .collect::<Result<_, _>>()?;
    tx.commit().await?;
    Ok(Snapshot {
        policies,
        names,
        domains,
        accounts,
    })
}

/// The snapshot as the first message of a stream.
pub async fn snapshot_event(db: &PgPool) -> Result<FeedEvent, sqlx::Error> {
    Ok(event(Event::Snapshot(snapshot(db).await?)))
}

/// The events `change` stands for (none when what it names is gone again).
pub async fn events(db: &PgPool, change: Change) -> Result<Vec<FeedEvent>, sqlx::Error> {
    Ok(match change {
        Change::Name { name, account_id } => {
            vec![event(Event::Name(NameClaim { name, account_id }))]
        }
        Change::Domain { domain, account_id } => {
            vec![event(Event::Domain(DomainClaim { domain, account_id }))]
        }
        Change::Policy {
            account_id,
            endpoint,
            version,
        } => sqlx::query(
            "SELECT account_id, endpoint, version, document
             FROM endpoint_policy_versions
             WHERE account_id = $1 AND endpoint = $2 AND version = $3",
        )
        .bind(account_id)
        .bind(&endpoint)
        .bind(version)
        .fetch_optional(db)
        .await?
        .map(|row| vec![event(Event::Policy(policy(&row)))])
        .unwrap_or_default(),
        Change::Account { account_id } => sqlx::query(&accounts_query("WHERE a.id = $1"))
            .bind(account_id)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| account_plan(r).map(|a| event(Event::Account(a))))
            .collect::<Result<_, _>>()?,
        Change::Plan { plan } => sqlx::query(&accounts_query("WHERE a.plan = $1"))
            .bind(plan)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| account_plan(r).map(|a| event(Event::Account(a))))
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_payloads_parse() {
        let id = Uuid::new_v4();
        let parse = |s: String| serde_json::from_str::<Change>(&s).unwrap();
        assert_eq!(
            parse(r#"{"kind": "name", "name": "demo", "account_id": ""}"#.into()),
            Change::Name {
                name: "demo".into(),
                account_id: String::new()
            }
        );
        assert_eq!(
            parse(format!(
                r#"{{"kind": "policy", "account_id": "{id}", "endpoint": "demo", "version": 3}}"#
            )),
            Change::Policy {
                account_id: id,
                endpoint: "demo".into(),
                version: 3
            }
        );
        assert_eq!(
            parse(format!(r#"{{"kind": "account", "account_id": "{id}"}}"#)),
            Change::Account { account_id: id }
        );
        assert!(serde_json::from_str::<Change>(r#"{"kind": "bogus"}"#).is_err());
    }
}
