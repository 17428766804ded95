//! `burrow tokens | names | domains | policy`: account management commands that drive the
//! REST api with an API key (through [`crate::api_client`]).
//!
//! Each command sends one or two requests and prints a readable line or table, or with
//! `--json` the api's JSON as answered. Exit codes: 0 done; 1 the api refused (its message
//! on stderr as `error: <message>`) or could not be reached (naming the URL); 2 the command
//! cannot be sent as given (clap's usage errors, no API key, a bad `--api-url`, no account
//! for a platform key, an unreadable policy file).

mod domains;
mod names;
pub mod output;
mod policy;
mod tokens;

use crate::api_client::{ApiClient, ApiError};
use clap::{Args, Subcommand};
use http::Method;
use serde_json::Value;

/// Exit code when the api refused or could not be reached.
pub const EXIT_REFUSED: i32 = 1;
/// Exit code when the command cannot be sent as given (the same as clap's usage errors).
pub const EXIT_USAGE: i32 = 2;

/// The account management subcommands of `burrow`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list and revoke the account's authtokens (what agents connect with).
    Tokens {
        /// Where the api is and which key to use.
        #[command(flatten)]
        api: ApiArgs,
        /// What to do.
        #[command(subcommand)]
        action: tokens::Action,
    },
    /// Reserve, list and release endpoint names (<name>.<domain>) for the account.
    Names {
        /// Where the api is and which key to use.
        #[command(flatten)]
        api: ApiArgs,
        /// What to do.
        #[command(subcommand)]
        action: names::Action,
    },
    /// Add, verify, list and remove the account's custom domains.
    Domains {
        /// Where the api is and which key to use.
        #[command(flatten)]
        api: ApiArgs,
        /// What to do.
        #[command(subcommand)]
        action: domains::Action,
    },
    /// Set, show and delete an endpoint's traffic policy.
    Policy {
        /// Where the api is and which key to use.
        #[command(flatten)]
        api: ApiArgs,
        /// What to do.
        #[command(subcommand)]
        action: policy::Action,
    },
}

/// Where the api is and who is calling it; accepted before or after the action.
#[derive(Args)]
pub struct ApiArgs {
    /// Base URL of the Burrow api.
    #[arg(
        long,
        global = true,
        env = "BURROW_API_URL",
        default_value = "http://127.0.0.1:17080"
    )]
    api_url: String,
    /// API key to authenticate with.
    #[arg(long, global = true, env = "BURROW_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Account to act on. Default: the API key's own account (platform keys must pass it).
    #[arg(long, global = true)]
    account: Option<String>,
    /// Print the api's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

impl std::fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiArgs")
            .field("api_url", &self.api_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "MASKED"))
            .field("account", &self.account)
            .field("json", &self.json)
            .finish()
    }
}

/// Why a command failed; decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The command cannot be sent as given.
    #[error("{0}")]
    Usage(String),
    /// The api refused or could not be reached.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl Failure {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Usage(_) | Failure::Api(ApiError::BadUrl { .. }) => EXIT_USAGE,
            Failure::Api(_) => EXIT_REFUSED,
        }
    }

    /// What goes on stderr: `error: <message>`, plus where in the document for a refused
    /// policy (`source` names the submitted file).
    pub fn render(&self, source: Option<&str>) -> String {
        match self {
            Failure::Api(ApiError::Refused {
                message,
                field,
                line,
                ..
            }) if field.is_some() || line.is_some() => {
                let mut at = Vec::new();
                match (source, line) {
                    (Some(path), Some(l)) => at.push(format!("{path} line {l}")),
                    (None, Some(l)) => at.push(format!("line {l}")),
                    (Some(path), None) => at.push(path.to_owned()),
                    (None, None) => {}
                }
                if let Some(f) = field {
                    at.push(format!("field `{f}`"));
                }
                // The api's message may lead with the same place (`line 3: field: ...`).
                let mut message = message.as_str();
                if let Some(l) = line {
                    message = message
                        .strip_prefix(&format!("line {l}: "))
                        .unwrap_or(message);
                }
                if let Some(f) = field {
                    message = message.strip_prefix(&format!("{f}: ")).unwrap_or(message);
                }
                format!("error: {message}\n  at {}", at.join(", "))
            }
            other => format!("error: {other}"),
        }
    }
}

/// What a command runs with: the client, the flags, and the account once known.
pub struct Ctx {
    api: ApiClient,
    account: Option<String>,
    json: bool,
}

