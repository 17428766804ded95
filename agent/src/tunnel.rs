//! One tunnel session and the reconnect loop around it.
//!
//! [`run`] connects, authenticates, binds every endpoint of the [`TunnelSpec`]s on one session,
//! serves visitor streams until the connection ends, and reconnects with [`Backoff`] —
//! rebinding the same names and ports, including ones the relay picked — until shutdown or a
//! rejection that retrying cannot fix (bad token, name taken). Each visitor stream names its
//! endpoint in [`ENDPOINT_HEADER`]; that picks the [`Forwarder`].
//!
//! With several relays (`--relay a:port,b:port`), a lost session or a failed or retryably
//! refused attempt moves on to the next relay (round robin, same backoff): any relay of the
//! platform serves the endpoint, and the others forward visitors to it.

use crate::{
    AgentConfig,
    backoff::Backoff,
    forward::Forwarder,
    inspector::{BoxFuture, Inspector, Replayer},
};
use burrow_proto::tunnel::{
    BindRequest, BoundEndpoint, CONTROL_AUTHORITY, CONTROL_BOUND_PATH, CONTROL_CLOSING_PATH,
    CloseCode, Closing, DATA_ALPN, ENDPOINT_HEADER, EndpointProto, Hello, PROTOCOL_VERSION,
    RejectCode, ServerMessage, TCP_AUTHORITY, read_frame, write_frame,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A session that lasted this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// What the agent tells its user.
#[derive(Debug, Clone)]
pub enum Event {
    /// An endpoint is live (first time or after a reconnect).
    Online {
        /// Which spec (index into the specs given to [`run`]).
        index: usize,
        /// The endpoint as bound.
        endpoint: BoundEndpoint,
        /// Whether this follows a lost connection.
        reconnected: bool,
    },
    /// The connection was lost; retrying after `retry_in`.
    Disconnected {
        /// Why.
        reason: String,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
}

/// Errors that end the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The relay rejected the authtoken.
    #[error("the relay rejected the authtoken: {0}")]
    TokenRejected(String),
    /// The relay refused the session for a reason retrying cannot fix.
    #[error("the relay refused the tunnel: {0}")]
    Refused(String),
    /// The relay closed the session on purpose (an operator, or another agent taking the name).
    #[error("the relay closed the tunnel: {0}")]
    Closed(String),
    /// Local setup failed (CA file, relay address).
    #[error("{0}")]
    Setup(String),
}

/// What one endpoint exposes.
#[derive(Debug, Clone)]
pub struct TunnelSpec {
    /// Public protocol: an HTTP endpoint, a TCP port or TLS passthrough.
    pub proto: EndpointProto,
    /// The local service.
    pub upstream: crate::upstream::Upstream,
    /// Requested name, or `None` for a relay-chosen one.
    pub name: Option<String>,
    /// Serve the name together with other agents of the account (`--pool`).
    pub pool: bool,
    /// A custom domain served instead of a name (`--domain`).
    pub domain: Option<String>,
    /// A traffic policy document for the relay to enforce (`--traffic-policy-file`).
    pub traffic_policy: Option<String>,
}

/// The forwarders of the current session by endpoint name; the inspector replays through it.
#[derive(Clone, Default)]
pub struct Routes(Arc<RwLock<HashMap<String, Forwarder>>>);

impl Routes {
    fn get(&self, endpoint: &str) -> Option<Forwarder> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
            .cloned()
    }

    fn set(&self, routes: HashMap<String, Forwarder>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = routes;
    }
}

impl Replayer for Routes {
    fn replay(
        &self,
        endpoint: &str,
        req: Request<burrow_common::proxy::Body>,
    ) -> BoxFuture<'_, Result<Response<burrow_common::proxy::Body>, String>> {
        let forwarder = self.get(endpoint);
        let endpoint = endpoint.to_owned();
        Box::pin(async move {
            match forwarder {
                Some(f) => Ok(f.forward(req).await.unwrap_or_else(|never| match never {})),
                None => Err(format!("the endpoint {endpoint:?} is not bound right now")),
            }
        })
    }
}

/// What the agent records about the traffic it forwards.
#[derive(Clone, Default)]
pub struct Observers {
    /// Captures HTTP exchanges for the inspector, when it runs.
    pub inspector: Option<Arc<Inspector>>,
    /// Shared with the inspector's replay.
    pub routes: Routes,
}

