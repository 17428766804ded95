//! The agent ↔ relay session handshake.
//!
//! An agent opens a TLS 1.3 connection to the relay and sends one [`Hello`] frame; the relay
//! answers with one [`ServerMessage`] frame. After a `Welcome`, the same connection carries
//! HTTP/2 with the *relay as client* and the *agent as server*: every visitor request becomes an
//! h2 stream the relay opens towards the agent, so bodies stream both ways and h2 PING frames
//! serve as heartbeats that detect half-open links.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of JSON. Frames larger than
//! [`MAX_FRAME_LEN`] are refused before any allocation, so a peer cannot make the other side
//! buffer unbounded input. [`decode_frame`] is the pure parser (property-tested and fuzzed);
//! [`read_frame`] and [`write_frame`] are its async wrappers and never read past the frame, so
//! the stream can be handed to h2 afterwards.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::fmt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version of this handshake; a relay rejects agents speaking a version it does not know.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side accepts (64 KiB): handshakes are small, anything bigger is abuse.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// ALPN protocol id the agent and relay negotiate for a tunnel session.
pub const ALPN: &[u8] = b"burrow/1";

/// Both ends send an HTTP/2 PING this often on an idle session...
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// ...and drop the session when a PING is not answered within this, so a half-open link is
/// noticed within 15 s (interval + timeout) and the agent reconnects.
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `:authority` of relay → agent control requests on the session's HTTP/2 connection.
/// Visitor requests always carry `<name>.<domain>`, so they can never reach this name.
pub const CONTROL_AUTHORITY: &str = "control.burrow.internal";

/// Control request the relay sends once the session's endpoints are routable; its JSON body
/// is the `Vec<BoundEndpoint>`. The agent reports the tunnel online only after it, so a
/// visitor sent the moment the agent prints its URL is never refused.
pub const CONTROL_BOUND_PATH: &str = "/v1/bound";

/// First frame on a session, agent → relay.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hello {
    /// Handshake version the agent speaks ([`PROTOCOL_VERSION`]).
    pub version: u32,
    /// The authtoken the api issued; checked by the relay through the api.
    pub authtoken: String,
    /// Agent software and version, for `ListSessions` and support.
    pub agent: String,
    /// Endpoints to bind on this session.
    pub binds: Vec<BindRequest>,
}

impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("version", &self.version)
            .field("authtoken", &"MASKED")
            .field("agent", &self.agent)
            .field("binds", &self.binds)
            .finish()
    }
}

/// One endpoint the agent asks the relay to route to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    /// Protocol of the public side.
    pub proto: EndpointProto,
    /// HTTP: requested label under the relay's base domain; `None` lets the relay pick one.
    pub name: Option<String>,
    /// TCP: requested public port (the one held before a reconnect); `None` lets the relay
    /// allocate one.
    #[serde(default)]
    pub port: Option<u16>,
    /// Join a pool: several agents of one account serve the name and visitors are balanced
    /// across them. Without it, binding a name another session of the account holds takes it
    /// over.
    #[serde(default)]
    pub pool: bool,
    /// HTTP and TLS: serve this custom domain (verified for the account at the api) instead of
    /// a label under the relay's base domain; `name` is then ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// A traffic policy document (YAML or JSON) the relay enforces on this endpoint, after the
    /// one the api issued for it, if any. Refused at bind when it does not validate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_policy: Option<String>,
}

/// Protocols an endpoint can serve publicly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointProto {
    /// HTTP ingress routed by `Host: <name>.<domain>`.
    Http,
    /// A public TCP port whose connections are relayed byte for byte.
    Tcp,
    /// TLS passthrough: connections to the relay's TLS port whose SNI is `<name>.<domain>`
    /// are relayed byte for byte; the local service terminates TLS.
    Tls,
}

impl fmt::Display for EndpointProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointProto::Http => "http",
            EndpointProto::Tcp => "tcp",
            EndpointProto::Tls => "tls",
        })
    }
}

/// Answer to a [`Hello`], relay → agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// The session is up; the connection switches to HTTP/2 right after this frame.
    Welcome {
        /// Relay-assigned id of this session (shown by `ListSessions`, used by `KickSession`).
        session_id: String,
        /// The endpoints bound, in the order requested.
        endpoints: Vec<BoundEndpoint>,
        /// Secret the agent presents on data connections of this session ([`DataHello`]);
        /// absent from relays without dedicated data connections.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_key: Option<String>,
    },
    /// The session is refused; the relay closes the connection after this frame.
    Rejected {
        /// Machine-readable reason; the agent decides from it whether retrying can help.
        code: RejectCode,
        /// Human-readable explanation to print.
        message: String,
    },
}

/// An endpoint the relay bound for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundEndpoint {
    /// Protocol of the public side.
    pub proto: EndpointProto,
    /// Label under the base domain.
    pub name: String,
    /// Public URL visitors use.
    pub url: String,
    /// HTTP endpoints: the same endpoint on the relay's HTTPS ingress, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_url: Option<String>,
}

