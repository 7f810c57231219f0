//! A finished span ([`Record`]) in OTLP's terms: the fields the SDK's own
//! conversion (`opentelemetry_proto::transform::trace`) fills, so a
//! collector sees what it saw from the SDK (tested against it).
//!
//! [`encode`] writes a record straight to the protobuf bytes of an OTLP
//! `Span`, field by field with `prost`'s encoding helpers, in the order and
//! with the defaults left out as the generated type's encoding does: filling
//! the generated `Span` and then encoding it cost the export thread more
//! than the request spent on tracing. The generated `Span`, filled by
//! [`span`] (tests only), is the reference the bytes are tested against.

use opentelemetry::trace::SpanId;
use opentelemetry::Value;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::trace::v1::{span, status, SpanFlags};
use prost::encoding::{encoded_len_varint, WireType};
use prost::Message as _;

use super::record::{Record, What};

/// A varint: one byte for the small values (lengths, keys) nearly every
/// field has, `prost`'s loop for the rest.
#[inline]
fn encode_varint(value: u64, out: &mut Vec<u8>) {
    match u8::try_from(value) {
        Ok(byte) if byte < 0x80 => out.push(byte),
        _ => prost::encoding::encode_varint(value, out),
    }
}

/// A field's key (its number and wire type), as `prost` writes it.
#[inline]
fn encode_key(number: u32, wire_type: WireType, out: &mut Vec<u8>) {
    encode_varint(u64::from(number << 3 | wire_type as u32), out);
}

/// `Span`'s field numbers (opentelemetry/proto/trace/v1/trace.proto).
mod field {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const TRACE_STATE: u32 = 3;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
}

