//! Stripe-style webhook signatures, shared by every signed ingest of the api: provider webhooks
//! (`Stripe-Signature`, [`verify`]) and certificate callbacks (`Burrow-Signature`,
//! [`verify_header`] with [`BURROW_SIGNATURE`]).
//!
//! Header: `<Name>: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, where each `v1` is
//! `HMAC-SHA256(secret, "<t>.<raw body>")`. Several `v1` values are allowed (the provider sends
//! one per active secret while a secret is being rolled); any one matching is enough. Other
//! schemes (`v0`, ...) are ignored. The timestamp must be within the tolerance of now in either
//! direction, which bounds how long a captured request can be replayed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header of provider webhooks.
pub const STRIPE_SIGNATURE: &str = "Stripe-Signature";

/// Header of certificate callbacks (`POST /v1/cert-callbacks`).
pub const BURROW_SIGNATURE: &str = "Burrow-Signature";

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No header (its name).
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The header does not parse.
    #[error("malformed {header} header: {detail}")]
    Malformed {
        /// Header name.
        header: &'static str,
        /// What does not parse.
        detail: String,
    },
    /// No `v1` signature in the header (its name).
    #[error("{0} has no v1 signature")]
    NoV1(&'static str),
    /// The timestamp is outside the tolerance.
    #[error("signature timestamp is {age_secs}s away from now (tolerance {tolerance_secs}s)")]
    Stale {
        /// Distance from now.
        age_secs: i64,
        /// Allowed distance.
        tolerance_secs: u64,
    },
    /// No `v1` matches the body.
    #[error("no v1 signature matches the payload")]
    Mismatch,
}

impl SignatureError {
    /// Stable code for API errors.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Stale { .. } => "stale_timestamp",
            _ => "invalid_signature",
        }
    }
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// `t`.
    pub timestamp: i64,
    /// Every `v1` value, decoded.
    pub v1: Vec<Vec<u8>>,
}

/// Parses a `Stripe-Signature` header value.
pub fn parse(header: &str) -> Result<SignatureHeader, SignatureError> {
    parse_named(STRIPE_SIGNATURE, header)
}

