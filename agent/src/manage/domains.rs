//! `burrow domains add | verify | list | remove`: the account's custom domains, proven by a
//! DNS TXT record before they serve.

use super::{Ctx, Failure, output};
use crate::api_client::{Body, segment};
use clap::Subcommand;
use http::Method;
use serde_json::{Value, json};

/// What to do with custom domains.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Add a custom domain; prints the DNS TXT record that proves you control it.
    Add {
        /// The domain (`app.example.com`).
        domain: String,
    },
    /// Ask the api to check the domain's TXT record now.
    Verify {
        /// The domain.
        domain: String,
    },
    /// List the account's custom domains and their status.
    List,
    /// Remove a custom domain.
    Remove {
        /// The domain.
        domain: String,
    },
}

pub(super) async fn run(ctx: &mut Ctx, action: Action) -> Result<(), Failure> {
    match action {
        Action::Add { domain } => {
            let path = ctx.account_path("/domains").await?;
            let body = Body::json(&json!({ "domain": domain }));
            let (_, added) = ctx.api.call(Method::POST, &path, Some(body)).await?;
            ctx.print(&added, added_text);
        }
        Action::Verify { domain } => {
            let path = ctx
                .account_path(&format!("/domains/{}/verify", segment(&domain)))
                .await?;
            let (_, verified) = ctx.api.call(Method::POST, &path, None).await?;
            ctx.print(&verified, |v| {
                format!(
                    "{} is {}",
                    v["domain"].as_str().unwrap_or(&domain),
                    v["status"].as_str().unwrap_or("verified")
                )
            });
        }
        Action::List => {
            let path = ctx.account_path("/domains").await?;
            let (_, list) = ctx.api.call(Method::GET, &path, None).await?;
            ctx.print(&list, list_text);
        }
        Action::Remove { domain } => {
            let path = ctx
                .account_path(&format!("/domains/{}", segment(&domain)))
                .await?;
            let (_, removed) = ctx.api.call(Method::DELETE, &path, None).await?;
            ctx.print(&removed, |_| format!("Removed {domain}"));
        }
    }
    Ok(())
}

fn added_text(v: &Value) -> String {
    let domain = output::text(&v["domain"]);
    format!(
        "Added {domain} (status: {status})\n\n\
         Create this DNS TXT record, then run `burrow domains verify {domain}`:\n\n\
         {record}",
        status = output::text(&v["status"]),
        record = output::table(
            &["TYPE", "NAME", "VALUE"],
            &[vec![
                "TXT".to_owned(),
                output::text(&v["txt_record"]["name"]),
                output::text(&v["txt_record"]["value"]),
            ]],
            "",
        )
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n"),
    )
}

fn list_text(v: &Value) -> String {
    let rows: Vec<Vec<String>> = output::items(v, "domains")
        .iter()
        .map(|d| {
            vec![
                output::text(&d["domain"]),
                output::text(&d["status"]),
                output::text(&d["txt_record"]["name"]),
                output::time(&d["created_at"], "-"),
            ]
        })
        .collect();
    output::table(
        &["DOMAIN", "STATUS", "TXT RECORD", "ADDED"],
        &rows,
        "No custom domains. Add one with `burrow domains add <domain>`.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_prints_the_record_to_create() {
        let text = added_text(&json!({
            "domain": "app.example.com", "status": "pending", "account_id": "a",
            "txt_record": {"name": "_burrow-challenge.app.example.com", "value": "burrow-verify=abc"},
            "created_at": "2026-11-26T10:00:00Z"
        }));
        assert!(
            text.starts_with("Added app.example.com (status: pending)\n"),
            "{text}"
        );
        assert!(
            text.contains("`burrow domains verify app.example.com`"),
            "{text}"
        );
        assert!(
            text.ends_with("  TXT   _burrow-challenge.app.example.com  burrow-verify=abc"),
            "{text}"
        );
    }

    #[test]
    fn lists_accept_both_shapes() {
        let one = json!({"domain": "a.example.com", "status": "verified",
                         "txt_record": {"name": "_x.a.example.com"}, "created_at": null});
        let wrapped = list_text(&json!({ "domains": [one.clone()] }));
        assert_eq!(wrapped, list_text(&json!([one])));
        assert!(wrapped.contains("a.example.com  verified"), "{wrapped}");
    }
}
