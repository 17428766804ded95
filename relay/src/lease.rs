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

use burrow_common::redis_link::timed;
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
/// `SET` the lease if it is absent or held for the same account (ARGV[3]), on any relay: an
/// account's agent moving between relays takes its names along; another account's never.
const ACQUIRE_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
     local suffix = ' ' .. ARGV[3] \
     if v == false or v == ARGV[1] or string.sub(v, -string.len(suffix)) == suffix then \
       redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1 end \
     return 0";
/// Extend the lease only if it is still ours (never re-create it): for names offline here.
const EXTEND_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
       return redis.call('EXPIRE', KEYS[1], ARGV[2]) end \
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
    // Account ids never hold a space; relay ids might.
    match value.rsplit_once(' ') {
        Some((relay, account)) => (relay, Some(account)),
        None => (value, None),
    }
}

/// The names this relay holds leases for, each with its lease value and whether an agent
/// serves it here now (`false` while the name is offline within its grace period: the lease is
/// kept, so no other account takes the name meanwhile, but never re-created).
#[derive(Debug, Default)]
pub struct Held(Mutex<BTreeMap<String, (String, bool)>>);

impl Held {
    /// Holds `names`, online, with lease value `value`.
    pub fn hold(&self, names: &[String], value: &str) {
        let mut held = self.lock();
        for n in names {
            held.insert(n.clone(), (value.to_owned(), true));
        }
    }

    /// Marks `names` offline (still held).
    pub fn offline(&self, names: &[String]) {
        let mut held = self.lock();
        for n in names {
            if let Some((_, online)) = held.get_mut(n) {
                *online = false;
            }
        }
    }

    /// Removes `names`; returns the ones that were held, grouped by lease value.
    pub fn release(&self, names: &[String]) -> Vec<(String, Vec<String>)> {
        let mut held = self.lock();
        group(
            names
                .iter()
                .filter_map(|n| held.remove(n).map(|(v, _)| (n.clone(), v))),
        )
    }

    /// The held names that are `online` (or offline), grouped by lease value.
    pub fn by_value(&self, online: bool) -> Vec<(String, Vec<String>)> {
        group(
            self.lock()
                .iter()
                .filter(|(_, (_, o))| *o == online)
                .map(|(n, (v, _))| (n.clone(), v.clone())),
        )
    }

