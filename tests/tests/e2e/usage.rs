//! Metering over REST: relays post usage batches with the internal key (idempotent by batch
//! id, all-or-nothing when an account is unknown), and accounts read their totals back.

use burrow_e2e::Stack;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The internal key relays present. The harness keeps it private, so read it from the api
/// process's environment (Linux).
fn internal_key(stack: &Stack) -> String {
    let pid = stack.api.child.id().expect("api running");
    let env = std::fs::read(format!("/proc/{pid}/environ")).expect("api environment");
    env.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("BURROW_API_INTERNAL_KEY="))
        .expect("BURROW_API_INTERNAL_KEY in the api's environment")
        .to_owned()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn record(account: &str, endpoint: &str, proto: &str, counts: [i64; 4]) -> Value {
    json!({
        "account_id": account, "endpoint": endpoint, "proto": proto,
        "bytes_in": counts[0], "bytes_out": counts[1],
        "requests": counts[2], "connections": counts[3],
    })
}

fn batch(start: DateTime<Utc>, end: DateTime<Utc>, records: Vec<Value>) -> Value {
    json!({
        "relay_id": "relay-e2e",
        "batch_id": uuid::Uuid::new_v4(),
        "period_start": ts(start),
        "period_end": ts(end),
        "records": records,
    })
}

fn totals(v: &Value) -> [i64; 4] {
    ["bytes_in", "bytes_out", "requests", "connections"].map(|k| v[k].as_i64().unwrap_or(-1))
}

