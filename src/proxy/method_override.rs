//! Method overrides on routes whose policy depends on the method.
//!
//! Many frameworks let a request name another method than its own: the
//! headers `X-HTTP-Method-Override` (Google's APIs, Express'
//! `method-override`, Rack), `X-HTTP-Method` (OData, ASP.NET) and
//! `X-Method-Override`, and the query parameter `_method` (Symfony,
//! Laravel, Express). A backend that honours one would run `DELETE` for a
//! `POST` the gateway admitted under the `POST` route's policy. On a route
//! with `methods` such a request is refused (`400 invalid_request`), not
//! stripped: stripping would run the `POST` the client did not mean.
//! Routes without `methods` pass them on, as before: their policy is the
//! same for every method. A `_method` field in a form body is not seen
//! (the gateway does not read bodies); the README says what to do.

use pingora_http::RequestHeader;

use super::respond::Refusal;
use crate::vocabulary::METHOD_OVERRIDE_HEADERS;

/// The refusal of a request that carries a method override.
pub(super) fn refusal() -> Refusal {
    Refusal::invalid_request("a method override is not accepted on this route")
}

/// Whether the request names another method in a header or in the query.
pub(super) fn overrides_method(request: &RequestHeader, query: Option<&str>) -> bool {
    let header = request
        .headers
        .keys()
        .any(|name| is_override_header(name.as_str()));
    header || query.is_some_and(query_overrides)
}

/// The header names any case, `_` for `-` (CGI backends read both alike).
fn is_override_header(name: &str) -> bool {
    METHOD_OVERRIDE_HEADERS.iter().any(|known| {
        name.len() == known.len()
            && (name.bytes().zip(known.bytes())).all(|(have, want)| {
                have.to_ascii_lowercase() == want || (have == b'_' && want == b'-')
            })
    })
}

/// A query parameter named `_method` in any case, its name decoded until
/// it stops changing (proxies may stack up escapes).
fn query_overrides(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let name = pair.split('=').next().unwrap_or(pair);
        if !name.contains('%') {
            return name.trim().eq_ignore_ascii_case("_method");
        }
        let mut name = name.to_owned();
        for _ in 0..8 {
            let decoded = percent_encoding::percent_decode_str(&name).decode_utf8_lossy();
            if decoded == name {
                break;
            }
            name = decoded.into_owned();
        }
        name.trim().eq_ignore_ascii_case("_method")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_override_is_seen() {
        for name in [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
            "x_http_method_override",
        ] {
            assert!(is_override_header(name), "{name}");
        }
        assert!(!is_override_header("x-http-methods"));
        assert!(!is_override_header("x-request-id"));
        for query in [
            "_method=DELETE",
            "a=1&_METHOD=put",
            "%5Fmethod=DELETE",
            "%255Fmethod=PUT",
            "x;_method",
        ] {
            assert!(query_overrides(query), "{query}");
        }
        assert!(!query_overrides("method=card&payment_method=x"));
    }
}