/// Why a relay refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// The authtoken is unknown or revoked: retrying with the same token cannot help.
    AuthFailed,
    /// The requested name is held by another account.
    NameTaken,
    /// The requested name is not a valid DNS label.
    InvalidName,
    /// Handshake version or feature not supported by this relay.
    Unsupported,
    /// The relay could not decide (e.g. the api is unreachable); retry later.
    Unavailable,
    /// Binding would take the account over a limit of its plan (online endpoints, TCP
    /// endpoints); the message names the limit, the plan and how many are in use. Not
    /// retryable: it takes an endpoint going offline or a larger plan.
    LimitReached,
    /// The agent's traffic policy file does not validate; the message names the field and
    /// line.
    InvalidPolicy,
    /// The custom domain is not verified for the account.
    DomainNotVerified,
}

impl RejectCode {
    /// Whether an agent should keep retrying after this rejection.
    pub fn is_retryable(self) -> bool {
        matches!(self, RejectCode::Unavailable)
    }
}

/// Errors reading or writing handshake frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announced more than [`MAX_FRAME_LEN`] bytes.
    #[error("handshake frame of {0} bytes exceeds the {MAX_FRAME_LEN} byte limit")]
    TooLarge(usize),
    /// The frame body is not the expected JSON message.
    #[error("malformed handshake frame: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The transport failed or closed mid-frame.
    #[error("handshake transport error: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `msg` as one frame.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parses one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame, and `Ok(Some((msg, consumed)))`
/// when a whole frame was decoded.
pub fn decode_frame<T: DeserializeOwned>(buf: &[u8]) -> Result<Option<(T, usize)>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((serde_json::from_slice(body)?, 4 + len)))
}

/// Reads exactly one frame from `reader`, never more bytes than the frame holds.
pub async fn read_frame<T, R>(reader: &mut R) -> Result<T, FrameError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

/// Writes one frame to `writer` and flushes it.
pub async fn write_frame<T, W>(writer: &mut W, msg: &T) -> Result<(), FrameError>
where
    T: Serialize,
    W: AsyncWrite + Unpin,
{
    writer.write_all(&encode_frame(msg)?).await?;
    writer.flush().await?;
    Ok(())
}

/// ALPN of a *data connection*: a dedicated TLS connection the agent opens to the relay's
/// agent listener next to its session, kept idle until the relay hands it one visitor
/// connection of a TCP or TLS endpoint, whose bytes then flow over it unframed (no h2): the
/// bulk path (see `docs/transport.md`).
pub const DATA_ALPN: &[u8] = b"burrow-data/1";

/// First frame on a data connection, agent → relay: which session it belongs to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataHello {
    /// The session ([`ServerMessage::Welcome`]'s `session_id`).
    pub session_id: String,
    /// The session's `data_key`.
    pub data_key: String,
}

impl fmt::Debug for DataHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataHello")
            .field("session_id", &self.session_id)
            .field("data_key", &"MASKED")
            .finish()
    }
}

/// Frame relay → agent on an idle data connection: a visitor connection starts; every byte
/// after this frame is the visitor's (and every byte back goes to the visitor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataOpen {
    /// Registry name of the endpoint (`tcp:<port>`, `tls:<name>`).
    pub endpoint: String,
    /// The visitor's `ip:port`.
    pub visitor: String,
    /// The public `ip:port` it connected to.
    #[serde(default)]
    pub public: Option<String>,
}

/// `:authority` of the h2 stream the relay opens for each visitor of a TCP endpoint: the
/// request body carries visitor → agent bytes, the response body agent → visitor bytes.
pub const TCP_AUTHORITY: &str = "tcp.burrow.internal";

/// Header on every relay → agent visitor stream: the endpoint it is for, as the relay's
/// registry names it (`<name>` for HTTP, `tcp:<port>`, `tls:<name>`), so one session can
/// serve several endpoints. The relay sets it (overwriting any a visitor sent); the agent
/// removes it before forwarding.
pub const ENDPOINT_HEADER: &str = "x-burrow-endpoint";

/// Header on a TCP stream request: the visitor's `ip:port`.
pub const VISITOR_HEADER: &str = "x-burrow-visitor";
/// Header on a TCP stream request: the public `ip:port` the visitor connected to.
pub const PUBLIC_HEADER: &str = "x-burrow-public";

/// Control request the relay sends just before it closes a session on purpose; its JSON body
/// is a [`Closing`]. Without one, a lost connection is a network failure and the agent retries.
pub const CONTROL_CLOSING_PATH: &str = "/v1/closing";

/// Why the relay is closing a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Closing {
    /// Machine-readable reason.
    pub code: CloseCode,
    /// Human-readable explanation for the agent to print.
    pub message: String,
}

/// Reasons a relay closes a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseCode {
    /// An operator closed it.
    Kicked,
    /// Its authtoken was revoked.
    Revoked,
    /// Another session of the same account bound its name.
    TakenOver,
    /// The relay is shutting down; another relay (or this one restarted) will take the agent.
    Shutdown,
}

impl CloseCode {
    /// Whether the agent should reconnect after this close.
    pub fn should_reconnect(self) -> bool {
        matches!(self, CloseCode::Shutdown)
    }
}

