//! The relay's subscription to the api's `RelayFeed` (tonic server streaming): every event is
//! applied to [`crate::edge::EdgeState`] as it arrives, so a policy, reservation, domain or plan
//! change reaches live endpoints without an agent reconnecting.
//!
//! The stream starts with a full snapshot. When it breaks (api restart, network) the relay keeps
//! enforcing what it has and resubscribes with backoff (0.2 s doubling to 5 s); the new
//! snapshot replaces the old state, so nothing missed in between is lost.

use crate::edge::EdgeState;
use burrow_common::Secret;
use burrow_proto::{
    grpc_auth::Bearer,
    relay::{WatchRequest, relay_feed_client::RelayFeedClient},
};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

/// Follows the feed at `url` until `shutdown`.
pub async fn follow(
    edge: Arc<EdgeState>,
    url: String,
    key: Secret,
    relay_id: String,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = watch(&edge, &url, &key, &relay_id, &mut backoff) => r,
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
    edge: &EdgeState,
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
        edge.apply(event);
    }
    Ok(())
}
