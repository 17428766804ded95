//! The control plane of edge features over REST and gRPC: reserved names, custom domains
//! verified through a real DNS server, traffic policies, tenant isolation on every route, and
//! the `RelayFeed` stream relays subscribe to.

mod domains;
mod feed;
mod names;
mod policies;

use burrow_e2e::Stack;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// An account (on `free`) and a developer API key of it.
pub struct Tenant {
    pub id: String,
    pub key: String,
}

pub async fn tenant(stack: &Stack, name: &str) -> Tenant {
    let customer = format!("cus_{}", uuid::Uuid::new_v4().simple());
    let account = stack.create_account(name, &customer).await.unwrap();
    let id = account["id"].as_str().unwrap().to_owned();
    let (status, key) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{id}/api-keys"),
            &stack.creds.admin_api_key,
            Some(json!({"role": "developer", "description": name})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{key}");
    Tenant {
        id,
        key: key["token"].as_str().unwrap().to_owned(),
    }
}

/// Moves `account` to `plan` with the admin key.
pub async fn set_plan(stack: &Stack, account: &str, plan: &str) {
    let (status, body) = stack
        .call(
            Method::PUT,
            &format!("/v1/accounts/{account}/plan"),
            &stack.creds.admin_api_key,
            Some(json!({ "plan": plan })),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `PUT .../policy` with a raw document and content type; status and JSON body.
pub async fn put_policy(
    stack: &Stack,
    account: &str,
    endpoint: &str,
    key: &str,
    content_type: &str,
    document: &str,
) -> (StatusCode, Value) {
    let resp = stack
        .api(
            Method::PUT,
            &format!("/v1/accounts/{account}/endpoints/{endpoint}/policy"),
            key,
        )
        .header("content-type", content_type)
        .body(document.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The outcomes recorded for `action`, newest first.
pub async fn audit_outcomes(stack: &Stack, action: &str) -> Vec<String> {
    let (status, page) = stack
        .call(
            Method::GET,
            &format!("/v1/audit?action={action}"),
            &stack.creds.admin_api_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts a 403 that names the account whose resource was asked for.
pub fn assert_forbidden(status: StatusCode, body: &Value, account: &str) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(account), "{message}");
}

use burrow_proto::relay::{
    FeedEvent, WatchRequest, feed_event::Event, relay_feed_client::RelayFeedClient,
};
use std::time::Duration;

/// Subscribes to the api's `RelayFeed` presenting `key` (none: no `authorization`).
pub async fn watch(
    stack: &Stack,
    key: Option<&str>,
) -> Result<tonic::Streaming<FeedEvent>, tonic::Status> {
    let mut client = RelayFeedClient::connect(stack.api_grpc_url.clone())
        .await
        .unwrap();
    let mut request = tonic::Request::new(WatchRequest {
        relay_id: "e2e".into(),
    });
    if let Some(k) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    Ok(client.watch(request).await?.into_inner())
}

/// The next event of `stream` for which `pick` returns `Some`, skipping the others; fails
/// after `within`.
pub async fn next_matching<T>(
    stream: &mut tonic::Streaming<FeedEvent>,
    within: Duration,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let found = tokio::time::timeout(within, async {
        loop {
            let event = stream
                .message()
                .await
                .unwrap_or_else(|e| panic!("feed failed waiting for {what}: {e}"))
                .unwrap_or_else(|| panic!("feed ended waiting for {what}"))
                .event
                .unwrap_or_else(|| panic!("empty feed event waiting for {what}"));
            if let Some(v) = pick(&event) {
                return v;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} on the feed within {within:?}"))
}
