//! `[server]` → [`ServerSettings`]: listen addresses, the admin token, TLS
//! files, trusted proxies and the PROXY protocol, client timeouts, the
//! access-log sample. The `[store]` table is compiled by `store` and
//! carried here, since both take effect only on restart.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::store::store_settings;
use crate::config::duration::HumanDuration;
use crate::config::raw::{RawServer, RawStore, RawTls};
use crate::config::runtime::trusted::TrustedProxies;
use crate::config::runtime::{AdminToken, ServerSettings, TlsFiles};
use crate::config::Diagnostics;

pub(super) fn server_settings(
    raw: &RawServer,
    store: &RawStore,
    base: &Path,
    sink: &mut Diagnostics,
) -> ServerSettings {
    check_addresses(raw, sink);
    let threads = match raw.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // The order of these fields is the order of `check`'s output.
    ServerSettings {
        listen: raw.listen.iter().map(|a| a.get_ref().clone()).collect(),
        admin_listen: raw.admin_listen.get_ref().clone(),
        admin_token: admin_token(raw, base, sink),
        store: store_settings(store, base, sink),
        threads,
        shutdown_grace: raw.shutdown_grace.0,
        shutdown_timeout: raw.shutdown_timeout.0,
        upstream_keepalive_pool: raw.upstream_keepalive_pool,
        tls: raw.tls.as_ref().and_then(|tls| tls_files(tls, base, sink)),
        trusted_proxies: trusted_proxies(raw, sink),
        proxy_protocol: proxy_protocol(raw, sink),
        header_read_timeout: whole_seconds(&raw.header_read_timeout),
        keepalive_timeout: whole_seconds(&raw.keepalive_timeout),
        access_log_sample: access_log_sample(raw, sink),
        work_stealing: raw.work_stealing,
        headers_with_underscores: raw.headers_with_underscores,
    }
}

/// `listen` and `admin_listen` are socket addresses, not names: a listener
/// binds to an address.
fn check_addresses(raw: &RawServer, sink: &mut Diagnostics) {
    for addr in raw.listen.iter().chain([&raw.admin_listen]) {
        if addr.get_ref().parse::<SocketAddr>().is_err() {
            sink.at(
                addr.span(),
                format!(
                    "{:?} is not an address such as \"0.0.0.0:8080\"",
                    addr.get_ref()
                ),
            );
        }
    }
}

/// The PROXY header names any address its sender likes, so only the
/// balancers listed in `trusted_proxies` may send it.
fn proxy_protocol(raw: &RawServer, sink: &mut Diagnostics) -> bool {
    let on = *raw.proxy_protocol.get_ref();
    if on && raw.trusted_proxies.is_empty() {
        sink.at(
            raw.proxy_protocol.span(),
            "server.proxy_protocol needs server.trusted_proxies: only the balancers listed there may send the header",
        );
    }
    on
}

fn access_log_sample(raw: &RawServer, sink: &mut Diagnostics) -> f64 {
    let share = *raw.access_log_sample.get_ref();
    if !(0.0..=1.0).contains(&share) {
        sink.at(
            raw.access_log_sample.span(),
            "server.access_log_sample: a share from 0.0 (no successful request logged) to 1.0 (all)",
        );
    }
    share.clamp(0.0, 1.0)
}

fn trusted_proxies(raw: &RawServer, sink: &mut Diagnostics) -> TrustedProxies {
    let mut blocks = Vec::new();
    for text in &raw.trusted_proxies {
        match text.get_ref().parse() {
            Ok(block) => blocks.push(block),
            Err(message) => sink.at(text.span(), format!("server.trusted_proxies: {message}")),
        }
    }
    TrustedProxies(blocks)
}

/// Client-side timeouts in whole seconds (the engine's keep-alive unit),
/// rounded up, at least one.
fn whole_seconds(value: &HumanDuration) -> Duration {
    let d = value.0;
    Duration::from_secs((d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1))
}

