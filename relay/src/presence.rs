//! Relay presence and endpoint leases in Redis.
//!
//! Keys (all under the configured prefix):
//! - `relays` (set): ids of relays that announced themselves;
//! - `relay:<id>` (string, expires after 30 s, refreshed every 5 s): JSON [`RelayAnnouncement`],
//!   how the api finds each relay's `RelayControl` address and relays find each other's peer
//!   link;
//! - `lease:<name>` (string, expires after 15 s, refreshed every 5 s): id of the relay holding
//!   HTTP endpoint `<name>` (see [`crate::lease`]).
//!
//! Redis holds only what can be rebuilt: when it is unreachable the relay keeps serving its own
//! sessions and logs the failure (the api cannot list this relay's sessions, other relays
//! cannot forward to it); the next round after Redis returns writes everything again, without
//! a restart, even when the relay started during the outage ([`RedisLink`]).

use crate::lease;
use burrow_common::redis_link::{RedisLink, timed};
use burrow_proto::tunnel::BoundEndpoint;
use serde::{Deserialize, Serialize};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// What a relay publishes about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayAnnouncement {
    /// Relay id.
    pub relay_id: String,
    /// `http://host:port` of its `RelayControl` gRPC server.
    pub control_url: String,
    /// The relay's region label (`local` when an older relay announced none).
    #[serde(default = "default_region")]
    pub region: String,
    /// `host:port` of its public HTTP ingress.
    pub http_ingress: String,
    /// `http://host:port` of its relay-to-relay listener; empty when it has none (then other
    /// relays do not forward to it).
    #[serde(default)]
    pub peer_url: String,
}

fn default_region() -> String {
    burrow_proto::directory::DEFAULT_REGION.to_owned()
}

/// How often the announcement and the leases are written.
const ANNOUNCE_EVERY: Duration = lease::REFRESH_EVERY;
const ANNOUNCE_TTL_SECS: u64 = 30;

/// Handle to the relay's presence in Redis (a no-op when Redis is not configured or down).
pub struct Presence {
    link: Arc<RedisLink>,
    prefix: String,
    announcement: RelayAnnouncement,
    /// Names leased by this relay, rewritten every round whether Redis answered before or not.
    held: lease::Held,
}

impl Presence {
    /// Presence through `link`, writing keys under `prefix`. Nothing is written until
    /// [`Presence::announce_until`] runs or an endpoint is bound.
    pub fn new(link: Arc<RedisLink>, prefix: &str, announcement: RelayAnnouncement) -> Self {
        Self {
            link,
            prefix: prefix.to_owned(),
            announcement,
            held: lease::Held::default(),
        }
    }

    /// This relay's id.
    pub fn relay_id(&self) -> &str {
        &self.announcement.relay_id
    }

    /// Records that this relay now holds `endpoints` of `account_id` (leases its HTTP ones).
    /// Returns the names whose lease another account holds (taken between the bind check and
    /// now, on another relay): the caller must not serve them.
    pub async fn bound(&self, endpoints: &[BoundEndpoint], account_id: &str) -> Vec<String> {
        let names = lease::leased_names(endpoints);
        let value = lease::value(self.relay_id(), account_id);
        let Some(mut conn) = self.link.get().await else {
            self.held.hold(&names, &value);
            return Vec::new();
        };
        match lease::acquire(&mut conn, &self.prefix, &value, &names).await {
            Ok(refused) => {
                let ours: Vec<String> =
                    names.into_iter().filter(|n| !refused.contains(n)).collect();
                self.held.hold(&ours, &value);
                refused
            }
            Err(e) => {
                tracing::warn!(error = %e, ?names, "redis: taking endpoint leases failed (retried every 5 s)");
                self.held.hold(&names, &value);
                Vec::new()
            }
        }
    }

    /// Records that `endpoints` went offline here: their leases are kept (extended, never
    /// re-created) so no other account takes the names during the offline grace period.
    pub fn offline(&self, endpoints: &[BoundEndpoint]) {
        self.held.offline(&lease::leased_names(endpoints));
    }

