//! The differential chunk test (issue #20): the edge's scanner
//! (`portcullis::proxy::chunked`) and the engine's own body reader
//! (pingora-core's HTTP/1 server session) read the same chunked bodies,
//! valid and malformed, split into reads every way, and must frame them
//! alike. Wherever the edge lets a body through, the engine ends it at
//! the same byte; wherever the engine finds it malformed, the edge refuses
//! it too. The edge is stricter than the engine only for the bodies listed
//! in `STRICTER`, each with the reason; any other difference fails.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora_core::protocols::http::v1::server::HttpSession;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora_core::ErrorType;
use portcullis::proxy::chunked::{ChunkedEnd, Scanned, MAX_SIZE_LINE};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const HEAD: &[u8] = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
/// A request pipelined behind a body: bytes past its end.
const NEXT: &str = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";

/// How a reader framed a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framed {
    /// The body ends after this many bytes.
    Ends(usize),
    /// Malformed: refused (the edge) or an error (the engine).
    Refused,
    /// Every byte was read and the body goes on.
    Incomplete,
}

/// A client connection that hands out `pieces` one read each, then EOF,
/// counting the bytes handed out.
#[derive(Debug)]
struct Pieces {
    pieces: VecDeque<Vec<u8>>,
    given: Arc<AtomicUsize>,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(front) = self.pieces.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.drain(..n);
            if front.is_empty() {
                self.pieces.pop_front();
            }
            self.given.fetch_add(n, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Pieces {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Shutdown for Pieces {
    async fn shutdown(&mut self) {}
}
impl UniqueID for Pieces {
    fn id(&self) -> UniqueIDType {
        0
    }
}
impl Ssl for Pieces {}
impl GetTimingDigest for Pieces {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}
impl GetProxyDigest for Pieces {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}
impl GetSocketDigest for Pieces {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        None
    }
}
impl Peek for Pieces {}

/// The engine: a pingora HTTP/1 server session reads the head, then the
/// body as the reads bring it; where it ends is what it handed out less
/// what it holds for a next request.
async fn engine(pieces: &[&[u8]]) -> Framed {
    let given = Arc::new(AtomicUsize::new(0));
    let stream = Pieces {
        pieces: std::iter::once(HEAD)
            .chain(pieces.iter().copied())
            .map(<[u8]>::to_vec)
            .collect(),
        given: Arc::clone(&given),
    };
    let mut session = HttpSession::new(Box::new(stream));
    session.set_pipelining_enabled(true);
    session.set_server_keepalive(Some(60));
    assert!(session.read_request().await.expect("head").is_some());
    loop {
        match session.read_body_bytes().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) if *e.etype() == ErrorType::ConnectionClosed => return Framed::Incomplete,
            Err(_) => return Framed::Refused,
        }
    }
    let handed = given.load(Ordering::Relaxed) - HEAD.len();
    let reused = session.reuse().await.expect("reuse").expect("reusable");
    let held = reused.into_parts().1.map_or(0, |b| b.len());
    Framed::Ends(handed - held)
}

/// The edge: the scanner fed the same reads.
fn edge(pieces: &[&[u8]]) -> Framed {
    let mut scanner = ChunkedEnd::default();
    let mut at = 0;
    for piece in pieces {
        match scanner.scan(piece) {
            Scanned::More => at += piece.len(),
            Scanned::EndsAfter(n) => return Framed::Ends(at + n),
            Scanned::Malformed => return Framed::Refused,
        }
    }
    Framed::Incomplete
}

/// Bodies the engine reads and the edge refuses, and why.
const STRICTER: [(&str, &str); 5] = [
    (
        "\r\nhello\r\n0\r\n\r\n",
        "a size with no digit: the engine reads it as 0",
    ),
    (";x\r\nhello\r\n0\r\n\r\n", "a size with no digit"),
    (" \r\nhello\r\n0\r\n\r\n", "a size with no digit"),
    ("\r\n", "a size with no digit"),
    (
        "5;a\nb\r\nhello\r\n0\r\n\r\n",
        "a bare LF inside an extension (RFC 9112 §2.2)",
    ),
];

