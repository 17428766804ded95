//! TLS at the edge: the HTTPS ingress (dev CA, ALPN h2 and http/1.1, certificates picked by SNI
//! from a store the relay reloads), TLS passthrough routed by SNI (`burrow tls`), and
//! `https://` local services.

use crate::support::*;
use burrow_e2e::{Stack, tls};

/// A local HTTP service answering with the `X-Forwarded-Proto` it received.
async fn forwarded_proto_server() -> u16 {
    use axum::{Router, http::HeaderMap, routing::get};
    let app = Router::new().route(
        "/",
        get(|headers: HeaderMap| async move {
            let proto = headers
                .get("x-forwarded-proto")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            format!("proto={proto}")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

#[tokio::test]
async fn https_ingress_terminates_with_the_dev_ca_over_h2_and_http1() {
    let port = forwarded_proto_server().await;
    let stack = Stack::start().await.unwrap();
    let mut agent = stack
        .agent(port, Some("secure-web"), &stack.creds.authtoken)
        .unwrap();
    let https = stack
        .relay
        .https
        .clone()
        .expect("the relay has a TLS listener");
    let line = agent.wait_line("Forwarding https://", T).await.unwrap();
    let https_port = https.rsplit_once(':').unwrap().1;
    assert!(
        line.starts_with(&format!(
            "Forwarding https://secure-web.burrow.localhost:{https_port} -> http://localhost:{port}"
        )),
        "{line}"
    );
    let ca = std::fs::read(stack.relay.ca_file.clone().unwrap()).unwrap();
    let host = "secure-web.burrow.localhost";

    // ALPN h2: the visitor speaks HTTP/2 to the relay.
    let conn = tls::connect(&https, host, &ca, &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let answer = tls::get(conn, host, "/").await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.version, http::Version::HTTP_2);
    assert_eq!(answer.body, "proto=https");

    // ALPN http/1.1.
    let conn = tls::connect(&https, host, &ca, &[b"http/1.1"])
        .await
        .unwrap();
    let answer = tls::get(conn, host, "/").await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.version, http::Version::HTTP_11);
    assert_eq!(answer.body, "proto=https");

    // A name nobody bound still gets a verifiable certificate and the relay's own 404.
    let other = "nobody.burrow.localhost";
    let conn = tls::connect(&https, other, &ca, &[b"http/1.1"])
        .await
        .unwrap();
    let answer = tls::get(conn, other, "/").await.unwrap();
    assert_eq!(answer.status, 404);
    assert!(answer.body.contains(other), "{answer:?}");
}

#[tokio::test]
async fn a_certificate_dropped_into_the_store_is_served_for_its_name_without_a_restart() {
    let port = forwarded_proto_server().await;
    let stack = Stack::start().await.unwrap();
    let (_agent, _) = stack
        .online_agent(port, Some("custom"), &stack.creds.authtoken)
        .await
        .unwrap();
    let https = stack.relay.https.clone().unwrap();
    // A certificate for the endpoint's name from a CA the relay has never seen.
    let host = "custom.burrow.localhost";
    let pki = tls::TestPki::new(&[host]).unwrap();
    // Before: the dev CA's wildcard answers, so a client trusting only the new CA fails.
    assert!(
        tls::connect(&https, host, pki.ca_pem.as_bytes(), &[b"http/1.1"])
            .await
            .is_err()
    );
    std::fs::create_dir_all(stack.cert_dir()).unwrap();
    let tmp = stack.cert_dir().join("custom.pem.tmp");
    std::fs::write(&tmp, pki.combined_pem()).unwrap();
    std::fs::rename(&tmp, stack.cert_dir().join("custom.pem")).unwrap();
    let conn = burrow_e2e::wait::until("the relay to serve the new certificate", T, || async {
        tls::connect(&https, host, pki.ca_pem.as_bytes(), &[b"http/1.1"])
            .await
            .ok()
    })
    .await
    .unwrap();
    let answer = tls::get(conn, host, "/").await.unwrap();
    assert_eq!(answer.body, "proto=https");
    // Other names keep the dev certificate.
    let ca = std::fs::read(stack.relay.ca_file.clone().unwrap()).unwrap();
    tls::connect(&https, "else.burrow.localhost", &ca, &[b"http/1.1"])
        .await
        .unwrap();
}

#[tokio::test]
async fn tls_passthrough_routes_by_sni_and_the_local_service_terminates() {
    use tokio::io::AsyncReadExt;
    let host = "vault.burrow.localhost";
    // The local service holds its own certificate: the relay never sees this key.
    let pki = tls::TestPki::new(&[host]).unwrap();
    let port = tls::tls_greeter(
        pki.server_config(&[]).unwrap(),
        "hello from the local TLS service",
    )
    .await
    .unwrap();
    let stack = Stack::start().await.unwrap();
    let target = port.to_string();
    let mut agent = stack
        .agent_with(&["tls", &target, "--name", "vault"], &stack.creds.authtoken)
        .unwrap();
    let line = agent.wait_line("Forwarding", T).await.unwrap();
    let https = stack.relay.https.clone().unwrap();
    let https_port = https.rsplit_once(':').unwrap().1;
    assert_eq!(
        line,
        format!("Forwarding tls://{host}:{https_port} -> localhost:{port}")
    );

    let mut conn = tls::connect(&https, host, pki.ca_pem.as_bytes(), &[])
        .await
        .unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).await.unwrap();
    assert_eq!(
        got,
        format!("hello from the local TLS service (sni {host})")
    );

    // Another name on the same port is not passed through: the relay terminates it itself.
    assert!(
        tls::connect(&https, "other.burrow.localhost", pki.ca_pem.as_bytes(), &[])
            .await
            .is_err()
    );
    // Bytes that are not TLS are refused without an answer.
    let mut raw = tokio::net::TcpStream::connect(&https).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    raw.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[tokio::test]
async fn https_upstreams_are_verified_unless_told_otherwise() {
    let pki = tls::TestPki::new(&["localhost"]).unwrap();
    let port = tls::https_server(
        pki.server_config(&[b"h2", b"http/1.1"]).unwrap(),
        "secret page",
    )
    .await
    .unwrap();
    let stack = Stack::start().await.unwrap();
    let token = &stack.creds.authtoken;
    let target = format!("https://localhost:{port}");
    let ca_file = stack.dir.path().join("local-ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let ca_file = ca_file.display().to_string();

    // Self-signed by an unknown CA: refused, and the visitor learns why.
    let mut strict = stack
        .agent_with(&["http", &target, "--name", "strict"], token)
        .unwrap();
    strict.wait_line("Forwarding", T).await.unwrap();
    let resp = stack
        .ingress(reqwest::Method::GET, "strict", "/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(body.contains("certificate"), "{body}");

    for (name, extra) in [
        ("insecure", vec!["--upstream-insecure"]),
        ("trusted", vec!["--upstream-ca", ca_file.as_str()]),
        (
            "trusted-h2",
            vec![
                "--upstream-ca",
                ca_file.as_str(),
                "--upstream-protocol",
                "http2",
            ],
        ),
    ] {
        let mut args = vec!["http", target.as_str(), "--name", name];
        args.extend(extra);
        let mut agent = stack.agent_with(&args, token).unwrap();
        let line = agent.wait_line("Forwarding", T).await.unwrap();
        assert!(line.ends_with(&format!("-> {target}")), "{line}");
        let resp = stack
            .ingress(reqwest::Method::GET, name, "/")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        let version = resp.headers()["x-seen-version"]
            .to_str()
            .unwrap()
            .to_owned();
        let expected = if name == "trusted-h2" {
            "HTTP/2.0"
        } else {
            "HTTP/1.1"
        };
        assert_eq!(version, expected, "{name}");
        assert_eq!(resp.text().await.unwrap(), "secret page");
    }
}
