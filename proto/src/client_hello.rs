//! Peeking at a TLS ClientHello: the server name (SNI) and ALPN list a visitor's first flight
//! announces, read before any TLS is spoken.
//!
//! The relay reads the first bytes of every incoming TLS connection and calls [`peek`] on them:
//! the SNI decides whether the connection belongs to a TLS-passthrough endpoint (its bytes,
//! including this ClientHello, are forwarded raw to the agent) or is terminated by the relay,
//! and in that case which HTTPS certificate to present. Nothing here consumes or changes the
//! bytes, so the caller can replay them unchanged to whichever side ends up speaking TLS.
//!
//! The parser is pure and bounded: it handles a ClientHello fragmented over several handshake
//! records (RFC 8446 §5.1), refuses one longer than [`MAX_HELLO`] and never asks for more
//! than [`MAX_PEEK`] bytes in total, so a caller that stops reading at [`MAX_PEEK`] always gets
//! an answer. Every read is checked; malformed input yields [`Peek::Invalid`], never a panic.
//! Allocation is limited to reassembling a fragmented hello (at most [`MAX_HELLO`] bytes) and
//! the returned names.
//!
//! Layout (RFC 8446 §4.1.2, RFC 6066 §3, RFC 7301 §3.1): record header `type(1)=22
//! version(2) length(2)`, handshake header `type(1)=1 length(3)`, then `legacy_version(2)
//! random(32) session_id<0..32> cipher_suites<2..2^16-2> compression_methods<1..2^8-1>
//! extensions<0..2^16-1>` (the extensions block may be absent in pre-TLS-1.3 hellos).

use std::borrow::Cow;

/// Largest ClientHello handshake message accepted, its 4-byte handshake header included.
pub const MAX_HELLO: usize = 16 * 1024;

/// Most bytes the relay buffers while peeking: a [`MAX_HELLO`] hello in one record
/// (5-byte header) fits with room to spare for a smaller hello split over many records.
/// [`peek`] never answers [`Peek::NeedMore`] for a buffer this long or longer.
pub const MAX_PEEK: usize = 17 * 1024;

/// Largest TLS plaintext record fragment (2^14 bytes, RFC 8446 §5.1).
const MAX_RECORD: usize = 1 << 14;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const NAME_TYPE_HOST_NAME: u8 = 0;

/// What the relay needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// First `host_name` of the `server_name` extension: ASCII lowercase letters, digits, `-`
    /// and `.`, without a trailing dot. `None` when the client sent no host name.
    pub server_name: Option<String>,
    /// Protocol names of the ALPN extension, in the client's order; empty when absent.
    pub alpn: Vec<Vec<u8>>,
}

/// Outcome of [`peek`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// `buf` holds only the start of a ClientHello; read more and call again.
    NeedMore,
    /// A complete ClientHello was parsed.
    Hello(ClientHello),
    /// Not a TLS ClientHello (or malformed); the reason is for logs.
    Invalid(&'static str),
}

/// Parses the ClientHello at the start of `buf` (bytes after it are ignored).
///
/// [`Peek::NeedMore`] is returned only when some continuation of `buf` could still be a valid
/// ClientHello that ends within [`MAX_PEEK`] bytes; in particular never for
/// `buf.len() >= MAX_PEEK`.
pub fn peek(buf: &[u8]) -> Peek {
    let gathered = match gather(buf) {
        Ok(g) => g,
        Err(reason) => return Peek::Invalid(reason),
    };
    // The handshake header is known once 4 handshake bytes arrived; the body may be partial,
    // in which case parsing stops at the first missing byte (`Short`) unless the bytes present
    // already prove it malformed.
    let Some(body_len) = gathered.body_len else {
        return Peek::NeedMore;
    };
    let body = gathered.message.get(4..).unwrap_or_default();
    match parse_body(Reader::partial(body, body_len)) {
        Ok(hello) if gathered.complete => Peek::Hello(hello),
        // Unreachable: a parse that reached the declared end had every byte.
        Ok(_) | Err(Stop::Short) => Peek::NeedMore,
        Err(Stop::Bad(reason)) => Peek::Invalid(reason),
    }
}

