//! [`Stack`]: one running Burrow platform (api, relay, worker) for a test, and [`Agent`]s.

use crate::{
    agent::Agent,
    procs::{Proc, bin},
    stores::{self, TestDb},
    wait,
};
use serde::Deserialize;
use std::{path::PathBuf, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    sync::mpsc,
};

/// Knobs of a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Extra `BURROW_RELAY_*` settings for the relay.
    pub relay_env: Vec<(String, String)>,
    /// Extra `BURROW_API_*` settings for the api (e.g. `BURROW_API_DNS_RESOLVER`).
    pub api_env: Vec<(String, String)>,
    /// Extra `BURROW_WORKER_*` settings for the worker (e.g. its ACME directory).
    pub worker_env: Vec<(String, String)>,
    /// Attempts before a provider event parks (kept small so tests reach the DLQ fast).
    pub apply_maximum_attempts: u32,
    /// OTLP endpoint for api and worker traces; empty disables.
    pub otlp_endpoint: String,
    /// Temporal address to use instead of the suite's; when set, the stack does not wait for
    /// Temporal (the test may start it later).
    pub temporal_address: Option<String>,
    /// Redis for the api, the relays and the worker instead of the suite's shared one (e.g. a private
    /// [`crate::private_redis::PrivateRedis`] the test stops and restarts).
    pub redis_url: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            relay_env: Vec::new(),
            api_env: Vec::new(),
            worker_env: Vec::new(),
            apply_maximum_attempts: 3,
            otlp_endpoint: String::new(),
            temporal_address: None,
            redis_url: None,
        }
    }
}

/// Addresses the relay reports in its addr file.
#[derive(Debug, Clone, Deserialize)]
pub struct RelayAddrs {
    /// Agent listener.
    pub agent: String,
    /// HTTP ingress.
    pub http: String,
    /// TLS ingress (HTTPS and passthrough).
    pub https: Option<String>,
    /// RelayControl.
    pub control: String,
    /// Health/metrics.
    pub ops: String,
    /// Relay-to-relay link.
    #[serde(default)]
    pub peer: Option<String>,
    /// Dev CA.
    pub ca_file: Option<String>,
}

/// A relay started with [`Stack::spawn_extra_relay`].
pub struct ExtraRelay {
    /// Its process.
    pub proc: Proc,
    /// Its addresses.
    pub addrs: RelayAddrs,
}

/// What every relay of a stack shares, and the `tag` naming one relay's files.
struct RelaySettings<'a> {
    tag: &'a str,
    /// Address the relay's listeners bind, except the agent listener (always 127.0.0.1: the
    /// dev certificate names only that address).
    host: &'a str,
    redis_url: &'a str,
    api_url: &'a str,
    feed_url: &'a str,
    internal_key: &'a str,
    redis_prefix: &'a str,
    domain: &'a str,
}

/// What the worker is started with.
struct WorkerSettings<'a> {
    temporal: &'a str,
    task_queue: &'a str,
    db_url: &'a str,
    redis_url: &'a str,
    redis_prefix: &'a str,
    internal_key: &'a str,
    otlp_endpoint: &'a str,
}

/// Seeded credentials.
#[derive(Debug, Clone, Deserialize)]
pub struct Credentials {
    /// Dev account id.
    pub account_id: String,
    /// Dev authtoken.
    pub authtoken: String,
    /// Developer key of the dev account.
    pub developer_api_key: String,
    /// Ops key.
    pub ops_api_key: String,
    /// Admin key.
    pub admin_api_key: String,
}

/// A running platform.
pub struct Stack {
    /// Its database.
    pub db: TestDb,
    /// `http://127.0.0.1:port` of the api.
    pub api_url: String,
    /// `http://127.0.0.1:port` of the api's gRPC server (`RelayFeed`, reflection).
    pub api_grpc_url: String,
    /// Relay addresses.
    pub relay: RelayAddrs,
    /// Seeded credentials.
    pub creds: Credentials,
    /// Webhook signing secret.
    pub webhook_secret: String,
    /// Base domain of endpoints.
    pub domain: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The api process.
    pub api: Proc,
    /// The relay process.
    pub relay_proc: Proc,
    /// The worker process.
    pub worker: Proc,
    /// `127.0.0.1:port` of the worker's ops listener (`/healthz`, `/readyz`, `/metrics`).
    pub worker_ops: String,
    internal_key: String,
    redis_prefix: String,
    redis_url: String,
    task_queue: String,
    temporal: String,
    options: StackOptions,
    /// Scratch directory (logs, addr files, relay state). Declared last: fields drop in
    /// order, and the processes above print their logs from here when a test fails.
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Starts a stack with default options.
    pub async fn start() -> anyhow::Result<Stack> {
        Self::start_with(StackOptions::default()).await
    }

