//! The header names the gateway itself speaks, each spelled once, at the
//! bottom of the stack so that every layer (the configuration's checks
//! included) names the same constant: the contract's headers, the
//! forwarding headers it sets for the upstream, and the hop-by-hop names
//! `http::header` has no constant for. Names only; the rules that use
//! them live with their layer (`proxy::headers` for what crosses to and
//! from an upstream).

use http::HeaderName;

/// The contract code of a refusal (shared/DESIGN.md). Only the gateway
/// speaks with it: removed from every upstream's response.
pub const ERROR_HEADER: &str = "x-portcullis-error";
/// [`ERROR_HEADER`] as a name: looked up without being parsed again.
pub const ERROR: HeaderName = HeaderName::from_static(ERROR_HEADER);

/// The request id, on every answer and every upstream request.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// [`REQUEST_ID_HEADER`] as a name, for lookups and the gateway's own replies.
pub const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// Seconds an access token has left, on answers near its end.
pub const TOKEN_EXPIRES_IN_HEADER: &str = "x-token-expires-in";
/// [`TOKEN_EXPIRES_IN_HEADER`] as a name: removed without being parsed again.
pub const TOKEN_EXPIRES_IN: HeaderName = HeaderName::from_static(TOKEN_EXPIRES_IN_HEADER);

/// A backend's request to end its user's sessions, honoured on routes with
/// `session_control = true`; never reaches a client.
pub const SESSION_CONTROL_HEADER: &str = "x-portcullis-session-control";
/// [`SESSION_CONTROL_HEADER`] as a name.
pub const SESSION_CONTROL: HeaderName = HeaderName::from_static(SESSION_CONTROL_HEADER);
/// The contract code of a request over its route's rate limit or a
/// throttled login (429, with `Retry-After`).
pub const RATE_LIMITED: &str = "rate_limited";
/// The policy a limited route applies (draft-ietf-httpapi-ratelimit-headers).
pub const RATE_LIMIT_POLICY_HEADER: &str = "ratelimit-policy";
/// What is left of it for this caller (the same draft).
pub const RATE_LIMIT_HEADER: &str = "ratelimit";
/// [`RATE_LIMIT_POLICY_HEADER`] as a name, for the gateway's own replies.
pub const RATE_LIMIT_POLICY: HeaderName = HeaderName::from_static(RATE_LIMIT_POLICY_HEADER);
/// [`RATE_LIMIT_HEADER`] as a name.
pub const RATE_LIMIT: HeaderName = HeaderName::from_static(RATE_LIMIT_HEADER);

/// The default of `[sessions] csrf_header`.
pub const CSRF_HEADER: &str = "x-portcullis-csrf";

/// The default header of an upstream's signed identity assertion.
pub const ASSERTION_HEADER: &str = "x-portcullis-assertion";

/// A login's device label when the body names none.
pub const DEVICE_NAME_HEADER: &str = "x-device-name";

// The defaults of `[identity]`: where the verified identity goes upstream.
pub const USER_ID_HEADER: &str = "x-user-id";
pub const USER_ROLES_HEADER: &str = "x-user-roles";
pub const USER_SCOPES_HEADER: &str = "x-user-scopes";
pub const SESSION_ID_HEADER: &str = "x-session-id";

/// The default of `[identity] credential`: which kind of credential the
/// request was let in with (`token` or `api_key`).
pub const USER_CREDENTIAL_HEADER: &str = "x-user-credential";

/// Where a client presents an API key (or `Authorization: ApiKey …`);
/// never forwarded upstream.
pub const API_KEY_HEADER: &str = "x-api-key";

// The defaults of `[login]`: where the login backend names the user.
pub const LOGIN_SUBJECT_HEADER: &str = "x-auth-subject";
pub const LOGIN_ROLES_HEADER: &str = "x-auth-roles";
pub const LOGIN_CLAIMS_HEADER: &str = "x-auth-claims";

// The forwarding headers. The engine copies and parses an inserted name
// whatever its type; a `&'static str` is the cheapest to hand it.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
pub const X_FORWARDED_HOST: &str = "x-forwarded-host";
/// RFC 7239.
pub const FORWARDED: &str = "forwarded";
pub const X_REAL_IP: &str = "x-real-ip";

/// Forwarding headers the gateway writes itself and never takes from a
/// client (the request id with them).
pub const FORWARDING: [&str; 6] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    FORWARDED,
    X_REAL_IP,
    REQUEST_ID_HEADER,
];

// Hop-by-hop names (RFC 9110 §7.6.1, RFC 9113 §3.2.1) without a constant
// in `http::header`.
pub const KEEP_ALIVE: &str = "keep-alive";
pub const PROXY_CONNECTION: &str = "proxy-connection";
pub const HTTP2_SETTINGS: &str = "http2-settings";

/// Headers that ask a backend to run another method than the request's
/// own. Refused on routes with `methods` (`proxy::method_override`).
pub const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