enum Outcome {
    Shutdown,
    Lost { reason: String, lasted: Duration },
}

/// Runs the endpoints in `specs` on one session until `shutdown`, reporting progress through
/// `events`.
pub async fn run(
    config: &AgentConfig,
    specs: Vec<TunnelSpec>,
    observers: Observers,
    shutdown: CancellationToken,
    mut events: impl FnMut(Event),
) -> Result<(), AgentError> {
    let session_tls = crate::tls::relay_config(&config.ca_file).map_err(AgentError::Setup)?;
    let mut data_tls = session_tls.clone();
    data_tls.alpn_protocols = vec![DATA_ALPN.to_vec()];
    let (session_tls, data_tls) = (Arc::new(session_tls), Arc::new(data_tls));
    let relays = config
        .relays()
        .into_iter()
        .map(|addr| {
            Ok(RelayTls {
                config: session_tls.clone(),
                data_config: data_tls.clone(),
                server_name: server_name(&addr)?,
                addr,
            })
        })
        .collect::<Result<Vec<_>, AgentError>>()?;
    let mut on = 0;
    let forwarders = specs
        .iter()
        .map(|s| Forwarder::new(&s.upstream).map_err(AgentError::Setup))
        .collect::<Result<Vec<_>, _>>()?;
    // What to ask for on every (re)connect: the names and ports held before, once bound.
    let mut binds: Vec<BindRequest> = specs
        .iter()
        .map(|s| BindRequest {
            proto: s.proto,
            name: s.name.clone(),
            port: None,
            pool: s.pool,
            domain: s.domain.clone(),
            traffic_policy: s.traffic_policy.clone(),
        })
        .collect();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut reconnected = false;
    loop {
        let relay_tls = &relays[on % relays.len().max(1)];
        let attempt = session(
            config,
            relay_tls,
            &forwarders,
            &observers,
            binds.clone(),
            &shutdown,
            |endpoints| {
                for (index, endpoint) in endpoints.into_iter().enumerate() {
                    if let Some(bind) = binds.get_mut(index) {
                        remember(bind, &endpoint);
                    }
                    events(Event::Online {
                        index,
                        endpoint,
                        reconnected,
                    });
                }
            },
        )
        .await;
        let reason = match attempt {
            Ok(Outcome::Shutdown) => return Ok(()),
            Ok(Outcome::Lost { reason, lasted }) => {
                if lasted >= STABLE_AFTER {
                    backoff.reset();
                }
                reconnected = true;
                reason
            }
            Err(SessionError::Fatal(e)) => return Err(e),
            Err(SessionError::Retry(reason)) => reason,
        };
        let reason = if relays.len() > 1 {
            on = (on + 1) % relays.len();
            format!("{reason}; next relay: {}", relays[on].addr)
        } else {
            reason
        };
        let retry_in = backoff.next_delay();
        events(Event::Disconnected { reason, retry_in });
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(retry_in) => {}
        }
    }
}

/// Remembers what the relay bound, so a reconnect asks for the same name or port.
fn remember(bind: &mut BindRequest, endpoint: &BoundEndpoint) {
    if bind.domain.is_some() {
        // The domain is the name; there is nothing else to hold on to.
        return;
    }
    match endpoint.proto {
        EndpointProto::Http => bind.name = Some(endpoint.name.clone()),
        EndpointProto::Tls => {
            bind.name = endpoint
                .name
                .strip_prefix("tls:")
                .map(str::to_owned)
                .or(bind.name.take());
        }
        EndpointProto::Tcp => {
            bind.port = endpoint
                .url
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok());
        }
    }
}

enum SessionError {
    Fatal(AgentError),
    Retry(String),
}

