//! OpenTelemetry traces: one span per request the gateway handles, with
//! children for token verification, the revocation view, session writes,
//! the login backend and the upstream; W3C Trace Context in and out.
//!
//! Pure: no pingora here. The proxy decides where a span begins and ends
//! and which header carries what (`proxy::trace`); this module makes the
//! spans, reads `traceparent`/`tracestate` (the SDK's
//! `TraceContextPropagator`), writes them, and owns the way out.
//!
//! A request's thread does little: it draws ids, reads the clock, and
//! queues each finished span as a [`record::Record`] of plain values
//! (`queue`); the export thread turns batches of them into OTLP and sends
//! them (`export`). Sampling follows the SDK's rules (parent-based by
//! default, `TraceIdRatioBased` for a new trace), decided once per request.
//! A request that is not recorded costs next to nothing: with no trusted
//! parent and a sample ratio of 0 no trace is made at all; otherwise a
//! span that is not recorded is a pair of ids nothing is computed for.

mod export;
mod otlp;
mod queue;
mod record;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanId, TraceContextExt};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub use export::TraceSettings;
pub use opentelemetry::trace::{SpanKind, TraceId};
pub use record::{Label, Named};

use queue::{Batching, ExportThread, SpanQueue};
use record::{Record, TraceIds, What};

/// The W3C Trace Context request headers (W3C Recommendation, §3.2, §3.3).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// How long [`Traces::flush`] waits for the export.
const FLUSH_WAIT: Duration = Duration::from_secs(15);

/// The process's traces: the sampler, the queue and the export thread.
/// Dropping it exports what is queued.
pub struct Traces {
    queue: SpanQueue,
    sampler: Sampler,
    settings: TraceSettings,
    _export: ExportThread,
}

impl Traces {
    /// The pipeline for `settings`, `None` when tracing is off. Nothing is
    /// dialled here: the export thread connects when it has spans.
    pub fn start(settings: &TraceSettings) -> Result<Option<Self>, String> {
        if !settings.enabled {
            return Ok(None);
        }
        let mut encoder = export::Encoder::new(&settings.service_name);
        let mut collector = export::Collector::new(&settings.endpoint);
        let export =
            move |records: &mut Vec<Record>| collector.send(encoder.encode(records).as_slice());
        Self::exporting(settings, export).map(Some)
    }

    /// The pipeline, each batch of finished spans handed to `export` on
    /// the export thread.
    fn exporting<F>(settings: &TraceSettings, export: F) -> Result<Self, String>
    where
        F: FnMut(&mut Vec<Record>) + Send + 'static,
    {
        let batching = Batching {
            capacity: settings.queue_size,
            batch: settings.queue_size.min(export::MAX_BATCH),
            delay: export::EXPORT_DELAY,
        };
        let (queue, thread) =
            queue::start(batching, export).map_err(|e| format!("the trace export thread: {e}"))?;
        Ok(Self {
            queue,
            sampler: Sampler::of(settings),
            settings: settings.clone(),
            _export: thread,
        })
    }

    /// Whether the client's own trace context may be continued, whoever
    /// the client is.
    pub fn trusts_every_client(&self) -> bool {
        self.settings.trust_client_context
    }

    /// The settings this pipeline was built with (a reload that changes
    /// them takes effect on restart).
    pub fn settings(&self) -> &TraceSettings {
        &self.settings
    }

    /// Exports every finished span now (tests, shutdown).
    pub fn flush(&self) {
        let _ = self.queue.flush(FLUSH_WAIT);
    }

    /// The trace of one request, begun now: continuing `parent` (read from
    /// a trusted client by [`incoming`]) or a new one. `None` when nothing
    /// would be recorded and nothing continued: no parent and a ratio of 0.
    pub fn begin(&self, parent: Option<Parent>) -> Option<RequestTrace> {
        if parent.is_none() && self.settings.sample_ratio <= 0.0 {
            return None;
        }
        let start = record::now();
        let trace_id = parent
            .as_ref()
            .map_or_else(record::new_trace_id, |p| p.trace_id);
        let sampled = self.sampler.samples(trace_id, parent.as_ref());
        let (parent_id, trace_state) =
            parent.map_or((SpanId::INVALID, None), |p| (p.span_id, p.trace_state));
        Some(RequestTrace {
            trace: TraceIds {
                trace_id,
                sampled,
                trace_state,
            },
            span_id: record::new_span_id(),
            parent_id,
            start,
            queue: sampled.then(|| self.queue.clone()),
        })
    }
}

