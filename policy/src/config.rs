//! Reading and validating each action's `config` into its compiled form.
//!
//! Everything a request would otherwise re-check is settled here, once, at submit time:
//! CIDRs parsed (bare addresses become /32 or /128, host bits refused), header names and
//! values checked and interned, windows and status codes range-checked, secrets decoded.

use http::{HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use sha2::Digest;

use crate::jwks::JwtConfig;
use crate::model::{
    Action, AddHeaders, BasicAuth, CustomResponse, Deny, RateKey, RateLimit, Redirect,
    RemoveHeaders, RestrictIps,
};
use crate::read::{Fields, Result, fail, list, string, uint};
use crate::values::{MAX_ITEMS, body, cidr, header_name, header_pairs, ranged, status, window};
use crate::webhook::{Scheme, WebhookConfig};
use crate::yaml::Node;

/// Most CIDRs in one list.
const MAX_CIDRS: usize = 1000;

/// Reads the `config` of an action of type `kind` (the type is known to exist).
pub(crate) fn action(
    kind: &str,
    config: Option<(&Node, String)>,
    action: (&str, &Node),
) -> Result<Action> {
    let need = || {
        config
            .as_ref()
            .map(|(n, p)| (*n, p.as_str()))
            .ok_or_else(|| fail(action.0, action.1, format!("`{kind}` needs a `config`")))
    };
    Ok(match kind {
        "restrict-ips" => Action::RestrictIps(restrict_ips(need()?)?),
        "basic-auth" => Action::BasicAuth(basic_auth(need()?)?),
        "jwt-validation" => Action::JwtValidation(jwt(need()?)?),
        "rate-limit" => Action::RateLimit(rate_limit(need()?)?),
        "add-headers" => {
            let (node, path) = need()?;
            let f = Fields::new(node, path, &["headers"])?;
            let (n, p) = f.req("headers")?;
            Action::AddHeaders(AddHeaders {
                headers: header_pairs(n, &p, true)?,
            })
        }
        "remove-headers" => {
            let (node, path) = need()?;
            let f = Fields::new(node, path, &["headers"])?;
            let (n, p) = f.req("headers")?;
            let headers = list(n, &p, MAX_ITEMS, |n, p| {
                let h = header_name(n, p)?;
                if h.as_str().starts_with("x-burrow-") {
                    return Err(fail(p, n, "`x-burrow-*` headers belong to Burrow"));
                }
                Ok(h)
            })?;
            if headers.is_empty() {
                return Err(fail(&p, n, "list at least one header"));
            }
            Action::RemoveHeaders(RemoveHeaders { headers })
        }
        "verify-webhook" => Action::VerifyWebhook(webhook(need()?)?),
        "deny" => Action::Deny(match config {
            None => Deny::default(),
            Some((node, path)) => {
                let f = Fields::new(node, &path, &["status", "body"])?;
                Deny {
                    status: status(&f, "status", 400)?,
                    body: body(&f)?,
                }
            }
        }),
        "custom-response" => {
            let (node, path) = need()?;
            let f = Fields::new(node, path, &["status", "body", "headers"])?;
            f.req("status")?;
            let headers = match f.get("headers") {
                Some((n, p)) => header_pairs(n, &p, false)?,
                None => Vec::new(),
            };
            // `status` is required (checked above), so the default is never used.
            Action::CustomResponse(CustomResponse {
                status: status(&f, "status", 200)?.unwrap_or(200),
                body: body(&f)?,
                headers,
            })
        }
        "redirect" => Action::Redirect(redirect(need()?)?),
        _ => {
            return Err(fail(
                action.0,
                action.1,
                format!("unknown action type `{kind}`"),
            ));
        }
    })
}

fn restrict_ips((node, path): (&Node, &str)) -> Result<RestrictIps> {
    let f = Fields::new(node, path, &["allow", "deny"])?;
    let read = |key| match f.get(key) {
        Some((n, p)) => list(n, &p, MAX_CIDRS, cidr),
        None => Ok(Vec::new()),
    };
    let r = RestrictIps {
        allow: read("allow")?,
        deny: read("deny")?,
    };
    if r.allow.is_empty() && r.deny.is_empty() {
        return Err(fail(
            path,
            node,
            "give `allow`, `deny` or both, with at least one CIDR",
        ));
    }
    Ok(r)
}

fn basic_auth((node, path): (&Node, &str)) -> Result<BasicAuth> {
    let f = Fields::new(node, path, &["credentials", "realm"])?;
    let (n, p) = f.req("credentials")?;
    let credentials = list(n, &p, MAX_ITEMS, |n, p| {
        let c = string(n, p)?;
        match c.split_once(':') {
            Some((user, pass))
                if !user.is_empty() && !pass.is_empty() && !c.chars().any(char::is_control) =>
            {
                Ok(c.to_owned())
            }
            _ => Err(fail(
                p,
                n,
                "expected `user:password` with a non-empty user and password",
            )),
        }
    })?;
    if credentials.is_empty() {
        return Err(fail(&p, n, "list at least one `user:password`"));
    }
    let realm = match f.get("realm") {
        Some((n, p)) => {
            let r = string(n, &p)?;
            if r.is_empty()
                || r.len() > 128
                || !r
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
            {
                return Err(fail(
                    &p,
                    n,
                    "expected 1 to 128 printable ASCII characters without `\"` or `\\`",
                ));
            }
            Some(r.to_owned())
        }
        None => None,
    };
    let digests = credentials
        .iter()
        .map(|c| sha2::Sha256::digest(c.as_bytes()).into())
        .collect();
    Ok(BasicAuth {
        credentials,
        realm,
        digests,
    })
}

fn jwt((node, path): (&Node, &str)) -> Result<JwtConfig> {
    let keys = [
        "jwks_url",
        "issuer",
        "audiences",
        "algorithms",
        "header",
        "leeway_secs",
    ];
    let f = Fields::new(node, path, &keys)?;
    let (n, p) = f.req("jwks_url")?;
    let url = string(n, &p)?;
    check_jwks_url(url).map_err(|m| fail(&p, n, m))?;
    let opt_string = |key| {
        f.get(key)
            .map(|(n, p)| string(n, &p).map(str::to_owned))
            .transpose()
    };
    let audiences = match f.get("audiences") {
        Some((n, p)) => list(n, &p, MAX_ITEMS, |n, p| string(n, p).map(str::to_owned))?,
        None => Vec::new(),
    };
    let algorithms = match f.get("algorithms") {
        Some((n, p)) => list(n, &p, 16, |n, p| {
            let a = string(n, p)?;
            match a.parse::<Algorithm>() {
                Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Err(fail(
                    p,
                    n,
                    format!(
                        "`{a}` is symmetric; a JWKS publishes public keys (use RS*, PS*, ES256, ES384 or EdDSA)"
                    ),
                )),
                Ok(alg) => Ok(alg),
                Err(_) => Err(fail(
                    p,
                    n,
                    format!(
                        "unknown algorithm `{a}`; expected RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
                    ),
                )),
            }
        })?,
        None => Vec::new(),
    };
    let header = f
        .get("header")
        .map(|(n, p)| header_name(n, &p))
        .transpose()?;
    let leeway_secs = f
        .get("leeway_secs")
        .map(|(n, p)| ranged(n, &p, 0, 3600))
        .transpose()?;
    Ok(JwtConfig {
        jwks_url: url.to_owned(),
        issuer: opt_string("issuer")?,
        audiences,
        algorithms,
        header,
        leeway_secs,
    })
}

/// `https://...`, or `http://` to a loopback host (a JWKS over plain HTTP could be swapped).
fn check_jwks_url(url: &str) -> std::result::Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(()),
        Some("http") if is_loopback_host(host) => Ok(()),
        _ => Err(format!(
            "`{url}` must be an https:// URL (http:// only for localhost, 127.0.0.0/8 or [::1])"
        )),
    }
}

