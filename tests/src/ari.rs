//! An ACME Renewal Information (RFC 9773) responder in front of [`crate::pebble::Pebble`],
//! which has no ARI: `GET /dir` returns pebble's directory with `renewalInfo` pointing here (all
//! other URLs stay pebble's), and `GET /renewal-info/<certid>` answers the suggested window the
//! test sets, with `Retry-After`. A worker given [`AriResponder::directory_url`] sees a CA that
//! offers ARI.

use crate::{pebble::TestCa, tls};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::{Arc, Mutex, MutexGuard};

/// What the test controls and what the responder saw.
struct State {
    upstream_directory: String,
    client: reqwest::Client,
    own_port: u16,
    window: (DateTime<Utc>, DateTime<Utc>),
    retry_after_secs: u64,
    /// When set, `/renewal-info/...` answers this status with a problem document instead.
    failure: Option<u16>,
    requested: Vec<String>,
}

/// The ARI responder, serving HTTPS on `127.0.0.1:<port>` with the [`TestCa`] leaf; stops when
/// dropped.
pub struct AriResponder {
    port: u16,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl AriResponder {
    /// Starts one in front of the ACME directory at `upstream_directory` (pebble's
    /// [`crate::pebble::Pebble::directory_url`]), whose TLS root is `ca` (the same CA the
    /// responder's own certificate comes from, so one `acme_ca_file` trusts both). The window
    /// starts 10 years from now (no renewal suggested); `Retry-After` is 1 second.
    pub async fn start(upstream_directory: &str, ca: &TestCa) -> anyhow::Result<AriResponder> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let far = Utc::now() + chrono::Duration::days(3650);
        let state = Arc::new(Mutex::new(State {
            upstream_directory: upstream_directory.to_owned(),
            client: ca.client()?,
            own_port: port,
            window: (far, far + chrono::Duration::days(1)),
            retry_after_secs: 1,
            failure: None,
            requested: Vec::new(),
        }));
        let config = ca.server_config(&[b"h2", b"http/1.1"])?;
        let task = tls::serve_tls_on(listener, config, {
            let state = state.clone();
            move |tls| {
                let state = state.clone();
                async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
            }
        });
        Ok(AriResponder { port, state, task })
    }

    /// `https://127.0.0.1:<port>/dir`: the directory to configure instead of pebble's.
    pub fn directory_url(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// `https://127.0.0.1:<port>/renewal-info`, as the directory advertises it.
    pub fn renewal_info_url(&self) -> String {
        format!("https://127.0.0.1:{}/renewal-info", self.port)
    }

    /// Sets the suggested renewal window every later answer carries.
    pub fn set_window(&self, start: DateTime<Utc>, end: DateTime<Utc>) {
        self.state().window = (start, end);
    }

    /// Sets the `Retry-After` (seconds) of later answers.
    pub fn set_retry_after(&self, secs: u64) {
        self.state().retry_after_secs = secs;
    }

    /// Makes `/renewal-info/...` answer `status` (with a problem document) instead of a
    /// window, or answer normally again with `None`. The directory is unaffected.
    pub fn set_failure(&self, status: Option<u16>) {
        self.state().failure = status;
    }

    /// The certificate ids (`<base64url AKI>.<base64url serial>`) asked about so far, in order.
    pub fn requested(&self) -> Vec<String> {
        self.state().requested.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for AriResponder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Response = http::Response<Full<Bytes>>;

fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
    let mut resp = http::Response::new(Full::new(body.into()));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn problem(status: u16, detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "urn:ietf:params:acme:error:serverInternal",
        "detail": detail,
        "status": status,
    });
    respond(status, "application/problem+json", body.to_string())
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handle<B>(state: &Mutex<State>, req: http::Request<B>) -> Response {
    let path = req.uri().path().to_owned();
    if req.method() != http::Method::GET {
        return problem(405, "only GET is served here");
    }
    if path == "/dir" {
        let (client, upstream, port) = {
            let s = lock(state);
            (s.client.clone(), s.upstream_directory.clone(), s.own_port)
        };
        return match directory(&client, &upstream, port).await {
            Ok(json) => respond(200, "application/json", json.to_string()),
            Err(e) => problem(502, &format!("upstream directory {upstream}: {e}")),
        };
    }
    let Some(cert_id) = path.strip_prefix("/renewal-info/") else {
        return problem(404, &format!("no such path {path}"));
    };
    let mut s = lock(state);
    s.requested.push(cert_id.to_owned());
    if let Some(status) = s.failure {
        return problem(status, "renewal information unavailable (set by the test)");
    }
    let (start, end) = s.window;
    let body = serde_json::json!({
        "suggestedWindow": {
            "start": start.to_rfc3339_opts(SecondsFormat::Secs, true),
            "end": end.to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    });
    let mut resp = respond(200, "application/json", body.to_string());
    resp.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(s.retry_after_secs),
    );
    resp
}

/// Pebble's directory with `renewalInfo` added.
async fn directory(
    client: &reqwest::Client,
    upstream: &str,
    own_port: u16,
) -> anyhow::Result<serde_json::Value> {
    let resp = client.get(upstream).send().await?;
    anyhow::ensure!(resp.status().is_success(), "answered {}", resp.status());
    let mut json: serde_json::Value = resp.json().await?;
    let map = json
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("directory is not a JSON object"))?;
    map.insert(
        "renewalInfo".to_owned(),
        format!("https://127.0.0.1:{own_port}/renewal-info").into(),
    );
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pebble::Pebble;

    #[tokio::test]
    async fn directory_offers_renewal_info_and_window_answers_with_retry_after()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut pebble = Pebble::start(dir.path(), 1, 2).await?;
        let ari = AriResponder::start(&pebble.directory_url(), pebble.test_ca()).await?;
        let client = pebble.test_ca().client()?;

        let upstream: serde_json::Value = client
            .get(pebble.directory_url())
            .send()
            .await?
            .json()
            .await?;
        let dir_json: serde_json::Value =
            client.get(ari.directory_url()).send().await?.json().await?;
        assert_eq!(dir_json["renewalInfo"], ari.renewal_info_url().as_str());
        assert_eq!(dir_json["newOrder"], upstream["newOrder"]);
        assert_eq!(dir_json["newNonce"], upstream["newNonce"]);

        let info = format!(
            "{}/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE",
            ari.renewal_info_url()
        );
        let resp = client.get(&info).send().await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "1");
        let body: serde_json::Value = resp.json().await?;
        let start: DateTime<Utc> = body["suggestedWindow"]["start"]
            .as_str()
            .unwrap_or_default()
            .parse()?;
        assert!(start > Utc::now() + chrono::Duration::days(3000), "{body}");

        let (s, e) = (
            Utc::now() - chrono::Duration::hours(1),
            Utc::now() + chrono::Duration::hours(1),
        );
        ari.set_window(s, e);
        ari.set_retry_after(7);
        let resp = client.get(&info).send().await?;
        assert_eq!(resp.headers()[http::header::RETRY_AFTER], "7");
        let body: serde_json::Value = resp.json().await?;
        assert_eq!(
            body["suggestedWindow"]["end"],
            e.to_rfc3339_opts(SecondsFormat::Secs, true).as_str()
        );

        ari.set_failure(Some(503));
        assert_eq!(client.get(&info).send().await?.status(), 503);
        assert_eq!(
            ari.requested(),
            vec!["aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE".to_owned(); 3]
        );

        // The CA down: the directory is a 502, not a stale copy.
        pebble.stop().await;
        assert_eq!(client.get(ari.directory_url()).send().await?.status(), 502);
        Ok(())
    }
}
