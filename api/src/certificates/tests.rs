//! Certificates, callbacks, regions and the outbox against a real PostgreSQL database (one per
//! test, see [`crate::testing`]); Temporal is unreachable in these tests, so every signal or
//! start is a 503.

use super::callbacks::{self, CallbackFilter};
use super::*;
use crate::extract::Query;
use crate::testing::{self, CALLBACK_SECRET, MustFail, TestDb, status_of};
use crate::webhooks::signature;
use axum::{body::Bytes, extract::State, http::HeaderMap};
use uuid::Uuid;

fn signed(body: &str, t: i64, secret: &str) -> HeaderMap {
    let sig = hex::encode(signature::sign(secret.as_bytes(), t, body.as_bytes()));
    let mut headers = HeaderMap::new();
    headers.insert(
        "burrow-signature",
        format!("t={t},v1={sig}").parse().expect("header value"),
    );
    headers
}

async fn post(
    db: &TestDb,
    headers: HeaderMap,
    body: &str,
) -> Result<(StatusCode, callbacks::CallbackAccepted), ApiError> {
    callbacks::receive(
        State(db.state.clone()),
        headers,
        Bytes::from(body.to_owned()),
    )
    .await
    .map(|(code, Json(a))| (code, a))
}

async fn send(
    db: &TestDb,
    body: &str,
) -> Result<(StatusCode, callbacks::CallbackAccepted), ApiError> {
    let now = Utc::now().timestamp();
    post(db, signed(body, now, CALLBACK_SECRET), body).await
}

async fn stored(db: &TestDb, id: &str) -> Option<(String, Option<String>, i32)> {
    sqlx::query_as("SELECT status, event_type, deliveries FROM cert_callbacks WHERE id = $1")
        .bind(id)
        .fetch_optional(&db.state.db)
        .await
        .expect("read cert_callbacks")
}

fn body(id: &str, class: &str, action: &str, domain: &str) -> String {
    json!({ "id": id, "callbackClass": class, "callbackAction": action, "domain": domain,
            "extra": { "kept": true } })
    .to_string()
}

#[tokio::test]
async fn bad_missing_and_stale_signatures_are_401_and_store_nothing() {
    let db = TestDb::new().await;
    let b = body("cb_1", "certificate", "renew", "app.example.com");
    let now = Utc::now().timestamp();
    let cases = [
        ("wrong secret", signed(&b, now, "other")),
        ("too old", signed(&b, now - 301, CALLBACK_SECRET)),
        ("from the future", signed(&b, now + 301, CALLBACK_SECRET)),
        ("missing", HeaderMap::new()),
    ];
    for (what, headers) in cases {
        let e = post(&db, headers, &b).await.must_fail(what);
        assert_eq!(status_of(&e), 401, "{what}: {e}");
        assert!(
            e.to_string().contains("Burrow-Signature") || e.to_string().contains("signature"),
            "{what}: {e}"
        );
    }
    // A valid signature over another body does not pass either.
    let other = body("cb_1", "certificate", "renew", "evil.example.com");
    let e = post(&db, signed(&other, now, CALLBACK_SECRET), &b)
        .await
        .must_fail("tampered");
    assert_eq!(status_of(&e), 401);
    assert_eq!(stored(&db, "cb_1").await, None);
    let e = post(&db, signed(&b, now - 301, CALLBACK_SECRET), &b)
        .await
        .must_fail("stale");
    assert!(e.to_string().contains("stale_timestamp"), "{e}");
}

#[tokio::test]
async fn callbacks_are_refused_while_no_secret_is_configured() {
    let db = TestDb::with(crate::ApiConfig {
        cert_callback_secret: burrow_common::Secret::default(),
        ..testing::config()
    })
    .await;
    let b = body("cb_1", "certificate", "renew", "app.example.com");
    let e = post(&db, signed(&b, Utc::now().timestamp(), ""), &b)
        .await
        .must_fail("no secret");
    assert_eq!(status_of(&e), 503);
    assert!(e.to_string().contains("cert_callback_secret"), "{e}");
}

