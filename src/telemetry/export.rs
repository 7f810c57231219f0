//! The way out, on the export thread only: each batch of finished spans
//! ([`Record`]s) becomes one OTLP `ExportTraceServiceRequest`, built with
//! the official generated types (`opentelemetry-proto`) and encoded by
//! `prost`, and is POSTed to the collector (OTLP/HTTP, protobuf).
//!
//! The SDK's `SpanData` and its exporter are not used: turning each span
//! into `SpanData` and then into these same types cost more than the
//! request itself (docs/benchmarks.md, "Traces at sample ratio 1.0"). The
//! resource is still the SDK's (`service.name`, the `telemetry.sdk.*`
//! attributes, `OTEL_RESOURCE_ATTRIBUTES`), converted once. The HTTP
//! client is `ureq`, already the gateway's for JWKS and the admin CLI: no
//! second TLS stack.

use std::time::Duration;

#[cfg(test)]
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
#[cfg(test)]
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
#[cfg(test)]
use prost::Message as _;

use super::otlp;
use super::record::Record;

/// How long one export may take; a collector slower than this loses the batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a batch gathers after its first span before it is exported.
pub(super) const EXPORT_DELAY: Duration = Duration::from_secs(1);

/// Spans in one export at most.
pub(super) const MAX_BATCH: usize = 512;

/// The largest answer read from a collector (its body says nothing we use).
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// The instrumentation scope every span is reported under.
const SCOPE: &str = "portcullis";

/// Turns batches of records into OTLP requests for one resource.
pub(super) struct Encoder {
    /// The enclosing messages whole, for the reference encoding in tests.
    #[cfg(test)]
    whole: (Resource, String, InstrumentationScope),
    /// `ResourceSpans.resource`, encoded once (see [`Encoder::encode`]).
    resource_field: Vec<u8>,
    /// `ScopeSpans.scope`, encoded once.
    scope_field: Vec<u8>,
    /// `ResourceSpans.schema_url`, encoded once (nothing when empty).
    schema_url_field: Vec<u8>,
    /// Each span's bytes before their length is known, reused.
    scratch: Vec<u8>,
}

/// The protobuf key of a length-delimited field (wire type 2) numbered
/// below 16: one byte, `field << 3 | 2`.
const fn key(field: u8) -> u8 {
    field << 3 | 2
}

impl Encoder {
    pub(super) fn new(service_name: &str) -> Self {
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name.to_owned())
            .build();
        let described = ResourceAttributesWithSchema::from(&resource);
        let resource = Resource {
            attributes: described.attributes.0,
            ..Resource::default()
        };
        Self::of(resource, described.schema_url.unwrap_or_default())
    }

    fn of(resource: Resource, schema_url: String) -> Self {
        let scope = InstrumentationScope {
            name: SCOPE.to_owned(),
            ..InstrumentationScope::default()
        };
        let mut schema_url_field = Vec::new();
        if !schema_url.is_empty() {
            schema_url_field.push(key(3));
            delimit(schema_url.len(), &mut schema_url_field);
            schema_url_field.extend_from_slice(schema_url.as_bytes());
        }
        Self {
            resource_field: field(1, &resource),
            scope_field: field(1, &scope),
            schema_url_field,
            scratch: Vec::new(),
            #[cfg(test)]
            whole: (resource, schema_url, scope),
        }
    }

    /// The OTLP request for `records`, which it empties: the
    /// `ExportTraceServiceRequest` of one `ResourceSpans` holding one
    /// `ScopeSpans` with every span. Each span is encoded once, straight
    /// from its record (`otlp::encode`); the three enclosing messages, the same for every
    /// batch but their lengths, are written around them here. (prost
    /// encoding the whole tree measures each nested message again at every
    /// level above it, which made encoding the largest part of a traced
    /// request's cost.) The bytes are those of the generated types'
    /// encoding of the whole request (tested).
    pub(super) fn encode(&mut self, records: &mut Vec<Record>) -> Encoded {
        // The spans are written once, after room left for the fields that
        // enclose them (whose lengths are known only once the spans are
        // written): copying every span's bytes into a second buffer cost
        // an instruction a byte under the counter.
        let room = self.resource_field.len() + self.scope_field.len() + 2 * (1 + MAX_VARINT);
        // A traced request's spans take 150 to 300 bytes each: room enough
        // that the buffer is seldom copied to grow.
        let mut buffer =
            Vec::with_capacity(room + records.len() * 320 + self.schema_url_field.len());
        buffer.resize(room, 0);
        for record in records.drain(..) {
            otlp::encode(&record, 2, &mut self.scratch, &mut buffer);
        }
        let scope_spans = self.scope_field.len() + buffer.len() - room;
        let resource_spans = self.resource_field.len()
            + 1
            + prost::length_delimiter_len(scope_spans)
            + scope_spans
            + self.schema_url_field.len();
        let mut head = Vec::with_capacity(room);
        head.push(key(1));
        delimit(resource_spans, &mut head);
        head.extend_from_slice(&self.resource_field);
        head.push(key(2));
        delimit(scope_spans, &mut head);
        head.extend_from_slice(&self.scope_field);
        let start = room - head.len();
        buffer[start..room].copy_from_slice(&head);
        buffer.extend_from_slice(&self.schema_url_field);
        Encoded { buffer, start }
    }

    /// The same request built whole with the generated types (the reference
    /// [`Encoder::encode`] is tested against).
    #[cfg(test)]
    fn request(&self, records: Vec<Record>) -> ExportTraceServiceRequest {
        let (resource, schema_url, scope) = self.whole.clone();
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope),
                    spans: records.iter().map(otlp::span).collect(),
                    schema_url: String::new(),
                }],
                schema_url,
            }],
        }
    }
}

