//! Connecting to Temporal.
//!
//! Every client Burrow makes carries the Temporal SDK's OpenTelemetry plugin: starting or
//! signalling a workflow injects the caller's trace context into Temporal headers, and the
//! worker (whose client carries the same plugin) continues that trace in the workflow and
//! activity spans. Without an OTLP endpoint the global tracer is a no-op and this costs nothing.

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};
use temporalio_sdk::opentelemetry::OpenTelemetryPlugin;

/// Why Temporal could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address is not a URL.
    #[error("temporal address {address:?} is not a URL like http://127.0.0.1:7233: {message}")]
    Address {
        /// The configured address.
        address: String,
        /// Parser message.
        message: String,
    },
    /// The server did not answer.
    #[error("cannot connect to Temporal at {address}: {message}")]
    Connect {
        /// The configured address.
        address: String,
        /// Why.
        message: String,
    },
}

/// Connects a client for `namespace` at `address` (`http://host:port`).
pub async fn connect(
    address: &str,
    namespace: &str,
    identity: &str,
) -> Result<Client, ConnectError> {
    let url = Url::parse(address).map_err(|e| ConnectError::Address {
        address: address.to_owned(),
        message: e.to_string(),
    })?;
    let connect_err = |e: &dyn std::fmt::Display| ConnectError::Connect {
        address: address.to_owned(),
        message: e.to_string(),
    };
    let connection = Connection::connect(
        ConnectionOptions::new(url)
            .identity(identity.to_owned())
            .connect_timeout(std::time::Duration::from_secs(5))
            .build(),
    )
    .await
    .map_err(|e| connect_err(&e))?;
    let options = ClientOptions::new(namespace.to_owned())
        .plugin(OpenTelemetryPlugin::builder().build())
        .build();
    Client::new(connection, options).map_err(|e| connect_err(&e))
}
