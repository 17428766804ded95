//! The ops web console: one page (`GET /console`) that signs in with an ops API key and drives
//! the same `/v1/ops` JSON endpoints scripts use, so the role checks are the API's own.

use axum::response::Html;

const PAGE: &str = include_str!("console.html");

/// `GET /console`.
pub async fn page() -> Html<String> {
    let kinds: Vec<&str> = burrow_workflows::kinds::all()
        .iter()
        .map(|k| k.name)
        .collect();
    let kinds = serde_json::to_string(&kinds).unwrap_or_else(|_| "[]".into());
    Html(PAGE.replace("__KINDS__", &kinds))
}
