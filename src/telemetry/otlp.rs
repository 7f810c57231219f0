//! A finished span ([`Record`]) in OTLP's terms: the generated
//! `opentelemetry-proto` `Span`, filled with the fields the SDK's own
//! conversion (`opentelemetry_proto::transform::trace`) fills, so a
//! collector sees what it saw from the SDK (tested against it).
//!
//! [`fill`] writes into a `Span` a previous record left, reusing its
//! buffers: the export thread keeps one and encodes it span after span, so
//! a batch allocates nothing per span once the buffers have grown.

use opentelemetry::trace::SpanId;
use opentelemetry::Value;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, SpanFlags, Status};

use super::record::{Record, What};

/// `span`, made over to say what `record` says.
pub(super) fn fill(span: &mut Span, record: Record) {
    let trace = &record.trace;
    set_bytes(&mut span.trace_id, &trace.trace_id.to_bytes());
    set_bytes(&mut span.span_id, &record.span_id.to_bytes());
    set_text(
        &mut span.trace_state,
        trace.trace_state.as_deref().unwrap_or_default(),
    );
    if record.parent_id == SpanId::INVALID {
        span.parent_span_id.clear();
    } else {
        set_bytes(&mut span.parent_span_id, &record.parent_id.to_bytes());
    }
    span.flags = flags(trace.sampled, record.parent_is_remote);
    span.kind = span::SpanKind::from(record.kind) as i32;
    span.start_time_unix_nano = record.start;
    span.end_time_unix_nano = record.end;
    let mut attributes = Attributes {
        list: &mut span.attributes,
        used: 0,
    };
    let failure = describe(record.what, &mut span.name, &mut attributes);
    attributes.finish();
    let status = span.status.get_or_insert_with(Status::default);
    status.code = match failure {
        Some(_) => status::StatusCode::Error,
        None => status::StatusCode::Unset,
    } as i32;
    set_text(&mut status.message, failure.unwrap_or_default());
}

/// A new span saying what `record` says.
#[cfg(test)]
pub(super) fn span(record: Record) -> Span {
    let mut span = Span::default();
    fill(&mut span, record);
    span
}

/// The W3C trace flags, and whether the parent is remote (OTLP's `SpanFlags`).
fn flags(sampled: bool, parent_is_remote: bool) -> u32 {
    let mut flags = u32::from(sampled) | SpanFlags::ContextHasIsRemoteMask as u32;
    if parent_is_remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    flags
}

/// Writes the span's name and attributes; the description of its failure,
/// if it failed.
fn describe(
    what: What,
    name: &mut String,
    attributes: &mut Attributes<'_>,
) -> Option<&'static str> {
    match what {
        What::Request {
            method,
            route,
            status,
            outcome,
        } => {
            let route = route.as_str();
            name.clear();
            name.push_str(method.as_str());
            name.push(' ');
            name.push_str(route);
            attributes.text("http.request.method", method.as_str());
            attributes.text("http.route", route);
            attributes.int("http.response.status_code", i64::from(status));
            attributes.text("portcullis.outcome", outcome);
            if outcome != "ok" {
                attributes.text("portcullis.error_code", outcome);
            }
            (status >= 500 || status == 0).then_some(outcome)
        }
        What::Child {
            name: child,
            label,
            attributes: given,
        } => {
            set_text(name, child);
            if let Some((key, label)) = label {
                attributes.text(key, label.as_str());
            }
            for attribute in given {
                attributes.value(attribute.key.as_str(), attribute.value);
            }
            None
        }
    }
}

/// A span's attribute list, rewritten in place.
struct Attributes<'a> {
    list: &'a mut Vec<KeyValue>,
    used: usize,
}

impl Attributes<'_> {
    /// The next attribute's value, its key written.
    fn next(&mut self, key: &str) -> &mut Option<any_value::Value> {
        if self.used == self.list.len() {
            self.list.push(KeyValue::default());
        }
        let attribute = &mut self.list[self.used];
        self.used += 1;
        set_text(&mut attribute.key, key);
        attribute.key_strindex = 0;
        &mut attribute.value.get_or_insert_with(AnyValue::default).value
    }

    fn text(&mut self, key: &str, text: &str) {
        let slot = self.next(key);
        match slot {
            Some(any_value::Value::StringValue(old)) => set_text(old, text),
            _ => *slot = Some(any_value::Value::StringValue(text.to_owned())),
        }
    }

    fn int(&mut self, key: &str, value: i64) {
        *self.next(key) = Some(any_value::Value::IntValue(value));
    }

    /// An attribute an OpenTelemetry `KeyValue` gave, converted as
    /// `opentelemetry-proto` converts it.
    fn value(&mut self, key: &str, value: Value) {
        match value {
            Value::String(text) => self.text(key, text.as_str()),
            Value::I64(number) => self.int(key, number),
            other => *self.next(key) = AnyValue::from(other).value,
        }
    }

    /// Drops what a longer list before left over.
    fn finish(self) {
        self.list.truncate(self.used);
    }
}

fn set_bytes(to: &mut Vec<u8>, bytes: &[u8]) {
    to.clear();
    to.extend_from_slice(bytes);
}

fn set_text(to: &mut String, text: &str) {
    to.clear();
    to.push_str(text);
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::SpanKind;

    use super::*;
    use crate::telemetry::record::{test_record, Label};

    /// Filling a span another record left gives the span a new one would.
    #[test]
    fn a_reused_span_says_only_what_its_new_record_says() {
        let request = || {
            let mut record = test_record("unused");
            record.parent_id = SpanId::from(9);
            record.parent_is_remote = true;
            record.kind = SpanKind::Server;
            record.what = What::Request {
                method: http::Method::DELETE,
                route: Label::Static("admin"),
                status: 503,
                outcome: "auth_unavailable",
            };
            record
        };
        let child = || {
            let mut record = test_record("unused");
            record.what = What::Child {
                name: "revocation_check",
                label: None,
                attributes: vec![
                    opentelemetry::KeyValue::new("portcullis.outcome", "ok"),
                    opentelemetry::KeyValue::new("retries", 2_i64),
                    opentelemetry::KeyValue::new("cached", true),
                ],
            };
            record
        };
        let mut reused = Span::default();
        for record in [request(), child(), request(), child(), child()] {
            let fresh = {
                let mut copy = Span::default();
                fill(&mut copy, clone_of(&record));
                copy
            };
            fill(&mut reused, record);
            assert_eq!(reused, fresh);
        }
    }

    /// A record again (records are moved into the queue, never cloned there).
    fn clone_of(record: &Record) -> Record {
        let what = match &record.what {
            What::Request {
                method,
                route,
                status,
                outcome,
            } => What::Request {
                method: method.clone(),
                route: route.clone(),
                status: *status,
                outcome,
            },
            What::Child {
                name,
                label,
                attributes,
            } => What::Child {
                name,
                label: label.clone(),
                attributes: attributes.clone(),
            },
        };
        Record {
            trace: record.trace.clone(),
            span_id: record.span_id,
            parent_id: record.parent_id,
            parent_is_remote: record.parent_is_remote,
            kind: record.kind.clone(),
            start: record.start,
            end: record.end,
            what,
        }
    }
}