/// Which traces are recorded: the SDK's `ParentBased(TraceIdRatioBased)`
/// (or `TraceIdRatioBased` alone), decided once for a request's spans.
#[derive(Debug, Clone, Copy)]
struct Sampler {
    ratio: f64,
    parent_based: bool,
}

impl Sampler {
    fn of(settings: &TraceSettings) -> Self {
        Self {
            ratio: settings.sample_ratio,
            parent_based: settings.parent_based,
        }
    }

    fn samples(self, trace_id: TraceId, parent: Option<&Parent>) -> bool {
        match parent {
            Some(parent) if self.parent_based => parent.sampled,
            _ => ratio_samples(self.ratio, trace_id),
        }
    }
}

/// The SDK's `TraceIdRatioBased` rule: the trace id's low 64 bits, less
/// one, against the ratio's share of 2^63 (so every service that follows
/// it makes the same decision for a trace).
fn ratio_samples(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let low = u128::from_be_bytes(trace_id.to_bytes()) as u64;
    (low >> 1) < bound
}

/// A client's span, continued by the request's trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    trace_id: TraceId,
    span_id: SpanId,
    sampled: bool,
    trace_state: Option<Arc<str>>,
}

/// A client's trace context, `None` without a valid `traceparent`. Read
/// only from a client whose context is trusted (the caller's decision).
pub fn incoming(headers: &HeaderMap) -> Option<Parent> {
    let mut lines = headers.get_all(TRACEPARENT).iter();
    // None, or more than one: no parent (a repeated `traceparent` cannot
    // be combined, W3C Trace Context §3.2).
    if lines.next().is_none() || lines.next().is_some() {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&Fields(headers));
    let span = cx.span();
    let context = span.span_context();
    if !context.is_valid() {
        return None;
    }
    let state = context.trace_state().header();
    Some(Parent {
        trace_id: context.trace_id(),
        span_id: context.span_id(),
        sampled: context.is_sampled(),
        trace_state: (!state.is_empty()).then(|| Arc::from(state)),
    })
}

/// A request's headers as the propagator reads them.
struct Fields<'a>(&'a HeaderMap);

impl Extractor for Fields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// The trace of one request: its server span, the parent of every other.
pub struct RequestTrace {
    trace: TraceIds,
    span_id: SpanId,
    /// The client's span, or [`SpanId::INVALID`] for a new trace.
    parent_id: SpanId,
    start: u64,
    /// While the span is recorded and has not ended.
    queue: Option<SpanQueue>,
}

impl RequestTrace {
    /// Whether the request's spans are exported: attributes are computed only then.
    pub fn recording(&self) -> bool {
        self.trace.sampled
    }

    /// The trace id, for the access line.
    pub fn trace_id(&self) -> TraceId {
        self.trace.trace_id
    }

    /// A child of the request span, begun now.
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Span {
        let open = self.queue.as_ref().map(|queue| Open {
            queue: queue.clone(),
            parent_id: self.span_id,
            name,
            kind,
            start: record::now(),
            label: None,
        });
        Span {
            trace: self.trace.clone(),
            span_id: record::new_span_id(),
            open,
        }
    }

    /// Ends the request span now, named `{method} {route}`, with what the
    /// request came to: its status and outcome (`ok` or a contract code).
    pub fn end(&mut self, method: &http::Method, route: Label, status: u16, outcome: &'static str) {
        let Some(queue) = self.queue.take() else {
            return;
        };
        queue.push(Record {
            trace: self.trace.clone(),
            span_id: self.span_id,
            parent_id: self.parent_id,
            parent_is_remote: self.parent_id != SpanId::INVALID,
            kind: SpanKind::Server,
            start: self.start,
            end: record::now(),
            what: What::Request {
                method: method.clone(),
                route,
                status,
                outcome,
            },
        });
    }
}

