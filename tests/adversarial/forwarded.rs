//! A trusted peer's forwarding headers listing thousands of hops: the
//! gateway reads a bounded number from the right, so the work per request
//! and the `X-Forwarded-For` sent upstream stay bounded.

use crate::support::gateway::config_with_routes;
use crate::support::*;

/// portcullis reads at most this many hops (`client_addr::MAX_FORWARDED_HOPS`).
const BOUND: usize = 64;

/// 3,000 trusted hops after the client: only the rightmost 64 are read;
/// the leftmost of them counts as the client (every hop read was trusted),
/// and the upstream gets those 64 and the peer, not 3,001 addresses.
#[test]
fn thousands_of_trusted_hops_are_cut_to_the_documented_bound() {
    let upstream = EchoUpstream::start();
    let routes = "\n[[routes]]\npath = \"/public\"\nupstream = \"echo\"\nauth = \"none\"\n";
    let gateway = TestGateway::start_with_server(
        &config_with_routes(upstream.addr, routes),
        "trusted_proxies = [\"127.0.0.0/8\", \"10.0.0.0/8\"]",
    );
    let mut hops = vec!["198.51.100.7".to_owned()];
    hops.extend((0..3000).map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1)));
    for (name, value) in [
        ("X-Forwarded-For", hops.join(", ")),
        (
            "Forwarded",
            hops.iter()
                .map(|hop| format!("for={hop}"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ] {
        upstream.clear();
        let header = format!("{name}: {value}");
        let response = get(gateway.addr, "/public/a", &[&header]);
        assert_eq!(response.status, 200, "{name}: {}", response.text());
        let seen = upstream.only();
        let forwarded: Vec<&str> = seen.values("x-forwarded-for")[0].split(", ").collect();
        let mut expected: Vec<&str> = hops[hops.len() - BOUND..]
            .iter()
            .map(String::as_str)
            .collect();
        expected.push("127.0.0.1");
        assert_eq!(forwarded, expected, "{name}");
    }
}

/// The whole `X-Forwarded-*` family describes the hop, and only the
/// gateway does: frameworks build redirects and links from
/// `X-Forwarded-Prefix`, `-Port` and `-Ssl`, and some servers take the
/// path from `X-Original-URL` or `X-Rewrite-URL`. A client's are removed
/// on every route; the upstream gets none of them.
#[test]
fn a_clients_forwarding_family_and_path_overrides_never_reach_the_upstream() {
    let upstream = EchoUpstream::start();
    let gateway = TestGateway::start(&standard_config(upstream.addr));
    let sent = [
        ("X-Forwarded-Prefix", "//evil.example"),
        ("x-forwarded-port", "1"),
        ("X-Forwarded-Ssl", "on"),
        ("X-Forwarded-Scheme", "https"),
        ("X-Original-URL", "/admin"),
        ("x-rewrite-url", "/admin"),
    ];
    let lines: Vec<String> = sent.iter().map(|(n, v)| format!("{n}: {v}")).collect();
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let response = get(gateway.addr, "/public", &lines);
    assert_eq!(response.status, 200, "{}", response.text());
    let seen = upstream.only();
    for (name, _) in sent {
        assert!(seen.folded(name).is_empty(), "{name} reached the upstream");
    }
    // The gateway's own description of the hop still goes up.
    assert_eq!(seen.folded("x-forwarded-for").len(), 1);
}
