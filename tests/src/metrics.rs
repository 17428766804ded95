//! Reading a process's Prometheus `/metrics` (the relay's, the api's) in tests.

/// The text of `http://<ops>/metrics`, or `None` if it cannot be fetched right now.
pub async fn scrape(ops: &str) -> Option<String> {
    reqwest::get(format!("http://{ops}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of `series` (name with its labels, exactly as exported, e.g.
/// `burrow_relay_edge_policies` or `x_total{endpoint="demo"}`) at `ops`, as written.
pub async fn value(ops: &str, series: &str) -> Option<String> {
    let text = scrape(ops).await?;
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}