/// A request whose handling stopped before it was answered (its task
/// dropped: shutdown, a hook that never returned) still ends its span, as
/// an SDK span does when dropped, so the spans of its work keep their
/// parent in the trace. What it came to is unknown: no status (0, a
/// failure), outcome `cancelled`, method and route `-` as in an access
/// line that could not tell them.
impl Drop for RequestTrace {
    fn drop(&mut self) {
        if self.queue.is_none() {
            return;
        }
        if let Ok(unknown) = http::Method::from_bytes(b"-") {
            self.end(&unknown, Label::Static("-"), 0, "cancelled");
        }
    }
}

/// A child span: its ids (for the next hop's `traceparent`) and, when it
/// is recorded, what it needs to be queued when it ends.
pub struct Span {
    trace: TraceIds,
    span_id: SpanId,
    open: Option<Open>,
}

struct Open {
    queue: SpanQueue,
    parent_id: SpanId,
    name: &'static str,
    kind: SpanKind,
    start: u64,
    label: Option<(&'static str, Label)>,
}

impl Span {
    /// Whether the span is exported: attributes are computed only then.
    pub fn is_recording(&self) -> bool {
        self.open.is_some()
    }

    /// Sets the span's one configuration name (`key` = `label`), kept
    /// shared until the export thread writes it.
    pub fn set_label(&mut self, key: &'static str, label: Label) {
        if let Some(open) = &mut self.open {
            open.label = Some((key, label));
        }
    }

    /// Queues the span, ended now, with `attributes`.
    fn end(&mut self, attributes: Vec<KeyValue>) {
        let Some(open) = self.open.take() else {
            return;
        };
        open.queue.push(Record {
            trace: self.trace.clone(),
            span_id: self.span_id,
            parent_id: open.parent_id,
            parent_is_remote: false,
            kind: open.kind,
            start: open.start,
            end: record::now(),
            what: What::Child {
                name: open.name,
                label: open.label,
                attributes,
            },
        });
    }
}

/// A span dropped unfinished (its work was cancelled) still ends, as an
/// SDK span does, without the attributes its outcome would have given.
impl Drop for Span {
    fn drop(&mut self) {
        self.end(Vec::new());
    }
}

/// Ends `span`, if it is recorded, with `attributes` set.
pub fn finish(mut span: Span, attributes: impl FnOnce() -> Vec<KeyValue>) {
    if span.is_recording() {
        span.end(attributes());
    }
}

/// What a request to the next hop carries of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// Tracing is off: the client's headers pass as they came.
    Untouched,
    /// Tracing is on: the client's are removed, these are set (none when
    /// the request is not traced).
    Replace(Option<TraceHeaders>),
}

impl Outgoing {
    /// For a hop whose span is `span` (`None`: not traced), with tracing
    /// `on` or off.
    pub fn of(on: bool, span: Option<&Span>) -> Self {
        match (on, span) {
            (false, _) => Self::Untouched,
            (true, None) => Self::Replace(None),
            (true, Some(span)) => Self::Replace(TraceHeaders::naming(span)),
        }
    }
}

/// The `traceparent` that names a span as the parent of the next hop's
/// work, and the `tracestate` the trace inherited (W3C Trace Context §3.2, §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    traceparent: [u8; TRACEPARENT_LEN],
    tracestate: Option<Arc<str>>,
}

/// `00-` 32 hex digits `-` 16 hex digits `-` 2 hex digits.
const TRACEPARENT_LEN: usize = 55;

