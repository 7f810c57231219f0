//! The text format of log lines. Every line looks as `tracing-subscriber`'s
//! full format writes it; the access line, written once per request, is
//! written here directly instead of through its general formatter, which
//! spent about 14,800 instructions on each (ANSI styling that writes
//! nothing when colours are off, a `core::fmt` round per field), more than
//! a tenth of a proxied request's (docs/benchmarks.md).
//!
//! Only what the access line holds takes the direct way: an event of the
//! access target, outside any span, with no `message`, `r#` or `log.` field
//! and no error value, to a writer without colours. Everything else, and
//! every line at a terminal, goes to the full format unchanged.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

use crate::log_queue::ACCESS_TARGET;

/// `tracing-subscriber`'s full text format, with the access line written
/// directly (same bytes).
pub struct TextLines<T = Rfc3339Micros> {
    full: Format<Full, T>,
    timer: T,
}

impl TextLines<Rfc3339Micros> {
    pub fn new() -> Self {
        Self::with_timer(Rfc3339Micros)
    }
}

/// The full format's clock (`2026-11-28T04:35:39.678081Z`, UTC), written
/// by humantime in one piece rather than a `core::fmt` round per part
/// (2,400 instructions a line before).
#[derive(Clone, Copy, Debug, Default)]
pub struct Rfc3339Micros;

/// The first instant humantime cannot write (year 10000); it cannot
/// write instants before 1970 either.
const HUMANTIME_END: std::time::Duration = std::time::Duration::from_secs(253_402_300_800);

impl FormatTime for Rfc3339Micros {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now();
        match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) if since < HUMANTIME_END => {
                write!(w, "{}", humantime::format_rfc3339_micros(now))
            }
            // A clock set far off: the full format's own clock writes it.
            _ => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

impl Default for TextLines<Rfc3339Micros> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: FormatTime + Clone> TextLines<T> {
    pub fn with_timer(timer: T) -> Self {
        Self {
            full: tracing_subscriber::fmt::format().with_timer(timer.clone()),
            timer,
        }
    }
}

// For the default field formatter only: the direct way writes fields as
// it does, so another one (`fmt_fields`) must not compile silently.
impl<S, T> FormatEvent<S, DefaultFields> for TextLines<T>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: FormatTime,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, DefaultFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let direct = meta.target() == ACCESS_TARGET
            && !writer.has_ansi_escapes()
            && ctx.event_scope().is_none()
            && meta.fields().iter().all(|f| plain_name(f.name()))
            && !has_error_value(event);
        if !direct {
            return self.full.format_event(ctx, writer, event);
        }
        // The full format's layout: `{time} {level} {target}: {fields}`.
        if self.timer.format_time(&mut writer).is_err() {
            writer.write_str("<unknown time>")?;
        }
        writer.write_char(' ')?;
        writer.write_str(level_label(meta.level()))?;
        writer.write_char(' ')?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Whether a field holds an `&dyn Error`: the full format escapes it and
/// lists its sources, which the direct way does not. A second pass over
/// the fields that formats nothing.
fn has_error_value(event: &Event<'_>) -> bool {
    struct FindError(bool);
    impl Visit for FindError {
        fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
        fn record_error(&mut self, _: &Field, _: &(dyn std::error::Error + 'static)) {
            self.0 = true;
        }
    }
    let mut find = FindError(false);
    event.record(&mut find);
    find.0
}

/// A field the full format writes as `name=value` (it writes `message`
/// bare, strips `r#` and skips `log.` fields).
fn plain_name(name: &str) -> bool {
    name != "message" && !name.starts_with("r#") && !name.starts_with("log.")
}

/// The full format's level labels, five characters wide.
fn level_label(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::TRACE => "TRACE",
        tracing::Level::DEBUG => "DEBUG",
        tracing::Level::INFO => " INFO",
        tracing::Level::WARN => " WARN",
        tracing::Level::ERROR => "ERROR",
    }
}

