//! Endpoint leases: which relay holds which HTTP endpoint, shared through Redis so any relay
//! can forward a visitor to the one holding it (see [`crate::peer`]).
//!
//! Key `<prefix>lease:<name>` = `<relay id> <account id>` ([`value`]), expiring after
//! [`LEASE_TTL`]; the holder refreshes its leases every [`REFRESH_EVERY`], so a relay that dies
//! loses them within [`LEASE_TTL`] and relays stop forwarding to it. The account lets another
//! relay refuse the name to other accounts at bind. The rules:
//! - **bind** sets the lease unconditionally: the newest binder wins, as in the registry (an
//!   agent that moved to another relay takes its names along while the old relay may not yet
//!   have noticed the lost session);
//! - **refresh** re-sets a lease only if it is absent (Redis restarted, or an outage outlasted
//!   the TTL) or still ours: a relay never takes a name back from the relay it moved to;
//! - **release** (the name went offline here) deletes it only if it is still ours.
//!
//! [`Held`] is the relay's own list of leased names, kept whether Redis answers or not, so
//! leases are written again as soon as Redis returns.
//! Only HTTP endpoints (names and custom domains) are leased: TCP ports are per relay, and
//! TLS passthrough is not forwarded between relays.

use crate::redis_link::timed;
use burrow_proto::tunnel::{BoundEndpoint, EndpointProto};
use redis::aio::ConnectionManager;
use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

/// How long a lease outlives its last refresh.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often held leases are refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// `SET` the lease if it is absent or already ours.
const REFRESH_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
     if v == false or v == ARGV[1] then \
       redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end \
     return 0";
/// `DEL` the lease if it is ours.
const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
       return redis.call('DEL', KEYS[1]) end \
     return 0";

/// The Redis key of `name`'s lease.
pub fn key(prefix: &str, name: &str) -> String {
    format!("{prefix}lease:{name}")
}

/// The names among `endpoints` that are leased (HTTP ones).
pub fn leased_names(endpoints: &[BoundEndpoint]) -> Vec<String> {
    endpoints
        .iter()
        .filter(|e| e.proto == EndpointProto::Http)
        .map(|e| e.name.clone())
        .collect()
}

/// The value of a lease: the holding relay and the account whose endpoint it is, so another
/// relay can refuse that name to other accounts.
pub fn value(relay_id: &str, account_id: &str) -> String {
    format!("{relay_id} {account_id}")
}

/// A lease value read back: the relay id, and the account when the value names one.
pub fn parse(value: &str) -> (&str, Option<&str>) {
    match value.split_once(' ') {
        Some((relay, account)) => (relay, Some(account)),
        None => (value, None),
    }
}

/// The names this relay holds leases for, each with its lease value.
#[derive(Debug, Default)]
pub struct Held(Mutex<BTreeMap<String, String>>);

impl Held {
    /// Holds `names` with lease value `value`.
    pub fn hold(&self, names: &[String], value: &str) {
        let mut held = self.lock();
        for n in names {
            held.insert(n.clone(), value.to_owned());
        }
    }

    /// Removes `names`; returns the ones that were held, grouped by lease value.
    pub fn release(&self, names: &[String]) -> Vec<(String, Vec<String>)> {
        let mut held = self.lock();
        group(
            names
                .iter()
                .filter_map(|n| held.remove(n).map(|v| (n.clone(), v))),
        )
    }

