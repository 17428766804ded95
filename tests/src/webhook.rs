//! Provider-side webhook signing (`Stripe-Signature: t=..,v1=..`), as the real provider does it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `Stripe-Signature` header for `body` signed with `secret` at `timestamp`.
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`) for
/// `body` signed with `secret` (`whsec_<base64 key>`), as a Standard Webhooks sender does it.
pub fn standard_headers(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(String, String); 3] {
    use base64::{Engine, engine::general_purpose::STANDARD};
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("whsec_ secrets are base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let signature = STANDARD.encode(mac.finalize().into_bytes());
    [
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        ("webhook-signature".into(), format!("v1,{signature}")),
    ]
}

/// A `customer.subscription.updated` event moving `customer` to `plan`, created now.
pub fn subscription_updated(event_id: &str, customer: &str, plan: &str) -> serde_json::Value {
    subscription_updated_at(event_id, customer, plan, chrono::Utc::now().timestamp())
}

/// A `customer.subscription.updated` event created at `created` (unix seconds).
pub fn subscription_updated_at(
    event_id: &str,
    customer: &str,
    plan: &str,
    created: i64,
) -> serde_json::Value {
    serde_json::json!({
        "id": event_id,
        "object": "event",
        "type": "customer.subscription.updated",
        "created": created,
        "data": { "object": {
            "id": format!("sub_{event_id}"),
            "object": "subscription",
            "customer": customer,
            "status": "active",
            "plan": { "id": plan, "object": "plan" }
        }}
    })
}
