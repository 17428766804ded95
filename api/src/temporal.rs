//! The api's Temporal client: connected lazily and retried on demand, so the api starts and
//! keeps accepting (and durably storing) webhooks while Temporal is down.

use crate::error::ApiError;
use burrow_workflows::certificate::{
    CertEvent, CertificateInput, CertificateWorkflow, RemoveRequest,
};
use burrow_workflows::provider_webhook::{
    ProviderEventInput, ProviderWebhookWorkflow, ReplayRequest,
};
use opentelemetry::context::FutureExt as _;
use temporalio_client::{
    Client, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowSignalOptions,
    WorkflowStartOptions,
    errors::{WorkflowInteractionError, WorkflowStartError},
};
use temporalio_common::protos::temporal::api::workflowservice::v1::GetSystemInfoRequest;
use tokio::sync::OnceCell;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Lazily connected Temporal client.
pub struct Temporal {
    address: String,
    namespace: String,
    task_queue: String,
    client: OnceCell<Client>,
}

impl Temporal {
    /// A client for `address`/`namespace` starting workflows on `task_queue`.
    pub fn new(address: &str, namespace: &str, task_queue: &str) -> Self {
        Self {
            address: address.to_owned(),
            namespace: namespace.to_owned(),
            task_queue: task_queue.to_owned(),
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&Client, ApiError> {
        self.client
            .get_or_try_init(|| async {
                burrow_workflows::temporal::connect(&self.address, &self.namespace, "burrow-api")
                    .await
            })
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))
    }

    /// Whether Temporal answers now (for `/readyz`): a cheap `GetSystemInfo` call, not just
    /// "connected once".
    pub async fn check(&self) -> Result<(), String> {
        let client = self.client().await.map_err(|e| e.to_string())?;
        let mut service = client.connection().workflow_service();
        tokio::time::timeout(
            std::time::Duration::from_secs(2),
            service.get_system_info(tonic::Request::new(GetSystemInfoRequest::default())),
        )
        .await
        .map_err(|_| "GetSystemInfo timed out".to_owned())?
        .map(|_| ())
        .map_err(|e| e.message().to_owned())
    }