/// How to reach one relay: its address, TLS settings and the name its certificate must carry.
struct RelayTls {
    /// `host:port` of its agent listener.
    addr: String,
    config: Arc<rustls::ClientConfig>,
    /// The same trust, ALPN `burrow-data/1`: data connections.
    data_config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

async fn session(
    config: &AgentConfig,
    relay_tls: &RelayTls,
    forwarders: &[Forwarder],
    observers: &Observers,
    binds: Vec<BindRequest>,
    shutdown: &CancellationToken,
    on_online: impl FnOnce(Vec<BoundEndpoint>),
) -> Result<Outcome, SessionError> {
    let retry = |what: &str| {
        let what = what.to_owned();
        move |e: Box<dyn std::error::Error>| SessionError::Retry(format!("{what}: {e}"))
    };
    let connect = async {
        let tcp = TcpStream::connect(&relay_tls.addr)
            .await
            .map_err(|e| retry(&format!("connecting to relay {}", relay_tls.addr))(e.into()))?;
        let _ = tcp.set_nodelay(true);
        tokio_rustls::TlsConnector::from(relay_tls.config.clone())
            .connect(relay_tls.server_name.clone(), tcp)
            .await
            .map_err(|e| retry("TLS handshake with relay")(e.into()))
    };
    let mut stream = tokio::select! {
        _ = shutdown.cancelled() => return Ok(Outcome::Shutdown),
        r = tokio::time::timeout(CONNECT_TIMEOUT, connect) => r
            .map_err(|_| SessionError::Retry(format!("connecting to relay {} timed out", relay_tls.addr)))??,
    };
    let hello = Hello {
        version: PROTOCOL_VERSION,
        authtoken: config.authtoken.expose().to_owned(),
        agent: format!("burrow/{}", env!("CARGO_PKG_VERSION")),
        binds,
    };
    write_frame(&mut stream, &hello)
        .await
        .map_err(|e| retry("sending handshake")(e.into()))?;
    let answer: ServerMessage = tokio::time::timeout(CONNECT_TIMEOUT, read_frame(&mut stream))
        .await
        .map_err(|_| SessionError::Retry("relay did not answer the handshake".into()))?
        .map_err(|e| retry("reading handshake answer")(e.into()))?;
    let bound = match answer {
        ServerMessage::Rejected { code, message } => {
            return Err(match code {
                RejectCode::AuthFailed => SessionError::Fatal(AgentError::TokenRejected(message)),
                c if c.is_retryable() => SessionError::Retry(message),
                _ => SessionError::Fatal(AgentError::Refused(message)),
            });
        }
        ServerMessage::Welcome {
            endpoints,
            session_id,
            data_key,
        } => (endpoints, session_id, data_key),
    };
    let (bound, session_id, data_key) = bound;
    if config.relays().len() > 1 {
        // Which of several relays serves the tunnel is worth knowing (the events do not say).
        eprintln!("burrow: on relay {}", relay_tls.addr);
    }
    // Visitor streams name their endpoint as the relay's registry does.
    let routes: Arc<HashMap<String, Forwarder>> = Arc::new(
        bound
            .iter()
            .zip(forwarders)
            .map(|(ep, f)| (ep.name.clone(), f.clone()))
            .collect(),
    );
    observers.routes.set((*routes).clone());
    // Byte-stream endpoints get the bulk path: a pool of data connections for this session.
    let pool_stop = CancellationToken::new();
    let _end_pool = pool_stop.clone().drop_guard();
    let streams = bound
        .iter()
        .any(|e| matches!(e.proto, EndpointProto::Tcp | EndpointProto::Tls));
    if let (true, Some(data_key)) = (streams, data_key) {
        let pool = crate::data::DataPool {
            relay: relay_tls.addr.clone(),
            tls: relay_tls.data_config.clone(),
            server_name: relay_tls.server_name.clone(),
            hello: burrow_proto::tunnel::DataHello {
                session_id,
                data_key,
            },
            routes: routes.clone(),
        };
        tokio::spawn(crate::data::keep_pool(pool, pool_stop.clone()));
    }
    let inspector = observers.inspector.clone();
    let started = std::time::Instant::now();

    // The relay's "bound" control request arrives on the h2 connection once visitors can be
    // routed; only then is the tunnel reported online.
    let (bound_tx, mut bound_rx) = mpsc::unbounded_channel::<Control>();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let routes = routes.clone();
        let bound_tx = bound_tx.clone();
        let inspector = inspector.clone();
        async move {
            if req.uri().authority().map(|a| a.as_str()) == Some(CONTROL_AUTHORITY) {
                return Ok(control(req, &bound_tx).await);
            }
            let endpoint = req
                .headers()
                .get(ENDPOINT_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let Some(forwarder) = routes.get(&endpoint) else {
                return Ok(unknown_endpoint(&endpoint));
            };
            let websocket = req.method() == http::Method::CONNECT
                && req
                    .extensions()
                    .get::<hyper::ext::Protocol>()
                    .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"));
            match req.uri().authority().map(|a| a.as_str()) {
                Some(TCP_AUTHORITY) => {
                    // Counted as an open connection until its local → visitor side ends.
                    let open = inspector.as_ref().map(|i| i.track_connection());
                    let resp = forwarder.forward_tcp(req).await?;
                    Ok(resp.map(|body| {
                        body.map_frame(move |frame| {
                            let _open = &open;
                            frame
                        })
                        .boxed()
                    }))
                }
                _ if websocket => forwarder.forward_websocket(req).await,
                _ => {
                    let req = req.map(burrow_common::proxy::incoming);
                    match &inspector {
                        Some(inspector) => {
                            let (req, exchange) = inspector.tap_request(&endpoint, req);
                            let resp = forwarder.forward(req).await?;
                            Ok(exchange.tap_response(resp))
                        }
                        None => forwarder.forward(req).await,
                    }
                }
            }
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(burrow_proto::tunnel::KEEPALIVE_INTERVAL)
        .keep_alive_timeout(burrow_proto::tunnel::KEEPALIVE_TIMEOUT)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        // Lets the relay open WebSockets as extended CONNECT streams (RFC 8441).
        .enable_connect_protocol()
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut on_online = Some(on_online);
    let mut closing: Option<Closing> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                // The closing notice and the end of the connection can be ready together:
                // take any notice still queued before deciding.
                while let Ok(message) = bound_rx.try_recv() {
                    if let Control::Closing(c) = message {
                        closing = Some(c);
                    }
                }
                // A close the relay announced decides whether to come back.
                if let Some(c) = closing.filter(|c| !c.code.should_reconnect()) {
                    return Err(SessionError::Fatal(match c.code {
                        CloseCode::Revoked => AgentError::TokenRejected(c.message),
                        _ => AgentError::Closed(c.message),
                    }));
                }
                return Ok(Outcome::Lost {
                    reason: match r {
                        Ok(()) => "relay closed the session".into(),
                        Err(e) => format!("session error: {e}"),
                    },
                    lasted: started.elapsed(),
                });
            }
            Some(message) = bound_rx.recv() => match message {
                Control::Bound(endpoints) => {
                    if let Some(notify) = on_online.take() {
                        notify(endpoints);
                    }
                }
                Control::Closing(c) => closing = Some(c),
            },
            _ = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                return Ok(Outcome::Shutdown);
            }
        }
    }
}