/// Writes ` name=value` for each field as the full format does: strings
/// quoted and escaped as `Debug` does, numbers and booleans bare, other
/// values through their `Debug` (`%value` fields through `Display`).
struct Fields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn name(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(field.name())?;
        self.writer.write_char('=')
    }

    fn record(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| value(self.writer));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, |w| {
            // What `Debug` would write unchanged: printable ASCII without
            // a quote or a backslash.
            if value
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
            {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            } else {
                write!(w, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, |w| write!(w, "{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::time::SystemTime;

    /// A clock stopped at one instant, so lines can be compared.
    #[derive(Clone)]
    struct Stopped(&'static str);

    impl FormatTime for Stopped {
        fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
            w.write_str(self.0)
        }
    }

    const NOW: Stopped = Stopped("2026-11-28T04:35:39.678081Z");
    /// Marks the lines a format did not write itself.
    const ELSEWHERE: Stopped = Stopped("1970-01-01T00:00:00.000000Z");

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `emit` writes through `format`, in colour if `ansi`.
    fn lines<E>(format: E, ansi: bool, emit: impl FnOnce()) -> String
    where
        E: FormatEvent<
                tracing_subscriber::Registry,
                tracing_subscriber::fmt::format::DefaultFields,
            > + Send
            + Sync
            + 'static,
    {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(ansi)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || sink.clone())
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = captured.0.lock().expect("capture").clone();
        String::from_utf8(bytes).expect("utf-8 lines")
    }

    /// The full format's lines and ours for the same events. Ours hand on
    /// to a full format with another clock, so ours match only the lines
    /// written directly (`direct`) or only the lines handed on (`!direct`).
    fn both(direct: bool, emit: impl Fn()) -> (String, String) {
        both_in(false, direct, emit)
    }

    /// [`both`], in colour if `ansi`.
    fn both_in(ansi: bool, direct: bool, emit: impl Fn()) -> (String, String) {
        let full = lines(
            tracing_subscriber::fmt::format().with_timer(NOW),
            ansi,
            &emit,
        );
        let (handed_on, direct) = match direct {
            true => (ELSEWHERE, NOW),
            false => (NOW, ELSEWHERE),
        };
        let ours = TextLines {
            full: tracing_subscriber::fmt::format().with_timer(handed_on),
            timer: direct,
        };
        (full, lines(ours, ansi, &emit))
    }

    fn access_line(route: &str, subject: &str, error: Option<&str>) {
        let client: Option<std::net::IpAddr> = Some([127, 0, 0, 1].into());
        tracing::info!(
            target: ACCESS_TARGET,
            request_id = %"390812941138b7b3eff185d5ed678434",
            client = ?client,
            method = %http::Method::GET,
            route,
            status = 200u16,
            outcome = "ok",
            subject,
            upstream = "nginx",
            latency_us = 5711u64,
            offset = -3i64,
            sampled = true,
            error,
        );
    }

    #[test]
    fn the_access_line_is_written_as_the_full_format_writes_it() {
        let (full, ours) = both(true, || {
            access_line("/none", "-", None);
            access_line("api \"v2\"\\", "é\u{1b}[31m\n", Some("ConnectRefused"));
        });
        assert_eq!(ours, full);
        assert_eq!(ours.lines().count(), 2);
        assert!(ours.starts_with("2026-11-28T04:35:39.678081Z  INFO portcullis::access: request_id=390812941138b7b3eff185d5ed678434 client=Some(127.0.0.1) method=GET route=\"/none\" status=200"), "{ours}");
    }

    #[test]
    fn other_lines_are_the_full_format_unchanged() {
        let (full, ours) = both(false, || {
            tracing::warn!(target: "portcullis::proxy", route = "/a", "upstream failed");
            tracing::info!(target: ACCESS_TARGET, "a message takes the full format");
            tracing::info!(target: ACCESS_TARGET, r#type = "raw", "raw names too");
            let span = tracing::info_span!("inside", id = 7);
            let _entered = span.enter();
            tracing::info!(target: ACCESS_TARGET, status = 200u16);
        });
        assert_eq!(ours, full);
        assert_eq!(ours.lines().count(), 4);
        assert!(
            ours.contains("inside{id=7}: portcullis::access: status=200"),
            "{ours}"
        );
    }

    #[test]
    fn colours_and_error_values_take_the_full_format() {
        let (full, ours) = both_in(true, false, || access_line("/none", "-", None));
        assert_eq!(ours, full);
        assert!(ours.contains('\u{1b}'), "{ours}");

        let refused = std::io::Error::other(std::io::Error::other("inner \u{1b}[31m"));
        let (full, ours) = both(false, || {
            tracing::info!(target: ACCESS_TARGET, status = 502u16, error = &refused as &(dyn std::error::Error + 'static));
        });
        assert_eq!(ours, full);
        assert_eq!(ours.lines().count(), 1);
    }

    /// The clock's text at this moment, as `timer` writes it.
    fn clock_text(timer: &impl FormatTime) -> String {
        let mut text = String::new();
        timer
            .format_time(&mut Writer::new(&mut text))
            .expect("clock");
        text
    }

    #[test]
    fn the_clock_reads_as_the_full_formats_clock() {
        // Same layout, so the one read between two of the full format's
        // readings sorts between them.
        let mut compared = 0;
        for _ in 0..1000 {
            let before = clock_text(&SystemTime);
            let ours = clock_text(&Rfc3339Micros);
            let after = clock_text(&SystemTime);
            assert_eq!(ours.len(), before.len(), "{ours} {before}");
            // A clock stepped back meanwhile proves nothing either way.
            if before <= after {
                assert!(before <= ours && ours <= after, "{before} {ours} {after}");
                compared += 1;
            }
        }
        assert!(compared > 900, "the clock kept stepping back");
    }

    proptest! {
        #[test]
        fn any_string_field_is_escaped_as_the_full_format_escapes_it(
            value in prop_oneof![any::<String>(), "[ -~]{0,24}"]
        ) {
            let (full, ours) = both(true, || {
                tracing::info!(target: ACCESS_TARGET, subject = value.as_str());
            });
            prop_assert_eq!(ours, full);
        }
    }
}