    /// Records that this relay no longer holds `endpoints` (releases their leases).
    pub async fn unbound(&self, endpoints: &[BoundEndpoint]) {
        let groups = self.held.release(&lease::leased_names(endpoints));
        let Some(mut conn) = self.link.get().await else {
            return;
        };
        for (value, names) in groups {
            if let Err(e) = lease::release(&mut conn, &self.prefix, &value, &names).await {
                tracing::warn!(error = %e, ?names, "redis: releasing endpoint leases failed (they expire)");
            }
        }
    }

    /// The relay holding `name`'s lease and its announcement, when it is another relay with a
    /// peer link. `None` when nobody (or this relay) holds it, or Redis cannot tell.
    pub async fn holder(&self, name: &str) -> Option<RelayAnnouncement> {
        let mut conn = self.link.get().await?;
        let (id, _) = self.lease(&mut conn, name).await?;
        if id == self.announcement.relay_id {
            return None;
        }
        let key = format!("{}relay:{id}", self.prefix);
        let raw: Option<String> = timed(redis::cmd("GET").arg(&key).query_async(&mut conn))
            .await
            .ok()?;
        raw.and_then(|r| serde_json::from_str::<RelayAnnouncement>(&r).ok())
            .filter(|a| !a.peer_url.is_empty())
    }

    /// The relay holding `name`'s lease and the account it serves it for, when another relay
    /// holds it for a known account. `None` when nobody or this relay holds it, or Redis cannot
    /// tell (binds then go ahead: only this relay's registry is checked).
    pub async fn held_elsewhere(&self, name: &str) -> Option<(String, String)> {
        let mut conn = self.link.get().await?;
        let (relay_id, account) = self.lease(&mut conn, name).await?;
        (relay_id != self.announcement.relay_id).then_some((relay_id, account?))
    }

    async fn lease(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        name: &str,
    ) -> Option<(String, Option<String>)> {
        match lease::holder(conn, &self.prefix, name).await {
            Ok(value) => {
                let value = value?;
                let (relay, account) = lease::parse(&value);
                Some((relay.to_owned(), account.map(str::to_owned)))
            }
            Err(e) => {
                tracing::debug!(error = %e, %name, "redis: reading a lease failed");
                None
            }
        }
    }

    /// Announces the relay and refreshes its leases every few seconds until `shutdown`, then
    /// withdraws both.
    pub async fn announce_until(&self, shutdown: CancellationToken) {
        if !self.link.configured() {
            return;
        }
        let id = &self.announcement.relay_id;
        let key = format!("{}relay:{id}", self.prefix);
        let set = format!("{}relays", self.prefix);
        let body = serde_json::to_string(&self.announcement).unwrap_or_default();
        loop {
            if let Some(mut conn) = self.link.get().await {
                let announced: redis::RedisResult<()> = timed(
                    redis::pipe()
                        .set_ex(&key, &body, ANNOUNCE_TTL_SECS)
                        .ignore()
                        .sadd(&set, id)
                        .ignore()
                        .query_async(&mut conn),
                )
                .await;
                if let Err(e) = announced {
                    tracing::warn!(error = %e, "redis: announcing relay failed");
                }
                for (value, names) in self.held.by_value(true) {
                    match lease::refresh(&mut conn, &self.prefix, &value, &names).await {
                        Ok(n) if n < names.len() => tracing::warn!(
                            lost = names.len() - n,
                            "endpoint leases held by another relay now (an agent moved, or \
                             another relay took them during a Redis outage)"
                        ),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "redis: refreshing endpoint leases failed")
                        }
                    }
                }
                for (value, names) in self.held.by_value(false) {
                    if let Err(e) = lease::extend(&mut conn, &self.prefix, &value, &names).await {
                        tracing::warn!(error = %e, "redis: extending offline leases failed");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            }
        }
        if let Some(mut conn) = self.link.get().await {
            for (value, names) in self.held.all() {
                let _ = lease::release(&mut conn, &self.prefix, &value, &names).await;
            }
            let _: redis::RedisResult<()> = timed(
                redis::pipe()
                    .del(&key)
                    .ignore()
                    .srem(&set, id)
                    .ignore()
                    .query_async(&mut conn),
            )
            .await;
        }
    }
}
