//! `match = "legacy"` routes against the spellings a Windows-era backend
//! reads as another path: NTFS alternate data streams (the IIS
//! directory-authentication bypass, `/admin::$DATA/x`), 8.3 short names,
//! double encoding and non-ASCII lookalikes. Each is refused with 400
//! before routing can hand a protected prefix to its `/` neighbour, and the
//! upstream receives nothing.

use crate::support::gateway::config_with_routes;
use crate::support::*;

const LEGACY_ROUTES: &str = r#"
[[routes]]
path = "/"
upstream = "echo"
auth = "none"
match = "legacy"

[[routes]]
path = "/admin"
upstream = "echo"
auth = "required"
match = "legacy"

[[routes]]
path = "/secretarea"
upstream = "echo"
auth = "required"
match = "legacy"
"#;

/// Each of these reaches `/admin` (or `/secretarea`) on IIS or through
/// NTFS, while the gateway would otherwise judge it by the public `/`
/// route.
#[test]
fn legacy_routes_refuse_streams_short_names_double_encoding_and_lookalikes() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&config_with_routes(upstream.addr, LEGACY_ROUTES));
    for target in [
        // NTFS alternate data streams: `admin::$DATA` is the directory `admin`.
        "/admin::$DATA/x",
        "/admin:$i30:$INDEX_ALLOCATION/x",
        "/admin%3a%3a$DATA/x",
        "/admin%3A%3A%24DATA/x",
        "/ADMIN::$data/x",
        "/admin:/x",
        "/x/c:/windows",
        // 8.3 short names: `SECRET~1` is `secretarea`.
        "/SECRET~1/x",
        "/secret%7E1/x",
        // Double encoding: `%252e` is `.` to a backend that decodes twice.
        "/admin%252e/x",
        "/admin%252fx",
        "/%2561dmin/x",
        // Non-ASCII that Windows may fold onto ASCII: dotless ı, fullwidth Ａ.
        "/adm%C4%B1n/x",
        "/%EF%BC%A1dmin/x",
        "/%EF%BD%81dmin/x",
    ] {
        eprintln!("case {target}");
        upstream.clear();
        assert_refused(
            &get(gateway.addr, target, &[]),
            400,
            "invalid_request",
            &upstream,
        );
    }
    // Still served: plain paths, a `~` not before a digit, other escapes.
    for target in ["/docs/file.txt", "/~user/x", "/a%22b", "/a%3Bb"] {
        let response = get(gateway.addr, target, &[]);
        assert_eq!(response.status, 200, "{target}: {}", response.text());
    }
}

/// The refusal belongs to the host's table, not to the route a path falls
/// on: with a legacy `/admin` beside a standard public `/`, the stream
/// spelling falls on `/`, yet the Windows backend behind it would read
/// `/admin/x`.
#[test]
fn a_standard_neighbour_of_a_legacy_route_refuses_its_spellings_too() {
    let upstream = EchoUpstream::start();
    let routes = r#"
[[routes]]
path = "/"
upstream = "echo"
auth = "none"

[[routes]]
path = "/admin"
upstream = "echo"
auth = "required"
match = "legacy"
"#;
    let gateway = TestGateway::start(&config_with_routes(upstream.addr, routes));
    for target in [
        "/admin::$DATA/x",
        "/ADMIN%3A%3A$DATA/x",
        "/adm%C4%B1n/x",
        "/x/a:b",
    ] {
        upstream.clear();
        assert_refused(
            &get(gateway.addr, target, &[]),
            400,
            "invalid_request",
            &upstream,
        );
    }
    let response = get(gateway.addr, "/docs/file.txt", &[]);
    assert_eq!(response.status, 200, "{}", response.text());
}

/// A standard route keeps comparing byte for byte and passes these
/// spellings on: the refusal is the legacy mode's, for backends that read
/// them as another path.
#[test]
fn standard_routes_pass_colons_and_escapes_unchanged() {
    let upstream = EchoUpstream::start();
    let routes = r#"
[[routes]]
path = "/"
upstream = "echo"
auth = "none"
"#;
    let gateway = TestGateway::start(&config_with_routes(upstream.addr, routes));
    for target in ["/a:b/x", "/SECRET~1/x", "/a%252e", "/%C4%B1"] {
        upstream.clear();
        let response = get(gateway.addr, target, &[]);
        assert_eq!(response.status, 200, "{target}: {}", response.text());
        assert_eq!(upstream.only().target, target);
    }
}
