//! The one `LISTEN burrow_feed` connection of the api: notifications in, [`Message`]s out.
//!
//! After every (re)connection it publishes [`Message::Resync`]: notifications sent while it was
//! not listening are lost, so each stream replaces its relay's state with a fresh snapshot.
//! A notification whose events cannot be read (database trouble) also resyncs the streams.

use super::{CHANNEL, Feed, Message, load};
use sqlx::postgres::PgListener;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Listens until `shutdown`, reconnecting with backoff (100 ms doubling to 5 s).
pub async fn run(feed: Feed, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut l = PgListener::connect_with(&feed.db).await?;
            l.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = connected => l,
        };
        match listener {
            Ok(mut listener) => {
                backoff = Duration::from_millis(100);
                tracing::info!(channel = CHANNEL, "feed listener connected");
                feed.publish(Message::Resync);
                if forward(&feed, &mut listener, &shutdown).await.is_none() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "feed listener cannot connect to the database"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Forwards notifications until the connection is lost (`Some`) or `shutdown` (`None`).
async fn forward(
    feed: &Feed,
    listener: &mut PgListener,
    shutdown: &CancellationToken,
) -> Option<()> {
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return None,
            r = listener.try_recv() => r,
        };
        let notification = match received {
            Ok(Some(n)) => n,
            Ok(None) => {
                tracing::warn!("feed listener lost its database connection");
                return Some(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "feed listener failed");
                return Some(());
            }
        };
        let change = match serde_json::from_str::<load::Change>(notification.payload()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, payload = notification.payload(), "unknown feed notification");
                continue;
            }
        };
        match load::events(&feed.db, change).await {
            Ok(events) => {
                metrics::counter!("burrow_api_feed_changes_total").increment(events.len() as u64);
                for e in events {
                    feed.publish(Message::Event(e));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a feed change; relays get a snapshot");
                feed.publish(Message::Resync);
            }
        }
    }
}
