//! Where a chunked request body ends (RFC 9112 §7.1), found by scanning
//! the bytes as they pass: the edge hands pingora a chunked body up to its
//! last byte and no further, so a request pipelined behind it is held and
//! judged like any other, never read by pingora as stray body bytes.
//!
//! The scanner only finds the boundary; pingora still decodes the body.
//! Anything it does not recognise makes it give up (`Unknown`), and the
//! edge then lets pingora read the connection as before.

/// Hex digits in a chunk size at most, as httparse allows.
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the chunk size: its value so far and the digits read.
    Size {
        value: u64,
        digits: u8,
    },
    /// Spaces after the size, before `;` or CR.
    SizeSpace {
        value: u64,
    },
    /// In a chunk extension, until CR.
    Extension {
        value: u64,
    },
    /// The CR of the size line was read; LF is next.
    SizeLf {
        value: u64,
    },
    /// In chunk data: bytes left.
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer field line, or of the final empty line.
    TrailerLineStart,
    /// In a trailer field line, until CR.
    TrailerLine,
    TrailerLf,
    /// The CR of the final empty line was read; LF ends the body.
    FinalLf,
    Done,
    Unknown,
}

/// What the bytes scanned so far say about the body's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned {
    /// Every byte given belongs to the body, which goes on.
    More,
    /// The body ends after this many of the bytes given.
    EndsAfter(usize),
    /// The framing is not one the scanner follows.
    Unknown,
}

/// Follows one chunked body across reads.
#[derive(Debug, Clone)]
pub struct ChunkedEnd {
    state: State,
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }
}

impl ChunkedEnd {
    /// Scans the next bytes of the body.
    pub fn scan(&mut self, bytes: &[u8]) -> Scanned {
        let mut i = 0;
        while i < bytes.len() {
            if let State::Data { left } = self.state {
                let take = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len() - i);
                i += take;
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            self.state = step(self.state, bytes[i]);
            i += 1;
            match self.state {
                State::Done => return Scanned::EndsAfter(i),
                State::Unknown => return Scanned::Unknown,
                _ => {}
            }
        }
        Scanned::More
    }
}

fn hex(byte: u8) -> Option<u64> {
    (byte as char).to_digit(16).map(u64::from)
}

fn step(state: State, byte: u8) -> State {
    use State::*;
    match (state, byte) {
        (Size { value, digits }, b) if hex(b).is_some() && digits < MAX_SIZE_DIGITS => Size {
            value: value
                .checked_mul(16)
                .and_then(|v| v.checked_add(hex(b).unwrap_or(0)))
                .unwrap_or(u64::MAX),
            digits: digits + 1,
        },
        (Size { value, digits }, b' ' | b'\t') if digits > 0 => SizeSpace { value },
        (SizeSpace { value }, b' ' | b'\t') => SizeSpace { value },
        (Size { value, digits }, b';') if digits > 0 => Extension { value },
        (SizeSpace { value }, b';') => Extension { value },
        (Size { value, digits }, b'\r') if digits > 0 => SizeLf { value },
        (SizeSpace { value } | Extension { value }, b'\r') => SizeLf { value },
        (Extension { value }, b) if b != b'\n' => Extension { value },
        (SizeLf { value: 0 }, b'\n') => TrailerLineStart,
        (SizeLf { value }, b'\n') if value != u64::MAX => Data { left: value },
        (DataCr, b'\r') => DataLf,
        (DataLf, b'\n') => Size {
            value: 0,
            digits: 0,
        },
        (TrailerLineStart, b'\r') => FinalLf,
        (TrailerLineStart | TrailerLine, b) if b != b'\r' && b != b'\n' => TrailerLine,
        (TrailerLine, b'\r') => TrailerLf,
        (TrailerLf, b'\n') => TrailerLineStart,
        (FinalLf, b'\n') => Done,
        _ => Unknown,
    }
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

    #[test]
    fn malformed_framing_is_not_followed() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"11111111111111111\r\n",
            b"0\r\nbad\n",
            b"0\r\n\n",
        ] {
            assert_eq!(
                end_of(bad),
                Scanned::Unknown,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
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
                    Scanned::Unknown => break,
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
