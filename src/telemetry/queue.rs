//! The way from a request's thread to the export thread: a bounded queue
//! of finished spans ([`Record`]s), the same pattern as the log's
//! (`log_queue`). A span that finds the queue full is dropped and counted
//! in `portcullis_trace_spans_dropped_total`, never waited for.
//!
//! The export thread waits for a first span, then gives a batch up to
//! `delay` to fill (or until `batch` spans wait), takes it out whole and
//! exports it outside the lock. Only the first span of a batch and the one
//! that fills it wake the thread.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::record::Record;
use crate::metrics::METRICS;

/// How long dropping the pipeline waits for the last export.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The request side: pushes finished spans. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SpanQueue {
    shared: Arc<Shared>,
}

/// How the queue batches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batching {
    /// Spans waiting at most; past this they are dropped.
    pub capacity: usize,
    /// Spans exported in one request at most.
    pub batch: usize,
    /// How long a batch may gather after its first span.
    pub delay: Duration,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the export thread: a first span, a full batch, a flush, the close.
    wake: Condvar,
    /// Wakes those waiting for a flush or for the thread to stop.
    done: Condvar,
    batching: Batching,
}

#[derive(Default)]
struct State {
    records: Vec<Record>,
    closed: bool,
    stopped: bool,
    /// A flush is done once everything queued before it has been exported.
    flushes_asked: u64,
    flushes_done: u64,
}

impl State {
    /// Export now, without gathering: a flush is waiting or the queue closed.
    fn urgent(&self) -> bool {
        self.closed || self.flushes_asked > self.flushes_done
    }
}

/// Owns the export thread; dropping it exports what is queued and stops it.
pub(crate) struct ExportThread {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the export thread, which hands each batch to `export`.
pub(crate) fn start<F>(batching: Batching, export: F) -> std::io::Result<(SpanQueue, ExportThread)>
where
    F: FnMut(&mut Vec<Record>) + Send + 'static,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        done: Condvar::new(),
        batching,
    });
    let exporting = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("portcullis-traces".to_owned())
        .spawn(move || exporting.run(export))?;
    let guard = ExportThread {
        shared: Arc::clone(&shared),
        thread: Some(thread),
    };
    Ok((SpanQueue { shared }, guard))
}

impl SpanQueue {
    /// Queues a finished span; `false` when it was dropped (and counted).
    pub fn push(&self, record: Record) -> bool {
        let mut state = self.shared.lock();
        if state.closed || state.records.len() >= self.shared.batching.capacity {
            drop(state);
            METRICS.trace_spans_dropped.inc();
            return false;
        }
        state.records.push(record);
        let waiting = state.records.len();
        drop(state);
        if waiting == 1 || waiting == self.shared.batching.batch {
            self.shared.wake.notify_one();
        }
        true
    }

    /// Exports everything queued so far; `false` when that took longer
    /// than `timeout` (or the thread has stopped).
    pub fn flush(&self, timeout: Duration) -> bool {
        let mut state = self.shared.lock();
        state.flushes_asked += 1;
        let ticket = state.flushes_asked;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + timeout;
        while state.flushes_done < ticket && !state.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self.shared.wait(&self.shared.done, state, left);
        }
        state.flushes_done >= ticket
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(
        &self,
        on: &Condvar,
        state: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        on.wait_timeout(state, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// The export thread: batch after batch until closed and empty.
    fn run(&self, mut export: impl FnMut(&mut Vec<Record>)) {
        let mut batch = Vec::new();
        loop {
            let mut state = self.gather(self.lock());
            if state.records.is_empty() {
                // Nothing waits: every flush asked for so far is done.
                state.flushes_done = state.flushes_asked;
                state.stopped = state.closed;
                self.done.notify_all();
                if state.stopped {
                    return;
                }
                continue;
            }
            take(&mut state.records, &mut batch, self.batching.batch);
            drop(state);
            export(&mut batch);
            batch.clear();
        }
    }

    /// Waits for a first span (or a flush, or the close), then lets the
    /// batch gather until it is full or `delay` has passed.
    fn gather<'a>(&self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        while state.records.is_empty() && !state.urgent() {
            state = self
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let deadline = Instant::now() + self.batching.delay;
        while state.records.len() < self.batching.batch && !state.urgent() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.wait(&self.wake, state, left);
        }
        state
    }
}

