//! A small client for the Burrow REST api, authenticated with an API key: what the account
//! management commands ([`crate::manage`]) send. It owns the transport (plain HTTP or HTTPS
//! verified against the web PKI), the bearer header, and turning the api's
//! `{"error": {"code", "message", ...}}` answers into [`ApiError::Refused`].

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use serde_json::Value;
use std::time::Duration;

/// How long one request may take, connect to last byte: the api answers these in
/// milliseconds, so anything slower is a hung connection, not a busy server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers larger than this are not read: every management answer is a few KiB.
const MAX_ANSWER_BYTES: usize = 8 << 20;

/// Why a request to the api failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The URL given as `--api-url` / `BURROW_API_URL` cannot be used.
    #[error("invalid api URL `{url}`: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection, or no complete answer, from the api.
    #[error("cannot reach the api at {url}: {reason}")]
    Unreachable {
        /// The api's base URL.
        url: String,
        /// The transport failure.
        reason: String,
    },
    /// The api answered with an error status.
    #[error("{message}")]
    Refused {
        /// HTTP status.
        status: StatusCode,
        /// The api's stable code (`not_found`, `invalid_policy`, ...), or `http_<status>` when
        /// the answer carried no error document.
        code: String,
        /// The api's explanation.
        message: String,
        /// The offending field, when the api names one (`invalid_policy`).
        field: Option<String>,
        /// The 1-based line in the submitted document, when the api names one.
        line: Option<u64>,
    },
    /// A success status with a body that is not JSON.
    #[error("the api at {url} answered {status} with a body that is not JSON: {reason}")]
    BadAnswer {
        /// The api's base URL.
        url: String,
        /// HTTP status.
        status: StatusCode,
        /// The parse failure.
        reason: String,
    },
}

/// A request body: its media type and bytes.
#[derive(Debug, Clone)]
pub struct Body {
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// The bytes sent.
    pub bytes: Bytes,
}

impl Body {
    /// A JSON document.
    pub fn json(value: &Value) -> Self {
        Body {
            content_type: "application/json",
            bytes: Bytes::from(value.to_string()),
        }
    }
}

/// A client bound to one api and one API key.
pub struct ApiClient {
    /// Base URL without a trailing slash (`http://127.0.0.1:17080`).
    base: String,
    /// The bearer secret; never printed (see the `Debug` impl).
    key: String,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("key", &"MASKED")
            .finish()
    }
}

impl ApiClient {
    /// A client for the api at `base` (`http://` or `https://`, no path) using `key`.
    pub fn new(base: &str, key: &str) -> Result<Self, ApiError> {
        let base = base.trim_end_matches('/').to_owned();
        let bad = |reason: &str| ApiError::BadUrl {
            url: base.clone(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = base.parse().map_err(|e: http::uri::InvalidUri| {
            bad(&format!("{e}; expected http(s)://host:port"))
        })?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(bad("expected http(s)://host:port")),
        }
        if uri.host().is_none() {
            return Err(bad("no host; expected http(s)://host:port"));
        }
        let tls = crate::tls::upstream_config(&crate::upstream::UpstreamTls::default(), &[])
            .map_err(|e| bad(&format!("TLS setup: {e}")))?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(ApiClient {
            base,
            key: key.to_owned(),
            http: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
        })
    }

    /// The api's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method path` with `body`; answers the success status and its JSON body
    /// (`Value::Null` when empty, e.g. 204), or the api's refusal.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<(StatusCode, Value), ApiError> {
        let unreachable = |reason: String| ApiError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key))
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("burrow/", env!("CARGO_PKG_VERSION")),
            );
        let bytes = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, b.content_type);
                b.bytes
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| ApiError::BadUrl {
            url: format!("{}{path}", self.base),
            reason: e.to_string(),
        })?;
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                // hyper's own "client error (Connect)" says nothing the cause does not.
                let chain = error_chain(&e);
                unreachable(match chain.split_once("client error (Connect): ") {
                    Some(("", cause)) => cause.to_owned(),
                    _ => chain,
                })
            })?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, ApiError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))??;
        interpret(&self.base, status, &body)
    }
}

