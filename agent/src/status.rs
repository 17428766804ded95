//! The live terminal status panel, like `ngrok http`'s.
//!
//! [`Status`] is what the panel shows: the session state, the relay, the forwarding lines,
//! the inspector URL, the [`Stats`] and the latest requests. It is kept by the
//! [`Inspector`] (so `/api/status` shows the same), changed with
//! [`Inspector::update_status`]. [`Status::render`] turns it into text (pure, for tests);
//! [`run_live`] redraws it in place once a second when stdout is a terminal, and does nothing
//! otherwise, so the plain `Forwarding … -> …` lines stay the agent's only output to pipes.

use crate::inspector::{Inspector, Stats, Summary};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The tunnel session, as the panel reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum SessionState {
    /// Connecting to the relay for the first time.
    #[default]
    Connecting,
    /// Bound: the forwarding lines work.
    Online,
    /// The connection was lost; the next attempt is due at `retry_at`.
    Reconnecting {
        /// Why the connection was lost.
        reason: String,
        /// When the next attempt starts.
        retry_at: Instant,
    },
    /// The agent stopped for good.
    Closed {
        /// Why.
        reason: String,
    },
}

impl SessionState {
    /// Reconnecting after `retry_in` from now.
    pub fn reconnecting(reason: impl Into<String>, retry_in: Duration) -> Self {
        Self::Reconnecting {
            reason: reason.into(),
            retry_at: Instant::now() + retry_in,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Online => "online",
            Self::Reconnecting { .. } => "reconnecting",
            Self::Closed { .. } => "closed",
        }
    }

    /// `online`, `reconnecting in 3s (reason)`, `closed: reason`.
    fn describe(&self, now: Instant) -> String {
        match self {
            Self::Reconnecting { reason, retry_at } => {
                let secs = retry_at.saturating_duration_since(now).as_secs_f64().ceil();
                format!("reconnecting in {secs:.0}s ({reason})")
            }
            Self::Closed { reason } => format!("closed: {reason}"),
            other => other.name().to_owned(),
        }
    }
}

/// One public URL and the local service behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Forwarding {
    /// `http://demo.burrow.localhost:17081`, `tcp://relay:20001`.
    pub public_url: String,
    /// `http://localhost:8000`.
    pub local: String,
}

/// Everything the panel and `/api/status` show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// Session state.
    pub state: SessionState,
    /// Relay address (`host:port`).
    pub relay: String,
    /// One line per bound endpoint.
    pub forwarding: Vec<Forwarding>,
    /// Where the web inspector is, once bound.
    pub inspector_url: Option<String>,
    /// Counters and percentiles (filled in by [`Inspector::status`]).
    pub stats: Stats,
    /// Latest exchanges, newest first (filled in by [`Inspector::status`]).
    pub recent: Vec<Summary>,
}

const LABEL: usize = 30;
const COLUMN: usize = 9;

impl Status {
    /// The panel text for a terminal `width` columns wide (lines are cut to fit).
    pub fn render(&self, width: u16) -> String {
        self.render_at(width, Instant::now())
    }

