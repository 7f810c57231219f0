//! The log's way out of the process: each line is formatted on the thread
//! that logs it and handed to one writer thread through a bounded queue,
//! so a request never waits on stderr. When the queue is full the line is
//! dropped and counted (`portcullis_log_lines_dropped_total`), never
//! blocking a request (HAProxy's log ring works the same way).
//!
//! The writer collects for a few milliseconds after the first line and
//! writes everything queued in one call, so under load a write costs one
//! system call per batch, not per line. Dropping the [`LogWriterGuard`]
//! writes what is left before the process exits.
//!
//! This module does not format: `tracing-subscriber` does, once per line.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::IntCounter;

use crate::metrics::METRICS;

/// The access line's target: operators filter on it (`RUST_LOG`), and
/// `log_line` writes its lines directly. It lives here, below both the
/// proxy that logs access lines and the formatter that writes them.
pub const ACCESS_TARGET: &str = "portcullis::access";

/// Bytes of log lines held for the writer; past this, lines are dropped.
pub const DEFAULT_CAPACITY: usize = 4 * 1024 * 1024;

/// How long the writer gathers lines after the first one before writing.
const BATCH_WINDOW: Duration = Duration::from_millis(5);

/// The request side of the queue: a `tracing_subscriber` writer.
#[derive(Clone)]
pub struct LogQueue {
    shared: Arc<Shared>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    capacity: usize,
    dropped: AtomicU64,
    /// The process-wide count of this queue's drops.
    dropped_metric: IntCounter,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    closed: bool,
}

/// Owns the writer thread; dropping it writes what is queued and stops it.
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread on `sink`, holding at most `capacity` bytes.
pub fn start<W: Write + Send + 'static>(
    sink: W,
    capacity: usize,
) -> std::io::Result<(LogQueue, LogWriterGuard)> {
    let dropped = METRICS.log_lines_dropped.clone();
    start_counted(sink, capacity, "portcullis-log", dropped)
}

/// [`start`] for another stream of lines (the audit trail): its writer
/// thread is named `thread`, and its drops are counted in `dropped`.
pub fn start_counted<W: Write + Send + 'static>(
    sink: W,
    capacity: usize,
    thread: &str,
    dropped: IntCounter,
) -> std::io::Result<(LogQueue, LogWriterGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        capacity,
        dropped: AtomicU64::new(0),
        dropped_metric: dropped,
    });
    let writer = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name(thread.to_owned())
        .spawn(move || write_until_closed(&writer, sink))?;
    let guard = LogWriterGuard {
        shared: Arc::clone(&shared),
        thread: Some(thread),
    };
    Ok((LogQueue { shared }, guard))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LogQueue {
    /// Queues one formatted line; `false` when it was dropped.
    pub fn push(&self, line: &[u8]) -> bool {
        let mut pending = self.shared.lock();
        if pending.closed || pending.lines.len() + line.len() > self.shared.capacity {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            self.shared.dropped_metric.inc();
            return false;
        }
        // Only the first line of a batch wakes the writer: one wake-up per
        // batch, not one per line.
        let first = pending.lines.is_empty();
        pending.lines.extend_from_slice(line);
        drop(pending);
        if first {
            self.shared.wake.notify_one();
        }
        true
    }

    /// Lines this queue dropped because it was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// The writer: waits for a first line, lets a batch gather, writes it all.
fn write_until_closed<W: Write>(shared: &Shared, mut sink: W) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.lock();
        while pending.lines.is_empty() && !pending.closed {
            pending = shared
                .wake
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.lines.is_empty() {
            return;
        }
        if !pending.closed {
            drop(pending);
            std::thread::sleep(BATCH_WINDOW);
            pending = shared.lock();
        }
        batch.clear();
        std::mem::swap(&mut batch, &mut pending.lines);
        drop(pending);
        // A failed write has nowhere to be reported; the next batch tries again.
        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event is one `write_all` of one whole line (how `tracing-subscriber`
/// writes), so a write is queued or dropped whole.
impl Write for &LogQueue {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogQueue {
    type Writer = &'a LogQueue;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}