/// The handshake bytes found in the records at the start of a buffer.
struct Gathered<'a> {
    /// Handshake bytes present, header included (borrowed when they sit in one record).
    message: Cow<'a, [u8]>,
    /// Declared body length, once the 4-byte handshake header is present.
    body_len: Option<usize>,
    /// Whether `message` holds the whole ClientHello.
    complete: bool,
}

/// Walks the handshake records at the start of `buf` and concatenates their fragments until
/// the ClientHello message is complete or the buffer ends. Fails on anything that no further
/// bytes could fix: another content type, an oversized or empty record, a message other than
/// ClientHello, a hello over [`MAX_HELLO`], or one that cannot end within [`MAX_PEEK`].
fn gather(buf: &[u8]) -> Result<Gathered<'_>, &'static str> {
    let mut message: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut total: Option<usize> = None; // handshake message length, header included
    let mut pos = 0;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        let partial = |message, total: Option<usize>| Gathered {
            message,
            body_len: total.map(|t| t - 4),
            complete: false,
        };
        if let Some(&content_type) = rest.first()
            && content_type != CONTENT_HANDSHAKE
        {
            return Err(if pos == 0 {
                "not a TLS handshake record"
            } else {
                "ClientHello interleaved with a non-handshake record"
            });
        }
        if let Some(&major) = rest.get(1)
            && major != 3
        {
            return Err("record version is not TLS");
        }
        let Some(&[_, _, _, hi, lo]) = rest.get(..5) else {
            return Ok(partial(message, total));
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len == 0 {
            return Err("empty handshake record");
        }
        if len > MAX_RECORD {
            return Err("record longer than 2^14 bytes");
        }
        let record_end = pos + 5 + len;
        if record_end > MAX_PEEK {
            return Err("ClientHello does not fit in MAX_PEEK bytes");
        }
        let fragment = rest.get(5..).unwrap_or_default();
        let fragment = fragment.get(..len).unwrap_or(fragment);
        // Handshake bytes before this record, and once this record is complete.
        let before = message.len();
        let after = before + len;
        if message.is_empty() {
            message = Cow::Borrowed(fragment);
        } else {
            message.to_mut().extend_from_slice(fragment);
        }
        if let Some(&msg_type) = message.first()
            && msg_type != HANDSHAKE_CLIENT_HELLO
        {
            return Err("first handshake message is not a ClientHello");
        }
        if total.is_none()
            && let Some(&[_, a, b, c]) = message.get(..4)
        {
            let t = 4 + (usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c));
            if t > MAX_HELLO {
                return Err("ClientHello longer than MAX_HELLO");
            }
            total = Some(t);
        }
        if let Some(t) = total {
            if after > t {
                return Err("handshake record continues past the ClientHello");
            }
            // The rest of the hello needs at least one more record header.
            if after < t && record_end + 5 + (t - after) > MAX_PEEK {
                return Err("ClientHello does not fit in MAX_PEEK bytes");
            }
        }
        if fragment.len() < len {
            return Ok(partial(message, total));
        }
        if total == Some(after) {
            return Ok(Gathered {
                message,
                body_len: total.map(|t| t - 4),
                complete: true,
            });
        }
        pos = record_end;
    }
}

/// Why a read stopped.
#[derive(Debug)]
enum Stop {
    /// The bytes needed are not in the buffer yet (but within the declared lengths).
    Short,
    /// The bytes present are malformed whatever follows.
    Bad(&'static str),
}

type Res<T> = Result<T, Stop>;

/// Checked big-endian reader over a TLS vector whose declared length (`limit`) may exceed the
/// bytes present (`data`): reading past `limit` is [`Stop::Bad`], past `data` only
/// [`Stop::Short`].
struct Reader<'a> {
    data: &'a [u8],
    limit: usize,
}

impl<'a> Reader<'a> {
    /// Reader over a vector of `limit` declared bytes of which `data` is the part present.
    fn partial(data: &'a [u8], limit: usize) -> Self {
        Reader {
            data: data.get(..limit).unwrap_or(data),
            limit,
        }
    }

