//! The `RelayControl` gRPC server: how the api lists and closes this relay's agent sessions,
//! and how the certificate workflows install, list and remove managed certificates (held by
//! [`crate::certs::CertStore`]).

use crate::Relay;
use crate::certs::{Installed, ManagedError};
use burrow_proto::relay::{
    Endpoint, InstallCertificateRequest, InstallCertificateResponse, KickSessionRequest,
    KickSessionResponse, ListCertificatesRequest, ListCertificatesResponse, ListSessionsRequest,
    ListSessionsResponse, ManagedCertificate, RemoveCertificateRequest, RemoveCertificateResponse,
    Session, kick_session_request::Target, relay_control_server::RelayControl,
};
use burrow_proto::tunnel::CloseCode;
use std::sync::Arc;

fn reason_or(reason: &str, default: &str) -> String {
    if reason.is_empty() {
        default.to_owned()
    } else {
        reason.to_owned()
    }
}
use tonic::{Request, Response, Status};

fn managed_status(e: ManagedError) -> Status {
    match e {
        ManagedError::Invalid(message) => Status::invalid_argument(message),
        e @ ManagedError::NoDir => Status::failed_precondition(e.to_string()),
        e @ ManagedError::Io { .. } => {
            Status::internal(format!("storing the managed certificate failed: {e}"))
        }
    }
}

/// Runs blocking certificate-store work off the runtime's workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ManagedError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("certificate store task failed: {e}")))?
        .map_err(managed_status)
}

/// Implements `RelayControl` over the relay's registry.
pub struct ControlService {
    relay: Arc<Relay>,
}

impl ControlService {
    /// Wraps the relay.
    pub fn new(relay: Arc<Relay>) -> Self {
        Self { relay }
    }
}

#[tonic::async_trait]
impl RelayControl for ControlService {
    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        let filter = request.into_inner().account_id;
        let account = (!filter.is_empty()).then_some(filter.as_str());
        let sessions = self
            .relay
            .registry
            .sessions(account)
            .into_iter()
            .map(|s| Session {
                session_id: s.session_id,
                account_id: s.account_id,
                authtoken_id: s.authtoken_id,
                peer: s.peer,
                connected_at: s
                    .connected_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or_default(),
                endpoints: s
                    .endpoints
                    .into_iter()
                    .map(|e| Endpoint {
                        proto: e.proto.to_string(),
                        name: e.name,
                        url: e.url,
                    })
                    .collect(),
                agent_version: s.agent,
            })
            .collect();
        Ok(Response::new(ListSessionsResponse {
            relay_id: self.relay.config.relay_id.clone(),
            sessions,
        }))
    }

    async fn kick_session(
        &self,
        request: Request<KickSessionRequest>,
    ) -> Result<Response<KickSessionResponse>, Status> {
        let req = request.into_inner();
        let kicked = match req.target {
            Some(Target::SessionId(id)) if !id.is_empty() => self.relay.registry.close(
                |s| s.session_id == id,
                CloseCode::Kicked,
                &reason_or(&req.reason, "closed by an operator"),
            ),
            Some(Target::AuthtokenId(id)) if !id.is_empty() => {
                self.relay.verifier.evict(&id);
                self.relay.registry.close(
                    |s| s.authtoken_id == id,
                    CloseCode::Revoked,
                    &reason_or(&req.reason, "the authtoken was revoked"),
                )
            }
            _ => {
                return Err(Status::invalid_argument(
                    "KickSession needs a non-empty session_id or authtoken_id",
                ));
            }
        };
        tracing::info!(kicked, reason = %req.reason, "kick requested by control plane");
        Ok(Response::new(KickSessionResponse {
            kicked: kicked as u32,
        }))
    }

    async fn install_certificate(
        &self,
        request: Request<InstallCertificateRequest>,
    ) -> Result<Response<InstallCertificateResponse>, Status> {
        let req = request.into_inner();
        let store = self.relay.certs.clone();
        let domain = req.domain.clone();
        let outcome =
            blocking(move || store.install(&req.domain, req.version, &req.chain_pem, &req.key_pem))
                .await?;
        let (version, installed) = match outcome {
            Installed::Installed { version } => {
                tracing::info!(%domain, version, "managed certificate installed");
                (version, true)
            }
            Installed::Stale { held } => {
                tracing::info!(%domain, held, "stale managed certificate refused");
                (held, false)
            }
        };
        Ok(Response::new(InstallCertificateResponse {
            relay_id: self.relay.config.relay_id.clone(),
            region: self.relay.config.region.clone(),
            version,
            installed,
        }))
    }

    async fn list_certificates(
        &self,
        _request: Request<ListCertificatesRequest>,
    ) -> Result<Response<ListCertificatesResponse>, Status> {
        let certificates = self
            .relay
            .certs
            .managed()
            .into_iter()
            .map(|m| ManagedCertificate {
                domain: m.domain,
                version: m.version,
                serial: m.serial,
                not_after: m.not_after,
            })
            .collect();
        Ok(Response::new(ListCertificatesResponse {
            relay_id: self.relay.config.relay_id.clone(),
            region: self.relay.config.region.clone(),
            certificates,
        }))
    }

    async fn remove_certificate(
        &self,
        request: Request<RemoveCertificateRequest>,
    ) -> Result<Response<RemoveCertificateResponse>, Status> {
        let domain = request.into_inner().domain;
        let store = self.relay.certs.clone();
        let removed = {
            let domain = domain.clone();
            blocking(move || store.remove(&domain)).await?
        };
        tracing::info!(%domain, removed, "managed certificate removal requested");
        Ok(Response::new(RemoveCertificateResponse { removed }))
    }
}
