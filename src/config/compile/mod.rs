//! `RawConfig` → `Runtime`: cross-checks, key loading, the route table.
//!
//! Every problem is reported through `Diagnostics` with the position of the
//! value at fault; compilation goes on after an error so that one run of
//! `portcullis check` lists them all.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use http::HeaderName;
use toml::Spanned;

use crate::auth::{IdentityHeaders, Verifier};
use crate::config::raw::{RawConfig, RawIdentity};
use crate::config::raw::{RawLogin, RawSessions};
use crate::config::runtime::LoginSettings;
use crate::config::runtime::Runtime;
use crate::config::Diagnostics;
use crate::proxy::headers::{HeaderRules, FORWARDING};
use crate::proxy::router::{Router, UpstreamPool};
use crate::session::{CookieSettings, SessionSettings, Sessions};

mod cors;
mod issuers;
mod keys;
mod routes;
mod server;
mod store;
mod tokens;
mod upstreams;

/// Headers the identity may never be written to: they carry framing,
/// routing or credentials.
/// Headers the identity may never be written to: they carry framing,
/// routing or credentials, or the gateway sets them itself (these and the
/// forwarding headers of `proxy::headers`).
const FORBIDDEN_IDENTITY_HEADERS: [&str; 12] = [
    "host",
    "authorization",
    "cookie",
    "connection",
    "content-length",
    "content-type",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authorization",
    "x-portcullis-error",
    "x-token-expires-in",
];

pub(super) fn compile(raw: RawConfig, base: &Path, sink: &mut Diagnostics) -> Option<Runtime> {
    let server = server::server_settings(&raw.server, &raw.store, base, sink);
    let identity = identity_headers(&raw.identity, sink);
    let tokens_span = raw.tokens.span();
    let tokens = raw.tokens.into_inner();
    let (keyring, signer) = keys::keyring(&tokens, base, sink);
    let upstreams = upstreams::upstream_pools(&raw.upstreams, base, sink);
    let router = Router::new(routes::routes(&raw.routes, &upstreams, sink));
    let cors = cors::cors_table(
        &raw.cors,
        &raw.routes,
        raw.sessions.csrf_header.get_ref(),
        sink,
    );
    let mut session_settings = session_settings(&raw.sessions, sink);
    if let Some(cookie) = &mut session_settings.cookie {
        // One list: the origins `[cors]` lets send credentials may make
        // cookie-authenticated calls; origins allowed only to read (no
        // `allow_credentials`) may not log a browser in or rotate its token.
        if cors.global.credentials {
            cookie
                .allowed_origins
                .extend(cors.global.origins.iter().cloned());
        }
    }
    let sessions = Sessions::new(session_settings);
    let login = raw
        .login
        .as_ref()
        .and_then(|login| login_settings(login, &upstreams, sink));
    let issuers = issuers::external_issuers(&raw.issuers, &tokens, base, sink);
    tokens::check_tokens(&tokens, tokens_span, !issuers.is_empty(), sink);
    let settings = tokens::verifier_settings(&tokens);
    // Every check above ran, so `check` lists every problem; only now does
    // a broken [identity] stop the build.
    let identity = Arc::new(identity?);
    Some(Runtime {
        server,
        realm: raw.server.realm.clone(),
        max_token_bytes: raw.server.max_token_bytes,
        issuer: tokens.issuer,
        audience: tokens.audience,
        access_ttl: tokens.access_ttl.0,
        leeway: tokens.leeway.0,
        max_token_lifetime: tokens.max_token_lifetime.0,
        refresh_hint_secs: tokens.refresh_hint.0.as_secs(),
        verifier: Verifier::new(keyring, issuers, Arc::clone(&identity), &settings),
        signer,
        header_rules: HeaderRules::new(&identity),
        identity,
        router,
        sessions,
        login,
        cors,
    })
}

