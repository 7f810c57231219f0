//! The request headers the upstream gets: every header the gateway owns
//! (identity, forwarding, request id) removed in every spelling first, by
//! the rules compiled in `config::runtime::headers`; the gateway's own
//! credentials (refresh cookie, bearer token) removed; then this hop's
//! `X-Forwarded-*` and `X-Request-Id` set. Also the request id itself,
//! the `Connection` nominations a client may make, and the one response
//! rule about credentials: an upstream's `Set-Cookie` for the gateway's
//! refresh cookie is removed.

use http::header::{CONNECTION, HOST, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use pingora_core::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::client_addr;
use super::respond::REQUEST_ID_HEADER;
use crate::config::Runtime;

/// Removes what authenticates a client to the gateway itself before a
/// request goes upstream: the refresh cookie (cookie mode), and a bearer
/// token unless `forward_token` (another scheme is the backend's own), on
/// every route, `auth = "none"` included: backends log headers, and the
/// gateway's token is no credential of theirs.
pub fn strip_gateway_credentials(request: &mut RequestHeader, runtime: &Runtime) {
    if let Some(cookie) = &runtime.sessions.settings.cookie {
        if request.headers.contains_key(http::header::COOKIE) {
            let kept = cookie.other_cookies(&request.headers);
            request.remove_header(&http::header::COOKIE);
            if let Some(kept) = kept {
                let _ = request.insert_header(http::header::COOKIE, kept);
            }
        }
    }
    if !runtime.identity.forward_token && has_bearer(&request.headers) {
        request.remove_header(&http::header::AUTHORIZATION);
    }
}

/// Whether any `Authorization` names the bearer scheme, however it is
/// spaced (a tab after the scheme included).
fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .any(|v| {
            let value = v.as_bytes().trim_ascii_start();
            value
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer"))
                && value.get(6).is_none_or(|b| matches!(b, b' ' | b'\t'))
        })
}

/// Removes every `Set-Cookie` that would set the gateway's own refresh
/// cookie from an upstream's (or the login backend's) response: a page
/// behind the gateway, careless or compromised, could otherwise plant a
/// session of the attacker's choosing in a victim's browser (session
/// fixation, OWASP). Other cookies pass. Logged at warn, without the
/// value, and counted.
pub fn strip_planted_cookies(runtime: &Runtime, response: &mut ResponseHeader, route: &str) {
    let Some(cookie) = &runtime.sessions.settings.cookie else {
        return;
    };
    let values = response.headers.get_all(SET_COOKIE);
    if !values.iter().any(|v| cookie.is_set_by(v.as_bytes())) {
        return;
    }
    let kept: Vec<HeaderValue> = values
        .iter()
        .filter(|v| !cookie.is_set_by(v.as_bytes()))
        .cloned()
        .collect();
    let removed = values.iter().count() - kept.len();
    response.remove_header(&SET_COOKIE);
    for value in kept {
        // Values read from a valid header are valid again.
        let _ = response.append_header(SET_COOKIE, value);
    }
    crate::metrics::METRICS
        .planted_cookies_stripped
        .inc_by(removed as u64);
    tracing::warn!(
        route,
        removed,
        "an upstream response tried to set the gateway's refresh cookie; removed"
    );
}

/// Headers that a client's `Connection` may not nominate (RFC 9110 §7.6.1
/// lets a proxy refuse): the same rule the proxy engine applies on routes.
const NOT_NOMINABLE: [&str; 4] = [
    "host",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];
/// The engine's bound on nominations, so parsing stays cheap.
const MAX_NOMINATIONS: usize = 10;

/// The lower-case header names a request's `Connection` nominates as
/// hop-by-hop, for a request the gateway builds itself (the login call).
/// `None` when one may not be nominated, is not an HTTP token, or there
/// are too many: refused with 400, as on routes.
pub fn connection_nominations(headers: &HeaderMap) -> Option<Vec<String>> {
    let tokens: Vec<&[u8]> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.len() >= MAX_NOMINATIONS {
        return None;
    }
    tokens
        .into_iter()
        .map(|token| {
            std::str::from_utf8(token)
                .ok()
                .filter(|t| t.bytes().all(is_tchar))
                .map(str::to_ascii_lowercase)
                .filter(|name| !NOT_NOMINABLE.contains(&name.as_str()))
        })
        .collect()
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A client's `X-Request-Id` is kept if it is short and plain.
pub fn acceptable_request_id(value: &[u8]) -> bool {
    (1..=128).contains(&value.len())
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// 128 random bits as 32 lower-case hex digits.
pub fn new_request_id() -> String {
    // Encoded in place: `hex::encode` builds its string a character at a
    // time, a visible share of every request.
    let mut digits = vec![0u8; 32];
    let _ = hex::encode_to_slice(rand::random::<[u8; 16]>(), &mut digits);
    // Hex digits are ASCII: the lossy way is never taken.
    String::from_utf8(digits)
        .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
}

// The engine copies and parses an inserted name whatever its type; a
// `&'static str` is the cheapest to hand it (no copy of the bytes).
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";
/// Removes every header the gateway owns from the upstream request, in
/// every spelling (see `config::runtime::headers`).
pub(super) fn strip_reserved(runtime: &Runtime, upstream: &mut RequestHeader) -> Result<()> {
    let plan = runtime.header_rules.plan(&upstream.headers);
    for name in &plan.remove {
        upstream.remove_header(name.as_str());
    }
    match plan.connection {
        Some(Some(value)) => {
            upstream.insert_header(CONNECTION, value)?;
        }
        Some(None) => {
            upstream.remove_header(&CONNECTION);
        }
        None => {}
    }
    Ok(())
}

/// `X-Forwarded-*` describe this hop only: a client's own values are never
/// trusted or appended to. `X-Forwarded-For` is the client and the trusted
/// proxies between it and the gateway (`[server] trusted_proxies`).
pub(crate) fn set_forwarding(
    session: &Session,
    upstream: &mut RequestHeader,
    request_id: &str,
    client: Option<&client_addr::ClientAddress>,
) -> Result<()> {
    if let Some(client) = client {
        upstream.insert_header(X_FORWARDED_FOR, client.forwarded_for())?;
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    upstream.insert_header(X_FORWARDED_PROTO, proto)?;
    // HTTP/2 carries the host in the `:authority` pseudo-header, which
    // pingora puts in the URI rather than in `Host`.
    let request = session.req_header();
    let host = request.headers.get(HOST).cloned().or_else(|| {
        let authority = request.uri.authority()?;
        http::HeaderValue::from_str(authority.as_str()).ok()
    });
    if let Some(host) = host {
        upstream.insert_header(X_FORWARDED_HOST, host)?;
    }
    upstream.insert_header(REQUEST_ID_HEADER, request_id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_ids_are_32_lower_case_hex_digits_and_differ() {
        let ids: Vec<String> = (0..64).map(|_| new_request_id()).collect();
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{id}"
            );
            assert!(acceptable_request_id(id.as_bytes()));
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
