//! The relay's subscription to the api's `RelayFeed` (tonic server streaming): every event is
//! applied to [`crate::edge::EdgeState`] as it arrives, so a policy, reservation, domain or plan
//! change reaches live endpoints without an agent reconnecting.
//!
//! The stream starts with a full snapshot. When it breaks (api restart, network) the relay keeps
//! enforcing what it has and resubscribes with backoff (0.2 s doubling to 5 s); the new
//! snapshot replaces the old state, so nothing missed in between is lost.
//!
//! When a name or domain changes hands (reserved by another account, a domain removed or
//! verified by another account), sessions still serving it are closed, telling their agents
//! why: a claim never leaves the previous holder serving it.

use crate::Relay;
use burrow_common::Secret;
use burrow_proto::{
    grpc_auth::Bearer,
    relay::{WatchRequest, feed_event::Event, relay_feed_client::RelayFeedClient},
    tunnel::CloseCode,
};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Largest feed message accepted: a snapshot carries every policy, reservation, domain and
/// plan in one message, far beyond tonic's 4 MiB default on a large platform.
const MAX_FEED_MESSAGE: usize = 256 << 20;

/// Follows the feed at `url` until `shutdown`.
pub async fn follow(
    relay: Arc<Relay>,
    url: String,
    key: Secret,
    relay_id: String,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = watch(&relay, &url, &key, &relay_id, &mut backoff) => r,
        };
        match result {
            Ok(()) => tracing::info!(%url, "relay feed ended; resubscribing"),
            Err(e) => {
                tracing::warn!(%url, error = %e, "relay feed unavailable; enforcing the last state")
            }
        }
        metrics::counter!("burrow_relay_feed_resubscribes_total").increment(1);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn watch(
    relay: &Relay,
    url: &str,
    key: &Secret,
    relay_id: &str,
    backoff: &mut Duration,
) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("bad feed_url: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let bearer = Bearer::new(key.expose())
        .ok_or_else(|| "the internal key is not a valid header value".to_owned())?;
    let mut stream = RelayFeedClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(MAX_FEED_MESSAGE)
        .watch(WatchRequest {
            relay_id: relay_id.to_owned(),
        })
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    tracing::info!(%url, "subscribed to the relay feed");
    while let Some(event) = stream
        .message()
        .await
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
    {
        *backoff = Duration::from_millis(200);
        metrics::counter!("burrow_relay_feed_events_total").increment(1);
        let claims_changed = matches!(
            event.event,
            Some(Event::Snapshot(_) | Event::Name(_) | Event::Domain(_))
        );
        relay.edge.apply(event);
        if claims_changed {
            close_unentitled(relay);
        }
    }
    Ok(())
}

/// Closes sessions serving a name or domain their account no longer holds: a name another
/// account reserved, a domain removed or moved to another account. Their agents are told why.
fn close_unentitled(relay: &Relay) {
    for session in relay.registry.sessions(None) {
        let why = session
            .endpoints
            .iter()
            .find_map(|e| relay.edge.unentitled(&session.account_id, &e.name));
        if let Some(why) = why {
            let id = session.session_id.clone();
            relay
                .registry
                .close(|s| s.session_id == id, CloseCode::Kicked, &why);
            tracing::info!(session_id = %id, account_id = %session.account_id, why, "closed a session that lost its name");
        }
    }
}
