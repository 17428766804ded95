//! Custom domains: added pending with a TXT challenge, verified against a real DNS server the
//! api is pointed at (`BURROW_API_DNS_RESOLVER`), the `domain_events` outbox, the feed's domain
//! claim, plan limits, isolation, and a resolver that does not answer.

use super::*;
use burrow_e2e::{StackOptions, dns::DnsServer};

#[tokio::test]
async fn a_domain_is_verified_through_a_txt_record_on_a_real_dns_server() {
    let dns = DnsServer::start("burrow-e2e.test").await.unwrap();
    let stack = Stack::start_with(StackOptions {
        api_env: vec![("BURROW_API_DNS_RESOLVER".into(), dns.addr.to_string())],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let a = tenant(&stack, "domains-a").await;
    let b = tenant(&stack, "domains-b").await;
    let path_a = format!("/v1/accounts/{}/domains", a.id);
    let add = |key: &str, path: &str, domain: &str| {
        let (key, path, domain) = (key.to_owned(), path.to_owned(), domain.to_owned());
        let stack = &stack;
        async move {
            stack
                .call(Method::POST, &path, &key, Some(json!({ "domain": domain })))
                .await
                .unwrap()
        }
    };

    // free allows no custom domain.
    let (status, e) = add(&a.key, &path_a, "app.burrow-e2e.test").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("plan \"free\" allows 0 custom domains"),
        "{message}"
    );
    set_plan(&stack, &a.id, "pro").await;

    // Not hostnames, or names under the relays' own domain: 422.
    for bad in [
        "not a host",
        "localhost",
        "10.1.2.3",
        "demo.burrow.localhost",
    ] {
        let (status, e) = add(&a.key, &path_a, bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {e}");
        assert_eq!(e["error"]["code"], "invalid_domain", "{e}");
    }

    let (status, added) = add(&a.key, &path_a, "App.burrow-e2e.test").await;
    assert_eq!(status, StatusCode::CREATED, "{added}");
    assert_eq!(added["domain"], "app.burrow-e2e.test");
    assert_eq!(added["status"], "pending");
    assert_eq!(added["account_id"], a.id.as_str());
    assert_eq!(
        added["txt_record"]["name"],
        "_burrow-challenge.app.burrow-e2e.test"
    );
    let token = added["txt_record"]["value"].as_str().unwrap().to_owned();
    assert!(token.len() >= 32, "{token}");

    // A pending claim blocks nobody: B adds the same domain with its own token (whoever
    // proves ownership first holds it); adding it twice is 409. B's key on A's routes: 403.
    let path_b = format!("/v1/accounts/{}/domains", b.id);
    set_plan(&stack, &b.id, "pro").await;
    let (status, b_claim) = add(&b.key, &path_b, "app.burrow-e2e.test").await;
    assert_eq!(status, StatusCode::CREATED, "{b_claim}");
    let b_token = b_claim["txt_record"]["value"].as_str().unwrap().to_owned();
    assert_ne!(b_token, token);
    let (status, e) = add(&b.key, &path_b, "app.burrow-e2e.test").await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    assert!(!e.to_string().contains(&a.id), "{e}");
    let verify_a = format!("{path_a}/app.burrow-e2e.test/verify");
    let (status, e) = add(&b.key, &path_a, "b.burrow-e2e.test").await;
    assert_forbidden(status, &e, &a.id);
    let (status, e) = stack
        .call(Method::GET, &path_a, &b.key, None)
        .await
        .unwrap();
    assert_forbidden(status, &e, &a.id);
    let (status, e) = stack
        .call(Method::POST, &verify_a, &b.key, None)
        .await
        .unwrap();
    assert_forbidden(status, &e, &a.id);
    let (status, e) = stack
        .call(
            Method::DELETE,
            &format!("{path_a}/app.burrow-e2e.test"),
            &b.key,
            None,
        )
        .await
        .unwrap();
    assert_forbidden(status, &e, &a.id);
    // Nothing changed: A still has its pending domain, B has none.
    let domains_of = |account: String| {
        let stack = &stack;
        async move {
            let path = format!("/v1/accounts/{account}/domains");
            let (status, list) = stack
                .call(Method::GET, &path, &stack.creds.admin_api_key, None)
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK, "{list}");
            list["domains"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| format!("{} {}", d["domain"].as_str().unwrap(), d["status"]))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        domains_of(a.id.clone()).await,
        ["app.burrow-e2e.test \"pending\""]
    );
    assert_eq!(
        domains_of(b.id.clone()).await,
        ["app.burrow-e2e.test \"pending\""]
    );

    // No TXT record yet: 422 naming the record, the expected value and what was found.
    let (status, e) = stack
        .call(Method::POST, &verify_a, &a.key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["code"], "verification_failed");
    let message = e["error"]["message"].as_str().unwrap();
    for part in [
        "_burrow-challenge.app.burrow-e2e.test",
        token.as_str(),
        "no TXT record",
    ] {
        assert!(message.contains(part), "{part}: {message}");
    }
    // A wrong value is shown as found.
    dns.set_txt("_burrow-challenge.app.burrow-e2e.test", &["something-else"])
        .await
        .unwrap();
    let (status, e) = stack
        .call(Method::POST, &verify_a, &a.key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e.to_string().contains("something-else"), "{e}");

    // The feed is watched from before the verification: the claim arrives after it.
    let mut feed = watch(&stack, Some(stack.internal_key())).await.unwrap();
    next_matching(&mut feed, Duration::from_secs(10), "snapshot", |e| {
        matches!(e, Event::Snapshot(_)).then_some(())
    })
    .await;

    dns.set_txt(
        "_burrow-challenge.app.burrow-e2e.test",
        &["something-else", &token],
    )
    .await
    .unwrap();
    let (status, verified) = stack
        .call(Method::POST, &verify_a, &a.key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{verified}");
    assert_eq!(verified["status"], "verified");
    assert!(verified["verified_at"].as_str().is_some(), "{verified}");
    let claim = next_matching(
        &mut feed,
        Duration::from_secs(5),
        "domain claim",
        |e| match e {
            Event::Domain(d) => Some(d.clone()),
            _ => None,
        },
    )
    .await;
    assert_eq!(claim.domain, "app.burrow-e2e.test");
    assert_eq!(claim.account_id, a.id);

    // The certificate workflow's outbox has the event.
    let db = stack.db().await.unwrap();
    let events: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind, account_id::text FROM domain_events WHERE domain = $1 ORDER BY id",
    )
    .bind("app.burrow-e2e.test")
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(events, [("domain.verified".to_owned(), a.id.clone())]);

    // B publishes its own token too, but A proved it first: B's verification is a 409 and
    // nobody else can add it any more.
    dns.set_txt(
        "_burrow-challenge.app.burrow-e2e.test",
        &[token.as_str(), b_token.as_str()],
    )
    .await
    .unwrap();
    let (status, e) = stack
        .call(
            Method::POST,
            &format!("{path_b}/app.burrow-e2e.test/verify"),
            &b.key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("verified for another account")
    );
    let c = tenant(&stack, "domains-c").await;
    set_plan(&stack, &c.id, "pro").await;
    let path_c = format!("/v1/accounts/{}/domains", c.id);
    let (status, e) = add(&c.key, &path_c, "app.burrow-e2e.test").await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");

    // Verifying again is a no-op answer.
    let (status, again) = stack
        .call(Method::POST, &verify_a, &a.key, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{again}");
    let (_, list) = stack
        .call(Method::GET, &path_a, &a.key, None)
        .await
        .unwrap();
    assert_eq!(list["domains"][0]["status"], "verified", "{list}");

    // Removing a verified domain: 204, the feed says it is gone, the outbox records it.
    let (status, e) = stack
        .call(
            Method::DELETE,
            &format!("{path_a}/app.burrow-e2e.test"),
            &a.key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{e}");
    let gone = next_matching(
        &mut feed,
        Duration::from_secs(5),
        "domain removal",
        |e| match e {
            Event::Domain(d) => Some(d.clone()),
            _ => None,
        },
    )
    .await;
    assert_eq!(
        (gone.domain.as_str(), gone.account_id.as_str()),
        ("app.burrow-e2e.test", "")
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM domain_events WHERE domain = $1 ORDER BY id")
            .bind("app.burrow-e2e.test")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(kinds, ["domain.verified", "domain.removed"]);

    // A resolver that does not answer: 503 naming it, and the domain stays pending.
    let (status, other) = add(&a.key, &path_a, "other.burrow-e2e.test").await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let resolver = dns.addr.to_string();
    drop(dns);
    let (status, e) = stack
        .call(
            Method::POST,
            &format!("{path_a}/other.burrow-e2e.test/verify"),
            &a.key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    assert!(e.to_string().contains(&resolver), "{e}");
    let (_, list) = stack
        .call(Method::GET, &path_a, &a.key, None)
        .await
        .unwrap();
    assert_eq!(list["domains"][0]["domain"], "other.burrow-e2e.test");
    assert_eq!(list["domains"][0]["status"], "pending", "{list}");

    let verify = audit_outcomes(&stack, "domain.verify").await;
    for outcome in ["ok", "verification_failed", "forbidden", "unavailable"] {
        assert!(verify.iter().any(|o| o == outcome), "{outcome}: {verify:?}");
    }
}
