//! PROXY protocol version 2 (haproxy.org/download/2.9/doc/proxy-protocol.txt), binary form:
//! how a TCP endpoint tells the local service who the visitor really is.
//!
//! Only the `PROXY` command over TCP (IPv4 or IPv6) is produced; the decoder also accepts
//! `LOCAL` and skips TLVs, and never reads past the header it announces.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Header for a connection from `source` to `destination`. Mixed families are sent as IPv6
/// (IPv4 mapped).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11); // TCP over IPv4
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21); // TCP over IPv6
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `(source, destination)` for `PROXY` over TCP/UDP; `None` for `LOCAL` or unknown families.
    pub addresses: Option<(SocketAddr, SocketAddr)>,
    /// Bytes the header took.
    pub len: usize,
}

/// Why bytes are not a v2 header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The signature does not match.
    #[error("not a PROXY protocol v2 header")]
    Signature,
    /// Version other than 2, or a command other than LOCAL/PROXY.
    #[error("unsupported PROXY protocol version/command byte {0:#04x}")]
    VersionCommand(u8),
    /// The announced address block is too short for its family.
    #[error("address block of {0} bytes is too short for its address family")]
    Truncated(usize),
}

/// Parses a header from the front of `buf`; `Ok(None)` when more bytes are needed.
pub fn decode_v2(buf: &[u8]) -> Result<Option<Header>, DecodeError> {
    let prefix = buf.len().min(12);
    if buf[..prefix] != SIGNATURE[..prefix] {
        return Err(DecodeError::Signature);
    }
    let Some(fixed) = buf.get(..16) else {
        return Ok(None);
    };
    let ver_cmd = fixed[12];
    if ver_cmd >> 4 != 2 || ver_cmd & 0x0f > 1 {
        return Err(DecodeError::VersionCommand(ver_cmd));
    }
    let block_len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    let Some(block) = buf.get(16..16 + block_len) else {
        return Ok(None);
    };
    let len = 16 + block_len;
    if ver_cmd & 0x0f == 0 {
        return Ok(Some(Header {
            addresses: None,
            len,
        }));
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let addresses = match fixed[13] >> 4 {
        1 => {
            if block.len() < 12 {
                return Err(DecodeError::Truncated(block.len()));
            }
            let ip = |b: &[u8]| IpAddr::from([b[0], b[1], b[2], b[3]]);
            Some((
                SocketAddr::new(ip(&block[0..4]), port(&block[8..10])),
                SocketAddr::new(ip(&block[4..8]), port(&block[10..12])),
            ))
        }
        2 => {
            if block.len() < 36 {
                return Err(DecodeError::Truncated(block.len()));
            }
            let ip = |b: &[u8]| {
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(o))
            };
            Some((
                SocketAddr::new(ip(&block[0..16]), port(&block[32..34])),
                SocketAddr::new(ip(&block[16..32]), port(&block[34..36])),
            ))
        }
        _ => None,
    };
    Ok(Some(Header { addresses, len }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ipv4_header_matches_the_spec_layout() {
        let h = encode_v2(
            "192.0.2.1:51000".parse().unwrap(),
            "127.0.0.1:20000".parse().unwrap(),
        );
        assert_eq!(h.len(), 28);
        assert_eq!(&h[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&h[16..20], &[192, 0, 2, 1]);
        assert_eq!(&h[24..26], &51000u16.to_be_bytes());
    }

    #[test]
    fn local_command_and_bad_input() {
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            decode_v2(&local),
            Ok(Some(Header {
                addresses: None,
                len: 16
            }))
        );
        assert_eq!(decode_v2(b"GET / HTTP/1.1"), Err(DecodeError::Signature));
        let mut v1 = SIGNATURE.to_vec();
        v1.extend_from_slice(&[0x11, 0x11, 0, 0]);
        assert_eq!(decode_v2(&v1), Err(DecodeError::VersionCommand(0x11)));
    }

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        ]
    }

    proptest! {
        #[test]
        fn roundtrip(src in addr(), dst in addr(), trailing in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut bytes = encode_v2(src, dst);
            let n = bytes.len();
            bytes.extend_from_slice(&trailing);
            let h = decode_v2(&bytes).unwrap().unwrap();
            prop_assert_eq!(h.len, n);
            let (s, d) = h.addresses.unwrap();
            let same = |a: SocketAddr, b: SocketAddr| {
                a.port() == b.port() && match (a.ip(), b.ip()) {
                    (IpAddr::V6(x), IpAddr::V4(y)) => x == y.to_ipv6_mapped(),
                    (x, y) => x == y,
                }
            };
            prop_assert!(same(s, src) && same(d, dst));
        }

        #[test]
        fn prefixes_need_more_bytes(src in addr(), dst in addr(), cut in 0usize..64) {
            let bytes = encode_v2(src, dst);
            let cut = cut % bytes.len();
            prop_assert_eq!(decode_v2(&bytes[..cut]), Ok(None));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Ok(Some(h)) = decode_v2(&bytes) {
                prop_assert!(h.len <= bytes.len());
            }
        }
    }
}
