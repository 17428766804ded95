//! The agent's config file: several named endpoints on one session (`burrow start`), and
//! mistakes in the file named with their line.

use crate::support::*;
use burrow_e2e::Stack;

#[tokio::test]
async fn start_all_runs_every_endpoint_of_the_file_on_one_session() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let web = python_http_server().await;
    // A TCP service that greets and closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"tcp says hi").await;
        }
    });
    let stack = Stack::start().await.unwrap();
    let file = stack.dir.path().join("burrow.toml");
    std::fs::write(
        &file,
        format!(
            "version = 1\n\n[endpoints.site]\nproto = \"http\"\naddr = \"{}\"\nname = \"from-file\"\n\n\
             [endpoints.shell]\nproto = \"tcp\"\naddr = \"{tcp_port}\"\n",
            web.port
        ),
    )
    .unwrap();
    let config = file.display().to_string();
    let mut agent = stack
        .agent_with(
            &["--config", &config, "start", "--all"],
            &stack.creds.authtoken,
        )
        .unwrap();
    let http_line = agent
        .wait_line("Forwarding http://from-file.", T)
        .await
        .unwrap();
    assert!(
        http_line.ends_with(&format!("-> http://localhost:{}", web.port)),
        "{http_line}"
    );
    let tcp_line = agent.wait_line("Forwarding tcp://", T).await.unwrap();
    assert!(
        tcp_line.ends_with(&format!("-> localhost:{tcp_port}")),
        "{tcp_line}"
    );

    let resp = stack
        .ingress(reqwest::Method::GET, "from-file", "/hello-from-burrow.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hi\n");
    let mut s = tokio::net::TcpStream::connect(tcp_public_addr(&tcp_line))
        .await
        .unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "tcp says hi");

    // One session carries both endpoints.
    let sessions = stack.ops_sessions().await.unwrap().1;
    let text = sessions.to_string();
    assert!(
        text.contains("from-file") && text.contains("tcp:"),
        "{text}"
    );
}

#[tokio::test]
async fn config_mistakes_are_named_with_the_key_and_line() {
    let stack = Stack::start().await.unwrap();
    let file = stack.dir.path().join("burrow.toml");
    let config = file.display().to_string();
    let token = &stack.creds.authtoken;

    std::fs::write(
        &file,
        "version = 1\n[endpoints.site]\naddr = \"8080\"\nhostheader = \"rewrite\"\n",
    )
    .unwrap();
    let mut agent = stack
        .agent_with(&["--config", &config, "start", "site"], token)
        .unwrap();
    let out = agent.expect_exit(64, "`hostheader`").await.unwrap();
    assert!(out.contains("burrow.toml:4:"), "{out}");

    std::fs::write(&file, "version = 1\n[endpoints.site]\naddr = \"8080\"\n").unwrap();
    let mut agent = stack
        .agent_with(&["--config", &config, "start", "sight"], token)
        .unwrap();
    let out = agent.expect_exit(64, "no endpoint `sight`").await.unwrap();
    assert!(out.contains("site"), "lists the endpoints it has: {out}");
}
