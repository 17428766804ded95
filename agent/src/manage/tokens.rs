//! `burrow tokens create | list | revoke`: the account's authtokens.

use super::{Ctx, Failure, output};
use crate::api_client::{Body, segment};
use clap::Subcommand;
use http::Method;
use serde_json::{Value, json};

/// What to do with authtokens.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Create an authtoken; its secret is printed once and cannot be shown again.
    Create {
        /// Free text to recognise the token by (`laptop`, `ci`).
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the account's authtokens (never their secrets).
    List,
    /// Revoke an authtoken: agents using it are disconnected and refused from now on.
    Revoke {
        /// The token's id (from `burrow tokens list`).
        id: String,
    },
}

pub(super) async fn run(ctx: &mut Ctx, action: Action) -> Result<(), Failure> {
    match action {
        Action::Create { description } => {
            let path = ctx.account_path("/authtokens").await?;
            let body = Body::json(&json!({ "description": description }));
            let (_, created) = ctx.api.call(Method::POST, &path, Some(body)).await?;
            ctx.print(&created, created_text);
        }
        Action::List => {
            let path = ctx.account_path("/authtokens").await?;
            let (_, list) = ctx.api.call(Method::GET, &path, None).await?;
            ctx.print(&list, list_text);
        }
        Action::Revoke { id } => {
            let path = format!("/v1/authtokens/{}", segment(&id));
            let (_, revoked) = ctx.api.call(Method::DELETE, &path, None).await?;
            ctx.print(&revoked, |v| revoked_text(&id, v));
        }
    }
    Ok(())
}

fn created_text(v: &Value) -> String {
    format!(
        "Created authtoken {id}{desc}\n\n  {token}\n\n\
         Save this token now: it will not be shown again.\n\
         Agents use it as BURROW_AUTHTOKEN (or `authtoken` in burrow.toml).",
        id = output::text(&v["id"]),
        desc = match v["description"].as_str() {
            Some(d) if !d.is_empty() => format!(" ({d})"),
            _ => String::new(),
        },
        token = output::text(&v["token"]),
    )
}

fn list_text(v: &Value) -> String {
    let rows: Vec<Vec<String>> = output::items(v, "authtokens")
        .iter()
        .map(|t| {
            vec![
                output::text(&t["id"]),
                output::text(&t["description"]),
                output::time(&t["created_at"], "-"),
                output::time(&t["last_used_at"], "never"),
                match t["revoked_at"] {
                    Value::Null => "active".to_owned(),
                    ref at => format!("revoked {}", output::time(at, "")),
                },
            ]
        })
        .collect();
    output::table(
        &["ID", "DESCRIPTION", "CREATED", "LAST USED", "STATUS"],
        &rows,
        "No authtokens. Create one with `burrow tokens create`.",
    )
}

fn revoked_text(id: &str, v: &Value) -> String {
    let mut out = format!("Revoked authtoken {id}");
    if let Some(n) = v["sessions_closed"].as_u64().filter(|n| *n > 0) {
        let s = if n == 1 { "" } else { "s" };
        out.push_str(&format!(" (closed {n} agent session{s})"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_shown_with_a_warning() {
        let text = created_text(&json!({"id": "t1", "description": "laptop", "token": "bt_abc"}));
        assert!(
            text.starts_with("Created authtoken t1 (laptop)\n"),
            "{text}"
        );
        assert!(text.contains("\n  bt_abc\n"), "{text}");
        assert!(text.contains("will not be shown again"), "{text}");
    }

    #[test]
    fn lists_show_status_and_never_used() {
        let text = list_text(&json!([
            {"id": "t1", "description": "", "created_at": "2026-11-26T10:00:00Z",
             "revoked_at": null, "last_used_at": null},
            {"id": "t2", "description": "ci", "created_at": "2026-11-26T10:00:00Z",
             "revoked_at": "2026-11-26T11:00:00.5Z", "last_used_at": "2026-11-26T10:30:00Z"},
        ]));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "t1  -            2026-11-26 10:00:00Z  never                 active"
        );
        assert!(lines[2].ends_with("revoked 2026-11-26 11:00:00Z"), "{text}");
        assert!(list_text(&json!([])).starts_with("No authtokens."));
    }

    #[test]
    fn revocations_say_how_many_sessions_closed() {
        assert_eq!(
            revoked_text("t1", &json!({"sessions_closed": 0})),
            "Revoked authtoken t1"
        );
        assert_eq!(
            revoked_text("t1", &json!({"sessions_closed": 2})),
            "Revoked authtoken t1 (closed 2 agent sessions)"
        );
    }
}