    /// Starts api (and seeds it), relay and worker, each waited on until ready.
    pub async fn start_with(options: StackOptions) -> anyhow::Result<Stack> {
        let dir = tempfile::tempdir()?;
        let db = TestDb::create().await?;
        let temporal = match &options.temporal_address {
            Some(a) => a.clone(),
            None => stores::temporal_address().await?,
        };
        // The api's /readyz includes Temporal; without it only liveness can be awaited.
        let api_probe = if options.temporal_address.is_some() {
            "healthz"
        } else {
            "readyz"
        };
        let id = uuid::Uuid::new_v4().simple().to_string();
        let internal_key = format!("ik_{id}");
        let webhook_secret = format!("whsec_{id}");
        let redis_prefix = format!("e2e:{id}:");
        let redis_url = options.redis_url.clone().unwrap_or_else(stores::redis_url);
        let task_queue = format!("e2e-{id}");
        let domain = "burrow.localhost".to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;

        let api_addr_file = dir.path().join("api.json");
        let api_cmd = |args: &[&str]| {
            let mut c = Command::new(bin("burrow-api"));
            c.args(args)
                .env("BURROW_API_LISTEN", "127.0.0.1:0")
                .env("BURROW_API_GRPC_LISTEN", "127.0.0.1:0")
                .env("BURROW_API_BASE_DOMAIN", &domain)
                .env("BURROW_API_ADDR_FILE", &api_addr_file)
                .env("BURROW_API_DATABASE_URL", &db.url)
                .env("BURROW_API_REDIS_URL", &redis_url)
                .env("BURROW_API_REDIS_PREFIX", &redis_prefix)
                .env("BURROW_API_TEMPORAL_ADDRESS", &temporal)
                .env("BURROW_API_TASK_QUEUE", &task_queue)
                .env("BURROW_API_INTERNAL_KEY", &internal_key)
                .env("BURROW_API_WEBHOOK_SECRET", &webhook_secret)
                // Tests that sign certificate callbacks override it through `api_env`.
                .env("BURROW_API_CERT_CALLBACK_SECRET", format!("cbsec_{id}"))
                .env("BURROW_API_APPLY_INITIAL_INTERVAL_MS", "100")
                .env("BURROW_API_APPLY_MAXIMUM_INTERVAL_MS", "200")
                .env(
                    "BURROW_API_APPLY_MAXIMUM_ATTEMPTS",
                    options.apply_maximum_attempts.to_string(),
                )
                .env("BURROW_API_RUNBOOKS_DIR", repo_root().join("runbooks"))
                .env("BURROW_API_OTLP_ENDPOINT", &options.otlp_endpoint)
                .envs(options.api_env.iter().map(|(k, v)| (k, v)));
            c
        };
        let api = Proc::spawn("burrow-api", api_cmd(&["serve"]), dir.path())?;
        let (api_url, api_grpc_url) = {
            #[derive(Deserialize)]
            struct A {
                api: String,
                grpc: String,
            }
            let a: A = read_addr_file(&api_addr_file, &api).await?;
            (format!("http://{}", a.api), format!("http://{}", a.grpc))
        };
        wait_ready(&http, &format!("{api_url}/{api_probe}"), &api).await?;

        let creds_file = dir.path().join("creds.json");
        let seeded = api_cmd(&["seed-dev", "--file", &creds_file.display().to_string()])
            .output()
            .await?;
        anyhow::ensure!(
            seeded.status.success(),
            "seed-dev failed: {}",
            String::from_utf8_lossy(&seeded.stderr)
        );
        let creds: Credentials = serde_json::from_str(&std::fs::read_to_string(&creds_file)?)?;

        let (relay_proc, relay) = Self::spawn_relay(
            dir.path(),
            RelaySettings {
                tag: "relay",
                host: "127.0.0.1",
                redis_url: &redis_url,
                api_url: &api_url,
                feed_url: &api_grpc_url,
                internal_key: &internal_key,
                redis_prefix: &redis_prefix,
                domain: &domain,
            },
            None,
            &options.relay_env,
        )
        .await?;
        wait_ready(&http, &format!("http://{}/readyz", relay.ops), &relay_proc).await?;

        let (worker, worker_ops) = Self::spawn_worker(
            dir.path(),
            &http,
            WorkerSettings {
                temporal: &temporal,
                task_queue: &task_queue,
                db_url: &db.url,
                redis_url: &redis_url,
                redis_prefix: &redis_prefix,
                internal_key: &internal_key,
                otlp_endpoint: &options.otlp_endpoint,
            },
            &options.worker_env,
        )
        .await?;

        Ok(Stack {
            dir,
            db,
            api_url,
            api_grpc_url,
            relay,
            creds,
            webhook_secret,
            domain,
            http,
            api,
            relay_proc,
            worker,
            worker_ops,
            internal_key,
            redis_prefix,
            redis_url,
            task_queue,
            temporal,
            options,
        })
    }

