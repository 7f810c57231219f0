//! `[[upstreams]] upstream_auth` → [`UpstreamAuth`]: the kind, the one
//! place the secret is read from (a file or an environment variable, never
//! the configuration itself), and the secret's form. Every reload reads
//! the secret again, as it reads the keys.
//!
//! No message here ever contains the secret: they name the file or the
//! variable and what is wrong with its content.

use std::ops::Range;
use std::path::{Path, PathBuf};

use base64::Engine;
use http::HeaderValue;
use toml::Spanned;

use crate::config::raw::{AuthMode, RawRoute, RawUpstream, RawUpstreamAuth};
use crate::config::runtime::upstream_auth::UpstreamAuth;
use crate::config::Diagnostics;

const FIXED: &str = "fixed";
const BASIC_SUBJECT: &str = "basic_subject";

/// Where a secret comes from.
enum Source<'a> {
    File(&'a Spanned<PathBuf>),
    Env(&'a Spanned<String>),
}

/// The checked `upstream_auth` of one upstream; `None` after an error (it
/// is reported) or when `check --skip-files` passes its secret over.
pub(super) fn upstream_auth(
    raw: &Spanned<RawUpstreamAuth>,
    base: &Path,
    sink: &mut Diagnostics,
) -> Option<UpstreamAuth> {
    let auth = raw.get_ref();
    refuse_inline(auth, sink);
    let fixed = match auth.kind.get_ref().as_str() {
        FIXED => true,
        BASIC_SUBJECT => false,
        other => {
            let message = format!(
                "upstream_auth kind must be \"{FIXED}\" or \"{BASIC_SUBJECT}\", not {other:?}"
            );
            sink.at(auth.kind.span(), message);
            return None;
        }
    };
    let source = source(auth, fixed, raw.span(), sink)?;
    let (place, span, secret) = read_secret(&source, base, sink)?;
    let checked = if fixed {
        fixed_value(&secret).map(UpstreamAuth::fixed)
    } else {
        password(&secret).map(|password| UpstreamAuth::BasicSubject { password })
    };
    checked
        .map_err(|problem| sink.at(span, format!("{place}: {problem}")))
        .ok()
}

/// A secret written into the configuration is an error at its position,
/// whatever else is wrong: configuration files are copied, committed and
/// printed.
fn refuse_inline(auth: &RawUpstreamAuth, sink: &mut Diagnostics) {
    for (key, spanned) in [("value", &auth.value), ("password", &auth.password)] {
        if let Some(spanned) = spanned {
            sink.at(
                spanned.span(),
                format!("upstream_auth {key}: a secret is never written in the configuration; put it in a file (file / password_file) or an environment variable (env / password_env)"),
            );
        }
    }
}

/// The kind's one source: `file` or `env` for `fixed`, `password_file` or
/// `password_env` for `basic_subject`; the other kind's keys are errors.
fn source<'a>(
    auth: &'a RawUpstreamAuth,
    fixed: bool,
    table: Range<usize>,
    sink: &mut Diagnostics,
) -> Option<Source<'a>> {
    let (kind, file, env, others) = if fixed {
        let others = [
            ("password_file", span_of(&auth.password_file)),
            ("password_env", span_of(&auth.password_env)),
        ];
        (FIXED, &auth.file, &auth.env, others)
    } else {
        let others = [("file", span_of(&auth.file)), ("env", span_of(&auth.env))];
        (
            BASIC_SUBJECT,
            &auth.password_file,
            &auth.password_env,
            others,
        )
    };
    for (key, span) in others {
        if let Some(span) = span {
            sink.at(
                span,
                format!("upstream_auth {key} does not go with kind = {kind:?}"),
            );
        }
    }
    let (file_key, env_key) = if fixed {
        ("file", "env")
    } else {
        ("password_file", "password_env")
    };
    match (file, env) {
        (Some(file), None) => Some(Source::File(file)),
        (None, Some(env)) => Some(Source::Env(env)),
        (None, None) => {
            sink.at(
                table,
                format!("upstream_auth kind = {kind:?} needs {file_key} or {env_key}"),
            );
            None
        }
        (Some(_), Some(env)) => {
            sink.at(
                env.span(),
                format!("upstream_auth takes {file_key} or {env_key}, not both"),
            );
            None
        }
    }
}

fn span_of<T>(value: &Option<Spanned<T>>) -> Option<Range<usize>> {
    value.as_ref().map(Spanned::span)
}

