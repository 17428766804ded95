//! `burrow-api`: the control plane.
//!
//! # Layout
//! - [`config`]: [`ApiConfig`] (`BURROW_API_*`).
//! - [`error`]: [`error::ApiError`], the one error type, mapped to JSON HTTP answers.
//! - [`extract`]: JSON/path/query extractors that reject with [`error::ApiError`].
//! - [`auth`]: API key principals and roles; the relays' internal key.
//! - [`audit`]: the append-only audit log of admin, ops and finance actions; `GET /v1/audit`.
//! - [`accounts`]: accounts, authtokens, API keys, and authtoken verification for relays.
//! - [`users`]: users (one role each; developers belong to an account) and their API keys.
//! - [`api_keys`]: listing and revoking API keys.
//! - [`plans`]: plans and their limits; moving an account to another plan.
//! - [`names`]: reserved names (labels under the base domain held by one account).
//! - [`domains`]: custom domains and their DNS TXT verification; the `domain_events` outbox.
//! - [`policies`]: traffic policy documents per account endpoint, versioned.
//! - [`feed`]: `RelayFeed`, the gRPC stream of policies, names, domains and plans to relays.
//! - [`webhooks`]: signed provider webhook ingest that starts durable workflows.
//! - [`certificates`]: custom domains' certificates (listing, renewal, region drift), the
//!   `domain_events` consumer starting certificate workflows, signed certificate callbacks.
//! - [`incidents`]: incidents workflows open in failure states; acknowledging and resolving.
//! - [`usage`]: metering records relays flush (billing), per-account usage reports.
//! - [`ops`]: workflows, dead-letter replay, sessions, runbooks (ops role).
//! - [`console`]: the ops web page.
//! - [`openapi`]: the OpenAPI document of the REST API, `GET /openapi.json`.
//! - [`relays`]: relay discovery (Redis) and `RelayControl` calls.
//! - [`temporal`]: the lazily connected Temporal client.
//! - [`seed`]: the dev account and credentials for the local stack.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod certificates;
pub mod config;
pub mod console;
pub mod domains;
pub mod error;
pub mod extract;
pub mod feed;
pub mod incidents;
pub mod names;
pub mod openapi;
pub mod ops;
pub mod plans;
pub mod policies;
pub mod relays;
pub mod seed;
pub mod temporal;
#[cfg(test)]
mod testing;
pub mod usage;
pub mod users;
pub mod webhooks;

pub use config::ApiConfig;

use axum::{
    Router,
    routing::{delete, get, post, put},
};
use std::{net::SocketAddr, sync::Arc};
use tokio_util::sync::CancellationToken;

/// Shared state of handlers.
#[derive(Clone)]
pub struct AppState {
    /// PostgreSQL.
    pub db: sqlx::PgPool,
    /// Configuration.
    pub config: Arc<ApiConfig>,
    /// Temporal.
    pub temporal: Arc<temporal::Temporal>,
    /// Relays.
    pub relays: Arc<relays::Relays>,
    /// Redis (discovery, replay-all lock), connected whenever it answers.
    pub redis: Arc<burrow_common::redis_link::RedisLink>,
}

/// Why the api could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting names a file that is missing or unusable.
    #[error("{0}")]
    Config(String),
    /// PostgreSQL could not be reached or migrated.
    #[error("database: {0}")]
    Database(String),
    /// The listener could not bind.
    #[error("cannot listen on {addr} (`listen`): {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC: {0}")]
    Grpc(feed::server::ServeError),
    /// The gRPC listener could not bind.
    #[error("cannot listen on {addr} (`grpc_listen`): {source}")]
    BindGrpc {
        /// Address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Connects to PostgreSQL and applies the migrations in `api/migrations`.
pub async fn connect_db(url: &str) -> Result<sqlx::PgPool, StartError> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| StartError::Database(format!("cannot connect to {}: {e}", redact(url))))?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(|e| StartError::Database(format!("migrations failed: {e}")))?;
    Ok(pool)
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_owned(),
    }
}