fn session_settings(raw: &RawSessions, sink: &mut Diagnostics) -> SessionSettings {
    let csrf_header =
        HeaderName::from_bytes(raw.csrf_header.get_ref().as_bytes()).unwrap_or_else(|_| {
            sink.at(
                raw.csrf_header.span(),
                format!("{:?} is not a valid header name", raw.csrf_header.get_ref()),
            );
            HeaderName::from_static("x-portcullis-csrf")
        });
    if raw.max_age.0.is_zero() || raw.refresh_ttl.0.is_zero() {
        sink.at(
            raw.csrf_header.span(),
            "sessions.max_age and sessions.refresh_ttl must be positive",
        );
    }
    SessionSettings {
        refresh_ttl: raw.refresh_ttl.0,
        max_age: raw.max_age.0,
        reuse_grace: raw.reuse_grace.0,
        max_failures: raw.max_failures.max(1),
        failure_window: raw.failure_window.0,
        cookie: raw.cookie.then(|| CookieSettings {
            name: raw.cookie_name.clone(),
            allowed_origins: raw.allowed_origins.clone(),
            csrf_header,
        }),
    }
}

fn login_settings(
    raw: &RawLogin,
    pools: &HashMap<String, Arc<UpstreamPool>>,
    sink: &mut Diagnostics,
) -> Option<LoginSettings> {
    let Some(upstream) = pools.get(raw.upstream.get_ref()) else {
        sink.at(
            raw.upstream.span(),
            format!("unknown upstream {:?}", raw.upstream.get_ref()),
        );
        return None;
    };
    if !raw.path.get_ref().starts_with('/') {
        sink.at(raw.path.span(), "login.path must start with '/'");
    }
    let mut header = |name: &Spanned<String>| {
        HeaderName::from_bytes(name.get_ref().as_bytes())
            .map_err(|_| {
                sink.at(
                    name.span(),
                    format!("{:?} is not a valid header name", name.get_ref()),
                )
            })
            .ok()
    };
    Some(LoginSettings {
        upstream: Arc::clone(upstream),
        path: raw.path.get_ref().clone(),
        subject_header: header(&raw.subject_header)?,
        roles_header: header(&raw.roles_header)?,
        claims_header: header(&raw.claims_header)?,
        timeout: raw.timeout.0,
    })
}

fn identity_headers(raw: &RawIdentity, sink: &mut Diagnostics) -> Option<IdentityHeaders> {
    let mut seen = HashSet::new();
    let mut header = |name: &Spanned<String>, sink: &mut Diagnostics| -> Option<HeaderName> {
        let parsed = HeaderName::from_bytes(name.get_ref().as_bytes()).ok();
        let folded = name.get_ref().to_ascii_lowercase().replace('_', "-");
        match parsed {
            None => sink.at(
                name.span(),
                format!("{:?} is not a valid header name", name.get_ref()),
            ),
            Some(_)
                if (FORBIDDEN_IDENTITY_HEADERS.contains(&folded.as_str())
                    || FORWARDING.contains(&folded.as_str())) =>
            {
                sink.at(
                    name.span(),
                    format!("{:?} cannot carry the identity", name.get_ref()),
                )
            }
            Some(_) if !seen.insert(folded) => sink.at(
                name.span(),
                format!("header {:?} is used twice in [identity]", name.get_ref()),
            ),
            Some(parsed) => return Some(parsed),
        }
        None
    };
    let subject = header(&raw.subject, sink);
    let roles = header(&raw.roles, sink);
    let scopes = header(&raw.scopes, sink);
    let session = header(&raw.session, sink);
    let claims: Vec<_> = raw
        .claims
        .iter()
        .filter_map(|(claim, name)| header(name, sink).map(|h| (claim.clone(), h)))
        .collect();
    Some(IdentityHeaders {
        subject: subject?,
        roles: roles?,
        scopes: scopes?,
        session: session?,
        claims,
        forward_token: raw.forward_token,
    })
}
