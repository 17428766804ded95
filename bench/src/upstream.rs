//! The local HTTP service every target forwards to: HTTP/1.1 keep-alive, answering any
//! request with the same 1 KiB body. It runs as its own process (`burrow-bench upstream`) so
//! its CPU is never counted as a tunnel's, and every target shares it.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use std::{convert::Infallible, path::Path};
use tokio::net::TcpListener;

/// Size of the response body.
pub const BODY_LEN: usize = 1024;

/// Serves on `listen` forever; writes `{"http": "<addr>"}` to `addr_file` once listening.
pub async fn serve(listen: &str, addr_file: Option<&Path>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    if let Some(path) = addr_file {
        let addr = listener.local_addr()?;
        std::fs::write(
            path,
            serde_json::json!({ "http": addr.to_string() }).to_string(),
        )?;
    }
    let body = Bytes::from(vec![b'x'; BODY_LEN]);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_req: Request<Incoming>| {
                let body = body.clone();
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header(http::header::CONTENT_TYPE, "text/plain")
                            .body(Full::new(body))
                            .unwrap_or_default(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
