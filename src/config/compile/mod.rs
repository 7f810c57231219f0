//! `RawConfig` → `Runtime`: cross-checks, key loading, the route table.
//!
//! Every problem is reported through `Diagnostics` with the position of the
//! value at fault; compilation goes on after an error so that one run of
//! `portcullis check` lists them all. Each table has its own module; this
//! one only calls them in order and assembles the `Runtime`.
//!
//! The order is the order of `check`'s output, and follows what each table
//! needs: `[server]` and `[store]`, `[identity]`, `[[tokens.keys]]`, then
//! `[[upstreams]]` before the `[[routes]]` and `[login]` that name them;
//! `[cors]` before `[sessions]`, whose cookie mode trusts the origins
//! `[cors]` lets send credentials; `[[issuers]]` before the `[tokens]`
//! checks, since with an external issuer the gateway needs no key of its
//! own.
//!
//! Loading dials nothing and resolves no name unless `check --resolve`
//! asks: the gateway resolves upstream names when it starts.

use std::path::Path;
use std::sync::Arc;

use crate::auth::Verifier;
use crate::config::raw::{RawConfig, RawLogin, RawTokens};
use crate::config::runtime::headers::HeaderRules;
use crate::config::runtime::router::Router;
use crate::config::runtime::Runtime;
use crate::config::Diagnostics;

mod assertion;
mod audit;
mod cors;
mod identity;
mod issuers;
mod keys;
mod policy;
mod rate_limits;
mod routes;
mod server;
mod sessions;
mod store;
mod tokens;
mod upstream_auth;
mod upstreams;

pub(super) fn compile(raw: RawConfig, base: &Path, sink: &mut Diagnostics) -> Option<Runtime> {
    let server = server::server_settings(&raw.server, &raw.store, base, sink);
    let identity = identity::identity_headers(&raw.identity, sink);
    let tokens_span = raw.tokens.span();
    let tokens = raw.tokens.into_inner();
    let (keyring, signer) = keys::keyring(&tokens, base, sink);
    let pools = upstreams::upstream_pools(&raw.upstreams, base, sink);
    let policies = rate_limits::rate_limits(&raw.rate_limits, sink);
    let tracing = crate::config::traces::trace_settings(&raw.tracing, sink);
    let mut routes = routes::routes(&raw.routes, &pools, &policies, sink);
    let forward_token = raw.identity.forward_token;
    upstream_auth::cross_check(&raw.upstreams, &raw.routes, forward_token, sink);
    let csrf_header = raw.sessions.csrf_header.get_ref();
    let cors = cors::cors_table(&raw.cors, &raw.routes, csrf_header, sink);
    let inputs = assertion::Inputs {
        upstreams: &raw.upstreams,
        routes: &raw.routes,
        tokens: &tokens,
        identity: &raw.identity,
    };
    let assertions = assertion::assertions(&inputs, sink);
    for route in &mut routes {
        route.cors = Arc::clone(cors.policy_of(route.host.as_deref(), &route.prefix));
        let key = (route.host.clone(), route.prefix.clone());
        route.assertion = assertions.by_route.get(&key).cloned();
    }
    let router = Router::new(routes);
    let sessions = sessions::sessions(&raw.sessions, &cors, sink);
    let login = (raw.login.as_ref()).and_then(|login| sessions::login(login, &pools, sink));
    login_needs_signing_key(raw.login.as_ref(), &tokens, sink);
    let audit = audit::audit_settings(&raw.audit, base, sink);
    let issuers = issuers::external_issuers(&raw.issuers, &tokens, base, sink);
    tokens::check_tokens(&tokens, tokens_span, !issuers.is_empty(), sink);
    // Every check above ran, so `check` lists every problem; only now does
    // a broken [identity] stop the build.
    let identity = Arc::new(identity?);
    let verifier = Verifier::new(
        keyring,
        issuers,
        Arc::clone(&identity),
        &tokens::verifier_settings(&tokens),
    );
    Some(Runtime {
        server,
        realm: raw.server.realm,
        max_token_bytes: raw.server.max_token_bytes,
        issuer: tokens.issuer,
        audience: tokens.audience,
        access_ttl: tokens.access_ttl.0,
        leeway: tokens.leeway.0,
        max_token_lifetime: tokens.max_token_lifetime.0,
        refresh_hint_secs: tokens.refresh_hint.0.as_secs(),
        verifier,
        signer,
        header_rules: HeaderRules::new(&identity).reserving(&assertions.headers),
        identity,
        router,
        sessions,
        login,
        cors,
        tracing,
        audit,
    })
}

/// `[login]` without `[tokens] signing_key`: checked here, not left to
/// `/auth/login` answering 404 at run time.
fn login_needs_signing_key(login: Option<&RawLogin>, tokens: &RawTokens, sink: &mut Diagnostics) {
    if let (Some(login), None) = (login, &tokens.signing_key) {
        sink.at(
            login.upstream.span(),
            "[login] needs [tokens] signing_key: a login answers with tokens this gateway signs",
        );
    }
}