#[tokio::test]
async fn malformed_callbacks_are_400_naming_the_field() {
    let db = TestDb::new().await;
    let full = json!({ "id": "cb", "callbackClass": "certificate", "callbackAction": "renew",
                       "domain": "app.example.com" });
    for field in ["id", "callbackClass", "callbackAction", "domain"] {
        for bad in [Value::Null, json!(7), json!(["x"])] {
            let mut b = full.clone();
            if bad.is_null() {
                b.as_object_mut().map(|o| o.remove(field));
            } else {
                b[field] = bad;
            }
            let e = send(&db, &b.to_string()).await.must_fail(field);
            assert_eq!(status_of(&e), 400, "{field}: {e}");
            assert!(
                e.to_string().contains(&format!("`{field}`")),
                "{field}: {e}"
            );
        }
    }
    for (b, needle) in [
        ("[1]", "JSON object"),
        ("not json", "not JSON"),
        (r#"{"id":"a\u0000"}"#, "NUL"),
    ] {
        let e = send(&db, b).await.must_fail(b);
        assert_eq!(status_of(&e), 400, "{b}: {e}");
        assert!(e.to_string().contains(needle), "{b}: {e}");
    }
    let mut b = full.clone();
    b["domain"] = json!("not a domain");
    let e = send(&db, &b.to_string()).await.must_fail("bad domain");
    assert!(e.to_string().contains("`domain`"), "{e}");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM cert_callbacks")
        .fetch_one(&db.state.db)
        .await
        .expect("count");
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn an_unknown_pair_is_422_and_kept_unmapped_once() {
    let db = TestDb::new().await;
    let b = body("cb_u", "x", "y", "App.Example.com");
    let e = send(&db, &b).await.must_fail("unknown pair");
    assert_eq!(status_of(&e), 422);
    assert_eq!(
        e.to_string(),
        r#"unknown callback pair (callbackClass="x", callbackAction="y"); kept for review"#
    );
    assert!(matches!(
        e,
        ApiError::Unprocessable {
            code: "unknown_callback_pair",
            ..
        }
    ));
    assert_eq!(
        stored(&db, "cb_u").await,
        Some(("unmapped".into(), None, 1))
    );
    let (domain, payload): (Option<String>, Value) =
        sqlx::query_as("SELECT domain, payload FROM cert_callbacks WHERE id = 'cb_u'")
            .fetch_one(&db.state.db)
            .await
            .expect("row");
    assert_eq!(domain.as_deref(), Some("app.example.com"));
    assert_eq!(payload["extra"]["kept"], json!(true));

    // The repeat is acknowledged as a duplicate; the row is not written twice.
    let (code, a) = send(&db, &b).await.expect("repeat");
    assert_eq!(
        (code, a.duplicate, a.status.as_str()),
        (StatusCode::OK, true, "unmapped")
    );
    assert_eq!(
        stored(&db, "cb_u").await,
        Some(("unmapped".into(), None, 2))
    );

    // Ops find it for review.
    let ops = db.actor(Role::Ops, None).await;
    let Json(list) = callbacks::list_callbacks(
        State(db.state.clone()),
        ops.clone(),
        Query(CallbackFilter {
            status: Some("unmapped".into()),
            limit: None,
        }),
    )
    .await
    .expect("list");
    assert_eq!(list.callbacks.len(), 1);
    assert_eq!(list.callbacks[0].callback_class, "x");
    let e = callbacks::list_callbacks(
        State(db.state.clone()),
        ops.clone(),
        Query(CallbackFilter {
            status: Some("lost".into()),
            limit: None,
        }),
    )
    .await
    .must_fail("bad status");
    assert!(e.to_string().contains("\"lost\""), "{e}");
    assert_eq!(db.audited("cert_callback.list").await.len(), 2);
    let Json(m) = callbacks::list_mappings(State(db.state.clone()), ops)
        .await
        .expect("mappings");
    assert!(m.mappings.iter().any(|m| m.callback_class == "certificate"
        && m.callback_action == "revoked"
        && m.event_type == "certificate.revoked"));
    let dev = db.actor(Role::Developer, Some(db.account().await)).await;
    let e = callbacks::list_mappings(State(db.state.clone()), dev)
        .await
        .must_fail("developer");
    assert_eq!(status_of(&e), 403);
}

#[tokio::test]
async fn a_mapped_callback_is_stored_once_and_resignalled_only_while_received() {
    let db = TestDb::new().await;
    let b = body("cb_m", "certificate", "revoked", "app.example.com");
    // Temporal is down: 503, the row stays `received` so the sender's retry signals again.
    let e = send(&db, &b).await.must_fail("temporal down");
    assert_eq!(status_of(&e), 503, "{e}");
    assert_eq!(
        stored(&db, "cb_m").await,
        Some(("received".into(), Some("certificate.revoked".into()), 1))
    );
    let e = send(&db, &b).await.must_fail("still down");
    assert_eq!(status_of(&e), 503, "the retry tries to signal again: {e}");
    assert_eq!(stored(&db, "cb_m").await.map(|s| s.2), Some(2));

    // Once signalled, a repeat is a duplicate and is not signalled again (were it, the
    // unreachable Temporal would make it a 503).
    sqlx::query("UPDATE cert_callbacks SET status = 'signalled' WHERE id = 'cb_m'")
        .execute(&db.state.db)
        .await
        .expect("update");
    let (code, a) = send(&db, &b).await.expect("duplicate");
    assert_eq!(code, StatusCode::OK);
    assert!(a.duplicate);
    assert_eq!(a.status, "signalled");
    assert_eq!(
        a.workflow_id.as_deref(),
        Some("certificate-app.example.com")
    );
    // The stored row wins over a repeat carrying something else.
    let changed = body("cb_m", "x", "y", "other.example.com");
    let (_, a) = send(&db, &changed).await.expect("duplicate");
    assert_eq!(a.event_type.as_deref(), Some("certificate.revoked"));
    assert_eq!(
        stored(&db, "cb_m").await,
        Some(("signalled".into(), Some("certificate.revoked".into()), 4))
    );
}

async fn seed_certificates(db: &TestDb, account: Uuid) {
    for (domain, status) in [("a.example.com", "verified"), ("p.example.com", "pending")] {
        sqlx::query(
            "INSERT INTO custom_domains (domain, account_id, verification_token, status, verified_at)
             VALUES ($1, $2, 't', $3, CASE WHEN $3 = 'verified' THEN now() END)",
        )
        .bind(domain)
        .bind(account)
        .bind(status)
        .execute(&db.state.db)
        .await
        .expect("domain");
    }
    for (domain, version) in [
        ("a.example.com", 1),
        ("a.example.com", 2),
        ("other.example.com", 1),
    ] {
        sqlx::query(
            "INSERT INTO certificates (domain, version, chain_pem, key_encrypted, serial,
                 not_before, not_after)
             VALUES ($1, $2, '-----BEGIN CERTIFICATE-----CHAINSECRET', '\\x5345414c45444b4559',
                     $3, now(), now() + interval '90 days')",
        )
        .bind(domain)
        .bind(version)
        .bind(format!("0{version}ab"))
        .execute(&db.state.db)
        .await
        .expect("certificate");
    }
    for (relay, region, version) in [("r1", "eu", 2), ("r2", "us", 1)] {
        sqlx::query(
            "INSERT INTO cert_replicas (domain, relay_id, region, version)
             VALUES ('a.example.com', $1, $2, $3)",
        )
        .bind(relay)
        .bind(region)
        .bind(version)
        .execute(&db.state.db)
        .await
        .expect("replica");
    }
    sqlx::query(
        "INSERT INTO workflow_runs (workflow_id, kind, subject, state, last_error)
         VALUES ('certificate-a.example.com', 'certificate', 'a.example.com', 'ca_unreachable', 'CA down')",
    )
    .execute(&db.state.db)
    .await
    .expect("run");
}

#[tokio::test]
async fn certificate_listings_never_carry_key_material() {
    let db = TestDb::new().await;
    let account = db.account().await;
    seed_certificates(&db, account).await;
    let ops = db.actor(Role::Ops, None).await;
    let Json(all) = list(State(db.state.clone()), ops.clone())
        .await
        .expect("ops list");
    let domains: Vec<&str> = all.certificates.iter().map(|c| c.domain.as_str()).collect();
    assert_eq!(domains, ["a.example.com", "other.example.com"]);
    let a = &all.certificates[0];
    assert_eq!(
        a.latest.as_ref().map(|v| (v.version, v.serial.as_str())),
        Some((2, "02ab"))
    );
    let wf = a.workflow.as_ref().expect("workflow");
    assert_eq!((wf.state.as_str(), wf.parked), ("ca_unreachable", true));
    let current: Vec<(&str, bool)> = a
        .replicas
        .iter()
        .map(|r| (r.relay_id.as_str(), r.current))
        .collect();
    assert_eq!(current, [("r1", true), ("r2", false)]);

    let Json(detail) = get(
        State(db.state.clone()),
        ops.clone(),
        Path("A.example.com.".into()),
    )
    .await
    .expect("detail");
    assert_eq!(
        detail
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(
        detail
            .drift
            .iter()
            .map(|r| r.relay_id.as_str())
            .collect::<Vec<_>>(),
        ["r2"]
    );

    for text in [
        serde_json::to_string(&all).expect("json"),
        serde_json::to_string(&detail).expect("json"),
    ] {
        for secret in [
            "key",
            "chain",
            "CHAINSECRET",
            "BEGIN",
            "5345414c45444b4559",
            "SEALEDKEY",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert_eq!(db.audited("certificate.list").await, [("ok".into(), None)]);
    assert_eq!(
        db.audited("certificate.read").await,
        [("ok".into(), Some("A.example.com.".into()))]
    );

    // A developer sees its account's verified domains only.
    let dev = db.actor(Role::Developer, Some(account)).await;
    let Json(mine) = list(State(db.state.clone()), dev.clone())
        .await
        .expect("dev list");
    assert_eq!(mine.certificates.len(), 1);
    assert_eq!(mine.certificates[0].domain, "a.example.com");
    let e = get(
        State(db.state.clone()),
        dev.clone(),
        Path("other.example.com".into()),
    )
    .await
    .must_fail("not theirs");
    assert_eq!(status_of(&e), 404);
    let stranger = db.actor(Role::Developer, Some(db.account().await)).await;
    let Json(none) = list(State(db.state.clone()), stranger)
        .await
        .expect("stranger list");
    assert!(none.certificates.is_empty());
    let finance = db.actor(Role::Finance, None).await;
    let e = list(State(db.state.clone()), finance)
        .await
        .must_fail("finance");
    assert_eq!(status_of(&e), 403);
}

#[tokio::test]
async fn renew_checks_ownership_and_needs_temporal() {
    let db = TestDb::new().await;
    let account = db.account().await;
    seed_certificates(&db, account).await;
    let stranger = db.actor(Role::Developer, Some(db.account().await)).await;
    let e = renew(
        State(db.state.clone()),
        stranger,
        Path("a.example.com".into()),
    )
    .await
    .must_fail("not theirs");
    assert_eq!(status_of(&e), 404);
    let dev = db.actor(Role::Developer, Some(account)).await;
    let e = renew(State(db.state.clone()), dev, Path("a.example.com".into()))
        .await
        .must_fail("temporal down");
    assert_eq!(status_of(&e), 503);
    let audited = db.audited("certificate.renew").await;
    let outcomes: Vec<&str> = audited.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(outcomes, ["not_found", "unavailable"]);
}

#[tokio::test]
async fn regions_show_each_latest_snapshot_and_drift() {
    let db = TestDb::new().await;
    for (region, drift, age) in [
        ("eu", json!(["a.example.com"]), 60),
        ("eu", json!([]), 0),
        (
            "us",
            json!({ "a.example.com": { "region": 1, "latest": 2 } }),
            0,
        ),
    ] {
        sqlx::query(
            "INSERT INTO region_snapshots (region, relays, certificates, drift, taken_at)
             VALUES ($1, 2, '{}', $2, now() - make_interval(secs => $3))",
        )
        .bind(region)
        .bind(drift)
        .bind(f64::from(age))
        .execute(&db.state.db)
        .await
        .expect("snapshot");
    }
    let ops = db.actor(Role::Ops, None).await;
    let Json(r) = regions(State(db.state.clone()), ops)
        .await
        .expect("regions");
    let got: Vec<(&str, bool)> = r
        .regions
        .iter()
        .map(|s| (s.region.as_str(), s.drifted))
        .collect();
    assert_eq!(got, [("eu", false), ("us", true)]);
    assert!(r.drifted);
    let dev = db.actor(Role::Developer, Some(db.account().await)).await;
    let e = regions(State(db.state.clone()), dev)
        .await
        .must_fail("developer");
    assert_eq!(status_of(&e), 403);
    assert_eq!(
        db.audited("region.list").await,
        [("forbidden".into(), None)]
    );
}

async fn event(db: &TestDb, kind: &str, domain: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO domain_events (kind, domain, account_id) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(kind)
    .bind(domain)
    .bind(Uuid::new_v4())
    .fetch_one(&db.state.db)
    .await
    .expect("event")
}

async fn unconsumed(db: &TestDb) -> Vec<i64> {
    sqlx::query_scalar("SELECT id FROM domain_events WHERE consumed_at IS NULL ORDER BY id")
        .fetch_all(&db.state.db)
        .await
        .expect("events")
}

#[tokio::test]
async fn the_outbox_leaves_events_queued_while_acme_is_off_or_temporal_down() {
    let db = TestDb::new().await;
    let a = event(&db, "domain.verified", "a.example.com").await;
    let b = event(&db, "domain.removed", "b.example.com").await;
    // Off: `run` returns at once and consumes nothing.
    let token = tokio_util::sync::CancellationToken::new();
    tokio::time::timeout(Duration::from_secs(5), outbox::run(db.state.clone(), token))
        .await
        .expect("run returns when acme is off");
    assert_eq!(unconsumed(&db).await, [a, b]);

    // On, Temporal down: the first event fails, nothing is consumed, the run is visible.
    let on = TestDb::with(crate::ApiConfig {
        acme_enabled: true,
        ..testing::config()
    })
    .await;
    let a = event(&on, "domain.verified", "a.example.com").await;
    let b = event(&on, "domain.removed", "a.example.com").await;
    let e = outbox::drain(&on.state).await.must_fail("temporal down");
    assert_eq!(status_of(&e), 503, "{e}");
    assert_eq!(unconsumed(&on).await, [a, b]);
    let run: (String, String) = sqlx::query_as(
        "SELECT kind, state FROM workflow_runs WHERE workflow_id = 'certificate-a.example.com'",
    )
    .fetch_one(&on.state.db)
    .await
    .expect("run row");
    assert_eq!(run, ("certificate".into(), "pending".into()));
}

#[tokio::test]
async fn replaying_a_parked_certificate_run_signals_it_and_restores_it_on_failure() {
    let db = TestDb::new().await;
    seed_certificates(&db, db.account().await).await;
    let ops = db.actor(Role::Ops, None).await;
    let e = crate::ops::replay_one(
        State(db.state.clone()),
        ops,
        Path("certificate-a.example.com".into()),
    )
    .await
    .must_fail("temporal down");
    // Not "no replay for kind certificate" (500): the signal was tried.
    assert_eq!(status_of(&e), 503, "{e}");
    let state: String = sqlx::query_scalar(
        "SELECT state FROM workflow_runs WHERE workflow_id = 'certificate-a.example.com'",
    )
    .fetch_one(&db.state.db)
    .await
    .expect("state");
    assert_eq!(state, "ca_unreachable");
}