/// Appends `record`'s span, as the length-delimited field `number` of the
/// enclosing message (`ScopeSpans.spans`); `body` is scratch space, reused.
pub(super) fn encode(record: &Record, number: u32, body: &mut Vec<u8>, out: &mut Vec<u8>) {
    body.clear();
    encode_body(record, body);
    encode_key(number, WireType::LengthDelimited, out);
    encode_varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// The span's fields, in field-number order, each left out when it holds
/// its default (proto3), as prost's generated encoding does.
fn encode_body(record: &Record, out: &mut Vec<u8>) {
    let trace = &record.trace;
    bytes(field::TRACE_ID, &trace.trace_id.to_bytes(), out);
    bytes(field::SPAN_ID, &record.span_id.to_bytes(), out);
    bytes(
        field::TRACE_STATE,
        trace.trace_state.as_deref().unwrap_or_default().as_bytes(),
        out,
    );
    if record.parent_id != SpanId::INVALID {
        bytes(field::PARENT_SPAN_ID, &record.parent_id.to_bytes(), out);
    }
    let (first, second) = name(&record.what);
    let name_len = first.len() + second.map_or(0, |s| s.len() + 1);
    if name_len > 0 {
        encode_key(field::NAME, WireType::LengthDelimited, out);
        encode_varint(name_len as u64, out);
        out.extend_from_slice(first.as_bytes());
        if let Some(second) = second {
            out.push(b' ');
            out.extend_from_slice(second.as_bytes());
        }
    }
    let kind = span::SpanKind::from(record.kind.clone()) as u64;
    if kind != 0 {
        encode_key(field::KIND, WireType::Varint, out);
        encode_varint(kind, out);
    }
    fixed64(field::START, record.start, out);
    fixed64(field::END, record.end, out);
    let failure = attributes(&record.what, &mut Encoded(out));
    encode_status(failure, out);
    let flags = flags(trace.sampled, record.parent_is_remote);
    encode_key(field::FLAGS, WireType::ThirtyTwoBit, out);
    out.extend_from_slice(&flags.to_le_bytes());
}

/// `Span.status`, always present (as the SDK's conversion sets it).
fn encode_status(failure: Option<&str>, out: &mut Vec<u8>) {
    let message = failure.unwrap_or_default();
    let code = match failure {
        Some(_) => status::StatusCode::Error,
        None => status::StatusCode::Unset,
    } as u64;
    let mut len = 0;
    if !message.is_empty() {
        len += 1 + encoded_len_varint(message.len() as u64) + message.len();
    }
    if code != 0 {
        len += 1 + encoded_len_varint(code);
    }
    encode_key(field::STATUS, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    bytes(2, message.as_bytes(), out);
    if code != 0 {
        encode_key(3, WireType::Varint, out);
        encode_varint(code, out);
    }
}

/// A `bytes` or `string` field, left out when empty.
fn bytes(number: u32, value: &[u8], out: &mut Vec<u8>) {
    if !value.is_empty() {
        encode_key(number, WireType::LengthDelimited, out);
        encode_varint(value.len() as u64, out);
        out.extend_from_slice(value);
    }
}

/// A `fixed64` field, left out when zero.
fn fixed64(number: u32, value: u64, out: &mut Vec<u8>) {
    if value != 0 {
        encode_key(number, WireType::SixtyFourBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// The span's name: `{method} {route}` for the request span (OpenTelemetry's
/// HTTP semantic conventions), in two parts so it is never put together.
fn name(what: &What) -> (&str, Option<&str>) {
    match what {
        What::Request { method, route, .. } => (method.as_str(), Some(route.as_str())),
        What::Child { name, .. } => (name, None),
    }
}

/// Where a span's attributes go: protobuf bytes, or (tests) the generated
/// types.
trait Sink {
    fn text(&mut self, key: &str, text: &str);
    fn int(&mut self, key: &str, value: i64);
    /// Any other value, converted as `opentelemetry-proto` converts it.
    fn other(&mut self, key: &str, value: AnyValue);
}

/// Writes the span's attributes; the description of its failure, if it
/// failed.
fn attributes(what: &What, sink: &mut impl Sink) -> Option<&'static str> {
    match what {
        What::Request {
            method,
            route,
            status,
            outcome,
        } => {
            sink.text("http.request.method", method.as_str());
            sink.text("http.route", route.as_str());
            sink.int("http.response.status_code", i64::from(*status));
            sink.text("portcullis.outcome", outcome);
            if *outcome != "ok" {
                sink.text("portcullis.error_code", outcome);
            }
            (*status >= 500 || *status == 0).then_some(*outcome)
        }
        What::Child {
            label, attributes, ..
        } => {
            if let Some((key, label)) = label {
                sink.text(key, label.as_str());
            }
            for attribute in attributes {
                let key = attribute.key.as_str();
                match &attribute.value {
                    Value::String(text) => sink.text(key, text.as_str()),
                    Value::I64(number) => sink.int(key, *number),
                    other => sink.other(key, AnyValue::from(other.clone())),
                }
            }
            None
        }
    }
}

/// Attributes written as `Span.attributes` fields (`KeyValue { key, value:
/// AnyValue }`, `key_strindex` left at 0).
struct Encoded<'a>(&'a mut Vec<u8>);

impl Encoded<'_> {
    /// One `KeyValue` whose `AnyValue` holds `value_len` bytes, up to them.
    fn begin(&mut self, key: &str, value_len: usize) {
        let out = &mut *self.0;
        let mut len = 1 + encoded_len_varint(value_len as u64) + value_len;
        if !key.is_empty() {
            len += 1 + encoded_len_varint(key.len() as u64) + key.len();
        }
        encode_key(field::ATTRIBUTES, WireType::LengthDelimited, out);
        encode_varint(len as u64, out);
        bytes(1, key.as_bytes(), out);
        encode_key(2, WireType::LengthDelimited, out);
        encode_varint(value_len as u64, out);
    }
}

impl Sink for Encoded<'_> {
    fn text(&mut self, key: &str, text: &str) {
        // `AnyValue.string_value` (1): a oneof member, written even when empty.
        self.begin(key, 1 + encoded_len_varint(text.len() as u64) + text.len());
        encode_key(1, WireType::LengthDelimited, self.0);
        encode_varint(text.len() as u64, self.0);
        self.0.extend_from_slice(text.as_bytes());
    }

    fn int(&mut self, key: &str, value: i64) {
        // `AnyValue.int_value` (3): an `int64`, its two's complement as a varint.
        let value = value as u64;
        self.begin(key, 1 + encoded_len_varint(value));
        encode_key(3, WireType::Varint, self.0);
        encode_varint(value, self.0);
    }

    fn other(&mut self, key: &str, value: AnyValue) {
        self.begin(key, value.encoded_len());
        // Into a `Vec`, which grows: encoding cannot fail.
        let _ = value.encode(self.0);
    }
}

/// The W3C trace flags, and whether the parent is remote (OTLP's `SpanFlags`).
fn flags(sampled: bool, parent_is_remote: bool) -> u32 {
    let mut flags = u32::from(sampled) | SpanFlags::ContextHasIsRemoteMask as u32;
    if parent_is_remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    flags
}

/// The generated `Span` saying what `record` says: the reference the
/// encoding is tested against.
#[cfg(test)]
pub(super) fn span(record: &Record) -> opentelemetry_proto::tonic::trace::v1::Span {
    use opentelemetry_proto::tonic::trace::v1::{Span, Status};
    let (first, second) = name(&record.what);
    let mut given = Generated(Vec::new());
    let failure = attributes(&record.what, &mut given);
    let trace = &record.trace;
    let parent = record.parent_id;
    Span {
        trace_id: trace.trace_id.to_bytes().to_vec(),
        span_id: record.span_id.to_bytes().to_vec(),
        trace_state: trace.trace_state.as_deref().unwrap_or_default().to_owned(),
        parent_span_id: if parent == SpanId::INVALID {
            Vec::new()
        } else {
            parent.to_bytes().to_vec()
        },
        flags: flags(trace.sampled, record.parent_is_remote),
        name: second.map_or_else(|| first.to_owned(), |s| format!("{first} {s}")),
        kind: span::SpanKind::from(record.kind.clone()) as i32,
        start_time_unix_nano: record.start,
        end_time_unix_nano: record.end,
        attributes: given.0,
        status: Some(Status {
            message: failure.unwrap_or_default().to_owned(),
            code: match failure {
                Some(_) => status::StatusCode::Error,
                None => status::StatusCode::Unset,
            } as i32,
        }),
        ..Span::default()
    }
}

/// Attributes as the generated types.
#[cfg(test)]
struct Generated(Vec<opentelemetry_proto::tonic::common::v1::KeyValue>);

#[cfg(test)]
impl Sink for Generated {
    fn text(&mut self, key: &str, text: &str) {
        self.other(key, AnyValue::from(Value::from(text.to_owned())));
    }

    fn int(&mut self, key: &str, value: i64) {
        self.other(key, AnyValue::from(Value::I64(value)));
    }

    fn other(&mut self, key: &str, value: AnyValue) {
        self.0
            .push(opentelemetry_proto::tonic::common::v1::KeyValue {
                key: key.to_owned(),
                value: Some(value),
                key_strindex: 0,
            });
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::SpanKind;

    use super::*;
    use crate::telemetry::record::{test_record, Label};

    /// Each span's bytes are those of the generated `Span` saying the same,
    /// whatever its shape: a failed request under a remote parent, a child
    /// with a label and values of every kind, a root without trace state.
    #[test]
    fn a_span_encodes_byte_for_byte_as_the_generated_span_does() {
        let mut request = test_record("unused");
        request.parent_id = SpanId::from(9);
        request.parent_is_remote = true;
        request.kind = SpanKind::Server;
        request.what = What::Request {
            method: http::Method::DELETE,
            route: Label::Static("admin"),
            status: 503,
            outcome: "auth_unavailable",
        };
        let mut child = test_record("unused");
        child.parent_id = SpanId::from(u64::MAX);
        child.what = What::Child {
            name: "upstream",
            label: Some(("portcullis.upstream", Label::Static("pool-a"))),
            attributes: vec![
                opentelemetry::KeyValue::new("portcullis.outcome", ""),
                opentelemetry::KeyValue::new("retries", -2_i64),
                opentelemetry::KeyValue::new("http.response.status_code", 0_i64),
                opentelemetry::KeyValue::new("cached", true),
                opentelemetry::KeyValue::new("ratio", 0.5),
                opentelemetry::KeyValue::new("long", "x".repeat(300)),
            ],
        };
        let mut root = test_record("revocation_check");
        root.trace.sampled = false;
        root.start = 0;
        let (mut body, mut ours) = (Vec::new(), Vec::new());
        for record in [request, child, root] {
            ours.clear();
            encode(&record, 2, &mut body, &mut ours);
            let mut theirs = vec![2 << 3 | 2];
            theirs.extend(span(&record).encode_length_delimited_to_vec());
            assert_eq!(ours, theirs, "{record:?}");
        }
    }
}