    fn relay_settings<'a>(&'a self, tag: &'a str) -> RelaySettings<'a> {
        RelaySettings {
            tag,
            host: "127.0.0.1",
            redis_url: &self.redis_url,
            api_url: &self.api_url,
            feed_url: &self.api_grpc_url,
            internal_key: &self.internal_key,
            redis_prefix: &self.redis_prefix,
            domain: &self.domain,
        }
    }

    async fn spawn_worker(
        dir: &std::path::Path,
        http: &reqwest::Client,
        settings: WorkerSettings<'_>,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<(Proc, String)> {
        let addr_file = dir.join("worker.json");
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = Command::new(bin("burrow-worker"));
        cmd.env("BURROW_WORKER_TEMPORAL_ADDRESS", settings.temporal)
            .env("BURROW_WORKER_TASK_QUEUE", settings.task_queue)
            .env("BURROW_WORKER_DATABASE_URL", settings.db_url)
            // The relays' Redis and key prefix, and the key relays present: what the worker
            // publishes (certificates) reaches the stack's relays.
            .env("BURROW_WORKER_REDIS_URL", settings.redis_url)
            .env("BURROW_WORKER_REDIS_PREFIX", settings.redis_prefix)
            .env("BURROW_WORKER_INTERNAL_KEY", settings.internal_key)
            .env("BURROW_WORKER_OPS_LISTEN", "127.0.0.1:0")
            .env("BURROW_WORKER_ADDR_FILE", &addr_file)
            .env("BURROW_WORKER_OTLP_ENDPOINT", settings.otlp_endpoint)
            .envs(extra_env.iter().map(|(k, v)| (k, v)));
        let worker = Proc::spawn("burrow-worker", cmd, dir)?;
        #[derive(Deserialize)]
        struct W {
            ops: String,
        }
        let w: W = read_addr_file(&addr_file, &worker).await?;
        wait_ready(http, &format!("http://{}/readyz", w.ops), &worker).await?;
        Ok((worker, w.ops))
    }

