//! How Burrow's internal gRPC services authenticate: the caller sends the platform's internal
//! key as `authorization: Bearer <key>` metadata; the server compares it in constant time.
//! `RelayControl` (api → relay) and `RelayFeed` (relay → api) both use it.

use subtle::ConstantTimeEq;
use tonic::{Request, Status, metadata::MetadataValue, service::Interceptor};

/// Checks that `request` carries `expected` as its bearer key; `service` names what refused.
pub fn check_bearer<T>(expected: &str, request: &Request<T>, service: &str) -> Result<(), Status> {
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(p) if !expected.is_empty() && bool::from(p.as_bytes().ct_eq(expected.as_bytes())) => {
            Ok(())
        }
        Some(_) => Err(Status::unauthenticated(format!(
            "{service}: the key in `authorization` is not the platform's internal key"
        ))),
        None => Err(Status::unauthenticated(format!(
            "{service} needs the internal key: send metadata `authorization: Bearer <key>`"
        ))),
    }
}

/// A server interceptor admitting only calls that carry `key`.
pub fn require_bearer(
    key: String,
    service: &'static str,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request| check_bearer(&key, &request, service).map(|()| request)
}

/// A client interceptor that adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    /// Sends `key`; `None` when it cannot be a header value.
    pub fn new(key: &str) -> Option<Bearer> {
        format!("Bearer {key}").parse().ok().map(Bearer)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(v) = value {
            r.metadata_mut().insert("authorization", v.parse().unwrap());
        }
        r
    }

    #[test]
    fn only_the_right_key_passes() {
        let check = require_bearer("ik_right".into(), "RelayControl");
        assert!(check(with(Some("Bearer ik_right"))).is_ok());
        let wrong = check(with(Some("Bearer ik_wrong"))).unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let none = check(with(None)).unwrap_err();
        assert!(none.message().contains("RelayControl needs"), "{none:?}");
        // An empty expected key admits nobody.
        assert!(check_bearer("", &with(Some("Bearer ")), "x").is_err());
    }

    #[test]
    fn the_client_interceptor_adds_the_key() {
        let mut b = Bearer::new("ik_right").unwrap();
        let r = b.call(Request::new(())).unwrap();
        assert!(require_bearer("ik_right".into(), "x")(r).is_ok());
    }
}