    /// Every held name, grouped by lease value.
    pub fn all(&self) -> Vec<(String, Vec<String>)> {
        group(self.lock().iter().map(|(n, (v, _))| (n.clone(), v.clone())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (String, bool)>> {
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

/// Runs `script` once per name in one pipeline, with KEYS[1] the name's lease key and ARGV
/// `value`, the TTL in seconds and the value's account; whether it acted, per name.
async fn per_name(
    conn: &mut ConnectionManager,
    script: &str,
    prefix: &str,
    value: &str,
    names: &[String],
) -> redis::RedisResult<Vec<bool>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let account = parse(value).1.unwrap_or_default();
    let mut pipe = redis::pipe();
    for name in names {
        pipe.cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(key(prefix, name))
            .arg(value)
            .arg(LEASE_TTL.as_secs())
            .arg(account);
    }
    let done: Vec<i64> = timed(pipe.query_async(conn)).await?;
    Ok(done.into_iter().map(|d| d == 1).collect())
}

/// Takes the leases of `names` with `value` (see [`value`]) when they are free or held for the
/// same account; returns the names another account holds (their leases are left alone).
pub async fn acquire(
    conn: &mut ConnectionManager,
    prefix: &str,
    value: &str,
    names: &[String],
) -> redis::RedisResult<Vec<String>> {
    let done = per_name(conn, ACQUIRE_SCRIPT, prefix, value, names).await?;
    Ok(names
        .iter()
        .zip(done)
        .filter(|(_, taken)| !taken)
        .map(|(n, _)| n.clone())
        .collect())
}

/// Extends the leases of `names` still held with `value` (never re-creating one).
pub async fn extend(
    conn: &mut ConnectionManager,
    prefix: &str,
    value: &str,
    names: &[String],
) -> redis::RedisResult<()> {
    per_name(conn, EXTEND_SCRIPT, prefix, value, names)
        .await
        .map(drop)
}

/// Extends the leases of `names` that are absent or still held with `value`; returns how many
/// of `names` were refreshed (the rest are held by another relay now).
pub async fn refresh(
    conn: &mut ConnectionManager,
    prefix: &str,
    value: &str,
    names: &[String],
) -> redis::RedisResult<usize> {
    let done = per_name(conn, REFRESH_SCRIPT, prefix, value, names).await?;
    Ok(done.into_iter().filter(|d| *d).count())
}

/// Drops the leases of `names` still held with `value`.
pub async fn release(
    conn: &mut ConnectionManager,
    prefix: &str,
    value: &str,
    names: &[String],
) -> redis::RedisResult<()> {
    per_name(conn, RELEASE_SCRIPT, prefix, value, names)
        .await
        .map(drop)
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
            held.by_value(true),
            [
                (
                    "relay-1 acct-x".to_owned(),
                    vec!["a".to_owned(), "b".to_owned()]
                ),
                ("relay-1 acct-y".to_owned(), vec!["c".to_owned()]),
            ]
        );
        // Offline names stay held (and in `all`), but apart from the online ones.
        held.offline(&["b".into()]);
        assert_eq!(
            held.by_value(false),
            [("relay-1 acct-x".to_owned(), vec!["b".to_owned()])]
        );
        assert_eq!(held.by_value(true).len(), 2);
        assert_eq!(held.all().len(), 2);
        assert_eq!(
            held.release(&["a".into(), "d".into()]),
            [("relay-1 acct-x".to_owned(), vec!["a".to_owned()])]
        );
        assert!(held.release(&["a".into()]).is_empty());
        assert_eq!(held.all().len(), 2);
    }

    #[test]
    fn values_name_the_relay_and_the_account() {
        assert_eq!(parse(&value("relay-a", "acct")), ("relay-a", Some("acct")));
        assert_eq!(parse(&value("relay a", "acct")), ("relay a", Some("acct")));
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
        let link = burrow_common::redis_link::RedisLink::new(&url);
        let Some(mut conn) = link.get().await else {
            eprintln!("skipped: no redis at {url}");
            return;
        };
        let prefix = format!("unit:{}:", uuid::Uuid::new_v4().simple());
        let names = vec!["demo".to_owned()];
        let (a, b) = (value("relay-a", "acct-x"), value("relay-b", "acct-x"));
        assert!(
            acquire(&mut conn, &prefix, &a, &names)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(refresh(&mut conn, &prefix, &a, &names).await.unwrap(), 1);
        // Another account cannot take it, on any relay.
        let other = value("relay-b", "acct-y");
        assert_eq!(
            acquire(&mut conn, &prefix, &other, &names).await.unwrap(),
            names
        );
        // The agent moved: relay b binds for the same account, relay a's refresh and extend
        // leave it alone.
        assert!(
            acquire(&mut conn, &prefix, &b, &names)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(refresh(&mut conn, &prefix, &a, &names).await.unwrap(), 0);
        extend(&mut conn, &prefix, &a, &names).await.unwrap();
        release(&mut conn, &prefix, &a, &names).await.unwrap();
        let who = holder(&mut conn, &prefix, "demo").await.unwrap();
        assert_eq!(who.as_deref(), Some(b.as_str()));
        let ttl: i64 = redis::cmd("TTL")
            .arg(key(&prefix, "demo"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= LEASE_TTL.as_secs() as i64, "ttl {ttl}");
        release(&mut conn, &prefix, &b, &names).await.unwrap();
        assert_eq!(holder(&mut conn, &prefix, "demo").await.unwrap(), None);
        // Extending never re-creates a lease; refreshing does (a Redis restart lost it).
        extend(&mut conn, &prefix, &b, &names).await.unwrap();
        assert_eq!(holder(&mut conn, &prefix, "demo").await.unwrap(), None);
        assert_eq!(refresh(&mut conn, &prefix, &b, &names).await.unwrap(), 1);
        release(&mut conn, &prefix, &b, &names).await.unwrap();
    }
}
