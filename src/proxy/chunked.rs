//! Where a chunked request body ends (RFC 9112 §7.1), found by scanning
//! the bytes as they pass: the edge hands pingora a chunked body up to its
//! last byte and no further, so a request pipelined behind it is held and
//! judged like any other, never read by pingora as stray body bytes.
//!
//! The scanner only finds the boundary; pingora still decodes the body.
//! Chunk-size lines are parsed by `httparse::parse_chunk_size`, the
//! function pingora's own body reader uses, so the two read sizes alike;
//! the scanner is stricter where httparse leaves the choice to its caller
//! (a size with no digit, a bare LF in an extension, a line or trailer
//! section past a bound). What it does not recognise is `Malformed`, and
//! the edge refuses the request: it never hands on framing it cannot
//! follow. `tests/adversarial/chunked.rs` holds the scanner and the
//! engine's reader together on a corpus of bodies split every way.

/// The longest chunk-size line, extensions and CRLF included. pingora
/// gives up on a size line it has read 8 KiB of without its end; half of
/// that keeps every line the edge lets through readable by the engine
/// however the reads split it.
pub const MAX_SIZE_LINE: usize = 4 * 1024;
/// The longest trailer section (pingora: 64 KiB). pingora drops trailers
/// rather than forwarding them, so a client has no use for more.
pub const MAX_TRAILERS: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line, its bytes so far in `line`.
    SizeLine,
    /// In chunk data: bytes left.
    Data {
        left: u64,
    },
    /// The CRLF after chunk data.
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines, then an empty line; the
    /// current line's bytes in `line`.
    Trailers,
    Done,
    Malformed,
}

/// What the bytes scanned so far say about the body's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned {
    /// Every byte given belongs to the body, which goes on.
    More,
    /// The body ends after this many of the bytes given.
    EndsAfter(usize),
    /// The framing is malformed, or not one the scanner follows: the
    /// request is refused.
    Malformed,
}

/// Follows one chunked body across reads.
#[derive(Debug, Clone)]
pub struct ChunkedEnd {
    state: State,
    /// The size or trailer line being read (bounded by `MAX_SIZE_LINE`
    /// and `MAX_TRAILERS`).
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        Self {
            state: State::SizeLine,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }
}

impl ChunkedEnd {
    /// Scans the next bytes of the body.
    pub fn scan(&mut self, bytes: &[u8]) -> Scanned {
        let mut at = 0;
        loop {
            match self.state {
                State::Done => return Scanned::EndsAfter(at),
                State::Malformed => return Scanned::Malformed,
                _ if at == bytes.len() => return Scanned::More,
                State::SizeLine => at += self.size_line(&bytes[at..]),
                State::Data { left } => at += self.data(left, &bytes[at..]),
                State::DataCr => at += self.expect(bytes[at], b'\r', State::DataLf),
                State::DataLf => at += self.expect(bytes[at], b'\n', State::SizeLine),
                State::Trailers => at += self.trailer_line(&bytes[at..]),
            }
        }
    }

    /// Takes bytes of the current line, up to and with its LF, and says
    /// whether the line is complete; a line past `most` bytes is malformed.
    fn take_line(&mut self, bytes: &[u8], most: usize) -> (usize, bool) {
        let (take, complete) = match memchr::memchr(b'\n', bytes) {
            Some(lf) => (lf + 1, true),
            None => (bytes.len(), false),
        };
        if self.line.len() + take > most {
            self.state = State::Malformed;
            return (take, false);
        }
        self.line.extend_from_slice(&bytes[..take]);
        (take, complete)
    }

    fn size_line(&mut self, bytes: &[u8]) -> usize {
        let (used, complete) = self.take_line(bytes, MAX_SIZE_LINE);
        if self.state == State::Malformed {
            return used;
        }
        self.state = match (complete, size_of(&self.line)) {
            (false, Ok(None)) => State::SizeLine,
            (true, Ok(Some(0))) => State::Trailers,
            (true, Ok(Some(size))) => State::Data { left: size },
            _ => State::Malformed,
        };
        if complete {
            self.line.clear();
        }
        used
    }

    fn data(&mut self, left: u64, bytes: &[u8]) -> usize {
        let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
        let left = left - take as u64;
        self.state = match left {
            0 => State::DataCr,
            left => State::Data { left },
        };
        take
    }

    fn expect(&mut self, byte: u8, wanted: u8, next: State) -> usize {
        self.state = if byte == wanted {
            next
        } else {
            State::Malformed
        };
        1
    }

    /// A trailer line is any bytes but CR and LF, ended by CRLF (pingora
    /// reads them so and drops them); an empty line ends the body.
    fn trailer_line(&mut self, bytes: &[u8]) -> usize {
        let (used, complete) = self.take_line(bytes, MAX_TRAILERS - self.trailer_bytes);
        if self.state == State::Malformed {
            return used;
        }
        let content = match complete {
            true => self.line.strip_suffix(b"\r\n"),
            false => Some(self.line.strip_suffix(b"\r").unwrap_or(&self.line)),
        };
        self.state = match content {
            Some(c) if c.contains(&b'\r') || c.contains(&b'\n') => State::Malformed,
            None => State::Malformed,
            Some([]) if complete => State::Done,
            Some(_) => State::Trailers,
        };
        if complete {
            self.trailer_bytes += self.line.len();
            self.line.clear();
        }
        used
    }
}