/// `localhost`, or an IP address literal in 127.0.0.0/8 or `::1`. A name is never taken
/// for an address by its look (`127.evil.example` is a name anyone can point anywhere).
fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    literal
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

fn rate_limit((node, path): (&Node, &str)) -> Result<RateLimit> {
    let f = Fields::new(node, path, &["name", "capacity", "window", "key"])?;
    let (n, p) = f.req("name")?;
    let name = string(n, &p)?;
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(fail(
            &p,
            n,
            "expected 1 to 64 letters, digits, `-`, `_` or `.`",
        ));
    }
    let (n, p) = f.req("capacity")?;
    let capacity = ranged(n, &p, 1, 1_000_000_000)?;
    let (n, p) = f.req("window")?;
    let window = window(string(n, &p)?).map_err(|m| fail(&p, n, m))?;
    let key = match f.get("key") {
        None => RateKey::Ip,
        Some((n, p)) => match string(n, &p)? {
            "ip" => RateKey::Ip,
            k => match k.strip_prefix("header:") {
                Some(h) => RateKey::Header(
                    HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| fail(&p, n, format!("`{h}` is not a valid header name")))?,
                ),
                None => {
                    return Err(fail(
                        &p,
                        n,
                        format!("unknown key `{k}`; expected `ip` or `header:<name>`"),
                    ));
                }
            },
        },
    };
    Ok(RateLimit {
        name: name.to_owned(),
        capacity,
        window,
        key,
    })
}

fn webhook((node, path): (&Node, &str)) -> Result<WebhookConfig> {
    let f = Fields::new(node, path, &["scheme", "secret", "tolerance_secs"])?;
    let (n, p) = f.req("scheme")?;
    let scheme = match string(n, &p)? {
        "stripe" => Scheme::Stripe,
        "standard" => Scheme::Standard,
        s => {
            return Err(fail(
                &p,
                n,
                format!("unknown scheme `{s}`; expected `stripe` or `standard`"),
            ));
        }
    };
    let (n, p) = f.req("secret")?;
    let secret = string(n, &p)?.to_owned();
    let tolerance = f
        .get("tolerance_secs")
        .map(|(n, p)| ranged(n, &p, 1, 86_400))
        .transpose()?;
    WebhookConfig::new(scheme, secret, tolerance).map_err(|m| fail(&p, n, m))
}

fn redirect((node, path): (&Node, &str)) -> Result<Redirect> {
    let f = Fields::new(node, path, &["to", "status"])?;
    let (n, p) = f.req("to")?;
    let to = string(n, &p)?;
    let absolute = to.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    });
    let path_only = to.starts_with('/') && !to.starts_with("//") && !to.starts_with("/\\");
    let value = HeaderValue::from_str(to)
        .ok()
        .filter(|v| v.to_str().is_ok());
    let to = match value {
        Some(v) if absolute || path_only => v,
        _ => {
            return Err(fail(
                &p,
                n,
                format!("`{to}` must be an absolute http(s) URL or a path starting with `/`"),
            ));
        }
    };
    let status = match f.get("status") {
        Some((n, p)) => match uint(n, &p)? {
            s @ (301 | 302 | 303 | 307 | 308) => Some(s as u16),
            s => {
                return Err(fail(
                    &p,
                    n,
                    format!("redirect status must be 301, 302, 303, 307 or 308, found {s}"),
                ));
            }
        },
        None => None,
    };
    Ok(Redirect { to, status })
}
