//! `[[issuers]]` → the external identity providers whose tokens are
//! verified too: each with a JWKS URL or static keys, never both. Fetches
//! nothing: the gateway fetches each JWKS in the background once it runs.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use super::keys::add_key;
use crate::auth::external::{acceptable_jwks_url, ExternalIssuer, JwksSource};
use crate::auth::Keyring;
use crate::config::raw::{RawIssuer, RawTokens};
use crate::config::Diagnostics;

/// The claims `required_claims` may name: those the verifier can enforce
/// (`iss` and `aud` are always required).
const EXTERNAL_CLAIMS: [&str; 5] = ["sub", "exp", "iat", "jti", "nbf"];

pub(super) fn external_issuers(
    raw: &[RawIssuer],
    tokens: &RawTokens,
    base: &Path,
    sink: &mut Diagnostics,
) -> Vec<Arc<ExternalIssuer>> {
    let mut names = HashSet::new();
    raw.iter()
        .filter_map(|issuer| external_issuer(issuer, tokens, base, &mut names, sink))
        .map(Arc::new)
        .collect()
}

/// One `[[issuers]]` entry; `names` are the issuers before it.
fn external_issuer(
    issuer: &RawIssuer,
    tokens: &RawTokens,
    base: &Path,
    names: &mut HashSet<String>,
    sink: &mut Diagnostics,
) -> Option<ExternalIssuer> {
    let name = issuer.issuer.get_ref();
    if name.is_empty() || *name == tokens.issuer || !names.insert(name.clone()) {
        sink.at(
            issuer.issuer.span(),
            format!("issuer {name:?} is empty, the gateway's own, or listed twice"),
        );
        return None;
    }
    check_required_claims(issuer, sink);
    let jwks = jwks_source(issuer, sink);
    if jwks.is_some() != issuer.keys.is_empty() {
        sink.at(
            issuer.issuer.span(),
            format!("issuer {name:?} needs exactly one of jwks_url or [[issuers.keys]]"),
        );
        return None;
    }
    let mut static_keys = Keyring::default();
    for key in &issuer.keys {
        add_key(key, base, &mut static_keys, sink);
    }
    Some(ExternalIssuer {
        issuer: name.clone(),
        audience: issuer.audience.clone(),
        typ: issuer.typ.clone(),
        required_claims: (issuer.required_claims.iter())
            .map(|c| c.get_ref().clone())
            .collect(),
        static_keys,
        jwks,
        leeway: tokens.leeway.0,
    })
}

fn check_required_claims(issuer: &RawIssuer, sink: &mut Diagnostics) {
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
}

/// The issuer's JWKS, when it has an acceptable `jwks_url`: keys fetched
/// over plain HTTP from elsewhere than loopback could be anyone's.
fn jwks_source(issuer: &RawIssuer, sink: &mut Diagnostics) -> Option<Arc<JwksSource>> {
    let url = issuer.jwks_url.as_ref()?;
    if !acceptable_jwks_url(url.get_ref()) {
        sink.at(
            url.span(),
            format!(
                "jwks_url {:?} must be https:// (http:// only on loopback)",
                url.get_ref()
            ),
        );
        return None;
    }
    Some(JwksSource::shared(
        url.get_ref(),
        issuer.cache_ttl.0,
        issuer.unknown_kid_cooldown.0,
    ))
}
