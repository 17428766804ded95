//! The ops console in headless Chromium (driven over WebDriver by Debian's chromedriver):
//! sign in with an ops key, see a parked workflow, press Replay.

use burrow_e2e::{Stack, wait, webhook};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const T: Duration = Duration::from_secs(30);

/// A WebDriver session on a chromedriver child process.
struct Browser {
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn start() -> Browser {
        let driver_bin =
            std::env::var("BURROW_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = crate::support::free_port();
        let driver = tokio::process::Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {driver_bin} (apt install chromium-driver): {e}")
            });
        let http = reqwest::Client::new();
        let driver_url = format!("http://127.0.0.1:{port}");
        wait::until("chromedriver", T, || async {
            http.get(format!("{driver_url}/status")).send().await.ok()
        })
        .await
        .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("BURROW_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let session: Value = http
            .post(format!("{driver_url}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = session["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
            .to_owned();
        Browser {
            _driver: driver,
            _profile: profile,
            http,
            base: format!("{driver_url}/session/{id}"),
        }
    }

    async fn cmd(&self, method: Method, path: &str, body: Value) -> Value {
        let v: Value = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(Method::POST, "/url", json!({ "url": url })).await;
    }

    /// The element id of `css`, if it is on the page now.
    async fn find_now(&self, css: &str) -> Option<String> {
        let v = self
            .cmd(
                Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// Runs `command` on the element `css` (a path under `/element/<id>`), waiting for the
    /// element to appear. The console re-renders its tables every few seconds, so an element
    /// found may be gone by the time it is used (WebDriver answers with an error object): then
    /// it is found again. Returns the command's answer.
    async fn on_element(&self, css: &str, method: Method, command: &str, body: Value) -> Value {
        wait::until(&format!("element {css} ({command})"), T, || async {
            let el = self.find_now(css).await?;
            let v = self
                .cmd(
                    method.clone(),
                    &format!("/element/{el}/{command}"),
                    body.clone(),
                )
                .await;
            let failed = v.get("error").is_some();
            (!failed).then_some(v)
        })
        .await
        .unwrap()
    }

    async fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, Method::POST, "value", json!({ "text": text }))
            .await;
    }

    async fn click(&self, css: &str) {
        self.on_element(css, Method::POST, "click", json!({})).await;
    }

    async fn text(&self, css: &str) -> String {
        self.on_element(css, Method::GET, "text", json!({}))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Browser {
    /// Ends the WebDriver session synchronously (the runtime may already be gone), so
    /// chromedriver closes Chromium; killing chromedriver alone would orphan the browser.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Some(rest) = self.base.strip_prefix("http://") else {
            return;
        };
        let Some((host, path)) = rest.split_once('/') else {
            return;
        };
        if let Ok(mut tcp) = std::net::TcpStream::connect(host) {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if tcp.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = tcp.read_to_end(&mut answer);
            }
        }
    }
}

#[tokio::test]
async fn ops_user_signs_in_and_replays_a_parked_workflow_in_the_console() {
    let stack = Stack::start().await.unwrap();
    let customer = format!("cus_{}", uuid::Uuid::new_v4().simple());
    let event_id = format!("evt_{}", uuid::Uuid::new_v4().simple());
    let workflow_id = format!("provider-webhook-{event_id}");
    stack
        .send_event(&webhook::subscription_updated(&event_id, &customer, "pro"))
        .await
        .unwrap();
    stack
        .wait_event_state(&event_id, "account_unknown")
        .await
        .unwrap();

    let browser = Browser::start().await;
    let console = format!("{}/console", stack.api_url);

    // A developer key is refused: the console uses the API's own role checks.
    browser.goto(&console).await;
    browser
        .type_into("#api-key", &stack.creds.developer_api_key)
        .await;
    browser.click("#sign-in").await;
    let refused = wait::until("the sign-in error", T, || async {
        let t = browser.text("#signin-error").await;
        (!t.is_empty()).then_some(t)
    })
    .await
    .unwrap();
    assert!(refused.contains("ops role"), "{refused}");

    // The ops key signs in and sees the parked workflow with its runbook link.
    browser.goto(&console).await;
    browser
        .type_into("#api-key", &stack.creds.ops_api_key)
        .await;
    browser.click("#sign-in").await;
    let row = format!("tr[data-workflow-id=\"{workflow_id}\"]");
    let state = browser.text(&format!("{row} td.state")).await;
    assert_eq!(state, "account_unknown");
    let link = browser.text(&format!("{row} a")).await;
    assert_eq!(link, "account_unknown");

    stack.create_account("console", &customer).await.unwrap();
    browser.click(&format!("{row} button.replay")).await;
    let flash = wait::until("the replay confirmation", T, || async {
        let t = browser.text("#flash").await;
        t.contains("Replay requested").then_some(t)
    })
    .await
    .unwrap();
    assert!(flash.contains(&workflow_id), "{flash}");
    stack.wait_event_state(&event_id, "applied").await.unwrap();
    // The page refreshes on its own and shows the new state.
    wait::until("the console to show applied", T, || async {
        (browser.text(&format!("{row} td.state")).await == "applied").then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ops_acknowledge_and_resolve_an_incident_and_see_region_drift_in_the_console() {
    let stack = Stack::start().await.unwrap();
    let db = stack.db().await.unwrap();
    // An incident as a parked certificate run opens it, and a region snapshot with drift
    // (rows written the way the worker's activities write them).
    let incident = uuid::Uuid::new_v4();
    let workflow_id = "certificate-shop.console-e2e.test";
    sqlx::query(
        "INSERT INTO incidents (id, workflow_id, kind, subject, failure_state, tier, status, summary)
         VALUES ($1, $2, 'certificate', 'shop.console-e2e.test', 'ca_unreachable', 'sev2', 'open',
                 'ca_unreachable: placing the order: connection refused')",
    )
    .bind(incident)
    .bind(workflow_id)
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO incident_events (incident_id, event, detail, actor) VALUES ($1, 'opened', '', 'workflow')",
    )
    .bind(incident)
    .execute(&db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO region_snapshots (region, relays, certificates, drift)
         VALUES ('eu-west', 2, '{\"shop.console-e2e.test\": 0}', '[\"shop.console-e2e.test\"]')",
    )
    .execute(&db)
    .await
    .unwrap();

    let browser = Browser::start().await;
    browser.goto(&format!("{}/console", stack.api_url)).await;
    browser
        .type_into("#api-key", &stack.creds.ops_api_key)
        .await;
    browser.click("#sign-in").await;
    let row = format!("#incidents tr[data-incident-id=\"{incident}\"]");
    assert_eq!(browser.text(&format!("{row} td.tier")).await, "sev2");
    assert_eq!(
        browser.text(&format!("{row} td.failure-state")).await,
        "ca_unreachable"
    );
    let region = browser
        .text("#regions tr[data-region=\"eu-west\"] td.drift")
        .await;
    assert!(region.contains("shop.console-e2e.test"), "{region}");

    // Acknowledge, then resolve with a note: the API (and its timeline) record both, by the
    // ops key that pressed the buttons.
    browser.click(&format!("{row} button.acknowledge")).await;
    wait::until("the console to show acknowledged", T, || async {
        (browser.text(&format!("{row} td.status")).await == "acknowledged").then_some(())
    })
    .await
    .unwrap();
    browser
        .type_into("#resolve-note", "CA back after maintenance")
        .await;
    browser.click(&format!("{row} button.resolve")).await;
    let (detail, events) = stack
        .wait_incident_resolved(&incident.to_string())
        .await
        .unwrap();
    assert_eq!(events, ["opened", "acknowledged", "resolved"], "{detail}");
    assert!(
        detail.to_string().contains("CA back after maintenance"),
        "{detail}"
    );
}