/// The longest varint a length takes (a `u64`'s).
const MAX_VARINT: usize = 10;

/// One encoded export request: the bytes of `buffer` from `start` on.
pub(super) struct Encoded {
    buffer: Vec<u8>,
    start: usize,
}

impl Encoded {
    pub(super) fn as_slice(&self) -> &[u8] {
        &self.buffer[self.start..]
    }
}

/// Writes a length-delimited field's length.
fn delimit(length: usize, out: &mut Vec<u8>) {
    // Into a `Vec`, which grows: encoding cannot fail.
    let _ = prost::encode_length_delimiter(length, out);
}

/// `message` as the length-delimited field numbered `number` (below 16).
fn field(number: u8, message: &impl prost::Message) -> Vec<u8> {
    let mut out = vec![key(number)];
    out.extend(message.encode_length_delimited_to_vec());
    out
}

/// The collector, over OTLP/HTTP with `ureq`, which blocks: right where it
/// runs, on the export thread.
pub(super) struct Collector {
    agent: ureq::Agent,
    endpoint: String,
    /// Sent with every export: the collector's credentials, from
    /// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_TRACES_HEADERS`.
    headers: Vec<(String, String)>,
    /// Exports are failing: said once when they begin to and once when they
    /// work again (a collector that is down would otherwise be a line a batch).
    failing: bool,
}

impl Collector {
    pub(super) fn new(endpoint: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(EXPORT_TIMEOUT))
            .build()
            .into();
        Self {
            agent,
            endpoint: endpoint.to_owned(),
            headers: headers_from_environment(),
            failing: false,
        }
    }

    /// POSTs one encoded request; a failure is logged when it is news.
    pub(super) fn send(&mut self, body: &[u8]) {
        let result = self.post(body);
        note_outcome(&mut self.failing, &result);
    }

    fn post(&self, body: &[u8]) -> Result<(), String> {
        let mut request = self.agent.post(&self.endpoint);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let mut answer = request
            .header("Content-Type", "application/x-protobuf")
            .send(body)
            .map_err(|e| e.to_string())?;
        // Read to the end, so the connection is kept for the next batch.
        let _ = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_vec();
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {status}"))
        }
    }
}

/// The headers every export carries, as the OpenTelemetry exporters read
/// them (a hosted collector's API key usually comes this way): the
/// general variable's, then the traces-only one's, which wins for a name
/// both give.
fn headers_from_environment() -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for variable in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    ] {
        if let Ok(list) = std::env::var(variable) {
            for (name, value) in parse_headers(&list) {
                headers.retain(|(known, _): &(String, String)| !known.eq_ignore_ascii_case(&name));
                headers.push((name, value));
            }
        }
    }
    headers
}

