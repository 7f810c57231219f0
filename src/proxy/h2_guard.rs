//! HTTP/2 connections on their way to pingora: a count of the frames that
//! make the server answer (SETTINGS and PING without ACK), and the
//! connection cut when a client sends too many. The `h2` crate frames and
//! judges everything else; this module only follows frame boundaries.
//!
//! The SETTINGS flood (CVE-2019-9515) and the ping flood (CVE-2019-9512)
//! make a server write an acknowledgement for every frame read. `h2`
//! answers each one before it reads further, so a client that does not
//! read is held back by the socket, but one that reads gets every
//! acknowledgement, 100,000 of them on one connection, and offers no
//! setting to bound it. pingora's `default_h2_options` bound the other
//! floods: `h2`'s pending-reset limit stops a rapid reset (CVE-2023-44487)
//! with GOAWAY `ENHANCE_YOUR_CALM`, and the 64 KiB header-list limit a
//! CONTINUATION flood.
//!
//! The cut is a closed connection, not a GOAWAY: `h2` owns the write side,
//! and a frame written here could fall in the middle of one of its own.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pingora_core::protocols::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// SETTINGS and PING frames (without ACK) a client may send in one
/// [`WINDOW`]. A browser sends one SETTINGS frame per connection and a
/// PING now and then; gRPC keep-alive pings come seconds apart.
pub const MAX_ANSWERED_FRAMES: u32 = 100;
/// The window [`MAX_ANSWERED_FRAMES`] is counted in; it starts at a
/// connection's first such frame and again at the first one after it ends.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The client connection preface (RFC 9113 §3.4), before the first frame.
const PREFACE_LEN: u32 = 24;
/// Every frame's header: length (24 bits), type, flags, stream id.
const HEADER_LEN: usize = 9;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

/// Wraps an HTTP/2 connection for pingora.
pub fn guard(stream: Stream) -> Stream {
    Box::new(H2Guard {
        inner: stream,
        frames: FrameCount::new(MAX_ANSWERED_FRAMES, WINDOW),
    })
}

/// Follows the client's bytes frame by frame and counts the answered ones.
#[derive(Debug)]
struct FrameCount {
    /// Preface bytes still to pass.
    preface: u32,
    header: [u8; HEADER_LEN],
    /// Bytes of `header` read so far.
    header_len: usize,
    /// Payload bytes of the current frame still to pass.
    payload: u32,
    limit: u32,
    window: Duration,
    window_start: Option<Instant>,
    in_window: u32,
}

/// Whether the client stayed within the bound.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Within,
    Flood,
}

impl FrameCount {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            preface: PREFACE_LEN,
            header: [0; HEADER_LEN],
            header_len: 0,
            payload: 0,
            limit,
            window,
            window_start: None,
            in_window: 0,
        }
    }

    /// Follows `bytes`, the next bytes the client sent (split anywhere).
    fn scan(&mut self, mut bytes: &[u8]) -> Verdict {
        while !bytes.is_empty() {
            let step = if self.preface > 0 {
                let n = bytes.len().min(self.preface as usize);
                self.preface -= n as u32;
                n
            } else if self.payload > 0 {
                let n = bytes.len().min(self.payload as usize);
                self.payload -= n as u32;
                n
            } else {
                let n = bytes.len().min(HEADER_LEN - self.header_len);
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                if self.header_len == HEADER_LEN && self.frame_ends_header() == Verdict::Flood {
                    return Verdict::Flood;
                }
                n
            };
            bytes = &bytes[step..];
        }
        Verdict::Within
    }

    /// A whole frame header has been read: note its payload, count it.
    fn frame_ends_header(&mut self) -> Verdict {
        let [l0, l1, l2, kind, flags, ..] = self.header;
        self.payload = u32::from_be_bytes([0, l0, l1, l2]);
        self.header_len = 0;
        let answered = matches!(kind, SETTINGS | PING) && flags & ACK == 0;
        if !answered {
            return Verdict::Within;
        }
        let now = Instant::now();
        match self.window_start {
            Some(start) if now.duration_since(start) < self.window => {}
            _ => {
                self.window_start = Some(now);
                self.in_window = 0;
            }
        }
        self.in_window += 1;
        match self.in_window > self.limit {
            true => Verdict::Flood,
            false => Verdict::Within,
        }
    }
}

