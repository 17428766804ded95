//! Micro-benchmark: `on_http_request` of a typical policy (restrict-ips + basic-auth +
//! rate-limit on a `LocalLimiter` + add-headers), per request, on one thread.
//!
//! `cargo bench -p burrow-policy --bench evaluate` prints ns/request for: the request passing
//! every action, the request refused by basic-auth (the 401 is built), and an empty policy
//! (the cost of the call itself). Each figure includes cloning the request head, measured
//! separately on the first line so it can be subtracted.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine;
use burrow_policy::limit::LocalLimiter;
use burrow_policy::{JwksCache, Policy, RequestContext, RequestVerdict};

const POLICY: &str = r#"
on_http_request:
  - name: typical
    actions:
      - type: restrict-ips
        config: { allow: ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"], deny: ["10.9.0.0/16"] }
      - type: basic-auth
        config: { credentials: ["alice:s3cret", "bob:hunter2"] }
      - type: rate-limit
        config: { name: api, capacity: 1000000000, window: 1m }
      - type: add-headers
        config: { headers: { x-from: burrow } }
"#;

const ITERATIONS: u32 = 200_000;
const ROUNDS: usize = 5;

fn head(auth: &str) -> http::request::Parts {
    let req = http::Request::get("/api/orders?page=2")
        .header("host", "demo.burrow.test")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .header("authorization", auth)
        .body(())
        .unwrap_or_default();
    req.into_parts().0
}

/// Median ns per iteration of `ROUNDS` rounds of `ITERATIONS` calls of `f`.
async fn measure<F: AsyncFnMut(u32) -> bool>(mut f: F) -> f64 {
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..ITERATIONS {
            black_box(f(i).await);
        }
        rounds.push(start.elapsed().as_nanos() as f64 / f64::from(ITERATIONS));
    }
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

async fn run(
    policy: &Policy,
    template: &http::request::Parts,
    ctx_peer: u32,
    env: &(LocalLimiter, JwksCache),
) -> bool {
    let mut parts = template.clone();
    let ctx = RequestContext {
        // 1024 visitors, so the limiter holds 1024 live counters.
        peer: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (ctx_peer % 1024))),
        scope: "acct_1/demo",
        limiter: &env.0,
        jwks: &env.1,
        now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    };
    matches!(
        policy.on_http_request(&mut parts, None, &ctx).await,
        RequestVerdict::Continue
    )
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let typical = burrow_policy::parse(POLICY).expect("bench policy parses");
        let empty = burrow_policy::parse("{}").expect("empty policy parses");
        let env = (
            LocalLimiter::default(),
            JwksCache::new(reqwest::Client::new(), Duration::from_secs(300)),
        );
        let good = head(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("bob:hunter2")
        ));
        let bad = head(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("bob:hunter3")
        ));

        assert!(run(&typical, &good, 1, &env).await && !run(&typical, &bad, 1, &env).await);
        let clone = measure(async |_| black_box(good.clone()).headers.len() == 4).await;
        let pass = measure(async |i| run(&typical, &good, i, &env).await).await;
        let refused = measure(async |i| run(&typical, &bad, i, &env).await).await;
        let baseline = measure(async |i| run(&empty, &good, i, &env).await).await;
        println!("request head clone only:              {clone:>7.0} ns/request");
        println!("typical policy, request passes:       {pass:>7.0} ns/request");
        println!("typical policy, refused (401):        {refused:>7.0} ns/request");
        println!("empty policy:                         {baseline:>7.0} ns/request");
    });
}
