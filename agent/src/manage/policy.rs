//! `burrow policy set | get | delete`: an endpoint's traffic policy, submitted as the YAML or
//! JSON file it was written in (the api validates it and keeps the text as submitted).

use super::{Ctx, Failure};
use crate::api_client::{Body, segment};
use clap::Subcommand;
use http::Method;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What to do with an endpoint's policy.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Replace the endpoint's policy with a YAML (.yaml, .yml) or JSON (.json) file.
    Set {
        /// The endpoint: a name (`demo`), a custom domain, or `tcp-<port>`.
        endpoint: String,
        /// The policy file.
        file: PathBuf,
    },
    /// Print the endpoint's policy as it was submitted (`--json`: the stored document).
    Get {
        /// The endpoint.
        endpoint: String,
    },
    /// Delete the endpoint's policy: its traffic is no longer filtered.
    Delete {
        /// The endpoint.
        endpoint: String,
    },
}

pub(super) async fn run(ctx: &mut Ctx, action: Action) -> Result<(), Failure> {
    match action {
        Action::Set { endpoint, file } => {
            let body = read_policy(&file)?;
            let path = policy_path(ctx, &endpoint).await?;
            let (_, set) = ctx.api.call(Method::PUT, &path, Some(body)).await?;
            ctx.print(&set, |v| {
                format!(
                    "Policy of {} is now version {}",
                    v["endpoint"].as_str().unwrap_or(&endpoint),
                    super::output::text(&v["version"])
                )
            });
        }
        Action::Get { endpoint } => {
            let path = policy_path(ctx, &endpoint).await?;
            let (_, got) = ctx.api.call(Method::GET, &path, None).await?;
            if ctx.json {
                let doc = &got["document"];
                println!(
                    "{}",
                    serde_json::to_string_pretty(doc).unwrap_or_else(|_| doc.to_string())
                );
            } else {
                print!("{}", source_text(&got));
            }
        }
        Action::Delete { endpoint } => {
            let path = policy_path(ctx, &endpoint).await?;
            let (_, deleted) = ctx.api.call(Method::DELETE, &path, None).await?;
            ctx.print(&deleted, |_| format!("Deleted the policy of {endpoint}"));
        }
    }
    Ok(())
}

async fn policy_path(ctx: &mut Ctx, endpoint: &str) -> Result<String, Failure> {
    ctx.account_path(&format!("/endpoints/{}/policy", segment(endpoint)))
        .await
}

/// The media type the api parses `file` as, from its extension.
fn content_type(file: &Path) -> Result<&'static str, Failure> {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("yaml" | "yml") => Ok("application/yaml"),
        Some("json") => Ok("application/json"),
        _ => Err(Failure::Usage(format!(
            "policy file {}: cannot tell YAML from JSON; name it *.yaml, *.yml or *.json",
            file.display()
        ))),
    }
}

fn read_policy(file: &Path) -> Result<Body, Failure> {
    let content_type = content_type(file)?;
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::Usage(format!("cannot read policy file {}: {e}", file.display())))?;
    Ok(Body {
        content_type,
        bytes: bytes.into(),
    })
}

/// The submitted text, ending in exactly one newline; the document itself when the api kept
/// no source.
fn source_text(v: &Value) -> String {
    let text = match v["source"].as_str() {
        Some(s) => s.to_owned(),
        None => serde_json::to_string_pretty(&v["document"]).unwrap_or_default(),
    };
    format!("{}\n", text.trim_end_matches('\n'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_extension_picks_the_media_type() {
        assert_eq!(
            content_type(Path::new("p.yaml")).unwrap(),
            "application/yaml"
        );
        assert_eq!(
            content_type(Path::new("P.YML")).unwrap(),
            "application/yaml"
        );
        assert_eq!(
            content_type(Path::new("dir/p.json")).unwrap(),
            "application/json"
        );
        let e = content_type(Path::new("policy.txt")).err().unwrap();
        assert!(e.to_string().contains("policy.txt"), "{e}");
        assert_eq!(e.exit_code(), super::super::EXIT_USAGE);
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        let e = read_policy(&missing).err().unwrap();
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
        let present = dir.path().join("p.json");
        std::fs::write(&present, "{}").unwrap();
        let body = read_policy(&present).unwrap();
        assert_eq!(
            (body.content_type, &body.bytes[..]),
            ("application/json", &b"{}"[..])
        );
    }

    #[test]
    fn the_source_prints_as_submitted() {
        let got = json!({"source": "on_http_request:\n  - actions: []\n", "document": {}});
        assert_eq!(source_text(&got), "on_http_request:\n  - actions: []\n");
        let no_source = json!({"source": null, "document": {"a": 1}});
        assert_eq!(source_text(&no_source), "{\n  \"a\": 1\n}\n");
    }
}
