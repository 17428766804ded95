//! The relay's in-memory route table: which agent session serves which endpoint name.
//!
//! A name is `Online` while its session is connected. When the session ends the name turns
//! `Offline` for `offline_grace` (visitors get a 502 saying the agent is offline, and only the
//! same account can bind it again); after that it is forgotten (visitors get a 404).
//! A second session of the *same account* binding an online name takes it over and the old
//! session is closed: that is what an agent reconnecting over a half-open link looks like.
//! Unless both bind it as a pool (`--pool`): then the name routes to every member in turn
//! and stays online while any member is connected.

use burrow_common::proxy::Body;
use burrow_proto::tunnel::{BoundEndpoint, CloseCode, Closing};
use hyper::client::conn::http2::SendRequest;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};
use tokio_util::sync::CancellationToken;

/// Closes one session on purpose, remembering why so the session can tell its agent.
#[derive(Clone, Default)]
pub struct Closer {
    token: CancellationToken,
    reason: Arc<Mutex<Option<Closing>>>,
}

impl Closer {
    /// Asks the session to close for `reason` (the first reason given wins).
    pub fn close(&self, code: CloseCode, message: impl Into<String>) {
        let mut reason = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if reason.is_none() {
            *reason = Some(Closing {
                code,
                message: message.into(),
            });
        }
        self.token.cancel();
    }

    /// Resolves once [`Closer::close`] was called.
    pub async fn closed(&self) {
        self.token.cancelled().await
    }

    /// Why the session is closing, if it was asked to.
    pub fn reason(&self) -> Option<Closing> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Description of a connected agent session.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Relay-assigned session id.
    pub session_id: String,
    /// Owning account.
    pub account_id: String,
    /// Authtoken the session authenticated with.
    pub authtoken_id: String,
    /// Agent's remote address.
    pub peer: String,
    /// When it connected.
    pub connected_at: SystemTime,
    /// Agent software string.
    pub agent: String,
    /// Endpoints it serves.
    pub endpoints: Vec<BoundEndpoint>,
}

struct SessionEntry {
    info: SessionInfo,
    /// Closes the session (kick, revocation, takeover).
    closer: Closer,
}

/// Where a name routes.
pub enum Lookup {
    /// Forward through one of these h2 handles: the session whose turn it is first, then the
    /// other pool members (to retry on when the first one's connection is gone).
    Online {
        /// The handles, in the order to try them.
        senders: Vec<SendRequest<Body>>,
        /// The sessions behind `senders`, in the same order.
        session_ids: Vec<String>,
        /// The account the name belongs to (for metering).
        account_id: String,
    },
    /// The agent disconnected; how long ago.
    Offline(Duration),
    /// No such endpoint.
    Unknown,
}

struct Member {
    session_id: String,
    sender: SendRequest<Body>,
}

enum Route {
    Online {
        account_id: String,
        /// Sessions serving the name (more than one only for a pool).
        members: Vec<Member>,
        pool: bool,
        /// Round-robin position.
        next: usize,
    },
    Offline {
        account_id: String,
        since: Instant,
    },
}

/// Why a name cannot be bound.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindError {
    /// Held by another account.
    #[error("the name {0:?} is in use by another account")]
    Taken(String),
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, SessionEntry>,
    routes: HashMap<String, Route>,
}

/// The route table. Cheap to share behind an `Arc`.
pub struct Registry {
    state: Mutex<State>,
    offline_grace: Duration,
}