/// Turns an answer into the JSON of a success or the api's refusal.
pub fn interpret(
    base: &str,
    status: StatusCode,
    body: &[u8],
) -> Result<(StatusCode, Value), ApiError> {
    let json = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(Value::Null)
    } else {
        serde_json::from_slice::<Value>(body)
    };
    if status.is_success() {
        return json.map(|v| (status, v)).map_err(|e| ApiError::BadAnswer {
            url: base.to_owned(),
            status,
            reason: e.to_string(),
        });
    }
    let error = json.ok().map(|v| v["error"].clone()).unwrap_or(Value::Null);
    let text = |k: &str| error[k].as_str().map(str::to_owned);
    Err(ApiError::Refused {
        status,
        code: text("code").unwrap_or_else(|| format!("http_{}", status.as_u16())),
        message: text("message").unwrap_or_else(|| {
            let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]);
            let snippet = snippet.trim();
            match snippet.is_empty() {
                true => format!("the api answered {status}"),
                false => format!("the api answered {status}: {snippet}"),
            }
        }),
        field: text("field").filter(|f| !f.is_empty()),
        line: error["line"].as_u64(),
    })
}

/// `e` and its sources, `outer: inner: root` (hyper's own message alone is "client error
/// (Connect)", which does not say *why*).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// Percent-encodes one path segment (a name, domain or id taken from the command line), so a
/// `/` or `?` in it cannot address another route.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refusals_carry_the_apis_code_message_field_and_line() {
        let body = json!({"error": {"code": "invalid_policy", "message": "unknown action `dney`",
            "field": "on_http_request[0].actions[0].type", "line": 3}})
        .to_string();
        match interpret(
            "http://api",
            StatusCode::UNPROCESSABLE_ENTITY,
            body.as_bytes(),
        ) {
            Err(ApiError::Refused {
                code,
                message,
                field,
                line,
                ..
            }) => {
                assert_eq!(code, "invalid_policy");
                assert_eq!(message, "unknown action `dney`");
                assert_eq!(field.as_deref(), Some("on_http_request[0].actions[0].type"));
                assert_eq!(line, Some(3));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refusals_without_an_error_document_still_explain() {
        let e = interpret("http://api", StatusCode::BAD_GATEWAY, b"upstream down").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the api answered 502 Bad Gateway: upstream down"
        );
        let e = interpret("http://api", StatusCode::NOT_FOUND, b"").unwrap_err();
        assert_eq!(e.to_string(), "the api answered 404 Not Found");
        let body = br#"{"error":{"code":"x","message":"m","field":""}}"#;
        match interpret("http://api", StatusCode::BAD_REQUEST, body) {
            Err(ApiError::Refused { field: None, .. }) => {}
            other => panic!("an empty field is no field: {other:?}"),
        }
    }

    #[test]
    fn empty_success_is_null_and_garbage_is_named() {
        let (s, v) = interpret("http://api", StatusCode::NO_CONTENT, b"").unwrap();
        assert_eq!((s, v), (StatusCode::NO_CONTENT, Value::Null));
        let e = interpret("http://api", StatusCode::OK, b"<html>").unwrap_err();
        assert!(e.to_string().contains("http://api"), "{e}");
    }

    #[test]
    fn segments_cannot_escape_their_place_in_the_path() {
        assert_eq!(segment("app.example.com"), "app.example.com");
        assert_eq!(segment("a/../b?x=1"), "a%2F..%2Fb%3Fx%3D1");
        assert_eq!(segment("é"), "%C3%A9");
    }

    #[test]
    fn urls_are_checked_and_keys_masked() {
        assert!(matches!(
            ApiClient::new("127.0.0.1:17080", "k"),
            Err(ApiError::BadUrl { .. })
        ));
        assert!(matches!(
            ApiClient::new("ftp://host", "k"),
            Err(ApiError::BadUrl { .. })
        ));
        let c = ApiClient::new("http://127.0.0.1:17080/", "bk_secret").unwrap();
        assert_eq!(c.base(), "http://127.0.0.1:17080");
        assert!(!format!("{c:?}").contains("bk_secret"));
    }
}
