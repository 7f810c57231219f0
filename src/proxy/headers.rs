//! Set-or-strip rules for the headers the gateway owns.
//!
//! Every header the gateway sets for the upstream (identity, forwarding,
//! request id) is removed from the inbound request first, in every spelling
//! a backend might fold together: any case, `_` for `-`, every duplicate.
//! A `Connection` header naming one of them loses that token, so a
//! hop-by-hop rule downstream cannot remove the value the gateway set.

use http::header::CONNECTION;
use http::HeaderMap;

/// Removes what authenticates a client to the gateway itself before a
/// request goes upstream: the refresh cookie (cookie mode), and, when
/// `bearer_too`, a bearer token unless `forward_token` (another scheme is
/// the backend's own).
pub fn strip_gateway_credentials(
    request: &mut pingora_http::RequestHeader,
    runtime: &crate::config::Runtime,
    bearer_too: bool,
) {
    if let Some(cookie) = &runtime.sessions.settings.cookie {
        let kept = cookie.other_cookies(&request.headers);
        request.remove_header(&http::header::COOKIE);
        if let Some(kept) = kept {
            let _ = request.insert_header(http::header::COOKIE, kept);
        }
    }
    let bearer = request
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..7)
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer "))
        });
    if bearer_too && bearer && !runtime.identity.forward_token {
        request.remove_header(&http::header::AUTHORIZATION);
    }
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

/// 128 random bits as 32 hex digits.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
