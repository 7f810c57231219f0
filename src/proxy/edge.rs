//! The listener's connection loop: each HTTP/1.x request head is read and
//! judged here (see `head`) before pingora's proxy parses it, so every
//! answer to a malformed request follows the contract, and pingora is
//! handed no byte past the end of the request it was admitted: its reads
//! past that end (it reads once more after each response, to learn of a
//! close) only fill the gateway's buffer, and a pipelined request waits
//! there for its own head check. The one exception is an upgrade, whose
//! connection belongs to the new protocol after the head: pingora reads
//! it straight from the socket.
//!
//! HTTP/2 connections (ALPN `h2`) go to pingora unchanged: the `h2` crate
//! frames those requests, and its refusals are stream resets, not responses.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BufMut, BytesMut};
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::access_log::AccessLine;
use super::chunked::{malformed_body, ChunkedEnd, Scanned};
use super::head::{self, Framing, Limits, Scan};
use super::respond::Refusal;
use super::Gateway;
use crate::metrics::{UNROUTED, UNROUTED_LABEL};

/// How much of a refused request is read and dropped before closing, so
/// the refusal is not lost to a TCP reset (nginx's lingering close).
const LINGER_BYTES: usize = 64 * 1024;
const LINGER: Duration = Duration::from_secs(1);
/// The whole lingering close at most (nginx's `lingering_time`): a client
/// trickling bytes after its refusal must not hold the connection.
const LINGER_TOTAL: Duration = Duration::from_secs(3);
/// Room made for each read of a request head.
const READ_ROOM: usize = 4096;
/// New bytes that make a partial head worth judging again even without a
/// line end among them (a head's limits are about its size).
const SCAN_STEP: usize = 1024;
/// Bytes of a pipelined next request held while the current one is served.
const HOLD_BYTES: usize = 64 * 1024;
/// The interim answer to `Expect: 100-continue` (RFC 9110 §15.2.1).
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Connections in the process that keep their head buffer between
/// requests (see [`BufferSlots`]).
const KEPT_BUFFERS: usize = 256;
/// The most room a kept buffer keeps while nothing is held in it.
const KEPT_ROOM: usize = 2 * READ_ROOM;
static KEPT: BufferSlots = BufferSlots::new(KEPT_BUFFERS);

/// The proxy listener's application: the head check in front of pingora.
pub struct EdgeApp {
    proxy: Arc<HttpProxy<Gateway>>,
    limits: Limits,
    /// A request head must be complete this long after its first byte:
    /// the engine's read timeout restarts with every byte, so a client
    /// sending one byte every few seconds (slowloris) would otherwise hold
    /// the connection forever.
    head_deadline: Duration,
    /// How long an idle keep-alive connection (HTTP/1.1 or HTTP/2) waits
    /// for its next request.
    keepalive: Duration,
}

impl EdgeApp {
    pub fn new(
        mut proxy: HttpProxy<Gateway>,
        head_deadline: Duration,
        keepalive: Duration,
    ) -> Self {
        let mut options = proxy.server_options.take().unwrap_or_default();
        options.h2_idle_timeout = Some(keepalive);
        proxy.server_options = Some(options);
        Self {
            proxy: Arc::new(proxy),
            limits: Limits::default(),
            head_deadline,
            keepalive,
        }
    }

