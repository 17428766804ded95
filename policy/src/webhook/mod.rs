//! Webhook signature verification for the `verify-webhook` action.
//!
//! Two schemes:
//! - **Stripe**: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` (several `v1`
//!   allowed, e.g. during secret rotation); the secret string is the HMAC key as-is.
//! - **Standard Webhooks** (standardwebhooks.com): `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">` (space-separated
//!   list); the secret is `whsec_<base64 key>`.
//!
//! The timestamp must be within `tolerance` of now in either direction (replay window), and
//! MACs are compared in constant time (`Mac::verify_slice`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde::Serialize;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Default `tolerance_secs`.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Which signature scheme a sender uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `Stripe-Signature`.
    Stripe,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard,
}

/// Why a webhook did not verify (the text goes into the 403 body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// A required header is absent or not text.
    #[error("missing or unreadable `{0}` header")]
    MissingHeader(&'static str),
    /// The signature header is not in the scheme's format.
    #[error("malformed signature header")]
    Malformed,
    /// The timestamp is outside the tolerance.
    #[error("timestamp outside the {0} s tolerance")]
    Stale(u64),
    /// No signature matched.
    #[error("no signature matches the body")]
    Mismatch,
    /// The relay did not buffer the body (it was too large or not offered).
    #[error("request body unavailable for verification")]
    NoBody,
}

/// The `verify-webhook` configuration, with the key already decoded.
#[derive(Clone, PartialEq, Serialize)]
pub struct WebhookConfig {
    /// The scheme.
    pub scheme: Scheme,
    /// The secret as written (`whsec_...` for Standard Webhooks).
    pub secret: String,
    /// Allowed clock difference in seconds (default 300).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance_secs: Option<u64>,
    /// The HMAC key: the secret's bytes (Stripe) or its decoded base64 part (Standard).
    #[serde(skip)]
    key: Vec<u8>,
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("scheme", &self.scheme)
            .field("secret", &"MASKED")
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl WebhookConfig {
    /// Builds the configuration; the error says what is wrong with the secret.
    pub fn new(
        scheme: Scheme,
        secret: String,
        tolerance_secs: Option<u64>,
    ) -> Result<Self, String> {
        let key = match scheme {
            Scheme::Stripe if secret.is_empty() => return Err("must not be empty".into()),
            Scheme::Stripe => secret.as_bytes().to_vec(),
            Scheme::Standard => standard_key(&secret)?,
        };
        Ok(WebhookConfig {
            scheme,
            secret,
            tolerance_secs,
            key,
        })
    }

    /// Verifies a request's signature headers against `body` at time `now`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), WebhookError> {
        let tolerance = self
            .tolerance_secs
            .map_or(DEFAULT_TOLERANCE, Duration::from_secs);
        let text = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(WebhookError::MissingHeader(name))
        };
        match self.scheme {
            Scheme::Stripe => {
                verify_stripe(&self.key, text("stripe-signature")?, body, now, tolerance)
            }
            Scheme::Standard => verify_standard(
                &self.key,
                text("webhook-id")?,
                text("webhook-timestamp")?,
                text("webhook-signature")?,
                body,
                now,
                tolerance,
            ),
        }
    }
}

/// Decodes a `whsec_<base64>` Standard Webhooks secret into its key.
pub fn standard_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or("must start with `whsec_`")?;
    match STANDARD.decode(b64) {
        Ok(key) if !key.is_empty() => Ok(key),
        Ok(_) => Err("the key after `whsec_` is empty".into()),
        Err(_) => Err("the part after `whsec_` must be base64".into()),
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
    }
    mac
}

fn check_time(timestamp: i64, now: SystemTime, tolerance: Duration) -> Result<(), WebhookError> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return Err(WebhookError::Stale(tolerance.as_secs()));
    }
    Ok(())
}

/// The `Stripe-Signature` value a sender with `secret` would send for `body` at `timestamp`.
pub fn sign_stripe(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let sig = mac(secret, &[timestamp.to_string().as_bytes(), b".", body])
        .finalize()
        .into_bytes();
    format!("t={timestamp},v1={}", hex::encode(sig))
}

/// Verifies a `Stripe-Signature` header.
pub fn verify_stripe(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), WebhookError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(t.parse::<i64>().map_err(|_| WebhookError::Malformed)?)
            }
            // Lower-case only, as Stripe sends it: one signature has exactly one spelling.
            Some(("v1", sig))
                if sig
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
            {
                candidates.push(hex::decode(sig).map_err(|_| WebhookError::Malformed)?)
            }
            Some(("v1", _)) => return Err(WebhookError::Malformed),
            Some(_) => {}
            None => return Err(WebhookError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(WebhookError::Malformed)?;
    if candidates.is_empty() {
        return Err(WebhookError::Malformed);
    }
    check_time(timestamp, now, tolerance)?;
    let expected = mac(secret, &[timestamp.to_string().as_bytes(), b".", body]);
    if candidates
        .iter()
        .any(|c| expected.clone().verify_slice(c).is_ok())
    {
        Ok(())
    } else {
        Err(WebhookError::Mismatch)
    }
}

/// The `webhook-signature` value (`v1,<base64>`) for a Standard Webhooks message.
pub fn sign_standard(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let sig = mac(
        key,
        &[
            id.as_bytes(),
            b".",
            timestamp.to_string().as_bytes(),
            b".",
            body,
        ],
    )
    .finalize()
    .into_bytes();
    format!("v1,{}", STANDARD.encode(sig))
}

/// Verifies Standard Webhooks headers.
pub fn verify_standard(
    key: &[u8],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), WebhookError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookError::Malformed)?;
    check_time(ts, now, tolerance)?;
    let expected = mac(
        key,
        &[id.as_bytes(), b".", timestamp.trim().as_bytes(), b".", body],
    );
    let mut any = false;
    for sig in signatures.split(' ').filter(|s| !s.is_empty()) {
        any = true;
        // Other versions (e.g. `v1a,` asymmetric) are skipped, not errors.
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        let Ok(raw) = STANDARD.decode(b64) else {
            continue;
        };
        if expected.clone().verify_slice(&raw).is_ok() {
            return Ok(());
        }
    }
    if any {
        Err(WebhookError::Mismatch)
    } else {
        Err(WebhookError::Malformed)
    }
}

#[cfg(test)]
mod tests;
