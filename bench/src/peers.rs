//! Starting the targets: `direct` (no tunnel), `burrow` (a real burrow-api, burrow-relay and
//! `burrow` agents), `rathole` over plain TCP and over Noise, and `bore`. Each target exposes
//! the shared HTTP upstream (for wrk and the latency client) and the shared iperf3 server (for
//! bulk tests) and says which of its processes are the relay and the agents, so the runner can
//! charge CPU and memory to them.

use crate::procs::{self, Proc};
use anyhow::{Context, bail};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};
use tokio::process::Command;

/// Base domain of burrow endpoints in the bench.
pub const DOMAIN: &str = "burrow.localhost";
/// Name of the burrow HTTP endpoint.
pub const HTTP_NAME: &str = "bench";
/// Host header every target gets (burrow routes by it; the others pass it through).
pub fn host_header() -> String {
    format!("{HTTP_NAME}.{DOMAIN}")
}

/// Where the binaries and stores are.
#[derive(Debug, Clone)]
pub struct Env {
    /// Scratch directory: logs, configs, addr files.
    pub dir: PathBuf,
    /// Directory with release `burrow-relay` and `burrow`.
    pub burrow_bin_dir: PathBuf,
    /// The `burrow-api` binary.
    pub api_bin: PathBuf,
    /// Directory with `rathole` and `bore`.
    pub peers_bin_dir: PathBuf,
    /// PostgreSQL database (created for this run) the api uses.
    pub database_url: String,
    /// Redis URL.
    pub redis_url: String,
    /// Repository root (for `runbooks/`).
    pub repo_root: PathBuf,
    /// First of the fixed ports (below 32768) peers and burrow's TCP endpoints use.
    pub port_base: u16,
    /// Local HTTP upstream port.
    pub upstream_port: u16,
    /// Local iperf3 server port.
    pub iperf_port: u16,
}

/// A running target.
pub struct Target {
    /// `direct`, `burrow`, `burrow-policy`, `rathole`, `rathole-noise`, `bore`.
    pub name: &'static str,
    /// `host:port` wrk and the latency client connect to.
    pub http_addr: String,
    /// Port iperf3 connects to.
    pub bulk_port: u16,
    /// Pids counted as the relay (server side).
    pub relay_pids: Vec<u32>,
    /// Pid of the agent serving HTTP.
    pub http_agent: Option<u32>,
    /// Pid of the agent serving the bulk (TCP) endpoint.
    pub tcp_agent: Option<u32>,
    /// Its processes (killed when the target is dropped).
    pub procs: Vec<Proc>,
}

impl Target {
    /// Fails when one of its processes has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            p.check_alive()?;
        }
        Ok(())
    }

    /// Kills its processes.
    pub async fn stop(self) {
        for p in self.procs {
            p.stop().await;
        }
    }
}

/// Fails unless nothing listens on `port` (fixed ports below 32768 may be taken by others).
pub fn ensure_free(port: u16) -> anyhow::Result<()> {
    std::net::TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| format!("port {port} is taken; pass another --port-base"))
}

/// Waits until `GET http://addr/` with `Host: host` answers 200.
pub async fn wait_http_ok(addr: &str, host: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match crate::loadgen::http_status(addr, host).await {
            Ok(200) => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(s) => bail!("GET http://{addr}/ (Host {host}) answers {s}"),
            Err(e) => return Err(e.context(format!("GET http://{addr}/ (Host {host})"))),
        }
    }
}

/// Whether a socket listens on `port` (read from /proc/net/tcp, so nothing connects to it).
pub fn is_listening(port: u16) -> bool {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    listening_in_proc_net_tcp(&text, port)
}

/// Whether the text of `/proc/net/tcp` shows a LISTEN socket on `port`.
pub fn listening_in_proc_net_tcp(text: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    text.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1).is_some_and(|local| local.ends_with(&want)) && f.get(3) == Some(&"0A")
    })
}

