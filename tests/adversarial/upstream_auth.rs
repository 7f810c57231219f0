//! The backend's own credentials (`upstream_auth`) against a client that
//! tries to choose them: an `Authorization` of its own in any spelling or
//! number, and a subject built to read as another Basic user (RFC 7617 §2:
//! the user name ends at the first `:`). The recording upstream shows
//! exactly what the backend got.

use base64::Engine;
use serde_json::json;

use super::{host, raw};
use crate::support::gateway::config_with_routes;
use crate::support::*;

/// The gateway's value for the `fixed` upstream.
const GATEWAY_VALUE: &str = "Bearer gateway-service-token-0123";

/// `fixed` at `/fixed` (public) and `/fixed-token` (token required),
/// `basic_subject` at `/per-user` (token required) and `/per-user-maybe`
/// (optional), all to the same recording upstream.
fn setup() -> (EchoUpstream, TestGateway, tempfile::TempDir) {
    let upstream = EchoUpstream::start();
    let secrets = tempfile::tempdir().expect("tempdir");
    let fixed = secrets.path().join("fixed");
    let password = secrets.path().join("password");
    std::fs::write(&fixed, GATEWAY_VALUE).expect("secret");
    std::fs::write(&password, "shared-pass").expect("secret");
    let target = upstream.addr;
    let route = |path: &str, name: &str, auth: &str| {
        format!("[[routes]]\npath = \"{path}\"\nupstream = \"{name}\"\nauth = \"{auth}\"\n\n")
    };
    let rest = format!(
        "[[upstreams]]\nname = \"fixed\"\ntargets = [\"{target}\"]\nupstream_auth = {{ kind = \"fixed\", file = \"{}\" }}\n\n[[upstreams]]\nname = \"per-user\"\ntargets = [\"{target}\"]\nupstream_auth = {{ kind = \"basic_subject\", password_file = \"{}\" }}\n\n{}{}{}{}",
        fixed.display(),
        password.display(),
        route("/fixed", "fixed", "none"),
        route("/fixed-token", "fixed", "required"),
        route("/per-user", "per-user", "required"),
        route("/per-user-maybe", "per-user", "optional"),
    );
    let gateway = TestGateway::start(&config_with_routes(upstream.addr, &rest));
    (upstream, gateway, secrets)
}

fn basic(pair: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// However a client spells or repeats `Authorization`, the backend gets
/// the gateway's one value and nothing of the client's.
#[test]
fn a_clients_authorization_in_any_spelling_never_reaches_an_upstream_auth_backend() {
    let (upstream, gateway, _secrets) = setup();
    let theirs = basic("admin:guessed");
    let spellings = [
        format!("Authorization: {theirs}\r\n"),
        format!("authorization: {theirs}\r\n"),
        format!("AUTHORIZATION:\t{theirs}\r\n"),
        format!("Authorization: {theirs}\r\nAuthorization: Bearer x\r\n"),
        "Authorization: Bearer forged-looking-token\r\n".to_owned(),
        "Authorization:\r\n".to_owned(),
    ];
    for headers in spellings {
        upstream.clear();
        let request = format!("{}{headers}\r\n", host("GET /fixed/page HTTP/1.1"));
        let response = raw(gateway.addr, request.as_bytes());
        assert_eq!(response.status, 200, "{headers:?}: {}", response.text());
        assert_eq!(
            upstream.only().values("authorization"),
            [GATEWAY_VALUE],
            "{headers:?}"
        );
    }
}

/// A subject holding a `:` would reach a Basic backend as the user before
/// it (`admin:x` reads as user `admin`): it gets no credentials at all,
/// and the backend refuses it itself. A request without a token on an
/// optional route gets none either, and its own Basic header is gone.
#[test]
fn a_subject_with_a_colon_never_reads_as_another_basic_user() {
    let (upstream, gateway, _secrets) = setup();
    let token = sign("test-eddsa", &claims_with("admin:x", json!({})));
    let response = get(gateway.addr, "/per-user/a", &[&bearer(&token)]);
    assert_eq!(response.status, 200);
    let seen = upstream.only();
    assert_eq!(seen.values("authorization"), Vec::<&str>::new());
    assert_eq!(seen.values("x-user-id"), ["admin:x"]);

    upstream.clear();
    let own = format!("Authorization: {}", basic("admin:shared-pass"));
    let response = get(gateway.addr, "/per-user-maybe/a", &[&own]);
    assert_eq!(response.status, 200);
    assert_eq!(upstream.only().values("authorization"), Vec::<&str>::new());

    // And a plain subject gets its own name with the upstream's password.
    upstream.clear();
    let token = sign("test-eddsa", &claims("alice"));
    assert_eq!(
        get(gateway.addr, "/per-user/a", &[&bearer(&token)]).status,
        200
    );
    assert_eq!(
        upstream.only().values("authorization"),
        [basic("alice:shared-pass").as_str()]
    );
}

/// On a route that needs a token, a client's Basic header alongside a
/// valid bearer token is refused as any second credential is, before the
/// backend sees anything; the token alone passes with the gateway's value.
#[test]
fn a_basic_header_beside_a_token_is_refused_before_the_backend() {
    let (upstream, gateway, _secrets) = setup();
    let token = sign("test-eddsa", &claims("alice"));
    let both = format!(
        "{}Authorization: Bearer {token}\r\nAuthorization: {}\r\n\r\n",
        host("GET /fixed-token/a HTTP/1.1"),
        basic("admin:guessed")
    );
    let response = raw(gateway.addr, both.as_bytes());
    assert_refused(&response, 400, "invalid_request", &upstream);

    let response = get(gateway.addr, "/fixed-token/a", &[&bearer(&token)]);
    assert_eq!(response.status, 200);
    assert_eq!(upstream.only().values("authorization"), [GATEWAY_VALUE]);
}
