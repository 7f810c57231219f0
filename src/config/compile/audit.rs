//! `[audit]` → [`AuditSettings`]: off, stderr, or a file. A file's folder
//! must exist (it is created by the deployment, like a log folder), except
//! under `check --skip-files`, which checks a configuration away from the
//! machine it is for.

use std::path::Path;

use crate::audit::{AuditSettings, Destination};
use crate::config::raw::audit::RawAudit;
use crate::config::Diagnostics;

pub(super) fn audit_settings(raw: &RawAudit, base: &Path, sink: &mut Diagnostics) -> AuditSettings {
    let destination = destination(raw, base, sink);
    AuditSettings {
        destination: destination.filter(|_| raw.enabled),
    }
}

/// Checked whether or not the trail is on, so turning it on later meets
/// no new error.
fn destination(raw: &RawAudit, base: &Path, sink: &mut Diagnostics) -> Option<Destination> {
    let span = raw.destination.span();
    let text = raw.destination.get_ref().trim();
    if text == "stderr" {
        return Some(Destination::Stderr);
    }
    if text.is_empty() || text.ends_with('/') {
        sink.at(
            span,
            "[audit] destination is \"stderr\" or the path of a file",
        );
        return None;
    }
    let path = base.join(text);
    if path.is_dir() {
        sink.at(span, format!("{}: a folder, not a file", path.display()));
        return None;
    }
    let folder = path.parent().unwrap_or(base);
    if !folder.is_dir() && !sink.skips_file(folder) {
        sink.at(
            span,
            format!("{}: the folder does not exist", folder.display()),
        );
        return None;
    }
    Some(Destination::File(path))
}