impl TraceHeaders {
    fn naming(span: &Span) -> Option<Self> {
        let mut value = [b'-'; TRACEPARENT_LEN];
        value[..2].copy_from_slice(b"00");
        hex::encode_to_slice(span.trace.trace_id.to_bytes(), &mut value[3..35]).ok()?;
        hex::encode_to_slice(span.span_id.to_bytes(), &mut value[36..52]).ok()?;
        value[53..].copy_from_slice(if span.trace.sampled { b"01" } else { b"00" });
        Some(Self {
            traceparent: value,
            tracestate: span.trace.trace_state.clone(),
        })
    }

    /// The `traceparent` value.
    pub fn traceparent(&self) -> &[u8] {
        &self.traceparent
    }

    /// The `tracestate` value, when the trace has one.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::str::FromStr;
    use std::sync::{Mutex, PoisonError};

    use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
    use opentelemetry::Context;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind as Kind;
    use opentelemetry_proto::tonic::trace::v1::Span as Exported;
    use opentelemetry_sdk::trace::{Sampler as SdkSampler, SamplingDecision, ShouldSample};
    use prost::Message as _;

    use super::*;

    const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CLIENT_SPAN: &str = "00f067aa0ba902b7";

    type Kept = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

    /// The pipeline, each OTLP request it sends decoded with the official
    /// generated types and kept.
    fn pipeline(sample_ratio: f64) -> (Traces, Kept) {
        let settings = TraceSettings {
            enabled: true,
            sample_ratio,
            ..TraceSettings::default()
        };
        let mut encoder = export::Encoder::new(&settings.service_name);
        let kept = Kept::default();
        let sink = Arc::clone(&kept);
        let export = move |records: &mut Vec<Record>| {
            let body = encoder.encode(records);
            let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP");
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(request);
        };
        let traces = Traces::exporting(&settings, export).expect("the pipeline");
        (traces, kept)
    }

