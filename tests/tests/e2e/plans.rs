//! Plans enforced at bind: a `free` account gets its TCP and online endpoint limits, with a
//! refusal naming the limit and the plan; an agent reconnecting keeps its own endpoints; a plan
//! change over the api reaches the relay without anyone reconnecting.

use crate::support::*;
use burrow_e2e::{Agent, Stack};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Starts `burrow tcp <free port>`; returns it once online, or `None` if it exits first.
async fn tcp_agent(stack: &Stack, token: &str) -> Option<Agent> {
    let port = free_port().to_string();
    let mut agent = stack.agent_with(&["tcp", &port], token).ok()?;
    agent.wait_line("Forwarding tcp://", T).await.ok()?;
    Some(agent)
}

#[tokio::test]
async fn a_free_account_is_held_to_its_plan_until_it_moves_to_pro() {
    let mut stack = Stack::start().await.unwrap();
    let admin = stack.creds.admin_api_key.clone();
    let customer = format!("cus_{}", uuid::Uuid::new_v4().simple());
    let account = stack.create_account("plans", &customer).await.unwrap();
    let id = account["id"].as_str().unwrap().to_owned();
    assert_eq!(account["plan"], "free");
    let (_, token) = stack.create_authtoken(&id).await.unwrap();

    // Any API key lists the plans and their limits (null = unlimited).
    let (status, plans) = stack
        .call(
            Method::GET,
            "/v1/plans",
            &stack.creds.developer_api_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{plans}");
    let plan = |name: &str| {
        plans
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no plan {name}: {plans}"))
            .clone()
    };
    assert_eq!(plan("free")["limits"]["max_tcp_endpoints"], 1);
    assert_eq!(plan("free")["limits"]["max_online_endpoints"], 4);
    assert_eq!(plan("pro")["limits"]["max_tcp_endpoints"], 10);
    assert!(plan("enterprise")["limits"]["max_online_endpoints"].is_null());

    // Up to the TCP limit binds; the next TCP endpoint is refused for good (exit 1), naming
    // the limit, the count and the plan.
    let mut first = tcp_agent(&stack, &token).await.expect("first TCP endpoint");
    let refused_tcp = "plan \"free\" allows 1 TCP endpoint online; this account already has 1";
    let port = free_port().to_string();
    let mut second = stack.agent_with(&["tcp", &port], &token).unwrap();
    second.expect_exit(1, refused_tcp).await.unwrap();

    // HTTP endpoints count towards the online limit (4 on free, the TCP one included).
    let mut http = Vec::new();
    for name in ["plan-a", "plan-b", "plan-c"] {
        let (agent, _) = stack
            .online_agent(free_port(), Some(name), &token)
            .await
            .unwrap();
        http.push(agent);
    }
    let mut fifth = stack.agent(free_port(), Some("plan-d"), &token).unwrap();
    fifth
        .expect_exit(
            1,
            "plan \"free\" allows 4 online endpoints; this account already has 4",
        )
        .await
        .unwrap();
    drop(http);

    // The agent that holds the TCP endpoint comes back after a relay restart: its own
    // endpoint is not counted against it. Another one is still refused.
    stack.restart_relay().await.unwrap();
    first.wait_line("reconnected", T).await.unwrap();
    let mut again = stack.agent_with(&["tcp", &port], &token).unwrap();
    again.expect_exit(1, refused_tcp).await.unwrap();
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the reconnected agent must keep running: {:?}",
        first.seen
    );

    // Only admins change plans; an unknown plan is a 422 naming it.
    let path = format!("/v1/accounts/{id}/plan");
    let (status, e) = stack
        .call(
            Method::PUT,
            &path,
            &stack.creds.developer_api_key,
            Some(json!({"plan": "pro"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    let (status, e) = stack
        .call(Method::PUT, &path, &admin, Some(json!({"plan": "gold"})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["code"], "unknown_plan");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"gold\"") && message.contains("pro"),
        "{message}"
    );
    let (status, changed) = stack
        .call(Method::PUT, &path, &admin, Some(json!({"plan": "pro"})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["plan"], "pro");

    // The relay learns the new plan within its auth cache period (1 s here), with the first
    // agent still connected on its old session: a second TCP endpoint binds.
    let _second = burrow_e2e::wait::until("a second TCP endpoint on pro", T, || {
        tcp_agent(&stack, &token)
    })
    .await
    .unwrap();
    assert!(first.child.try_wait().unwrap().is_none());

    // The change and the refusals are in the audit log.
    let (_, audit) = stack
        .call(Method::GET, "/v1/audit?action=account.plan", &admin, None)
        .await
        .unwrap();
    let outcomes: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{audit}"))
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    for outcome in ["ok", "unknown_plan", "forbidden"] {
        assert!(outcomes.contains(&outcome), "{outcome}: {audit}");
    }
}