impl Registry {
    /// An empty table whose offline names expire after `offline_grace`.
    pub fn new(offline_grace: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            offline_grace,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks that `account_id` may bind every name in `names`.
    pub fn check_bindable(&self, account_id: &str, names: &[String]) -> Result<(), BindError> {
        let mut state = self.lock();
        self.expire(&mut state);
        for name in names {
            match state.routes.get(name) {
                Some(
                    Route::Online { account_id: a, .. } | Route::Offline { account_id: a, .. },
                ) if a != account_id => {
                    return Err(BindError::Taken(name.clone()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Registers a session and routes its endpoints to `sender`. Sessions of the same account
    /// that held any of these names are closed, unless both sides bind the name as a pool
    /// (`pooled` holds the names this session pools), in which case the session joins it.
    pub fn bind(
        &self,
        info: SessionInfo,
        sender: SendRequest<Body>,
        closer: Closer,
        pooled: &[String],
    ) -> Result<(), BindError> {
        let mut state = self.lock();
        self.expire(&mut state);
        let names: Vec<String> = info.endpoints.iter().map(|e| e.name.clone()).collect();
        let mut replaced = Vec::new();
        for name in &names {
            match state.routes.get(name) {
                Some(Route::Online { account_id, .. } | Route::Offline { account_id, .. })
                    if *account_id != info.account_id =>
                {
                    return Err(BindError::Taken(name.clone()));
                }
                Some(Route::Online { members, pool, .. }) if !(*pool && pooled.contains(name)) => {
                    replaced.extend(members.iter().map(|m| m.session_id.clone()))
                }
                _ => {}
            }
        }
        for old in replaced {
            if let Some(entry) = state.sessions.get(&old) {
                tracing::info!(session_id = %old, "closing session: its names were taken over by a new session");
                entry.closer.close(
                    CloseCode::TakenOver,
                    "another agent of this account bound the same name",
                );
            }
        }
        for name in names {
            let member = Member {
                session_id: info.session_id.clone(),
                sender: sender.clone(),
            };
            let pool = pooled.contains(&name);
            match state.routes.get_mut(&name) {
                Some(Route::Online {
                    members,
                    pool: true,
                    ..
                }) if pool => members.push(member),
                _ => {
                    state.routes.insert(
                        name,
                        Route::Online {
                            account_id: info.account_id.clone(),
                            members: vec![member],
                            pool,
                            next: 0,
                        },
                    );
                }
            }
        }
        state
            .sessions
            .insert(info.session_id.clone(), SessionEntry { info, closer });
        metrics::gauge!("burrow_relay_sessions").set(state.sessions.len() as f64);
        Ok(())
    }

    /// Removes a session; names it still routes turn offline. Returns those names (not the
    /// ones another session has taken over meanwhile).
    pub fn unbind(&self, session_id: &str) -> Vec<BoundEndpoint> {
        let mut state = self.lock();
        let Some(entry) = state.sessions.remove(session_id) else {
            return Vec::new();
        };
        let mut released = Vec::new();
        for ep in &entry.info.endpoints {
            let Some(Route::Online { members, .. }) = state.routes.get_mut(&ep.name) else {
                continue;
            };
            let before = members.len();
            members.retain(|m| m.session_id != session_id);
            // Taken over meanwhile, or other pool members still serve it.
            if before == members.len() || !members.is_empty() {
                continue;
            }
            released.push(ep.clone());
            state.routes.insert(
                ep.name.clone(),
                Route::Offline {
                    account_id: entry.info.account_id.clone(),
                    since: Instant::now(),
                },
            );
        }
        metrics::gauge!("burrow_relay_sessions").set(state.sessions.len() as f64);
        released
    }

    /// How long a disconnected session's names stay reserved for it.
    pub fn offline_grace(&self) -> Duration {
        self.offline_grace
    }

    /// Where `name` routes now.
    /// Names are unique across protocols (TCP endpoints are `tcp:<port>`), so a name is enough.
    pub fn lookup(&self, name: &str) -> Lookup {
        let mut state = self.lock();
        self.expire(&mut state);
        match state.routes.get_mut(name) {
            Some(Route::Online {
                members,
                next,
                account_id,
                ..
            }) => {
                // Round robin, skipping connections already known to be closed.
                let n = members.len();
                let start = *next % n.max(1);
                *next = next.wrapping_add(1);
                let rotated = (0..n).map(|i| &members[(start + i) % n]);
                let mut open: Vec<&Member> =
                    rotated.clone().filter(|m| !m.sender.is_closed()).collect();
                if open.is_empty() {
                    open = rotated.collect();
                }
                Lookup::Online {
                    senders: open.iter().map(|m| m.sender.clone()).collect(),
                    session_ids: open.iter().map(|m| m.session_id.clone()).collect(),
                    account_id: account_id.clone(),
                }
            }
            Some(Route::Offline { since, .. }) => Lookup::Offline(since.elapsed()),
            None => Lookup::Unknown,
        }
    }

    /// Whether any session routes `name`, online or within its offline grace.
    pub fn is_routed(&self, name: &str) -> bool {
        let mut state = self.lock();
        self.expire(&mut state);
        state.routes.contains_key(name)
    }

    /// How many endpoints `account_id` has online (all, and TCP ones), not counting the names
    /// in `excluding`: the names a session is about to bind again (taking over its own names
    /// after a reconnect, or joining its pool) are not added on top of themselves. A pool
    /// counts once, however many members it has; offline names do not count.
    pub fn online_usage(&self, account_id: &str, excluding: &[String]) -> crate::auth::Usage {
        let state = self.lock();
        let mut usage = crate::auth::Usage::default();
        for (name, route) in &state.routes {
            let online = matches!(route, Route::Online { account_id: a, .. } if a == account_id);
            if online && !excluding.contains(name) {
                usage.endpoints += 1;
                // TCP endpoints are `tcp:<port>` (`tcp::endpoint_name`).
                if name.starts_with("tcp:") {
                    usage.tcp += 1;
                }
            }
        }
        usage
    }

    /// Snapshot of sessions, optionally of one account.
    pub fn sessions(&self, account_id: Option<&str>) -> Vec<SessionInfo> {
        let state = self.lock();
        let mut out: Vec<SessionInfo> = state
            .sessions
            .values()
            .filter(|s| account_id.is_none_or(|a| s.info.account_id == a))
            .map(|s| s.info.clone())
            .collect();
        out.sort_by_key(|a| a.connected_at);
        out
    }

    /// Closes sessions matching `pred` for `code`; returns how many.
    pub fn close(
        &self,
        pred: impl Fn(&SessionInfo) -> bool,
        code: CloseCode,
        message: &str,
    ) -> usize {
        let state = self.lock();
        let mut n = 0;
        for entry in state.sessions.values().filter(|e| pred(&e.info)) {
            entry.closer.close(code, message);
            n += 1;
        }
        n
    }

    fn expire(&self, state: &mut State) {
        let grace = self.offline_grace;
        state.routes.retain(|_, r| match r {
            Route::Offline { since, .. } => since.elapsed() < grace,
            Route::Online { .. } => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    /// A real h2 client handle over an in-memory pipe, and the pipe's other end (keep it alive,
    /// or drop it to make the connection close).
    async fn sender() -> (SendRequest<Body>, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(ours))
                .await
                .unwrap();
        tokio::spawn(conn);
        (sender, theirs)
    }

    fn info(session: &str, account: &str, names: &[&str]) -> SessionInfo {
        SessionInfo {
            session_id: session.into(),
            account_id: account.into(),
            authtoken_id: "t".into(),
            peer: "127.0.0.1:1".into(),
            connected_at: SystemTime::now(),
            agent: "test".into(),
            endpoints: names
                .iter()
                .map(|n| BoundEndpoint {
                    proto: burrow_proto::tunnel::EndpointProto::Http,
                    name: n.to_string(),
                    url: String::new(),
                    https_url: None,
                })
                .collect(),
        }
    }

    fn online(registry: &Registry, name: &str) -> usize {
        match registry.lookup(name) {
            Lookup::Online { senders, .. } => senders.len(),
            _ => 0,
        }
    }

    #[tokio::test]
    async fn pools_share_a_name_until_their_last_member_leaves() {
        let registry = Registry::new(Duration::from_secs(60));
        let pooled = vec!["web".to_owned()];
        let (a, _pa) = sender().await;
        let (b, _pb) = sender().await;
        let (closer_a, closer_b) = (Closer::default(), Closer::default());
        registry
            .bind(info("a", "acct", &["web"]), a, closer_a.clone(), &pooled)
            .unwrap();
        registry
            .bind(info("b", "acct", &["web"]), b, closer_b.clone(), &pooled)
            .unwrap();
        assert_eq!(online(&registry, "web"), 2);
        assert!(
            closer_a.reason().is_none(),
            "joining a pool is not a takeover"
        );

        // Another account can neither join nor take it.
        let (c, _pc) = sender().await;
        assert_eq!(
            registry.bind(info("c", "other", &["web"]), c, Closer::default(), &pooled),
            Err(BindError::Taken("web".into()))
        );

        assert!(registry.unbind("a").is_empty(), "b still serves it");
        assert_eq!(online(&registry, "web"), 1);
        let released = registry.unbind("b");
        assert_eq!(released.len(), 1);
        assert!(matches!(registry.lookup("web"), Lookup::Offline(_)));
    }

    #[tokio::test]
    async fn without_pool_on_both_sides_the_newcomer_takes_over() {
        let registry = Registry::new(Duration::from_secs(60));
        let (a, _pa) = sender().await;
        let (b, _pb) = sender().await;
        let closer_a = Closer::default();
        registry
            .bind(
                info("a", "acct", &["web"]),
                a,
                closer_a.clone(),
                &["web".into()],
            )
            .unwrap();
        registry
            .bind(info("b", "acct", &["web"]), b, Closer::default(), &[])
            .unwrap();
        assert_eq!(
            closer_a.reason().map(|r| r.code),
            Some(CloseCode::TakenOver)
        );
        assert_eq!(online(&registry, "web"), 1);
        // The replaced session leaving does not take the name offline.
        assert!(registry.unbind("a").is_empty());
        assert_eq!(online(&registry, "web"), 1);
    }

    #[tokio::test]
    async fn online_usage_counts_the_accounts_online_names_except_the_ones_rebound() {
        let registry = Registry::new(Duration::from_secs(60));
        let (a, _pa) = sender().await;
        let (b, _pb) = sender().await;
        let (c, _pc) = sender().await;
        registry
            .bind(
                info("a", "acct", &["web", "tcp:20000"]),
                a,
                Closer::default(),
                &[],
            )
            .unwrap();
        registry
            .bind(info("b", "acct", &["api"]), b, Closer::default(), &[])
            .unwrap();
        registry
            .bind(
                info("c", "other", &["tcp:20001"]),
                c,
                Closer::default(),
                &[],
            )
            .unwrap();
        let usage = |excluding: &[&str]| {
            let excluding: Vec<String> = excluding.iter().map(|s| s.to_string()).collect();
            let u = registry.online_usage("acct", &excluding);
            (u.endpoints, u.tcp)
        };
        assert_eq!(usage(&[]), (3, 1));
        // A reconnecting agent binding its own names again is not counted twice.
        assert_eq!(usage(&["web", "tcp:20000"]), (1, 0));
        // Another account's names are neither counted nor excluded.
        assert_eq!(usage(&["tcp:20001"]), (3, 1));
        // Offline names do not count.
        registry.unbind("b");
        assert_eq!(usage(&[]), (2, 1));
    }

    #[tokio::test]
    async fn lookups_rotate_and_skip_closed_connections() {
        let registry = Registry::new(Duration::from_secs(60));
        let pooled = vec!["web".to_owned()];
        let (a, pipe_a) = sender().await;
        let (b, _pb) = sender().await;
        registry
            .bind(info("a", "acct", &["web"]), a, Closer::default(), &pooled)
            .unwrap();
        registry
            .bind(info("b", "acct", &["web"]), b, Closer::default(), &pooled)
            .unwrap();
        let first = |r: &Registry| match r.lookup("web") {
            Lookup::Online { senders, .. } => senders.len(),
            _ => 0,
        };
        assert_eq!(first(&registry), 2);
        // Member a's connection dies: lookups stop offering it.
        drop(pipe_a);
        crate::test_support::eventually("the closed member is no longer offered", || {
            first(&registry) == 1
        })
        .await;
    }
}
