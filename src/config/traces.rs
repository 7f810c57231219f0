//! `[tracing]`: OpenTelemetry traces, read and checked. What the settings
//! do is `telemetry`'s business; this module only turns the table into
//! [`TraceSettings`], each bad value reported at its line and column.

use serde::Deserialize;
use toml::Spanned;

use crate::config::Diagnostics;
use crate::telemetry::TraceSettings;

/// The one wire format exported: OTLP over HTTP, protobuf bodies. gRPC
/// would bring tonic and a second HTTP/2 stack for the same spans.
const HTTP_PROTOBUF: &str = "http/protobuf";

/// `[tracing]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTracing {
    /// Spans are made and exported at all.
    pub enabled: bool,
    /// The OTLP/HTTP traces URL, used as written (`…/v1/traces`).
    pub endpoint: Spanned<String>,
    /// Only `"http/protobuf"`.
    pub protocol: Spanned<String>,
    /// The share (0.0 to 1.0) of new traces recorded.
    pub sample_ratio: Spanned<f64>,
    /// A continued trace follows its parent's sampling decision.
    pub parent_based: bool,
    /// Continue any client's `traceparent`, not only a trusted proxy's.
    pub trust_client_context: bool,
    /// `service.name` of the exported spans.
    pub service_name: Spanned<String>,
    /// Finished spans held for export; past this they are dropped and counted.
    pub queue_size: Spanned<usize>,
}

impl Default for RawTracing {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: Spanned::new(0..0, "http://127.0.0.1:4318/v1/traces".to_owned()),
            protocol: Spanned::new(0..0, HTTP_PROTOBUF.to_owned()),
            sample_ratio: Spanned::new(0..0, 1.0),
            parent_based: true,
            trust_client_context: false,
            service_name: Spanned::new(0..0, "portcullis".to_owned()),
            queue_size: Spanned::new(0..0, 2048),
        }
    }
}

/// Checks `[tracing]` and compiles it; every key is checked even when
/// tracing is off, so a file that turns it on later is already right.
pub(crate) fn trace_settings(raw: &RawTracing, sink: &mut Diagnostics) -> TraceSettings {
    let endpoint = raw.endpoint.get_ref();
    if http::Uri::try_from(endpoint.as_str())
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
        .is_none()
    {
        sink.at(
            raw.endpoint.span(),
            format!("tracing.endpoint: {endpoint:?} is not an http:// or https:// URL such as \"http://127.0.0.1:4318/v1/traces\""),
        );
    }
    if raw.protocol.get_ref() != HTTP_PROTOBUF {
        sink.at(
            raw.protocol.span(),
            format!("tracing.protocol: only {HTTP_PROTOBUF:?} (OTLP over HTTP) is supported"),
        );
    }
    let ratio = *raw.sample_ratio.get_ref();
    if !(0.0..=1.0).contains(&ratio) {
        sink.at(
            raw.sample_ratio.span(),
            "tracing.sample_ratio: a share from 0.0 (no new trace recorded) to 1.0 (all)",
        );
    }
    if raw.service_name.get_ref().trim().is_empty() {
        sink.at(
            raw.service_name.span(),
            "tracing.service_name: must not be empty",
        );
    }
    let queue_size = *raw.queue_size.get_ref();
    if queue_size == 0 || queue_size > 1_000_000 {
        sink.at(
            raw.queue_size.span(),
            "tracing.queue_size: from 1 to 1000000 spans",
        );
    }
    TraceSettings {
        enabled: raw.enabled,
        endpoint: endpoint.clone(),
        sample_ratio: ratio.clamp(0.0, 1.0),
        parent_based: raw.parent_based,
        trust_client_context: raw.trust_client_context,
        service_name: raw.service_name.get_ref().clone(),
        queue_size: queue_size.clamp(1, 1_000_000),
    }
}