/// The connection as pingora sees it: the same bytes, until a flood.
#[derive(Debug)]
struct H2Guard {
    inner: Stream,
    frames: FrameCount,
}

impl AsyncRead for H2Guard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.frames.in_window > this.frames.limit {
            return Poll::Ready(Err(flood()));
        }
        let before = buf.filled().len();
        if let Err(e) = std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf)) {
            return Poll::Ready(Err(e));
        }
        match this.frames.scan(&buf.filled()[before..]) {
            Verdict::Within => Poll::Ready(Ok(())),
            Verdict::Flood => {
                tracing::warn!(
                    target: "portcullis::proxy::h2_guard",
                    limit = this.frames.limit,
                    window_s = this.frames.window.as_secs(),
                    "HTTP/2 connection cut: too many SETTINGS or PING frames"
                );
                Poll::Ready(Err(flood()))
            }
        }
    }
}

fn flood() -> std::io::Error {
    std::io::Error::other("too many SETTINGS or PING frames")
}

impl AsyncWrite for H2Guard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

super::stream_traits::delegate_stream_traits!(H2Guard);

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = (payload.len() as u32).to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
        out.extend_from_slice(payload);
        out
    }

    /// The preface, then `answered` SETTINGS frames among frames that do
    /// not count: ACKs, DATA and HEADERS whose payload looks like SETTINGS.
    fn connection(answered: usize) -> Vec<u8> {
        let decoy = frame(SETTINGS, 0, &[]);
        let mut out = PREFACE.to_vec();
        for i in 0..answered {
            out.extend(frame(SETTINGS, 0, &[0, 4, 0, 1, 0, 0]));
            out.extend(frame(SETTINGS, ACK, &[]));
            out.extend(frame(PING, ACK, &[0; 8]));
            out.extend(frame(0x0, 0, &decoy.repeat(i % 3)));
            out.extend(frame(0x1, 0x4, &decoy));
        }
        out
    }

    /// Splits `bytes` into reads of `size` bytes and reports the first read
    /// that was judged a flood.
    fn first_flood(bytes: &[u8], size: usize) -> Option<usize> {
        let mut count = FrameCount::new(5, Duration::from_secs(60));
        bytes
            .chunks(size)
            .position(|chunk| count.scan(chunk) == Verdict::Flood)
    }

    #[test]
    fn up_to_the_limit_passes_however_reads_split_the_frames() {
        let bytes = connection(5);
        for size in 1..=bytes.len() {
            assert_eq!(first_flood(&bytes, size), None, "reads of {size}");
        }
    }

    #[test]
    fn one_past_the_limit_is_a_flood_however_reads_split_the_frames() {
        let allowed = connection(5).len();
        let bytes = connection(6);
        for size in 1..=bytes.len() {
            let start = first_flood(&bytes, size).expect("a flood") * size;
            // Found in the read that completes the sixth answered frame's header.
            let last = allowed + HEADER_LEN - 1;
            assert!(start <= last && last < start + size, "reads of {size}");
        }
    }

    #[test]
    fn pings_count_like_settings() {
        let mut bytes = PREFACE.to_vec();
        for _ in 0..6 {
            bytes.extend(frame(PING, 0, &[0; 8]));
        }
        assert_eq!(first_flood(&bytes, bytes.len()), Some(0));
    }

    #[test]
    fn the_count_starts_again_after_the_window() {
        let mut count = FrameCount::new(2, Duration::from_millis(50));
        let settings = frame(SETTINGS, 0, &[]);
        assert_eq!(count.scan(PREFACE), Verdict::Within);
        assert_eq!(count.scan(&settings.repeat(2)), Verdict::Within);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(count.scan(&settings.repeat(2)), Verdict::Within);
        assert_eq!(count.scan(&settings), Verdict::Flood);
    }
}