/// The certificate and key files, checked to be readable PEM now rather
/// than when the listener starts.
fn tls_files(raw: &RawTls, base: &Path, sink: &mut Diagnostics) -> Option<TlsFiles> {
    let cert = pem_file(&raw.cert, "certificate", base, sink);
    let key = pem_file(&raw.key, "private key", base, sink);
    let files = TlsFiles {
        cert: cert?,
        key: key?,
    };
    if let Err(problem) = crate::config::runtime::tls::check_pair(&files) {
        sink.at(raw.key.span(), problem);
        return None;
    }
    Some(files)
}

/// The full path of `file` when it holds at least one PEM block.
fn pem_file(
    file: &Spanned<PathBuf>,
    what: &str,
    base: &Path,
    sink: &mut Diagnostics,
) -> Option<PathBuf> {
    let (full, bytes) = read_file(file, base, sink)?;
    if pem::parse_many(&bytes).is_ok_and(|blocks| !blocks.is_empty()) {
        return Some(full);
    }
    sink.at(file.span(), format!("{}: not a PEM {what}", full.display()));
    None
}

/// The admin token from the environment variable, else from the file; one
/// shorter than [`AdminToken::MIN_BYTES`] is an error, so a guessable token
/// never guards the admin API.
fn admin_token(raw: &RawServer, base: &Path, sink: &mut Diagnostics) -> Option<AdminToken> {
    match std::env::var_os(&raw.admin_token_env).filter(|v| !v.is_empty()) {
        Some(value) => admin_token_from_env(&raw.admin_token_env, value, sink),
        None => admin_token_from_file(raw.admin_token_file.as_ref()?, base, sink),
    }
}

/// The variable is not in the file, so its error points at the file's start.
fn admin_token_from_env(var: &str, value: OsString, sink: &mut Diagnostics) -> Option<AdminToken> {
    let token = AdminToken(value.into_encoded_bytes());
    if let Some(problem) = admin_token_problem(&token.0) {
        sink.at(0..0, format!("the admin token in ${var} {problem}"));
        return None;
    }
    Some(token)
}

/// What makes `token` unusable as the admin API's bearer credential: too
/// short to resist guessing, or a character a `Bearer` header cannot carry
/// (every request with it would be refused 400 `invalid_request`).
fn admin_token_problem(token: &[u8]) -> Option<String> {
    if token.len() < AdminToken::MIN_BYTES {
        return Some(format!(
            "has {} bytes; at least {} are needed (e.g. 64 hex digits from a CSPRNG)",
            token.len(),
            AdminToken::MIN_BYTES
        ));
    }
    (!crate::auth::extract::is_b64token(token)).then(|| {
        "has a character a Bearer token cannot carry (RFC 6750: letters, digits, - . _ ~ + / and = at the end)".to_owned()
    })
}

/// Trailing whitespace (the newline an editor adds) is not part of the token.
fn admin_token_from_file(
    file: &Spanned<PathBuf>,
    base: &Path,
    sink: &mut Diagnostics,
) -> Option<AdminToken> {
    let (full, mut bytes) = read_file(file, base, sink)?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    if let Some(problem) = admin_token_problem(&bytes) {
        sink.at(
            file.span(),
            format!("{}: the admin token {problem}", full.display()),
        );
        return None;
    }
    Some(AdminToken(bytes))
}

/// `file`, relative to the configuration's folder, with its full path; a
/// file that cannot be read is an error at its position.
fn read_file(
    file: &Spanned<PathBuf>,
    base: &Path,
    sink: &mut Diagnostics,
) -> Option<(PathBuf, Vec<u8>)> {
    let full = base.join(file.get_ref());
    if sink.skips_file(&full) {
        return None;
    }
    match std::fs::read(&full) {
        Ok(bytes) => Some((full, bytes)),
        Err(e) => {
            sink.at(file.span(), format!("{}: {e}", full.display()));
            None
        }
    }
}
