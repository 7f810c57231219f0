//! This round's headers over HTTP/2 (TLS, ALPN), as a client would forge
//! them: the assertion header, the credential kind, an API key on a route
//! that takes none, and an API key in the query. Each is stripped or
//! refused exactly as over HTTP/1.1, and nothing forged reaches the
//! upstream.

use crate::support::*;

/// Forged assertion, credential kind and API key, in plain and `_`
/// spellings, on a public route: the upstream sees none of them.
#[test]
fn http2_forged_backend_headers_never_reach_the_upstream() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(&standard_config(upstream.addr), &tls_listener());
    let headers = [
        "--http2",
        "-H",
        "X-Portcullis-Assertion: eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
        "-H",
        "x_portcullis_assertion: forged",
        "-H",
        "X-User-Credential: api_key",
        "-H",
        "X-Api-Key: pck_0123456789abcdef_forged",
    ];
    let answer = curl_https(
        gateway.addr.port(),
        "/public",
        "%{http_version} %{http_code}",
        &headers,
    );
    assert_eq!(answer, "2 200");
    let seen = upstream.only();
    for name in ["x-portcullis-assertion", "x-user-credential", "x-api-key"] {
        assert!(
            seen.folded(name).is_empty(),
            "{name} reached the upstream: {seen:?}"
        );
    }

    // With a token, the credential kind is the gateway's, not the client's.
    upstream.clear();
    let token = bearer(&sign("test-eddsa", &claims("alice")));
    let headers = ["--http2", "-H", &token, "-H", "X-User-Credential: api_key"];
    let answer = curl_https(
        gateway.addr.port(),
        "/api/x",
        "%{http_version} %{http_code}",
        &headers,
    );
    assert_eq!(answer, "2 200");
    assert_eq!(upstream.only().values("x-user-credential"), ["token"]);
}

/// An API key in the query string is refused over HTTP/2 too, with the
/// contract's code, before anything is forwarded.
#[test]
fn http2_an_api_key_in_the_query_is_refused() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start_with_server(&standard_config(upstream.addr), &tls_listener());
    for target in [
        "/public?api_key=pck_x",
        "/public?X-Api-Key=pck_x",
        "/public?apikey=pck_x",
    ] {
        let answer = curl_https(
            gateway.addr.port(),
            target,
            "%{http_version} %{http_code} %header{x-portcullis-error}",
            &["--http2"],
        );
        assert_eq!(answer, "2 400 invalid_request", "{target}");
    }
    assert!(upstream.requests().is_empty(), "{:?}", upstream.requests());
}
