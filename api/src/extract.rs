//! Request extractors whose rejections are [`ApiError`]s, so a malformed body or path answers
//! in the same JSON error shape as every other client error, naming what was wrong.

use crate::error::ApiError;
use axum::{
    extract::{
        FromRequest, FromRequestParts, OptionalFromRequest, Request, rejection::JsonRejection,
    },
    http::{header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Serialize, de::DeserializeOwned};

/// A JSON body; a rejection is a 400 `invalid_json` (or 415 semantics folded into 400) with
/// serde's message, which names the offending field and position.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // Every body of this api is a JSON object; serde would otherwise also read a struct
        // from an array (`[null, null]`) by position.
        match <axum::Json<serde_json::Value> as FromRequest<S>>::from_request(req, state).await {
            Ok(axum::Json(v)) if v.is_object() => {
                serde_json::from_value(v).map(Json).map_err(|e| {
                    ApiError::bad_request(
                        "invalid_json",
                        format!("Failed to deserialize the JSON body into the target type: {e}"),
                    )
                })
            }
            Ok(axum::Json(v)) => Err(ApiError::bad_request(
                "invalid_json",
                format!(
                    "the body must be a JSON object, not {}",
                    match v {
                        serde_json::Value::Array(_) => "an array",
                        serde_json::Value::String(_) => "a string",
                        serde_json::Value::Number(_) => "a number",
                        serde_json::Value::Bool(_) => "a boolean",
                        _ => "null",
                    }
                ),
            )),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::bad_request(
                "invalid_json",
                "send the body as JSON with `Content-Type: application/json`",
            )),
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::TooLarge(e.body_text()))
            }
            Err(e) => Err(ApiError::bad_request("invalid_json", e.body_text())),
        }
    }
}

/// An optional JSON body: absent (no body, no JSON content type) is `None`; present but
/// malformed is the same 400 as [`Json`].
impl<S: Send + Sync, T: DeserializeOwned> OptionalFromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, ApiError> {
        let has_body = req.headers().contains_key(header::CONTENT_TYPE)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|l| l != "0");
        if !has_body {
            return Ok(None);
        }
        <Self as FromRequest<S>>::from_request(req, state)
            .await
            .map(Some)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters; a rejection is a 400 `invalid_path` naming the parameter.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// Query parameters; a rejection is a 400 `invalid_query` naming the parameter.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}
