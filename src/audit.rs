//! The audit trail: one JSON line per decision (who was allowed or refused
//! what, and by which rule) and per admin action, in a stream of its own,
//! apart from the access log's operational view. Operators parse it, so
//! its fields are a format (README, "Audit trail"): a field added is
//! compatible, a field renamed or removed is not. The set is pinned by
//! `tests/audit.rs`.
//!
//! Lines are formatted on the caller's thread and leave through a
//! [`log_queue`](crate::log_queue) of their own, with its own writer
//! thread: a request never waits on the disk, and a full queue drops the
//! line and counts it (`portcullis_audit_lines_dropped_total`).
//!
//! What a line may hold is fixed by the types here: names, codes, an
//! address, a subject. Never a token, key, cookie, password, query string
//! or header value: nothing of that kind is a field, so none can be
//! written by mistake. This module does not decide anything; the proxy and
//! the admin API tell it what they decided (`proxy::audit`, `admin`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::log_queue::{self, LogQueue, LogWriterGuard};
use crate::metrics::METRICS;

mod event;
mod json;

pub use event::{AdminAction, Credential, Decision, Verdict, AUDIT_TARGET};

/// Bytes of audit lines held for the writer; past this, lines are dropped.
pub const DEFAULT_CAPACITY: usize = 4 * 1024 * 1024;

/// `[audit]`, compiled: where the trail goes, if anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditSettings {
    /// `None`: no trail (the default).
    pub destination: Option<Destination>,
}

/// Where audit lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard error, beside the log, each line marked with its target.
    Stderr,
    /// A file opened for appending, opened again on SIGHUP and reload.
    File(PathBuf),
}

/// The trail: the request side of its queue, or nothing when it is off.
/// Lives as long as the process (`AppState`), across reloads.
pub struct AuditTrail {
    queue: Option<LogQueue>,
    guard: Mutex<Option<LogWriterGuard>>,
    /// Set to have the file opened again before the next write.
    reopen: Arc<AtomicBool>,
}

impl AuditTrail {
    /// No trail: recording costs a branch.
    pub fn disabled() -> Self {
        Self {
            queue: None,
            guard: Mutex::new(None),
            reopen: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the writer for `settings`; a file that cannot be opened is
    /// an error here, at start, not a silent loss later.
    pub fn start(settings: &AuditSettings) -> std::io::Result<Self> {
        start_with(settings, DEFAULT_CAPACITY)
    }

    /// Whether lines are being recorded.
    pub fn is_enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Records one request's decision.
    pub fn record(&self, decision: &Decision<'_>) {
        if let Some(queue) = &self.queue {
            queue.push(&json::decision(decision));
        }
    }

    /// Records one admin action.
    pub fn admin_action(&self, action: &AdminAction<'_>) {
        if let Some(queue) = &self.queue {
            queue.push(&json::admin(action));
        }
    }

    /// The file is opened again before the next write (logrotate's
    /// `postrotate` sends SIGHUP); on stderr, nothing to do.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Writes what is queued and stops the writer; later lines are
    /// dropped and counted.
    pub fn close(&self) {
        let guard = self
            .guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(guard);
    }

    /// Lines dropped because the queue was full (or the trail closed).
    pub fn dropped(&self) -> u64 {
        self.queue.as_ref().map_or(0, LogQueue::dropped)
    }
}

/// [`AuditTrail::start`] with a queue of `capacity` bytes (tests fill it).
pub fn start_with(settings: &AuditSettings, capacity: usize) -> std::io::Result<AuditTrail> {
    let reopen = Arc::new(AtomicBool::new(false));
    let started = match &settings.destination {
        None => return Ok(AuditTrail::disabled()),
        Some(Destination::Stderr) => start_queue(std::io::stderr(), capacity)?,
        Some(Destination::File(path)) => {
            let sink = ReopeningFile::open(path, Arc::clone(&reopen))?;
            start_queue(sink, capacity)?
        }
    };
    let (queue, guard) = started;
    Ok(AuditTrail {
        queue: Some(queue),
        guard: Mutex::new(Some(guard)),
        reopen,
    })
}

/// A trail written to `sink` (embedding, tests): the same queue, writer
/// thread and drop count as a configured one, holding `capacity` bytes.
pub fn to_writer<W: Write + Send + 'static>(
    sink: W,
    capacity: usize,
) -> std::io::Result<AuditTrail> {
    let (queue, guard) = start_queue(sink, capacity)?;
    Ok(AuditTrail {
        queue: Some(queue),
        guard: Mutex::new(Some(guard)),
        reopen: Arc::new(AtomicBool::new(false)),
    })
}

fn start_queue<W: Write + Send + 'static>(
    sink: W,
    capacity: usize,
) -> std::io::Result<(LogQueue, LogWriterGuard)> {
    log_queue::start_counted(
        sink,
        capacity,
        "portcullis-audit",
        METRICS.audit_lines_dropped.clone(),
    )
}