/// Largest request body the api reads (provider events are a few KiB).
const MAX_BODY_BYTES: usize = 1 << 20;

/// axum answers an over-long body with a plain-text 413 from inside the extractor; give it the
/// API's JSON error shape like every other client error.
async fn json_body_limit_error(resp: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if resp.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return error::ApiError::TooLarge(format!(
            "the request body is larger than {MAX_BODY_BYTES} bytes"
        ))
        .into_response();
    }
    resp
}

/// The api's routes.
pub fn router(state: AppState) -> Router {
    let ready_state = state.clone();
    let ready: burrow_common::ops::ReadinessCheck = Arc::new(move || {
        let s = ready_state.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&s.db)
                .await
                .map_err(|e| format!("database: {e}"))?;
            s.temporal
                .check()
                .await
                .map_err(|e| format!("temporal: {e}"))
        })
    });
    Router::new()
        .route("/v1/accounts", post(accounts::create_account))
        .route("/v1/accounts/{id}", get(accounts::get_account))
        .route(
            "/v1/accounts/{id}/authtokens",
            post(accounts::create_authtoken).get(accounts::list_authtokens),
        )
        .route(
            "/v1/accounts/{id}/api-keys",
            post(accounts::create_api_key).get(api_keys::list_for_account),
        )
        .route("/v1/api-keys", get(api_keys::list))
        .route("/v1/api-keys/{id}", delete(api_keys::revoke))
        .route("/v1/users", post(users::create_user).get(users::list_users))
        .route("/v1/users/{id}", delete(users::disable_user))
        .route("/v1/users/{id}/api-keys", post(users::create_user_api_key))
        .route("/v1/accounts/{id}/users", get(users::list_account_users))
        .route("/v1/accounts/{id}/usage", get(usage::account_usage))
        .route("/v1/accounts/{id}/plan", put(plans::set_account_plan))
        .route("/v1/plans", get(plans::list_plans))
        .route("/v1/me", get(auth::me))
        .route(
            "/v1/accounts/{id}/reserved-names",
            post(names::reserve).get(names::list),
        )
        .route(
            "/v1/accounts/{id}/reserved-names/{name}",
            delete(names::release),
        )
        .route(
            "/v1/accounts/{id}/domains",
            post(domains::add).get(domains::list),
        )
        .route("/v1/accounts/{id}/domains/{domain}", delete(domains::remove))
        .route(
            "/v1/accounts/{id}/domains/{domain}/verify",
            post(domains::verify),
        )
        .route(
            "/v1/accounts/{id}/endpoints/{endpoint}/policy",
            put(policies::put)
                .get(policies::get)
                .delete(policies::delete),
        )
        .route("/v1/audit", get(audit::list))
        .route("/v1/authtokens/{id}", delete(accounts::revoke_authtoken))
        .route(
            "/v1/internal/authtokens/verify",
            post(accounts::verify_authtoken),
        )
        .route(
            "/v1/internal/authtokens/status",
            post(accounts::authtoken_status),
        )
        .route("/v1/internal/usage", post(usage::ingest))
        .route("/v1/webhooks/provider", post(webhooks::receive))
        .route("/v1/cert-callbacks", post(certificates::callbacks::receive))
        .route("/v1/certificates", get(certificates::list))
        .route("/v1/certificates/{domain}", get(certificates::get))
        .route("/v1/certificates/{domain}/renew", post(certificates::renew))
        .route("/v1/incidents", get(incidents::list))
        .route("/v1/incidents/{id}", get(incidents::get))
        .route(
            "/v1/incidents/{id}/acknowledge",
            post(incidents::acknowledge),
        )
        .route("/v1/incidents/{id}/resolve", post(incidents::resolve))
        .route("/v1/ops/regions", get(certificates::regions))
        .route(
            "/v1/ops/cert-callbacks",
            get(certificates::callbacks::list_callbacks),
        )
        .route(
            "/v1/ops/cert-callbacks/mappings",
            get(certificates::callbacks::list_mappings),
        )
        .route("/v1/ops/workflows", get(ops::list_workflows))
        .route(
            "/v1/ops/dead-letters/replay-all",
            post(ops::replay_all),
        )
        .route(
            "/v1/ops/dead-letters/{id}/replay",
            post(ops::replay_one),
        )
        .route("/v1/ops/sessions", get(ops::list_sessions))
        .route("/v1/ops/sessions/{id}/kick", post(ops::kick_session))
        .route("/runbooks/{kind}/{page}", get(ops::runbook))
        .route("/openapi.json", get(openapi::serve))
        .route("/console", get(console::page))
        .route("/", get(|| async { axum::response::Redirect::to("/console") }))
        .with_state(state)
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<_>| {
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path())
                },
            ),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(json_body_limit_error))
        .merge(burrow_common::ops::router(ready))
}

