//! The HTTP/1.x request head, read and judged before pingora sees it.
//!
//! pingora answers what it cannot parse with bare `400`/`405` bodies of its
//! own; the gateway reads the head first, refuses every ambiguous framing
//! (RFC 9112 §6, the request-smuggling class) in the contract's shape, and
//! hands pingora only heads it parses the same way. This module judges the
//! bytes; `edge` does the reading and writing.

use std::mem::MaybeUninit;

use super::header_names;
use super::respond::Refusal;

/// The most header fields a head may have (`Limits::headers` above this
/// counts as this).
const MAX_HEADERS: usize = 100;

/// Bounds on a request head: by default 64 KiB in all, 16 KiB for the
/// request line, 100 header fields (Envoy's defaults are 60 KiB and 100).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole head: request line and header fields.
    pub head_bytes: usize,
    /// The request line alone.
    pub line_bytes: usize,
    pub headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            head_bytes: 64 * 1024,
            line_bytes: 16 * 1024,
            headers: 100,
        }
    }
}

/// How the body of an admitted request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A known number of body bytes (0 without `Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`: the end is found by scanning the body
    /// as it passes (see `chunked`).
    Chunked,
    /// A protocol upgrade: after a 101 the connection belongs to the new
    /// protocol, whose end is not the gateway's to know.
    Open,
}

/// The verdict on the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// The head is not complete yet and within bounds.
    Partial,
    /// A head of `len` bytes that pingora may parse.
    Admit {
        len: usize,
        framing: Framing,
        /// An HTTP/1.1 `Expect: 100-continue` (RFC 9110 §10.1.1): the
        /// client may wait for `100 Continue` before sending the body.
        expects_continue: bool,
    },
    Refuse(Refusal),
}

/// Judges `buf`, the bytes of a connection from the start of a request.
pub fn scan(buf: &[u8], limits: &Limits) -> Scan {
    // On the stack and left uninitialised: a head is judged on every
    // request, and a heap array of 100 zeroed fields was a visible share
    // of it.
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let fields = &mut fields[..limits.headers.min(MAX_HEADERS)];
    let mut request = httparse::Request::new(&mut []);
    match request.parse_with_uninit_headers(buf, fields) {
        Ok(httparse::Status::Complete(len)) => match judge(&request, &buf[..len], limits) {
            Ok((framing, expects_continue)) => Scan::Admit {
                len,
                framing,
                expects_continue,
            },
            Err(refusal) => Scan::Refuse(refusal),
        },
        Ok(httparse::Status::Partial) => partial(buf, limits),
        Err(httparse::Error::TooManyHeaders) => Scan::Refuse(Refusal::headers_too_large()),
        Err(_) => Scan::Refuse(Refusal::bad_request()),
    }
}

fn partial(buf: &[u8], limits: &Limits) -> Scan {
    let line_end = buf.iter().position(|b| *b == b'\n');
    if line_end.unwrap_or(buf.len()) > limits.line_bytes {
        Scan::Refuse(Refusal::uri_too_long())
    } else if buf.len() > limits.head_bytes {
        Scan::Refuse(Refusal::headers_too_large())
    } else {
        Scan::Partial
    }
}

/// The body's framing, and whether the client waits for `100 Continue`.
fn judge(
    request: &httparse::Request,
    head: &[u8],
    limits: &Limits,
) -> Result<(Framing, bool), Refusal> {
    if head.len() > limits.head_bytes {
        return Err(Refusal::headers_too_large());
    }
    // RFC 9112 §2.2: a bare LF is a line end to some parsers only.
    let bare_lf = memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r');
    if bare_lf {
        return Err(Refusal::bad_request());
    }
    let path = request.path.unwrap_or("");
    if path.len() > limits.line_bytes {
        return Err(Refusal::uri_too_long());
    }
    if request.method == Some("CONNECT") {
        return Err(Refusal::method_not_served());
    }
    // Origin-form only (and `OPTIONS *`): the gateway is no forward proxy,
    // and an absolute-form target would name a second authority.
    let asterisk = path == "*" && request.method == Some("OPTIONS");
    // A fragment is never part of a request target (RFC 9112 §3.2).
    if (!path.starts_with('/') && !asterisk) || path.contains('#') {
        return Err(Refusal::bad_request());
    }
    let version = request.version.unwrap_or(0);
    let fields = Fields::of(request.headers);
    if fields.reserved_with_underscore {
        return Err(header_names::refusal());
    }
    check_host(&fields, version)?;
    let expects_continue = fields.expects_continue && version == 1;
    Ok((framing(&fields, version)?, expects_continue))
}

