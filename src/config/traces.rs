//! `[tracing]`: OpenTelemetry traces, read and checked. What the settings
//! do is `telemetry`'s business; this module only turns the table into
//! [`TraceSettings`], each bad value reported at its line and column.

use crate::config::raw::{RawTracing, HTTP_PROTOBUF};
use crate::config::Diagnostics;
use crate::telemetry::TraceSettings;

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
