//! `burrow names reserve | list | release`: endpoint names held by the account.

use super::{Ctx, Failure, output};
use crate::api_client::{Body, segment};
use clap::Subcommand;
use http::Method;
use serde_json::{Value, json};

/// What to do with reserved names.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Reserve a name: only this account's agents can then serve <name>.<domain>.
    Reserve {
        /// The name (one DNS label, e.g. `demo`).
        name: String,
    },
    /// List the account's reserved names.
    List,
    /// Release a reserved name.
    Release {
        /// The name.
        name: String,
    },
}

pub(super) async fn run(ctx: &mut Ctx, action: Action) -> Result<(), Failure> {
    match action {
        Action::Reserve { name } => {
            let path = ctx.account_path("/reserved-names").await?;
            let body = Body::json(&json!({ "name": name }));
            let (_, reserved) = ctx.api.call(Method::POST, &path, Some(body)).await?;
            ctx.print(&reserved, |v| {
                format!("Reserved {}", v["name"].as_str().unwrap_or(&name))
            });
        }
        Action::List => {
            let path = ctx.account_path("/reserved-names").await?;
            let (_, list) = ctx.api.call(Method::GET, &path, None).await?;
            ctx.print(&list, list_text);
        }
        Action::Release { name } => {
            let path = ctx
                .account_path(&format!("/reserved-names/{}", segment(&name)))
                .await?;
            let (_, released) = ctx.api.call(Method::DELETE, &path, None).await?;
            ctx.print(&released, |_| format!("Released {name}"));
        }
    }
    Ok(())
}

fn list_text(v: &Value) -> String {
    let rows: Vec<Vec<String>> = output::items(v, "reserved_names")
        .iter()
        .map(|n| {
            vec![
                output::text(&n["name"]),
                output::time(&n["created_at"], "-"),
            ]
        })
        .collect();
    output::table(
        &["NAME", "RESERVED"],
        &rows,
        "No reserved names. Reserve one with `burrow names reserve <name>`.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_name_and_date() {
        let text = list_text(&json!({"reserved_names": [
            {"name": "demo", "account_id": "a", "created_at": "2026-11-26T10:00:00Z"}
        ]}));
        assert_eq!(text, "NAME  RESERVED\ndemo  2026-11-26 10:00:00Z");
        assert!(list_text(&json!({"reserved_names": []})).starts_with("No reserved names."));
    }
}