/// Control messages from the relay, as the h2 service hands them to the session loop.
enum Control {
    Bound(Vec<BoundEndpoint>),
    Closing(Closing),
}

/// Handles a relay → agent control request.
async fn control(
    req: Request<Incoming>,
    tx: &mpsc::UnboundedSender<Control>,
) -> Response<burrow_common::proxy::Body> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let message = match (path.as_str(), body) {
        (CONTROL_BOUND_PATH, Ok(bytes)) => serde_json::from_slice(&bytes).ok().map(Control::Bound),
        (CONTROL_CLOSING_PATH, Ok(bytes)) => {
            serde_json::from_slice(&bytes).ok().map(Control::Closing)
        }
        _ => None,
    };
    let status = match message {
        Some(m) => {
            let _ = tx.send(m);
            StatusCode::NO_CONTENT
        }
        None if matches!(path.as_str(), CONTROL_BOUND_PATH | CONTROL_CLOSING_PATH) => {
            StatusCode::BAD_REQUEST
        }
        None => StatusCode::NOT_FOUND,
    };
    let mut resp = Response::new(Empty::new().map_err(|n| match n {}).boxed());
    *resp.status_mut() = status;
    resp
}

/// 404 for a stream naming an endpoint this session does not serve.
fn unknown_endpoint(endpoint: &str) -> Response<burrow_common::proxy::Body> {
    burrow_common::proxy::text_response(
        StatusCode::NOT_FOUND,
        format!("Burrow agent: this agent does not serve the endpoint {endpoint:?}\n"),
        "agent",
    )
}

fn server_name(relay: &str) -> Result<ServerName<'static>, AgentError> {
    let host = relay
        .rsplit_once(':')
        .map_or(relay, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| AgentError::Setup(format!("relay host {host:?} is not a valid name: {e}")))
}
