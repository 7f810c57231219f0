//! One finished span as a request's thread leaves it for the export
//! thread: ids, two timestamps, names that are `&'static str` or borrowed
//! from the configuration, and the attributes' values, not yet OTLP. Turning
//! it into OTLP is the export thread's work (`export`), so a request pays
//! for a few words and a queue push, not for an OpenTelemetry object graph
//! (issue #23: tracing on costs ≤ 1.10× tracing off).
//!
//! Ids come from a per-thread random generator, as the SDK's own
//! `RandomIdGenerator` makes them (W3C Trace Context §3.2.2.3: random).

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanId, SpanKind, TraceId};
use opentelemetry::KeyValue;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A name the configuration holds (a route's, an upstream pool's), shared
/// with a span rather than copied for it.
pub trait Named: Send + Sync {
    fn name(&self) -> &str;
}

/// A span's name-like value: fixed in the code, or the configuration's.
#[derive(Clone)]
pub enum Label {
    Static(&'static str),
    Shared(Arc<dyn Named>),
}

impl Label {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Static(name) => name,
            Self::Shared(named) => named.name(),
        }
    }
}

impl std::fmt::Debug for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every span of one trace carries: the trace id and the vendors'
/// `tracestate` a client sent (W3C Trace Context §3.3), if any.
#[derive(Debug, Clone)]
pub(crate) struct TraceIds {
    pub trace_id: TraceId,
    /// Whether the trace is recorded (the sampled flag it propagates).
    pub sampled: bool,
    pub trace_state: Option<Arc<str>>,
}

/// A finished, recorded span.
#[derive(Debug)]
pub(crate) struct Record {
    pub trace: TraceIds,
    pub span_id: SpanId,
    /// [`SpanId::INVALID`] for the root of a new trace.
    pub parent_id: SpanId,
    /// The parent is the client's span, not one of ours.
    pub parent_is_remote: bool,
    pub kind: SpanKind,
    /// Nanoseconds since the Unix epoch.
    pub start: u64,
    pub end: u64,
    pub what: What,
}

/// The span's name and attributes, as values.
#[derive(Debug)]
pub(crate) enum What {
    /// The request span: named `{method} {route}` (OpenTelemetry's HTTP
    /// semantic conventions), failed when the status is 5xx or none.
    Request {
        method: http::Method,
        route: Label,
        status: u16,
        /// `ok` or the contract code.
        outcome: &'static str,
    },
    /// A child span: one optional configuration name (the upstream pool)
    /// and the attributes it ended with.
    Child {
        name: &'static str,
        label: Option<(&'static str, Label)>,
        attributes: Vec<KeyValue>,
    },
}

/// Now, in nanoseconds since the Unix epoch (OTLP's `fixed64` times).
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

thread_local! {
    static RANDOM: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// A new random trace id, never the invalid all-zero one.
pub(crate) fn new_trace_id() -> TraceId {
    TraceId::from(RANDOM.with(|r| r.borrow_mut().random::<u128>()).max(1))
}

/// A new random span id, never the invalid all-zero one.
pub(crate) fn new_span_id() -> SpanId {
    SpanId::from(RANDOM.with(|r| r.borrow_mut().random::<u64>()).max(1))
}

/// A finished child span, for the queue's and the encoder's tests.
#[cfg(test)]
pub(crate) fn test_record(name: &'static str) -> Record {
    Record {
        trace: TraceIds {
            trace_id: new_trace_id(),
            sampled: true,
            trace_state: None,
        },
        span_id: new_span_id(),
        parent_id: SpanId::INVALID,
        parent_is_remote: false,
        kind: SpanKind::Internal,
        start: now(),
        end: now(),
        what: What::Child {
            name,
            label: None,
            attributes: Vec::new(),
        },
    }
}
