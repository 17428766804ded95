//! What a token must satisfy: the `jwt-validation` configuration, the claim checks (`exp`,
//! `nbf`, `iss`, `aud`, against the evaluation's clock with leeway), the reasons a token is
//! refused, and where a token is found in a request.

use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderName;
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize, Serializer};

/// The `jwt-validation` configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JwtConfig {
    /// Where the signing keys are published.
    pub jwks_url: String,
    /// Required `iss`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `aud` must contain one of these, if any are given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Accepted `alg`s (empty: [`DEFAULT_ALGORITHMS`](super::DEFAULT_ALGORITHMS)).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub algorithms: Vec<Algorithm>,
    /// Header carrying the token (`authorization`: `Bearer <token>`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "header_name"
    )]
    pub header: Option<HeaderName>,
    /// Clock skew allowed on `exp` and `nbf` (default 30 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leeway_secs: Option<u64>,
}

fn header_name<S: Serializer>(h: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_ref().map_or("authorization", HeaderName::as_str))
}

/// Why a token was refused (the text goes into `error_description`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// No token in the configured header.
    #[error("missing bearer token")]
    Missing,
    /// Not a JWT.
    #[error("malformed token")]
    Malformed,
    /// The `alg` is not in the accepted list.
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(Algorithm),
    /// No published key matches the token's `kid` and `alg`.
    #[error("no signing key matches the token")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    Signature,
    /// Expired (or no `exp`).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("wrong issuer")]
    Issuer,
    /// No accepted `aud`.
    #[error("wrong audience")]
    Audience,
    /// The key set could not be fetched (answered 503, not 401: the token may be fine).
    #[error("signing keys unavailable: {0}")]
    KeysUnavailable(String),
}

/// The claims checked here; the rest of the payload is ignored.
#[derive(Deserialize)]
pub(super) struct Claims {
    exp: Option<f64>,
    nbf: Option<f64>,
    iss: Option<String>,
    #[serde(default)]
    aud: Audience,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

pub(super) fn check_claims(
    cfg: &JwtConfig,
    claims: &Claims,
    now: SystemTime,
) -> Result<(), JwtError> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let leeway = cfg.leeway_secs.unwrap_or(30) as f64;
    match claims.exp {
        Some(exp) if now <= exp + leeway => {}
        _ => return Err(JwtError::Expired),
    }
    if claims.nbf.is_some_and(|nbf| now + leeway < nbf) {
        return Err(JwtError::NotYetValid);
    }
    if cfg
        .issuer
        .as_ref()
        .is_some_and(|iss| claims.iss.as_ref() != Some(iss))
    {
        return Err(JwtError::Issuer);
    }
    if !cfg.audiences.is_empty() {
        let ok = match &claims.aud {
            Audience::None => false,
            Audience::One(a) => cfg.audiences.contains(a),
            Audience::Many(list) => list.iter().any(|a| cfg.audiences.contains(a)),
        };
        if !ok {
            return Err(JwtError::Audience);
        }
    }
    Ok(())
}

/// The token from a request header: `Bearer <token>` (the scheme is case-insensitive); on a
/// header other than `authorization` a bare token is accepted too.
pub fn token_from(value: &str, is_authorization: bool) -> Option<&str> {
    let v = value.trim();
    let token = match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        _ if !is_authorization => v,
        _ => return None,
    };
    (!token.is_empty()).then_some(token)
}
