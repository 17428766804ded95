//! `burrow tokens | names | domains | policy`: the real `burrow` binary driving a real api with
//! an API key; what it prints, what it exits with, and that the api really changed.

use burrow_e2e::{Stack, procs::bin};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// What one `burrow` run printed and exited with.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts exit 0; answers stdout.
    fn ok(self) -> String {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self.stdout
    }

    /// Asserts exit `code`; answers stderr.
    fn fails(self, code: i32) -> String {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self.stderr
    }

    /// Parses stdout as JSON (a `--json` run), asserting exit 0.
    fn json(self) -> Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

/// Runs `burrow <args>` against `api_url` with `key` (none: BURROW_API_KEY unset).
async fn burrow(api_url: &str, key: Option<&str>, args: &[&str]) -> Run {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new(bin("burrow"));
    cmd.args(args)
        .env("BURROW_API_URL", api_url)
        .env("HOME", home.path())
        .env_remove("BURROW_API_KEY")
        .env_remove("BURROW_CONFIG")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(k) = key {
        cmd.env("BURROW_API_KEY", k);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .expect("burrow did not exit within 60s")
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A new account with a developer API key of its own; answers (account id, key).
async fn account_with_key(stack: &Stack, name: &str) -> (String, String) {
    let customer = format!("cus_{}", uuid::Uuid::new_v4().simple());
    let account = stack.create_account(name, &customer).await.unwrap();
    let id = account["id"].as_str().unwrap().to_owned();
    let (status, key) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{id}/api-keys"),
            &stack.creds.admin_api_key,
            Some(json!({"role": "developer", "description": "cli test"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{key}");
    (id, key["token"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn cli_without_a_key_or_an_api_says_what_is_missing() {
    // No stack needed: these fail before (or instead of) reaching an api.
    let err = burrow("http://127.0.0.1:9", None, &["tokens", "list"])
        .await
        .fails(2);
    assert!(err.contains("BURROW_API_KEY"), "{err}");

    let err = burrow("http://127.0.0.1:9", Some("bk_x"), &["names", "list"])
        .await
        .fails(1);
    assert!(
        err.starts_with("error: cannot reach the api at http://127.0.0.1:9"),
        "{err}"
    );

    let missing = "/nonexistent/burrow-policy.yaml";
    let args = ["policy", "set", "demo", missing, "--account", "a"];
    let err = burrow("http://127.0.0.1:9", Some("bk_x"), &args)
        .await
        .fails(2);
    assert!(err.contains(missing), "{err}");
}

#[tokio::test]
async fn cli_tokens_create_list_revoke() {
    let stack = Stack::start().await.unwrap();
    let api = stack.api_url.as_str();
    let dev = stack.creds.developer_api_key.as_str();

    // The developer key's own account is the default (GET /v1/me).
    let out = burrow(
        api,
        Some(dev),
        &["tokens", "create", "--description", "cli-laptop"],
    )
    .await
    .ok();
    assert!(out.contains("will not be shown again"), "{out}");
    let secret = out
        .split_whitespace()
        .find(|w| w.starts_with("bt_"))
        .unwrap_or_else(|| panic!("no secret in: {out}"))
        .to_owned();
    let id = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Created authtoken "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no id in: {out}"))
        .to_owned();

    let table = burrow(api, Some(dev), &["tokens", "list"]).await.ok();
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed: {table}"));
    assert!(
        row.contains("cli-laptop") && row.ends_with("active"),
        "{row}"
    );
    assert!(
        !table.contains(&secret),
        "listings never show secrets: {table}"
    );

    // A platform key names the account explicitly; --json is the api's answer.
    let admin = stack.creds.admin_api_key.as_str();
    let account = stack.creds.account_id.as_str();
    let listed = burrow(
        api,
        Some(admin),
        &["tokens", "list", "--account", account, "--json"],
    )
    .await
    .json();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id.as_str()),
        "{listed}"
    );
    let err = burrow(api, Some(admin), &["tokens", "list"]).await.fails(2);
    assert!(err.contains("--account"), "{err}");

    let out = burrow(api, Some(dev), &["tokens", "revoke", &id])
        .await
        .ok();
    assert!(out.starts_with(&format!("Revoked authtoken {id}")), "{out}");
    let table = burrow(api, Some(dev), &["tokens", "list"]).await.ok();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("revoked")),
        "{table}"
    );
    let mut agent = stack.agent(9, Some("cli-revoked"), &secret).unwrap();
    agent.expect_exit(2, "revoked").await.unwrap();

    // A wrong key is the api's refusal, exit 1.
    let err = burrow(
        api,
        Some("bk_wrong"),
        &["tokens", "list", "--account", account],
    )
    .await
    .fails(1);
    assert!(err.starts_with("error: "), "{err}");
}

#[tokio::test]
async fn cli_names_reserve_list_release() {
    let stack = Stack::start().await.unwrap();
    let api = stack.api_url.as_str();
    let dev = stack.creds.developer_api_key.as_str();
    let name = format!("cli-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);

    let out = burrow(api, Some(dev), &["names", "reserve", &name])
        .await
        .ok();
    assert_eq!(out.trim(), format!("Reserved {name}"));
    let table = burrow(api, Some(dev), &["names", "list"]).await.ok();
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&name)),
        "{table}"
    );
    let listed = burrow(api, Some(dev), &["names", "list", "--json"])
        .await
        .json();
    assert!(
        listed["reserved_names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == name.as_str()),
        "{listed}"
    );

    // Another account cannot take it: the api's own message, exit 1.
    let (other, other_key) = account_with_key(&stack, "other").await;
    let (status, refusal) = stack
        .call(
            Method::POST,
            &format!("/v1/accounts/{other}/reserved-names"),
            &other_key,
            Some(json!({ "name": name })),
        )
        .await
        .unwrap();
    assert!(status.is_client_error(), "{status} {refusal}");
    let err = burrow(api, Some(&other_key), &["names", "reserve", &name])
        .await
        .fails(1);
    assert_eq!(
        err.trim_end(),
        format!("error: {}", refusal["error"]["message"].as_str().unwrap())
    );

    let out = burrow(api, Some(dev), &["names", "release", &name])
        .await
        .ok();
    assert_eq!(out.trim(), format!("Released {name}"));
    let table = burrow(api, Some(dev), &["names", "list"]).await.ok();
    assert!(!table.contains(&name), "{table}");
    // Released, the other account can have it.
    burrow(api, Some(&other_key), &["names", "reserve", &name])
        .await
        .ok();
}

#[tokio::test]
async fn cli_policy_set_get_and_refusals_with_the_line() {
    let stack = Stack::start().await.unwrap();
    let api = stack.api_url.as_str();
    let dev = stack.creds.developer_api_key.as_str();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("cli-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);

    let good = dir.path().join("policy.yaml");
    let source = "# deny everything\non_http_request:\n  - actions:\n      - type: deny\n";
    std::fs::write(&good, source).unwrap();
    let good = good.display().to_string();
    let out = burrow(api, Some(dev), &["policy", "set", &endpoint, &good])
        .await
        .ok();
    assert_eq!(out.trim(), format!("Policy of {endpoint} is now version 1"));

    // `get` prints the text as submitted (comment included); --json the stored document.
    let out = burrow(api, Some(dev), &["policy", "get", &endpoint])
        .await
        .ok();
    assert_eq!(out, source);
    let doc = burrow(api, Some(dev), &["policy", "get", &endpoint, "--json"])
        .await
        .json();
    assert_eq!(
        doc["on_http_request"][0]["actions"][0]["type"], "deny",
        "{doc}"
    );

    // The same policy as JSON is the next version.
    let json_file = dir.path().join("policy.json");
    std::fs::write(&json_file, doc.to_string()).unwrap();
    let out = burrow(
        api,
        Some(dev),
        &["policy", "set", &endpoint, &json_file.display().to_string()],
    )
    .await
    .ok();
    assert_eq!(out.trim(), format!("Policy of {endpoint} is now version 2"));

    // A broken document: refused with where, and nothing changes.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "on_http_request:\n  - actions:\n      - type: deny: now\n",
    )
    .unwrap();
    let bad = bad.display().to_string();
    let err = burrow(api, Some(dev), &["policy", "set", &endpoint, &bad])
        .await
        .fails(1);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("line 3"), "{err}");
    let current = burrow(api, Some(dev), &["policy", "get", &endpoint, "--json"])
        .await
        .json();
    assert_eq!(current, doc);

    let out = burrow(api, Some(dev), &["policy", "delete", &endpoint])
        .await
        .ok();
    assert_eq!(out.trim(), format!("Deleted the policy of {endpoint}"));
    let err = burrow(api, Some(dev), &["policy", "get", &endpoint])
        .await
        .fails(1);
    assert!(err.starts_with("error: "), "{err}");
}

