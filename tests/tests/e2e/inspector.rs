//! The agent's inspector: it lists the requests that went through the tunnel and replays one
//! to the local service.

use crate::support::*;
use burrow_e2e::Stack;
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn the_inspector_lists_and_replays_a_request() {
    use axum::{Router, body::Bytes, http::Uri, routing::post};
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let log = seen.clone();
    let app = Router::new().route(
        "/hooks/{name}",
        post(move |uri: Uri, body: Bytes| {
            let log = log.clone();
            async move {
                let body = String::from_utf8_lossy(&body).into_owned();
                log.lock().unwrap().push((uri.to_string(), body.clone()));
                (
                    axum::http::StatusCode::CREATED,
                    format!("stored {}", body.len()),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let stack = Stack::start().await.unwrap();
    let (mut agent, _) = stack
        .online_agent(port, Some("inspected"), &stack.creds.authtoken)
        .await
        .unwrap();
    let line = agent.wait_line("Inspector http://", T).await.unwrap();
    let inspector = line.trim_start_matches("Inspector ").to_owned();

    let resp = stack
        .ingress(
            reqwest::Method::POST,
            "inspected",
            "/hooks/github?delivery=7",
        )
        .header("content-type", "application/json")
        .body(r#"{"action":"opened"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.text().await.unwrap(), "stored 19");

    let list: serde_json::Value =
        burrow_e2e::wait::until("the exchange to be listed", T, || async {
            let list: serde_json::Value = reqwest::get(format!("{inspector}/api/requests"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (!list.as_array()?.is_empty()).then_some(list)
        })
        .await
        .unwrap();
    let item = &list[0];
    assert_eq!(item["method"], "POST");
    assert_eq!(item["path"], "/hooks/github?delivery=7");
    assert_eq!(item["status"], 201);
    let id = item["id"].as_u64().unwrap();
    let detail: serde_json::Value = reqwest::get(format!("{inspector}/api/requests/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["request"]["body"]["data"], r#"{"action":"opened"}"#);
    assert_eq!(detail["response"]["body"]["data"], "stored 19");

    // Replay: the local service gets the same request again, and the replay is listed.
    let replayed: serde_json::Value = reqwest::Client::new()
        .post(format!("{inspector}/api/requests/{id}/replay"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replayed["status"], 201, "{replayed}");
    assert_eq!(replayed["replay_of"], id);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1].0, "/hooks/github?delivery=7");

    // The page itself is served.
    let page = reqwest::get(&inspector)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<html"), "{page}");
}
