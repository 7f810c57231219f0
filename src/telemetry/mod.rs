//! OpenTelemetry traces: one span per request the gateway handles, with
//! children for token verification, the revocation view, session writes,
//! the login backend and the upstream; W3C Trace Context in and out.
//!
//! Pure: no pingora here. The proxy decides where a span begins and ends
//! and which header carries what (`proxy::trace`); this module makes the
//! spans, reads and writes `traceparent`/`tracestate` (the SDK's
//! `TraceContextPropagator`), and owns the export pipeline (`export`).
//!
//! A request that is not recorded costs next to nothing: with no trusted
//! parent and a sample ratio of 0 no span is made at all; otherwise the
//! SDK's sampler decides once, and a span it does not record is a pair of
//! ids that no attribute is ever computed for.

mod export;

use std::borrow::Cow;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};

pub use export::TraceSettings;
pub use opentelemetry::trace::TraceId;

/// The W3C Trace Context request headers (W3C Recommendation, §3.2, §3.3).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The process's tracer and its export pipeline. Dropping it exports what
/// is queued (the provider's shutdown).
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    settings: TraceSettings,
}

impl Traces {
    /// The pipeline for `settings`, `None` when tracing is off. Nothing is
    /// dialled here: the export thread connects when it has spans.
    pub fn start(settings: &TraceSettings) -> Result<Option<Self>, String> {
        if !settings.enabled {
            return Ok(None);
        }
        let provider = export::provider(settings)?;
        let tracer = provider.tracer("portcullis");
        Ok(Some(Self {
            provider,
            tracer,
            settings: settings.clone(),
        }))
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
        let _ = self.provider.force_flush();
    }

    /// The trace of one request: continuing `parent` (read from a trusted
    /// client by [`incoming`]) or a new one. `None` when nothing would be
    /// recorded and nothing continued: no parent and a ratio of 0.
    pub fn begin(
        &self,
        parent: Option<Context>,
        name: Cow<'static, str>,
        start: SystemTime,
    ) -> Option<RequestTrace> {
        if parent.is_none() && self.settings.sample_ratio <= 0.0 {
            return None;
        }
        let parent = parent.unwrap_or_default();
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .start_with_context(&self.tracer, &parent);
        Some(RequestTrace {
            cx: parent.with_span(span),
            tracer: self.tracer.clone(),
        })
    }
}

/// A client's trace context, `None` without a valid `traceparent`. Read
/// only from a client whose context is trusted (the caller's decision).
pub fn incoming(headers: &HeaderMap) -> Option<Context> {
    let mut lines = headers.get_all(TRACEPARENT).iter();
    // None, or more than one: no parent (a repeated `traceparent` cannot
    // be combined, W3C Trace Context §3.2).
    if lines.next().is_none() || lines.next().is_some() {
        return None;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    cx.span().span_context().is_valid().then_some(cx)
}

/// The trace of one request: its server span, the parent of every other.
pub struct RequestTrace {
    cx: Context,
    tracer: SdkTracer,
}

impl RequestTrace {
    /// Whether the request span is exported: attributes are computed only then.
    pub fn recording(&self) -> bool {
        self.cx.span().is_recording()
    }

    /// The trace id, for the access line.
    pub fn trace_id(&self) -> TraceId {
        self.cx.span().span_context().trace_id()
    }

    /// A child of the request span, begun now.
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Span {
        self.tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&self.tracer, &self.cx)
    }

    /// Sets attributes on the request span (when it is recorded).
    pub fn annotate(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        let span = self.cx.span();
        if span.is_recording() {
            span.set_attributes(attributes);
        }
    }

    /// Renames the request span (its name is known once the route is).
    pub fn rename(&self, name: String) {
        let span = self.cx.span();
        if span.is_recording() {
            span.update_name(name);
        }
    }

    /// Ends the request span now.
    pub fn end(&self) {
        self.cx.span().end();
    }
}

/// The `traceparent` (and the inherited `tracestate`) that names `span`
/// as the parent of the next hop's work.
pub fn outgoing(span: &SpanContext) -> Vec<(HeaderName, HeaderValue)> {
    struct Fields(Vec<(HeaderName, HeaderValue)>);
    impl Injector for Fields {
        fn set(&mut self, key: &str, value: String) {
            // The propagator writes an empty `tracestate` for a trace
            // that has none; the header is left out instead (§3.3).
            if value.is_empty() {
                return;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::try_from(value),
            ) {
                self.0.push((name, value));
            }
        }
    }
    let mut fields = Fields(Vec::with_capacity(2));
    let cx = Context::new().with_remote_span_context(span.clone());
    TraceContextPropagator::new().inject_context(&cx, &mut fields);
    fields.0
}

/// Ends `span`, if it is recorded, with `attributes` set.
pub fn finish(mut span: Span, attributes: impl FnOnce() -> Vec<KeyValue>) {
    if span.is_recording() {
        span.set_attributes(attributes());
    }
    span.end();
}

/// What a request to the next hop carries of the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// Tracing is off: the client's headers pass as they came.
    Untouched,
    /// Tracing is on: the client's are removed, these are set (none when
    /// the request is not traced).
    Replace(Vec<(HeaderName, HeaderValue)>),
}

impl Outgoing {
    /// For a hop whose span is `span` (`None`: not traced), with tracing
    /// `on` or off.
    pub fn of(on: bool, span: Option<&Span>) -> Self {
        match (on, span) {
            (false, _) => Self::Untouched,
            (true, None) => Self::Replace(Vec::new()),
            (true, Some(span)) => Self::Replace(outgoing(span.span_context())),
        }
    }
}

impl RequestTrace {
    /// Marks the request span failed, with a contract code as description.
    pub fn set_status(&self, status: opentelemetry::trace::Status) {
        self.cx.span().set_status(status);
    }
}
