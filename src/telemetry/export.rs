//! The way out: finished spans go through a bounded queue to the SDK's
//! batch processor, whose own thread encodes them (OTLP protobuf) and
//! POSTs each batch to the collector, never on a request's thread.
//!
//! The SDK's processor drops spans when its queue is full but keeps the
//! count to itself, so [`Bounded`] keeps its own: a span is admitted only
//! while fewer than `queue_size` wait, and one turned away is counted in
//! `portcullis_trace_spans_dropped_total`. [`Counted`] gives the place
//! back as each batch leaves for the exporter. The HTTP client is `ureq`,
//! already the gateway's for JWKS and the admin CLI: no second TLS stack.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;

use crate::metrics::METRICS;

/// How long one export may take; a collector slower than this loses the batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the batch processor gathers spans before it exports.
const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// The largest answer read from a collector (its body says nothing we use).
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// The provider for `settings`: the sampler, the resource, the pipeline.
pub(super) fn provider(settings: &TraceSettings) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(UreqClient::new(EXPORT_TIMEOUT))
        .with_endpoint(settings.endpoint.clone())
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("the OTLP exporter: {e}"))?;
    Ok(pipeline(exporter, settings))
}

/// The provider around `exporter`: the bounded queue, the batches, the
/// sampler and the resource.
fn pipeline<E: SpanExporter + 'static>(exporter: E, settings: &TraceSettings) -> SdkTracerProvider {
    let waiting = Arc::new(AtomicUsize::new(0));
    let batches = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        waiting: Arc::clone(&waiting),
        failing: Arc::new(AtomicBool::new(false)),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(settings.queue_size)
            .with_max_export_batch_size(settings.queue_size.min(512))
            .with_scheduled_delay(EXPORT_DELAY)
            .build(),
    )
    .build();
    let processor = Bounded {
        inner: batches,
        waiting,
        capacity: settings.queue_size,
    };
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(sampler(settings))
        .with_resource(resource)
        .build()
}

/// The ratio decides a new trace; a continued one follows its parent's
/// decision unless `parent_based` is off.
fn sampler(settings: &TraceSettings) -> Sampler {
    let ratio = Sampler::TraceIdRatioBased(settings.sample_ratio);
    if settings.parent_based {
        Sampler::ParentBased(Box::new(ratio))
    } else {
        ratio
    }
}

/// Admits a finished span while fewer than `capacity` wait for export.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        let admitted = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if admitted {
            self.inner.on_end(span);
        } else {
            METRICS.trace_spans_dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, giving back each span's place in the queue as its
/// batch leaves, and saying when exports begin and stop failing (once
/// each: a collector that is down would otherwise be a line a second).
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    waiting: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

/// Logs a change between exports that succeed and exports that fail.
fn note_outcome(failing: &AtomicBool, result: &OTelSdkResult) {
    let failed = result.is_err();
    if failing.swap(failed, Ordering::AcqRel) == failed {
        return;
    }
    match result {
        Err(e) => {
            tracing::warn!(error = %e, "trace export failed; spans are lost until the collector answers")
        }
        Ok(()) => tracing::info!("trace export works again"),
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.waiting.fetch_sub(batch.len(), Ordering::AcqRel);
        let sent = self.inner.export(batch);
        async move {
            let result = sent.await;
            note_outcome(&self.failing, &result);
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// `ureq` as the exporter's HTTP client. It blocks, which is right where
/// it runs: on the batch processor's own thread.
#[derive(Debug)]
struct UreqClient {
    agent: ureq::Agent,
}

impl UreqClient {
    fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Self { agent }
    }
}

#[async_trait::async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, body.to_vec());
        let mut answer = self.agent.run(request)?;
        let body = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec()?;
        let mut response = Response::new(Bytes::from(body));
        *response.status_mut() = answer.status();
        Ok(response)
    }
}

/// `[tracing]`, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    pub enabled: bool,
    /// The OTLP/HTTP traces URL, used as written.
    pub endpoint: String,
    pub sample_ratio: f64,
    /// A continued trace keeps its parent's sampling decision.
    pub parent_based: bool,
    /// Any client's trace context is continued, not only a trusted proxy's.
    pub trust_client_context: bool,
    pub service_name: String,
    /// Finished spans waiting for export, at most.
    pub queue_size: usize,
}

impl Default for TraceSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:4318/v1/traces".to_owned(),
            sample_ratio: 1.0,
            parent_based: true,
            trust_client_context: false,
            service_name: "portcullis".to_owned(),
            queue_size: 2048,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};

    use super::*;

    /// Keeps what it is given.
    #[derive(Debug, Default, Clone)]
    struct Kept(Arc<Mutex<usize>>);

    impl SpanExporter for Kept {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) += batch.len();
            Ok(())
        }
    }

    fn settings(queue_size: usize, sample_ratio: f64) -> TraceSettings {
        TraceSettings {
            enabled: true,
            queue_size,
            sample_ratio,
            ..TraceSettings::default()
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_spans_and_frees_its_places_on_export() {
        let kept = Kept::default();
        let provider = pipeline(kept.clone(), &settings(2, 1.0));
        let tracer = provider.tracer("test");
        let before = METRICS.trace_spans_dropped.get();
        // The batch leaves after a second: all five end before it does.
        for _ in 0..5 {
            tracer.start("span").end();
        }
        assert_eq!(METRICS.trace_spans_dropped.get() - before, 3);
        let _ = provider.force_flush();
        assert_eq!(*kept.0.lock().unwrap_or_else(|e| e.into_inner()), 2);
        // Exported: the queue has room again.
        tracer.start("span").end();
        let _ = provider.force_flush();
        assert_eq!(*kept.0.lock().unwrap_or_else(|e| e.into_inner()), 3);
        assert_eq!(METRICS.trace_spans_dropped.get() - before, 3);
    }

    #[test]
    fn a_sample_ratio_of_0_records_no_new_trace() {
        let kept = Kept::default();
        let provider = pipeline(kept.clone(), &settings(16, 0.0));
        let span = provider.tracer("test").start("span");
        assert!(!span.is_recording());
        drop(span);
        let _ = provider.force_flush();
        assert_eq!(*kept.0.lock().unwrap_or_else(|e| e.into_inner()), 0);
    }
}
