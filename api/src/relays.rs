//! Talking to relays: discovery through Redis presence ([`burrow_proto::directory`], reading
//! the keys `burrow-relay`'s presence module writes) and calls over `RelayControl`.

use burrow_proto::directory::RelayDirectory;
use burrow_proto::relay::{
    KickSessionRequest, ListSessionsRequest, ListSessionsResponse, kick_session_request::Target,
};

/// Errors reaching relays (discovery, or one relay's call).
pub use burrow_proto::directory::DirectoryError as RelayError;

/// Result of asking every relay to close sessions.
#[derive(Debug, Default)]
pub struct KickOutcome {
    /// Sessions closed.
    pub kicked: u32,
    /// Relays (or discovery) that could not be asked.
    pub errors: Vec<RelayError>,
}

/// Finds relays (through [`RelayDirectory`]) and calls them.
pub struct Relays {
    directory: RelayDirectory,
}

impl Relays {
    /// Relays found and called through `directory`.
    pub fn new(directory: RelayDirectory) -> Self {
        Self { directory }
    }

    /// Sessions on every live relay; a relay that does not answer is reported, not fatal.
    pub async fn list_sessions(
        &self,
    ) -> Result<Vec<Result<ListSessionsResponse, RelayError>>, RelayError> {
        let mut out = Vec::new();
        for a in self.directory.discover().await? {
            let listed = async {
                let mut client = self.directory.client(&a).await?;
                let resp = client
                    .list_sessions(ListSessionsRequest::default())
                    .await
                    .map_err(|e| RelayError::call(&a, e))?;
                Ok(resp.into_inner())
            }
            .await;
            out.push(listed);
        }
        Ok(out)
    }

    async fn kick(&self, target: Target, reason: &str) -> KickOutcome {
        let mut outcome = KickOutcome::default();
        let relays = match self.directory.discover().await {
            Ok(r) => r,
            Err(e) => {
                outcome.errors.push(e);
                return outcome;
            }
        };
        // Every relay is asked, even after one fails.
        for a in relays {
            let kicked = async {
                let mut client = self.directory.client(&a).await?;
                let resp = client
                    .kick_session(KickSessionRequest {
                        target: Some(target.clone()),
                        reason: reason.to_owned(),
                    })
                    .await
                    .map_err(|e| RelayError::call(&a, e))?;
                Ok::<_, RelayError>(resp.into_inner().kicked)
            }
            .await;
            match kicked {
                Ok(n) => outcome.kicked += n,
                Err(e) => outcome.errors.push(e),
            }
        }
        outcome
    }

    /// Closes session `session_id` wherever it is.
    pub async fn kick_session(&self, session_id: &str) -> KickOutcome {
        self.kick(
            Target::SessionId(session_id.to_owned()),
            "closed by an operator",
        )
        .await
    }

    /// Closes every session using authtoken `authtoken_id` and drops relays' cached
    /// verification of it.
    pub async fn kick_authtoken(&self, authtoken_id: &str) -> KickOutcome {
        self.kick(
            Target::AuthtokenId(authtoken_id.to_owned()),
            "the authtoken was revoked",
        )
        .await
    }
}