/// The size a chunk-size line announces: `Ok(None)` while the line may
/// still become valid, `Err` once it cannot. On top of httparse: the line
/// starts with a hex digit (httparse reads an empty size as 0), is ended
/// by its first LF and that LF follows a CR (httparse lets a bare LF pass
/// inside an extension), and the size leaves room for its own line and
/// CRLF in a `usize` (pingora refuses it otherwise).
fn size_of(line: &[u8]) -> Result<Option<u64>, ()> {
    if line.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
        return Err(());
    }
    let complete = line.ends_with(b"\n");
    match httparse::parse_chunk_size(line) {
        Ok(httparse::Status::Complete((len, size))) if complete && len == line.len() => {
            let room = u64::try_from(line.len() + 2).map_err(|_| ())?;
            match size.checked_add(room).map(usize::try_from) {
                Some(Ok(_)) => Ok(Some(size)),
                _ => Err(()),
            }
        }
        Ok(httparse::Status::Partial) if !complete => Ok(None),
        _ => Err(()),
    }
}

/// What the engine reads in place of a chunked body the edge found
/// malformed: it fails the request, and the proxy answers 400 if no
/// response has started (see `is_malformed_body`); it lives here, below both the edge that
/// raises it and the proxy hook that answers it.
#[derive(Debug)]
struct MalformedBody;

impl std::fmt::Display for MalformedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed chunked request body")
    }
}

impl std::error::Error for MalformedBody {}

pub(super) fn malformed_body() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, MalformedBody)
}

/// Whether the engine's error is the edge refusing a malformed chunked
/// body (and not a client that went away).
pub fn is_malformed_body(e: &pingora_core::Error) -> bool {
    e.root_cause()
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .is_some_and(|inner| inner.is::<MalformedBody>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn end_of(body: &[u8]) -> Scanned {
        ChunkedEnd::default().scan(body)
    }

    #[test]
    fn finds_the_end_of_a_body_and_not_beyond() {
        let body = b"5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(end_of(body), Scanned::EndsAfter(body.len()));
        let pipelined = [&body[..], b"GET / HTTP/1.1\r\n\r\n"].concat();
        assert_eq!(end_of(&pipelined), Scanned::EndsAfter(body.len()));
    }

    #[test]
    fn extensions_and_trailers_belong_to_the_body() {
        let body =
            b"3;name=\"v\"\r\nabc\r\nA \t;x\r\n0123456789\r\n0;last\r\nX-Sum: 1\r\nY: 2\r\n\r\n";
        assert_eq!(end_of(body), Scanned::EndsAfter(body.len()));
    }

    /// Every size line and chunk the edge cannot follow is refused, never
    /// handed on (issue #20: an empty size once read as 0).
    #[test]
    fn malformed_framing_is_refused() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b";x\r\n",
            b" \r\n",
            b"5;a\nb\r\n",
            b"5\n",
            b"5\nhello\r\n",
            b"11111111111111111\r\n",
            b"0x5\r\nhello\r\n",
            b"-5\r\nhello\r\n",
            b"+5\r\nhello\r\n",
            b"g\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nbad\n",
            b"0\r\nX: a\rb\r\n\r\n",
            b"5\rx",
            b"ffffffffffffffff\r\n",
        ] {
            assert_eq!(
                end_of(bad),
                Scanned::Malformed,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lines_past_their_bounds_are_refused() {
        let long = [&b"5;"[..], &vec![b'x'; MAX_SIZE_LINE]].concat();
        assert_eq!(end_of(&long), Scanned::Malformed);
        let mut scanner = ChunkedEnd::default();
        assert_eq!(scanner.scan(b"0\r\n"), Scanned::More);
        let trailer = [&b"X: "[..], &vec![b'y'; MAX_TRAILERS]].concat();
        assert_eq!(scanner.scan(&trailer), Scanned::Malformed);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// However the body is cut into reads, the end is found at the same
        /// byte, and never before the last chunk's final CRLF.
        #[test]
        fn the_end_does_not_depend_on_how_reads_split(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..6),
            cuts in proptest::collection::vec(1usize..30, 1..20),
        ) {
            let mut body = Vec::new();
            for chunk in &chunks {
                body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                body.extend_from_slice(chunk);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
            let total = body.len();
            body.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            let mut scanner = ChunkedEnd::default();
            let (mut at, mut found) = (0, None);
            for cut in cuts.iter().cycle() {
                let end = (at + cut).min(body.len());
                match scanner.scan(&body[at..end]) {
                    Scanned::More => {}
                    Scanned::EndsAfter(n) => { found = Some(at + n); break; }
                    Scanned::Malformed => break,
                }
                at = end;
                if at == body.len() { break; }
            }
            prop_assert_eq!(found, Some(total));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ChunkedEnd::default().scan(&bytes);
        }
    }
}
