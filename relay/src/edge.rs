//! What the relay enforces at the edge beyond routing, as last issued by the api's `RelayFeed`
//! (see [`crate::feed`]) and by agents' own policy files:
//! - traffic policies per (account, endpoint);
//! - reserved names and verified custom domains, each held by one account;
//! - each account's plan limits, fresher than the authtoken cache (a plan change reaches live
//!   sessions: bandwidth shaping and the next bind use it at once).
//!
//! Reads happen on every visitor request, writes only when the api issues a change, so the
//! state sits behind one `RwLock` of maps holding `Arc`s (a read clones two `Arc`s at most).
//! When the feed is lost the relay keeps enforcing what it last had.

use crate::{auth::Limits, shaping::Shapers};
use burrow_policy::Policy;
use burrow_proto::relay::{FeedEvent, Snapshot, feed_event::Event};
use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
        atomic::{AtomicBool, Ordering},
    },
};

/// The policy key of registry endpoint `name`: `tcp:20001` → `tcp-20001`, `tls:vault` →
/// `vault`, anything else (a label or a custom domain) as is. This is the `<endpoint>` users
/// name in `burrow policy set <endpoint>`.
pub fn policy_key(name: &str) -> std::borrow::Cow<'_, str> {
    if let Some(port) = name.strip_prefix("tcp:") {
        format!("tcp-{port}").into()
    } else {
        name.strip_prefix("tls:").unwrap_or(name).into()
    }
}

/// An api-issued policy and its version.
#[derive(Debug)]
pub struct Issued {
    /// Version of the endpoint's policy at the api.
    pub version: u64,
    /// The compiled policy.
    pub policy: Policy,
}

/// The policies that apply to one endpoint, evaluated api's first, then the agent's.
#[derive(Debug, Default, Clone)]
pub struct Policies {
    /// Issued by the api (`burrow policy set`).
    pub api: Option<Arc<Issued>>,
    /// Sent by the agent that bound the endpoint (`--traffic-policy-file`).
    pub agent: Option<Arc<Policy>>,
}

impl Policies {
    /// Whether no policy applies.
    pub fn is_empty(&self) -> bool {
        self.api.is_none() && self.agent.is_none()
    }

    /// The policies in evaluation order.
    pub fn iter(&self) -> impl Iterator<Item = &Policy> {
        self.api
            .as_deref()
            .map(|i| &i.policy)
            .into_iter()
            .chain(self.agent.as_deref())
    }
}

/// Values per account, then per endpoint: looked up with two `&str`s, so the per-request
/// lookup allocates nothing.
#[derive(Debug)]
struct ByEndpoint<T>(HashMap<String, HashMap<String, T>>);

impl<T> Default for ByEndpoint<T> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<T> ByEndpoint<T> {
    fn get(&self, account: &str, endpoint: &str) -> Option<&T> {
        self.0.get(account)?.get(endpoint)
    }

    fn insert(&mut self, account: &str, endpoint: &str, value: T) {
        self.0
            .entry(account.to_owned())
            .or_default()
            .insert(endpoint.to_owned(), value);
    }

