//! `RelayFeed` as a relay sees it: the internal key required, a snapshot first, then each change
//! pushed as it happens (nothing polls: a missed push would never arrive) — policies, names, plan changes made over the api and by the worker applying
//! a provider webhook — a fresh snapshot after the api's database listener reconnects, and
//! server reflection listing the service.

use super::*;
use burrow_e2e::webhook;
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

const POLICY: &str = "on_http_request:
  - actions:
      - type: add-headers
        config:
          headers:
            x-from-feed: \"yes\"
";

/// How long a test waits for a pushed change. The feed has no polling fallback, so any bound
/// tells push from nothing; it is loose so a loaded CI machine does not fail it (pushes take
/// milliseconds here; the one-second goal is a latency target, not a test assertion).
const PROMPT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn relays_get_a_snapshot_then_every_change_as_it_happens() {
    let stack = Stack::start().await.unwrap();
    let customer = format!("cus_{}", uuid::Uuid::new_v4().simple());
    let account = stack.create_account("feed", &customer).await.unwrap();
    let id = account["id"].as_str().unwrap().to_owned();
    let admin = stack.creds.admin_api_key.clone();

    // Without the internal key: Unauthenticated, saying what is missing.
    let e = watch(&stack, None).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("authorization"), "{e:?}");
    let e = watch(&stack, Some("ik_wrong")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // Something to find in the snapshot.
    let (status, e) = put_policy(&stack, &id, "before", &admin, "text/yaml", POLICY).await;
    assert_eq!(status, StatusCode::OK, "{e}");

    let mut feed = watch(&stack, Some(stack.internal_key())).await.unwrap();
    let snapshot = next_matching(&mut feed, Duration::from_secs(10), "first message", |e| {
        Some(match e {
            Event::Snapshot(s) => s.clone(),
            other => panic!("the first message must be a snapshot: {other:?}"),
        })
    })
    .await;
    let policy = snapshot
        .policies
        .iter()
        .find(|p| p.account_id == id && p.endpoint == "before")
        .unwrap_or_else(|| panic!("no policy in {snapshot:?}"));
    assert_eq!(policy.version, 1);
    let doc: Value = serde_json::from_str(&policy.document).unwrap();
    assert!(doc.to_string().contains("x-from-feed"), "{doc}");
    let plan = snapshot
        .accounts
        .iter()
        .find(|a| a.account_id == id)
        .unwrap_or_else(|| panic!("no account in {snapshot:?}"));
    assert_eq!(plan.plan, "free");
    let limits: Value = serde_json::from_str(&plan.limits).unwrap();
    assert_eq!(limits["max_tcp_endpoints"], 1, "{limits}");
    let dev = snapshot
        .accounts
        .iter()
        .find(|a| a.account_id == stack.creds.account_id)
        .unwrap();
    assert_eq!(dev.plan, "enterprise");

    // A policy change arrives after the PUT.
    let (status, e) = put_policy(&stack, &id, "demo", &admin, "text/yaml", POLICY).await;
    assert_eq!(status, StatusCode::OK, "{e}");
    let change = next_matching(&mut feed, PROMPT, "policy change", |e| match e {
        Event::Policy(p) if p.endpoint == "demo" => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (change.account_id.as_str(), change.version),
        (id.as_str(), 1)
    );
    assert_eq!(
        serde_json::from_str::<Value>(&change.document).unwrap(),
        e["document"]
    );
    let (status, _) = stack
        .call(
            Method::DELETE,
            &format!("/v1/accounts/{id}/endpoints/demo/policy"),
            &admin,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let removed = next_matching(&mut feed, PROMPT, "policy removal", |e| match e {
        Event::Policy(p) if p.endpoint == "demo" => Some(p.clone()),
        _ => None,
    })
    .await;
    assert_eq!((removed.version, removed.document.as_str()), (2, ""));

    // Names: reserved, then released (empty account).
    let names = format!("/v1/accounts/{id}/reserved-names");
    let (status, e) = stack
        .call(Method::POST, &names, &admin, Some(json!({"name": "fed"})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{e}");
    let claim = next_matching(&mut feed, PROMPT, "name claim", |e| match e {
        Event::Name(n) => Some(n.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (claim.name.as_str(), claim.account_id.as_str()),
        ("fed", id.as_str())
    );
    let (status, _) = stack
        .call(Method::DELETE, &format!("{names}/fed"), &admin, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let released = next_matching(&mut feed, PROMPT, "name release", |e| match e {
        Event::Name(n) => Some(n.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (released.name.as_str(), released.account_id.as_str()),
        ("fed", "")
    );

    // A plan change over the api.
    set_plan(&stack, &id, "pro").await;
    let moved = next_matching(&mut feed, PROMPT, "plan change", |e| match e {
        Event::Account(a) if a.account_id == id => Some(a.clone()),
        _ => None,
    })
    .await;
    assert_eq!(moved.plan, "pro");
    let limits: Value = serde_json::from_str(&moved.limits).unwrap();
    assert_eq!(limits["max_tcp_endpoints"], 10, "{limits}");
    assert!(limits.get("max_reserved_names").is_some(), "{limits}");

    // A plan change the worker makes (provider webhook → workflow → activity) reaches the feed
    // too: the trigger is on the table, not in the api's handlers.
    let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let resp = stack
        .send_event(&webhook::subscription_updated(&event_id, &customer, "team"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let moved = next_matching(
        &mut feed,
        Duration::from_secs(60),
        "webhook plan change",
        |e| match e {
            Event::Account(a) if a.account_id == id && a.plan == "team" => Some(a.clone()),
            _ => None,
        },
    )
    .await;
    let limits: Value = serde_json::from_str(&moved.limits).unwrap();
    assert_eq!(limits["max_tcp_endpoints"], 50, "{limits}");

    // A new account and a plan's limits edited in place reach the feed too.
    let other = stack
        .create_account(
            "feed-new",
            &format!("cus_{}", uuid::Uuid::new_v4().simple()),
        )
        .await
        .unwrap();
    let other_id = other["id"].as_str().unwrap().to_owned();
    let created = next_matching(&mut feed, PROMPT, "new account", |e| match e {
        Event::Account(a) if a.account_id == other_id => Some(a.clone()),
        _ => None,
    })
    .await;
    assert_eq!(created.plan, "free");
    let db = stack.db().await.unwrap();
    sqlx::query("UPDATE plans SET max_tcp_endpoints = 51 WHERE name = 'team'")
        .execute(&db)
        .await
        .unwrap();
    let edited = next_matching(&mut feed, PROMPT, "edited plan limits", |e| match e {
        Event::Account(a) if a.account_id == id => Some(a.clone()),
        _ => None,
    })
    .await;
    let limits: Value = serde_json::from_str(&edited.limits).unwrap();
    assert_eq!(
        (edited.plan.as_str(), &limits["max_tcp_endpoints"]),
        ("team", &json!(51))
    );

    // The api's LISTEN connection is cut: notifications may be lost while it reconnects, so
    // every stream gets a fresh snapshot, and changes flow again afterwards.
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(cut, [true], "the api holds one LISTEN connection");
    let fresh = next_matching(
        &mut feed,
        Duration::from_secs(15),
        "resync snapshot",
        |e| match e {
            Event::Snapshot(s) => Some(s.clone()),
            _ => None,
        },
    )
    .await;
    let plan = fresh.accounts.iter().find(|a| a.account_id == id).unwrap();
    assert_eq!(plan.plan, "team");
    let (status, e) = put_policy(&stack, &id, "after", &admin, "text/yaml", POLICY).await;
    assert_eq!(status, StatusCode::OK, "{e}");
    next_matching(
        &mut feed,
        PROMPT,
        "policy change after the resync",
        |e| match e {
            Event::Policy(p) if p.endpoint == "after" => Some(()),
            _ => None,
        },
    )
    .await;

    // Reflection lists the service for grpcurl-style clients (no key needed to list).
    let channel = tonic::transport::Endpoint::from_shared(stack.api_grpc_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let services: Vec<String> = match answer.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a service list: {other:?}"),
    };
    assert!(
        services.iter().any(|s| s == "burrow.relay.v1.RelayFeed"),
        "{services:?}"
    );
}