/// Whether the framing of `body` (not its chunk data) breaks a rule by
/// which the edge is stricter than the engine (`STRICTER`): a size line
/// without a leading hex digit, or a CR or LF in a size or trailer line
/// that is not its CRLF end. Walks the chunks the way the engine would.
fn stricter_by_rule(body: &[u8]) -> bool {
    let mut at = 0;
    loop {
        let Some(end) = body[at..].iter().position(|b| *b == b'\n').map(|i| at + i) else {
            return false;
        };
        let line = &body[at..end];
        let bare = |line: &[u8]| line.strip_suffix(b"\r").is_none_or(|l| l.contains(&b'\r'));
        if line.first().is_none_or(|b| !b.is_ascii_hexdigit()) || bare(line) {
            return true;
        }
        let digits: String = line
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .map(|b| char::from(*b))
            .collect();
        let Ok(size) = usize::from_str_radix(&digits, 16) else {
            return false;
        };
        at = end + 1;
        if size == 0 {
            // Trailer lines, then the empty line.
            while let Some(end) = body[at..].iter().position(|b| *b == b'\n').map(|i| at + i) {
                let line = &body[at..end];
                if bare(line) {
                    return true;
                }
                if line == b"\r" {
                    return false;
                }
                at = end + 1;
            }
            return false;
        }
        at += size;
        if body.get(at..at + 2) != Some(b"\r\n") {
            return false;
        }
        at += 2;
    }
}

fn corpus() -> Vec<String> {
    let valid = [
        "0\r\n\r\n",
        "5\r\nhello\r\n0\r\n\r\n",
        "5;ext=1\r\nhello\r\n0\r\n\r\n",
        "5 ;ext\r\nhello\r\n0\r\n\r\n",
        "5\t\r\nhello\r\n0\r\n\r\n",
        "5;a=\"b;c\"\r\nhello\r\n0\r\n\r\n",
        "A\r\n0123456789\r\n0\r\n\r\n",
        "a\r\n0123456789\r\n0\r\n\r\n",
        "0005\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
        "5\r\nhello\r\n0\r\nA: 1\r\nB: 2\r\n\r\n",
        "0;last\r\n\r\n",
        "1\r\n\r\r\n0\r\n\r\n",
        "2\r\n\r\n\r\n0\r\n\r\n",
        "5\r\n0\r\n\r\n\r\n0\r\n\r\n",
        "000\r\n\r\n",
    ];
    let malformed = [
        "5\nhello\r\n0\r\n\r\n",
        "00000000000000005\r\nhello\r\n0\r\n\r\n",
        "FFFFFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n",
        "ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "+5\r\nhello\r\n0\r\n\r\n",
        "g\r\nhello\r\n0\r\n\r\n",
        "5\rhello\r\n0\r\n\r\n",
        "5\r\nhelloXX\r\n0\r\n\r\n",
        "5\r\nhello0\r\n\r\n",
        "5\r\nhello\n0\r\n\r\n",
        "5\r\nhello\r0\r\n\r\n",
        "5\r\nhello\r\n0\n\n",
        "5\r\nhello\r\n0\r\n\n",
        "5\r\nhello\r\n0\r\nX-A: b\n\r\n",
        "5\r\nhello\r\n0\r\nX-A: b\rc\r\n\r\n",
        "5\r\nhello\r\nzz\r\nhello\r\n0\r\n\r\n",
        "1 2\r\nx\r\n0\r\n\r\n",
        "5;a\rb\r\nhello\r\n0\r\n\r\n",
    ];
    let incomplete = [
        "",
        "5",
        "5\r",
        "5\r\nhel",
        "5\r\nhello\r\n",
        "0\r\n",
        "0\r\nX: 1\r\n",
    ];
    let mut bodies: Vec<String> = STRICTER.iter().map(|(b, _)| (*b).to_owned()).collect();
    for body in valid.iter().chain(&malformed).chain(&incomplete) {
        bodies.push((*body).to_owned());
        // The same with a request pipelined behind it.
        bodies.push(format!("{body}{NEXT}"));
    }
    bodies
}

