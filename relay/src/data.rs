//! Data connections: the bulk path for TCP and TLS-passthrough endpoints.
//!
//! Next to its session (one TLS connection carrying HTTP/2), an agent serving TCP or TLS
//! endpoints keeps a few *data connections* open to the same listener: TLS with ALPN
//! [`DATA_ALPN`], opened with a [`DataHello`] naming the session and its `data_key` (handed out
//! in the `Welcome`, so no second authentication round trip). The relay parks them idle here.
//! When a visitor connects to such an endpoint, the relay takes an idle data connection of
//! the serving session, writes one [`DataOpen`] frame and then splices the visitor's bytes
//! over it unframed, with large copy buffers — measured at about twice the throughput of an
//! h2 stream (`docs/transport.md`). Without an idle data connection the visitor rides an h2
//! stream on the session as before, so opening never waits for a handshake.

use crate::metering::{CountedIo, EndpointMeter};
use burrow_proto::tunnel::{DataHello, DataOpen, read_frame, write_frame};
use bytes::Bytes;
use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::Mutex,
    time::Duration,
};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_rustls::server::TlsStream;

/// Idle data connections a session may park; more are closed.
pub const MAX_IDLE_PER_SESSION: usize = 4;
/// Copy buffer per direction while a visitor is spliced.
const COPY_BUFFER: usize = 256 * 1024;
/// Time an agent gets to send its `DataHello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A data connection, accepted and authenticated.
pub type DataConn = TlsStream<TcpStream>;

struct Slot {
    key: String,
    idle: VecDeque<DataConn>,
}

/// Idle data connections by session.
#[derive(Default)]
pub struct DataConns {
    slots: Mutex<HashMap<String, Slot>>,
}

impl DataConns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts data connections for `session_id` presenting `key` from now on.
    pub fn open_session(&self, session_id: &str, key: &str) {
        self.lock().insert(
            session_id.to_owned(),
            Slot {
                key: key.to_owned(),
                idle: VecDeque::new(),
            },
        );
    }

    /// Forgets the session; its idle data connections close.
    pub fn close_session(&self, session_id: &str) {
        self.lock().remove(session_id);
    }

    /// Parks `conn` for the session `hello` names, if the key matches and there is room.
    pub fn offer(&self, hello: &DataHello, conn: DataConn) -> Result<(), &'static str> {
        let mut slots = self.lock();
        let slot = slots
            .get_mut(&hello.session_id)
            .ok_or("unknown or ended session")?;
        let matches: bool =
            subtle::ConstantTimeEq::ct_eq(slot.key.as_bytes(), hello.data_key.as_bytes()).into();
        if !matches {
            return Err("wrong data key");
        }
        if slot.idle.len() >= MAX_IDLE_PER_SESSION {
            return Err("too many idle data connections");
        }
        slot.idle.push_back(conn);
        Ok(())
    }

    /// An idle data connection of `session_id` that is still open, if one is parked. Parked
    /// connections the agent has closed meanwhile (it stopped its pool, or the network cut
    /// it) are dropped on the way.
    pub async fn take(&self, session_id: &str) -> Option<DataConn> {
        loop {
            let conn = self.lock().get_mut(session_id)?.idle.pop_front()?;
            if is_open(&conn).await {
                return Some(conn);
            }
        }
    }
}

/// Whether an idle data connection can still carry a visitor: nothing arrived on it since
/// its `DataHello` (an idle agent sends nothing; EOF or an alert means it is gone).
async fn is_open(conn: &DataConn) -> bool {
    let mut byte = [0u8; 1];
    // A zero timeout polls the peek once: pending means open and quiet.
    matches!(
        tokio::time::timeout(Duration::ZERO, conn.get_ref().0.peek(&mut byte)).await,
        Err(_elapsed)
    )
}

/// Reads the `DataHello` of a fresh data connection and parks it.
pub async fn accept(relay: &crate::Relay, mut conn: DataConn) -> Result<(), String> {
    let hello: DataHello = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut conn))
        .await
        .map_err(|_| "no DataHello in time".to_owned())?
        .map_err(|e| e.to_string())?;
    relay.data.offer(&hello, conn).map_err(|why| {
        tracing::debug!(session_id = %hello.session_id, why, "refusing a data connection");
        why.to_owned()
    })
}

/// Splices one visitor connection over `conn`: a [`DataOpen`] frame, the bytes already read
/// from the visitor (`prefix`, a peeked ClientHello), then both directions until each ends.
pub async fn relay_visitor(
    mut conn: DataConn,
    prefix: Bytes,
    visitor: TcpStream,
    peer: SocketAddr,
    public: Option<SocketAddr>,
    endpoint: &str,
    meter: EndpointMeter,
) -> std::io::Result<()> {
    meter.add_connection();
    let open = DataOpen {
        endpoint: endpoint.to_owned(),
        visitor: peer.to_string(),
        public: public.map(|p| p.to_string()),
    };
    write_frame(&mut conn, &open)
        .await
        .map_err(std::io::Error::other)?;
    if !prefix.is_empty() {
        meter.add_bytes_in(prefix.len() as u64);
        conn.write_all(&prefix).await?;
    }
    let mut visitor = CountedIo::visitor(visitor, meter);
    tokio::io::copy_bidirectional_with_sizes(&mut visitor, &mut conn, COPY_BUFFER, COPY_BUFFER)
        .await
        .map(|_| ())
}
