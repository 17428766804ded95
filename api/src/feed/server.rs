//! The api's gRPC server (`grpc_listen`): `burrow.relay.v1.RelayFeed` for relays, behind the
//! internal key (`authorization: Bearer <internal_key>`, compared in constant time), and gRPC
//! server reflection (v1 and v1alpha, unauthenticated: it only describes the services).

use super::{Feed, FeedEvent, Message, load};
use burrow_proto::relay::{
    WatchRequest,
    relay_feed_server::{RelayFeed, RelayFeedServer},
};
use std::pin::Pin;
use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Messages a stream buffers towards a slow relay before its task waits.
const STREAM_BUFFER: usize = 64;

/// The `RelayFeed` service.
pub struct FeedService {
    feed: Feed,
    /// Ends every stream on api shutdown, so the server's graceful stop is not held up by
    /// streams that would otherwise never end.
    shutdown: CancellationToken,
}

type WatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<FeedEvent, Status>> + Send>>;

#[tonic::async_trait]
impl RelayFeed for FeedService {
    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let peer = request.remote_addr();
        let relay_id = request.into_inner().relay_id;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let span = tracing::info_span!("feed_stream", %relay_id, peer = ?peer);
        // Subscribe before the snapshot is read: a change committed in between is sent after
        // it (at worst twice), never lost.
        let changes = self.feed.subscribe();
        let db = self.feed.db.clone();
        let snapshot = move || {
            let db = db.clone();
            async move { load::snapshot_event(&db).await }
        };
        tokio::spawn(tracing::Instrument::instrument(
            stream(changes, snapshot, tx, self.shutdown.clone()),
            span,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Sends `message` unless the relay went away or the api is stopping (`false` then). A relay
/// that stops reading must not hold up shutdown.
async fn send(
    out: &mpsc::Sender<Result<FeedEvent, Status>>,
    message: Result<FeedEvent, Status>,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        sent = out.send(message) => sent.is_ok(),
    }
}

/// Feeds one relay: a `snapshot()`, then `changes`; a snapshot again after a lag or a resync.
async fn stream<S, F>(
    mut changes: broadcast::Receiver<Message>,
    snapshot: S,
    out: mpsc::Sender<Result<FeedEvent, Status>>,
    shutdown: CancellationToken,
) where
    S: Fn() -> F,
    F: Future<Output = Result<FeedEvent, sqlx::Error>>,
{
    metrics::gauge!("burrow_api_feed_streams").increment(1.0);
    tracing::info!("relay subscribed to the feed");
    let mut snapshot_due = true;
    loop {
        if snapshot_due {
            snapshot_due = false;
            let message = snapshot().await.map_err(|e| {
                tracing::warn!(error = %e, "cannot read the feed snapshot");
                Status::unavailable("the api cannot read its database; resubscribe later")
            });
            let failed = message.is_err();
            if !send(&out, message, &shutdown).await || failed {
                break;
            }
            continue;
        }
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = out.closed() => break,
            m = changes.recv() => m,
        };
        match message {
            Ok(Message::Event(e)) => {
                if !send(&out, Ok(e), &shutdown).await {
                    break;
                }
            }
            Ok(Message::Resync) => snapshot_due = true,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "relay fell behind the feed; sending a snapshot");
                snapshot_due = true;
            }
            Err(RecvError::Closed) => break,
        }
    }
    metrics::gauge!("burrow_api_feed_streams").decrement(1.0);
    tracing::info!("feed stream ended");
}

/// Why the gRPC server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection descriptors do not decode (a build problem).
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Serving failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The server task panicked.
    #[error("gRPC server task: {0}")]
    Panicked(String),
}

/// Serves `RelayFeed` and reflection on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    feed: Feed,
    internal_key: String,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(burrow_proto::FILE_DESCRIPTOR_SET)
    };
    let service = FeedService {
        feed,
        shutdown: shutdown.clone(),
    };
    let auth = burrow_proto::grpc_auth::require_bearer(internal_key, "RelayFeed");
    // Pings notice a relay that vanished without closing its connection (its stream task and
    // broadcast receiver are freed) within about 25 s.
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(15)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .add_service(RelayFeedServer::with_interceptor(service, auth))
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burrow_proto::relay::{NameClaim, Snapshot, feed_event::Event};
    use std::time::Duration;

    fn name(n: usize) -> FeedEvent {
        FeedEvent {
            event: Some(Event::Name(NameClaim {
                name: format!("n{n}"),
                account_id: String::new(),
            })),
        }
    }

    async fn next(rx: &mut mpsc::Receiver<Result<FeedEvent, Status>>) -> Event {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a message within 5 s")
            .expect("the stream is open")
            .expect("not an error")
            .event
            .expect("an event")
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_or_is_told_to_resync_gets_a_snapshot() {
        let (changes, rx) = broadcast::channel(4);
        let (out, mut received) = mpsc::channel(1);
        let snapshot = || async {
            Ok(FeedEvent {
                event: Some(Event::Snapshot(Snapshot::default())),
            })
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(stream(rx, snapshot, out, shutdown.clone()));
        assert!(matches!(next(&mut received).await, Event::Snapshot(_)));

        // Ten changes while the relay does not read: the broadcast keeps four, so the stream
        // lags and sends a snapshot instead of what it missed, then the ones still kept.
        for n in 0..10 {
            changes.send(Message::Event(name(n))).unwrap();
        }
        assert!(matches!(next(&mut received).await, Event::Snapshot(_)));
        for n in 6..10 {
            match next(&mut received).await {
                Event::Name(c) => assert_eq!(c.name, format!("n{n}")),
                other => panic!("expected n{n}: {other:?}"),
            }
        }

        changes.send(Message::Resync).unwrap();
        assert!(matches!(next(&mut received).await, Event::Snapshot(_)));

        // Shutdown ends the stream.
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the stream ends on shutdown")
            .unwrap();
        assert!(received.recv().await.is_none());
    }
}
