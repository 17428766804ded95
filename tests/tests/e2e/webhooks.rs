//! Provider webhook ingest through api, Temporal and worker.

use burrow_e2e::{Stack, webhook};
use reqwest::{Method, StatusCode};
use sqlx::Row;

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

async fn plan_of(stack: &Stack, customer: &str) -> Option<String> {
    let db = stack.db().await.unwrap();
    sqlx::query_scalar("SELECT plan FROM accounts WHERE provider_customer_id = $1")
        .bind(customer)
        .fetch_optional(&db)
        .await
        .unwrap()
}

#[tokio::test]
async fn event_for_unknown_account_dead_letters_then_replay_applies_it() {
    let stack = Stack::start().await.unwrap();
    let customer = unique("cus");
    let event_id = unique("evt");
    let workflow_id = format!("provider-webhook-{event_id}");

    let resp = stack
        .send_event(&webhook::subscription_updated(&event_id, &customer, "pro"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let parked = stack
        .wait_event_state(&event_id, "account_unknown")
        .await
        .unwrap();
    assert_eq!(parked["parked"], true);
    assert_eq!(
        parked["attempts"],
        stack.options().apply_maximum_attempts,
        "{parked}"
    );
    assert!(
        parked["last_error"].as_str().unwrap().contains(&customer),
        "{parked}"
    );
    assert_eq!(
        parked["runbook"],
        "/runbooks/provider-webhook/account_unknown.md"
    );
    let runbook = stack
        .http
        .get(format!(
            "{}{}",
            stack.api_url,
            parked["runbook"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(runbook.status(), StatusCode::OK);

    // Replay before the account exists parks it again; replaying needs the ops role.
    let denied = stack
        .replay(&workflow_id, &stack.creds.developer_api_key)
        .await
        .unwrap();
    assert_eq!(denied, StatusCode::FORBIDDEN);

    // The account appears (out-of-order delivery resolved); ops replay the dead letter.
    stack.create_account("late", &customer).await.unwrap();
    assert_eq!(plan_of(&stack, &customer).await.as_deref(), Some("free"));

    let replay = stack
        .replay(&workflow_id, &stack.creds.ops_api_key)
        .await
        .unwrap();
    assert_eq!(replay, StatusCode::ACCEPTED);
    let done = stack.wait_event_state(&event_id, "applied").await.unwrap();
    assert_eq!(done["replays"], 1, "{done}");
    assert_eq!(plan_of(&stack, &customer).await.as_deref(), Some("pro"));
    stack
        .record_history::<burrow_workflows::provider_webhook::ProviderWebhookWorkflow>(
            &workflow_id,
            "provider_webhook_dead_letter_then_replay",
        )
        .await
        .unwrap();

    // Replaying a run that is not parked is a conflict, not a second application.
    let again = stack
        .replay(&workflow_id, &stack.creds.ops_api_key)
        .await
        .unwrap();
    assert_eq!(again, StatusCode::CONFLICT);
}

#[tokio::test]
async fn redelivered_event_is_not_applied_twice_and_unknown_types_are_ignored() {
    let stack = Stack::start().await.unwrap();
    let customer = unique("cus");
    stack.create_account("acme", &customer).await.unwrap();

    let first = unique("evt");
    let first_event = webhook::subscription_updated(&first, &customer, "pro");
    stack.send_event(&first_event).await.unwrap();
    stack.wait_event_state(&first, "applied").await.unwrap();

    let second = unique("evt");
    stack
        .send_event(&webhook::subscription_updated(&second, &customer, "team"))
        .await
        .unwrap();
    stack.wait_event_state(&second, "applied").await.unwrap();
    assert_eq!(plan_of(&stack, &customer).await.as_deref(), Some("team"));

    // The provider re-delivers the first event: acknowledged, recorded, not applied again.
    let resp = stack.send_event(&first_event).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["duplicate"], true);
    let db = stack.db().await.unwrap();
    let row = sqlx::query("SELECT deliveries, status FROM provider_events WHERE id = $1")
        .bind(&first)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>("deliveries"), 2);
    assert_eq!(row.get::<String, _>("status"), "applied");
    assert_eq!(plan_of(&stack, &customer).await.as_deref(), Some("team"));

    // An event type Burrow does not act on is acknowledged and recorded as ignored.
    let other = unique("evt");
    stack
        .send_event(
            &serde_json::json!({"id": other, "type": "invoice.paid", "data": {"object": {}}}),
        )
        .await
        .unwrap();
    let ignored = stack.wait_event_state(&other, "ignored").await.unwrap();
    assert_eq!(ignored["parked"], false);
    stack
        .record_history::<burrow_workflows::provider_webhook::ProviderWebhookWorkflow>(
            &format!("provider-webhook-{other}"),
            "provider_webhook_ignored",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_signatures_stale_timestamps_and_malformed_json_are_rejected_and_not_stored() {
    let stack = Stack::start().await.unwrap();
    let now = chrono::Utc::now().timestamp();
    let event_id = unique("evt");
    let body =
        serde_json::to_vec(&webhook::subscription_updated(&event_id, "cus_x", "pro")).unwrap();

    let check = |resp: reqwest::Response, code: &'static str| async move {
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let e: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(e["error"]["code"], code, "{e}");
        e["error"]["message"].as_str().unwrap().to_owned()
    };

    // Tampered body (signature of the original).
    let sig = webhook::signature_header(&stack.webhook_secret, now, &body);
    let mut tampered = body.clone();
    let pos = tampered.windows(3).position(|w| w == b"pro").unwrap();
    tampered[pos..pos + 3].copy_from_slice(b"ent");
    let msg = check(
        stack.post_webhook(&tampered, Some(&sig)).await.unwrap(),
        "invalid_signature",
    )
    .await;
    assert!(msg.contains("no v1 signature matches"), "{msg}");

    // Wrong secret.
    let wrong = webhook::signature_header("whsec_wrong", now, &body);
    check(
        stack.post_webhook(&body, Some(&wrong)).await.unwrap(),
        "invalid_signature",
    )
    .await;

    // Missing header.
    let msg = check(
        stack.post_webhook(&body, None).await.unwrap(),
        "invalid_signature",
    )
    .await;
    assert!(msg.contains("missing"), "{msg}");

    // Stale timestamp (correctly signed 10 minutes ago).
    let stale = webhook::signature_header(&stack.webhook_secret, now - 600, &body);
    let msg = check(
        stack.post_webhook(&body, Some(&stale)).await.unwrap(),
        "stale_timestamp",
    )
    .await;
    assert!(msg.contains("tolerance 300s"), "{msg}");

    // Malformed JSON, validly signed.
    let junk = b"{not json";
    let sig = webhook::signature_header(&stack.webhook_secret, now, junk);
    check(
        stack.post_webhook(junk, Some(&sig)).await.unwrap(),
        "malformed_payload",
    )
    .await;

    // No id.
    let noid = br#"{"type":"invoice.paid"}"#;
    let sig = webhook::signature_header(&stack.webhook_secret, now, noid);
    let msg = check(
        stack.post_webhook(noid, Some(&sig)).await.unwrap(),
        "malformed_payload",
    )
    .await;
    assert!(msg.contains("`id`"), "{msg}");

    let db = stack.db().await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_events")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(stored, 0, "rejected deliveries must not be stored");

    // The same event, correctly signed, is accepted.
    let sig = webhook::signature_header(&stack.webhook_secret, now, &body);
    assert_eq!(
        stack
            .post_webhook(&body, Some(&sig))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn replay_all_replays_every_parked_run_and_needs_the_ops_role() {
    let stack = Stack::start().await.unwrap();
    let customer = unique("cus");
    let ids: Vec<String> = (0..3).map(|_| unique("evt")).collect();
    for id in &ids {
        stack
            .send_event(&webhook::subscription_updated(id, &customer, "pro"))
            .await
            .unwrap();
    }
    for id in &ids {
        stack.wait_event_state(id, "account_unknown").await.unwrap();
    }
    let (_, parked) = stack
        .call(
            Method::GET,
            "/v1/ops/workflows?kind=provider-webhook&state=parked",
            &stack.creds.ops_api_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(parked.as_array().map(Vec::len), Some(3), "{parked}");

    let unauth = stack
        .http
        .post(format!("{}/v1/ops/dead-letters/replay-all", stack.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), StatusCode::UNAUTHORIZED);

    stack.create_account("bulk", &customer).await.unwrap();
    let (_, resp) = stack
        .call(
            Method::POST,
            "/v1/ops/dead-letters/replay-all",
            &stack.creds.ops_api_key,
            Some(serde_json::json!({"rate_per_sec": 5})),
        )
        .await
        .unwrap();
    assert_eq!(resp["queued"], 3, "{resp}");
    assert_eq!(resp["rate_per_sec"], 5);
    // Replay order follows parking order, not creation order: an event replayed after a newer
    // one has applied ends `superseded` (the plan never goes backwards), the rest `applied`.
    let mut applied = 0;
    for id in &ids {
        let run = stack
            .wait_workflow(&format!("provider-webhook-{id}"), "replayed", |r| {
                r["state"] == "applied" || r["state"] == "superseded"
            })
            .await
            .unwrap();
        applied += usize::from(run["state"] == "applied");
    }
    assert!(applied >= 1, "at least the newest event applies");
    assert_eq!(plan_of(&stack, &customer).await.as_deref(), Some("pro"));
}

#[tokio::test]
async fn webhook_accepted_while_temporal_is_down_is_processed_once_it_is_back() {
    let port = burrow_e2e::ports::free_port();
    let stack = burrow_e2e::Stack::start_with(burrow_e2e::StackOptions {
        temporal_address: Some(format!("http://127.0.0.1:{port}")),
        ..Default::default()
    })
    .await
    .unwrap();
    let event_id = unique("evt");
    let resp = stack
        .send_event(
            &serde_json::json!({"id": event_id, "type": "invoice.paid", "data": {"object": {}}}),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "stored and acknowledged without Temporal"
    );
    let db = stack.db().await.unwrap();
    let started: Option<String> =
        sqlx::query_scalar("SELECT workflow_id FROM provider_events WHERE id = $1")
            .bind(&event_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(started, None, "no workflow can have started yet");

    let _temporal = burrow_e2e::stores::start_temporal_on(port, stack.dir.path(), None)
        .await
        .unwrap();
    stack.wait_event_state(&event_id, "ignored").await.unwrap();
}

#[tokio::test]
async fn an_older_event_replayed_late_does_not_overwrite_a_newer_one() {
    let stack = Stack::start().await.unwrap();
    let customer = unique("cus");
    let now = chrono::Utc::now().timestamp();

    // The older event (pro) parks: the account is not linked yet.
    let older = unique("evt");
    stack
        .send_event(&webhook::subscription_updated_at(
            &older,
            &customer,
            "pro",
            now - 100,
        ))
        .await
        .unwrap();
    stack
        .wait_event_state(&older, "account_unknown")
        .await
        .unwrap();

    // The account appears and a newer event (team) applies.
    stack.create_account("ordered", &customer).await.unwrap();
    let newer = unique("evt");
    stack
        .send_event(&webhook::subscription_updated_at(
            &newer, &customer, "team", now,
        ))
        .await
        .unwrap();
    stack.wait_event_state(&newer, "applied").await.unwrap();

    // Replaying the older dead letter records it as superseded and keeps the newer plan.
    let status = stack
        .replay(
            &format!("provider-webhook-{older}"),
            &stack.creds.ops_api_key,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED);
    stack.wait_event_state(&older, "superseded").await.unwrap();
    assert_eq!(plan_of(&stack, &customer).await.as_deref(), Some("team"));
    stack
        .record_history::<burrow_workflows::provider_webhook::ProviderWebhookWorkflow>(
            &format!("provider-webhook-{older}"),
            "provider_webhook_superseded_after_replay",
        )
        .await
        .unwrap();

    // A NUL character (valid JSON, not storable text) is a client error, not a 500.
    let body = br#"{"id":"evt_nul","type":"x\u0000y"}"#;
    let sig = webhook::signature_header(&stack.webhook_secret, now, body);
    let resp = stack.post_webhook(body, Some(&sig)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let e: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["code"], "malformed_payload", "{e}");
}
