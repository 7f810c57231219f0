//! The engine settings a deployment may change: with each, the gateway
//! still proxies, authenticates and refuses exactly as with the defaults.

use crate::support::{assert_refused, bearer, claims, get, sign, standard_config};
use crate::support::{EchoUpstream, TestGateway};

/// `work_stealing = false` gives each worker thread its own runtime
/// (measured in the load benchmark); a keep-alive connection, a verified
/// token and a refusal behave as with the default.
#[test]
fn a_gateway_without_work_stealing_serves_and_refuses_as_usual() {
    let upstream = EchoUpstream::start();
    let gateway =
        TestGateway::start_with_server(&standard_config(upstream.addr), "work_stealing = false");
    let refused = get(gateway.addr, "/orders", &[]);
    assert_refused(&refused, 401, "token_missing", &upstream);
    let token = sign("test-eddsa", &claims("alice"));
    for _ in 0..3 {
        let ok = get(gateway.addr, "/orders", &[&bearer(&token)]);
        assert_eq!(ok.status, 200);
    }
    let seen = upstream.requests();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|r| r.values("x-user-id") == ["alice"]));
}