    fn exported(traces: &Traces, kept: &Kept) -> Vec<Exported> {
        traces.flush();
        let requests = kept.lock().unwrap_or_else(PoisonError::into_inner);
        requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    fn client(flags: &str, tracestate: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-{flags}");
        headers.insert(TRACEPARENT, traceparent.parse().expect("a value"));
        if let Some(state) = tracestate {
            headers.insert(TRACESTATE, state.parse().expect("a value"));
        }
        headers
    }

    fn attribute(span: &Exported, key: &str) -> Option<Value> {
        let found = span.attributes.iter().find(|a| a.key == key)?;
        found.value.as_ref()?.value.clone()
    }

    /// The one exported span of `kind`.
    fn of_kind(spans: &[Exported], kind: Kind) -> &Exported {
        let found = spans.iter().find(|s| s.kind == kind as i32);
        found.unwrap_or_else(|| panic!("no {kind:?} span in {spans:#?}"))
    }

    fn text(value: &str) -> Option<Value> {
        Some(Value::StringValue(value.to_owned()))
    }

    #[test]
    fn a_requests_spans_reach_the_collector_as_one_tree_under_the_clients_span() {
        let (traces, kept) = pipeline(1.0);
        let parent = incoming(&client("01", Some("vendor=opaque1"))).expect("a parent");
        let mut request = traces.begin(Some(parent)).expect("a trace");
        let mut upstream = request.child("upstream", SpanKind::Client);
        upstream.set_label("portcullis.upstream", Label::Static("backend"));
        finish(upstream, || {
            vec![KeyValue::new("http.response.status_code", 200)]
        });
        request.end(&http::Method::GET, Label::Static("api"), 200, "ok");
        let spans = exported(&traces, &kept);
        assert_eq!(spans.len(), 2, "{spans:#?}");
        let server = of_kind(&spans, Kind::Server);
        let call = of_kind(&spans, Kind::Client);
        assert_eq!(hex::encode(&server.trace_id), CLIENT_TRACE);
        assert_eq!(hex::encode(&server.parent_span_id), CLIENT_SPAN);
        assert_eq!(server.name, "GET api");
        assert_eq!(server.trace_state, "vendor=opaque1");
        assert_eq!(server.flags, 0x301, "sampled, the parent remote");
        assert_eq!(attribute(server, "http.route"), text("api"));
        assert_eq!(attribute(server, "http.request.method"), text("GET"));
        assert_eq!(
            attribute(server, "http.response.status_code"),
            Some(Value::IntValue(200))
        );
        assert_eq!(attribute(server, "portcullis.outcome"), text("ok"));
        assert_eq!(attribute(server, "portcullis.error_code"), None);
        assert_eq!(server.status.as_ref().map(|s| s.code), Some(0));
        assert!(server.start_time_unix_nano <= call.start_time_unix_nano);
        assert!(call.end_time_unix_nano <= server.end_time_unix_nano);
        assert_eq!(call.trace_id, server.trace_id);
        assert_eq!(call.parent_span_id, server.span_id);
        assert_eq!(call.flags, 0x101, "sampled, the parent ours");
        assert_eq!(call.name, "upstream");
        assert_eq!(attribute(call, "portcullis.upstream"), text("backend"));
        assert_eq!(
            attribute(call, "http.response.status_code"),
            Some(Value::IntValue(200))
        );
        let requests = kept.lock().unwrap_or_else(PoisonError::into_inner);
        let resource = requests[0].resource_spans[0]
            .resource
            .as_ref()
            .expect("resource");
        let service = resource.attributes.iter().find(|a| a.key == "service.name");
        let service = service.and_then(|a| a.value.as_ref()?.value.clone());
        assert_eq!(service, text("portcullis"));
        let scope = requests[0].resource_spans[0].scope_spans[0].scope.as_ref();
        assert_eq!(scope.map(|s| s.name.as_str()), Some("portcullis"));
    }

    #[test]
    fn a_new_trace_is_a_root_and_a_failed_request_carries_its_contract_code() {
        let (traces, kept) = pipeline(1.0);
        let mut request = traces.begin(None).expect("a trace");
        request.end(
            &http::Method::POST,
            Label::Static("api"),
            502,
            "upstream_failed",
        );
        let spans = exported(&traces, &kept);
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(span.span_id.len(), 8);
        assert_eq!(span.flags, 0x101);
        assert_eq!(
            attribute(span, "portcullis.error_code"),
            text("upstream_failed")
        );
        let status = span.status.as_ref().expect("a status");
        assert_eq!(
            (status.code, status.message.as_str()),
            (2, "upstream_failed")
        );
    }

    #[test]
    fn at_ratio_0_no_new_trace_begins_and_a_parents_decision_is_followed() {
        let (traces, kept) = pipeline(0.0);
        assert!(traces.begin(None).is_none());
        let unsampled = incoming(&client("00", None)).expect("a parent");
        let mut request = traces.begin(Some(unsampled)).expect("continued");
        assert!(!request.recording());
        let child = request.child("verify_token", SpanKind::Internal);
        assert!(!child.is_recording());
        // The next hop still gets the trace, unsampled, and our span as parent.
        let Outgoing::Replace(Some(fields)) = Outgoing::of(true, Some(&child)) else {
            panic!("trace headers");
        };
        let sent = std::str::from_utf8(fields.traceparent()).expect("text");
        assert!(
            sent.starts_with(&format!("00-{CLIENT_TRACE}-")) && sent.ends_with("-00"),
            "{sent}"
        );
        finish(child, || {
            unreachable!("no attributes for a span not recorded")
        });
        request.end(&http::Method::GET, Label::Static("api"), 200, "ok");
        let sampled = incoming(&client("01", None)).expect("a parent");
        let mut recorded = traces.begin(Some(sampled)).expect("continued");
        assert!(recorded.recording());
        recorded.end(&http::Method::GET, Label::Static("api"), 200, "ok");
        assert_eq!(
            exported(&traces, &kept).len(),
            1,
            "only the sampled parent's"
        );
    }

    #[test]
    fn a_span_dropped_unfinished_is_still_exported() {
        let (traces, kept) = pipeline(1.0);
        let request = traces.begin(None).expect("a trace");
        drop(request.child("session_write", SpanKind::Internal));
        let spans = exported(&traces, &kept);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "session_write");
        assert!(spans[0].attributes.is_empty());
    }