#[tokio::test]
async fn cli_domains_add_prints_the_txt_record() {
    let stack = Stack::start().await.unwrap();
    let api = stack.api_url.as_str();
    let dev = stack.creds.developer_api_key.as_str();
    let domain = format!(
        "cli-{}.example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );

    let out = burrow(api, Some(dev), &["domains", "add", &domain])
        .await
        .ok();
    assert!(out.starts_with(&format!("Added {domain}")), "{out}");
    let listed = burrow(api, Some(dev), &["domains", "list", "--json"])
        .await
        .json();
    let list = listed
        .get("domains")
        .unwrap_or(&listed)
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    let added = list
        .iter()
        .find(|d| d["domain"] == domain.as_str())
        .unwrap_or_else(|| panic!("{domain} not listed: {listed}"));
    let record = added["txt_record"]["name"].as_str().unwrap();
    let value = added["txt_record"]["value"].as_str().unwrap();
    assert!(out.contains(record) && out.contains(value), "{out}");
    let table = burrow(api, Some(dev), &["domains", "list"]).await.ok();
    assert!(table.contains(&domain), "{table}");

    // No such TXT record exists: verification is the api's refusal.
    let err = burrow(api, Some(dev), &["domains", "verify", &domain])
        .await
        .fails(1);
    assert!(err.starts_with("error: "), "{err}");

    let out = burrow(api, Some(dev), &["domains", "remove", &domain])
        .await
        .ok();
    assert_eq!(out.trim(), format!("Removed {domain}"));
    let table = burrow(api, Some(dev), &["domains", "list"]).await.ok();
    assert!(!table.contains(&domain), "{table}");
}
