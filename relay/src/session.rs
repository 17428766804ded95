//! Agent sessions: TLS accept, handshake, authentication, binding, and the HTTP/2 connection
//! over which the relay forwards visitor requests to the agent.

use crate::{
    Relay,
    auth::{AuthError, Principal, Usage},
    registry::{BindError, Closer, Lookup, SessionInfo},
};
use burrow_common::proxy::{self, Body};
use burrow_proto::tunnel::{
    BoundEndpoint, CONTROL_AUTHORITY, CONTROL_BOUND_PATH, CONTROL_CLOSING_PATH, CloseCode, Closing,
    DATA_ALPN, EndpointProto, FrameError, Hello, PROTOCOL_VERSION, RejectCode, ServerMessage,
    read_frame, validate_label, write_frame,
};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rand::Rng;
use std::{net::SocketAddr, sync::Arc, time::Duration, time::SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Time an agent gets to finish TLS and send its `Hello`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long telling an agent why it is being closed may delay the close.
const CLOSING_NOTICE_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts agent connections until `stop_accepting` fires. Established sessions live on until
/// `end_sessions` fires (after the ingress drained), so in-flight visitor requests finish.
pub async fn serve(
    relay: Arc<Relay>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    stop_accepting: CancellationToken,
    end_sessions: CancellationToken,
) {
    while let Some((tcp, peer)) =
        burrow_common::net::accept(&listener, &stop_accepting, "agents").await
    {
        let relay = relay.clone();
        let acceptor = acceptor.clone();
        let shutdown = end_sessions.clone();
        tokio::spawn(
            async move {
                if let Err(e) = handle(relay, tcp, peer, acceptor, shutdown).await {
                    tracing::info!(error = %e, "agent session ended");
                }
            }
            .instrument(tracing::info_span!("agent", %peer)),
        );
    }
}

async fn handle(
    relay: Arc<Relay>,
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    shutdown: CancellationToken,
) -> Result<(), SessionError> {
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| SessionError::Timeout("handshake"))?
        .map_err(SessionError::Tls)?;
    if tls.get_ref().1.alpn_protocol() == Some(DATA_ALPN) {
        // A data connection of an existing session (the bulk path), not a session.
        return crate::data::accept(&relay, tls)
            .await
            .map_err(SessionError::Data);
    }
    let hello: Hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(&mut tls))
        .await
        .map_err(|_| SessionError::Timeout("handshake"))??;

    let welcome = match admit(&relay, &hello).await {
        Ok(w) => w,
        Err((code, message)) => {
            tracing::info!(?code, %message, "rejecting agent");
            let _ = write_frame(&mut tls, &ServerMessage::Rejected { code, message }).await;
            return Ok(());
        }
    };
    let session_id = uuid::Uuid::new_v4().to_string();
    let data_key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    relay.data.open_session(&session_id, &data_key);
    let _forget_data = DataSlotGuard(&relay, &session_id);
    write_frame(
        &mut tls,
        &ServerMessage::Welcome {
            session_id: session_id.clone(),
            endpoints: welcome.endpoints.clone(),
            data_key: Some(data_key),
        },
    )
    .await?;

    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(burrow_proto::tunnel::KEEPALIVE_INTERVAL)
        .keep_alive_timeout(burrow_proto::tunnel::KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .handshake(TokioIo::new(tls))
        .await?;
    // Drive the connection in its own task so the control request below can make progress.
    let mut conn = tokio::spawn(conn);
    let closer = Closer::default();
    let info = SessionInfo {
        session_id: session_id.clone(),
        account_id: welcome.account_id,
        authtoken_id: welcome.authtoken_id,
        peer: peer.to_string(),
        connected_at: SystemTime::now(),
        agent: hello.agent.clone(),
        endpoints: welcome.endpoints,
    };
    let mut control = sender.clone();
    if let Err(e) = relay
        .registry
        .bind(info.clone(), sender, closer.clone(), &welcome.pooled)
    {
        // Lost a race with another account between check and bind; the agent reconnects.
        conn.abort();
        return Err(e.into());
    }
    // Only a bind that happened replaces an endpoint's agent policy (a refused Hello must not
    // touch the live one).
    for (endpoint, policy) in info.endpoints.iter().zip(welcome.policies) {
        relay
            .edge
            .set_agent_policy(&info.account_id, &endpoint.name, policy);
    }
    let refused = relay
        .presence
        .bound(&info.endpoints, &info.account_id)
        .await;
    if let Some(name) = refused.first() {
        // Another account's agent took the name on another relay between our check and our
        // lease: serving it here too would split one name between two tenants.
        closer.close(
            CloseCode::Kicked,
            format!(
                "the name {name:?} was just taken by another account on another relay; pick \
                 another --name"
            ),
        );
    }
    let result = match announce_bound(&mut control, &info.endpoints).await {
        Ok(()) => {
            tracing::info!(%session_id, account_id = %info.account_id, endpoints = ?info.endpoints.iter().map(|e| &e.name).collect::<Vec<_>>(), "agent session up");
            tokio::select! {
                r = &mut conn => match r {
                    Ok(r) => r.map_err(SessionError::from),
                    Err(e) => Err(SessionError::from(e)),
                },
                _ = closer.closed() => Ok(()),
                _ = shutdown.cancelled() => {
                    closer.close(CloseCode::Shutdown, "the relay is shutting down");
                    Ok(())
                }
            }
        }
        Err(e) => Err(e),
    };
    if let (Some(closing), false) = (closer.reason(), conn.is_finished()) {
        tracing::info!(%session_id, code = ?closing.code, reason = %closing.message, "closing agent session");
        // Best effort: the agent learns why, and whether to come back.
        let _ = tokio::time::timeout(
            CLOSING_NOTICE_TIMEOUT,
            notify_closing(&mut control, &closing),
        )
        .await;
    }
    conn.abort();
    let released = relay.registry.unbind(&session_id);
    // Endpoints no session serves any more drop the policy their agent sent.
    for endpoint in &released {
        relay
            .edge
            .set_agent_policy(&info.account_id, &endpoint.name, None);
    }
    // The leases outlive the session for the offline grace period, as the route does here, so
    // no other account takes the names on another relay while the agent reconnects.
    relay.presence.offline(&released);
    if !released.is_empty() {
        let relay = relay.clone();
        tokio::spawn(async move {
            tokio::time::sleep(relay.registry.offline_grace()).await;
            let expired: Vec<BoundEndpoint> = released
                .into_iter()
                .filter(|e| matches!(relay.registry.lookup(&e.name), Lookup::Unknown))
                .collect();
            relay.presence.unbound(&expired).await;
        });
    }
    tracing::info!(%session_id, "agent session closed");
    result
}