/// Why a requested endpoint name is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// Empty name.
    #[error("name is empty")]
    Empty,
    /// Longer than a DNS label may be.
    #[error("name {0:?} is longer than 63 characters")]
    TooLong(String),
    /// Contains a character outside `a-z`, `0-9` and `-`, or starts/ends with `-`.
    #[error(
        "name {0:?} must use only lowercase letters, digits and '-', and not start or end with '-'"
    )]
    BadCharacters(String),
}

/// Checks that `name` is a lowercase DNS label usable as `<name>.<domain>`.
pub fn validate_label(name: &str) -> Result<(), LabelError> {
    if name.is_empty() {
        return Err(LabelError::Empty);
    }
    if name.len() > 63 {
        return Err(LabelError::TooLong(name.to_owned()));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok_chars || name.starts_with('-') || name.ends_with('-') {
        return Err(LabelError::BadCharacters(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello(token: String, name: Option<String>) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            authtoken: token,
            agent: "burrow/test".into(),
            binds: vec![BindRequest {
                proto: EndpointProto::Http,
                name,
                port: None,
                pool: false,
                domain: None,
                traffic_policy: None,
            }],
        }
    }

    #[test]
    fn debug_masks_the_authtoken() {
        let h = hello("bt_secret".into(), None);
        let shown = format!("{h:?}");
        assert!(!shown.contains("bt_secret"), "{shown}");
        assert!(shown.contains("MASKED"));
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading_the_body() {
        let mut buf = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(b"{}");
        assert!(matches!(
            decode_frame::<Hello>(&buf),
            Err(FrameError::TooLarge(n)) if n == MAX_FRAME_LEN + 1
        ));
    }

    #[test]
    fn a_reached_plan_limit_is_final_and_named_on_the_wire() {
        assert!(!RejectCode::LimitReached.is_retryable());
        let msg = ServerMessage::Rejected {
            code: RejectCode::LimitReached,
            message: "plan \"free\" allows 1 TCP endpoint online".into(),
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert!(json.contains("\"limit_reached\""), "{json}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let body = br#"{"version":1,"authtoken":"t","agent":"a","binds":[],"extra":1}"#;
        let mut buf = (body.len() as u32).to_be_bytes().to_vec();
        buf.extend_from_slice(body);
        let err = decode_frame::<Hello>(&buf).unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[tokio::test]
    async fn read_frame_stops_at_the_frame_boundary() {
        let mut bytes = encode_frame(&hello("t".into(), Some("demo".into()))).unwrap();
        bytes.extend_from_slice(b"PRI * HTTP/2.0");
        let mut reader = &bytes[..];
        let got: Hello = read_frame(&mut reader).await.unwrap();
        assert_eq!(got.binds[0].name.as_deref(), Some("demo"));
        assert_eq!(reader, b"PRI * HTTP/2.0");
    }

    #[test]
    fn data_frames_roundtrip_and_mask_the_key() {
        let hello = DataHello {
            session_id: "s".into(),
            data_key: "k-secret".into(),
        };
        assert!(!format!("{hello:?}").contains("k-secret"));
        let (back, _) = decode_frame::<DataHello>(&encode_frame(&hello).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(back, hello);
        let open = DataOpen {
            endpoint: "tcp:20000".into(),
            visitor: "127.0.0.1:5".into(),
            public: None,
        };
        let (back, _) = decode_frame::<DataOpen>(&encode_frame(&open).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(back, open);
    }

    #[test]
    fn labels() {
        assert!(validate_label("demo").is_ok());
        assert!(validate_label("a-1").is_ok());
        assert_eq!(validate_label(""), Err(LabelError::Empty));
        assert!(matches!(
            validate_label("-a"),
            Err(LabelError::BadCharacters(_))
        ));
        assert!(matches!(
            validate_label("Demo"),
            Err(LabelError::BadCharacters(_))
        ));
        assert!(matches!(
            validate_label("a.b"),
            Err(LabelError::BadCharacters(_))
        ));
        assert!(matches!(
            validate_label(&"a".repeat(64)),
            Err(LabelError::TooLong(_))
        ));
    }

    proptest! {
        #[test]
        fn hello_roundtrips(token in "\\PC{0,64}", name in proptest::option::of("[a-z0-9-]{1,63}")) {
            let h = hello(token, name);
            let bytes = encode_frame(&h).unwrap();
            let (back, used) = decode_frame::<Hello>(&bytes).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(back, h);
        }

        #[test]
        fn every_strict_prefix_is_incomplete(token in "[a-z]{0,32}", cut in 0usize..1000) {
            let bytes = encode_frame(&hello(token, None)).unwrap();
            let cut = cut % bytes.len();
            prop_assert!(decode_frame::<Hello>(&bytes[..cut]).unwrap().is_none());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_frame::<ServerMessage>(&bytes);
            let _ = decode_frame::<Hello>(&bytes);
        }

        #[test]
        fn valid_labels_are_dns_labels(name in "\\PC{0,70}") {
            if validate_label(&name).is_ok() {
                prop_assert!(name.len() <= 63 && !name.is_empty());
                prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            }
        }
    }
}