impl Drop for AuditTrail {
    fn drop(&mut self) {
        self.close();
    }
}

/// The audit file, opened for appending (so `copytruncate` works too) and
/// opened again, on the writer thread, once [`AuditTrail::reopen`] asks.
struct ReopeningFile {
    path: PathBuf,
    file: Option<File>,
    reopen: Arc<AtomicBool>,
}

impl ReopeningFile {
    fn open(path: &Path, reopen: Arc<AtomicBool>) -> std::io::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            file: Some(append_to(path)?),
            reopen,
        })
    }

    /// The file to write to: opened again when asked, or when the last
    /// attempt failed (a folder that comes back).
    fn current(&mut self) -> std::io::Result<&mut File> {
        if self.reopen.swap(false, Ordering::Relaxed) || self.file.is_none() {
            self.file = None;
            match append_to(&self.path) {
                Ok(file) => self.file = Some(file),
                Err(e) => {
                    tracing::warn!(target: AUDIT_TARGET, path = %self.path.display(), error = %e, "cannot open the audit file; lines are lost until it opens");
                    return Err(e);
                }
            }
        }
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the audit file is not open"))
    }
}

fn append_to(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for ReopeningFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.current()?.write(buf)
    }

    /// A batch goes whole to one file: the reopen is looked at once.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current()?.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn decision<'a>(missing: &'a [&'a str]) -> Decision<'a> {
        Decision {
            request_id: "r1",
            client: Some([127, 0, 0, 1].into()),
            subject: Some("alice \"quoted\"\n"),
            credential: Credential::Token,
            route: "admin",
            method: "GET",
            decision: Verdict::Refused,
            code: "insufficient_scope",
            rule: "roles",
            missing,
            trace_id: None,
        }
    }

    fn lines_of(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .expect("audit file")
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    #[test]
    fn a_line_is_one_json_object_with_the_event_fields() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.log");
        let settings = AuditSettings {
            destination: Some(Destination::File(path.clone())),
        };
        let trail = AuditTrail::start(&settings).expect("trail");
        trail.record(&decision(&["admin"]));
        trail.record(&decision(&[]));
        trail.close();
        let lines = lines_of(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["subject"], "alice \"quoted\"\n");
        assert_eq!(lines[0]["missing"], serde_json::json!(["admin"]));
        assert_eq!(lines[0]["target"], AUDIT_TARGET);
        assert_eq!(lines[0]["event"], "decision");
        assert_eq!(lines[1].get("missing"), None);
    }

    /// Written directly, a line is still JSON whatever its strings hold,
    /// and reads back as what was recorded.
    #[test]
    fn any_string_and_address_reads_back_from_the_line() {
        use proptest::prelude::*;
        let strings = prop_oneof![any::<String>(), "[ -~]{0,24}"];
        let addresses = prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u16; 8]>().prop_map(IpAddr::from),
        ];
        proptest!(|(subject in strings.clone(), route in strings, ip in addresses)| {
            let missing = [route.as_str(), "b\\"];
            let d = Decision { client: Some(ip), subject: Some(&subject), route: &route, ..decision(&missing) };
            let line = json::decision(&d);
            prop_assert_eq!(line.last(), Some(&b'\n'));
            let value: serde_json::Value = serde_json::from_slice(&line).expect("JSON");
            prop_assert_eq!(&value["subject"], subject.as_str());
            prop_assert_eq!(&value["route"], route.as_str());
            let client = ip.to_string();
            prop_assert_eq!(&value["client"], client.as_str());
            prop_assert_eq!(&value["missing"], &serde_json::json!(missing));
        });
    }

    /// After a rename (logrotate without `copytruncate`), a reopen sends
    /// the next lines to a new file at the configured path.
    #[test]
    fn a_reopen_writes_to_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.log");
        let rotated = dir.path().join("audit.log.1");
        let settings = AuditSettings {
            destination: Some(Destination::File(path.clone())),
        };
        let trail = AuditTrail::start(&settings).expect("trail");
        trail.record(&decision(&[]));
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::rename(&path, &rotated).expect("rotate");
        trail.reopen();
        trail.record(&decision(&[]));
        trail.close();
        assert_eq!(lines_of(&rotated).len(), 1);
        assert_eq!(lines_of(&path).len(), 1);
    }
}