/// Parses the value of header `name` (errors name it).
pub fn parse_named(name: &'static str, header: &str) -> Result<SignatureHeader, SignatureError> {
    let malformed = |detail: String| SignatureError::Malformed {
        header: name,
        detail,
    };
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in header.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| malformed(format!("item {item:?} is not key=value")))?;
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(malformed("more than one t=".into()));
                }
                timestamp = Some(
                    value
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| malformed(format!("t={value:?} is not a unix timestamp")))?,
                );
            }
            "v1" => v1.push(
                hex::decode(value.trim())
                    .map_err(|_| malformed(format!("v1={value:?} is not hex")))?,
            ),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| malformed("no t= timestamp".into()))?;
    if v1.is_empty() {
        return Err(SignatureError::NoV1(name));
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// Signatures compared per request (providers send one, two while rotating secrets).
const MAX_CANDIDATES: usize = 8;

/// Computes the `v1` signature of `body` at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Verifies a `Stripe-Signature` `header` for `body` at time `now` (unix seconds).
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<i64, SignatureError> {
    verify_header(STRIPE_SIGNATURE, secret, header, body, now, tolerance_secs)
}

/// Verifies the value of header `name` for `body` at time `now` (unix seconds); returns the
/// signed timestamp.
pub fn verify_header(
    name: &'static str,
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: u64,
) -> Result<i64, SignatureError> {
    let parsed = parse_named(name, header.ok_or(SignatureError::Missing(name))?)?;
    let age = now.saturating_sub(parsed.timestamp);
    if age.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::Stale {
            age_secs: age,
            tolerance_secs,
        });
    }
    // The MAC is computed once however many candidates the header lists (a header of many
    // `v1=` items must not cost one pass over a large body each); only the first few
    // well-sized candidates are compared, in constant time.
    let expected = sign(secret, parsed.timestamp, body);
    let matched = parsed
        .v1
        .iter()
        .filter(|c| c.len() == expected.len())
        .take(MAX_CANDIDATES)
        .any(|c| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                c.as_slice(),
                expected.as_slice(),
            ))
        });
    match matched {
        true => Ok(parsed.timestamp),
        false => Err(SignatureError::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"whsec_test";

    fn header(t: i64, sigs: &[Vec<u8>]) -> String {
        let mut h = format!("t={t}");
        for s in sigs {
            h.push_str(&format!(",v1={}", hex::encode(s)));
        }
        h
    }

    #[test]
    fn valid_signature_passes() {
        let body = br#"{"id":"evt_1"}"#;
        let h = header(1000, &[sign(SECRET, 1000, body)]);
        assert_eq!(verify(SECRET, Some(&h), body, 1100, 300), Ok(1000));
    }

    #[test]
    fn any_of_several_v1_passes() {
        let body = b"{}";
        let h = header(1000, &[sign(b"old", 1000, body), sign(SECRET, 1000, body)]);
        assert!(verify(SECRET, Some(&h), body, 1000, 300).is_ok());
        let h = format!("v0=abcd,{h},scheme=x");
        assert!(verify(SECRET, Some(&h), body, 1000, 300).is_ok());
    }

    #[test]
    fn tampered_body_fails() {
        let h = header(1000, &[sign(SECRET, 1000, b"{\"a\":1}")]);
        assert_eq!(
            verify(SECRET, Some(&h), b"{\"a\":2}", 1000, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_fail() {
        let body = b"{}";
        let h = header(1000, &[sign(SECRET, 1000, body)]);
        assert!(matches!(
            verify(SECRET, Some(&h), body, 1301, 300),
            Err(SignatureError::Stale { age_secs: 301, .. })
        ));
        assert!(matches!(
            verify(SECRET, Some(&h), body, 699, 300),
            Err(SignatureError::Stale { age_secs: -301, .. })
        ));
        assert!(verify(SECRET, Some(&h), body, 1300, 300).is_ok());
    }

    #[test]
    fn malformed_headers_are_named() {
        assert_eq!(
            verify(SECRET, None, b"", 0, 300),
            Err(SignatureError::Missing(STRIPE_SIGNATURE))
        );
        assert!(
            matches!(parse("v1=00"), Err(SignatureError::Malformed { detail, .. }) if detail.contains("no t="))
        );
        assert!(matches!(parse("t=1"), Err(SignatureError::NoV1(_))));
        assert!(matches!(
            parse("t=x,v1=00"),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(matches!(
            parse("t=1,v1=zz"),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(matches!(
            parse("t=1,t=2,v1=00"),
            Err(SignatureError::Malformed { .. })
        ));
        assert!(matches!(
            parse("garbage"),
            Err(SignatureError::Malformed { .. })
        ));
    }

    #[test]
    fn errors_name_the_header_checked() {
        let body = b"{}";
        let e = verify_header(BURROW_SIGNATURE, SECRET, None, body, 0, 300).unwrap_err();
        assert_eq!(e.to_string(), "missing Burrow-Signature header");
        let e = verify_header(BURROW_SIGNATURE, SECRET, Some("t=1"), body, 1, 300).unwrap_err();
        assert_eq!(e.to_string(), "Burrow-Signature has no v1 signature");
        let h = header(1000, &[sign(SECRET, 1000, body)]);
        assert_eq!(
            verify_header(BURROW_SIGNATURE, SECRET, Some(&h), body, 1000, 300),
            Ok(1000)
        );
        let e = verify(SECRET, Some("x"), body, 0, 300).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("malformed Stripe-Signature header"),
            "{e}"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn signed_bodies_verify_and_any_bit_flip_fails(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            t in 0i64..4_000_000_000,
            flip in any::<usize>(),
        ) {
            let sig = sign(SECRET, t, &body);
            let h = header(t, &[sig]);
            prop_assert_eq!(verify(SECRET, Some(&h), &body, t, 300), Ok(t));
            if !body.is_empty() {
                let mut tampered = body.clone();
                let i = flip % tampered.len();
                tampered[i] ^= 1;
                prop_assert_eq!(verify(SECRET, Some(&h), &tampered, t, 300), Err(SignatureError::Mismatch));
            }
        }
    }
}