    /// Stops the worker (SIGTERM, as a deploy would; SIGKILL after 10 s) and starts a new one
    /// with the stack's settings, its [`StackOptions::worker_env`] and then `extra_env` (later
    /// entries win); waits until it is ready. Its log continues in the same file. Used when a
    /// setting is only known after the stack started (e.g. an ACME directory validating against
    /// the relay's ports), or changes (a rotated key). A killed worker would leave workflow
    /// tasks on its sticky queue until Temporal's sticky timeout moves them on.
    pub async fn restart_worker_with(
        &mut self,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<()> {
        self.worker.terminate(Duration::from_secs(10)).await;
        let env: Vec<(String, String)> = self
            .options
            .worker_env
            .iter()
            .chain(extra_env)
            .cloned()
            .collect();
        let (worker, ops) = Self::spawn_worker(
            self.dir.path(),
            &self.http,
            WorkerSettings {
                temporal: &self.temporal,
                task_queue: &self.task_queue,
                db_url: &self.db.url,
                redis_url: &self.redis_url,
                redis_prefix: &self.redis_prefix,
                internal_key: &self.internal_key,
                otlp_endpoint: &self.options.otlp_endpoint,
            },
            &env,
        )
        .await?;
        self.worker = worker;
        self.worker_ops = ops;
        Ok(())
    }

    /// Starts another relay of the platform (same api, Redis, domain and dev CA) on its own
    /// ports; `tag` names its files and its relay id.
    pub async fn spawn_extra_relay(&self, tag: &str) -> anyhow::Result<ExtraRelay> {
        self.spawn_extra_relay_on(tag, "127.0.0.1").await
    }

    /// [`Stack::spawn_extra_relay`] with its public, control, ops and peer listeners on `host`
    /// (another loopback address such as `127.0.0.2`, which Linux routes without setup).
    pub async fn spawn_extra_relay_on(&self, tag: &str, host: &str) -> anyhow::Result<ExtraRelay> {
        self.extra_relay(tag, host, None, &[]).await
    }

    /// [`Stack::spawn_extra_relay`] with extra `BURROW_RELAY_*` settings for this relay only
    /// (e.g. its `BURROW_RELAY_REGION`).
    pub async fn spawn_extra_relay_with(
        &self,
        tag: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<ExtraRelay> {
        self.extra_relay(tag, "127.0.0.1", None, env).await
    }

    /// Starts extra relay `tag` again on the ports (and state directory) it had, with `env`.
    pub async fn restart_extra_relay(
        &self,
        tag: &str,
        relay: &mut ExtraRelay,
        env: &[(String, String)],
    ) -> anyhow::Result<()> {
        relay.proc.kill().await;
        let host = relay
            .addrs
            .http
            .rsplit_once(':')
            .map(|(h, _)| h.to_owned())
            .unwrap_or_else(|| "127.0.0.1".into());
        let addrs = relay.addrs.clone();
        *relay = self.extra_relay(tag, &host, Some(&addrs), env).await?;
        Ok(())
    }

    async fn extra_relay(
        &self,
        tag: &str,
        host: &str,
        same_ports_as: Option<&RelayAddrs>,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<ExtraRelay> {
        // Its own managed certificates: what it serves must not be the first relay's files.
        let own = [
            ("BURROW_RELAY_RELAY_ID".to_owned(), format!("relay-{tag}")),
            (
                "BURROW_RELAY_MANAGED_CERT_DIR".to_owned(),
                self.dir
                    .path()
                    .join(format!("{tag}-managed-certs"))
                    .display()
                    .to_string(),
            ),
        ];
        let env: Vec<(String, String)> = self
            .options
            .relay_env
            .iter()
            .cloned()
            .chain(own)
            .chain(extra_env.iter().cloned())
            .collect();
        let settings = RelaySettings {
            host,
            ..self.relay_settings(tag)
        };
        let (proc, addrs) =
            Self::spawn_relay(self.dir.path(), settings, same_ports_as, &env).await?;
        wait_ready(&self.http, &format!("http://{}/readyz", addrs.ops), &proc).await?;
        Ok(ExtraRelay { proc, addrs })
    }

    async fn spawn_relay(
        dir: &std::path::Path,
        settings: RelaySettings<'_>,
        same_ports_as: Option<&RelayAddrs>,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<(Proc, RelayAddrs)> {
        let RelaySettings {
            tag,
            host,
            redis_url,
            api_url,
            feed_url,
            internal_key,
            redis_prefix,
            domain,
        } = settings;
        let addr_file = dir.join(format!("{tag}.json"));
        let _ = std::fs::remove_file(&addr_file);
        let any = format!("{host}:0");
        let (agent, http, https, control, ops, peer) = match same_ports_as {
            Some(a) => (
                a.agent.clone(),
                a.http.clone(),
                a.https.clone().unwrap_or_else(|| any.clone()),
                a.control.clone(),
                a.ops.clone(),
                a.peer.clone().unwrap_or_else(|| any.clone()),
            ),
            None => (
                "127.0.0.1:0".to_owned(),
                any.clone(),
                any.clone(),
                any.clone(),
                any.clone(),
                any,
            ),
        };
        let mut cmd = Command::new(bin("burrow-relay"));
        cmd.env("BURROW_RELAY_AGENT_LISTEN", agent)
            .env("BURROW_RELAY_HTTP_LISTEN", http)
            .env("BURROW_RELAY_HTTPS_LISTEN", https)
            // Certificate files dropped into the store are served within a second.
            .env("BURROW_RELAY_CERT_RELOAD_SECS", "1")
            .env("BURROW_RELAY_CONTROL_LISTEN", control)
            .env("BURROW_RELAY_OPS_LISTEN", ops)
            .env("BURROW_RELAY_PEER_LISTEN", peer)
            .env("BURROW_RELAY_DOMAIN", domain)
            .env("BURROW_RELAY_API_URL", api_url)
            .env("BURROW_RELAY_INTERNAL_KEY", internal_key)
            .env("BURROW_RELAY_FEED_URL", feed_url)
            // One dev CA and certificate for every relay of the stack, as a platform shares
            // one certificate: an agent trusting it can use any relay.
            .env("BURROW_RELAY_STATE_DIR", dir.join("relay-state"))
            .env("BURROW_RELAY_REDIS_URL", redis_url)
            .env("BURROW_RELAY_REDIS_PREFIX", redis_prefix)
            .env("BURROW_RELAY_ADDR_FILE", &addr_file)
            // Re-check live sessions' tokens every second, so revocation tests are quick.
            .env("BURROW_RELAY_AUTH_CACHE_SECS", "1")
            .envs(extra_env.iter().map(|(k, v)| (k, v)));
        let proc = Proc::spawn(&format!("burrow-{tag}"), cmd, dir)?;
        let addrs: RelayAddrs = read_addr_file(&addr_file, &proc).await?;
        Ok((proc, addrs))
    }

    /// Sends SIGTERM to the relay (graceful shutdown).
    pub fn terminate_relay(&self) -> anyhow::Result<()> {
        let pid = self
            .relay_proc
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("relay already exited"))?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(())
    }

    /// Kills the relay and starts a new one on the same ports.
    pub async fn restart_relay(&mut self) -> anyhow::Result<()> {
        self.relay_proc.kill().await;
        let (proc, addrs) = Self::spawn_relay(
            self.dir.path(),
            self.relay_settings("relay"),
            Some(&self.relay),
            &self.options.relay_env,
        )
        .await?;
        self.relay_proc = proc;
        self.relay = addrs;
        wait_ready(
            &self.http,
            &format!("http://{}/readyz", self.relay.ops),
            &self.relay_proc,
        )
        .await
    }

    /// The relay's certificate store directory (its default, `<state_dir>/certs`).
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.path().join("relay-state").join("certs")
    }

    /// The internal key relays present (to the api's internal routes and `RelayFeed`).
    pub fn internal_key(&self) -> &str {
        &self.internal_key
    }

    /// The Redis the stack's api, relays and worker use, and the prefix of their keys.
    pub fn redis(&self) -> (&str, &str) {
        (&self.redis_url, &self.redis_prefix)
    }

    /// Options the stack was started with.
    pub fn options(&self) -> &StackOptions {
        &self.options
    }

    /// The Temporal address and task queue this stack uses.
    pub fn temporal(&self) -> (&str, &str) {
        (&self.temporal, &self.task_queue)
    }

    /// Starts `burrow http <port> [--name <name>]` with `authtoken`.
    pub fn agent(&self, port: u16, name: Option<&str>, authtoken: &str) -> anyhow::Result<Agent> {
        let port = port.to_string();
        let mut args = vec!["http", port.as_str()];
        if let Some(n) = name {
            args.extend(["--name", n]);
        }
        self.agent_with(&args, authtoken)
    }

    /// Starts `burrow <args...>` with `authtoken` and the stack's relay settings.
    pub fn agent_with(&self, args: &[&str], authtoken: &str) -> anyhow::Result<Agent> {
        self.agent_via(&self.relay.agent, args, authtoken)
    }

    /// [`Stack::agent_with`], reaching the relay at `relay` (e.g. through a test proxy).
    pub fn agent_via(&self, relay: &str, args: &[&str], authtoken: &str) -> anyhow::Result<Agent> {
        let mut cmd = Command::new(bin("burrow"));
        cmd.args(args);
        cmd.env("BURROW_AUTHTOKEN", authtoken)
            .env("BURROW_RELAY", relay)
            .env(
                "BURROW_CA_FILE",
                self.relay.ca_file.clone().unwrap_or_default(),
            )
            .env("HOME", self.dir.path())
            // Tests run many agents at once: each inspector takes a free port.
            .env("BURROW_INSPECT_ADDR", "127.0.0.1:0")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("BURROW_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let (tx, rx) = mpsc::unbounded_channel();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Agent {
            child,
            lines: rx,
            seen: Vec::new(),
        })
    }

    /// Sends a request to the relay's HTTP ingress for `<name>.<domain>`.
    pub fn ingress(
        &self,
        method: reqwest::Method,
        name: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("http://{}{path}", self.relay.http))
            .header("host", format!("{name}.{}", self.domain))
    }

