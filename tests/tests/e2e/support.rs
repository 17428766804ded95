//! Helpers shared by the end-to-end tests: timeouts, free ports, local upstream services.

use std::time::Duration;

/// How long any single wait in a test may take.
pub const T: Duration = Duration::from_secs(30);

pub use burrow_e2e::ports::free_port;

/// `python3 -m http.server` serving a directory with one known file.
pub struct PyServer {
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
    pub port: u16,
}

pub async fn python_http_server() -> PyServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello-from-burrow.txt"), "hi\n").unwrap();
    let port = free_port();
    let child = tokio::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    burrow_e2e::wait::until("python http.server", T, || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await
    .unwrap();
    PyServer {
        _child: child,
        _dir: dir,
        port,
    }
}

/// A stream fed by a producer task through a channel.
pub fn async_stream<F, Fut>(
    producer: F,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> + Send
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Result<String, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(producer(tx));
    tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
}

/// The `host:port` in an agent's `Forwarding tcp://host:port -> ...` line.
pub fn tcp_public_addr(line: &str) -> String {
    line.strip_prefix("Forwarding tcp://")
        .and_then(|rest| rest.split_once(' '))
        .map(|(addr, _)| addr.to_owned())
        .unwrap_or_else(|| panic!("not a TCP forwarding line: {line:?}"))
}