    /// Keep-alive in pingora's whole seconds, at least one.
    fn keepalive_secs(&self) -> u64 {
        self.keepalive.as_secs_f64().ceil().max(1.0) as u64
    }
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self
                .proxy
                .process_new(super::h2_guard::guard(stream), shutdown)
                .await;
        }
        // Boxed once per connection: each request's session takes the same box.
        let mut conn = Box::new(EdgeStream::new(stream));
        let mut carried = Carried::first(self.keepalive_secs());
        let mut first = true;
        // One timer and one shutdown watch for the connection's life, moved
        // forward for each request: a timer made and dropped per request
        // took the timer wheel's lock twice.
        let mut waits = Waits {
            timer: Box::pin(tokio::time::sleep(self.keepalive)),
            shutdown: shutdown.clone(),
        };
        loop {
            let admitted = match read_head(&mut conn, self, first, &mut waits).await {
                HeadRead::Closed => return None,
                HeadRead::Refused(refusal, began) => {
                    refuse(*conn, &refusal, began).await;
                    return None;
                }
                HeadRead::Admitted(admitted) => admitted,
            };
            first = false;
            conn.admit(&admitted);
            let mut session = ServerSession::new_http1(conn);
            carried.apply(&mut session, *shutdown.borrow());
            let reused = self.proxy.process_new_http(session, shutdown).await?;
            let (stream, settings) = reused.consume();
            conn = stream.into_any().downcast::<EdgeStream>().ok()?;
            carried = Carried::after(settings, self.keepalive_secs());
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// What one request's session hands to the next on the same connection:
/// the engine's own settings (keep-alive, reuses left, the connection's
/// user context), applied to the next session as they are. The proxy never
/// enables HTTP/1.1 pipelining, so they never carry bytes past the request
/// (a pipelined request waits in `EdgeStream` for its own head check).
struct Carried {
    settings: Option<pingora_core::apps::HttpPersistentSettings>,
    keepalive: u64,
}

impl Carried {
    fn first(keepalive: u64) -> Self {
        Self {
            settings: None,
            keepalive,
        }
    }

    /// What the request just served leaves for the next one.
    fn after(settings: Option<pingora_core::apps::HttpPersistentSettings>, keepalive: u64) -> Self {
        Self {
            settings,
            keepalive,
        }
    }

    fn apply(&mut self, session: &mut ServerSession, shutting_down: bool) {
        match self.settings.take() {
            Some(settings) => settings.apply_to_session(session),
            None => session.set_keepalive(Some(self.keepalive)),
        }
        if shutting_down {
            session.set_keepalive(None);
        }
    }
}

/// What a connection waits on between and within request heads.
struct Waits {
    timer: Pin<Box<tokio::time::Sleep>>,
    shutdown: ShutdownWatch,
}

enum HeadRead {
    Closed,
    /// Refused, with when the head began.
    Refused(Refusal, tokio::time::Instant),
    Admitted(Admitted),
}

/// A head the engine may read: `len` bytes, then a body framed so.
struct Admitted {
    len: usize,
    framing: Framing,
    /// The client waits for `100 Continue` before it sends the body.
    owed_continue: bool,
}

impl Admitted {
    /// The verdict on a complete head, with what is already held of its
    /// body: pingora writes the head upstream before it reads the body,
    /// so chunked framing that is already malformed in the bytes held is
    /// refused here, before the upstream sees anything (issue #20).
    fn judge(
        held: &[u8],
        len: usize,
        framing: Framing,
        expects_continue: bool,
        began: tokio::time::Instant,
    ) -> HeadRead {
        let body = &held[len..];
        if framing == Framing::Chunked && ChunkedEnd::default().scan(body) == Scanned::Malformed {
            return HeadRead::Refused(Refusal::bad_request(), began);
        }
        let has_body = matches!(framing, Framing::Chunked | Framing::Length(1..));
        HeadRead::Admitted(Self {
            len,
            framing,
            // A client that sent body bytes already is not waiting.
            owed_continue: expects_continue && has_body && body.is_empty(),
        })
    }
}

/// Reads until the head is complete, refused, or the client goes away.
/// An idle connection waits `keepalive` for a request to begin; a begun
/// head must be complete within `head_deadline` of its first byte, however
/// the bytes trickle in.
async fn read_head(
    conn: &mut EdgeStream,
    app: &EdgeApp,
    first: bool,
    waits: &mut Waits,
) -> HeadRead {
    // pingora marks every HTTP/1.1 request keep-alive "forever" (its
    // `respect_keepalive`), so the wait between requests is ours alone; a
    // connection pingora would not keep never comes back here. A new
    // connection owes its first byte within the head deadline: it has no
    // earlier request to have been idle after.
    let idle = match first {
        true => app.head_deadline.min(app.keepalive),
        false => app.keepalive,
    };
    let mut head_started: Option<tokio::time::Instant> = None;
    let mut scanned = 0;
    loop {
        // Judge the head again only when the new bytes could end it or
        // bring it to a limit: a head sent a byte at a time is not parsed
        // from its start on every byte.
        let grown = conn.pending.len() > scanned;
        let worth = conn.pending.len() >= scanned + SCAN_STEP
            || conn.pending[scanned.saturating_sub(3)..].contains(&b'\n');
        if grown && worth {
            scanned = conn.pending.len();
            // The head's first bytes are here (set below otherwise, in the
            // same turn): the start of its deadline and of its latency.
            let began = *head_started.get_or_insert_with(tokio::time::Instant::now);
            match head::scan(&conn.pending, &app.limits) {
                Scan::Partial => {}
                Scan::Admit {
                    len,
                    framing,
                    expects_continue,
                } => return Admitted::judge(&conn.pending, len, framing, expects_continue, began),
                Scan::Refuse(refusal) => return HeadRead::Refused(refusal, began),
            }
        }
        if !conn.pending.is_empty() {
            head_started.get_or_insert_with(tokio::time::Instant::now);
        }
        let started = head_started.is_some();
        let deadline = match head_started {
            Some(at) => at + app.head_deadline,
            None => tokio::time::Instant::now() + idle,
        };
        // A later deadline only moves the registered timer's mark; an
        // earlier one (a head begun) registers it again.
        waits.timer.as_mut().reset(deadline);
        let read = tokio::select! {
            biased;
            read = conn.fill() => Some(read),
            () = waits.timer.as_mut() => None,
            _ = waits.shutdown.wait_for(|down| *down), if !started => return HeadRead::Closed,
        };
        match (read, head_started) {
            (Some(Ok(n)), _) if n > 0 => {}
            (None, Some(began)) => return HeadRead::Refused(Refusal::request_timeout(), began),
            _ => return HeadRead::Closed,
        }
    }
}

/// Writes the refusal, closes our side, and drops what the client still
/// sends for a moment so the answer is not lost to a reset.
async fn refuse(mut conn: EdgeStream, refusal: &Refusal, began: tokio::time::Instant) {
    let request_id = super::headers::new_request_id();
    let bytes = refusal.reply(&request_id).into_closing_http1();
    UNROUTED.count(refusal.status.as_u16(), refusal.code);
    // The proxy's access line, with what a refused head cannot tell: no
    // method or client was read (the client's address depends on headers
    // through trusted proxies), no subject, no upstream.
    AccessLine {
        request_id: &request_id,
        trace_id: None,
        client: None,
        method: "-",
        route: UNROUTED_LABEL,
        status: refusal.status.as_u16(),
        outcome: refusal.code,
        subject: None,
        upstream: None,
        latency: began.elapsed(),
        error: None,
    }
    .write();
    if conn.inner.write_all(&bytes).await.is_err() || conn.inner.flush().await.is_err() {
        return;
    }
    let _ = conn.inner.shutdown().await;
    let drain = async {
        let mut sink = vec![0; 8192];
        let mut dropped = 0;
        while dropped < LINGER_BYTES {
            match tokio::time::timeout(LINGER, conn.inner.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => dropped += n,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TOTAL, drain).await;
}

/// The client connection as pingora sees it: first the bytes the gateway
/// already read, then the socket, but never past the end of the request
/// that was admitted. Bytes beyond it (a pipelined request) stay here
/// until the next head check.
#[derive(Debug)]
pub struct EdgeStream {
    inner: Stream,
    pending: BytesMut,
    /// How much pingora may still read.
    allowance: Allowance,
    eof: bool,
    /// A `100 Continue` the client waits for.
    owed_continue: Option<Continue>,
    /// Where this connection may claim a slot to keep its buffer idle.
    slots: &'static BufferSlots,
    /// It holds one: `pending` is kept between requests.
    keeps_buffer: bool,
}

/// A bound on the connections that keep their head buffer while idle.
/// Letting the buffer go whenever the socket has nothing keeps an idle
/// connection's memory to what the engine holds (HAProxy allocates its
/// buffers only while data is in flight; issue #24), but a busy
/// keep-alive connection then pays an allocation, a free and a copy of
/// each head (up to 250 instructions a request, measured in
/// docs/benchmarks.md). The first connections
/// to claim a slot keep their buffer, and read each head straight into
/// it; past the bound they let it go, so 10,000 idle connections hold at
/// most this many buffers between them, of `KEPT_ROOM` at most each. A
/// slot is claimed when a connection with no buffer takes one, and freed
/// when it closes or is upgraded.
#[derive(Debug)]
pub(crate) struct BufferSlots {
    taken: AtomicUsize,
    most: usize,
}

impl BufferSlots {
    const fn new(most: usize) -> Self {
        Self {
            taken: AtomicUsize::new(0),
            most,
        }
    }

    fn claim(&self) -> bool {
        // Counted only: nothing is published through the count. Written
        // only when a slot is free, so that once every slot is taken the
        // connections without one do not each write the shared count on
        // every request.
        self.taken
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |taken| {
                (taken < self.most).then_some(taken + 1)
            })
            .is_ok()
    }

    fn free(&self) {
        self.taken.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for EdgeStream {
    fn drop(&mut self) {
        if self.keeps_buffer {
            self.slots.free();
        }
    }
}

/// A `100 Continue` owed to a client that sent `Expect: 100-continue`
/// (RFC 9110 §10.1.1), written when the engine first reads the body, as
/// nginx does: a request refused before that gets its final answer at
/// once and never sends its body. Dropped once an answer has started.
#[derive(Debug)]
struct Continue {
    /// Head bytes the engine has still to read.
    head_left: u64,
    /// Bytes of `CONTINUE` written so far.
    sent: usize,
}

/// How far pingora may read into the connection.
#[derive(Debug)]
enum Allowance {
    /// This many bytes; 0 once the request is handed over.
    Bytes(u64),
    /// `head` more bytes of head, then a chunked body up to its last byte.
    Chunked { head: u64, body: ChunkedEnd },
    /// No end the gateway follows: an upgrade, whose connection belongs
    /// to the new protocol after a 101.
    Open,
    /// A chunked body found malformed: every read fails.
    Malformed,
}

impl EdgeStream {
    fn new(inner: Stream) -> Self {
        Self::with_slots(inner, &KEPT)
    }

    fn with_slots(inner: Stream, slots: &'static BufferSlots) -> Self {
        Self {
            inner,
            pending: BytesMut::new(),
            allowance: Allowance::Bytes(0),
            eof: false,
            owed_continue: None,
            slots,
            keeps_buffer: false,
        }
    }

    /// Appends what the socket has to `pending`, one read's room at most.
    async fn fill(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx, READ_ROOM)).await
    }

    /// Appends what the socket has to `pending`, into its spare room: the
    /// head reads and the engine's reads past an admitted request (it
    /// reads once more after each response to learn of a close) both come
    /// here; a zeroed scratch array per read was a visible share of every
    /// request. Reads `most` bytes at most, whatever spare room `pending`
    /// has grown, so what is held stays within its bound.
    fn poll_fill(&mut self, cx: &mut Context<'_>, most: usize) -> Poll<std::io::Result<usize>> {
        // A read of no room reads 0 bytes, which every caller takes for EOF.
        debug_assert!(most > 0, "a read needs room");
        if self.pending.is_empty() && !self.keeps_buffer {
            return self.poll_fill_empty(cx, most);
        }
        // Room for a whole usual head in one read call: with no spare room
        // a `BytesMut` offers 64 bytes at a time, one read call for each.
        // With nothing held this reclaims the room already read past.
        self.pending.reserve(most.min(READ_ROOM));
        if self.pending.is_empty() && self.pending.capacity() > KEPT_ROOM {
            // A kept buffer that a large head or a pipelining client grew
            // is not kept at that size.
            self.pending = BytesMut::with_capacity(READ_ROOM);
        }
        let mut room = (&mut self.pending).limit(most);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut room)
    }

    /// With nothing held and no slot to keep a buffer (see
    /// [`BufferSlots`]), reads onto the stack first, and lets go of the
    /// buffer when the socket has nothing: an idle keep-alive connection
    /// then holds no buffer at all. What arrives is copied into `pending`,
    /// one read's room at most, and a slot claimed if one is free.
    fn poll_fill_empty(
        &mut self,
        cx: &mut Context<'_>,
        most: usize,
    ) -> Poll<std::io::Result<usize>> {
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); READ_ROOM];
        let mut read = ReadBuf::uninit(&mut scratch[..most.min(READ_ROOM)]);
        if Pin::new(&mut self.inner)
            .poll_read(cx, &mut read)?
            .is_pending()
        {
            self.pending = BytesMut::new();
            return Poll::Pending;
        }
        let got = read.filled();
        if !got.is_empty() {
            self.pending.reserve(READ_ROOM);
            self.pending.extend_from_slice(got);
            self.keeps_buffer = self.slots.claim();
        }
        Poll::Ready(Ok(got.len()))
    }

    /// Lets pingora read the head of `len` bytes and the body it announced.
    fn admit(&mut self, admitted: &Admitted) {
        let head = admitted.len as u64;
        self.owed_continue = admitted.owed_continue.then_some(Continue {
            head_left: head,
            sent: 0,
        });
        self.allowance = match admitted.framing {
            Framing::Length(body) => Allowance::Bytes(head.saturating_add(body)),
            Framing::Chunked => Allowance::Chunked {
                head,
                body: ChunkedEnd::default(),
            },
            Framing::Open => {
                // After a 101 the engine reads the socket itself: a kept
                // buffer would only wait out the connection's life.
                if std::mem::take(&mut self.keeps_buffer) {
                    self.slots.free();
                }
                Allowance::Open
            }
        };
    }

    /// In a chunked body: hand pingora its bytes up to the body's last one
    /// (RFC 9112 §7.1), so a request pipelined behind it is held like one
    /// after a `Content-Length` body.
    fn poll_chunked(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pending.is_empty() {
            // Nothing held yet, so up to the whole hold in one read.
            if ready!(self.poll_fill(cx, HOLD_BYTES))? == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        let Allowance::Chunked { body, .. } = &mut self.allowance else {
            return Poll::Ready(Ok(()));
        };
        let offered = self.pending.len().min(buf.remaining());
        let (give, next) = match body.scan(&self.pending[..offered]) {
            Scanned::More => (offered, None),
            Scanned::EndsAfter(end) => (end, Some(Allowance::Bytes(0))),
            Scanned::Malformed => {
                self.allowance = Allowance::Malformed;
                return Poll::Ready(Err(malformed_body()));
            }
        };
        buf.put_slice(&self.pending[..give]);
        self.pending.advance(give);
        if let Some(next) = next {
            self.allowance = next;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes the `100 Continue` owed, unless the client has sent body
    /// bytes already; then forgets it.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some(owed) = &mut self.owed_continue {
            if owed.sent == 0 && !self.pending.is_empty() {
                self.owed_continue = None;
            } else if owed.sent == CONTINUE.len() {
                ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
                self.owed_continue = None;
            } else {
                let rest = &CONTINUE[owed.sent..];
                match ready!(Pin::new(&mut self.inner).poll_write(cx, rest))? {
                    0 => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                    n => owed.sent += n,
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Before the engine writes: an answer that starts before the body is
    /// read makes the `100 Continue` moot, and one begun is finished first.
    fn poll_before_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &self.owed_continue {
            Some(owed) if owed.sent == 0 => self.owed_continue = None,
            Some(_) => ready!(self.poll_continue(cx))?,
            None => {}
        }
        Poll::Ready(Ok(()))
    }

    /// With the request fully handed over: learn of a close, and hold (a
    /// bounded amount of) what follows without giving it to pingora.
    fn poll_held(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while !self.eof && self.pending.len() < HOLD_BYTES {
            if ready!(self.poll_fill(cx, HOLD_BYTES - self.pending.len()))? == 0 {
                self.eof = true;
            }
        }
        if self.eof && self.pending.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl AsyncRead for EdgeStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this
            .owed_continue
            .as_ref()
            .is_some_and(|c| c.head_left == 0)
        {
            ready!(this.poll_continue(cx))?;
        }
        let room = match &this.allowance {
            Allowance::Malformed => return Poll::Ready(Err(malformed_body())),
            Allowance::Bytes(0) => return this.poll_held(cx),
            Allowance::Chunked { head: 0, .. } => return this.poll_chunked(cx, buf),
            Allowance::Bytes(left) | Allowance::Chunked { head: left, .. } => {
                usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(buf.remaining())
            }
            Allowance::Open => buf.remaining(),
        };
        let before = buf.filled().len();
        if this.pending.is_empty() && room >= buf.remaining() {
            // Nothing held and no end to respect within this read: straight
            // into the caller's buffer.
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        } else {
            // An end falls within this read: what lies past it stays held.
            if this.pending.is_empty() {
                ready!(this.poll_fill(cx, HOLD_BYTES))?;
            }
            let n = room.min(this.pending.len());
            buf.put_slice(&this.pending[..n]);
            this.pending.advance(n);
            if this.pending.is_empty() && matches!(this.allowance, Allowance::Open) {
                // Handed out to an upgraded connection's engine, which
                // never reads through here again.
                this.pending = BytesMut::new();
            }
        }
        let served = (buf.filled().len() - before) as u64;
        if let Some(owed) = &mut this.owed_continue {
            owed.head_left = owed.head_left.saturating_sub(served);
        }
        if let Allowance::Bytes(left) | Allowance::Chunked { head: left, .. } = &mut this.allowance
        {
            *left = left.saturating_sub(served);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for EdgeStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.poll_before_write(cx))?;
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
        ready!(self.poll_before_write(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

super::stream_traits::delegate_stream_traits!(EdgeStream);

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_core::protocols::l4::stream::Stream as L4Stream;
    use tokio::net::{TcpListener, TcpStream};

    /// Lets the edge read whatever the socket has, then reports how much it
    /// holds. A read with nothing admitted only holds bytes and never ends
    /// while the client is connected, so each pass ends by its timeout.
    async fn held_after_reading(edge: &mut EdgeStream) -> usize {
        let mut one = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(100), edge.read(&mut one)).await;
        assert!(
            read.is_err(),
            "nothing was admitted, so nothing is handed out"
        );
        edge.pending.len()
    }

    /// No connection keeps its buffer idle: every one lets it go.
    static NO_SLOTS: BufferSlots = BufferSlots::new(0);

    /// A connected pair: the client's end and the edge on the server's,
    /// which may not keep its buffer idle.
    async fn connected() -> (TcpStream, EdgeStream) {
        connected_with(&NO_SLOTS).await
    }

    async fn connected_with(slots: &'static BufferSlots) -> (TcpStream, EdgeStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let stream = Box::new(L4Stream::from(server));
        (client, EdgeStream::with_slots(stream, slots))
    }

    /// Sends `bytes` from a task of its own, so a full socket buffer
    /// cannot stall the test.
    fn send(client: TcpStream, bytes: Vec<u8>) -> tokio::task::JoinHandle<TcpStream> {
        tokio::spawn(async move {
            let mut client = client;
            let _ = client.write_all(&bytes).await;
            client
        })
    }

    #[tokio::test]
    async fn a_pipelined_client_is_held_to_hold_bytes_exactly() {
        let (client, mut edge) = connected().await;
        // Leave the buffer with less spare room than one read's worth, so
        // its next reservation doubles it well past HOLD_BYTES.
        let first = HOLD_BYTES - READ_ROOM + 1000;
        let client = send(client, vec![b'x'; first]).await.expect("sent");
        let mut held = 0;
        for _ in 0..50 {
            held = held_after_reading(&mut edge).await;
            if held == first {
                break;
            }
        }
        assert_eq!(held, first);

        let _client = send(client, vec![b'y'; 2 * HOLD_BYTES]);
        for _ in 0..5 {
            held = held_after_reading(&mut edge).await;
        }
        assert_eq!(held, HOLD_BYTES);
    }

    #[tokio::test]
    async fn a_buffer_grown_earlier_still_holds_no_more_than_hold_bytes() {
        let (client, mut edge) = connected().await;
        // Room far past the bound, as a large head leaves behind.
        edge.pending.reserve(4 * HOLD_BYTES);
        let _client = send(client, vec![b'y'; 2 * HOLD_BYTES]);
        let mut held = 0;
        for _ in 0..5 {
            held = held_after_reading(&mut edge).await;
        }
        assert_eq!(held, HOLD_BYTES);
    }

    const FIRST: &[u8] = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n";
    const SECOND: &[u8] = b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n";

    /// Reads the edge's first head into `pending` and admits it, bodiless.
    async fn admit_first(edge: &mut EdgeStream) {
        while edge.pending.len() < FIRST.len() {
            assert!(edge.fill().await.expect("read") > 0, "the client closed");
        }
        edge.admit(&Admitted {
            len: FIRST.len(),
            framing: Framing::Length(0),
            owed_continue: false,
        });
    }

    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer() {
        let (_client, mut edge) = connected().await;
        // Room a request before it left behind.
        edge.pending.reserve(READ_ROOM);
        assert_eq!(held_after_reading(&mut edge).await, 0);
        assert_eq!(edge.pending.capacity(), 0, "idle, yet a buffer is held");
    }

    #[tokio::test]
    async fn the_buffer_goes_once_a_request_is_handed_over_and_the_connection_idles() {
        let (client, mut edge) = connected().await;
        let _client = send(client, FIRST.to_vec()).await.expect("sent");
        admit_first(&mut edge).await;
        let mut head = vec![0; FIRST.len()];
        edge.read_exact(&mut head).await.expect("the admitted head");
        assert_eq!(head, FIRST);
        assert_eq!(held_after_reading(&mut edge).await, 0);
        assert_eq!(edge.pending.capacity(), 0, "idle, yet a buffer is held");
    }

    #[tokio::test]
    async fn a_pipelined_request_still_waits_for_its_own_head_check() {
        let (client, mut edge) = connected().await;
        let _client = send(client, [FIRST, SECOND].concat()).await.expect("sent");
        admit_first(&mut edge).await;
        let mut head = vec![0; FIRST.len()];
        edge.read_exact(&mut head).await.expect("the admitted head");
        assert_eq!(head, FIRST);
        // The engine's next reads get nothing; the second head stays held.
        assert_second_head_held(&mut edge).await;
    }

    /// Lets the engine read until `SECOND` has arrived: it is handed
    /// nothing, and `SECOND` is held whole for its own head check.
    async fn assert_second_head_held(edge: &mut EdgeStream) {
        let mut held = 0;
        for _ in 0..10 {
            held = held_after_reading(edge).await;
            if held == SECOND.len() {
                break;
            }
        }
        assert_eq!(&edge.pending[..held], SECOND);
    }

    /// Serves `FIRST` on `edge`: reads and admits it, hands it over, then
    /// lets the connection idle.
    async fn serve_first(edge: &mut EdgeStream) {
        admit_first(edge).await;
        let mut head = vec![0; FIRST.len()];
        edge.read_exact(&mut head).await.expect("the admitted head");
        assert_eq!(head, FIRST);
        assert_eq!(held_after_reading(edge).await, 0);
    }

    #[tokio::test]
    async fn the_first_connections_keep_their_buffer_and_the_rest_let_it_go() {
        static ONE_SLOT: BufferSlots = BufferSlots::new(1);
        let (client, mut keeper) = connected_with(&ONE_SLOT).await;
        let _client = send(client, FIRST.to_vec()).await.expect("sent");
        serve_first(&mut keeper).await;
        assert!(keeper.keeps_buffer);
        assert!(
            keeper.pending.capacity() > 0,
            "the slot's buffer was let go"
        );

        let (client, mut other) = connected_with(&ONE_SLOT).await;
        let _client = send(client, FIRST.to_vec()).await.expect("sent");
        serve_first(&mut other).await;
        assert!(!other.keeps_buffer);
        assert_eq!(
            other.pending.capacity(),
            0,
            "idle past the bound, yet a buffer is held"
        );

        // A closed connection frees its slot for the next to take one.
        drop(keeper);
        assert_eq!(ONE_SLOT.taken.load(Ordering::Relaxed), 0);
        let (client, mut next) = connected_with(&ONE_SLOT).await;
        let _client = send(client, FIRST.to_vec()).await.expect("sent");
        serve_first(&mut next).await;
        assert!(next.keeps_buffer);
        drop((other, next));
        assert_eq!(ONE_SLOT.taken.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_kept_buffer_still_holds_a_pipelined_request_for_its_own_head_check() {
        static SLOT: BufferSlots = BufferSlots::new(1);
        let (client, mut edge) = connected_with(&SLOT).await;
        let client = send(client, FIRST.to_vec()).await.expect("sent");
        serve_first(&mut edge).await;
        assert!(edge.keeps_buffer);
        // The next head arrives while the kept buffer is empty.
        let _client = send(client, SECOND.to_vec());
        assert_second_head_held(&mut edge).await;
    }

    #[tokio::test]
    async fn a_kept_buffer_grown_by_a_large_head_is_not_kept_at_that_size() {
        static SLOT: BufferSlots = BufferSlots::new(1);
        let (client, mut edge) = connected_with(&SLOT).await;
        let _client = send(client, FIRST.to_vec()).await.expect("sent");
        serve_first(&mut edge).await;
        // Room far past a head's, as a large head leaves behind.
        edge.pending.reserve(4 * HOLD_BYTES);
        assert_eq!(held_after_reading(&mut edge).await, 0);
        assert!(edge.keeps_buffer);
        let room = edge.pending.capacity();
        assert!(room > 0 && room <= KEPT_ROOM, "kept {room} bytes of room");
    }

    #[tokio::test]
    async fn an_upgraded_connection_gives_up_its_slot_and_buffer() {
        static SLOT: BufferSlots = BufferSlots::new(1);
        let (client, mut edge) = connected_with(&SLOT).await;
        let _client = send(client, FIRST.to_vec()).await.expect("sent");
        while edge.pending.len() < FIRST.len() {
            assert!(edge.fill().await.expect("read") > 0, "the client closed");
        }
        assert!(edge.keeps_buffer);
        edge.admit(&Admitted {
            len: FIRST.len(),
            framing: Framing::Open,
            owed_continue: false,
        });
        assert!(!edge.keeps_buffer);
        assert_eq!(SLOT.taken.load(Ordering::Relaxed), 0);
        let mut head = vec![0; FIRST.len()];
        edge.read_exact(&mut head).await.expect("the admitted head");
        assert_eq!(head, FIRST);
        assert_eq!(
            edge.pending.capacity(),
            0,
            "the engine reads the socket now"
        );
    }
}