    /// Starts the provider-webhook workflow `workflow_id`; an already started one is success.
    pub async fn start_provider_event(
        &self,
        workflow_id: &str,
        input: ProviderEventInput,
    ) -> Result<(), ApiError> {
        self.start(
            ProviderWebhookWorkflow::run,
            input,
            WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.to_owned())
                .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
                .build(),
        )
        .await
    }

    /// Starts a workflow, carrying the current request's trace into Temporal; an already
    /// started one is success.
    async fn start<W>(
        &self,
        workflow: W,
        input: W::Input,
        options: WorkflowStartOptions,
    ) -> Result<(), ApiError>
    where
        W: temporalio_common::HasWorkflowDefinition,
        W::Input: Send,
    {
        let client = self.client().await?;
        let workflow_id = options.workflow_id.clone();
        let cx = tracing::Span::current().context();
        let started = client
            .start_workflow(workflow, input, options)
            .with_context(cx)
            .await;
        match started {
            Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
            Err(e) => Err(ApiError::Unavailable(format!(
                "starting workflow {workflow_id}: {e}"
            ))),
        }
    }

    /// Sends the `replay` signal to a parked provider-webhook workflow.
    pub async fn replay_provider_event(
        &self,
        workflow_id: &str,
        requested_by: &str,
    ) -> Result<(), ApiError> {
        let client = self.client().await?;
        let cx = tracing::Span::current().context();
        client
            .get_workflow_handle::<ProviderWebhookWorkflow>(workflow_id.to_owned())
            .signal(
                ProviderWebhookWorkflow::replay,
                ReplayRequest {
                    requested_by: requested_by.to_owned(),
                },
                WorkflowSignalOptions::default(),
            )
            .with_context(cx)
            .await
            .map_err(|e| match e {
                WorkflowInteractionError::NotFound(_) => ApiError::Conflict(format!(
                    "workflow {workflow_id} no longer exists in Temporal (expired from retention or \
                     terminated); it cannot be replayed"
                )),
                e => ApiError::Unavailable(format!("signalling {workflow_id}: {e}")),
            })
    }

    /// Starts the certificate workflow `workflow_id`: one already running is success (it is
    /// kept), and a closed one (the domain was removed, then verified again) gets a new run.
    pub async fn start_certificate(
        &self,
        workflow_id: &str,
        input: CertificateInput,
    ) -> Result<(), ApiError> {
        self.start(
            CertificateWorkflow::run,
            input,
            WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.to_owned())
                .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
                .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
                .build(),
        )
        .await
    }

    /// Sends `cert_event` to `workflow_id`'s run, starting the run with `input` first when
    /// none is open (signal-with-start: the run sees the event before its first step).
    pub async fn certificate_event_or_start(
        &self,
        workflow_id: &str,
        input: CertificateInput,
        event: CertEvent,
    ) -> Result<(), ApiError> {
        let client = self.client().await?;
        let cx = tracing::Span::current().context();
        client
            .signal_with_start_workflow(
                CertificateWorkflow::run,
                input,
                CertificateWorkflow::cert_event,
                event,
                WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.to_owned())
                    .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
                    .build(),
            )
            .with_context(cx)
            .await
            .map(|_| ())
            .map_err(|e| ApiError::Unavailable(format!("signalling {workflow_id}: {e}")))
    }

    /// Sends `remove` to a certificate run. `Ok(false)`: no run is open (nothing to stop).
    pub async fn remove_certificate(
        &self,
        workflow_id: &str,
        reason: &str,
    ) -> Result<bool, ApiError> {
        let request = RemoveRequest {
            reason: reason.to_owned(),
        };
        self.signal_certificate(workflow_id, CertificateWorkflow::remove, request)
            .await
    }

    /// Sends `cert_event` to a certificate run. `Ok(false)`: no run is open for it.
    pub async fn certificate_event(
        &self,
        workflow_id: &str,
        event: CertEvent,
    ) -> Result<bool, ApiError> {
        self.signal_certificate(workflow_id, CertificateWorkflow::cert_event, event)
            .await
    }

    /// Sends the `replay` signal to a parked certificate run.
    pub async fn replay_certificate(
        &self,
        workflow_id: &str,
        requested_by: &str,
    ) -> Result<(), ApiError> {
        let request = ReplayRequest {
            requested_by: requested_by.to_owned(),
        };
        match self
            .signal_certificate(workflow_id, CertificateWorkflow::replay, request)
            .await?
        {
            true => Ok(()),
            false => Err(ApiError::Conflict(format!(
                "workflow {workflow_id} is no longer running in Temporal (removed, expired \
                 from retention or terminated); it cannot be replayed"
            ))),
        }
    }

    /// Signals the open run of `workflow_id`; `Ok(false)` when there is none.
    async fn signal_certificate<S>(
        &self,
        workflow_id: &str,
        signal: S,
        input: S::Input,
    ) -> Result<bool, ApiError>
    where
        S: temporalio_common::SignalDefinition<
                Workflow = <CertificateWorkflow as temporalio_common::HasWorkflowDefinition>::Run,
            >,
        S::Input: Send,
    {
        let client = self.client().await?;
        let cx = tracing::Span::current().context();
        let signalled = client
            .get_workflow_handle::<CertificateWorkflow>(workflow_id.to_owned())
            .signal(signal, input, WorkflowSignalOptions::default())
            .with_context(cx)
            .await;
        match signalled {
            Ok(()) => Ok(true),
            Err(WorkflowInteractionError::NotFound(_)) => Ok(false),
            Err(e) => Err(ApiError::Unavailable(format!(
                "signalling {workflow_id}: {e}"
            ))),
        }
    }
}
