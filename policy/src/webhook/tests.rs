//! Sign/verify round trips, tolerance, rotation, and single-byte tampering (proptest).

use super::*;
use proptest::prelude::*;

const NOW: i64 = 1_700_000_000;

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

#[test]
fn stripe_accepts_any_matching_v1_and_rejects_stale_or_forged() {
    let good = sign_stripe(b"whsec_x", NOW, b"{}");
    let sig = good.split_once(",v1=").unwrap().1;
    let rotated = format!("t={NOW},v1={},v1={sig}", "00".repeat(32));
    assert_eq!(
        verify_stripe(b"whsec_x", &rotated, b"{}", at(NOW), DEFAULT_TOLERANCE),
        Ok(())
    );
    assert_eq!(
        verify_stripe(b"whsec_x", &good, b"{}", at(NOW + 301), DEFAULT_TOLERANCE),
        Err(WebhookError::Stale(300))
    );
    assert_eq!(
        verify_stripe(b"whsec_x", &good, b"{}", at(NOW - 301), DEFAULT_TOLERANCE),
        Err(WebhookError::Stale(300))
    );
    assert_eq!(
        verify_stripe(b"other", &good, b"{}", at(NOW), DEFAULT_TOLERANCE),
        Err(WebhookError::Mismatch)
    );
    assert_eq!(
        verify_stripe(b"k", "t=1", b"", at(1), DEFAULT_TOLERANCE),
        Err(WebhookError::Malformed)
    );
    assert_eq!(
        verify_stripe(b"k", "garbage", b"", at(1), DEFAULT_TOLERANCE),
        Err(WebhookError::Malformed)
    );
}

#[test]
fn standard_checks_id_timestamp_and_signature_list() {
    let key = standard_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let sig = sign_standard(&key, "msg_1", NOW, b"hi");
    let list = format!("v1,AAAA {sig}");
    assert_eq!(
        verify_standard(
            &key,
            "msg_1",
            &NOW.to_string(),
            &list,
            b"hi",
            at(NOW),
            DEFAULT_TOLERANCE
        ),
        Ok(())
    );
    assert_eq!(
        verify_standard(
            &key,
            "msg_2",
            &NOW.to_string(),
            &sig,
            b"hi",
            at(NOW),
            DEFAULT_TOLERANCE
        ),
        Err(WebhookError::Mismatch)
    );
    assert_eq!(
        verify_standard(&key, "msg_1", "x", &sig, b"hi", at(NOW), DEFAULT_TOLERANCE),
        Err(WebhookError::Malformed)
    );
    assert!(standard_key("nope").is_err());
    assert!(standard_key("whsec_!!").is_err());
}

#[test]
fn config_verifies_from_headers() {
    let cfg = WebhookConfig::new(Scheme::Stripe, "sk".into(), Some(10)).unwrap();
    let mut h = HeaderMap::new();
    assert_eq!(
        cfg.verify(&h, b"", at(NOW)),
        Err(WebhookError::MissingHeader("stripe-signature"))
    );
    h.insert(
        "stripe-signature",
        sign_stripe(b"sk", NOW, b"b").parse().unwrap(),
    );
    assert_eq!(cfg.verify(&h, b"b", at(NOW + 10)), Ok(()));
    assert_eq!(
        cfg.verify(&h, b"b", at(NOW + 11)),
        Err(WebhookError::Stale(10))
    );
    assert!(!format!("{cfg:?}").contains("sk\""));
}

proptest! {
    #[test]
    fn stripe_round_trips_and_any_byte_change_fails(secret in prop::collection::vec(any::<u8>(), 1..40),
            body in prop::collection::vec(any::<u8>(), 0..200), flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let header = sign_stripe(&secret, NOW, &body);
        prop_assert_eq!(verify_stripe(&secret, &header, &body, at(NOW), DEFAULT_TOLERANCE), Ok(()));
        if !body.is_empty() {
            let mut bad = body.clone();
            bad[flip.index(body.len())] ^= 1 << bit;
            prop_assert!(verify_stripe(&secret, &header, &bad, at(NOW), DEFAULT_TOLERANCE).is_err());
        }
        let mut bad_header = header.clone().into_bytes();
        let i = flip.index(bad_header.len());
        bad_header[i] ^= 1 << bit;
        // A flipped bit changes the text, so it is a different header.
        if let Ok(h) = String::from_utf8(bad_header) {
            prop_assert!(verify_stripe(&secret, &h, &body, at(NOW), DEFAULT_TOLERANCE).is_err());
        }
    }

    #[test]
    fn standard_round_trips_and_any_byte_change_fails(key in prop::collection::vec(any::<u8>(), 1..40),
            id in "[a-z0-9_]{1,20}", body in prop::collection::vec(any::<u8>(), 1..200),
            flip in any::<prop::sample::Index>(), bit in 0u8..8) {
        let sig = sign_standard(&key, &id, NOW, &body);
        let ts = NOW.to_string();
        prop_assert_eq!(verify_standard(&key, &id, &ts, &sig, &body, at(NOW), DEFAULT_TOLERANCE), Ok(()));
        let mut bad = body.clone();
        bad[flip.index(body.len())] ^= 1 << bit;
        prop_assert!(verify_standard(&key, &id, &ts, &sig, &bad, at(NOW), DEFAULT_TOLERANCE).is_err());
    }
}
