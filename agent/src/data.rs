//! Data connections (agent side): the bulk path for TCP and TLS endpoints.
//!
//! While a session serves TCP or TLS endpoints, [`keep_pool`] keeps [`POOL_SIZE`] data
//! connections open to the relay: TLS with ALPN `burrow-data/1` over a socket read through a
//! 256 KiB buffer (rustls otherwise reads 4 KiB at a time), each introduced by a `DataHello`
//! with the session's `data_key`. The relay parks them; when it hands one a visitor (a
//! `DataOpen` frame) the connection is spliced to the local service and a replacement is
//! opened at once. The pool ends with the session. See `relay/src/data.rs` and
//! `docs/transport.md`.

use crate::forward::Forwarder;
use burrow_proto::tunnel::{DataHello, DataOpen, read_frame, write_frame};
use rustls::pki_types::ServerName;
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::{io::BufReader, net::TcpStream};
use tokio_util::sync::CancellationToken;

/// Idle data connections kept per session (the relay parks at most 4). With 2, most of a burst
/// of 8 concurrent visitors fell back to h2 streams while replacements handshook
/// (docs/BENCHMARKS.md, bulk 8 streams).
pub const POOL_SIZE: usize = 4;
/// Read buffer beneath rustls on a data connection.
const SOCKET_BUFFER: usize = 256 * 1024;
/// Pause after a data connection could not be opened or was refused.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where and how data connections are opened.
#[derive(Clone)]
pub struct DataPool {
    /// Relay agent address.
    pub relay: String,
    /// TLS client config with ALPN `burrow-data/1`.
    pub tls: Arc<rustls::ClientConfig>,
    /// Name the relay's certificate must carry.
    pub server_name: ServerName<'static>,
    /// The session's introduction.
    pub hello: DataHello,
    /// Forwarders by endpoint registry name.
    pub routes: Arc<HashMap<String, Forwarder>>,
}

/// Keeps [`POOL_SIZE`] idle data connections open until `stop`.
pub async fn keep_pool(pool: DataPool, stop: CancellationToken) {
    let slots: Vec<_> = (0..POOL_SIZE)
        .map(|_| tokio::spawn(slot(pool.clone(), stop.clone())))
        .collect();
    for s in slots {
        let _ = s.await;
    }
}

/// One pool slot: open, wait to be used, hand over, open the next.
async fn slot(pool: DataPool, stop: CancellationToken) {
    loop {
        let waited = tokio::select! {
            _ = stop.cancelled() => return,
            r = open_and_wait(&pool) => r,
        };
        match waited {
            Ok((conn, open)) => {
                let forwarder = pool.routes.get(&open.endpoint).cloned();
                tokio::spawn(async move {
                    match forwarder {
                        Some(f) => f.splice(conn, &open).await,
                        None => {
                            tracing::warn!(endpoint = %open.endpoint, "data connection for an endpoint this agent does not serve")
                        }
                    }
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "data connection failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
        }
    }
}

type DataConn = tokio_rustls::client::TlsStream<BufReader<TcpStream>>;

/// Opens a data connection and waits (idle) until the relay hands it a visitor.
async fn open_and_wait(pool: &DataPool) -> Result<(DataConn, DataOpen), String> {
    let tcp = TcpStream::connect(&pool.relay)
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let io = BufReader::with_capacity(SOCKET_BUFFER, tcp);
    let mut conn = tokio_rustls::TlsConnector::from(pool.tls.clone())
        .connect(pool.server_name.clone(), io)
        .await
        .map_err(|e| e.to_string())?;
    write_frame(&mut conn, &pool.hello)
        .await
        .map_err(|e| e.to_string())?;
    let open: DataOpen = read_frame(&mut conn).await.map_err(|e| e.to_string())?;
    Ok((conn, open))
}
