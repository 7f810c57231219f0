//! Request header names with `_`: a backend that follows CGI (WSGI, PHP,
//! some Java stacks) reads `Transfer_Encoding` as `Transfer-Encoding`, so a
//! name the gateway reads as an ordinary header may frame or route the
//! request differently behind it (issue #20: `Transfer_Encoding: chunked`
//! beside a `Content-Length` smuggled a second request). A name that folds
//! (any case, `_` for `-`) to a framing, connection, routing or forwarding
//! header is refused, whatever `[server] headers_with_underscores` says;
//! every other name with `_` is dropped, refused or forwarded as it says.
//!
//! The edge applies the first rule to HTTP/1.x heads (`head`); the proxy
//! applies both to every request, HTTP/2 included, before anything goes
//! upstream. Identity names and the forwarding headers the gateway sets
//! itself stay with the set-or-strip rule (`config::runtime::headers`),
//! which removes them in every spelling.

use pingora_http::RequestHeader;

use super::respond::Refusal;
use crate::config::raw::HeadersWithUnderscores;
use crate::vocabulary::FORWARDING;

/// Folded names whose `_` spelling is refused: framing (RFC 9112 §6),
/// hop-by-hop and connection (RFC 9110 §7.6.1), routing (`Host`).
const FRAMING_AND_ROUTING: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
];
/// Folded prefixes refused the same way: `Proxy-*` (`Proxy-Connection`,
/// `Proxy-Authorization`) and every `X-Forwarded-*` a backend may trust
/// (`-Port`, `-Prefix`, `-Ssl` …) that the gateway does not set itself.
const PREFIXES: [&str; 2] = ["proxy-", "x-forwarded-"];

/// The contract's answer to such a header: 400 `invalid_request`.
pub const fn refusal() -> Refusal {
    Refusal::invalid_request("a header name with an underscore is not accepted here")
}

/// Whether `name` has `_` and folds to a framing, routing or forwarding
/// header that the set-or-strip rule does not already remove.
pub fn smuggles_a_reserved_name(name: &[u8]) -> bool {
    if !name.contains(&b'_') {
        return false;
    }
    let folded: String = name
        .iter()
        .map(|b| match b {
            b'_' => '-',
            b => char::from(b.to_ascii_lowercase()),
        })
        .collect();
    if FORWARDING.contains(&folded.as_str()) {
        return false;
    }
    FRAMING_AND_ROUTING.contains(&folded.as_str()) || PREFIXES.iter().any(|p| folded.starts_with(p))
}

/// Applies both rules to a request before it is routed: `Err` when it is
/// refused, otherwise the names with `_` that `policy` drops are removed.
pub fn screen(request: &mut RequestHeader, policy: HeadersWithUnderscores) -> Result<(), Refusal> {
    let mut dropped = Vec::new();
    for name in request.headers.keys() {
        let bytes = name.as_str().as_bytes();
        if !bytes.contains(&b'_') {
            continue;
        }
        if policy == HeadersWithUnderscores::Reject || smuggles_a_reserved_name(bytes) {
            return Err(refusal());
        }
        if policy == HeadersWithUnderscores::Drop {
            dropped.push(name.clone());
        }
    }
    for name in &dropped {
        request.remove_header(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_fold_to_framing_routing_or_forwarding_are_caught() {
        for name in [
            "Transfer_Encoding",
            "content_length",
            "HOST_",
            "Proxy_Connection",
            "proxy_authorization",
            "X_Forwarded_Port",
            "x-forwarded_prefix",
            "Keep_Alive",
            "te_",
        ] {
            let caught = smuggles_a_reserved_name(name.as_bytes());
            let expected = name != "HOST_" && name != "te_";
            assert_eq!(caught, expected, "{name}");
        }
        for name in [
            "Transfer-Encoding",
            "X_Custom",
            "X_Forwarded_For",
            "x_request_id",
            "X_Real_IP",
        ] {
            assert!(!smuggles_a_reserved_name(name.as_bytes()), "{name}");
        }
    }

    fn request(names: &[&str]) -> RequestHeader {
        let mut request = RequestHeader::build("GET", b"/", None).expect("request");
        for name in names {
            request
                .append_header(name.to_string(), "v")
                .expect("header");
        }
        request
    }

    #[test]
    fn the_setting_drops_rejects_or_allows_other_names() {
        use HeadersWithUnderscores::*;
        let mut dropped = request(&["x_custom", "x-kept"]);
        assert!(screen(&mut dropped, Drop).is_ok());
        assert!(dropped.headers.get("x_custom").is_none());
        assert!(dropped.headers.get("x-kept").is_some());
        let mut allowed = request(&["x_custom"]);
        assert!(screen(&mut allowed, Allow).is_ok());
        assert!(allowed.headers.get("x_custom").is_some());
        assert!(screen(&mut request(&["x_custom"]), Reject).is_err());
        for policy in [Drop, Allow, Reject] {
            assert!(screen(&mut request(&["transfer_encoding"]), policy).is_err());
        }
    }
}