/// Forgets the session's idle data connections however the session ends.
struct DataSlotGuard<'a>(&'a Relay, &'a str);

impl Drop for DataSlotGuard<'_> {
    fn drop(&mut self) {
        self.0.data.close_session(self.1);
    }
}

/// Tells the agent why its session is being closed (see `CONTROL_CLOSING_PATH`).
async fn notify_closing(
    sender: &mut SendRequest<Body>,
    closing: &Closing,
) -> Result<(), SessionError> {
    control_request(sender, CONTROL_CLOSING_PATH, closing).await
}

/// Sends one relay → agent control request and checks it was accepted.
async fn control_request<T: serde::Serialize>(
    sender: &mut SendRequest<Body>,
    path: &str,
    body: &T,
) -> Result<(), SessionError> {
    let json = serde_json::to_vec(body).map_err(FrameError::from)?;
    let req = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://{CONTROL_AUTHORITY}{path}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(proxy::full(json))?;
    sender.ready().await?;
    let resp = tokio::time::timeout(HANDSHAKE_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| SessionError::Timeout("the agent to answer a control request"))??;
    if !resp.status().is_success() {
        return Err(SessionError::AckRefused(resp.status()));
    }
    Ok(())
}

/// Tells the agent its endpoints are routable (see `CONTROL_BOUND_PATH`), so it reports the
/// tunnel online only when a visitor can already reach it.
async fn announce_bound(
    sender: &mut SendRequest<Body>,
    endpoints: &[BoundEndpoint],
) -> Result<(), SessionError> {
    control_request(sender, CONTROL_BOUND_PATH, &endpoints).await
}

