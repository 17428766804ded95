//! Matching: rule matchers against a request (and status), `restrict-ips` lists against a
//! peer, and the path normalization that keeps `/%61dmin` or `/x/../admin` from slipping past
//! a `path_prefix: /admin` rule.

use std::borrow::Cow;
use std::net::IpAddr;

use http::{HeaderMap, Method, StatusCode};

use crate::model::{Matcher, RestrictIps};

impl Matcher {
    /// Whether every given condition holds. `path` is normalized; `status` is `Some` in
    /// `on_http_response`.
    pub(crate) fn matches(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        status: Option<StatusCode>,
    ) -> bool {
        self.path_prefix
            .as_ref()
            .is_none_or(|p| path.starts_with(p.as_str()))
            && (self.methods.is_empty() || self.methods.contains(method))
            && self
                .headers
                .iter()
                .all(|(k, v)| headers.get_all(k).iter().any(|have| have == v))
            && (self.status_codes.is_empty()
                || status.is_some_and(|s| self.status_codes.contains(&s.as_u16())))
    }
}

impl RestrictIps {
    /// Deny wins; then, when an allow list exists, the peer must be on it.
    pub(crate) fn allows(&self, peer: IpAddr) -> bool {
        !self.deny.iter().any(|n| n.contains(&peer))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&peer)))
    }
}

/// The path as the service will most likely see it: percent-escapes decoded, empty and `.`
/// segments dropped, `..` applied. Returns the input unchanged when there is nothing to do.
pub(crate) fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.contains('%') && !path.contains("//") && !path.contains("/.") && path.starts_with('/')
    {
        return Cow::Borrowed(path);
    }
    let decoded = percent_decode(path);
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (decoded.ends_with('/') && !segments.is_empty()) {
        out.push('/');
    }
    Cow::Owned(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    #[test]
    fn paths_normalize_like_a_server_would() {
        assert_eq!(normalize_path("/admin/x"), "/admin/x");
        assert_eq!(normalize_path("/%61dmin"), "/admin");
        assert_eq!(normalize_path("//admin"), "/admin");
        assert_eq!(normalize_path("/x/../admin/"), "/admin/");
        assert_eq!(normalize_path("/./admin"), "/admin");
        assert_eq!(normalize_path("/../../"), "/");
        assert_eq!(normalize_path("/%2"), "/%2");
        assert_eq!(normalize_path("/%zz"), "/%zz");
    }

    fn v4(a: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    proptest! {
        #[test]
        fn restrict_ips_agrees_with_a_reference(
            allow in prop::collection::vec((any::<u32>(), 0u8..=32), 0..5),
            deny in prop::collection::vec((any::<u32>(), 0u8..=32), 0..5),
            peer in any::<u32>(),
        ) {
            let net = |(a, l): (u32, u8)| ipnet::IpNet::from(ipnet::Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc());
            let r = RestrictIps { allow: allow.iter().copied().map(net).collect(), deny: deny.iter().copied().map(net).collect() };
            // Reference: compare the top `len` bits by hand.
            let inside = |&(a, l): &(u32, u8)| l == 0 || (a ^ peer) >> (32 - l as u32) == 0;
            let expected = !deny.iter().any(inside) && (allow.is_empty() || allow.iter().any(inside));
            prop_assert_eq!(r.allows(v4(peer)), expected);
        }

        #[test]
        fn restrict_ips_agrees_with_a_reference_v6(
            allow in prop::collection::vec((any::<u128>(), 0u8..=128), 0..5),
            deny in prop::collection::vec((any::<u128>(), 0u8..=128), 0..5),
            peer in any::<u128>(),
        ) {
            let net = |(a, l): (u128, u8)| ipnet::IpNet::from(ipnet::Ipv6Net::new(a.into(), l).unwrap().trunc());
            let r = RestrictIps { allow: allow.iter().copied().map(net).collect(), deny: deny.iter().copied().map(net).collect() };
            let inside = |&(a, l): &(u128, u8)| l == 0 || (a ^ peer) >> (128 - l as u32) == 0;
            let expected = !deny.iter().any(inside) && (allow.is_empty() || allow.iter().any(inside));
            prop_assert_eq!(r.allows(IpAddr::V6(peer.into())), expected);
            // An IPv6 list never matches an IPv4 peer, so only an allow list can refuse it.
            let v4 = IpAddr::V4(Ipv4Addr::from(peer as u32));
            prop_assert_eq!(r.allows(v4), allow.is_empty());
        }

        #[test]
        fn normalize_never_panics_and_is_idempotent(path in "/[a-z%./0-9]{0,30}") {
            prop_assert!(normalize_path(&path).starts_with('/'));
            let path = path.replace('%', "");
            let once = normalize_path(&path).into_owned();
            prop_assert_eq!(normalize_path(&once).into_owned(), once.clone());
        }
    }
}