/// How often a framing-relevant field occurs, and its value when once.
#[derive(Clone, Copy)]
enum Field<'h> {
    Absent,
    Once(&'h [u8]),
    Repeated,
}

impl<'h> Field<'h> {
    fn add(self, value: &'h [u8]) -> Self {
        match self {
            Self::Absent => Self::Once(value),
            _ => Self::Repeated,
        }
    }
}

/// The fields the head check judges, gathered in one pass.
struct Fields<'h> {
    host: Field<'h>,
    content_length: Field<'h>,
    transfer_encoding: Field<'h>,
    upgrade: Upgrade,
    expects_continue: bool,
    /// A name that folds to a framing or routing header (see
    /// `header_names`), such as `Transfer_Encoding`.
    reserved_with_underscore: bool,
}

impl<'h> Fields<'h> {
    fn of(headers: &'h [httparse::Header<'h>]) -> Self {
        let mut fields = Self {
            host: Field::Absent,
            content_length: Field::Absent,
            transfer_encoding: Field::Absent,
            upgrade: Upgrade::None,
            expects_continue: false,
            reserved_with_underscore: false,
        };
        for header in headers {
            let name = header.name;
            let slot = if name.eq_ignore_ascii_case("host") {
                &mut fields.host
            } else if name.eq_ignore_ascii_case("content-length") {
                &mut fields.content_length
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                &mut fields.transfer_encoding
            } else {
                fields.note(name, header.value);
                continue;
            };
            *slot = slot.add(header.value);
        }
        fields
    }
}

impl Fields<'_> {
    /// The fields that do not frame the body but still matter here.
    fn note(&mut self, name: &str, value: &[u8]) {
        if name.eq_ignore_ascii_case("upgrade") {
            let websocket = trimmed(value).eq_ignore_ascii_case(b"websocket");
            self.upgrade = match (self.upgrade, websocket) {
                (Upgrade::None, true) => Upgrade::WebSocket,
                _ => Upgrade::Other,
            };
        } else if name.eq_ignore_ascii_case("expect") {
            self.expects_continue |= trimmed(value).eq_ignore_ascii_case(b"100-continue");
        } else if header_names::smuggles_a_reserved_name(name.as_bytes()) {
            self.reserved_with_underscore = true;
        }
    }
}

/// The protocol a request asks to switch to (RFC 9110 §7.8).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Upgrade {
    None,
    /// One `Upgrade: websocket` (RFC 6455).
    WebSocket,
    /// Anything else, or more than one: after a 101 the connection would
    /// be the backend's, speaking a protocol the gateway never judges
    /// (`h2c`: HTTP/2 straight to the backend, past every route's policy
    /// and the identity-header rules, the h2c smuggling class).
    Other,
}

/// RFC 9112 §3.2: exactly one `Host` on HTTP/1.1, and a valid one.
fn check_host(fields: &Fields, version: u8) -> Result<(), Refusal> {
    match fields.host {
        Field::Absent if version == 0 => Ok(()),
        Field::Once(host) if valid_host(host) => Ok(()),
        _ => Err(Refusal::bad_request()),
    }
}

/// RFC 9112 §6.1–6.3: one `Content-Length` of plain digits, or a single
/// `Transfer-Encoding: chunked` on HTTP/1.1, never both.
fn framing(fields: &Fields, version: u8) -> Result<Framing, Refusal> {
    let framing = match (fields.content_length, fields.transfer_encoding) {
        (Field::Absent, Field::Absent) => Framing::Length(0),
        (Field::Once(length), Field::Absent) => Framing::Length(content_length(length)?),
        (Field::Absent, Field::Once(coding))
            if version == 1 && trimmed(coding).eq_ignore_ascii_case(b"chunked") =>
        {
            Framing::Chunked
        }
        _ => return Err(Refusal::bad_request()),
    };
    // An upgrade's tunnel follows its body, and the edge follows neither:
    // a chunked body there would be read by the engine alone, whose size
    // parsing is laxer than the edge's (`chunked`), so it is refused.
    match (fields.upgrade, framing) {
        (Upgrade::None, framing) => Ok(framing),
        (Upgrade::Other, _) | (Upgrade::WebSocket, Framing::Chunked) => Err(Refusal::bad_request()),
        (Upgrade::WebSocket, _) => Ok(Framing::Open),
    }
}

fn trimmed(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// `1*DIGIT`, without a sign, list or leading zero, that fits in a u64.
fn content_length(value: &[u8]) -> Result<u64, Refusal> {
    let digits = trimmed(value);
    let plain = !digits.is_empty()
        && digits.len() <= 18
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1);
    if !plain {
        return Err(Refusal::bad_request());
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse().ok())
        .ok_or_else(Refusal::bad_request)
}