    #[test]
    fn a_request_dropped_before_its_answer_still_parents_its_spans() {
        let (traces, kept) = pipeline(1.0);
        let request = traces.begin(None).expect("a trace");
        drop(request.child("upstream", SpanKind::Client));
        drop(request);
        let spans = exported(&traces, &kept);
        assert_eq!(spans.len(), 2, "the child and its request");
        let server = of_kind(&spans, Kind::Server);
        let child = of_kind(&spans, Kind::Client);
        assert_eq!(child.name, "upstream");
        assert_eq!(child.parent_span_id, server.span_id);
        assert_eq!(attribute(server, "portcullis.outcome"), text("cancelled"));
        assert_eq!(
            attribute(server, "http.response.status_code"),
            Some(Value::IntValue(0))
        );
        let status = server.status.as_ref().expect("a status");
        assert_eq!(status.message, "cancelled");
    }

    #[test]
    fn a_request_that_ended_is_not_ended_again_when_dropped() {
        let (traces, kept) = pipeline(1.0);
        let mut request = traces.begin(None).expect("a trace");
        request.end(&http::Method::GET, Label::Static("home"), 200, "ok");
        drop(request);
        let spans = exported(&traces, &kept);
        assert_eq!(spans.len(), 1);
        assert_eq!(attribute(&spans[0], "portcullis.outcome"), text("ok"));
    }

    #[test]
    fn a_repeated_or_invalid_traceparent_is_no_parent() {
        let mut twice = client("01", None);
        twice.append(
            TRACEPARENT,
            format!("00-{}-{CLIENT_SPAN}-01", "1".repeat(32))
                .parse()
                .expect("value"),
        );
        assert_eq!(incoming(&twice), None);
        let mut zero = HeaderMap::new();
        zero.insert(
            TRACEPARENT,
            format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32))
                .parse()
                .expect("value"),
        );
        assert_eq!(incoming(&zero), None);
        assert_eq!(incoming(&HeaderMap::new()), None);
    }

    /// The ratio decides as the SDK's `TraceIdRatioBased` sampler does.
    #[test]
    fn the_ratio_decides_as_the_sdks_sampler() {
        for ratio in [0.0, 0.001, 0.25, 0.5, 0.75, 0.999, 1.0] {
            let sdk = SdkSampler::TraceIdRatioBased(ratio);
            for _ in 0..2000 {
                let id = record::new_trace_id();
                let decided = sdk.should_sample(None, id, "request", &SpanKind::Server, &[], &[]);
                let sdk_samples = decided.decision == SamplingDecision::RecordAndSample;
                assert_eq!(ratio_samples(ratio, id), sdk_samples, "{ratio} {id}");
            }
        }
    }

    /// The `traceparent` and `tracestate` sent on are what the SDK's
    /// propagator writes for the same span.
    #[test]
    fn the_trace_headers_are_the_sdk_propagators() {
        let (traces, _kept) = pipeline(1.0);
        for (flags, state) in [("01", Some("vendor=opaque1,other=2")), ("00", None)] {
            let parent = incoming(&client(flags, state)).expect("a parent");
            let request = traces.begin(Some(parent)).expect("a trace");
            let span = request.child("upstream", SpanKind::Client);
            let Outgoing::Replace(Some(ours)) = Outgoing::of(true, Some(&span)) else {
                panic!("trace headers");
            };
            let sampled = if span.trace.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            let trace_state = TraceState::from_str(state.unwrap_or_default()).expect("a state");
            let context = SpanContext::new(
                span.trace.trace_id,
                span.span_id,
                sampled,
                false,
                trace_state,
            );
            let mut theirs = HashMap::new();
            let cx = Context::new().with_remote_span_context(context);
            TraceContextPropagator::new().inject_context(&cx, &mut theirs);
            assert_eq!(
                std::str::from_utf8(ours.traceparent()).ok(),
                theirs.get("traceparent").map(String::as_str)
            );
            let their_state = theirs.get("tracestate").filter(|s| !s.is_empty());
            assert_eq!(ours.tracestate(), their_state.map(String::as_str));
        }
    }
}