/// The two readers agree on `body` read in `pieces`.
fn agree(body: &str, pieces: &[&[u8]], runtime: &tokio::runtime::Runtime) {
    let (ours, theirs) = (edge(pieces), runtime.block_on(engine(pieces)));
    let stricter = STRICTER.iter().any(|(b, _)| body.starts_with(b));
    let same = match (ours, theirs) {
        (Framed::Refused, _) if stricter => true,
        (ours, theirs) => ours == theirs,
    };
    assert!(
        same,
        "{body:?} read as {pieces:?}: edge {ours:?}, engine {theirs:?}"
    );
    if stricter {
        assert_eq!(ours, Framed::Refused, "{body:?}");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

/// Every body of the corpus: in one read, a byte at a time, and cut in two
/// at every byte.
#[test]
fn the_edge_and_the_engine_frame_every_body_alike() {
    let runtime = runtime();
    for body in corpus() {
        let bytes = body.as_bytes();
        agree(&body, &[bytes], &runtime);
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        agree(&body, &bytewise, &runtime);
        for cut in 1..bytes.len() {
            agree(&body, &[&bytes[..cut], &bytes[cut..]], &runtime);
        }
    }
}

/// A size line up to the edge's bound is read by the engine however the
/// reads split it; a longer one is refused by the edge.
#[test]
fn size_lines_up_to_the_bound_are_read_alike() {
    let runtime = runtime();
    let extension = "x".repeat(MAX_SIZE_LINE - "5;\r\n".len());
    let longest = format!("5;{extension}\r\nhello\r\n0\r\n\r\n");
    let bytes = longest.as_bytes();
    for cut in [1, 100, MAX_SIZE_LINE - 1, MAX_SIZE_LINE, MAX_SIZE_LINE + 3] {
        agree(&longest, &[&bytes[..cut], &bytes[cut..]], &runtime);
    }
    assert_eq!(edge(&[bytes]), Framed::Ends(bytes.len()));
    let longer = format!("5;x{extension}\r\nhello\r\n0\r\n\r\n");
    assert_eq!(edge(&[longer.as_bytes()]), Framed::Refused);
}

/// The rule the property below holds refusals to: it names every body
/// `STRICTER` lists, and no well-formed one.
#[test]
fn the_stricter_rule_names_each_listed_body_and_no_valid_one() {
    for (body, why) in STRICTER {
        assert!(stricter_by_rule(body.as_bytes()), "{body:?}: {why}");
    }
    for body in [
        "0\r\n\r\n",
        "5\r\nhe\rlo\r\n0\r\n\r\n",
        "5;ext=1\r\nhel\nl\r\n0\r\nX-T: 1\r\n\r\n",
    ] {
        assert!(!stricter_by_rule(body.as_bytes()), "{body:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Generated bodies (valid chunks with extensions and trailers, then
    /// bytes mutated) cut into random reads.
    #[test]
    fn generated_bodies_are_framed_alike(
        chunks in proptest::collection::vec(("[a-z\r\n]{1,12}", "(;[a-z=]{0,4})?"), 0..4),
        trailers in proptest::collection::vec("[A-Za-z]{1,4}: [a-z]{0,4}", 0..2),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), prop::sample::select(vec![b'\r', b'\n', b' ', b';', b'0', b'x', b'G'])), 0..2),
        cuts in proptest::collection::vec(1usize..12, 0..8),
    ) {
        let mut body = String::new();
        for (data, ext) in &chunks {
            body.push_str(&format!("{:x}{ext}\r\n{data}\r\n", data.len()));
        }
        body.push_str("0\r\n");
        for trailer in &trailers {
            body.push_str(trailer);
            body.push_str("\r\n");
        }
        body.push_str("\r\n");
        body.push_str(NEXT);
        let mut bytes = body.into_bytes();
        for (at, byte) in &flips {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        let mut pieces = Vec::new();
        let mut rest = &bytes[..];
        for cut in &cuts {
            let (piece, tail) = rest.split_at((*cut).min(rest.len()));
            if !piece.is_empty() {
                pieces.push(piece);
            }
            rest = tail;
        }
        if !rest.is_empty() {
            pieces.push(rest);
        }
        // The edge is never laxer than the engine; where it is stricter
        // than the engine on such bodies, `STRICTER` says why.
        let (ours, theirs) = (edge(&pieces), runtime().block_on(engine(&pieces)));
        let text = String::from_utf8_lossy(&bytes);
        match ours {
            Framed::Ends(_) => prop_assert_eq!(ours, theirs, "{:?}", text),
            Framed::Incomplete => prop_assert_eq!(ours, theirs, "{:?}", text),
            // Refused where the engine reads on: only for a reason
            // `STRICTER` gives, found in the framing itself.
            Framed::Refused if theirs != Framed::Refused => {
                prop_assert!(stricter_by_rule(&bytes), "refused without a reason: {:?}", text)
            }
            Framed::Refused => {}
        }
        if theirs == Framed::Refused {
            prop_assert_eq!(ours, Framed::Refused, "{:?}", text);
        }
    }
}