/// `name=value` pairs separated by commas, values percent-encoded (the
/// OpenTelemetry specification's format for these variables, W3C Baggage
/// style). A pair without `=` or with an empty name is skipped.
fn parse_headers(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let name = name.trim();
            let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
            (!name.is_empty()).then(|| (name.to_owned(), value.into_owned()))
        })
        .collect()
}

/// Logs a change between exports that succeed and exports that fail.
fn note_outcome(failing: &mut bool, result: &Result<(), String>) {
    let failed = result.is_err();
    if std::mem::replace(failing, failed) == failed {
        return;
    }
    match result {
        Err(e) => {
            tracing::warn!(error = %e, "trace export failed; spans are lost until the collector answers")
        }
        Ok(()) => tracing::info!("trace export works again"),
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
    use std::borrow::Cow;
    use std::str::FromStr;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use opentelemetry::trace::{
        SpanContext, SpanKind, Status as SdkStatus, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::InstrumentationScope as Scope;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

    use opentelemetry::trace::SpanId;

    use super::*;
    use crate::telemetry::otlp::span;
    use crate::telemetry::record::{Label, TraceIds, What};

    const START: u64 = 1_750_000_000_123_456_789;

    #[test]
    fn collector_headers_are_read_as_the_opentelemetry_exporters_read_them() {
        assert_eq!(
            parse_headers(" api-key = s%3Dcret ,x-tenant=acme,=nameless,novalue"),
            vec![
                ("api-key".to_owned(), "s=cret".to_owned()),
                ("x-tenant".to_owned(), "acme".to_owned()),
            ]
        );
    }

    #[test]
    fn every_export_carries_the_collector_headers() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let received = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut head = Vec::new();
            let mut byte = [0; 1];
            while !head.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).expect("read");
                head.push(byte[0]);
            }
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            String::from_utf8_lossy(&head).to_ascii_lowercase()
        });
        let mut collector = Collector::new(&format!("http://127.0.0.1:{port}/v1/traces"));
        collector.headers = parse_headers("api-key=s%3Dcret");
        assert!(collector.post(b"").is_ok());
        let head = received.join().expect("the collector thread");
        assert!(head.contains("\r\napi-key: s=cret\r\n"), "{head}");
        assert!(
            head.contains("content-type: application/x-protobuf"),
            "{head}"
        );
    }

    fn at(nanos: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(nanos)
    }

    /// What the SDK would have exported for the same span: its `SpanData`
    /// through `opentelemetry-proto`'s own conversion.
    fn sdk_span(
        record: &Record,
        name: &str,
        attributes: Vec<opentelemetry::KeyValue>,
        status: SdkStatus,
    ) -> Span {
        let trace = &record.trace;
        let state = TraceState::from_str(trace.trace_state.as_deref().unwrap_or_default())
            .expect("a state");
        let data = SpanData {
            span_context: SpanContext::new(
                trace.trace_id,
                record.span_id,
                TraceFlags::SAMPLED,
                false,
                state,
            ),
            parent_span_id: record.parent_id,
            parent_span_is_remote: record.parent_is_remote,
            span_kind: record.kind.clone(),
            name: Cow::Owned(name.to_owned()),
            start_time: at(record.start),
            end_time: at(record.end),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: Scope::builder(SCOPE).build(),
        };
        Span::from(data)
    }

    fn record(parent_id: SpanId, what: What) -> Record {
        Record {
            trace: TraceIds {
                trace_id: TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
                sampled: true,
                trace_state: Some(Arc::from("vendor=opaque1")),
            },
            span_id: SpanId::from(0x0102_0304_0506_0708),
            parent_id,
            parent_is_remote: parent_id != SpanId::INVALID,
            kind: SpanKind::Server,
            start: START,
            end: START + 1_500_000,
            what,
        }
    }

    #[test]
    fn a_request_span_encodes_as_the_sdks_span_data_did() {
        let what = What::Request {
            method: http::Method::POST,
            route: Label::Static("api"),
            status: 503,
            outcome: "upstream_unavailable",
        };
        let ours = record(SpanId::from(0x00f0_67aa_0ba9_02b7), what);
        let attributes = vec![
            opentelemetry::KeyValue::new("http.request.method", "POST".to_owned()),
            opentelemetry::KeyValue::new("http.route", "api".to_owned()),
            opentelemetry::KeyValue::new("http.response.status_code", 503_i64),
            opentelemetry::KeyValue::new("portcullis.outcome", "upstream_unavailable"),
            opentelemetry::KeyValue::new("portcullis.error_code", "upstream_unavailable"),
        ];
        let theirs = sdk_span(
            &ours,
            "POST api",
            attributes,
            SdkStatus::error("upstream_unavailable"),
        );
        assert_eq!(span(&ours), theirs);
    }

    #[test]
    fn a_child_span_encodes_as_the_sdks_span_data_did() {
        let status = opentelemetry::KeyValue::new("http.response.status_code", 200_i64);
        let what = What::Child {
            name: "upstream",
            label: Some(("portcullis.upstream", Label::Static("backend"))),
            attributes: vec![status.clone()],
        };
        let mut ours = record(SpanId::from(0x0a0b_0c0d_0e0f_1011), what);
        ours.kind = SpanKind::Client;
        ours.parent_is_remote = false;
        let pool = opentelemetry::KeyValue::new("portcullis.upstream", "backend".to_owned());
        let theirs = sdk_span(&ours, "upstream", vec![pool, status], SdkStatus::Unset);
        assert_eq!(span(&ours), theirs);
    }

    #[test]
    fn a_batch_is_encoded_byte_for_byte_as_the_generated_types_encode_it() {
        let schema = "https://opentelemetry.io/schemas/1.26.0".to_owned();
        let with_schema = Encoder::of(Encoder::new("edge").whole.0, schema);
        for mut encoder in [Encoder::new("portcullis"), with_schema] {
            same_bytes(&mut encoder);
        }
    }

    fn same_bytes(encoder: &mut Encoder) {
        let batch = || {
            let request = What::Request {
                method: http::Method::GET,
                route: Label::Static("api"),
                status: 200,
                outcome: "ok",
            };
            let child = What::Child {
                name: "verify_token",
                label: None,
                attributes: vec![
                    opentelemetry::KeyValue::new("portcullis.outcome", "ok"),
                    opentelemetry::KeyValue::new("jwt.alg", "HS256"),
                ],
            };
            vec![
                record(SpanId::INVALID, request),
                record(SpanId::from(7), child),
            ]
        };
        let mut records = batch();
        let ours = encoder.encode(&mut records);
        assert_eq!(ours.as_slice(), encoder.request(batch()).encode_to_vec());
        let mut many: Vec<Record> = (0..300).flat_map(|_| batch()).collect();
        let reference: Vec<Record> = (0..300).flat_map(|_| batch()).collect();
        assert_eq!(
            encoder.encode(&mut many).as_slice(),
            encoder.request(reference).encode_to_vec()
        );
    }

    #[test]
    fn a_root_span_has_no_parent_and_the_request_names_the_resource_and_scope() {
        let mut encoder = Encoder::new("edge-7");
        let what = What::Request {
            method: http::Method::GET,
            route: Label::Static("_unrouted"),
            status: 404,
            outcome: "not_found",
        };
        let mut records = vec![record(SpanId::INVALID, what)];
        let body = encoder.encode(&mut records);
        assert!(records.is_empty());
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP");
        let resource_spans = &request.resource_spans[0];
        let names: Vec<_> = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .map(|a| a.key.as_str())
            .collect();
        assert!(
            names.contains(&"service.name") && names.contains(&"telemetry.sdk.language"),
            "{names:?}"
        );
        let scope = &resource_spans.scope_spans[0];
        assert_eq!(
            scope.scope.as_ref().map(|s| s.name.as_str()),
            Some("portcullis")
        );
        let span = &scope.spans[0];
        assert!(span.parent_span_id.is_empty());
        assert_eq!(span.flags, 0x101);
        assert_eq!(span.name, "GET _unrouted");
    }
}