/// Runs the api until `shutdown`.
pub async fn run(config: ApiConfig, shutdown: CancellationToken) -> Result<(), StartError> {
    let redis = Arc::new(burrow_common::redis_link::RedisLink::new(&config.redis_url));
    let directory = burrow_proto::directory::RelayDirectory::new(
        redis.clone(),
        &config.redis_prefix,
        config.internal_key.expose(),
    )
    .with_control_ca_file(&config.relay_control_ca_file)
    .map_err(StartError::Config)?;
    let db = connect_db(&config.database_url).await?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(StartError::Serve)?;
    let grpc_listener = tokio::net::TcpListener::bind(&config.grpc_listen)
        .await
        .map_err(|source| StartError::BindGrpc {
            addr: config.grpc_listen.clone(),
            source,
        })?;
    let grpc_addr = grpc_listener.local_addr().map_err(StartError::Serve)?;
    if !config.addr_file.is_empty() {
        let addrs = serde_json::json!({ "api": addr.to_string(), "grpc": grpc_addr.to_string() });
        let _ = std::fs::write(&config.addr_file, addrs.to_string());
    }
    // A failing gRPC server stops the REST server too (a relay-less api is not healthy), and
    // `run` then returns its error.
    let stop = shutdown.child_token();
    let feed = feed::Feed::new(db.clone());
    tokio::spawn(feed::listener::run(feed.clone(), stop.clone()));
    let internal_key = config.internal_key.expose().to_owned();
    let grpc = tokio::spawn({
        let stop = stop.clone();
        async move {
            let served = feed::server::serve(grpc_listener, feed, internal_key, stop.clone()).await;
            if let Err(e) = &served {
                tracing::error!(error = %e, "gRPC server stopped; stopping the api");
            }
            stop.cancel();
            served
        }
    });
    tracing::info!(addr = %grpc_addr, "RelayFeed gRPC listening");
    if redis.configured() && redis.get().await.is_none() {
        tracing::warn!(
            "redis unavailable: relay discovery and the replay-all lock are off until it answers"
        );
    }
    let state = AppState {
        db,
        temporal: Arc::new(temporal::Temporal::new(
            &config.temporal_address,
            &config.temporal_namespace,
            &config.task_queue,
        )),
        relays: Arc::new(relays::Relays::new(directory)),
        redis,
        config: Arc::new(config),
    };
    tokio::spawn(webhooks::sweep_unstarted(state.clone(), shutdown.clone()));
    tokio::spawn(certificates::outbox::run(state.clone(), shutdown.clone()));
    tracing::info!(%addr, "api listening");
    // The peer address is what the audit log records as `source_ip`.
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.clone().cancelled_owned())
    .await
    .map_err(StartError::Serve)?;
    stop.cancel();
    match grpc.await {
        Ok(served) => served.map_err(StartError::Grpc),
        Err(e) => Err(StartError::Grpc(feed::server::ServeError::Panicked(
            e.to_string(),
        ))),
    }
}
