//! `[tokens]`: the checks on the gateway's own issuer, audience and
//! lifetimes, and the settings its verifier is built with. The keys of
//! `[[tokens.keys]]` are loaded by `keys`.

use std::ops::Range;

use crate::auth::verify::VerifierSettings;
use crate::config::raw::RawTokens;
use crate::config::Diagnostics;

/// `span` is the whole `[tokens]` table: these values have no position of
/// their own. With an external issuer, the gateway may verify without a
/// key of its own.
pub(super) fn check_tokens(
    tokens: &RawTokens,
    span: Range<usize>,
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

pub(super) fn verifier_settings(tokens: &RawTokens) -> VerifierSettings {
    VerifierSettings {
        issuer: tokens.issuer.clone(),
        audience: tokens.audience.clone(),
        leeway: tokens.leeway.0,
        max_lifetime: tokens.max_token_lifetime.0,
        cache_entries: tokens.verified_cache_entries,
    }
}