/// Moves up to `most` of the oldest records into the empty `batch`; the
/// two vectors trade places when all of them go, so neither reallocates.
fn take(records: &mut Vec<Record>, batch: &mut Vec<Record>, most: usize) {
    if records.len() <= most {
        std::mem::swap(records, batch);
    } else {
        batch.extend(records.drain(..most));
    }
}

impl Drop for ExportThread {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        self.shared.wake.notify_one();
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        while !state.stopped {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // A collector that does not answer keeps the last batch;
                // the process does not wait for it past this.
                return;
            }
            state = self.shared.wait(&self.shared.done, state, left);
        }
        drop(state);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::record::test_record;

    type Batches = Arc<Mutex<Vec<usize>>>;

    /// An export that keeps the size of each batch it is given.
    fn counting() -> (Batches, impl FnMut(&mut Vec<Record>) + Send + 'static) {
        let batches = Batches::default();
        let kept = Arc::clone(&batches);
        let export = move |records: &mut Vec<Record>| {
            kept.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(records.len());
        };
        (batches, export)
    }

    fn sizes(batches: &Batches) -> Vec<usize> {
        batches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn batching(capacity: usize, batch: usize, delay: Duration) -> Batching {
        Batching {
            capacity,
            batch,
            delay,
        }
    }

    /// Waits until the batches exported so far satisfy `done`.
    fn wait_for(batches: &Batches, done: impl Fn(&[usize]) -> bool) -> Vec<usize> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = sizes(batches);
            if done(&now) || Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    const LONG: Duration = Duration::from_secs(600);

    #[test]
    fn a_full_queue_drops_and_counts_spans_and_frees_its_places_on_export() {
        let (batches, export) = counting();
        // No batch fills (it is larger than the queue) and none is due:
        // only the flush exports.
        let (queue, _thread) = start(batching(2, 512, LONG), export).expect("thread");
        let before = METRICS.trace_spans_dropped.get();
        let queued = (0..5).filter(|_| queue.push(test_record("span"))).count();
        assert_eq!(queued, 2);
        assert_eq!(METRICS.trace_spans_dropped.get() - before, 3);
        assert!(queue.flush(Duration::from_secs(10)));
        assert_eq!(sizes(&batches), [2]);
        // Exported: the queue has room again.
        assert!(queue.push(test_record("span")));
        assert!(queue.flush(Duration::from_secs(10)));
        assert_eq!(sizes(&batches), [2, 1]);
        assert_eq!(METRICS.trace_spans_dropped.get() - before, 3);
    }

    #[test]
    fn a_full_batch_leaves_without_waiting_for_the_delay() {
        let (batches, export) = counting();
        let (queue, _thread) = start(batching(8, 2, LONG), export).expect("thread");
        assert!(queue.push(test_record("a")));
        assert!(queue.push(test_record("b")));
        assert_eq!(wait_for(&batches, |b| !b.is_empty()), [2]);
    }

    #[test]
    fn a_batch_leaves_once_its_delay_has_passed() {
        let (batches, export) = counting();
        let delay = Duration::from_millis(50);
        let (queue, _thread) = start(batching(8, 4, delay), export).expect("thread");
        assert!(queue.push(test_record("a")));
        assert_eq!(wait_for(&batches, |b| !b.is_empty()), [1]);
    }

    #[test]
    fn no_export_is_larger_than_a_batch() {
        let (batches, export) = counting();
        let (queue, _thread) = start(batching(16, 3, LONG), export).expect("thread");
        for _ in 0..7 {
            assert!(queue.push(test_record("span")));
        }
        assert!(queue.flush(Duration::from_secs(10)));
        let exported = sizes(&batches);
        assert_eq!(exported.iter().sum::<usize>(), 7, "{exported:?}");
        assert!(exported.iter().all(|&n| n <= 3), "{exported:?}");
    }

    #[test]
    fn stopping_exports_what_is_queued() {
        let (batches, export) = counting();
        let (queue, thread) = start(batching(8, 8, LONG), export).expect("thread");
        for _ in 0..3 {
            assert!(queue.push(test_record("span")));
        }
        drop(thread);
        assert_eq!(sizes(&batches), [3]);
    }
}