impl Ctx {
    fn new(args: ApiArgs) -> Result<Self, Failure> {
        let key = args
            .api_key
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| {
                Failure::Usage(
                "no API key: set BURROW_API_KEY or pass --api-key (an API key, not an authtoken)"
                    .into(),
            )
            })?;
        Ok(Ctx {
            api: ApiClient::new(&args.api_url, key.trim())?,
            account: args.account,
            json: args.json,
        })
    }

    /// The account to act on: `--account`, else the API key's own (`GET /v1/me`).
    async fn account(&mut self) -> Result<String, Failure> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let (_, me) = self.api.call(Method::GET, "/v1/me", None).await?;
        let account = match me["account_id"].as_str() {
            Some(a) => a.to_owned(),
            None => {
                return Err(Failure::Usage(format!(
                    "this API key ({} role) belongs to no account: pass --account <id>",
                    me["role"].as_str().unwrap_or("platform")
                )));
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// `/v1/accounts/{account}{rest}`.
    async fn account_path(&mut self, rest: &str) -> Result<String, Failure> {
        let account = self.account().await?;
        Ok(format!(
            "/v1/accounts/{}{rest}",
            crate::api_client::segment(&account)
        ))
    }

    /// Prints `value` as pretty JSON when `--json` was given, else `human(value)`; an empty
    /// answer (204) prints nothing with `--json`.
    fn print(&self, value: &Value, human: impl FnOnce(&Value) -> String) {
        let text = if self.json {
            match value {
                Value::Null => return,
                v => serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()),
            }
        } else {
            human(value)
        };
        println!("{}", text.trim_end_matches('\n'));
    }
}

/// Runs `command`; prints the outcome and answers the process exit code.
pub async fn run(command: Command) -> i32 {
    // A refused policy names the file it came from.
    let source = match &command {
        Command::Policy {
            action: policy::Action::Set { file, .. },
            ..
        } => Some(file.display().to_string()),
        _ => None,
    };
    let result = async {
        match command {
            Command::Tokens { api, action } => tokens::run(&mut Ctx::new(api)?, action).await,
            Command::Names { api, action } => names::run(&mut Ctx::new(api)?, action).await,
            Command::Domains { api, action } => domains::run(&mut Ctx::new(api)?, action).await,
            Command::Policy { api, action } => policy::run(&mut Ctx::new(api)?, action).await,
        }
    }
    .await;
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", e.render(source.as_deref()));
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn refused(field: Option<&str>, line: Option<u64>) -> Failure {
        Failure::Api(ApiError::Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_policy".into(),
            message: "unknown action `dney`".into(),
            field: field.map(str::to_owned),
            line,
        })
    }

    #[test]
    fn policy_refusals_say_where() {
        assert_eq!(
            refused(Some("on_http_request[0].actions[0].type"), Some(3)).render(Some("p.yaml")),
            "error: unknown action `dney`\n  at p.yaml line 3, field `on_http_request[0].actions[0].type`"
        );
        assert_eq!(
            refused(None, Some(7)).render(None),
            "error: unknown action `dney`\n  at line 7"
        );
        assert_eq!(
            refused(None, None).render(Some("p.yaml")),
            "error: unknown action `dney`"
        );
        let repeated = Failure::Api(ApiError::Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_policy".into(),
            message: "line 3: on_http_request[0]: invalid YAML".into(),
            field: Some("on_http_request[0]".into()),
            line: Some(3),
        });
        assert_eq!(
            repeated.render(Some("p.yaml")),
            "error: invalid YAML\n  at p.yaml line 3, field `on_http_request[0]`"
        );
    }

    #[test]
    fn exit_codes_separate_usage_from_refusals() {
        assert_eq!(refused(None, None).exit_code(), EXIT_REFUSED);
        let unreachable = Failure::Api(ApiError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        });
        assert_eq!(unreachable.exit_code(), EXIT_REFUSED);
        assert_eq!(
            unreachable.render(None),
            "error: cannot reach the api at http://127.0.0.1:1: connection refused"
        );
        assert_eq!(Failure::Usage("x".into()).exit_code(), EXIT_USAGE);
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("burrow").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn the_api_flags_go_before_or_after_the_action() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        for args in [
            &[
                "tokens",
                "list",
                "--json",
                "--account",
                "a1",
                "--api-key",
                "k",
            ][..],
            &[
                "tokens",
                "--json",
                "--account",
                "a1",
                "--api-key",
                "k",
                "list",
            ][..],
        ] {
            match parse(args).unwrap() {
                Command::Tokens {
                    api,
                    action: tokens::Action::List,
                } => {
                    assert!(api.json);
                    assert_eq!(api.account.as_deref(), Some("a1"));
                    assert_eq!(api.api_key.as_deref(), Some("k"));
                    assert!(!format!("{api:?}").contains("\"k\""), "{api:?}");
                }
                other => panic!("{args:?} parsed as {other:?}"),
            }
        }
        match parse(&[
            "names",
            "release",
            "demo",
            "--api-url",
            "https://api.example.com",
        ]) {
            Ok(Command::Names {
                api,
                action: names::Action::Release { name },
            }) => {
                assert_eq!(name, "demo");
                assert_eq!(api.api_url, "https://api.example.com");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_arguments_are_usage_errors() {
        let e = parse(&["policy", "set", "demo"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert_eq!(e.exit_code(), EXIT_USAGE);
        let e = parse(&["domains"]).unwrap_err();
        assert_eq!(e.exit_code(), EXIT_USAGE);
    }

    #[test]
    fn a_missing_key_names_the_variable() {
        let args = ApiArgs {
            api_url: "http://127.0.0.1:17080".into(),
            api_key: Some("  ".into()),
            account: None,
            json: false,
        };
        let e = Ctx::new(args).err().unwrap();
        assert_eq!(e.exit_code(), EXIT_USAGE);
        assert!(e.to_string().contains("BURROW_API_KEY"), "{e}");
    }
}