    fn remove(&mut self, account: &str, endpoint: &str) {
        if let Some(endpoints) = self.0.get_mut(account) {
            endpoints.remove(endpoint);
            if endpoints.is_empty() {
                self.0.remove(account);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn len(&self) -> usize {
        self.0.values().map(HashMap::len).sum()
    }
}

#[derive(Default)]
struct Inner {
    policies: ByEndpoint<Arc<Issued>>,
    agent_policies: ByEndpoint<Arc<Policy>>,
    names: HashMap<String, String>,
    domains: HashMap<String, String>,
    plans: HashMap<String, (String, Limits)>,
}

/// The edge state; see the module docs.
pub struct EdgeState {
    inner: RwLock<Inner>,
    /// Bandwidth buckets per account, their rates following the issued plans.
    pub shapers: Arc<Shapers>,
    /// Whether the state reflects the api: set by the first snapshot (or at once without a
    /// feed). Until then the relay refuses binds, which could otherwise take reserved names.
    synced: AtomicBool,
}

impl Default for EdgeState {
    /// A state for a relay without a feed: nothing issued, and nothing to wait for.
    fn default() -> Self {
        Self::new(false)
    }
}

impl EdgeState {
    /// An empty state; with `feed`, not synced until the feed's first snapshot.
    pub fn new(feed: bool) -> Self {
        Self {
            inner: RwLock::default(),
            shapers: Arc::default(),
            synced: AtomicBool::new(!feed),
        }
    }

    /// Whether the api's state has arrived (see the field docs).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Why `account` may no longer serve registry endpoint `name`, if so: a reserved name now
    /// held by another account, or a custom domain no longer verified for it.
    pub fn unentitled(&self, account: &str, name: &str) -> Option<String> {
        let bare = name.strip_prefix("tls:").unwrap_or(name);
        if name.starts_with("tcp:") {
            return None;
        }
        let inner = self.read();
        if bare.contains('.') {
            (inner.domains.get(bare).map(String::as_str) != Some(account))
                .then(|| format!("the custom domain {bare} is no longer verified for this account"))
        } else {
            inner
                .names
                .get(bare)
                .filter(|holder| *holder != account)
                .map(|_| format!("the name {bare:?} is now reserved by another account"))
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The policies of `account`'s endpoint registered as `name`.
    pub fn policies(&self, account: &str, name: &str) -> Policies {
        let inner = self.read();
        if inner.policies.is_empty() && inner.agent_policies.is_empty() {
            return Policies::default();
        }
        let endpoint = policy_key(name);
        Policies {
            api: inner.policies.get(account, &endpoint).cloned(),
            agent: inner.agent_policies.get(account, &endpoint).cloned(),
        }
    }

    /// Sets (or with `None` clears) the policy the agent bound `name` with.
    pub fn set_agent_policy(&self, account: &str, name: &str, policy: Option<Policy>) {
        let endpoint = policy_key(name);
        let mut inner = self.write();
        match policy {
            Some(p) => inner.agent_policies.insert(account, &endpoint, Arc::new(p)),
            None => inner.agent_policies.remove(account, &endpoint),
        }
    }

    /// The account holding reserved name `name`, if any.
    pub fn name_holder(&self, name: &str) -> Option<String> {
        self.read().names.get(name).cloned()
    }

    /// The account holding verified custom domain `domain`, if any.
    pub fn domain_holder(&self, domain: &str) -> Option<String> {
        self.read().domains.get(domain).cloned()
    }

    /// The plan and limits last issued for `account`.
    pub fn plan(&self, account: &str) -> Option<(String, Limits)> {
        self.read().plans.get(account).cloned()
    }

    /// Applies one feed event.
    pub fn apply(&self, event: FeedEvent) {
        match event.event {
            Some(Event::Snapshot(s)) => self.replace(s),
            Some(Event::Policy(p)) => {
                let compiled = compile(&p);
                let mut inner = self.write();
                // A change older than what a later snapshot delivered is stale.
                if inner
                    .policies
                    .get(&p.account_id, &p.endpoint)
                    .is_some_and(|held| held.version > p.version)
                {
                    return;
                }
                match compiled {
                    Some(issued) => {
                        inner
                            .policies
                            .insert(&p.account_id, &p.endpoint, Arc::new(issued))
                    }
                    None => inner.policies.remove(&p.account_id, &p.endpoint),
                }
                metrics::gauge!("burrow_relay_edge_policies").set(inner.policies.len() as f64);
            }
            Some(Event::Name(n)) => {
                let mut inner = self.write();
                if n.account_id.is_empty() {
                    inner.names.remove(&n.name);
                } else {
                    inner.names.insert(n.name, n.account_id);
                }
            }
            Some(Event::Domain(d)) => {
                let mut inner = self.write();
                let domain = d.domain.to_ascii_lowercase();
                if d.account_id.is_empty() {
                    inner.domains.remove(&domain);
                } else {
                    inner.domains.insert(domain, d.account_id);
                }
            }
            Some(Event::Account(a)) => {
                let limits = parse_limits(&a.account_id, &a.limits);
                self.shapers
                    .set_rate(&a.account_id, limits.bandwidth_bytes_per_sec);
                self.write().plans.insert(a.account_id, (a.plan, limits));
            }
            None => {}
        }
    }

    fn replace(&self, s: Snapshot) {
        let mut next = Inner {
            policies: {
                let mut policies = ByEndpoint::default();
                for p in &s.policies {
                    if let Some(issued) = compile(p) {
                        policies.insert(&p.account_id, &p.endpoint, Arc::new(issued));
                    }
                }
                policies
            },
            agent_policies: ByEndpoint::default(),
            names: s
                .names
                .into_iter()
                .filter(|n| !n.account_id.is_empty())
                .map(|n| (n.name, n.account_id))
                .collect(),
            domains: s
                .domains
                .into_iter()
                .filter(|d| !d.account_id.is_empty())
                .map(|d| (d.domain.to_ascii_lowercase(), d.account_id))
                .collect(),
            plans: s
                .accounts
                .into_iter()
                .map(|a| {
                    let limits = parse_limits(&a.account_id, &a.limits);
                    (a.account_id, (a.plan, limits))
                })
                .collect(),
        };
        for (account, (_, limits)) in &next.plans {
            self.shapers
                .set_rate(account, limits.bandwidth_bytes_per_sec);
        }
        let mut inner = self.write();
        // Agents' own policies are not the api's to replace.
        next.agent_policies = std::mem::take(&mut inner.agent_policies);
        *inner = next;
        metrics::gauge!("burrow_relay_edge_policies").set(inner.policies.len() as f64);
        self.synced.store(true, Ordering::Release);
    }
}

/// Compiles an issued policy; `None` when it was removed. A document the api accepted but this
/// relay cannot compile (an older relay) is logged and not applied.
fn compile(p: &burrow_proto::relay::EndpointPolicy) -> Option<Issued> {
    if p.document.is_empty() {
        return None;
    }
    match burrow_policy::parse(&p.document) {
        Ok(policy) => Some(Issued {
            version: p.version,
            policy,
        }),
        Err(e) => {
            tracing::error!(account = %p.account_id, endpoint = %p.endpoint, version = p.version,
                error = %e, "issued traffic policy does not compile on this relay; not applied");
            None
        }
    }
}

fn parse_limits(account: &str, json: &str) -> Limits {
    if json.is_empty() {
        return Limits::default();
    }
    serde_json::from_str(json).unwrap_or_else(|e| {
        tracing::error!(%account, error = %e, "issued plan limits do not parse; treating as unlimited");
        Limits::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::relay::{AccountPlan, DomainClaim, EndpointPolicy, NameClaim};

    fn ev(e: Event) -> FeedEvent {
        FeedEvent { event: Some(e) }
    }

    fn policy(account: &str, endpoint: &str, version: u64, doc: &str) -> EndpointPolicy {
        EndpointPolicy {
            account_id: account.into(),
            endpoint: endpoint.into(),
            version,
            document: doc.into(),
        }
    }

    const DENY: &str = r#"{"on_http_request":[{"actions":[{"type":"deny"}]}]}"#;

    #[test]
    fn keys_map_registry_names_to_policy_endpoints() {
        assert_eq!(policy_key("tcp:20001"), "tcp-20001");
        assert_eq!(policy_key("tls:vault"), "vault");
        assert_eq!(policy_key("demo"), "demo");
        assert_eq!(policy_key("app.example.com"), "app.example.com");
    }

    #[test]
    fn a_relay_with_a_feed_is_synced_by_its_first_snapshot() {
        let edge = EdgeState::new(true);
        assert!(!edge.is_synced());
        edge.apply(ev(Event::Snapshot(Snapshot::default())));
        assert!(edge.is_synced());
        assert!(
            EdgeState::default().is_synced(),
            "no feed, nothing to wait for"
        );
    }

    #[test]
    fn snapshot_then_changes_then_a_new_snapshot() {
        let edge = EdgeState::default();
        edge.apply(ev(Event::Snapshot(Snapshot {
            policies: vec![policy("a", "demo", 1, DENY)],
            names: vec![NameClaim {
                name: "demo".into(),
                account_id: "a".into(),
            }],
            domains: vec![DomainClaim {
                domain: "App.Example.com".into(),
                account_id: "a".into(),
            }],
            accounts: vec![AccountPlan {
                account_id: "a".into(),
                plan: "free".into(),
                limits: r#"{"bandwidth_bytes_per_sec": 1000}"#.into(),
            }],
        })));
        assert_eq!(edge.policies("a", "demo").api.unwrap().version, 1);
        // Another account's endpoint of the same name has no policy.
        assert!(edge.policies("b", "demo").is_empty());
        assert_eq!(edge.name_holder("demo").as_deref(), Some("a"));
        assert_eq!(edge.domain_holder("app.example.com").as_deref(), Some("a"));
        assert_eq!(
            edge.plan("a").unwrap().1.bandwidth_bytes_per_sec,
            Some(1000)
        );

        edge.set_agent_policy("a", "tcp:20001", Some(burrow_policy::parse(DENY).unwrap()));
        edge.apply(ev(Event::Policy(policy("a", "demo", 2, ""))));
        assert!(edge.policies("a", "demo").is_empty(), "removed");
        edge.apply(ev(Event::Name(NameClaim {
            name: "demo".into(),
            account_id: String::new(),
        })));
        assert_eq!(edge.name_holder("demo"), None);

        // A change older than the policy held is ignored.
        edge.apply(ev(Event::Policy(policy("a", "demo", 3, DENY))));
        edge.apply(ev(Event::Policy(policy("a", "demo", 2, ""))));
        assert_eq!(edge.policies("a", "demo").api.unwrap().version, 3);

        assert_eq!(edge.unentitled("a", "app.example.com"), None);
        assert_eq!(edge.unentitled("a", "tls:app.example.com"), None);
        assert!(edge.unentitled("b", "app.example.com").is_some());
        edge.apply(ev(Event::Name(NameClaim {
            name: "shop".into(),
            account_id: "b".into(),
        })));
        assert!(
            edge.unentitled("a", "shop")
                .unwrap()
                .contains("reserved by another")
        );
        assert_eq!(edge.unentitled("b", "tls:shop"), None);
        assert_eq!(edge.unentitled("a", "random"), None);

        edge.apply(ev(Event::Snapshot(Snapshot::default())));
        assert_eq!(edge.domain_holder("app.example.com"), None);
        assert!(
            edge.unentitled("a", "app.example.com").is_some(),
            "removed domain"
        );
        assert!(
            edge.policies("a", "tcp:20001").agent.is_some(),
            "a snapshot keeps agents' own policies"
        );
    }
}
