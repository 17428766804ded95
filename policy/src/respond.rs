//! The responses a policy answers with: short `text/plain` bodies saying why, and the
//! `x-burrow-policy` header naming the rule, so a visitor (or the endpoint's owner reading
//! logs) can tell a policy answer from the service's own.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::model::CustomResponse;

/// Header naming the rule that answered.
pub const POLICY_HEADER: HeaderName = HeaderName::from_static("x-burrow-policy");

/// A `text/plain` answer with `text` (plus a newline) as its body.
pub(crate) fn answer(status: StatusCode, rule: &HeaderValue, text: String) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(text + "\n"));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(POLICY_HEADER, rule.clone());
    res
}

/// A `custom-response`: its status, headers and body (`text/plain` unless it sets a type).
pub(crate) fn custom(c: &CustomResponse, rule: &HeaderValue) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(c.body.clone().unwrap_or_default()));
    *res.status_mut() = StatusCode::from_u16(c.status).unwrap_or(StatusCode::OK);
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (k, v) in &c.headers {
        h.insert(k, v.clone());
    }
    h.insert(POLICY_HEADER, rule.clone());
    res
}
