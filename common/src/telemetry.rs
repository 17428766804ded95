//! Logging and tracing setup.
//!
//! Every process logs through `tracing` to stderr (text, or JSON lines when `json` is set). When
//! an OTLP endpoint is configured, spans are also exported as OpenTelemetry traces over OTLP/gRPC,
//! the global tracer provider is set (the Temporal SDK's tracing plugin uses it), and W3C trace
//! context is the global propagator, so a trace started by an api request continues through
//! Temporal into the worker's workflow and activity spans.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{SdkTracerProvider, TracerProviderBuilder},
};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Telemetry settings a binary passes to [`init`].
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// `service.name` of exported spans, e.g. `burrow-api`.
    pub service_name: String,
    /// OTLP/gRPC endpoint (`http://host:4317`); empty disables export.
    pub otlp_endpoint: String,
    /// Log JSON lines instead of text.
    pub json_logs: bool,
}

/// Keeps the exporter alive; dropping it flushes buffered spans.
#[must_use = "dropping the guard shuts the span exporter down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(Err(e)) = self.provider.take().map(|p| p.shutdown()) {
            eprintln!("telemetry: flushing spans failed: {e}");
        }
    }
}

/// Errors setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (bad endpoint).
    #[error("cannot export traces to {endpoint}: {message}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// A global subscriber was already installed.
    #[error("tracing subscriber already installed: {0}")]
    Subscriber(String),
}

/// Installs the global `tracing` subscriber (and OTLP exporter if configured).
///
/// `customize` can adjust the tracer provider (the worker installs the Temporal SDK's
/// deterministic span id generator there).
pub fn init(
    config: &TelemetryConfig,
    customize: impl FnOnce(TracerProviderBuilder) -> TracerProviderBuilder,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,h2=warn,hyper=warn,tower=warn,sqlx=warn,temporalio_sdk_core=warn")
    });
    let fmt = if config.json_logs {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };

    let mut provider = None;
    let otel = if config.otlp_endpoint.is_empty() {
        None
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .build()
            .map_err(|e| TelemetryError::Exporter {
                endpoint: config.otlp_endpoint.clone(),
                message: e.to_string(),
            })?;
        let builder = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            );
        let p = customize(builder).build();
        opentelemetry::global::set_tracer_provider(p.clone());
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let tracer = p.tracer(config.service_name.clone());
        provider = Some(p);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}
