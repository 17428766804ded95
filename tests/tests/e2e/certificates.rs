//! The certificate lifecycle against a real ACME CA (Debian's Pebble): a verified custom domain
//! gets a certificate through the Temporal workflow (HTTP-01 answered by the relay from Redis),
//! the relay serves it over HTTPS to a client trusting only Pebble's root, it renews by itself
//! inside a forced ARI window (with `replaces`), callbacks signal the workflow (unknown pairs
//! rejected), and a CA outage parks the workflow with an incident that a replay resolves.

use crate::support::*;
use burrow_e2e::{Stack, StackOptions, ari::AriResponder, dns::DnsServer, pebble::Pebble, tls};
use burrow_workflows::certificate::CertificateWorkflow;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde_json::{Value, json};
use sha2::Sha256;

const CALLBACK_SECRET: &str = "cert-callback-secret-e2e";

/// A stack whose api starts certificate workflows with a compressed retry schedule, a DNS
/// server for domain verification, and Pebble validating against the relay's listeners. Every
/// relay serves `RelayControl` over TLS (certificates' keys travel on it), and the api and the
/// worker trust only the test CA that signed it.
struct CertStack {
    stack: Stack,
    dns: DnsServer,
    pebble: Pebble,
    control: ControlTls,
}

/// The `RelayControl` TLS material: a CA and a certificate for 127.0.0.1, as files.
struct ControlTls {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl ControlTls {
    fn new() -> ControlTls {
        let pki = tls::TestPki::new(&["127.0.0.1"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (name, pem) in [
            ("ca.pem", &pki.ca_pem),
            ("control.pem", &pki.cert_pem),
            ("control-key.pem", &pki.key_pem),
        ] {
            std::fs::write(dir.path().join(name), pem).unwrap();
        }
        ControlTls {
            dir,
            ca_pem: pki.ca_pem,
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

async fn cert_stack(zone: &str) -> CertStack {
    let dns = DnsServer::start(zone).await.unwrap();
    let control = ControlTls::new();
    let stack = Stack::start_with(StackOptions {
        relay_env: vec![
            (
                "BURROW_RELAY_CONTROL_TLS_CERT_FILE".into(),
                control.file("control.pem"),
            ),
            (
                "BURROW_RELAY_CONTROL_TLS_KEY_FILE".into(),
                control.file("control-key.pem"),
            ),
        ],
        api_env: vec![
            (
                "BURROW_API_RELAY_CONTROL_CA_FILE".into(),
                control.file("ca.pem"),
            ),
            ("BURROW_API_DNS_RESOLVER".into(), dns.addr.to_string()),
            ("BURROW_API_ACME_ENABLED".into(), "true".into()),
            (
                "BURROW_API_CERT_RETRY_SCHEDULE".into(),
                "300ms,300ms".into(),
            ),
            (
                "BURROW_API_CERT_CALLBACK_SECRET".into(),
                CALLBACK_SECRET.into(),
            ),
        ],
        worker_env: vec![
            (
                "BURROW_WORKER_REPLICATION_INTERVAL_MS".into(),
                "1000".into(),
            ),
            (
                "BURROW_WORKER_RELAY_CONTROL_CA_FILE".into(),
                control.file("ca.pem"),
            ),
        ],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let https = stack
        .relay
        .https
        .clone()
        .expect("the relay has a TLS listener");
    let pebble = Pebble::start(
        stack.dir.path(),
        port_of(&stack.relay.http),
        port_of(&https),
    )
    .await
    .unwrap();
    CertStack {
        stack,
        dns,
        pebble,
        control,
    }
}

impl CertStack {
    /// Restarts the worker against `directory` (Pebble's, or the ARI responder's).
    async fn point_worker_at(&mut self, directory: &str) {
        self.point_worker_with(directory, &[]).await
    }

    /// [`CertStack::point_worker_at`] with extra worker settings.
    async fn point_worker_with(&mut self, directory: &str, extra: &[(&str, &str)]) {
        let key = base64_key();
        let mut env: Vec<(String, String)> = vec![
            ("BURROW_WORKER_ACME_DIRECTORY_URL".into(), directory.into()),
            (
                "BURROW_WORKER_ACME_CA_FILE".into(),
                self.pebble.ca_file().display().to_string(),
            ),
            ("BURROW_WORKER_CERT_ENCRYPTION_KEY".into(), key),
            (
                "BURROW_WORKER_ACME_VALIDATION_TIMEOUT_SECS".into(),
                "20".into(),
            ),
            // Compressed for tests: the ARI responder answers Retry-After: 1, and one test
            // renews a domain several times within seconds.
            ("BURROW_WORKER_ACME_ARI_MIN_RECHECK_SECS".into(), "1".into()),
            (
                "BURROW_WORKER_ACME_ISSUED_PER_DOMAIN_WEEK".into(),
                "20".into(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.stack.restart_worker_with(&env).await.unwrap();
    }

    /// Adds and verifies `domain` for a new pro account; returns the account's authtoken.
    async fn verified_domain(&self, domain: &str) -> String {
        let stack = &self.stack;
        let (account, token) = stack.account_with_token(domain).await.unwrap();
        let admin = &stack.creds.admin_api_key;
        let (status, body) = stack
            .call(
                Method::PUT,
                &format!("/v1/accounts/{account}/plan"),
                admin,
                Some(json!({"plan": "pro"})),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, added) = stack
            .call(
                Method::POST,
                &format!("/v1/accounts/{account}/domains"),
                admin,
                Some(json!({ "domain": domain })),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED, "{added}");
        let record = added["txt_record"]["name"].as_str().unwrap();
        let value = added["txt_record"]["value"].as_str().unwrap();
        self.dns.set_txt(record, &[value]).await.unwrap();
        let (status, verified) = stack
            .call(
                Method::POST,
                &format!("/v1/accounts/{account}/domains/{domain}/verify"),
                admin,
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{verified}");
        token
    }

    /// Records `domain`'s run as replay fixture `name` (when recording is on).
    async fn record_history(&self, domain: &str, name: &str) {
        self.stack
            .record_history::<CertificateWorkflow>(&burrow_e2e_cert_id(domain), name)
            .await
            .unwrap();
    }

    async fn wait_state(&self, domain: &str, state: &str) -> Value {
        let id = burrow_workflows::certificate::workflow_id(domain);
        self.stack
            .wait_workflow(&id, &format!("{id} to reach {state}"), |r| {
                r["state"] == state
            })
            .await
            .unwrap()
    }

    /// Versions stored for `domain`, newest first: (version, chain PEM).
    async fn versions(&self, domain: &str) -> Vec<(i64, String)> {
        let db = self.stack.db().await.unwrap();
        sqlx::query_as(
            "SELECT version, chain_pem FROM certificates WHERE domain = $1 ORDER BY version DESC",
        )
        .bind(domain)
        .fetch_all(&db)
        .await
        .unwrap()
    }

    /// The leaf the relay presents for `domain`, verified against Pebble's current root.
    async fn served_leaf(&self, domain: &str) -> anyhow::Result<Vec<u8>> {
        let root = self.pebble.issuing_roots_pem().await?;
        let https = self.stack.relay.https.clone().unwrap_or_default();
        let conn = tls::connect(&https, domain, root.as_bytes(), &[b"http/1.1"]).await?;
        let leaf = conn
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| anyhow::anyhow!("no peer certificate"))?;
        Ok(leaf)
    }

    async fn callback(&self, body: &Value) -> (StatusCode, Value) {
        let raw = serde_json::to_vec(body).unwrap();
        let t = chrono::Utc::now().timestamp();
        let mut mac = Hmac::<Sha256>::new_from_slice(CALLBACK_SECRET.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(&raw);
        let sig = hex::encode(mac.finalize().into_bytes());
        let resp = self
            .stack
            .http
            .post(format!("{}/v1/cert-callbacks", self.stack.api_url))
            .header("content-type", "application/json")
            .header("burrow-signature", format!("t={t},v1={sig}"))
            .body(raw)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

fn base64_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(rand_bytes())
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    b[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    b
}

fn leaf_der(chain_pem: &str) -> Vec<u8> {
    CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

fn unique(label: &str, zone: &str) -> String {
    format!(
        "{label}-{}.{zone}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A local HTTP service answering "hello from the laptop".
async fn hello_server() -> u16 {
    use axum::{Router, routing::get};
    let app = Router::new().route("/", get(|| async { "hello from the laptop" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test]
async fn a_verified_domain_gets_a_certificate_the_relay_serves_and_renews_by_itself() {
    let zone = "certs-e2e.test";
    let mut cs = cert_stack(zone).await;
    let ari = AriResponder::start(&cs.pebble.directory_url(), cs.pebble.test_ca())
        .await
        .unwrap();
    cs.point_worker_at(&ari.directory_url()).await;
    let domain = unique("app", zone);
    let token = cs.verified_domain(&domain).await;

    // Verification starts the workflow; it orders, validates over HTTP-01 on the relay,
    // finalizes, stores and pushes the certificate to the relay.
    cs.wait_state(&domain, "serving").await;
    let versions = cs.versions(&domain).await;
    assert_eq!(versions.len(), 1, "{versions:?}");
    let db = cs.stack.db().await.unwrap();
    let sealed: Vec<u8> =
        sqlx::query_scalar("SELECT key_encrypted FROM certificates WHERE domain = $1")
            .bind(&domain)
            .fetch_one(&db)
            .await
            .unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed).contains("PRIVATE KEY"),
        "the key is stored sealed"
    );

    // The relay serves it: a client trusting only Pebble's root completes the handshake and
    // reaches the agent bound to the domain.
    assert_eq!(
        cs.served_leaf(&domain).await.unwrap(),
        leaf_der(&versions[0].1)
    );
    let port = hello_server().await.to_string();
    let mut agent = cs
        .stack
        .agent_with(&["http", &port, "--domain", &domain], &token)
        .unwrap();
    agent.wait_line("Forwarding", T).await.unwrap();
    let root = cs.pebble.issuing_roots_pem().await.unwrap();
    let https = cs.stack.relay.https.clone().unwrap();
    let conn = tls::connect(&https, &domain, root.as_bytes(), &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    let answer = tls::get(conn, &domain, "/").await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, "hello from the laptop");

    // The certificate and its key reached the relay over TLS: RelayControl speaks only TLS
    // (with the certificate the api and worker trust), and the api lists the agent's session
    // through it.
    let control = cs.stack.relay.control.clone();
    let plain = reqwest::Client::new()
        .get(format!("http://{control}/"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    tls::connect(
        &control,
        "127.0.0.1",
        cs.control.ca_pem.as_bytes(),
        &[b"h2"],
    )
    .await
    .unwrap();
    let (status, sessions) = cs.stack.ops_sessions().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{sessions}");
    let listed = sessions["relays"].to_string();
    assert!(
        listed.contains(&domain) && !listed.contains("\"error\""),
        "{sessions}"
    );

    // The workflow asked the CA's ARI endpoint about the certificate.
    let first_ari =
        burrow_e2e::wait::until("the workflow to ask for the ARI window", T, || async {
            ari.requested().first().cloned()
        })
        .await
        .unwrap();

    // The CA moves the renewal window to now: the certificate renews by itself (no restart,
    // no signal), and the relay serves the new one.
    let now = chrono::Utc::now();
    ari.set_window(
        now - chrono::Duration::minutes(1),
        now + chrono::Duration::seconds(2),
    );
    let renewed = burrow_e2e::wait::until("the ARI renewal to be stored", T, || async {
        let v = cs.versions(&domain).await;
        (v.len() >= 2).then_some(v)
    })
    .await
    .unwrap();
    let far = chrono::Utc::now() + chrono::Duration::days(3650);
    ari.set_window(far, far + chrono::Duration::days(1));
    let renewed_by: Option<i64> = sqlx::query_scalar(
        "SELECT renewed_version FROM certificates WHERE domain = $1 AND version = 2",
    )
    .bind(&domain)
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(renewed_by, Some(1));
    // Pebble ignores `replaces`, so the renewal left a stray order at the CA: it is counted in
    // the order budget all the same.
    let strays: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM acme_orders WHERE domain = $1 AND detail LIKE 'stray order%'",
    )
    .bind(&domain)
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(strays >= 1, "{strays}");
    let newest = cs.versions(&domain).await;
    burrow_e2e::wait::until("the relay to serve the renewed certificate", T, || async {
        let served = cs.served_leaf(&domain).await.ok()?;
        let latest = cs.versions(&domain).await;
        (served == leaf_der(&latest[0].1) && served != leaf_der(&versions[0].1)).then_some(())
    })
    .await
    .unwrap();
    assert!(renewed.len() >= 2 && newest.len() >= 2);
    assert!(
        ari.requested().contains(&first_ari),
        "ARI was asked about v1"
    );

    // A signed callback maps to an event that renews on demand; an unknown pair is refused
    // with the pair named, and kept; a duplicate changes nothing.
    let before = cs.versions(&domain).await.len();
    let event = json!({
        "id": format!("cb-{}", uuid::Uuid::new_v4()),
        "callbackClass": "certificate",
        "callbackAction": "renew",
        "domain": domain,
    });
    let (status, body) = cs.callback(&event).await;
    assert!(status.is_success(), "{status} {body}");
    burrow_e2e::wait::until("the callback-requested renewal", T, || async {
        (cs.versions(&domain).await.len() > before).then_some(())
    })
    .await
    .unwrap();
    let (status, body) = cs.callback(&event).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicate"], true, "{body}");
    let (status, body) = cs
        .callback(&json!({
            "id": format!("cb-{}", uuid::Uuid::new_v4()),
            "callbackClass": "certificate",
            "callbackAction": "teleported",
            "domain": domain,
        }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("certificate") && text.contains("teleported"),
        "{text}"
    );
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM cert_callbacks WHERE callback_action = 'teleported' AND status = 'unmapped'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(kept, 1);

    // Every relay region reports the latest version (the replication snapshot).
    let latest = cs.versions(&domain).await[0].0;
    burrow_e2e::wait::until("a region snapshot with the latest version", T, || async {
        let v: Value = sqlx::query_scalar(
            "SELECT certificates FROM region_snapshots ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&db)
        .await
        .ok()??;
        (v[&domain] == latest).then_some(())
    })
    .await
    .unwrap();
    cs.record_history(&domain, "certificate_issue_serve_ari_renew_callback")
        .await;
}

#[tokio::test]
async fn a_ca_outage_parks_the_workflow_with_an_incident_and_a_replay_completes_it() {
    let zone = "outage-e2e.test";
    let mut cs = cert_stack(zone).await;
    let directory = cs.pebble.directory_url();
    cs.point_worker_at(&directory).await;
    cs.pebble.stop().await;
    let domain = unique("shop", zone);
    cs.verified_domain(&domain).await;
    let id = burrow_e2e_cert_id(&domain);

    // Two compressed retries, then parked in a named state with an open incident.
    let run = cs.wait_state(&domain, "ca_unreachable").await;
    assert!(
        run["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("ca_unreachable"),
        "{run}"
    );
    // The state is also what Temporal answers: the `status` query, and the `BurrowCertState`
    // search attribute in visibility.
    let client = burrow_workflows::temporal::connect(cs.stack.temporal().0, "default", "e2e")
        .await
        .unwrap();
    let status = client
        .get_workflow_handle::<CertificateWorkflow>(id.clone())
        .query(CertificateWorkflow::status, (), Default::default())
        .await
        .unwrap();
    assert_eq!(status.state, "ca_unreachable", "{status:?}");
    assert!(
        status.version.is_none() && status.attempts == 3,
        "{status:?}"
    );
    let visible = format!("BurrowCertState = 'ca_unreachable' AND WorkflowId = '{id}'");
    burrow_e2e::wait::until("visibility to index the state", T, || async {
        let n = client
            .count_workflows(visible.as_str(), Default::default())
            .await
            .ok()?;
        (n.count() == 1).then_some(())
    })
    .await
    .unwrap();

    let ops = cs.stack.creds.ops_api_key.clone();
    let incident = burrow_e2e::wait::until("an open incident", T, || async {
        let (_, list) = cs
            .stack
            .call(Method::GET, "/v1/incidents?status=open", &ops, None)
            .await
            .ok()?;
        list.as_array()
            .or_else(|| list["incidents"].as_array())?
            .iter()
            .find(|i| i["workflow_id"] == id.as_str())
            .cloned()
    })
    .await
    .unwrap();
    assert_eq!(incident["failure_state"], "ca_unreachable", "{incident}");
    assert_eq!(
        incident["tier"], "sev2",
        "no certificate served yet: {incident}"
    );
    let incident_id = incident["id"].as_str().unwrap().to_owned();
    let (status, acked) = cs
        .stack
        .call(
            Method::POST,
            &format!("/v1/incidents/{incident_id}/acknowledge"),
            &ops,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{acked}");
    let metrics = cs.stack.worker_metrics().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("burrow_workflow_failure_states_total")
                && l.contains("state=\"ca_unreachable\"")),
        "{metrics}"
    );

    // The CA comes back; ops replay; the workflow completes and resolves the incident.
    cs.pebble.restart().await.unwrap();
    let status = cs.stack.replay(&id, &ops).await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED);
    let run = cs.wait_state(&domain, "serving").await;
    assert!(run["last_error"].is_null(), "healthy again: {run}");
    assert_eq!(run["replays"], 1, "{run}");
    let versions = cs.versions(&domain).await;
    assert_eq!(
        cs.served_leaf(&domain).await.unwrap(),
        leaf_der(&versions[0].1)
    );
    let (resolved, timeline) = cs.stack.wait_incident_resolved(&incident_id).await.unwrap();
    assert_eq!(
        timeline,
        ["opened", "acknowledged", "auto_resolved"],
        "{resolved}"
    );
    cs.record_history(&domain, "certificate_ca_outage_parked_then_replayed")
        .await;
}

fn burrow_e2e_cert_id(domain: &str) -> String {
    burrow_workflows::certificate::workflow_id(domain)
}

/// The region named `region` in `GET /v1/ops/regions`, if a snapshot of it exists.
async fn region(cs: &CertStack, region: &str) -> Option<Value> {
    let (status, list) = cs
        .stack
        .call(
            Method::GET,
            "/v1/ops/regions",
            &cs.stack.creds.ops_api_key,
            None,
        )
        .await
        .ok()?;
    if status != StatusCode::OK {
        return None;
    }
    list["regions"]
        .as_array()?
        .iter()
        .find(|r| r["region"] == region)
        .cloned()
}

#[tokio::test]
async fn a_relay_region_that_missed_a_certificate_drifts_until_replication_converges_it() {
    let zone = "regions-e2e.test";
    let mut cs = cert_stack(zone).await;
    let directory = cs.pebble.directory_url();
    cs.point_worker_at(&directory).await;
    let eu_env = [("BURROW_RELAY_REGION".to_owned(), "eu-west".to_owned())];
    let mut eu = cs
        .stack
        .spawn_extra_relay_with("eu", &eu_env)
        .await
        .unwrap();
    // The eu relay goes down; its announcement stays in Redis (30 s TTL), so distribution
    // tries it and fails.
    eu.proc.kill().await;
    let domain = unique("multi", zone);
    cs.verified_domain(&domain).await;

    // The local relay took the certificate, eu-west did not: after the compressed retries the
    // run parks in distribution_partial, naming the relay and its region.
    let run = cs.wait_state(&domain, "distribution_partial").await;
    let error = run["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("relay-eu (eu-west)"), "{run}");
    assert_eq!(
        cs.served_leaf(&domain).await.unwrap(),
        leaf_der(&cs.versions(&domain).await[0].1),
        "the reachable relay serves it meanwhile"
    );

    // Drift is visible per region: eu-west lags on this domain, local does not.
    let drifts = |r: &Value| {
        r["drift"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d == domain.as_str()))
    };
    let (eu_region, local) = burrow_e2e::wait::until("eu-west to show drift", T, || async {
        let eu = region(&cs, "eu-west").await?;
        let local = region(&cs, "local").await?;
        drifts(&eu).then_some((eu, local))
    })
    .await
    .unwrap();
    assert_eq!(eu_region["drifted"], true, "{eu_region}");
    assert_eq!(local["certificates"][&domain], 1, "{local}");
    assert!(!drifts(&local), "{local}");

    // eu comes back on the same ports with nothing installed: the replication workflow pushes
    // the certificate, the drift clears, and eu serves it.
    cs.stack
        .restart_extra_relay("eu", &mut eu, &eu_env)
        .await
        .unwrap();
    burrow_e2e::wait::until("eu-west to converge", T, || async {
        let r = region(&cs, "eu-west").await?;
        (r["certificates"][&domain] == 1 && r["drifted"] == false).then_some(())
    })
    .await
    .unwrap();
    let root = cs.pebble.issuing_roots_pem().await.unwrap();
    let eu_https = eu.addrs.https.clone().unwrap();
    let conn = tls::connect(&eu_https, &domain, root.as_bytes(), &[b"http/1.1"])
        .await
        .unwrap();
    let served = conn.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec();
    assert_eq!(served, leaf_der(&cs.versions(&domain).await[0].1));

    // Replaying the parked run now reaches every relay and resolves its incident.
    let id = burrow_e2e_cert_id(&domain);
    let ops = cs.stack.creds.ops_api_key.clone();
    assert_eq!(
        cs.stack.replay(&id, &ops).await.unwrap(),
        StatusCode::ACCEPTED
    );
    cs.wait_state(&domain, "serving").await;
    // The run mirrors `serving` first and resolves its incident in the next activity, so the
    // incident is awaited rather than read once.
    let db = cs.stack.db().await.unwrap();
    let statuses = burrow_e2e::wait::until("the incident to resolve", T, || async {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT failure_state, status FROM incidents WHERE workflow_id = $1")
                .bind(&id)
                .fetch_all(&db)
                .await
                .ok()?;
        (!rows.is_empty() && rows.iter().all(|(_, status)| status == "resolved")).then_some(rows)
    })
    .await
    .unwrap();
    assert_eq!(
        statuses,
        [("distribution_partial".to_owned(), "resolved".to_owned())]
    );
    cs.record_history(&domain, "certificate_distribution_partial_then_replayed")
        .await;
}

#[tokio::test]
async fn tls_alpn_01_is_answered_at_the_relays_https_listener() {
    let zone = "alpn-e2e.test";
    let mut cs = cert_stack(zone).await;
    let directory = cs.pebble.directory_url();
    cs.point_worker_with(
        &directory,
        &[("BURROW_WORKER_ACME_CHALLENGE", "tls-alpn-01")],
    )
    .await;
    let domain = unique("tls", zone);
    cs.verified_domain(&domain).await;
    cs.wait_state(&domain, "serving").await;
    let versions = cs.versions(&domain).await;
    assert_eq!(
        cs.served_leaf(&domain).await.unwrap(),
        leaf_der(&versions[0].1)
    );
    // The relay answered the CA over TLS-ALPN-01 at its HTTPS listener, never over HTTP-01.
    let metrics = cs
        .stack
        .http
        .get(format!("http://{}/metrics", cs.stack.relay.ops))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answered = |kind: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("burrow_relay_acme_challenges_total")
                    && l.contains(&format!("type=\"{kind}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(answered("tls-alpn-01") >= 1.0, "{metrics}");
    assert_eq!(answered("http-01"), 0.0, "{metrics}");

    // Pebble offers no ARI: the run plans its renewal at 2/3 of the certificate's lifetime,
    // moved earlier by at most 12 hours of jitter.
    let client = burrow_workflows::temporal::connect(cs.stack.temporal().0, "default", "e2e")
        .await
        .unwrap();
    let id = burrow_e2e_cert_id(&domain);
    let status = burrow_e2e::wait::until("the renewal plan", T, || async {
        let s = client
            .get_workflow_handle::<CertificateWorkflow>(id.clone())
            .query(CertificateWorkflow::status, (), Default::default())
            .await
            .ok()?;
        s.renew_at_ms.is_some().then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(
        status.plan_source.as_deref(),
        Some("lifetime"),
        "{status:?}"
    );
    let db = cs.stack.db().await.unwrap();
    let (not_before, not_after): (i64, i64) = sqlx::query_as(
        "SELECT extract(epoch FROM not_before)::bigint, extract(epoch FROM not_after)::bigint
         FROM certificates WHERE domain = $1",
    )
    .bind(&domain)
    .fetch_one(&db)
    .await
    .unwrap();
    let two_thirds_ms = not_before * 1000 + (not_after - not_before) * 1000 * 2 / 3;
    let renew_at = status.renew_at_ms.unwrap();
    assert!(
        renew_at <= two_thirds_ms && renew_at >= two_thirds_ms - 12 * 3600 * 1000,
        "renew at {renew_at}, 2/3 of the lifetime at {two_thirds_ms}"
    );
}

#[tokio::test]
async fn the_global_order_budget_parks_orders_beyond_it_as_rate_limited() {
    let zone = "budget-e2e.test";
    let mut cs = cert_stack(zone).await;
    let directory = cs.pebble.directory_url();
    cs.point_worker_with(&directory, &[("BURROW_WORKER_ACME_ORDER_BUDGET", "1")])
        .await;
    let first = unique("one", zone);
    cs.verified_domain(&first).await;
    cs.wait_state(&first, "serving").await;

    // The second domain would be the second order in 3 hours: Burrow refuses to place it
    // (the CA never sees it), retries on the schedule, then parks with the budget named.
    let second = unique("two", zone);
    cs.verified_domain(&second).await;
    let run = cs.wait_state(&second, "rate_limited").await;
    let error = run["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("order budget spent") && error.contains("acme_order_budget"),
        "{run}"
    );
    let db = cs.stack.db().await.unwrap();
    let orders: Vec<String> = sqlx::query_scalar("SELECT domain FROM acme_orders ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(orders, [first], "no order was placed for {second}");
    assert!(cs.versions(&second).await.is_empty());
}

#[tokio::test]
async fn a_rotated_encryption_key_reseals_stored_keys_so_the_old_key_can_go() {
    use burrow_activities::seal::{self, KeySealer};
    let zone = "rotate-e2e.test";
    let mut cs = cert_stack(zone).await;
    let directory = cs.pebble.directory_url();
    let old = base64_key();
    cs.point_worker_with(&directory, &[("BURROW_WORKER_CERT_ENCRYPTION_KEY", &old)])
        .await;
    let domain = unique("rot", zone);
    cs.verified_domain(&domain).await;
    cs.wait_state(&domain, "serving").await;
    let db = cs.stack.db().await.unwrap();
    let stored = || async {
        let key: Vec<u8> = sqlx::query_scalar(
            "SELECT key_encrypted FROM certificates WHERE domain = $1 AND version = 1",
        )
        .bind(&domain)
        .fetch_one(&db)
        .await
        .unwrap();
        let account: Vec<u8> =
            sqlx::query_scalar("SELECT credentials FROM acme_accounts WHERE directory_url = $1")
                .bind(&directory)
                .fetch_one(&db)
                .await
                .unwrap();
        (key, account)
    };
    let (key_aad, account_aad) = (
        seal::cert_key_aad(&domain, 1),
        seal::account_aad(&directory),
    );
    let old_sealer = KeySealer::from_base64(&old).unwrap();
    let (key, account) = stored().await;
    old_sealer.open(&key, &key_aad).unwrap();
    old_sealer.open(&account, &account_aad).unwrap();

    // Rotation: the new key is current, the old one previous. A replication pass re-seals the
    // certificate key and the ACME account under the new key.
    let new = base64_key();
    cs.point_worker_with(
        &directory,
        &[
            ("BURROW_WORKER_CERT_ENCRYPTION_KEY", &new),
            ("BURROW_WORKER_CERT_ENCRYPTION_PREVIOUS_KEYS", &old),
        ],
    )
    .await;
    let new_sealer = KeySealer::from_base64(&new).unwrap();
    burrow_e2e::wait::until("the stored secrets to be re-sealed", T, || async {
        let (key, account) = stored().await;
        (new_sealer.open(&key, &key_aad).is_ok() && new_sealer.open(&account, &account_aad).is_ok())
            .then_some(())
    })
    .await
    .unwrap();
    let (key, account) = stored().await;
    assert!(
        old_sealer.open(&key, &key_aad).is_err(),
        "the old key no longer opens it"
    );
    assert!(old_sealer.open(&account, &account_aad).is_err());
    let metrics = cs.stack.worker_metrics().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("burrow_cert_resealed_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // The operator's signal that the old key can go: a pass finds nothing under it.
    burrow_e2e::wait::until("a pass to find nothing under the old key", T, || async {
        let metrics = cs.stack.worker_metrics().await.ok()?;
        metrics
            .lines()
            .any(|l| l == "burrow_cert_sealed_under_previous_keys 0")
            .then_some(())
    })
    .await
    .unwrap();

    // The old key goes. The worker still opens the stored key (replication installs v1 on a
    // relay that joins now) and the account (a renewal orders v2 with it).
    cs.point_worker_with(&directory, &[("BURROW_WORKER_CERT_ENCRYPTION_KEY", &new)])
        .await;
    let late = cs.stack.spawn_extra_relay("late").await.unwrap();
    let root = cs.pebble.issuing_roots_pem().await.unwrap();
    let late_https = late.addrs.https.clone().unwrap();
    let v1 = leaf_der(&cs.versions(&domain).await[0].1);
    burrow_e2e::wait::until("the late relay to serve v1", T, || async {
        let conn = tls::connect(&late_https, &domain, root.as_bytes(), &[b"http/1.1"])
            .await
            .ok()?;
        let served = conn.get_ref().1.peer_certificates()?[0].as_ref().to_vec();
        (served == v1).then_some(())
    })
    .await
    .unwrap();
    let (status, body) = cs
        .stack
        .call(
            Method::POST,
            &format!("/v1/certificates/{domain}/renew"),
            &cs.stack.creds.ops_api_key,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let asked = std::time::Instant::now();
    burrow_e2e::wait::until("v2 to be issued under the new key", T, || async {
        (cs.versions(&domain).await.len() == 2).then_some(())
    })
    .await
    .unwrap();
    eprintln!("v2 stored {:?} after the renew request", asked.elapsed());
    cs.wait_state(&domain, "serving").await;
}

#[tokio::test]
async fn a_ca_requiring_external_account_binding_issues_once_the_worker_has_the_key() {
    use base64::Engine as _;
    let zone = "eab-e2e.test";
    let mut cs = cert_stack(zone).await;
    // A CA that requires EAB (as ZeroSSL or Google Trust Services do), with the key it would
    // hand out; the worker does not have it yet.
    let kid = "kid-burrow-e2e";
    let hmac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand_bytes());
    cs.pebble.require_eab(kid, &hmac).await.unwrap();
    let directory = cs.pebble.directory_url();
    cs.point_worker_at(&directory).await;
    let domain = unique("eab", zone);
    cs.verified_domain(&domain).await;
    let run = cs.wait_state(&domain, "issuance_failed").await;
    let error = run["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("externalAccountRequired")
            && error.contains("set the worker's `acme_eab_kid` and `acme_eab_hmac_key`"),
        "{run}"
    );
    assert!(cs.versions(&domain).await.is_empty());

    // With the key the account registers bound to it; a replay completes the run.
    cs.point_worker_with(
        &directory,
        &[
            ("BURROW_WORKER_ACME_EAB_KID", kid),
            ("BURROW_WORKER_ACME_EAB_HMAC_KEY", &hmac),
        ],
    )
    .await;
    let id = burrow_e2e_cert_id(&domain);
    let ops = cs.stack.creds.ops_api_key.clone();
    assert_eq!(
        cs.stack.replay(&id, &ops).await.unwrap(),
        StatusCode::ACCEPTED
    );
    cs.wait_state(&domain, "serving").await;
    let versions = cs.versions(&domain).await;
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(
        cs.served_leaf(&domain).await.unwrap(),
        leaf_der(&versions[0].1)
    );
}

#[tokio::test]
async fn removing_a_domain_ends_its_run_drops_it_from_relays_and_revokes_its_certificate() {
    let zone = "remove-e2e.test";
    let mut cs = cert_stack(zone).await;
    let directory = cs.pebble.directory_url();
    cs.point_worker_at(&directory).await;
    let domain = unique("gone", zone);
    // A second domain whose certificate the stored row says another CA issued (the worker
    // has since moved to this one): its account there cannot revoke it, so it is left alone.
    let elsewhere = unique("elsewhere", zone);
    for d in [&domain, &elsewhere] {
        cs.verified_domain(d).await;
        cs.wait_state(d, "serving").await;
    }
    let db = cs.stack.db().await.unwrap();
    sqlx::query(
        "UPDATE certificates SET directory_url = 'https://other-ca.test/dir' WHERE domain = $1",
    )
    .bind(&elsewhere)
    .execute(&db)
    .await
    .unwrap();
    let held = |d: String| {
        let db = db.clone();
        async move {
            let row: (uuid::Uuid, String) = sqlx::query_as(
                "SELECT d.account_id, c.serial FROM custom_domains d JOIN certificates c USING (domain)
                 WHERE domain = $1",
            )
            .bind(&d)
            .fetch_one(&db)
            .await
            .unwrap();
            row
        }
    };
    let (account, serial) = held(domain.clone()).await;
    let (other_account, other_serial) = held(elsewhere.clone()).await;
    for s in [&serial, &other_serial] {
        let status = cs.pebble.cert_status(s).await.unwrap();
        assert_eq!(status["Status"], "Valid", "{status}");
    }

    for (a, d) in [(account, &domain), (other_account, &elsewhere)] {
        let (status, body) = cs
            .stack
            .call(
                Method::DELETE,
                &format!("/v1/accounts/{a}/domains/{d}"),
                &cs.stack.creds.admin_api_key,
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }

    // The run revokes the certificate at the CA and ends in `removed`; replication takes it
    // off the relay, which then answers the name with its own certificate.
    cs.wait_state(&domain, "removed").await;
    cs.wait_state(&elsewhere, "removed").await;
    let status = cs.pebble.cert_status(&serial).await.unwrap();
    assert_eq!(status["Status"], "Revoked", "{status}");
    let status = cs.pebble.cert_status(&other_serial).await.unwrap();
    assert_eq!(
        status["Status"], "Valid",
        "another CA's certificate: {status}"
    );
    let revoked = |d: String| {
        let db = db.clone();
        async move {
            let at: Option<chrono::DateTime<chrono::Utc>> =
                sqlx::query_scalar("SELECT revoked_at FROM certificates WHERE domain = $1")
                    .bind(&d)
                    .fetch_one(&db)
                    .await
                    .unwrap();
            at
        }
    };
    assert!(revoked(domain.clone()).await.is_some());
    assert!(revoked(elsewhere.clone()).await.is_none());
    burrow_e2e::wait::until("the relay to stop serving the certificate", T, || async {
        cs.served_leaf(&domain).await.is_err().then_some(())
    })
    .await
    .unwrap();
    cs.record_history(&domain, "certificate_removed_and_revoked")
        .await;
}
