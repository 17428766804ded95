//! Validated scalar values shared by the action readers: CIDRs, windows, ranged integers,
//! status codes, bodies, header names and values.

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::read::{Fields, Result, fail, join, map, string, uint};
use crate::yaml::Node;

/// Most headers in one action (and most credentials, audiences, ...).
pub(crate) const MAX_ITEMS: usize = 100;
/// Longest response body a policy may carry.
const MAX_BODY: usize = 64 * 1024;
/// Longest window of a rate limit.
const MAX_WINDOW: Duration = Duration::from_secs(86_400);

/// Headers a policy may not set: they frame the message or steer Burrow itself.
fn reserved(name: &HeaderName) -> bool {
    const FRAMING: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "content-length",
    ];
    FRAMING.contains(&name.as_str()) || name.as_str().starts_with("x-burrow-")
}

/// An IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it maps: peers
/// are matched in their canonical form, where mapped addresses are IPv4.
fn unmap(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// `10.0.0.0/8`, `::1/128`, or a bare address.
pub(crate) fn cidr(node: &Node, path: &str) -> Result<IpNet> {
    let text = string(node, path)?.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(unmap(IpNet::from(ip)));
    }
    let net: IpNet = text.parse().map_err(|_| {
        fail(
            path,
            node,
            format!("`{text}` is not a CIDR (like 10.0.0.0/8 or 2001:db8::/32) or an IP address"),
        )
    })?;
    if net.trunc() != net {
        return Err(fail(
            path,
            node,
            format!(
                "`{text}` has host bits set; did you mean `{}`?",
                net.trunc()
            ),
        ));
    }
    Ok(unmap(net))
}

/// `30s`, `1m`, `1h`: a whole number of seconds, minutes or hours, up to a day.
pub(crate) fn window(text: &str) -> std::result::Result<Duration, String> {
    let bad = || {
        format!(
            "`{text}` is not a window; expected a number and a unit, like 30s, 1m or 1h (at most 24h)"
        )
    };
    let unit = match text.as_bytes().last() {
        Some(b's') => 1,
        Some(b'm') => 60,
        Some(b'h') => 3600,
        _ => return Err(bad()),
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let d = Duration::from_secs(n.checked_mul(unit).ok_or_else(bad)?);
    if d.is_zero() || d > MAX_WINDOW {
        return Err(bad());
    }
    Ok(d)
}

/// An integer in `min..=max`.
pub(crate) fn ranged(node: &Node, path: &str, min: u64, max: u64) -> Result<u64> {
    let v = uint(node, path)?;
    if !(min..=max).contains(&v) {
        return Err(fail(
            path,
            node,
            format!("must be between {min} and {max}, found {v}"),
        ));
    }
    Ok(v)
}

/// An optional HTTP status of at least `min` (and at most 599).
pub(crate) fn status(f: &Fields<'_>, key: &str, min: u64) -> Result<Option<u16>> {
    f.get(key)
        .map(|(n, p)| ranged(n, &p, min, 599).map(|s| s as u16))
        .transpose()
}

pub(crate) fn body(f: &Fields<'_>) -> Result<Option<String>> {
    let Some((n, p)) = f.get("body") else {
        return Ok(None);
    };
    let b = string(n, &p)?;
    if b.len() > MAX_BODY {
        return Err(fail(&p, n, format!("at most {MAX_BODY} bytes")));
    }
    Ok(Some(b.to_owned()))
}

pub(crate) fn header_name(node: &Node, path: &str) -> Result<HeaderName> {
    let s = string(node, path)?;
    HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| fail(path, node, format!("`{s}` is not a valid header name")))
}

pub(crate) fn header_value(node: &Node, path: &str) -> Result<HeaderValue> {
    let s = string(node, path)?;
    HeaderValue::from_str(s)
        .ok()
        .filter(|v| v.to_str().is_ok())
        .ok_or_else(|| {
            fail(
                path,
                node,
                "header values must be printable ASCII (no control characters)",
            )
        })
}

/// A mapping of header names to values to put on a message (framing and Burrow's own headers
/// refused); `required`: at least one.
pub(crate) fn header_pairs(
    node: &Node,
    path: &str,
    required: bool,
) -> Result<Vec<(HeaderName, HeaderValue)>> {
    let entries = map(node, path, MAX_ITEMS)?;
    if entries.len() > MAX_ITEMS || (required && entries.is_empty()) {
        return Err(fail(path, node, format!("list 1 to {MAX_ITEMS} headers")));
    }
    entries
        .iter()
        .map(|e| {
            let p = join(path, &e.key);
            let at = |m: String| crate::PolicyError::new(&p, Some(e.line), m);
            let name = HeaderName::from_bytes(e.key.as_bytes())
                .map_err(|_| at(format!("`{}` is not a valid header name", e.key)))?;
            if reserved(&name) {
                return Err(at(format!(
                    "`{name}` cannot be set by a policy (message framing or Burrow's own header)"
                )));
            }
            Ok((name, header_value(&e.value, &p)?))
        })
        .collect()
}