    /// Every held name, grouped by lease value.
    pub fn by_value(&self) -> Vec<(String, Vec<String>)> {
        group(self.lock().iter().map(|(n, v)| (n.clone(), v.clone())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn group(entries: impl Iterator<Item = (String, String)>) -> Vec<(String, Vec<String>)> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in entries {
        groups.entry(value).or_default().push(name);
    }
    groups.into_iter().collect()
}

/// Takes the leases of `names` for relay `id` (unconditionally: the newest binder wins).
pub async fn acquire(
    conn: &mut ConnectionManager,
    prefix: &str,
    id: &str,
    names: &[String],
) -> redis::RedisResult<()> {
    if names.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for name in names {
        pipe.set_ex(key(prefix, name), id, LEASE_TTL.as_secs())
            .ignore();
    }
    timed(pipe.query_async(conn)).await
}

/// Extends the leases of `names` that are absent or still held by `id`; returns how many of
/// `names` were refreshed (the rest are held by another relay now).
pub async fn refresh(
    conn: &mut ConnectionManager,
    prefix: &str,
    id: &str,
    names: &[String],
) -> redis::RedisResult<usize> {
    if names.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for name in names {
        pipe.cmd("EVAL")
            .arg(REFRESH_SCRIPT)
            .arg(1)
            .arg(key(prefix, name))
            .arg(id)
            .arg(LEASE_TTL.as_secs());
    }
    let done: Vec<i64> = timed(pipe.query_async(conn)).await?;
    Ok(done.iter().filter(|d| **d == 1).count())
}

/// Drops the leases of `names` that `id` still holds.
pub async fn release(
    conn: &mut ConnectionManager,
    prefix: &str,
    id: &str,
    names: &[String],
) -> redis::RedisResult<()> {
    if names.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for name in names {
        pipe.cmd("EVAL")
            .arg(RELEASE_SCRIPT)
            .arg(1)
            .arg(key(prefix, name))
            .arg(id)
            .ignore();
    }
    timed(pipe.query_async(conn)).await
}

/// The relay holding `name`'s lease, if any.
pub async fn holder(
    conn: &mut ConnectionManager,
    prefix: &str,
    name: &str,
) -> redis::RedisResult<Option<String>> {
    timed(redis::cmd("GET").arg(key(prefix, name)).query_async(conn)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, proto: EndpointProto) -> BoundEndpoint {
        BoundEndpoint {
            name: name.into(),
            proto,
            url: String::new(),
            https_url: None,
        }
    }

    #[test]
    fn only_http_endpoints_are_leased() {
        let eps = [
            ep("web", EndpointProto::Http),
            ep("tcp:20001", EndpointProto::Tcp),
            ep("tls:db", EndpointProto::Tls),
            ep("app.example.com", EndpointProto::Http),
        ];
        assert_eq!(leased_names(&eps), ["web", "app.example.com"]);
    }

    #[test]
    fn held_names_are_released_once_and_grouped_by_value() {
        let held = Held::default();
        held.hold(&["a".into(), "b".into()], "relay-1 acct-x");
        held.hold(&["c".into()], "relay-1 acct-y");
        // A pool member binding the same name again does not make it held twice.
        held.hold(&["a".into()], "relay-1 acct-x");
        assert_eq!(
            held.by_value(),
            [
                (
                    "relay-1 acct-x".to_owned(),
                    vec!["a".to_owned(), "b".to_owned()]
                ),
                ("relay-1 acct-y".to_owned(), vec!["c".to_owned()]),
            ]
        );
        assert_eq!(
            held.release(&["a".into(), "d".into()]),
            [("relay-1 acct-x".to_owned(), vec!["a".to_owned()])]
        );
        assert!(held.release(&["a".into()]).is_empty());
        assert_eq!(held.by_value().len(), 2);
    }

    #[test]
    fn values_name_the_relay_and_the_account() {
        assert_eq!(parse(&value("relay-a", "acct")), ("relay-a", Some("acct")));
        assert_eq!(parse("relay-old"), ("relay-old", None));
    }

    #[test]
    fn keys_live_under_the_prefix() {
        assert_eq!(key("burrow:", "demo"), "burrow:lease:demo");
    }

    /// The scripts against a real Redis, when the suite's one is reachable (skipped otherwise).
    #[tokio::test]
    async fn refresh_never_takes_a_lease_back_and_release_only_drops_ours() {
        let url = std::env::var("BURROW_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let link = crate::redis_link::RedisLink::new(&url);
        let Some(mut conn) = link.get().await else {
            eprintln!("skipped: no redis at {url}");
            return;
        };
        let prefix = format!("unit:{}:", uuid::Uuid::new_v4().simple());
        let names = vec!["demo".to_owned()];
        acquire(&mut conn, &prefix, "relay-a", &names)
            .await
            .unwrap();
        assert_eq!(
            refresh(&mut conn, &prefix, "relay-a", &names)
                .await
                .unwrap(),
            1
        );
        // The agent moved: relay b binds, relay a's refresh leaves it alone.
        acquire(&mut conn, &prefix, "relay-b", &names)
            .await
            .unwrap();
        assert_eq!(
            refresh(&mut conn, &prefix, "relay-a", &names)
                .await
                .unwrap(),
            0
        );
        release(&mut conn, &prefix, "relay-a", &names)
            .await
            .unwrap();
        let who = holder(&mut conn, &prefix, "demo").await.unwrap();
        assert_eq!(who.as_deref(), Some("relay-b"));
        let ttl: i64 = redis::cmd("TTL")
            .arg(key(&prefix, "demo"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= LEASE_TTL.as_secs() as i64, "ttl {ttl}");
        release(&mut conn, &prefix, "relay-b", &names)
            .await
            .unwrap();
        assert_eq!(holder(&mut conn, &prefix, "demo").await.unwrap(), None);
        // A lease lost to a Redis restart comes back with the next refresh.
        assert_eq!(
            refresh(&mut conn, &prefix, "relay-b", &names)
                .await
                .unwrap(),
            1
        );
        release(&mut conn, &prefix, "relay-b", &names)
            .await
            .unwrap();
    }
}