async fn wait_listening(port: u16, procs: &mut [Proc], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !is_listening(port) {
        for p in procs.iter_mut() {
            p.check_alive()?;
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on port {port} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The direct target: load tools talk to the upstream and iperf3 themselves.
pub fn direct(env: &Env) -> Target {
    Target {
        name: "direct",
        http_addr: format!("127.0.0.1:{}", env.upstream_port),
        bulk_port: env.iperf_port,
        relay_pids: vec![],
        http_agent: None,
        tcp_agent: None,
        procs: vec![],
    }
}

/// A running burrow-api with the seeded dev credentials.
pub struct Api {
    /// The process.
    pub proc: Proc,
    /// `http://host:port`.
    pub url: String,
    /// Secret relays present.
    pub internal_key: String,
    /// The dev authtoken.
    pub authtoken: String,
}

/// Starts burrow-api against the run's database and seeds the dev account.
pub async fn start_api(env: &Env) -> anyhow::Result<Api> {
    let id = std::process::id();
    let internal_key = format!("ik_bench_{id}_{}", nanos());
    let addr_file = env.dir.join("api.json");
    let creds_file = env.dir.join("creds.json");
    let api_cmd = |args: &[&str]| {
        let mut c = Command::new(&env.api_bin);
        c.args(args)
            .env("BURROW_API_LISTEN", "127.0.0.1:0")
            .env("BURROW_API_GRPC_LISTEN", "127.0.0.1:0")
            .env("BURROW_API_ADDR_FILE", &addr_file)
            .env("BURROW_API_DATABASE_URL", &env.database_url)
            .env("BURROW_API_REDIS_URL", &env.redis_url)
            .env("BURROW_API_REDIS_PREFIX", format!("bench:{id}:"))
            // Temporal is connected lazily and never needed for tunnels.
            .env("BURROW_API_TEMPORAL_ADDRESS", "http://127.0.0.1:9")
            .env("BURROW_API_INTERNAL_KEY", &internal_key)
            .env("BURROW_API_WEBHOOK_SECRET", "whsec_bench")
            .env("BURROW_API_RUNBOOKS_DIR", env.repo_root.join("runbooks"))
            .env("RUST_LOG", "warn");
        c
    };
    let mut proc = Proc::spawn("burrow-api", api_cmd(&["serve"]), &env.dir)?;
    let addrs = procs::read_addr_file(&addr_file, &mut proc, Duration::from_secs(60)).await?;
    let addr = addrs["api"]
        .as_str()
        .context("api addr file has no `api`")?;
    let url = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while crate::loadgen::http_get(addr, "127.0.0.1", "/healthz")
        .await
        .ok()
        != Some(200)
    {
        proc.check_alive()?;
        if Instant::now() >= deadline {
            bail!("burrow-api not healthy\n{}", proc.output_tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seeded = api_cmd(&["seed-dev", "--file", &creds_file.display().to_string()])
        .output()
        .await?;
    if !seeded.status.success() {
        bail!(
            "burrow-api seed-dev failed: {}",
            String::from_utf8_lossy(&seeded.stderr)
        );
    }
    let creds: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&creds_file)?)?;
    let authtoken = creds["authtoken"]
        .as_str()
        .context("seed-dev wrote no authtoken")?
        .to_owned();
    Ok(Api {
        proc,
        url,
        internal_key,
        authtoken,
    })
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A running burrow relay.
pub struct Relay {
    /// The process.
    pub proc: Proc,
    /// Agent listener `host:port`.
    pub agent_addr: String,
    /// HTTP ingress `host:port`.
    pub http_addr: String,
    /// CA file agents trust.
    pub ca_file: String,
}

/// Starts a burrow-relay (logging at warn) verifying tokens through `api`.
pub async fn start_relay(
    env: &Env,
    api: &Api,
    name: &str,
    tcp_ports: &str,
) -> anyhow::Result<Relay> {
    let addr_file = env.dir.join(format!("{name}.json"));
    let mut cmd = Command::new(env.burrow_bin_dir.join("burrow-relay"));
    cmd.env(
        "BURROW_RELAY_RELAY_ID",
        format!("{name}-{}", std::process::id()),
    )
    .env("BURROW_RELAY_AGENT_LISTEN", "127.0.0.1:0")
    .env("BURROW_RELAY_HTTP_LISTEN", "127.0.0.1:0")
    // Every listener on a free port: two burrow targets run side by side, and the machine may
    // run other relays on the defaults.
    .env("BURROW_RELAY_HTTPS_LISTEN", "127.0.0.1:0")
    .env("BURROW_RELAY_PEER_LISTEN", "127.0.0.1:0")
    .env("BURROW_RELAY_CONTROL_LISTEN", "127.0.0.1:0")
    .env("BURROW_RELAY_OPS_LISTEN", "127.0.0.1:0")
    .env("BURROW_RELAY_DOMAIN", DOMAIN)
    .env("BURROW_RELAY_API_URL", &api.url)
    .env("BURROW_RELAY_INTERNAL_KEY", &api.internal_key)
    .env("BURROW_RELAY_STATE_DIR", env.dir.join("relay-state"))
    .env("BURROW_RELAY_REDIS_URL", &env.redis_url)
    .env(
        "BURROW_RELAY_REDIS_PREFIX",
        format!("bench:{}:{name}:", std::process::id()),
    )
    .env("BURROW_RELAY_ADDR_FILE", &addr_file)
    .env("BURROW_RELAY_TCP_PORTS", tcp_ports)
    .env("RUST_LOG", "warn");
    let mut proc = Proc::spawn(name, cmd, &env.dir)?;
    let a = procs::read_addr_file(&addr_file, &mut proc, Duration::from_secs(60)).await?;
    let s = |k: &str| a[k].as_str().map(str::to_owned).context("relay addr file");
    Ok(Relay {
        agent_addr: s("agent")?,
        http_addr: s("http")?,
        ca_file: s("ca_file")?,
        proc,
    })
}

async fn start_agent(
    env: &Env,
    api: &Api,
    relay: &Relay,
    name: &str,
    args: &[&str],
) -> anyhow::Result<(Proc, String)> {
    let mut cmd = Command::new(env.burrow_bin_dir.join("burrow"));
    cmd.args(args)
        .env("BURROW_AUTHTOKEN", &api.authtoken)
        .env("BURROW_RELAY", &relay.agent_addr)
        .env("BURROW_CA_FILE", &relay.ca_file)
        .env("HOME", &env.dir)
        .env_remove("BURROW_CONFIG")
        .env("RUST_LOG", "warn");
    let mut proc = Proc::spawn(name, cmd, &env.dir)?;
    let line = proc
        .wait_line("Forwarding", Duration::from_secs(30))
        .await?;
    Ok((proc, line))
}

/// The public port in a `Forwarding tcp://127.0.0.1:21000 -> localhost:5201` line.
pub fn forwarded_port(line: &str) -> Option<u16> {
    let url = line.split_whitespace().find(|w| w.starts_with("tcp://"))?;
    url.rsplit_once(':')?.1.parse().ok()
}

/// A typical traffic policy: an IP allow list on connect; a rate limit counted in Redis (far
/// above the load, so it never refuses), a header added and one removed on the request; a
/// header added on the response. `burrow-policy` runs the HTTP tests with it, so the cost of
/// evaluating a policy shows next to plain `burrow`.
pub const TYPICAL_POLICY: &str = r#"on_tcp_connect:
  - actions:
      - type: restrict-ips
        config: { allow: ["127.0.0.0/8", "::1/128"] }
on_http_request:
  - actions:
      - type: rate-limit
        config: { name: bench, capacity: 1000000000, window: 1m, key: ip }
      - type: add-headers
        config: { headers: { x-bench: "1" } }
      - type: remove-headers
        config: { headers: [cookie] }
on_http_response:
  - actions:
      - type: add-headers
        config: { headers: { x-served-by: burrow } }
"#;

/// Burrow: a relay (TLS to its agents, Host routing on the ingress), an HTTP agent and a TCP
/// agent.
pub async fn burrow(env: &Env, api: &Api) -> anyhow::Result<Target> {
    burrow_target(env, api, "burrow", env.port_base, None).await
}

/// Burrow with [`TYPICAL_POLICY`] on its HTTP endpoint (sent with the agent's bind).
pub async fn burrow_policy(env: &Env, api: &Api) -> anyhow::Result<Target> {
    let file = env.dir.join("typical-policy.yml");
    std::fs::write(&file, TYPICAL_POLICY)?;
    burrow_target(env, api, "burrow-policy", env.port_base + 60, Some(&file)).await
}

async fn burrow_target(
    env: &Env,
    api: &Api,
    name: &'static str,
    first: u16,
    policy: Option<&std::path::Path>,
) -> anyhow::Result<Target> {
    for p in first..first + 10 {
        ensure_free(p)?;
    }
    let relay = start_relay(
        env,
        api,
        &format!("{name}-relay"),
        &format!("{first}-{}", first + 9),
    )
    .await?;
    let up = env.upstream_port.to_string();
    let mut http_args = vec!["http", &up, "--name", HTTP_NAME];
    let policy = policy.map(|p| p.display().to_string());
    if let Some(p) = &policy {
        http_args.extend(["--traffic-policy-file", p]);
    }
    let (http_agent, _) =
        start_agent(env, api, &relay, &format!("{name}-agent-http"), &http_args).await?;
    let iperf = env.iperf_port.to_string();
    let (tcp_agent, line) = start_agent(
        env,
        api,
        &relay,
        &format!("{name}-agent-tcp"),
        &["tcp", &iperf],
    )
    .await?;
    let bulk_port = forwarded_port(&line).with_context(|| format!("no port in {line:?}"))?;
    wait_http_ok(&relay.http_addr, &host_header(), Duration::from_secs(30)).await?;
    Ok(Target {
        name,
        http_addr: relay.http_addr.clone(),
        bulk_port,
        relay_pids: vec![relay.proc.pid],
        http_agent: Some(http_agent.pid),
        tcp_agent: Some(tcp_agent.pid),
        procs: vec![relay.proc, http_agent, tcp_agent],
    })
}

/// Keys for rathole's Noise transport (`rathole --genkey`).
pub struct NoiseKeys {
    /// Server's private key (base64).
    pub private: String,
    /// Server's public key (base64), given to the client.
    pub public: String,
}

/// Parses `rathole --genkey` output (`Private Key:` / `Public Key:` each followed by base64).
pub fn parse_genkey(text: &str) -> Option<NoiseKeys> {
    let mut private = None;
    let mut public = None;
    let mut lines = text.lines().map(str::trim);
    while let Some(l) = lines.next() {
        let slot = if l.starts_with("Private Key") {
            &mut private
        } else if l.starts_with("Public Key") {
            &mut public
        } else {
            continue;
        };
        let inline = l.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
        let v = if inline.is_empty() {
            lines.find(|l| !l.is_empty())?
        } else {
            inline
        };
        *slot = Some(v.to_owned());
    }
    Some(NoiseKeys {
        private: private?,
        public: public?,
    })
}

/// rathole server and client configs: services `http` → upstream and `bulk` → iperf3.
pub fn rathole_configs(
    control_port: u16,
    services: &[(String, u16, u16)],
    noise: Option<&NoiseKeys>,
) -> (String, String) {
    let mut server = format!(
        "[server]\nbind_addr = \"127.0.0.1:{control_port}\"\ndefault_token = \"bench\"\n\n[server.transport]\ntype = \"{}\"\n",
        if noise.is_some() { "noise" } else { "tcp" }
    );
    let mut client = format!(
        "[client]\nremote_addr = \"127.0.0.1:{control_port}\"\ndefault_token = \"bench\"\n\n[client.transport]\ntype = \"{}\"\n",
        if noise.is_some() { "noise" } else { "tcp" }
    );
    if let Some(k) = noise {
        server.push_str(&format!(
            "\n[server.transport.noise]\nlocal_private_key = \"{}\"\n",
            k.private
        ));
        client.push_str(&format!(
            "\n[client.transport.noise]\nremote_public_key = \"{}\"\n",
            k.public
        ));
    }
    for (name, public, local) in services {
        server.push_str(&format!(
            "\n[server.services.{name}]\nbind_addr = \"127.0.0.1:{public}\"\n"
        ));
        client.push_str(&format!(
            "\n[client.services.{name}]\nlocal_addr = \"127.0.0.1:{local}\"\n"
        ));
    }
    (server, client)
}

/// Generates a Noise keypair with `rathole --genkey`.
pub async fn rathole_keys(env: &Env) -> anyhow::Result<NoiseKeys> {
    let out = Command::new(env.peers_bin_dir.join("rathole"))
        .arg("--genkey")
        .output()
        .await
        .context("running rathole --genkey")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_genkey(&text).with_context(|| format!("cannot parse rathole --genkey output: {text}"))
}

/// Starts a rathole server and client with the given services.
pub async fn start_rathole(
    env: &Env,
    name: &str,
    control_port: u16,
    services: &[(String, u16, u16)],
    noise: Option<&NoiseKeys>,
) -> anyhow::Result<(Proc, Proc)> {
    ensure_free(control_port)?;
    for (_, public, _) in services {
        ensure_free(*public)?;
    }
    let (server_toml, client_toml) = rathole_configs(control_port, services, noise);
    let sp = env.dir.join(format!("{name}-server.toml"));
    let cp = env.dir.join(format!("{name}-client.toml"));
    std::fs::write(&sp, server_toml)?;
    std::fs::write(&cp, client_toml)?;
    let bin = env.peers_bin_dir.join("rathole");
    let mut s = Command::new(&bin);
    s.arg("-s").arg(&sp).env("RUST_LOG", "warn");
    let mut server = Proc::spawn(&format!("{name}-server"), s, &env.dir)?;
    wait_listening(
        control_port,
        std::slice::from_mut(&mut server),
        Duration::from_secs(15),
    )
    .await?;
    let mut c = Command::new(&bin);
    c.arg("-c").arg(&cp).env("RUST_LOG", "warn");
    let client = Proc::spawn(&format!("{name}-client"), c, &env.dir)?;
    Ok((server, client))
}

/// rathole (plain TCP, or Noise with `noise`) exposing the upstream and iperf3.
pub async fn rathole(env: &Env, noise: Option<&NoiseKeys>) -> anyhow::Result<Target> {
    let (name, base) = if noise.is_some() {
        ("rathole-noise", env.port_base + 20)
    } else {
        ("rathole", env.port_base + 10)
    };
    let services = [
        ("http".to_owned(), base + 1, env.upstream_port),
        ("bulk".to_owned(), base + 2, env.iperf_port),
    ];
    let (server, client) = start_rathole(env, name, base, &services, noise).await?;
    let mut procs = vec![server, client];
    wait_listening(base + 1, &mut procs, Duration::from_secs(30)).await?;
    wait_listening(base + 2, &mut procs, Duration::from_secs(30)).await?;
    let http_addr = format!("127.0.0.1:{}", base + 1);
    wait_http_ok(&http_addr, &host_header(), Duration::from_secs(30)).await?;
    Ok(Target {
        name,
        http_addr,
        bulk_port: base + 2,
        relay_pids: vec![procs[0].pid],
        http_agent: Some(procs[1].pid),
        tcp_agent: Some(procs[1].pid),
        procs,
    })
}

/// bore's control port (fixed in bore 0.6).
pub const BORE_CONTROL_PORT: u16 = 7835;

/// Starts `bore server` allowing ports `min..=max` on 127.0.0.1.
pub async fn start_bore_server(env: &Env, name: &str, min: u16, max: u16) -> anyhow::Result<Proc> {
    ensure_free(BORE_CONTROL_PORT)?;
    let mut s = Command::new(env.peers_bin_dir.join("bore"));
    s.args(["server", "--bind-addr", "127.0.0.1"])
        .args([
            "--min-port",
            &min.to_string(),
            "--max-port",
            &max.to_string(),
        ])
        .env("RUST_LOG", "warn");
    let mut server = Proc::spawn(name, s, &env.dir)?;
    wait_listening(
        BORE_CONTROL_PORT,
        std::slice::from_mut(&mut server),
        Duration::from_secs(15),
    )
    .await?;
    Ok(server)
}

/// bore: a server and one `bore local` per exposed port (bore has one port per client).
pub async fn bore(env: &Env) -> anyhow::Result<Target> {
    let base = env.port_base + 30;
    for p in base..base + 10 {
        ensure_free(p)?;
    }
    let server = start_bore_server(env, "bore-server", base, base + 9).await?;
    let client = |name: &str, local: u16, public: u16| {
        let mut c = Command::new(env.peers_bin_dir.join("bore"));
        c.args(["local", &local.to_string(), "--local-host", "127.0.0.1"])
            .args(["--to", "127.0.0.1", "--port", &public.to_string()])
            .env("RUST_LOG", "warn");
        Proc::spawn(name, c, &env.dir)
    };
    let http = client("bore-client-http", env.upstream_port, base + 1)?;
    let bulk = client("bore-client-bulk", env.iperf_port, base + 2)?;
    let mut procs = vec![server, http, bulk];
    wait_listening(base + 1, &mut procs, Duration::from_secs(30)).await?;
    wait_listening(base + 2, &mut procs, Duration::from_secs(30)).await?;
    let http_addr = format!("127.0.0.1:{}", base + 1);
    wait_http_ok(&http_addr, &host_header(), Duration::from_secs(30)).await?;
    Ok(Target {
        name: "bore",
        http_addr,
        bulk_port: base + 2,
        relay_pids: vec![procs[0].pid],
        http_agent: Some(procs[1].pid),
        tcp_agent: Some(procs[2].pid),
        procs,
    })
}

/// Version of a binary from `<bin> --version`: its first line, or `<name> <version>` from a
/// `Build Version:` line (rathole prints that).
pub async fn version(bin: &Path) -> String {
    let name = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = Command::new(bin)
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    version_from(&name, &text)
}

/// See [`version`].
pub fn version_from(name: &str, text: &str) -> String {
    if let Some(v) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build Version:"))
    {
        return format!("{name} {}", v.trim());
    }
    match text.lines().next().map(str::trim) {
        Some(l) if !l.is_empty() => l.to_owned(),
        _ => format!("{name} (unknown version)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genkey_output() {
        let text = "Private Key:\ncQ/vwIqNPJZmuM/OikglzBo/+jlYGrOt9i0k5h5vn1Q=\n\nPublic Key:\nGQYTKSbWLBUSZiGfD0ibbYsCNwZxb+Vg7HvkDDpOJ3U=\n";
        let k = parse_genkey(text).unwrap();
        assert_eq!(k.private, "cQ/vwIqNPJZmuM/OikglzBo/+jlYGrOt9i0k5h5vn1Q=");
        assert_eq!(k.public, "GQYTKSbWLBUSZiGfD0ibbYsCNwZxb+Vg7HvkDDpOJ3U=");
        assert!(parse_genkey("Private Key:\n").is_none());
        assert!(parse_genkey("").is_none());
    }

    #[test]
    fn rathole_configs_pair_services() {
        let keys = NoiseKeys {
            private: "priv".into(),
            public: "pub".into(),
        };
        let (s, c) = rathole_configs(21010, &[("http".into(), 21011, 8080)], Some(&keys));
        assert!(s.contains("bind_addr = \"127.0.0.1:21010\""));
        assert!(s.contains("type = \"noise\""));
        assert!(s.contains("local_private_key = \"priv\""));
        assert!(s.contains("[server.services.http]\nbind_addr = \"127.0.0.1:21011\""));
        assert!(c.contains("remote_public_key = \"pub\""));
        assert!(c.contains("[client.services.http]\nlocal_addr = \"127.0.0.1:8080\""));
        let (s, _) = rathole_configs(1, &[], None);
        assert!(s.contains("type = \"tcp\"") && !s.contains("noise"));
    }

    #[test]
    fn versions() {
        assert_eq!(
            version_from(
                "rathole",
                "rathole \nBuild Timestamp: x\nBuild Version:       0.5.0\n"
            ),
            "rathole 0.5.0"
        );
        assert_eq!(version_from("bore", "bore-cli 0.6.0\n"), "bore-cli 0.6.0");
        assert_eq!(version_from("x", ""), "x (unknown version)");
    }

    #[test]
    fn forwarding_lines() {
        assert_eq!(
            forwarded_port("Forwarding tcp://127.0.0.1:21000 -> localhost:5201"),
            Some(21000)
        );
        assert_eq!(
            forwarded_port("Forwarding http://bench.burrow.localhost:1 -> x"),
            None
        );
    }

    #[test]
    fn proc_net_tcp_listeners() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1
";
        assert!(listening_in_proc_net_tcp(text, 8080));
        assert!(!listening_in_proc_net_tcp(text, 8081));
        assert!(!listening_in_proc_net_tcp("garbage", 80));
    }
}