    /// A request to the api with `key` as bearer.
    pub fn api(&self, method: reqwest::Method, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.api_url))
            .bearer_auth(key)
    }

    /// Calls the api with `key`; returns the status and the JSON body (`null` if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        let mut req = self.api(method, path, key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, json))
    }

    /// `GET /v1/ops/sessions` with the ops key: every relay and the sessions it holds.
    pub async fn ops_sessions(&self) -> anyhow::Result<(reqwest::StatusCode, serde_json::Value)> {
        self.call(
            reqwest::Method::GET,
            "/v1/ops/sessions",
            &self.creds.ops_api_key,
            None,
        )
        .await
    }

    /// Waits until incident `id` is resolved (`GET /v1/incidents/{id}` with the ops key);
    /// returns it with the event names of its timeline.
    pub async fn wait_incident_resolved(
        &self,
        id: &str,
    ) -> anyhow::Result<(serde_json::Value, Vec<String>)> {
        let path = format!("/v1/incidents/{id}");
        let incident = crate::wait::until(
            "the incident to be resolved",
            Duration::from_secs(30),
            || async {
                let (_, i) = self
                    .call(reqwest::Method::GET, &path, &self.creds.ops_api_key, None)
                    .await
                    .ok()?;
                (i["status"] == "resolved").then_some(i)
            },
        )
        .await?;
        let events = incident["timeline"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        Ok((incident, events))
    }

    /// Creates an account (admin key) linked to provider customer `customer`.
    pub async fn create_account(
        &self,
        name: &str,
        customer: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/accounts",
                &self.creds.admin_api_key,
                Some(serde_json::json!({"name": name, "provider_customer_id": customer})),
            )
            .await?;
        anyhow::ensure!(
            status == reqwest::StatusCode::CREATED,
            "creating account: {status} {body}"
        );
        Ok(body)
    }

    /// Creates an account named `name` (a fresh provider customer) with one authtoken; returns
    /// the account id and the authtoken's secret.
    pub async fn account_with_token(&self, name: &str) -> anyhow::Result<(String, String)> {
        let customer = format!("cus_{}", uuid::Uuid::new_v4().simple());
        let account = self.create_account(name, &customer).await?;
        let id = account["id"].as_str().unwrap_or_default().to_owned();
        let (_, token) = self.create_authtoken(&id).await?;
        Ok((id, token))
    }

    /// Creates an authtoken for `account_id` (admin key); returns its id and secret.
    pub async fn create_authtoken(&self, account_id: &str) -> anyhow::Result<(String, String)> {
        let path = format!("/v1/accounts/{account_id}/authtokens");
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &path,
                &self.creds.admin_api_key,
                None,
            )
            .await?;
        anyhow::ensure!(
            status == reqwest::StatusCode::CREATED,
            "creating authtoken: {status} {body}"
        );
        Ok((
            body["id"].as_str().unwrap_or_default().to_owned(),
            body["token"].as_str().unwrap_or_default().to_owned(),
        ))
    }

    /// Asks for a replay of parked workflow `workflow_id` with `key`; returns the status.
    pub async fn replay(
        &self,
        workflow_id: &str,
        key: &str,
    ) -> anyhow::Result<reqwest::StatusCode> {
        let path = format!("/v1/ops/dead-letters/{workflow_id}/replay");
        Ok(self.call(reqwest::Method::POST, &path, key, None).await?.0)
    }

    /// Starts an agent and waits until it reports the tunnel online; returns it and that line.
    pub async fn online_agent(
        &self,
        port: u16,
        name: Option<&str>,
        authtoken: &str,
    ) -> anyhow::Result<(Agent, String)> {
        let mut agent = self.agent(port, name, authtoken)?;
        let line = agent
            .wait_line("Forwarding", Duration::from_secs(30))
            .await?;
        Ok((agent, line))
    }

    /// Posts `body` to the webhook endpoint with the given `Stripe-Signature`.
    pub async fn post_webhook(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .post(format!("{}/v1/webhooks/provider", self.api_url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(s) = signature {
            req = req.header("stripe-signature", s);
        }
        Ok(req.send().await?)
    }

    /// Posts an event signed now with the stack's secret.
    pub async fn send_event(&self, event: &serde_json::Value) -> anyhow::Result<reqwest::Response> {
        let body = serde_json::to_vec(event)?;
        let sig = crate::webhook::signature_header(
            &self.webhook_secret,
            chrono::Utc::now().timestamp(),
            &body,
        );
        self.post_webhook(&body, Some(&sig)).await
    }

    /// Waits until workflow `id` (from `/v1/ops/workflows`) satisfies `pred`; returns its JSON.
    pub async fn wait_workflow(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        wait::until(what, Duration::from_secs(60), || async {
            let runs: Vec<serde_json::Value> = self
                .api(
                    reqwest::Method::GET,
                    "/v1/ops/workflows",
                    &self.creds.ops_api_key,
                )
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            runs.into_iter()
                .find(|r| r["workflow_id"] == id)
                .filter(|r| pred(r))
        })
        .await
    }

    /// When `BURROW_RECORD_HISTORY_DIR` is set, saves workflow `workflow_id`'s Temporal history
    /// there as `<name>.json`: the replay fixtures in `workflows/tests/histories/` are recorded
    /// this way from real runs.
    pub async fn record_history<W>(&self, workflow_id: &str, name: &str) -> anyhow::Result<()>
    where
        W: temporalio_common::HasWorkflowDefinition,
    {
        let Ok(dir) = std::env::var("BURROW_RECORD_HISTORY_DIR") else {
            return Ok(());
        };
        let json = self.history_json::<W>(workflow_id).await?;
        std::fs::write(PathBuf::from(dir).join(format!("{name}.json")), json)?;
        Ok(())
    }

    /// Workflow `workflow_id`'s Temporal history, serialized as the SDK's JSON.
    async fn history_json<W>(&self, workflow_id: &str) -> anyhow::Result<Vec<u8>>
    where
        W: temporalio_common::HasWorkflowDefinition,
    {
        let client =
            burrow_workflows::temporal::connect(&self.temporal, "default", "burrow-e2e").await?;
        Ok(client
            .get_workflow_handle::<W>(workflow_id.to_owned())
            .fetch_history(Default::default())
            .to_json()
            .await?)
    }

    /// Workflow `workflow_id`'s Temporal history as JSON (`{"events": [...]}`, the format of
    /// the replay fixtures): event times and activity names, e.g. for a timing breakdown.
    pub async fn workflow_history<W>(&self, workflow_id: &str) -> anyhow::Result<serde_json::Value>
    where
        W: temporalio_common::HasWorkflowDefinition,
    {
        Ok(serde_json::from_slice(
            &self.history_json::<W>(workflow_id).await?,
        )?)
    }

    /// Waits until the provider-webhook workflow of `event_id` is in `state`; returns its JSON.
    pub async fn wait_event_state(
        &self,
        event_id: &str,
        state: &str,
    ) -> anyhow::Result<serde_json::Value> {
        self.wait_workflow(
            &format!("provider-webhook-{event_id}"),
            &format!("event {event_id} to reach {state}"),
            |r| r["state"] == state,
        )
        .await
    }

    /// The worker's Prometheus metrics text.
    pub async fn worker_metrics(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("http://{}/metrics", self.worker_ops))
            .send()
            .await?
            .text()
            .await?)
    }

    /// A direct connection to the stack's database, for assertions.
    pub async fn db(&self) -> anyhow::Result<sqlx::PgPool> {
        Ok(sqlx::PgPool::connect(&self.db.url).await?)
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

async fn read_addr_file<T: for<'de> Deserialize<'de>>(
    path: &std::path::Path,
    proc: &Proc,
) -> anyhow::Result<T> {
    let text = wait::until(
        &format!("{} to write {}", proc.name, path.display()),
        Duration::from_secs(60),
        || async {
            let t = tokio::fs::read_to_string(path).await.ok()?;
            serde_json::from_str::<serde_json::Value>(&t)
                .ok()
                .map(|_| t)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; {} output:\n{}", proc.name, proc.output()))?;
    Ok(serde_json::from_str(&text)?)
}

async fn wait_ready(http: &reqwest::Client, url: &str, proc: &Proc) -> anyhow::Result<()> {
    wait::until(
        &format!("{} at {url}", proc.name),
        Duration::from_secs(60),
        || async {
            let r = http.get(url).send().await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; {} output:\n{}", proc.name, proc.output()))
}