/// Why an agent session ended abnormally (logged; the agent reconnects).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// A step took too long.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The TLS handshake failed.
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    /// The handshake frames were malformed or the link broke during them.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The HTTP/2 connection failed.
    #[error("HTTP/2: {0}")]
    Http2(#[from] hyper::Error),
    /// The control request could not be built.
    #[error("control request: {0}")]
    Http(#[from] http::Error),
    /// Another account bound a name between the check and the bind.
    #[error("binding after welcome: {0}")]
    Bind(#[from] BindError),
    /// The agent answered a control request with an error.
    #[error("agent refused a control request: {0}")]
    AckRefused(http::StatusCode),
    /// A data connection was refused.
    #[error("data connection: {0}")]
    Data(String),
    /// The connection task panicked or was cancelled.
    #[error("connection task: {0}")]
    Task(#[from] tokio::task::JoinError),
}

struct Admission {
    account_id: String,
    authtoken_id: String,
    endpoints: Vec<BoundEndpoint>,
    /// The agent's own policy per endpoint (same order), applied once the bind succeeded.
    policies: Vec<Option<burrow_policy::Policy>>,
    /// Registry names bound as pools.
    pooled: Vec<String>,
}

async fn admit(relay: &Arc<Relay>, hello: &Hello) -> Result<Admission, (RejectCode, String)> {
    if hello.version != PROTOCOL_VERSION {
        return Err((
            RejectCode::Unsupported,
            format!(
                "this relay speaks tunnel protocol {PROTOCOL_VERSION}, the agent sent {}; upgrade the agent",
                hello.version
            ),
        ));
    }
    if hello.binds.is_empty() {
        return Err((RejectCode::Unsupported, "no endpoint requested".into()));
    }
    let principal = relay
        .verifier
        .verify(&hello.authtoken)
        .await
        .map_err(|e| match e {
            AuthError::Rejected(m) => (RejectCode::AuthFailed, m),
            AuthError::Unavailable(m) => (RejectCode::Unavailable, m),
        })?;
    if !relay.edge.is_synced() {
        return Err((
            RejectCode::Unavailable,
            "this relay has not yet received the api's reservations and policies; retrying".into(),
        ));
    }
    let mut principal = principal;
    // The plan the feed issued last is fresher than the authtoken cache's copy.
    if let Some((plan, limits)) = relay.edge.plan(&principal.account_id) {
        principal.plan = plan;
        principal.limits = limits;
    }
    check_plan_limits(relay, &principal, hello)?;
    relay.edge.shapers.set_rate(
        &principal.account_id,
        principal.limits.bandwidth_bytes_per_sec,
    );
    let mut endpoints = Vec::with_capacity(hello.binds.len());
    let mut pooled = Vec::new();
    let mut policies = Vec::with_capacity(hello.binds.len());
    let account = principal.account_id.as_str();
    for bind in &hello.binds {
        let endpoint = match (&bind.domain, bind.proto) {
            (Some(domain), EndpointProto::Http | EndpointProto::Tls) => {
                domain_endpoint(relay, account, domain, bind.proto)?
            }
            (Some(_), EndpointProto::Tcp) => {
                return Err((
                    RejectCode::Unsupported,
                    "TCP endpoints get a port, not a custom domain".into(),
                ));
            }
            (None, _) => named_endpoint(relay, account, bind).await?,
        };
        if bind.pool {
            pooled.push(endpoint.name.clone());
        }
        if endpoints
            .iter()
            .any(|e: &BoundEndpoint| e.name == endpoint.name)
        {
            return Err((
                RejectCode::InvalidName,
                format!("the endpoint {:?} is requested twice", endpoint.name),
            ));
        }
        let policy = match &bind.traffic_policy {
            Some(doc) => Some(burrow_policy::parse(doc).map_err(|e| {
                (
                    RejectCode::InvalidPolicy,
                    format!(
                        "the traffic policy file of endpoint {} does not validate: {e}",
                        crate::edge::policy_key(&endpoint.name)
                    ),
                )
            })?),
            None => None,
        };
        policies.push(policy);
        endpoints.push(endpoint);
    }
    let names: Vec<String> = endpoints.iter().map(|e| e.name.clone()).collect();
    // Another relay serving the name for another account (its lease says so): refused, as
    // the registry refuses it on one relay.
    for endpoint in endpoints.iter().filter(|e| e.proto == EndpointProto::Http) {
        if let Some((elsewhere, holder)) = relay.presence.held_elsewhere(&endpoint.name).await
            && holder != principal.account_id
        {
            return Err((
                RejectCode::NameTaken,
                format!(
                    "the name {:?} is already in use by another account (on relay \
                     {elsewhere}); pick another --name",
                    endpoint.name
                ),
            ));
        }
    }
    relay
        .registry
        .check_bindable(&principal.account_id, &names)
        .map_err(|BindError::Taken(n)| {
            (
                RejectCode::NameTaken,
                format!("the name {n:?} is already in use by another account; pick another --name"),
            )
        })?;
    Ok(Admission {
        account_id: principal.account_id,
        authtoken_id: principal.authtoken_id,
        endpoints,
        policies,
        pooled,
    })
}

/// An HTTP or TLS endpoint on a custom domain, which must be verified for `account` at the api.
fn domain_endpoint(
    relay: &Relay,
    account: &str,
    domain: &str,
    proto: EndpointProto,
) -> Result<BoundEndpoint, (RejectCode, String)> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if relay.endpoint_name(&domain) != Some(domain.as_str()) {
        return Err((
            RejectCode::InvalidName,
            format!(
                "{domain:?} is not a custom domain (names under {} are bound with --name)",
                relay.config.domain
            ),
        ));
    }
    if relay.edge.domain_holder(&domain).as_deref() != Some(account) {
        return Err((
            RejectCode::DomainNotVerified,
            format!(
                "the custom domain {domain} is not verified for this account: add it with \
                 `burrow domains add {domain}`, create the TXT record it prints, then \
                 `burrow domains verify {domain}`"
            ),
        ));
    }
    Ok(match proto {
        EndpointProto::Tls => BoundEndpoint {
            proto,
            url: relay
                .domain_https_url(&domain, "tls")
                .ok_or_else(no_tls_listener)?,
            https_url: None,
            name: crate::https::endpoint_key(&domain),
        },
        _ => BoundEndpoint {
            proto,
            url: relay.domain_url(&domain),
            https_url: relay.domain_https_url(&domain, "https"),
            name: domain,
        },
    })
}

fn no_tls_listener() -> (RejectCode, String) {
    (
        RejectCode::Unsupported,
        "this relay has no TLS listener (https_listen is empty), so it cannot serve TLS endpoints"
            .to_owned(),
    )
}

/// An endpoint under the base domain (HTTP, TLS) or on a port (TCP). A name another account
/// reserved at the api is refused; a relay-picked name never lands on a reserved one.
async fn named_endpoint(
    relay: &Arc<Relay>,
    account: &str,
    bind: &burrow_proto::tunnel::BindRequest,
) -> Result<BoundEndpoint, (RejectCode, String)> {
    let reserved_by_other = |name: &str| {
        relay
            .edge
            .name_holder(name)
            .is_some_and(|holder| holder != account)
    };
    let label = || match &bind.name {
        Some(n) => {
            validate_label(n).map_err(|e| (RejectCode::InvalidName, e.to_string()))?;
            if reserved_by_other(n) {
                return Err((
                    RejectCode::NameTaken,
                    format!("the name {n:?} is reserved by another account; pick another --name"),
                ));
            }
            Ok(n.clone())
        }
        None => Ok(std::iter::repeat_with(random_label)
            .find(|l| !reserved_by_other(l))
            .unwrap_or_else(random_label)),
    };
    Ok(match bind.proto {
        EndpointProto::Http => {
            let name = label()?;
            BoundEndpoint {
                proto: bind.proto,
                url: relay.public_url(&name),
                https_url: relay.https_url(&name),
                name,
            }
        }
        EndpointProto::Tcp => {
            let port = crate::tcp::TcpPorts::allocate(relay, bind.port).await?;
            BoundEndpoint {
                proto: bind.proto,
                url: relay.tcp_url(port),
                https_url: None,
                name: crate::tcp::endpoint_name(port),
            }
        }
        EndpointProto::Tls => {
            let name = label()?;
            BoundEndpoint {
                proto: bind.proto,
                url: relay.tls_url(&name).ok_or_else(no_tls_listener)?,
                https_url: None,
                name: crate::https::endpoint_key(&name),
            }
        }
    })
}

/// Refuses binds that would take the account over its plan's online or TCP endpoint limit on
/// this relay. Runs before any TCP port is allocated. The names this session asks for by name
/// (or port) are not counted as already online: an agent reconnecting over a half-open link
/// takes its own names over, and a pool member joins a name the account already has.
fn check_plan_limits(
    relay: &Relay,
    principal: &Principal,
    hello: &Hello,
) -> Result<(), (RejectCode, String)> {
    let own: Vec<String> = hello
        .binds
        .iter()
        .filter_map(|b| match b.proto {
            EndpointProto::Http => b.name.clone(),
            EndpointProto::Tcp => b.port.map(crate::tcp::endpoint_name),
            EndpointProto::Tls => b.name.as_deref().map(crate::https::endpoint_key),
        })
        .collect();
    let online = relay.registry.online_usage(&principal.account_id, &own);
    let asked = Usage {
        endpoints: hello.binds.len(),
        tcp: hello
            .binds
            .iter()
            .filter(|b| b.proto == EndpointProto::Tcp)
            .count(),
    };
    principal
        .check_limits(online, asked)
        .map_err(|m| (RejectCode::LimitReached, m))
}

fn random_label() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..10)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
