//! `RelayFeed`: what relays enforce at the edge — traffic policies, reserved names, verified
//! custom domains and account plans — streamed to every relay that calls `Watch`.
//!
//! # How changes travel
//! Triggers on `reserved_names`, `custom_domains` (verified or removed-while-verified),
//! `endpoint_policy_versions`, `accounts.plan` and `plans` (migration 0006) call
//! `pg_notify('burrow_feed', <key JSON>)`. Notifications are delivered at commit, so a change
//! made anywhere — this api, the worker's activities applying a provider webhook, an operator's
//! SQL — reaches relays, and a rolled-back change never does. One [`listener`] task per api
//! holds a `LISTEN` connection, turns each notification into [`FeedEvent`]s ([`load`]) and
//! publishes them on a `tokio::sync::broadcast`; every `Watch` stream ([`server`]) forwards them.
//!
//! # What a stream sees
//! First a `Snapshot` (everything, replacing what the relay held), then change events. A
//! stream that falls behind the broadcast (lagged), and every stream after the listener
//! (re)connects to PostgreSQL (notifications may have been missed meanwhile), gets a fresh
//! `Snapshot` instead: relays must treat a snapshot as a full replacement at any time. Events
//! may repeat what a snapshot already holds; applying them again is harmless.
//!
//! # Layout
//! - [`load`]: reading the snapshot and the events of one notification from PostgreSQL.
//! - [`listener`]: the `LISTEN burrow_feed` task.
//! - [`server`]: the tonic service (internal-key auth), reflection, and [`server::serve`].

pub mod listener;
pub mod load;
pub mod server;

pub use burrow_proto::relay::FeedEvent;
use tokio::sync::broadcast;

/// The PostgreSQL notification channel the triggers write to.
pub const CHANNEL: &str = "burrow_feed";

/// How many messages a stream may fall behind before it is resynchronized with a snapshot.
const BACKLOG: usize = 1024;

/// What the listener publishes to streams.
#[derive(Debug, Clone)]
pub enum Message {
    /// A change to forward.
    Event(FeedEvent),
    /// Changes may have been missed: send a fresh snapshot.
    Resync,
}

/// The fan-out point between the listener and the streams; cheap to clone.
#[derive(Clone)]
pub struct Feed {
    /// Where snapshots are read from.
    pub db: sqlx::PgPool,
    tx: broadcast::Sender<Message>,
}

impl Feed {
    /// A feed reading from `db`; start [`listener::run`] with it to publish changes.
    pub fn new(db: sqlx::PgPool) -> Self {
        Self {
            db,
            tx: broadcast::channel(BACKLOG).0,
        }
    }

    /// A receiver of every message published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Message> {
        self.tx.subscribe()
    }

    /// Publishes to every stream (none listening is fine).
    pub fn publish(&self, message: Message) {
        let _ = self.tx.send(message);
    }
}
