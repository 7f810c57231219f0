//! `[identity]` → [`IdentityHeaders`]: the request headers the verified
//! identity is written to, each a valid name that is neither used twice nor
//! one the gateway or HTTP itself gives a meaning.

use std::collections::HashSet;

use http::HeaderName;
use toml::Spanned;

use crate::auth::IdentityHeaders;
use crate::config::raw::RawIdentity;
use crate::config::Diagnostics;
use crate::vocabulary::{ERROR_HEADER, FORWARDING, TOKEN_EXPIRES_IN_HEADER};

/// Headers the identity may never be written to: they carry framing,
/// routing or credentials, or are the gateway's own. The forwarding
/// headers (`FORWARDING`) are refused too: the gateway sets them itself.
pub(super) const FORBIDDEN_IDENTITY_HEADERS: [&str; 12] = [
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
    ERROR_HEADER,
    TOKEN_EXPIRES_IN_HEADER,
];

/// `None` when any header is unusable; every one is checked first, so that
/// each problem is reported.
pub(super) fn identity_headers(
    raw: &RawIdentity,
    sink: &mut Diagnostics,
) -> Option<IdentityHeaders> {
    let mut seen = HashSet::new();
    let subject = identity_header(&raw.subject, &mut seen, sink);
    let roles = identity_header(&raw.roles, &mut seen, sink);
    let scopes = identity_header(&raw.scopes, &mut seen, sink);
    let session = identity_header(&raw.session, &mut seen, sink);
    let credential = identity_header(&raw.credential, &mut seen, sink);
    let claims: Vec<_> = (raw.claims.iter())
        .filter_map(|(claim, name)| {
            identity_header(name, &mut seen, sink).map(|header| (claim.clone(), header.into()))
        })
        .collect();
    Some(IdentityHeaders {
        subject: subject?.into(),
        roles: roles?.into(),
        scopes: scopes?.into(),
        session: session?.into(),
        credential: credential?.into(),
        claims,
        forward_token: raw.forward_token,
    })
}

/// One identity header. Names are compared as the inbound strip compares
/// them (any case, `_` for `-`), so that two spellings of one header count
/// as one. `seen` holds the headers before it.
fn identity_header(
    name: &Spanned<String>,
    seen: &mut HashSet<String>,
    sink: &mut Diagnostics,
) -> Option<HeaderName> {
    let parsed = header_name(name, sink)?;
    let folded = name.get_ref().to_ascii_lowercase().replace('_', "-");
    if FORBIDDEN_IDENTITY_HEADERS.contains(&folded.as_str())
        || FORWARDING.contains(&folded.as_str())
    {
        sink.at(
            name.span(),
            format!("{:?} cannot carry the identity", name.get_ref()),
        );
        return None;
    }
    if !seen.insert(folded) {
        sink.at(
            name.span(),
            format!("header {:?} is used twice in [identity]", name.get_ref()),
        );
        return None;
    }
    Some(parsed)
}

/// A header name from the configuration, or an error at its position.
pub(super) fn header_name(name: &Spanned<String>, sink: &mut Diagnostics) -> Option<HeaderName> {
    let parsed = HeaderName::from_bytes(name.get_ref().as_bytes()).ok();
    if parsed.is_none() {
        sink.at(
            name.span(),
            format!("{:?} is not a valid header name", name.get_ref()),
        );
    }
    parsed
}
