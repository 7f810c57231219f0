//! The engine settings a deployment may change: with each, the gateway
//! still proxies, authenticates and refuses exactly as with the defaults.
//! Each runs in a process of its own, as in production: the engine's
//! runtimes are not meant to share a process with other gateways.

use crate::support::binary::RunningGateway;
use crate::support::{assert_refused, bearer, claims, get, sign, EchoUpstream};

/// `work_stealing = false` gives each worker thread its own runtime
/// (measured in the load benchmark); a verified token, a refusal and a
/// public route behave as with the default.
#[test]
fn a_gateway_without_work_stealing_serves_and_refuses_as_usual() {
    let upstream = EchoUpstream::start();
    let gateway = RunningGateway::standard(upstream.addr)
        .server("shutdown_grace = \"0s\"\nwork_stealing = false")
        .start();
    let addr = gateway.addr;
    let refused = get(addr, "/orders", &[]);
    assert_refused(&refused, 401, "token_missing", &upstream);
    let token = sign("test-eddsa", &claims("alice"));
    for _ in 0..3 {
        let ok = get(addr, "/orders", &[&bearer(&token)]);
        assert_eq!(ok.status, 200);
    }
    assert_eq!(get(addr, "/public/page", &[]).status, 200);
    drop(gateway);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 4);
    assert!(seen[..3].iter().all(|r| r.values("x-user-id") == ["alice"]));
}
