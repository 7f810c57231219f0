//! Everything that crosses between a client and an upstream (a route's
//! pool or the login backend), sanitised here, once, for the proxy's hooks
//! and the login endpoint alike.
//!
//! On the way up ([`to_upstream`]): every header the gateway owns
//! (identity, forwarding, request id) removed in every spelling, by the
//! rules compiled in `config::runtime::headers`; the gateway's own
//! credentials (refresh cookie, bearer token) removed; then the verified
//! identity and this hop's `X-Forwarded-*` and `X-Request-Id` set. A
//! request the gateway copies itself (the login call) first loses its
//! hop-by-hop headers ([`copy_end_to_end`]), as the engine removes them
//! from a proxied one. On the way down ([`from_upstream`]): the contract's
//! error header and, under a CORS policy, `Access-Control-*` removed, an
//! upstream's `Set-Cookie` for the gateway's refresh cookie removed, the
//! request id set. Also the request id itself.

use http::header::{
    CONNECTION, CONTENT_LENGTH, EXPECT, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, SET_COOKIE,
    TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora_core::{ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::client_addr;
use super::respond::Refusal;
use crate::auth::api_key::has_api_key_authorization;
use crate::config::runtime::cors::CorsPolicy;
use crate::config::runtime::upstream::UpstreamPool;
use crate::config::runtime::upstream_auth::UpstreamAuth;
use crate::config::Runtime;
use crate::vocabulary::{
    ERROR, HTTP2_SETTINGS, KEEP_ALIVE, PROXY_CONNECTION, REQUEST_ID_HEADER, SESSION_CONTROL,
    TOKEN_EXPIRES_IN, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO,
};

/// The names only the gateway may put on an answer to a client (or, for
/// session control, read from an upstream's): never passed on as an
/// upstream wrote them.
const GATEWAY_ANSWER_NAMES: [HeaderName; 3] = [ERROR, SESSION_CONTROL, TOKEN_EXPIRES_IN];

/// Whether an upstream's answer carries any of the gateway's own names.
/// One pass over its few names costs less than a hashed removal per name,
/// and nearly every answer has none.
pub fn names_gateway_headers(response: &ResponseHeader) -> bool {
    (response.headers.keys()).any(|name| GATEWAY_ANSWER_NAMES.contains(name))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1, RFC 9113 §8.2.2), never copied
/// from one connection to the next. This is the engine's own list:
/// pingora 0.9 removes the same set, and the `Connection` nominations,
/// from every request it proxies (`strip_standard_hop_by_hop_headers` and
/// `ConnectionNominations` in pingora-proxy's `proxy_common.rs`), but both
/// are private to that crate and run only on the proxy path; the login
/// call goes through the engine's `Connector`, which removes nothing. So
/// the rule is kept here, in one place, for what the gateway copies itself.
const HOP_BY_HOP: [HeaderName; 10] = [
    HeaderName::from_static(KEEP_ALIVE),
    HeaderName::from_static(PROXY_CONNECTION),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    CONNECTION,
    UPGRADE,
    HeaderName::from_static(HTTP2_SETTINGS),
];
/// The framing of a message the gateway reads whole and sends again with
/// its own `Content-Length`. `Expect` goes too: the body has been read
/// already, and a backend's `100 Continue` would only be one more answer
/// to skip.
const REFRAMED: [HeaderName; 2] = [CONTENT_LENGTH, EXPECT];

/// Whether `name` belongs to one connection or to a message the gateway
/// frames anew.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || REFRAMED.contains(name)
}

/// Copies a client's request headers onto a request the gateway sends
/// itself, less the hop-by-hop ones, those its `Connection` nominates and
/// the framing: what the engine does for a proxied request. A nomination
/// the engine would refuse is refused with 400, as on routes.
pub fn copy_end_to_end(inbound: &HeaderMap, request: &mut RequestHeader) -> Result<(), Refusal> {
    let nominated = connection_nominations(inbound).ok_or_else(Refusal::bad_request)?;
    for (name, value) in inbound {
        if !is_hop_by_hop(name) && !nominated.iter().any(|n| n == name.as_str()) {
            request
                .append_header(name.clone(), value.clone())
                .map_err(|_| Refusal::bad_request())?;
        }
    }
    Ok(())
}

/// Removes the hop-by-hop headers and the framing from an answer the
/// gateway read whole and writes again itself (the login backend's).
pub fn strip_hop_by_hop(response: &mut ResponseHeader) {
    for name in HOP_BY_HOP.iter().chain(&REFRAMED) {
        response.remove_header(name);
    }
}

/// Everything a request gets on its way to an upstream, the engine's copy
/// of a proxied request and the login call alike: the gateway's own
/// headers in every spelling and its credentials out, then `identity`
/// (the verified token's headers, none for the login call) and this hop's
/// forwarding headers in. `trace`: the next hop's `traceparent` and
/// `tracestate` (`proxy::trace`; the client's removed when tracing is on).
pub fn to_upstream(
    runtime: &Runtime,
    session: &Session,
    upstream: &mut RequestHeader,
    identity: &[crate::auth::identity::ForwardedHeader],
    request_id: &str,
    client: Option<&client_addr::ClientAddress>,
    trace: &crate::telemetry::Outgoing,
) -> Result<()> {
    strip_reserved(runtime, upstream)?;
    super::trace::apply(upstream, trace)?;
    // Removed first: the engine's copy of the request has no room to
    // spare, and the slot a removed bearer token frees saves the first
    // identity header a reallocation. No identity header may be
    // `Authorization`.
    strip_gateway_credentials(upstream, runtime);
    for (name, value) in identity {
        upstream.insert_header(name.clone(), value.clone())?;
    }
    set_forwarding(session, upstream, request_id, client)
}

/// The backend's own credentials (`upstream_auth`) in place of every
/// `Authorization` the client sent, in any scheme: run after
/// [`to_upstream`] on a route's request, never on the login call (whose
/// backend reads the client's credentials). Without a value to send (no
/// verified subject for `basic_subject`) the request goes without one, and
/// the backend that enforces its auth refuses it itself.
pub fn present_upstream_auth(
    upstream: &mut RequestHeader,
    auth: &UpstreamAuth,
    subject: Option<&str>,
) -> Result<()> {
    upstream.remove_header(&http::header::AUTHORIZATION);
    if let Some(value) = auth.authorization(subject) {
        upstream.insert_header(http::header::AUTHORIZATION, value)?;
    }
    Ok(())
}

/// An upstream that answers 401 to the gateway's fixed credentials has
/// refused the gateway itself (a wrong or rotated secret): the answer goes
/// to the client as it is, and the operator is told, without the value.
pub fn note_refused_upstream_auth(pool: &UpstreamPool, status: http::StatusCode) {
    if status == http::StatusCode::UNAUTHORIZED
        && matches!(pool.upstream_auth, Some(UpstreamAuth::Fixed(_)))
    {
        tracing::warn!(upstream = %pool.name, "the upstream refused the gateway's upstream_auth credentials (401)");
    }
}

/// Everything an upstream's answer (a proxied one, or the login backend's
/// passed through) gets on its way to the client, under the CORS `policy`
/// that applies to it: `X-Portcullis-Error` removed (only the gateway
/// speaks with it, so clients can trust it), `X-Portcullis-Session-Control`
/// removed (it speaks to the gateway, never to a client), the upstream's own
/// `Access-Control-*` removed when the policy is on, a planted refresh
/// cookie removed (logged under `route`), and `X-Request-Id` set. To an
/// HTTP/2 client (`http2`) the values left are copied out of the
/// upstream's read buffer first (see [`detach_from_upstream_buffer`]).
pub fn from_upstream(
    runtime: &Runtime,
    policy: &CorsPolicy,
    response: &mut ResponseHeader,
    route: &str,
    request_id: &str,
    http2: bool,
) -> Result<()> {
    if names_gateway_headers(response) {
        response.remove_header(&ERROR);
        // Honoured (or not) by `session_control` before this; never a
        // client's.
        response.remove_header(&SESSION_CONTROL);
    }
    policy.strip_upstream(response);
    strip_planted_cookies(runtime, response, route);
    if http2 {
        detach_from_upstream_buffer(response);
    }
    // A `&'static str` name: the engine copies a `HeaderName`'s bytes.
    response.insert_header(REQUEST_ID_HEADER, never_indexed(request_id)?)
}

/// Gives an answer's header values a buffer of their own before they go
/// out over HTTP/2. The engine parses an upstream's answer without copying
/// its values: each is a slice of that answer's read buffer (4 KiB at
/// least). HPACK keeps the values it indexes (`server`, `content-type`,
/// `last-modified` …; the engine writes its own `date`) in the client
/// connection's table for as long as they stay there, and with them every
/// buffer they came from: an idle HTTP/2 connection held the 4 KiB of the
/// answer that first indexed them, and a busy one a buffer for each value
/// that differs from answer to answer while it stays in the table (issue
/// #24). One copy of the values' few bytes frees them all.
///
/// The engine gives no mutable access to an answer's map (its methods keep
/// a map of the names' spelling for HTTP/1.1 in step), so the answer is
/// taken apart and put together again without that map: HTTP/2 sends
/// names in lower case, and the reason phrase it drops is HTTP/1.1's too.
fn detach_from_upstream_buffer(response: &mut ResponseHeader) {
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(response, placeholder));
    let total = parts.headers.values().map(HeaderValue::len).sum();
    let mut owned = bytes::BytesMut::with_capacity(total);
    for value in parts.headers.values() {
        owned.extend_from_slice(value.as_bytes());
    }
    let mut owned = owned.freeze();
    for value in parts.headers.values_mut() {
        let copy = owned.split_to(value.len());
        // The same bytes, so always valid; kept as it was otherwise.
        if let Ok(mut copy) = HeaderValue::from_maybe_shared(copy) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
    }
    *response = ResponseHeader::from(parts);
}