#[tokio::test]
async fn usage_ingest_is_idempotent_and_reported_per_account() {
    let stack = Stack::start().await.unwrap();
    let ik = internal_key(&stack);
    let admin = stack.creds.admin_api_key.clone();
    let dev = stack.creds.developer_api_key.clone();
    let ops = stack.creds.ops_api_key.clone();
    let own = stack.creds.account_id.clone();
    let other = stack
        .create_account("other", &format!("cus_{}", uuid::Uuid::new_v4().simple()))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let db = stack.db().await.unwrap();
    let stored = |batch_id: String| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM usage_records WHERE batch_id = $1::uuid",
            )
            .bind(batch_id)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };

    let end = Utc::now();
    let start = end - Duration::seconds(60);
    let window = format!(
        "since={}&until={}",
        ts(start - Duration::hours(1)),
        ts(end + Duration::hours(1))
    );
    let first = batch(
        start,
        end,
        vec![
            record(&own, "demo", "http", [100, 2000, 3, 0]),
            record(&own, "tcp:20000", "tcp", [10, 20, 0, 1]),
            record(&other, "elsewhere", "http", [7, 7, 7, 7]),
        ],
    );

    // Only the internal key may post usage.
    for key in [admin.as_str(), dev.as_str(), "ik_wrong", ""] {
        let (status, e) = stack
            .call(Method::POST, "/v1/internal/usage", key, Some(first.clone()))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED, "key {key:?}: {e}");
        assert_eq!(e["error"]["code"], "unauthorized");
    }
    assert_eq!(stored(first["batch_id"].as_str().unwrap().into()).await, 0);

    let (status, ack) = stack
        .call(Method::POST, "/v1/internal/usage", &ik, Some(first.clone()))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack, json!({"accepted": 3, "duplicates": 0}));

    // A relay that did not see the answer re-sends the same batch: nothing is counted twice.
    let (status, ack) = stack
        .call(Method::POST, "/v1/internal/usage", &ik, Some(first.clone()))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack, json!({"accepted": 0, "duplicates": 3}));
    assert_eq!(stored(first["batch_id"].as_str().unwrap().into()).await, 3);

    // A later batch of the same endpoint adds up.
    let later = batch(
        end,
        end + Duration::seconds(1),
        vec![record(&own, "demo", "http", [1, 1, 1, 0])],
    );
    let (status, ack) = stack
        .call(Method::POST, "/v1/internal/usage", &ik, Some(later))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["accepted"], 1);

    // A batch naming an unknown account is refused whole: 422 naming it, nothing stored.
    let ghost = uuid::Uuid::new_v4().to_string();
    let bad = batch(
        start,
        end,
        vec![
            record(&own, "demo", "http", [1000, 1000, 1000, 1000]),
            record(&ghost, "ghost", "http", [1, 1, 1, 1]),
        ],
    );
    let (status, e) = stack
        .call(Method::POST, "/v1/internal/usage", &ik, Some(bad.clone()))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["code"], "unknown_account");
    assert!(
        e["error"]["message"].as_str().unwrap().contains(&ghost),
        "{e}"
    );
    assert_eq!(e["error"]["accounts"], json!([ghost]));
    assert_eq!(stored(bad["batch_id"].as_str().unwrap().into()).await, 0);

    // Malformed batches are 400s naming the field.
    let mut negative = batch(
        start,
        end,
        vec![record(&own, "demo", "http", [1, -1, 0, 0])],
    );
    let (status, e) = stack
        .call(
            Method::POST,
            "/v1/internal/usage",
            &ik,
            Some(negative.clone()),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "invalid_usage");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("records[0].bytes_out"),
        "{e}"
    );
    negative["records"] = json!([record(&own, "demo", "http", [1, 1, 0, 0])]);
    negative["period_end"] = json!(ts(start - Duration::seconds(1)));
    let (status, e) = stack
        .call(Method::POST, "/v1/internal/usage", &ik, Some(negative))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("period_end"),
        "{e}"
    );

    // The account's developer key reads its own usage: per endpoint and in total, other
    // accounts' usage and refused batches left out.
    let own_usage = format!("/v1/accounts/{own}/usage?{window}");
    let (status, usage) = stack
        .call(Method::GET, &own_usage, &dev, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{usage}");
    assert_eq!(usage["account_id"], own.as_str());
    let endpoints = usage["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 2, "{usage}");
    assert_eq!(endpoints[0]["endpoint"], "demo");
    assert_eq!(endpoints[0]["proto"], "http");
    assert_eq!(totals(&endpoints[0]), [101, 2001, 4, 0]);
    assert_eq!(endpoints[1]["endpoint"], "tcp:20000");
    assert_eq!(endpoints[1]["proto"], "tcp");
    assert_eq!(totals(&endpoints[1]), [10, 20, 0, 1]);
    assert_eq!(totals(&usage["total"]), [111, 2021, 4, 1]);

    // Finance reads any account's usage; so does admin.
    let (status, created) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{own}/api-keys"),
            &admin,
            Some(json!({"role": "finance", "description": "billing"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let finance = created["token"].as_str().unwrap().to_owned();
    let (status, as_finance) = stack
        .call(Method::GET, &own_usage, &finance, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{as_finance}");
    assert_eq!(as_finance, usage);
    let other_usage = format!("/v1/accounts/{other}/usage?{window}");
    for key in [&finance, &admin] {
        let (status, u) = stack
            .call(Method::GET, &other_usage, key, None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{u}");
        assert_eq!(totals(&u["total"]), [7, 7, 7, 7]);
    }

    // Nobody else: another account's developer, ops, no key.
    let (status, e) = stack
        .call(Method::GET, &other_usage, &dev, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("finance"),
        "{e}"
    );
    let (status, _) = stack
        .call(Method::GET, &own_usage, &ops, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = stack.call(Method::GET, &own_usage, "", None).await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Windows: records outside it do not count; bad parameters are named.
    let (status, e) = stack
        .call(
            Method::GET,
            &format!(
                "/v1/accounts/{own}/usage?since={}",
                ts(end + Duration::hours(1))
            ),
            &dev,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "since after now: {e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("until"),
        "{e}"
    );
    let (status, empty) = stack
        .call(
            Method::GET,
            &format!(
                "/v1/accounts/{own}/usage?since={}&until={}",
                ts(end + Duration::hours(1)),
                ts(end + Duration::hours(2))
            ),
            &dev,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{empty}");
    assert_eq!(empty["endpoints"], json!([]));
    assert_eq!(totals(&empty["total"]), [0, 0, 0, 0]);
    let (status, e) = stack
        .call(
            Method::GET,
            &format!("/v1/accounts/{own}/usage?since=yesterday"),
            &dev,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "invalid_query");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("since"),
        "{e}"
    );
    let (status, e) = stack
        .call(
            Method::GET,
            &format!("/v1/accounts/{own}/usage?form=x"),
            &dev,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("form"),
        "{e}"
    );
    // The default window (this month until now) answers too.
    let (status, _) = stack
        .call(
            Method::GET,
            &format!("/v1/accounts/{own}/usage"),
            &dev,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, e) = stack
        .call(
            Method::GET,
            &format!("/v1/accounts/{ghost}/usage?{window}"),
            &admin,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
}

#[tokio::test]
async fn relay_meters_real_traffic_and_flushes_it_to_the_api() {
    use burrow_e2e::StackOptions;
    use std::time::Duration;
    let py = crate::support::python_http_server().await;
    let stack = Stack::start_with(StackOptions {
        relay_env: vec![("BURROW_RELAY_USAGE_FLUSH_SECS".into(), "1".into())],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let (_agent, _) = stack
        .online_agent(py.port, Some("metered"), &stack.creds.authtoken)
        .await
        .unwrap();
    let upload = "x".repeat(1000);
    for _ in 0..3 {
        let resp = stack
            .ingress(Method::POST, "metered", "/hello-from-burrow.txt")
            .body(upload.clone())
            .send()
            .await
            .unwrap();
        // http.server refuses POST with 501 and a small HTML body: still metered traffic.
        assert_eq!(resp.status(), 501);
        resp.bytes().await.unwrap();
    }
    let resp = stack
        .ingress(Method::GET, "metered", "/hello-from-burrow.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "hi\n");

    let own = stack.creds.account_id.clone();
    let path = format!("/v1/accounts/{own}/usage");
    let dev = stack.creds.developer_api_key.clone();
    let usage =
        burrow_e2e::wait::until("the relay to flush usage", Duration::from_secs(30), || {
            let (path, dev) = (path.clone(), dev.clone());
            let stack = &stack;
            async move {
                let (_, usage) = stack.call(Method::GET, &path, &dev, None).await.ok()?;
                (usage["total"]["requests"].as_i64()? >= 4).then_some(usage)
            }
        })
        .await
        .unwrap();
    let endpoints = usage["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "{usage}");
    assert_eq!(endpoints[0]["endpoint"], "metered");
    assert_eq!(endpoints[0]["proto"], "http");
    assert_eq!(endpoints[0]["requests"], 4, "{usage}");
    assert_eq!(endpoints[0]["bytes_in"], 3000, "the three uploads: {usage}");
    // Three 501 pages and the 3-byte file.
    assert!(endpoints[0]["bytes_out"].as_i64().unwrap() > 3, "{usage}");
}
