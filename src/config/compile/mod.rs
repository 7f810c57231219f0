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

use crate::auth::external::{acceptable_jwks_url, ExternalIssuer, JwksSource};
use crate::auth::keys::KeyMaterial;
use crate::auth::verify::VerifierSettings;
use crate::auth::{IdentityHeaders, Keyring, Verifier};
use crate::config::raw::{KeyAlgorithm, RawConfig, RawIdentity, RawKey, RawTokens};
use crate::config::raw::{RawIssuer, RawLogin, RawSessions};
use crate::config::runtime::LoginSettings;
use crate::config::runtime::Runtime;
use crate::config::Diagnostics;
use crate::proxy::headers::{HeaderRules, FORWARDING};
use crate::proxy::router::{Router, UpstreamPool};
use crate::session::{CookieSettings, SessionSettings, Sessions};

mod cors;
mod routes;
mod server;
mod store;
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
    let (keyring, signer) = keys(&tokens, base, sink);
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
    let issuers = external_issuers(&raw.issuers, &tokens, base, sink);
    check_tokens(&tokens, tokens_span, !issuers.is_empty(), sink);
    let settings = VerifierSettings {
        issuer: tokens.issuer.clone(),
        audience: tokens.audience.clone(),
        leeway: tokens.leeway.0,
        max_lifetime: tokens.max_token_lifetime.0,
        cache_entries: tokens.verified_cache_entries,
    };
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

fn check_tokens(
    tokens: &RawTokens,
    span: std::ops::Range<usize>,
    has_issuers: bool,
    sink: &mut Diagnostics,
) {
    if tokens.issuer.trim().is_empty() {
        sink.at(span.clone(), "tokens.issuer must not be empty");
    }
    if tokens.audience.trim().is_empty() {
        sink.at(span.clone(), "tokens.audience must not be empty");
    }
    if tokens.keys.is_empty() && !has_issuers {
        sink.at(
            span.clone(),
            "no [[tokens.keys]]: at least one key is needed to verify tokens",
        );
    }
    if tokens.verified_cache_entries == 0 {
        sink.at(
            span.clone(),
            "tokens.verified_cache_entries must be at least 1",
        );
    }
    if tokens.access_ttl.0 > tokens.max_token_lifetime.0 {
        sink.at(
            span,
            "tokens.access_ttl must not exceed tokens.max_token_lifetime",
        );
    }
}

fn keys(
    tokens: &RawTokens,
    base: &Path,
    sink: &mut Diagnostics,
) -> (Keyring, Option<crate::auth::SigningKey>) {
    let mut keyring = Keyring::default();
    let mut seen = HashSet::new();
    for key in &tokens.keys {
        if key.kid.get_ref().is_empty() || !seen.insert(key.kid.get_ref().clone()) {
            sink.at(
                key.kid.span(),
                format!("kid {:?} is empty or used twice", key.kid.get_ref()),
            );
            continue;
        }
        if let Err((span, message)) = load_key(key, base, &mut keyring) {
            sink.at(span.unwrap_or(key.kid.span()), message);
        }
    }
    let signer = match &tokens.signing_key {
        Some(kid) if keyring.can_sign(kid.get_ref()) => keyring.take_signing(kid.get_ref()),
        Some(kid) if keyring.get(kid.get_ref()).is_some() => {
            sink.at(
                kid.span(),
                format!(
                    "signing key {:?} has no private key or secret",
                    kid.get_ref()
                ),
            );
            None
        }
        Some(kid) if seen.contains(kid.get_ref()) => None, // its own error is already reported
        Some(kid) => {
            sink.at(
                kid.span(),
                format!(
                    "signing key {:?} is not among [[tokens.keys]]",
                    kid.get_ref()
                ),
            );
            None
        }
        None => None,
    };
    (keyring, signer)
}

type KeyFailure = (Option<std::ops::Range<usize>>, String);

fn load_key(key: &RawKey, base: &Path, keyring: &mut Keyring) -> Result<(), KeyFailure> {
    let sources = [
        key.private_key_file.as_ref().map(|p| p.span()),
        key.public_key_file.as_ref().map(|p| p.span()),
        key.secret_env.as_ref().map(|p| p.span()),
        key.secret_file.as_ref().map(|p| p.span()),
    ];
    if sources.iter().flatten().count() != 1 {
        let want = if key.algorithm == KeyAlgorithm::HS256 {
            "secret_env or secret_file"
        } else {
            "private_key_file or public_key_file"
        };
        return Err((
            None,
            format!("key {:?} needs exactly one of {want}", key.kid.get_ref()),
        ));
    }
    let (span, bytes, kind) = read_material(key, base)?;
    let material = match kind {
        Material::Private => KeyMaterial::PrivatePem(&bytes),
        Material::Public => KeyMaterial::PublicPem(&bytes),
        Material::Secret => KeyMaterial::Secret(&bytes),
    };
    keyring
        .add(key.kid.get_ref(), key.algorithm, material)
        .map_err(|e| {
            (
                Some(span),
                format!("key {:?} ({:?}): {e}", key.kid.get_ref(), key.algorithm),
            )
        })
}

