//! The api's one error type: every failure a client can cause maps to a 4xx with a stable
//! `code` and a message naming what was wrong; internal failures are logged with their cause
//! and answered with a 5xx that leaks nothing.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request itself is wrong.
    #[error("{message}")]
    BadRequest {
        /// Stable machine-readable code.
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// 401: no or unknown credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: known credentials without the needed role.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: the resource is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than the api accepts.
    #[error("{0}")]
    TooLarge(String),
    /// 422: the request is well-formed but names something that does not exist.
    #[error("{message}")]
    Unprocessable {
        /// Stable machine-readable code (`unknown_plan`, ...).
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// 422 `invalid_policy`: a traffic policy document was refused; names the field and, when
    /// known, the line of the submitted text.
    #[error("{message}")]
    InvalidPolicy {
        /// What was wrong, prefixed with `line N: <field>: ` like `burrow_policy::PolicyError`.
        message: String,
        /// Path of the offending field (empty when the document does not parse at all).
        field: String,
        /// 1-based line in the submitted text.
        line: Option<usize>,
    },
    /// 415: the body's `Content-Type` is not one the route reads.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: a dependency is down; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => {
                ApiError::Unavailable("the database is unavailable; retry later".into())
            }
            _ => ApiError::Internal(format!("database: {e}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, *code, message.clone())
            }
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m.clone()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m.clone()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            ApiError::TooLarge(m) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                m.clone(),
            ),
            ApiError::Unprocessable { code, message } => {
                (StatusCode::UNPROCESSABLE_ENTITY, *code, message.clone())
            }
            ApiError::InvalidPolicy {
                message,
                field,
                line,
            } => {
                let body = json!({ "error": {
                    "code": "invalid_policy", "message": message, "field": field, "line": line,
                }});
                return (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response();
            }
            ApiError::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m.clone(),
            ),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", m.clone()),
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the api logs".to_owned(),
                )
            }
        };
        (
            status,
            Json(json!({ "error": { "code": code, "message": message } })),
        )
            .into_response()
    }
}

/// The body of every error answer: `{"error": {"code", "message", ...}}` (the OpenAPI
/// document's `ErrorBody`; a test checks each [`ApiError`] answers in this shape).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `unavailable`, `internal`, or one naming
    /// the problem (`invalid_json`, `invalid_name`, `unknown_plan`, `invalid_policy`, ...).
    #[schema(example = "not_found")]
    pub code: String,
    /// What was wrong, for people.
    pub message: String,
    /// `invalid_policy`: path of the offending field (empty when the text does not parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// `invalid_policy`: 1-based line of the submitted text, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// `unknown_account` (`POST /v1/internal/usage`): the account ids that are not accounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accounts: Option<Vec<String>>,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: ApiError) -> (StatusCode, ErrorBody) {
        let resp = e.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{status}: not an ErrorBody ({e}): {bytes:?}"));
        (status, body)
    }

    #[tokio::test]
    async fn every_error_answers_the_documented_body() {
        let all = [
            ApiError::bad_request("invalid_name", "m"),
            ApiError::Unauthorized("m".into()),
            ApiError::Forbidden("m".into()),
            ApiError::NotFound("m".into()),
            ApiError::Conflict("m".into()),
            ApiError::TooLarge("m".into()),
            ApiError::Unprocessable {
                code: "unknown_plan",
                message: "m".into(),
            },
            ApiError::InvalidPolicy {
                message: "line 2: rules: m".into(),
                field: "rules".into(),
                line: Some(2),
            },
            ApiError::UnsupportedMediaType("m".into()),
            ApiError::Unavailable("m".into()),
            ApiError::Internal("cause".into()),
        ];
        for e in all {
            let what = format!("{e:?}");
            let (status, body) = body_of(e).await;
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{what}"
            );
            assert!(!body.error.code.is_empty(), "{what}");
        }
        let (_, body) = body_of(ApiError::InvalidPolicy {
            message: "m".into(),
            field: "rules".into(),
            line: None,
        })
        .await;
        assert_eq!(body.error.field.as_deref(), Some("rules"));
    }
}