/// The secret's bytes, with a name for its place (for messages) and the
/// position of the key that named it. A file loses the line end an editor
/// adds; an empty secret is an error.
fn read_secret(
    source: &Source<'_>,
    base: &Path,
    sink: &mut Diagnostics,
) -> Option<(String, Range<usize>, Vec<u8>)> {
    let (place, span, mut bytes) = match source {
        Source::File(path) => {
            let full = base.join(path.get_ref());
            if sink.skips_file(&full) {
                return None;
            }
            let bytes = std::fs::read(&full)
                .map_err(|e| sink.at(path.span(), format!("{}: {e}", full.display())))
                .ok()?;
            warn_if_exposed(&full);
            (full.display().to_string(), path.span(), bytes)
        }
        Source::Env(name) => {
            let name_text = name.get_ref();
            if sink.skips_variable(name_text) {
                return None;
            }
            let Some(value) = std::env::var_os(name_text) else {
                sink.at(
                    name.span(),
                    format!("environment variable {name_text} is not set"),
                );
                return None;
            };
            (
                format!("environment variable {name_text}"),
                name.span(),
                value.into_encoded_bytes(),
            )
        }
    };
    if matches!(source, Source::File(_)) {
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        sink.at(span, format!("{place}: the secret is empty"));
        return None;
    }
    Some((place, span, bytes))
}

/// A secret file others can read is a secret others hold.
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode());
    if mode & 0o077 != 0 {
        tracing::warn!(file = %path.display(), mode = format!("{:o}", mode & 0o777), "upstream_auth secret file is readable by other users: chmod 600 it");
    }
}

/// A whole `Authorization` value: `<scheme> <credentials>` in visible
/// ASCII; `Basic` credentials must be base64 of `user:password` (a
/// `Basic alice:secret` written unencoded would fail at every request).
fn fixed_value(secret: &[u8]) -> Result<HeaderValue, &'static str> {
    if !secret.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return Err("the value holds a control character or a non-ASCII byte");
    }
    let text = std::str::from_utf8(secret).map_err(|_| "the value is not ASCII")?;
    let (scheme, credentials) = text
        .split_once(' ')
        .map(|(s, c)| (s, c.trim()))
        .filter(|(s, c)| !s.is_empty() && !c.is_empty())
        .ok_or(
            "the value is not `<scheme> <credentials>` (e.g. `Basic dXNlcjpwYXNz` or `Bearer …`)",
        )?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(credentials);
        if !decoded.is_ok_and(|pair| pair.contains(&b':')) {
            return Err("Basic credentials must be base64 of user:password");
        }
    }
    HeaderValue::from_str(text).map_err(|_| "the value cannot be a header value")
}

/// A `basic_subject` password: UTF-8 (RFC 7617 §2.1) without control
/// characters.
fn password(secret: &[u8]) -> Result<Vec<u8>, &'static str> {
    let text = std::str::from_utf8(secret).map_err(|_| "the password is not UTF-8")?;
    if text.chars().any(char::is_control) {
        return Err("the password holds a control character");
    }
    Ok(secret.to_vec())
}

/// Checks between tables: `upstream_auth` takes `Authorization`, so the
/// token cannot be forwarded there too (`[identity] forward_token`), and a
/// `basic_subject` upstream needs a user, which an `auth = "none"` route
/// never has.
pub(super) fn cross_check(
    upstreams: &[RawUpstream],
    routes: &[RawRoute],
    forward_token: bool,
    sink: &mut Diagnostics,
) {
    for upstream in upstreams {
        let Some(auth) = &upstream.upstream_auth else {
            continue;
        };
        let name = upstream.name.get_ref();
        if forward_token {
            sink.at(
                auth.span(),
                format!("upstream {name:?}: upstream_auth replaces Authorization, so [identity] forward_token cannot forward the token to it"),
            );
        }
        if auth.get_ref().kind.get_ref() != BASIC_SUBJECT {
            continue;
        }
        let public = routes
            .iter()
            .filter(|r| r.upstream.get_ref() == name && r.auth == AuthMode::None);
        for route in public {
            sink.at(
                route.upstream.span(),
                format!("upstream {name:?} sends the verified user as its Basic user name (upstream_auth kind = \"{BASIC_SUBJECT}\"), and a route with auth = \"none\" has no user"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_value_is_a_scheme_and_credentials_and_basic_is_encoded() {
        assert!(fixed_value(b"Basic c3ZjOnB3").is_ok());
        assert!(fixed_value(b"Bearer abc.def-ghi").is_ok());
        assert!(fixed_value(b"Token 123").is_ok());
        assert!(fixed_value(b"Basic svc:pw").is_err(), "not encoded");
        assert!(fixed_value(b"Basic c3Zj").is_err(), "no colon inside");
        assert!(fixed_value(b"c3ZjOnB3").is_err(), "no scheme");
        assert!(fixed_value(b"Bearer ").is_err());
        assert!(fixed_value(b"Bearer a\r\nX-Evil: 1").is_err());
        assert!(fixed_value("Bearer caf\u{e9}".as_bytes()).is_err());
    }

    #[test]
    fn a_password_is_utf8_without_control_characters() {
        assert_eq!(
            password("pä:ss w".as_bytes()),
            Ok("pä:ss w".as_bytes().to_vec())
        );
        assert!(password(b"a\nb").is_err());
        assert!(password(&[0xff, 0x41]).is_err());
    }
}