/// A value HPACK sends as a never-indexed literal (RFC 7541 §6.2.3): one
/// unique to each response would enter the HTTP/2 connection's table on
/// every answer only to push out the headers that do repeat (`server`,
/// `content-type`), which then enter it again; each insertion and
/// eviction costs the engine about 3,000 instructions a response
/// (docs/benchmarks.md, issue #24). HTTP/1.1 writes it as it is.
fn never_indexed(value: &str) -> Result<HeaderValue> {
    let mut value =
        HeaderValue::from_str(value).or_err(ErrorType::InvalidHTTPHeader, "request id")?;
    value.set_sensitive(true);
    Ok(value)
}

/// Removes what authenticates a client to the gateway itself before a
/// request goes upstream: the refresh cookie (cookie mode), a bearer
/// token unless `forward_token` (another scheme is the backend's own) and
/// an `Authorization: ApiKey` always (`X-Api-Key` is a reserved name), on
/// every route, `auth = "none"` included: backends log headers, and the
/// gateway's token is no credential of theirs.
fn strip_gateway_credentials(request: &mut RequestHeader, runtime: &Runtime) {
    if let Some(cookie) = &runtime.sessions.settings.cookie {
        if request.headers.contains_key(http::header::COOKIE) {
            let kept = cookie.other_cookies(&request.headers);
            request.remove_header(&http::header::COOKIE);
            if let Some(kept) = kept {
                let _ = request.insert_header(http::header::COOKIE, kept);
            }
        }
    }
    if !runtime.identity.forward_token && has_bearer(&request.headers)
        || has_api_key_authorization(&request.headers)
    {
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
fn strip_planted_cookies(runtime: &Runtime, response: &mut ResponseHeader, route: &str) {
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
/// lets a proxy refuse): the same rule the proxy engine applies on routes
/// (private there too, beside its hop-by-hop list).
const NOT_NOMINABLE: [HeaderName; 4] = [
    HOST,
    HeaderName::from_static(X_FORWARDED_FOR),
    HeaderName::from_static(X_FORWARDED_HOST),
    HeaderName::from_static(X_FORWARDED_PROTO),
];
/// The engine's bound on nominations, so parsing stays cheap.
const MAX_NOMINATIONS: usize = 10;

/// The lower-case header names a request's `Connection` nominates as
/// hop-by-hop, for a request the gateway builds itself (the login call).
/// `None` when one may not be nominated, is not an HTTP token, or there
/// are too many: refused with 400, as on routes.
fn connection_nominations(headers: &HeaderMap) -> Option<Vec<String>> {
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
                .filter(|name| !NOT_NOMINABLE.iter().any(|n| n.as_str() == name))
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

/// Removes every header the gateway owns from the upstream request, in
/// every spelling (see `config::runtime::headers`).
fn strip_reserved(runtime: &Runtime, upstream: &mut RequestHeader) -> Result<()> {
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
fn set_forwarding(
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

    #[test]
    fn answers_over_http2_keep_no_value_in_the_upstreams_read_buffer() {
        let read_buffer = bytes::Bytes::from_static(b"nginxtext/plainsecreta=1b=2");
        let mut response = ResponseHeader::build(200, None).expect("response");
        for (name, range) in [
            ("server", 0..5),
            ("content-type", 5..15),
            ("x-token", 15..21),
            ("set-cookie", 21..24),
            ("set-cookie", 24..27),
        ] {
            let value = HeaderValue::from_maybe_shared(read_buffer.slice(range)).expect("value");
            response.append_header(name, value).expect("header");
        }
        let mut marked = response.headers["x-token"].clone();
        marked.set_sensitive(true);
        response.insert_header("x-token", marked).expect("header");

        detach_from_upstream_buffer(&mut response);

        let buffer = read_buffer.as_ptr_range();
        for (name, value) in &response.headers {
            let at = value.as_bytes().as_ptr();
            assert!(
                !buffer.contains(&at),
                "{name} still points into the read buffer"
            );
        }
        assert_eq!(response.headers["server"], "nginx");
        assert_eq!(response.headers["content-type"], "text/plain");
        assert_eq!(response.headers["x-token"], "secret");
        let cookies: Vec<_> = response.headers.get_all("set-cookie").iter().collect();
        assert_eq!(
            cookies,
            ["a=1", "b=2"],
            "a repeated header keeps each value"
        );
        assert!(
            response.headers["x-token"].is_sensitive(),
            "never-indexed lost"
        );
        assert!(!response.headers["server"].is_sensitive());
    }

    fn inbound(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn copied(pairs: &[(&'static str, &'static str)]) -> Result<Vec<String>, Refusal> {
        let mut request = RequestHeader::build("POST", b"/login", None).expect("request");
        copy_end_to_end(&inbound(pairs), &mut request)?;
        let mut names: Vec<String> = request.headers.keys().map(|n| n.to_string()).collect();
        names.sort();
        Ok(names)
    }

    #[test]
    fn a_copied_request_loses_hop_by_hop_nominated_and_framing_headers() {
        let names = copied(&[
            ("connection", "keep-alive, X-Private-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-private-hop", "secret"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("content-length", "3"),
            ("expect", "100-continue"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("x-kept", "1"),
            ("content-type", "application/json"),
        ])
        .expect("copied");
        assert_eq!(names, ["content-type", "x-kept"]);
    }

    #[test]
    fn a_nomination_the_engine_refuses_is_refused() {
        for connection in [
            "Host",
            "x-forwarded-for",
            "\"x-kept\"",
            "a,b,c,d,e,f,g,h,i,j",
        ] {
            let refused = copied(&[("connection", connection)]);
            assert_eq!(refused, Err(Refusal::bad_request()), "{connection}");
        }
    }

    /// A runtime with the refresh cookie and a global CORS policy on.
    fn runtime() -> Runtime {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("hs.secret");
        std::fs::write(&secret, [7u8; 32]).expect("secret");
        let text = format!(
            "[tokens]\nissuer = \"https://i.test\"\naudience = \"api\"\n\
             [[tokens.keys]]\nkid = \"k\"\nalgorithm = \"HS256\"\nsecret_file = {secret:?}\n\
             [sessions]\ncookie = true\n\
             [cors]\nallowed_origins = [\"https://app.test\"]\n\
             [[upstreams]]\nname = \"echo\"\ntargets = [\"127.0.0.1:9\"]\n\
             [[routes]]\npath = \"/\"\nupstream = \"echo\"\nauth = \"none\"\n"
        );
        crate::config::load_str(&text, std::path::Path::new("t.toml")).expect("config")
    }

    #[test]
    fn an_upstream_answer_loses_what_only_the_gateway_may_say() {
        let runtime = runtime();
        let mut response = ResponseHeader::build(401, None).expect("response");
        for (name, value) in [
            ("x-portcullis-error", "forged"),
            ("access-control-allow-origin", "*"),
            ("set-cookie", "portcullis_refresh=planted; Path=/"),
            ("set-cookie", "theirs=1"),
            ("x-request-id", "theirs"),
        ] {
            response.append_header(name, value).expect("header");
        }
        from_upstream(
            &runtime,
            &runtime.cors.global,
            &mut response,
            "r",
            "id-1",
            false,
        )
        .expect("sanitised");
        let headers = &response.headers;
        assert!(headers.get("x-portcullis-error").is_none());
        assert!(headers.get("access-control-allow-origin").is_none());
        let cookies: Vec<_> = headers.get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["theirs=1"]);
        let ids: Vec<_> = headers.get_all("x-request-id").iter().collect();
        assert_eq!(ids, ["id-1"]);
        assert!(ids[0].is_sensitive(), "never indexed by HPACK");
    }
}