    /// [`render`](Self::render) as of `now` (the reconnect countdown depends on it).
    pub fn render_at(&self, width: u16, now: Instant) -> String {
        let width = usize::from(width.max(20));
        let label = if width >= 60 { LABEL } else { 16 };
        let mut lines: Vec<String> = Vec::new();
        let title = "burrow";
        let quit = "(Ctrl+C to quit)";
        lines.push(if width > title.len() + quit.len() {
            format!("{title}{quit:>w$}", w = width - title.len())
        } else {
            title.to_owned()
        });
        lines.push(String::new());
        let row = |name: &str, value: &str| format!("{name:<label$}{value}");
        lines.push(row("Session Status", &self.state.describe(now)));
        lines.push(row("Version", env!("CARGO_PKG_VERSION")));
        if !self.relay.is_empty() {
            lines.push(row("Relay", &self.relay));
        }
        if let Some(url) = &self.inspector_url {
            lines.push(row("Web Interface", url));
        }
        for f in &self.forwarding {
            lines.push(row(
                "Forwarding",
                &format!("{} -> {}", f.public_url, f.local),
            ));
        }
        lines.push(String::new());
        let s = &self.stats;
        let columns = |cells: &[String]| {
            let mut line = String::new();
            for c in cells {
                let _ = write!(line, "{c:<COLUMN$}");
            }
            line.trim_end().to_owned()
        };
        let latency = |pick: fn(&crate::inspector::Latency) -> Duration| {
            s.latency
                .as_ref()
                .map_or_else(|| "-".to_owned(), |l| format_ms(pick(l)))
        };
        lines.push(row(
            "Connections",
            &columns(&["ttl", "opn", "req", "err", "p50", "p90", "p99"].map(String::from)),
        ));
        lines.push(row(
            "",
            &columns(&[
                s.connections_total.to_string(),
                s.connections_open.to_string(),
                s.requests_total.to_string(),
                s.errors.to_string(),
                latency(|l| l.p50),
                latency(|l| l.p90),
                latency(|l| l.p99),
            ]),
        ));
        if !self.recent.is_empty() {
            lines.push(String::new());
            lines.push("HTTP Requests".to_owned());
            lines.push("-------------".to_owned());
            lines.push(String::new());
            for r in &self.recent {
                let outcome = match (r.status, &r.error) {
                    (Some(code), _) => {
                        let reason = http::StatusCode::from_u16(code)
                            .ok()
                            .and_then(|c| c.canonical_reason())
                            .unwrap_or("");
                        format!("{code} {reason}").trim_end().to_owned()
                    }
                    (None, Some(e)) => format!("failed: {e}"),
                    (None, None) => "…".to_owned(),
                };
                let method_path = format!("{:<7} {}", r.method, r.path);
                lines.push(format!("{method_path:<label$} {outcome}"));
            }
        }
        let mut out = String::new();
        for line in lines {
            out.extend(line.chars().take(width));
            out.push('\n');
        }
        out
    }

    /// The status as `/api/status` returns it.
    pub fn to_json(&self) -> serde_json::Value {
        let now = Instant::now();
        let (reason, retry_in_ms) = match &self.state {
            SessionState::Reconnecting { reason, retry_at } => (
                Some(reason.clone()),
                Some(retry_at.saturating_duration_since(now).as_millis() as u64),
            ),
            SessionState::Closed { reason } => (Some(reason.clone()), None),
            _ => (None, None),
        };
        serde_json::json!({
            "state": self.state.name(),
            "reason": reason,
            "retry_in_ms": retry_in_ms,
            "relay": self.relay,
            "forwarding": self.forwarding.iter().map(|f| serde_json::json!({
                "public_url": f.public_url,
                "local": f.local,
            })).collect::<Vec<_>>(),
            "inspector_url": self.inspector_url,
            "stats": self.stats,
        })
    }
}

/// `0.42ms`, `3.2ms`, `153ms`, `12.3s`.
fn format_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.2}ms")
    } else if ms < 100.0 {
        format!("{ms:.1}ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", ms / 1000.0)
    }
}

/// Redraws the panel about once a second (and at once when the status changes) until `stop`,
/// when stdout is a terminal; returns at once otherwise. The last panel stays on screen.
pub async fn run_live(inspector: Arc<Inspector>, stop: CancellationToken) {
    if !std::io::stdout().is_terminal() {
        return;
    }
    let mut changes = inspector.subscribe_status();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = String::new();
    // Hide the cursor while redrawing.
    draw("\x1b[?25l");
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
            Ok(()) = changes.changed() => false,
        };
        let text = inspector.status().render(terminal_width().await);
        if text != last {
            // Cursor home, clear the screen, draw.
            draw(&format!("\x1b[H\x1b[2J{text}"));
            last = text;
        }
        if stopping {
            break;
        }
    }
    draw("\x1b[?25h");
}

