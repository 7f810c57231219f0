//! The audit line's JSON, written directly: fixed keys in a fixed order,
//! strings copied as they are when nothing in them needs escaping (the
//! usual case: ids, names, codes) and escaped by `serde_json` otherwise.
//! A derived `Serialize` cost a `core::fmt` round for the address and a
//! map entry per field; a line is written for every request.

use std::io::Write;
use std::net::IpAddr;

use super::event::{AdminAction, Decision, AUDIT_TARGET};

/// One line being written: `{"time":…,"target":…,"event":…` then fields.
pub(super) struct JsonLine(Vec<u8>);

impl JsonLine {
    pub(super) fn start(event: &str) -> Self {
        let mut line = Self(Vec::with_capacity(384));
        line.0.extend_from_slice(b"{\"time\":\"");
        let now = std::time::SystemTime::now();
        // humantime writes years 1970 to 9999; a clock outside them
        // (badly set) still gives a line, with its seconds since 1970.
        match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) if since.as_secs() < 253_402_300_800 => {
                let _ = write!(line.0, "{}", humantime::format_rfc3339_micros(now));
            }
            since => {
                let secs = since.map_or(0, |d| d.as_secs());
                line.0
                    .extend_from_slice(itoa::Buffer::new().format(secs).as_bytes());
            }
        }
        line.0.push(b'"');
        line.str("target", AUDIT_TARGET);
        line.str("event", event);
        line
    }

    fn key(&mut self, key: &str) {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn value(&mut self, value: &str) {
        if value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            self.0.push(b'"');
            self.0.extend_from_slice(value.as_bytes());
            self.0.push(b'"');
        } else {
            // Writing a `str` into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut self.0, value);
        }
    }

    pub(super) fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        self.value(value);
    }

    pub(super) fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(value) => self.str(key, value),
            None => self.null(key),
        }
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.0.extend_from_slice(b"null");
    }

    pub(super) fn ip(&mut self, key: &str, ip: Option<IpAddr>) {
        let Some(ip) = ip else {
            return self.null(key);
        };
        self.key(key);
        self.0.push(b'"');
        match ip {
            IpAddr::V4(v4) => {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.0.push(b'.');
                    }
                    self.0.extend_from_slice(digits.format(octet).as_bytes());
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(self.0, "{v6}");
            }
        }
        self.0.push(b'"');
    }

    pub(super) fn list(&mut self, key: &str, values: &[&str]) {
        self.key(key);
        self.0.push(b'[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            self.value(value);
        }
        self.0.push(b']');
    }

    pub(super) fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(b"}\n");
        self.0
    }
}

/// A decision's line; `missing` only when something was.
pub(super) fn decision(d: &Decision<'_>) -> Vec<u8> {
    let mut line = JsonLine::start("decision");
    line.str("request_id", d.request_id);
    line.ip("client", d.client);
    line.opt_str("subject", d.subject);
    line.str("credential", d.credential.as_str());
    line.str("route", d.route);
    line.str("method", d.method);
    line.str("decision", d.decision.as_str());
    line.str("code", d.code);
    line.str("rule", d.rule);
    if !d.missing.is_empty() {
        line.list("missing", d.missing);
    }
    if let Some(trace_id) = d.trace_id {
        line.str("trace_id", trace_id);
    }
    line.finish()
}

/// An admin action's line.
pub(super) fn admin(a: &AdminAction<'_>) -> Vec<u8> {
    let mut line = JsonLine::start("admin");
    line.opt_str("request_id", a.request_id);
    line.str("source", a.source);
    line.ip("caller", a.caller);
    line.str("action", a.action);
    line.opt_str("resource", a.resource);
    line.str("outcome", a.outcome);
    line.finish()
}