    /// Reader over bytes that are all present.
    fn complete(data: &'a [u8]) -> Self {
        Reader {
            data,
            limit: data.len(),
        }
    }

    /// Whether the declared length is used up.
    fn is_done(&self) -> bool {
        self.limit == 0
    }

    fn take(&mut self, n: usize, what: &'static str) -> Res<&'a [u8]> {
        if n > self.limit {
            return Err(Stop::Bad(what));
        }
        let Some((head, tail)) = self.data.split_at_checked(n) else {
            return Err(Stop::Short);
        };
        self.data = tail;
        self.limit -= n;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Res<u8> {
        match self.take(1, what)? {
            &[b] => Ok(b),
            _ => Err(Stop::Bad(what)),
        }
    }

    fn u16(&mut self, what: &'static str) -> Res<u16> {
        match self.take(2, what)? {
            &[hi, lo] => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(Stop::Bad(what)),
        }
    }

    /// A sub-vector of `n` declared bytes; those present need not all be.
    fn sub(&mut self, n: usize, what: &'static str) -> Res<Reader<'a>> {
        if n > self.limit {
            return Err(Stop::Bad(what));
        }
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        self.limit -= n;
        Ok(Reader {
            data: head,
            limit: n,
        })
    }

    /// `opaque x<..2^8-1>`, possibly partial.
    fn vec8(&mut self, what: &'static str) -> Res<Reader<'a>> {
        let n = self.u8(what)?;
        self.sub(usize::from(n), what)
    }

    /// `opaque x<..2^16-1>`, possibly partial.
    fn vec16(&mut self, what: &'static str) -> Res<Reader<'a>> {
        let n = self.u16(what)?;
        self.sub(usize::from(n), what)
    }

    /// Requires that nothing is left of the declared length.
    fn end(&self, what: &'static str) -> Res<()> {
        if self.is_done() {
            Ok(())
        } else {
            Err(Stop::Bad(what))
        }
    }
}

/// Parses a ClientHello body (after the handshake header).
fn parse_body(mut body: Reader<'_>) -> Res<ClientHello> {
    let version = body.u16("truncated legacy_version")?;
    if version >> 8 != 3 {
        return Err(Stop::Bad("ClientHello legacy_version is not TLS"));
    }
    body.take(32, "truncated random")?;
    let session_id = body.vec8("truncated legacy_session_id")?;
    if session_id.limit > 32 {
        return Err(Stop::Bad("legacy_session_id longer than 32 bytes"));
    }
    let suites = body.vec16("truncated cipher_suites")?;
    if suites.limit < 2 || suites.limit % 2 != 0 {
        return Err(Stop::Bad(
            "cipher_suites length is not a positive even number",
        ));
    }
    let compression = body.vec8("truncated legacy_compression_methods")?;
    if compression.limit == 0 {
        return Err(Stop::Bad("empty legacy_compression_methods"));
    }
    let mut hello = ClientHello {
        server_name: None,
        alpn: Vec::new(),
    };
    if body.is_done() {
        return Ok(hello); // no extensions block (allowed before TLS 1.3)
    }
    let mut extensions = body.vec16("truncated extensions")?;
    body.end("bytes after the extensions block")?;
    // One bit per extension type: 8 KiB on the stack, no allocation, O(1) duplicate check.
    let mut seen = [0u64; 1024];
    while !extensions.is_done() {
        let ext_type = extensions.u16("truncated extension header")?;
        let (word, bit) = (usize::from(ext_type >> 6), 1u64 << (ext_type & 63));
        let slot = seen
            .get_mut(word)
            .ok_or(Stop::Bad("extension type out of range"))?;
        if *slot & bit != 0 {
            return Err(Stop::Bad("duplicate extension"));
        }
        *slot |= bit;
        let len = extensions.u16("truncated extension header")?;
        let data = extensions.take(usize::from(len), "extension longer than its block")?;
        match ext_type {
            EXT_SERVER_NAME => hello.server_name = server_name(data)?,
            EXT_ALPN => hello.alpn = alpn(data)?,
            _ => {}
        }
    }
    Ok(hello)
}

/// `server_name` extension data (RFC 6066 §3): the first `host_name` entry, validated.
fn server_name(data: &[u8]) -> Res<Option<String>> {
    let mut ext = Reader::complete(data);
    let mut list = ext.vec16("malformed server_name extension")?;
    ext.end("malformed server_name extension")?;
    if list.is_done() {
        return Err(Stop::Bad("empty server_name list"));
    }
    let mut found = None;
    while !list.is_done() {
        let name_type = list.u8("malformed server_name list")?;
        let len = list.u16("malformed server_name list")?;
        let name = list.take(usize::from(len), "malformed server_name list")?;
        if name_type == NAME_TYPE_HOST_NAME && found.is_none() {
            found = Some(host_name(name).map_err(Stop::Bad)?);
        }
    }
    Ok(found)
}

/// Validates a DNS host name and returns it lowercased, without a trailing dot.
fn host_name(raw: &[u8]) -> Result<String, &'static str> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() || name.len() > 253 {
        return Err("server name is empty or longer than 253 bytes");
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() || label.len() > 63 {
            return Err("server name has an empty or over-long label");
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("server name has characters other than letters, digits, '-' and '.'");
        }
    }
    Ok(name
        .iter()
        .map(|&b| char::from(b.to_ascii_lowercase()))
        .collect())
}

/// ALPN extension data (RFC 7301 §3.1): the protocol names.
fn alpn(data: &[u8]) -> Res<Vec<Vec<u8>>> {
    let mut ext = Reader::complete(data);
    let mut list = ext.vec16("malformed ALPN extension")?;
    ext.end("malformed ALPN extension")?;
    if list.is_done() {
        return Err(Stop::Bad("empty ALPN protocol list"));
    }
    let mut names = Vec::new();
    while !list.is_done() {
        let len = list.u8("malformed ALPN protocol list")?;
        if len == 0 {
            return Err(Stop::Bad("empty ALPN protocol name"));
        }
        names.push(
            list.take(usize::from(len), "malformed ALPN protocol list")?
                .to_vec(),
        );
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// The first flight of a rustls client: one handshake record holding its ClientHello.
    fn rustls_hello(server: &str, alpn: &[&[u8]], tls12_only: bool) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider);
        let builder = if tls12_only {
            builder.with_protocol_versions(&[&rustls::version::TLS12])
        } else {
            builder.with_safe_default_protocol_versions()
        };
        let mut config = builder
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(server.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// Re-frames the handshake bytes of a single-record hello into records of the given sizes
    /// (the last record takes whatever is left).
    fn refragment(single: &[u8], sizes: &[usize]) -> Vec<u8> {
        let header = &single[..3];
        let len = usize::from(u16::from_be_bytes([single[3], single[4]]));
        let mut payload = &single[5..5 + len];
        let mut out = Vec::new();
        let mut sizes = sizes.iter();
        while !payload.is_empty() {
            let n = sizes
                .next()
                .map_or(payload.len(), |&n| n.clamp(1, payload.len()));
            let (chunk, rest) = payload.split_at(n);
            out.extend_from_slice(header);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(chunk);
            payload = rest;
        }
        out
    }

    fn hello(name: Option<&str>, alpn: &[&[u8]]) -> Peek {
        Peek::Hello(ClientHello {
            server_name: name.map(str::to_string),
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        })
    }

    #[test]
    fn rustls_hello_yields_sni_and_alpn() {
        let bytes = rustls_hello("Tunnel.Example.COM", &[b"h2", b"http/1.1"], false);
        let want = hello(Some("tunnel.example.com"), &[b"h2", b"http/1.1"]);
        assert_eq!(peek(&bytes), want);
        // Whatever follows the hello (early data, the next records) is not looked at.
        let mut more = bytes.clone();
        more.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
        assert_eq!(peek(&more), want);

        let tls12 = rustls_hello("a-b.example.org", &[], true);
        assert_eq!(peek(&tls12), hello(Some("a-b.example.org"), &[]));
    }

    #[test]
    fn every_strict_prefix_of_a_rustls_hello_needs_more() {
        let bytes = rustls_hello("example.com", &[b"h2"], false);
        for cut in 0..bytes.len() {
            assert_eq!(peek(&bytes[..cut]), Peek::NeedMore, "prefix of {cut} bytes");
        }
    }

    #[test]
    fn fragmented_rustls_hello_parses_the_same() {
        let bytes = rustls_hello("example.com", &[b"h2", b"burrow/1"], false);
        let want = peek(&bytes);
        assert!(matches!(want, Peek::Hello(_)));
        for sizes in [&[2usize][..], &[3, 100], &[150, 1], &[1, 1, 1, 1, 1]] {
            let split = refragment(&bytes, sizes);
            assert_ne!(split, bytes);
            assert_eq!(peek(&split), want, "record sizes {sizes:?}");
            for cut in 0..split.len() {
                assert_eq!(peek(&split[..cut]), Peek::NeedMore, "{sizes:?}, cut {cut}");
            }
        }
    }

    #[test]
    fn ip_address_server_sends_no_sni() {
        let bytes = rustls_hello("192.0.2.7", &[b"h2"], false);
        assert_eq!(peek(&bytes), hello(None, &[b"h2"]));
    }

    #[test]
    fn non_tls_and_malformed_input_is_invalid() {
        assert_eq!(
            peek(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Peek::Invalid("not a TLS handshake record")
        );
        assert!(matches!(peek(b"G"), Peek::Invalid(_)));
        assert!(matches!(peek(b"SSH-2.0-OpenSSH"), Peek::Invalid(_)));
        assert_eq!(peek(b""), Peek::NeedMore);
        assert_eq!(peek(&[22, 3]), Peek::NeedMore);
        // Oversized record, empty record, alert record, ServerHello.
        assert!(matches!(peek(&[22, 3, 1, 0x40, 0x01]), Peek::Invalid(_)));
        assert!(matches!(peek(&[22, 3, 1, 0, 0]), Peek::Invalid(_)));
        assert!(matches!(peek(&[21, 3, 3, 0, 2, 2, 40]), Peek::Invalid(_)));
        assert!(matches!(
            peek(&[22, 3, 3, 0, 4, 2, 0, 0, 0]),
            Peek::Invalid(_)
        ));
        // A hello announcing more than MAX_HELLO bytes is refused from its header alone.
        assert_eq!(
            peek(&[22, 3, 1, 0x40, 0, 1, 0, 0x40, 0]),
            Peek::Invalid("ClientHello longer than MAX_HELLO")
        );
    }

    #[test]
    fn malformed_extensions_are_invalid() {
        let enc = |exts: &[(u16, Vec<u8>)]| record(&encode_hello(exts, &[]), &[]);
        let sni = |name: &[u8]| sni_ext(&[(0, name)]);
        assert!(matches!(peek(&enc(&[sni(b"ok.example")])), Peek::Hello(_)));
        for bad in [
            sni(b"bad_name.example"),
            sni(b"caf\xc3\xa9.example"),
            sni(b""),
            sni(b"."),
            sni(b"a..b"),
            sni(&[b'a'; 64]),
            (EXT_SERVER_NAME, vec![]),
            (EXT_SERVER_NAME, vec![0, 0]),
            (EXT_SERVER_NAME, vec![0, 5, 0, 0, 1, b'a']),
            (EXT_ALPN, vec![0, 0]),
            (EXT_ALPN, vec![0, 3, 0, 1, b'x']),
            (EXT_ALPN, vec![0, 3, 2, b'h']),
        ] {
            assert!(
                matches!(peek(&enc(std::slice::from_ref(&bad))), Peek::Invalid(_)),
                "{bad:?}"
            );
        }
        let twice = enc(&[(7, vec![]), (7, vec![])]);
        assert_eq!(peek(&twice), Peek::Invalid("duplicate extension"));
        // First host_name wins; other name types are skipped; trailing dot trimmed.
        let multi = sni_ext(&[
            (1, &b"whatever"[..]),
            (0, b"First.Example."),
            (0, b"second.example"),
        ]);
        assert_eq!(peek(&enc(&[multi])), hello(Some("first.example"), &[]));
        assert_eq!(peek(&enc(&[sni_ext(&[(1, b"x")])])), hello(None, &[]));
    }

    #[test]
    fn a_hello_that_cannot_end_within_max_peek_is_invalid_early() {
        // A MAX_HELLO hello (a big padding extension) fits in MAX_PEEK in 1 KiB records...
        let msg = encode_hello(&[(21, vec![0; MAX_HELLO - 53])], &[]);
        assert_eq!(msg.len(), MAX_HELLO);
        assert_eq!(peek(&record(&msg, &[1024; 16])), hello(None, &[]));
        // ...but not in 50-byte records (328 headers): refused as soon as that is certain, at
        // the header of record 204, and every shorter prefix needs more.
        let split = record(&msg, &[50; 400]);
        let first_invalid = 55 * 203 + 5;
        for cut in (0..first_invalid).step_by(7).chain([first_invalid - 1]) {
            assert_eq!(peek(&split[..cut]), Peek::NeedMore, "cut {cut}");
        }
        for cut in [first_invalid, first_invalid + 1, MAX_PEEK, split.len()] {
            assert_eq!(
                peek(&split[..cut]),
                Peek::Invalid("ClientHello does not fit in MAX_PEEK bytes"),
                "cut {cut}"
            );
        }
        // One byte over MAX_HELLO is refused from the handshake header.
        let mut over = msg.clone();
        over.push(0);
        over[3] += 1;
        assert_eq!(
            peek(&record(&over, &[5])),
            Peek::Invalid("ClientHello longer than MAX_HELLO")
        );
    }

    /// The committed fuzz seeds (`fuzz/seeds/client_hello`) are real ClientHellos that parse to
    /// the names they were made for. `BURROW_WRITE_FUZZ_SEEDS=1 cargo test -p burrow-proto
    /// fuzz_seeds` regenerates them from rustls first.
    #[test]
    fn fuzz_seeds_are_hellos() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/client_hello");
        let expected = [
            ("tls13_sni_alpn.bin", Some("tunnel.example.com")),
            ("tls12_sni.bin", Some("app.burrow.test")),
            ("tls13_no_sni.bin", None),
            ("tls13_three_records.bin", Some("tunnel.example.com")),
        ];
        if std::env::var_os("BURROW_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            let tls13 = rustls_hello("tunnel.example.com", &[b"h2", b"http/1.1"], false);
            let seeds = [
                tls13.clone(),
                rustls_hello("app.burrow.test", &[], true),
                rustls_hello("192.0.2.7", &[b"burrow/1"], false),
                refragment(&tls13, &[40, 200]),
            ];
            for ((name, _), bytes) in expected.iter().zip(seeds) {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
        for (name, sni) in expected {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            match peek(&bytes) {
                Peek::Hello(hello) => assert_eq!(hello.server_name.as_deref(), sni, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    // --- A small encoder for property tests -------------------------------------------------

    fn vec16(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    fn sni_ext(entries: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for (name_type, name) in entries {
            list.push(*name_type);
            list.extend_from_slice(&vec16(name));
        }
        (EXT_SERVER_NAME, vec16(&list))
    }

    fn alpn_ext(names: &[Vec<u8>]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for name in names {
            list.push(name.len() as u8);
            list.extend_from_slice(name);
        }
        (EXT_ALPN, vec16(&list))
    }

    /// A ClientHello handshake message (header included) with these extensions.
    fn encode_hello(extensions: &[(u16, Vec<u8>)], session_id: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0x5a; 32]);
        body.push(session_id.len() as u8);
        body.extend_from_slice(session_id);
        body.extend_from_slice(&vec16(&[0x13, 0x01, 0x13, 0x02]));
        body.extend_from_slice(&[1, 0]);
        let mut exts = Vec::new();
        for (ext_type, data) in extensions {
            exts.extend_from_slice(&ext_type.to_be_bytes());
            exts.extend_from_slice(&vec16(data));
        }
        body.extend_from_slice(&vec16(&exts));
        let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    /// Frames a handshake message into records of the given sizes (the rest in the last one).
    fn record(message: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut single = vec![CONTENT_HANDSHAKE, 3, 1];
        single.extend_from_slice(&vec16(message));
        refragment(&single, sizes)
    }

    fn hostname() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9-]{1,20}(\\.[a-zA-Z0-9-]{1,20}){0,4}\\.?"
    }

    fn alpn_list() -> impl Strategy<Value = Vec<Vec<u8>>> {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..16), 0..5)
    }

    /// Extension types other than server_name and ALPN, without duplicates, with any data.
    fn other_extensions() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
        proptest::collection::btree_map(
            prop_oneof![1u16..16, 17u16..],
            proptest::collection::vec(any::<u8>(), 0..40),
            0..6,
        )
        .prop_map(|m| m.into_iter().collect())
    }

    prop_compose! {
        /// `(handshake message, expected hello)`.
        fn built_hello()(
            name in proptest::option::of(hostname()),
            alpn in alpn_list(),
            others in other_extensions(),
            session_id in proptest::collection::vec(any::<u8>(), 0..=32),
            order in any::<prop::sample::Index>(),
        ) -> (Vec<u8>, ClientHello) {
            let mut exts = others;
            if let Some(name) = &name {
                let at = order.index(exts.len() + 1);
                exts.insert(at, sni_ext(&[(0, name.as_bytes())]));
            }
            if !alpn.is_empty() {
                let at = order.index(exts.len() + 1);
                exts.insert(at, alpn_ext(&alpn));
            }
            let expected = ClientHello {
                server_name: name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()),
                alpn,
            };
            (encode_hello(&exts, &session_id), expected)
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Peek::NeedMore = peek(&bytes) {
                prop_assert!(bytes.len() < MAX_PEEK);
            }
        }

        #[test]
        fn arbitrary_handshake_records_never_panic(
            len in 0u16..600,
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut bytes = vec![22, 3, 1];
            bytes.extend_from_slice(&len.to_be_bytes());
            bytes.push(1);
            bytes.extend_from_slice(&[0, (body.len() >> 8) as u8, body.len() as u8]);
            bytes.extend_from_slice(&body);
            let _ = peek(&bytes);
        }

        #[test]
        fn built_hello_roundtrips((msg, expected) in built_hello()) {
            prop_assert_eq!(peek(&record(&msg, &[])), Peek::Hello(expected));
        }

        #[test]
        fn any_fragmentation_parses_the_same(
            (msg, expected) in built_hello(),
            sizes in proptest::collection::vec(1usize..64, 0..12),
        ) {
            prop_assert_eq!(peek(&record(&msg, &sizes)), Peek::Hello(expected));
        }

        #[test]
        fn any_prefix_needs_more(
            (msg, _) in built_hello(),
            sizes in proptest::collection::vec(1usize..64, 0..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = record(&msg, &sizes);
            let cut = cut.index(bytes.len());
            prop_assert_eq!(peek(&bytes[..cut]), Peek::NeedMore);
        }

        #[test]
        fn corrupted_hello_prefixes_are_never_invalid_before_the_whole(
            (msg, _) in built_hello(),
            sizes in proptest::collection::vec(1usize..64, 0..4),
            at in any::<prop::sample::Index>(),
            xor in 1u8..,
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = record(&msg, &sizes);
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
            // Once a prefix is Invalid, so is every longer input; a Hello's prefixes need more.
            let whole = peek(&bytes);
            let prefix = peek(&bytes[..cut.index(bytes.len())]);
            match (&whole, &prefix) {
                (Peek::Hello(_), p) => prop_assert_eq!(p, &Peek::NeedMore),
                (Peek::NeedMore, p) => prop_assert_eq!(p, &Peek::NeedMore),
                (Peek::Invalid(_), _) => {}
            }
        }
    }
}
