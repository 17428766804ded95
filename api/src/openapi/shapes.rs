//! Documentation of answers handlers build with `json!` rather than a type of their own.
//! Keep them in step with the handler named on each.

use utoipa::ToSchema;
use uuid::Uuid;

/// `DELETE /v1/authtokens/{id}` answer ([`crate::accounts::revoke_authtoken`]).
#[derive(ToSchema)]
pub struct RevokedAuthtoken {
    /// The authtoken.
    pub id: Uuid,
    /// Always `true` (revoking twice is not an error).
    pub revoked: bool,
    /// Agent sessions the relays closed.
    pub sessions_closed: u32,
    /// Relays that could not be told; they close the sessions within their auth cache
    /// period.
    pub relays_unreachable: Vec<String>,
}

/// `POST /v1/ops/dead-letters/{id}/replay` answer ([`crate::ops::replay_one`]).
#[derive(ToSchema)]
pub struct ReplayRequested {
    /// The run.
    pub workflow_id: String,
    /// Always `requested`.
    #[schema(example = "requested")]
    pub replay: String,
}

/// `POST /v1/ops/dead-letters/replay-all` answer ([`crate::ops::replay_all`]).
#[derive(ToSchema)]
pub struct ReplayAllQueued {
    /// Parked runs it will replay.
    pub queued: u64,
    /// Signals per second it replays them at.
    pub rate_per_sec: u32,
}

/// `GET /v1/ops/sessions` answer ([`crate::ops::list_sessions`]).
#[derive(ToSchema)]
pub struct SessionList {
    /// One entry per known relay.
    pub relays: Vec<RelaySessions>,
}

/// One relay's sessions, or why it did not answer (`error` alone).
#[derive(ToSchema)]
pub struct RelaySessions {
    /// The relay (absent with `error`).
    pub relay_id: Option<String>,
    /// Its agent sessions (absent with `error`).
    pub sessions: Option<Vec<Session>>,
    /// Why the relay could not be asked (only field when present).
    pub error: Option<String>,
}

/// An agent session on a relay.
#[derive(ToSchema)]
pub struct Session {
    /// Session id (`POST /v1/ops/sessions/{id}/kick`).
    pub session_id: String,
    /// Account.
    pub account_id: String,
    /// Authtoken it authenticated with.
    pub authtoken_id: String,
    /// Agent's address, `host:port`.
    pub peer: String,
    /// Unix seconds.
    pub connected_at: i64,
    /// Agent version.
    pub agent_version: String,
    /// Its endpoints.
    pub endpoints: Vec<SessionEndpoint>,
}

/// An endpoint of a session.
#[derive(ToSchema)]
pub struct SessionEndpoint {
    /// `http`, `tcp`, `tls`.
    pub proto: String,
    /// Label, domain or `tcp-<port>`.
    pub name: String,
    /// Public URL.
    pub url: String,
}

/// `POST /v1/ops/sessions/{id}/kick` answer ([`crate::ops::kick_session`]).
#[derive(ToSchema)]
pub struct KickedSession {
    /// The session.
    pub session_id: String,
    /// Sessions closed (1, or more if relays disagreed).
    pub kicked: u32,
    /// Relays that could not be asked.
    pub relays_unreachable: Vec<String>,
}