fn draw(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Columns of the terminal: `$COLUMNS`, else `stty size`, else 80.
async fn terminal_width() -> u16 {
    if let Some(cols) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
    {
        return cols;
    }
    let tty = match std::fs::File::open("/dev/tty") {
        Ok(f) => f,
        Err(_) => return 80,
    };
    let output = tokio::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(std::process::Stdio::null())
        .output()
        .await;
    output
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).and_then(|c| c.parse().ok()))
        .filter(|&c: &u16| c > 0)
        .unwrap_or(80)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspector::Latency;

    fn sample() -> Status {
        Status {
            state: SessionState::Online,
            relay: "relay.burrow.localhost:17443".into(),
            forwarding: vec![
                Forwarding {
                    public_url: "http://demo.burrow.localhost:17081".into(),
                    local: "http://localhost:8000".into(),
                },
                Forwarding {
                    public_url: "tcp://relay.burrow.localhost:20001".into(),
                    local: "localhost:5432".into(),
                },
            ],
            inspector_url: Some("http://127.0.0.1:4040".into()),
            stats: Stats {
                connections_total: 12,
                connections_open: 1,
                requests_total: 40,
                requests_open: 0,
                errors: 2,
                latency: Some(Latency {
                    samples: 40,
                    p50: Duration::from_micros(3_240),
                    p90: Duration::from_micros(153_400),
                    p99: Duration::from_millis(12_345),
                }),
            },
            recent: vec![Summary {
                id: 7,
                replay_of: None,
                endpoint: "demo".into(),
                method: "POST".into(),
                path: "/hooks/stripe?x=1".into(),
                status: Some(201),
                started_at: "2024-05-01T12:00:00.000Z".into(),
                response_headers_ms: Some(3.2),
                duration_ms: Some(3.5),
                request_size: 10,
                response_size: 2,
                error: None,
            }],
        }
    }

    #[test]
    fn panel_shows_forwarding_state_and_percentiles() {
        let text = sample().render(120);
        assert!(text.starts_with("burrow"), "{text}");
        assert!(text.contains("(Ctrl+C to quit)"), "{text}");
        assert!(
            text.contains("Session Status                online\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Forwarding                    http://demo.burrow.localhost:17081 -> http://localhost:8000\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("tcp://relay.burrow.localhost:20001 -> localhost:5432"),
            "{text}"
        );
        assert!(text.contains("Web Interface                 http://127.0.0.1:4040"));
        assert!(text.contains("Relay                         relay.burrow.localhost:17443"));
        let stats_header = text.lines().find(|l| l.starts_with("Connections")).unwrap();
        assert_eq!(
            stats_header,
            "Connections                   ttl      opn      req      err      p50      p90      p99"
        );
        let mut lines = text.lines().skip_while(|l| !l.starts_with("Connections"));
        lines.next();
        assert_eq!(
            lines.next().unwrap(),
            "                              12       1        40       2        3.2ms    153ms    12.3s"
        );
        assert!(text.contains("POST    /hooks/stripe?x=1"), "{text}");
        assert!(text.contains("201 Created"), "{text}");
    }

    #[test]
    fn states_are_described() {
        let now = Instant::now();
        let mut s = sample();
        s.state = SessionState::Connecting;
        assert!(
            s.render_at(100, now)
                .contains("Session Status                connecting\n")
        );
        s.state = SessionState::Reconnecting {
            reason: "relay closed the session".into(),
            retry_at: now + Duration::from_millis(2_100),
        };
        assert!(
            s.render_at(100, now)
                .contains("reconnecting in 3s (relay closed the session)")
        );
        s.state = SessionState::Closed {
            reason: "token revoked".into(),
        };
        assert!(s.render_at(100, now).contains("closed: token revoked"));
        assert_eq!(s.to_json()["state"], "closed");
        assert_eq!(s.to_json()["reason"], "token revoked");
    }

    #[test]
    fn lines_fit_the_width_and_empty_stats_show_dashes() {
        let mut s = sample();
        s.stats = Stats::default();
        s.recent.clear();
        for width in [20u16, 40, 80] {
            let text = s.render(width);
            for line in text.lines() {
                assert!(
                    line.chars().count() <= usize::from(width),
                    "{line:?} > {width}"
                );
            }
        }
        let text = s.render(120);
        assert!(
            text.contains("0        0        0        0        -        -        -"),
            "{text}"
        );
        assert!(!text.contains("HTTP Requests"));
    }

    #[test]
    fn milliseconds_are_formatted_by_magnitude() {
        assert_eq!(format_ms(Duration::from_micros(420)), "0.42ms");
        assert_eq!(format_ms(Duration::from_micros(3_240)), "3.2ms");
        assert_eq!(format_ms(Duration::from_micros(99_940)), "99.9ms");
        assert_eq!(format_ms(Duration::from_millis(153)), "153ms");
        assert_eq!(format_ms(Duration::from_millis(12_345)), "12.3s");
    }

    #[tokio::test]
    async fn not_a_terminal_draws_nothing() {
        if std::io::stdout().is_terminal() {
            return;
        }
        // Returns at once without waiting for `stop`.
        run_live(Arc::new(Inspector::default()), CancellationToken::new()).await;
    }
}