/// `host [":" port]` with a DNS name (one trailing dot allowed), an IPv4
/// address or a bracketed IPv6 literal; no `%`, `/`, `@` or empty label.
pub fn valid_host(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(trimmed(value)) else {
        return false;
    };
    if value.is_empty() || value.len() > 255 {
        return false;
    }
    let (name, port) = match value.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((literal, port)) => {
                let ok = literal.parse::<std::net::Ipv6Addr>().is_ok();
                return ok && (port.is_empty() || valid_port(port.strip_prefix(':')));
            }
            None => return false,
        },
        None => match value.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (value, None),
        },
    };
    if port.is_some() && !valid_port(port) {
        return false;
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    // Labels of 1 to 63 letters, digits, `-` or `_`, checked in one pass
    // (this runs on every request).
    let mut label_len = 0;
    for b in name.bytes() {
        match b {
            b'.' if label_len == 0 => return false,
            b'.' => label_len = 0,
            b if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' => {
                label_len += 1;
                if label_len > 63 {
                    return false;
                }
            }
            _ => return false,
        }
    }
    label_len > 0
}

/// A port of 1 to 65535 in digits (RFC 9110 §4.2.1 names no port 0, and
/// a longer number would be cut to 16 bits by some backends).
fn valid_port(port: Option<&str>) -> bool {
    port.is_some_and(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(raw: &str) -> Scan {
        scan(raw.as_bytes(), &Limits::default())
    }

    #[test]
    fn hosts() {
        for ok in [
            "a",
            "api.example.com",
            "api.example.com.",
            "a:8080",
            "[::1]:80",
            "10.0.0.1",
            "a:1",
            "a:65535",
        ] {
            assert!(valid_host(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "a/x",
            "a..",
            "%2e",
            "a@b",
            "é.com",
            "a:",
            "a:x",
            "[::1",
            ".",
            "a b",
            "a..b",
            ".a",
            "a.b..",
            "..",
            "a:0",
            "a:65536",
            "a:99999",
            "[::1]:0",
            "[::1]:65536",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
        let longest_label = "x".repeat(63);
        assert!(valid_host(format!("{longest_label}.com").as_bytes()));
        assert!(!valid_host(format!("{longest_label}x.com").as_bytes()));
        assert!(!valid_host(format!("a.{longest_label}x").as_bytes()));
    }

    #[test]
    fn framing_is_single_and_plain() {
        let head = |extra: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{extra}\r\n");
        let admitted = |extra: &str| matches!(verdict(&head(extra)), Scan::Admit { .. });
        assert!(admitted("Content-Length: 5\r\n"));
        assert!(admitted("Content-Length: 0\r\n"));
        assert!(admitted("Transfer-Encoding: chunked\r\n"));
        for bad in [
            "Content-Length: 5, 5\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: 05\r\n",
            "Content-Length: 99999999999999999999\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Upgrade: websocket\r\nTransfer-Encoding: chunked\r\n",
        ] {
            assert_eq!(
                verdict(&head(bad)),
                Scan::Refuse(Refusal::bad_request()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn names_folding_to_framing_headers_are_refused() {
        for line in [
            "Transfer_Encoding: chunked",
            "content_length: 5",
            "Proxy_Connection: close",
        ] {
            let head = format!("POST / HTTP/1.1\r\nHost: a\r\n{line}\r\n\r\n");
            assert_eq!(
                verdict(&head),
                Scan::Refuse(header_names::refusal()),
                "{line}"
            );
        }
        let custom = "GET / HTTP/1.1\r\nHost: a\r\nX_Custom: 1\r\n\r\n";
        assert!(matches!(verdict(custom), Scan::Admit { .. }));
    }

    #[test]
    fn expect_continue_is_noted_on_http11_only() {
        let head = |version: &str, expect: &str| {
            format!("POST / HTTP/1.{version}\r\nHost: a\r\nExpect: {expect}\r\nContent-Length: 1\r\n\r\n")
        };
        let expects = |raw: String| match verdict(&raw) {
            Scan::Admit {
                expects_continue, ..
            } => expects_continue,
            other => panic!("{other:?}"),
        };
        assert!(expects(head("1", "100-continue")));
        assert!(expects(head("1", "100-Continue ")));
        assert!(!expects(head("0", "100-continue")));
        assert!(!expects(head("1", "200-ok")));
    }

    #[test]
    fn partial_heads_are_bounded() {
        assert_eq!(verdict("GET / HTTP/1.1\r\nHost: a\r\n"), Scan::Partial);
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(20_000));
        assert_eq!(
            verdict(&long[..18_000]),
            Scan::Refuse(Refusal::uri_too_long())
        );
    }
}
