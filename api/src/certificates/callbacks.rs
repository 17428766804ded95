//! Callback-only ingest: `POST /v1/cert-callbacks`, and what ops read of it.
//!
//! A sender (a CA notification relay, DNS monitoring, ...) posts a JSON object
//! `{"id", "callbackClass", "callbackAction", "domain", ...}` signed like provider webhooks,
//! with `cert_callback_secret` and the header `Burrow-Signature: t=<unix>,v1=<hex>`
//! ([`crate::webhooks::signature`]). No API key.
//!
//! 1. Bad, missing or stale signature (`cert_callback_tolerance_secs`) → 401; nothing stored.
//! 2. Not a JSON object, or `id`, `callbackClass`, `callbackAction` or `domain` missing or not
//!    a string → 400 `malformed_payload` naming the field; nothing stored.
//! 3. `(callbackClass, callbackAction)` is looked up in `cert_callback_mappings`. An unknown
//!    pair is stored with status `unmapped` (kept for review: `GET /v1/ops/cert-callbacks?status=unmapped`)
//!    and answered 422 `unknown_callback_pair`.
//! 4. A mapped callback is stored once per `id` (status `received`), then its event type is
//!    signalled (`cert_event`) to `certificate-<domain>`: `signalled` → 200; no open run →
//!    `no_workflow` → 202 saying so; Temporal unavailable → 503 and the row stays `received`.
//! 5. A repeated `id` → 200 `duplicate: true` and no second signal, unless the stored row is
//!    still `received` (its signal failed): then the signal is tried again. The stored row wins
//!    over what the repeat carries.

use crate::extract::{Json, Query};
use crate::{
    AppState,
    audit::{self, Actor},
    auth::Role,
    error::{ApiError, ApiResult},
    webhooks::signature,
};
use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode};
use burrow_workflows::certificate::{self, CertEvent};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

/// Answer to an accepted callback.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallbackAccepted {
    /// The sender's callback id.
    pub id: String,
    /// Whether this delivery repeated a callback already stored.
    pub duplicate: bool,
    /// The stored callback's status: `signalled`, `no_workflow`, `unmapped` (a repeat of an
    /// unmapped one).
    pub status: String,
    /// Internal event type the pair maps to.
    pub event_type: Option<String>,
    /// The certificate workflow it was for.
    pub workflow_id: Option<String>,
    /// What happened, for people.
    pub message: String,
}