enum Material {
    Private,
    Public,
    Secret,
}

fn read_material(
    key: &RawKey,
    base: &Path,
) -> Result<(std::ops::Range<usize>, Vec<u8>, Material), KeyFailure> {
    let read = |path: &Spanned<std::path::PathBuf>| {
        let full = base.join(path.get_ref());
        std::fs::read(&full).map_err(|e| (Some(path.span()), format!("{}: {e}", full.display())))
    };
    if let Some(path) = &key.private_key_file {
        warn_if_exposed(key.kid.get_ref(), &base.join(path.get_ref()));
        return Ok((path.span(), read(path)?, Material::Private));
    }
    if let Some(path) = &key.public_key_file {
        return Ok((path.span(), read(path)?, Material::Public));
    }
    if let Some(path) = &key.secret_file {
        warn_if_exposed(key.kid.get_ref(), &base.join(path.get_ref()));
        let mut bytes = read(path)?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        return Ok((path.span(), bytes, Material::Secret));
    }
    let var = key
        .secret_env
        .as_ref()
        .ok_or((None, "no key material".to_owned()))?;
    let value = std::env::var_os(var.get_ref()).ok_or_else(|| {
        (
            Some(var.span()),
            format!("environment variable {} is not set", var.get_ref()),
        )
    })?;
    Ok((var.span(), value.into_encoded_bytes(), Material::Secret))
}

/// A signing key anyone could hold signs tokens anyone could forge: warn
/// when it is one of the repository's test fixtures or readable by users
/// other than the owner (`portcullis keygen` writes mode 0600).
fn warn_if_exposed(kid: &str, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let names: Vec<_> = path.components().map(|c| c.as_os_str()).collect();
    let fixture = names
        .windows(2)
        .any(|w| w[0] == "tests" && w[1] == "fixtures");
    let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode());
    if fixture {
        tracing::warn!(kid, file = %path.display(), "signing key is a public test fixture: anyone can forge tokens with it; generate your own with `portcullis keygen`");
    } else if mode & 0o077 != 0 {
        tracing::warn!(kid, file = %path.display(), mode = format!("{:o}", mode & 0o777), "signing key is readable by other users: chmod 600 it");
    }
}

const EXTERNAL_CLAIMS: [&str; 5] = ["sub", "exp", "iat", "jti", "nbf"];

fn external_issuers(
    raw: &[RawIssuer],
    tokens: &RawTokens,
    base: &Path,
    sink: &mut Diagnostics,
) -> Vec<Arc<ExternalIssuer>> {
    let mut seen = HashSet::new();
    let mut issuers = Vec::new();
    for issuer in raw {
        let name = issuer.issuer.get_ref();
        if name.is_empty() || *name == tokens.issuer || !seen.insert(name.clone()) {
            sink.at(
                issuer.issuer.span(),
                format!("issuer {name:?} is empty, the gateway's own, or listed twice"),
            );
            continue;
        }
        for claim in &issuer.required_claims {
            if !EXTERNAL_CLAIMS.contains(&claim.get_ref().as_str()) {
                sink.at(
                    claim.span(),
                    format!(
                        "required claim {:?} is not one of {EXTERNAL_CLAIMS:?}",
                        claim.get_ref()
                    ),
                );
            }
        }
        let jwks = match &issuer.jwks_url {
            Some(url) if acceptable_jwks_url(url.get_ref()) => Some(JwksSource::shared(
                url.get_ref(),
                issuer.cache_ttl.0,
                issuer.unknown_kid_cooldown.0,
            )),
            Some(url) => {
                sink.at(
                    url.span(),
                    format!(
                        "jwks_url {:?} must be https:// (http:// only on loopback)",
                        url.get_ref()
                    ),
                );
                None
            }
            None => None,
        };
        if jwks.is_some() != issuer.keys.is_empty() {
            sink.at(
                issuer.issuer.span(),
                format!("issuer {name:?} needs exactly one of jwks_url or [[issuers.keys]]"),
            );
            continue;
        }
        let mut static_keys = Keyring::default();
        for key in &issuer.keys {
            if let Err((span, message)) = load_key(key, base, &mut static_keys) {
                sink.at(span.unwrap_or(key.kid.span()), message);
            }
        }
        issuers.push(Arc::new(ExternalIssuer {
            issuer: name.clone(),
            audience: issuer.audience.clone(),
            typ: issuer.typ.clone(),
            required_claims: issuer
                .required_claims
                .iter()
                .map(|c| c.get_ref().clone())
                .collect(),
            static_keys,
            jwks,
            leeway: tokens.leeway.0,
        }));
    }
    issuers
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