/// `POST /v1/cert-callbacks`.
#[utoipa::path(
    post,
    path = "/v1/cert-callbacks",
    operation_id = "receive_cert_callback",
    tag = "certificates",
    params(("Burrow-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">`, with `cert_callback_secret`")),
    request_body(
        content = Object,
        description = "A JSON object with string `id`, `callbackClass`, `callbackAction` and `domain`; other fields are kept.",
        content_type = "application/json"
    ),
    responses(
        (status = 200, description = "Signalled to the domain's certificate workflow, or a repeat (`duplicate: true`).", body = CallbackAccepted),
        (status = 202, description = "Stored, but no certificate workflow is running for the domain (`status: no_workflow`).", body = CallbackAccepted),
        (status = 400, description = "`malformed_payload`: not a JSON object, or a required field is missing or not a string; nothing stored.", body = crate::error::ErrorBody),
        (status = 401, description = "Missing, bad or stale `Burrow-Signature`; nothing stored.", body = crate::error::ErrorBody),
        (status = 422, description = "`unknown_callback_pair`: stored with status `unmapped` for review, not signalled.", body = crate::error::ErrorBody),
        (status = 503, description = "Temporal is unavailable (stored as `received`; a retry of the same id signals it), or no `cert_callback_secret` is configured.", body = crate::error::ErrorBody),
    )
)]
#[tracing::instrument(name = "cert_callback", skip_all, fields(callback_id, domain))]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<CallbackAccepted>)> {
    let secret = state.config.cert_callback_secret.expose();
    if secret.is_empty() {
        return Err(ApiError::Unavailable(
            "certificate callbacks are off: `cert_callback_secret` is not configured".into(),
        ));
    }
    let header = headers
        .get("burrow-signature")
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    signature::verify_header(
        signature::BURROW_SIGNATURE,
        secret.as_bytes(),
        header,
        &body,
        chrono::Utc::now().timestamp(),
        state.config.cert_callback_tolerance_secs,
    )
    .map_err(|e| {
        metrics::counter!("burrow_api_cert_callbacks_rejected_total", "reason" => e.code())
            .increment(1);
        ApiError::Unauthorized(format!("{}: {e}", e.code()))
    })?;
    let callback = Callback::parse(&body, &state.config.base_domain)?;
    let span = tracing::Span::current();
    span.record("callback_id", callback.id.as_str());
    span.record("domain", callback.domain.as_str());

    let event_type: Option<String> = sqlx::query_scalar(
        "SELECT event_type FROM cert_callback_mappings
         WHERE callback_class = $1 AND callback_action = $2",
    )
    .bind(&callback.class)
    .bind(&callback.action)
    .fetch_optional(&state.db)
    .await?;
    let stored: Stored = sqlx::query_as(
        "INSERT INTO cert_callbacks
             (id, callback_class, callback_action, event_type, domain, payload, status)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $4::text IS NULL THEN 'unmapped' ELSE 'received' END)
         ON CONFLICT (id) DO UPDATE SET deliveries = cert_callbacks.deliveries + 1
         RETURNING (xmax = 0) AS inserted, callback_class, callback_action, event_type, domain,
                   status",
    )
    .bind(&callback.id)
    .bind(&callback.class)
    .bind(&callback.action)
    .bind(&event_type)
    .bind(&callback.domain)
    .bind(&callback.payload)
    .fetch_one(&state.db)
    .await?;
    let duplicate = !stored.inserted;
    metrics::counter!("burrow_api_cert_callbacks_received_total", "duplicate" => duplicate.to_string())
        .increment(1);
    let workflow_id = stored.domain.as_deref().map(certificate::workflow_id);
    match (stored.status.as_str(), &stored.event_type, &stored.domain) {
        ("received", Some(event_type), Some(domain)) => {
            signal(&state, &callback.id, event_type, domain, duplicate).await
        }
        ("unmapped", _, _) if !duplicate => Err(ApiError::Unprocessable {
            code: "unknown_callback_pair",
            message: format!(
                "unknown callback pair (callbackClass={:?}, callbackAction={:?}); kept for review",
                stored.callback_class, stored.callback_action
            ),
        }),
        (status, event_type, _) => Ok((
            StatusCode::OK,
            Json(CallbackAccepted {
                id: callback.id.clone(),
                duplicate,
                status: status.to_owned(),
                event_type: event_type.clone(),
                workflow_id,
                message: format!(
                    "callback {:?} was already received (status {status}); not signalled again",
                    callback.id
                ),
            }),
        )),
    }
}

/// The stored row (`RETURNING`).
#[derive(sqlx::FromRow)]
struct Stored {
    inserted: bool,
    callback_class: String,
    callback_action: String,
    event_type: Option<String>,
    domain: Option<String>,
    status: String,
}

/// Signals a stored, mapped callback and records how that went.
async fn signal(
    state: &AppState,
    id: &str,
    event_type: &str,
    domain: &str,
    duplicate: bool,
) -> ApiResult<(StatusCode, Json<CallbackAccepted>)> {
    let workflow_id = certificate::workflow_id(domain);
    let event = CertEvent {
        callback_id: id.to_owned(),
        event_type: event_type.to_owned(),
    };
    let signalled = tokio::time::timeout(
        Duration::from_secs(2),
        state.temporal.certificate_event(&workflow_id, event),
    )
    .await
    .unwrap_or_else(|_| {
        Err(ApiError::Unavailable(
            "Temporal did not answer in time".into(),
        ))
    });
    let (status, code, message) = match signalled {
        Ok(true) => (
            "signalled",
            StatusCode::OK,
            format!("{event_type} signalled to {workflow_id}"),
        ),
        Ok(false) => (
            "no_workflow",
            StatusCode::ACCEPTED,
            format!(
                "no certificate workflow is running for {domain}; the callback is stored \
                 (status no_workflow) and was not signalled"
            ),
        ),
        Err(e) => {
            let detail = e.to_string();
            sqlx::query("UPDATE cert_callbacks SET detail = $2 WHERE id = $1")
                .bind(id)
                .bind(&detail)
                .execute(&state.db)
                .await?;
            return Err(ApiError::Unavailable(format!(
                "callback {id:?} is stored but could not be signalled ({detail}); send it again"
            )));
        }
    };
    sqlx::query(
        "UPDATE cert_callbacks SET status = $2, detail = $3 WHERE id = $1 AND status = 'received'",
    )
    .bind(id)
    .bind(status)
    .bind(&message)
    .execute(&state.db)
    .await?;
    metrics::counter!("burrow_api_cert_callbacks_signalled_total", "status" => status).increment(1);
    Ok((
        code,
        Json(CallbackAccepted {
            id: id.to_owned(),
            duplicate,
            status: status.to_owned(),
            event_type: Some(event_type.to_owned()),
            workflow_id: Some(workflow_id),
            message,
        }),
    ))
}

/// A callback body, checked.
#[derive(Debug)]
pub struct Callback {
    /// The sender's event id (idempotency key).
    pub id: String,
    /// `callbackClass`.
    pub class: String,
    /// `callbackAction`.
    pub action: String,
    /// The domain, normalized.
    pub domain: String,
    /// The whole body.
    pub payload: Value,
}

impl Callback {
    /// Parses a raw callback body (bytes from the network); `base_domain` is the relays' own
    /// domain, which callbacks may not name.
    pub fn parse(body: &[u8], base_domain: &str) -> ApiResult<Callback> {
        let bad = |m: String| ApiError::bad_request("malformed_payload", m);
        let payload: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("body is not JSON: {e}")))?;
        if !payload.is_object() {
            return Err(bad("the body must be a JSON object".into()));
        }
        if crate::webhooks::contains_nul(&payload) {
            return Err(bad(
                "callback contains a NUL character (\\u0000), which cannot be stored".into(),
            ));
        }
        let field = |name: &str| {
            payload
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 255)
                .map(str::to_owned)
                .ok_or_else(|| {
                    bad(format!(
                        "callback has no string `{name}` (1 to 255 characters)"
                    ))
                })
        };
        let id = field("id")?;
        let class = field("callbackClass")?;
        let action = field("callbackAction")?;
        let domain = payload
            .get("domain")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("callback has no string `domain`".into()))?;
        let domain = crate::domains::normalize(domain, base_domain)
            .map_err(|e| bad(format!("`domain`: {e}")))?;
        Ok(Callback {
            id,
            class,
            action,
            domain,
            payload,
        })
    }
}

/// A row of `cert_callback_mappings`.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Mapping {
    /// `callbackClass`.
    pub callback_class: String,
    /// `callbackAction`.
    pub callback_action: String,
    /// The internal event type signalled to the certificate workflow.
    pub event_type: String,
}

/// `GET /v1/ops/cert-callbacks/mappings` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MappingList {
    /// By class, then action.
    pub mappings: Vec<Mapping>,
}

/// `GET /v1/ops/cert-callbacks/mappings` (ops): which callback pair means which event.
#[utoipa::path(
    get,
    path = "/v1/ops/cert-callbacks/mappings",
    operation_id = "list_cert_callback_mappings",
    tag = "certificates",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Every mapping.", body = MappingList),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
    )
)]
pub async fn list_mappings(
    State(state): State<AppState>,
    actor: Actor,
) -> ApiResult<Json<MappingList>> {
    if let Err(e) = actor
        .principal
        .require(&[Role::Ops], "reading callback mappings")
    {
        let action = "cert_callback.mappings";
        return Err(audit::failed(&state.db, &actor, action, None, json!({}), e).await);
    }
    let mappings = sqlx::query_as(
        "SELECT callback_class, callback_action, event_type FROM cert_callback_mappings
         ORDER BY callback_class, callback_action",
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(MappingList { mappings }))
}

/// A stored callback.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StoredCallback {
    /// The sender's id.
    pub id: String,
    /// `callbackClass`.
    pub callback_class: String,
    /// `callbackAction`.
    pub callback_action: String,
    /// Mapped event type (`null` when unmapped).
    pub event_type: Option<String>,
    /// The domain it was about.
    pub domain: Option<String>,
    /// The body as received.
    pub payload: Value,
    /// `received`, `signalled`, `unmapped` or `no_workflow`.
    pub status: String,
    /// What happened last.
    pub detail: Option<String>,
    /// Deliveries of this id.
    pub deliveries: i32,
    /// First delivery.
    pub received_at: DateTime<Utc>,
}

/// Filters of `GET /v1/ops/cert-callbacks`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CallbackFilter {
    /// Only this status: `received`, `signalled`, `unmapped`, `no_workflow`.
    pub status: Option<String>,
    /// At most this many (default 100, max 1000).
    pub limit: Option<i64>,
}

/// Statuses of `cert_callbacks`.
pub const STATUSES: &[&str] = &["received", "signalled", "unmapped", "no_workflow"];

/// `GET /v1/ops/cert-callbacks` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CallbackList {
    /// Newest first.
    pub callbacks: Vec<StoredCallback>,
}

/// `GET /v1/ops/cert-callbacks?status=&limit=` (ops): recent callbacks, newest first.
#[utoipa::path(
    get,
    path = "/v1/ops/cert-callbacks",
    operation_id = "list_cert_callbacks",
    tag = "certificates",
    security(("api_key" = [])),
    params(CallbackFilter),
    responses(
        (status = 200, description = "Callbacks, newest first.", body = CallbackList),
        (status = 400, description = "`invalid_status`, `invalid_query`.", body = crate::error::ErrorBody),
        (status = 403, description = "Not an ops or admin key.", body = crate::error::ErrorBody),
    )
)]
pub async fn list_callbacks(
    State(state): State<AppState>,
    actor: Actor,
    Query(filter): Query<CallbackFilter>,
) -> ApiResult<Json<CallbackList>> {
    let detail = json!({ "status": filter.status, "limit": filter.limit });
    let read = async {
        actor
            .principal
            .require(&[Role::Ops], "listing certificate callbacks")?;
        if let Some(s) = &filter.status
            && !STATUSES.contains(&s.as_str())
        {
            return Err(ApiError::bad_request(
                "invalid_status",
                format!("`status` {s:?} is not one of {}", STATUSES.join(", ")),
            ));
        }
        let callbacks = sqlx::query_as(
            "SELECT id, callback_class, callback_action, event_type, domain, payload, status,
                    detail, deliveries, received_at
             FROM cert_callbacks WHERE ($1::text IS NULL OR status = $1)
             ORDER BY received_at DESC, id LIMIT $2",
        )
        .bind(&filter.status)
        .bind(filter.limit.unwrap_or(100).clamp(1, 1000))
        .fetch_all(&state.db)
        .await?;
        Ok(CallbackList { callbacks })
    };
    let list = audit::read(&state.db, &actor, "cert_callback.list", None, detail, read).await?;
    Ok(Json(list))
}

#[cfg(test)]
mod parse_tests {
    use super::Callback;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Callback::parse(&body, "burrow.localhost");
        }

        #[test]
        fn well_formed_callbacks_parse_to_their_fields(
            id in "[A-Za-z0-9_-]{1,64}",
            class in "[a-z]{1,20}",
            action in "[a-z_]{1,20}",
            label in "[a-z][a-z0-9]{0,20}",
        ) {
            let domain = format!("{label}.example.com");
            let body = json!({
                "id": id, "callbackClass": class, "callbackAction": action,
                "domain": domain.to_uppercase(), "extra": {"kept": true},
            });
            let c = Callback::parse(body.to_string().as_bytes(), "burrow.localhost").unwrap();
            prop_assert_eq!(c.id, id);
            prop_assert_eq!(c.class, class);
            prop_assert_eq!(c.action, action);
            prop_assert_eq!(c.domain, domain);
            prop_assert_eq!(&c.payload["extra"]["kept"], &json!(true));
        }

        #[test]
        fn a_missing_field_is_named(field in prop::sample::select(vec!["id", "callbackClass", "callbackAction", "domain"])) {
            let mut body = json!({
                "id": "cb-1", "callbackClass": "certificate", "callbackAction": "renew",
                "domain": "app.example.com",
            });
            body.as_object_mut().unwrap().remove(field);
            let err = Callback::parse(body.to_string().as_bytes(), "burrow.localhost").unwrap_err();
            prop_assert!(format!("{err:?}").contains(field), "{:?}", err);
        }
    }
}
