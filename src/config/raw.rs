//! The raw configuration layer: serde types that mirror the TOML file.
//!
//! Every table denies unknown keys so a typo fails with the toml crate's own
//! message. Values that later cross-checks refer to are `Spanned`, so those
//! errors can point at a line and column too. Nothing here is validated
//! beyond its type; `compile` does that.

pub mod audit;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::duration::HumanDuration;
use crate::vocabulary::{
    CSRF_HEADER, LOGIN_CLAIMS_HEADER, LOGIN_ROLES_HEADER, LOGIN_SUBJECT_HEADER, SESSION_ID_HEADER,
    USER_CREDENTIAL_HEADER, USER_ID_HEADER, USER_ROLES_HEADER, USER_SCOPES_HEADER,
};

/// What to do when the view cannot be confirmed fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnUnavailable {
    /// Refuse with 503 `auth_unavailable` (fail closed).
    Deny,
    /// Decide on what the view holds; a user not in it still gets 503.
    AllowCached,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub tokens: Spanned<RawTokens>,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub sessions: RawSessions,
    pub login: Option<RawLogin>,
    #[serde(default)]
    pub identity: RawIdentity,
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub upstreams: Vec<RawUpstream>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Cross-origin browser access to every route and to `/auth/*`.
    #[serde(default)]
    pub cors: RawCors,
    /// Rate-limit policies, named by routes (`rate_limit = "NAME"`).
    #[serde(default)]
    pub rate_limits: Vec<RawRateLimit>,
    /// OpenTelemetry traces (`config::traces`).
    #[serde(default)]
    pub tracing: RawTracing,
    /// `[audit]`: the decision trail.
    #[serde(default)]
    pub audit: audit::RawAudit,
}

/// `[[rate_limits]]`: a GCRA policy (`store::rate_limit`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub name: Spanned<String>,
    /// `"100/m"`: requests per second (`s`), minute (`m`), hour (`h`) or day (`d`).
    pub rate: Spanned<String>,
    /// Requests that may arrive at once; default: the rate's count.
    pub burst: Option<Spanned<u64>>,
    /// Whom one limit counts.
    #[serde(default)]
    pub key: RateLimitKey,
    /// A token with any of these roles is not limited.
    #[serde(default)]
    pub roles: Vec<String>,
    /// A token with any of these scopes is not limited.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// What decides while the shared store cannot.
    #[serde(default)]
    pub on_unavailable: RateLimitFallback,
}

/// What a rate limit does while the shared store cannot decide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitFallback {
    /// This instance's own limit: looser (one limit per instance) but
    /// never lifted, and never a refusal of everyone.
    #[default]
    Local,
    /// 503 `auth_unavailable`: the operator asked for the outage to stop
    /// the limited routes rather than loosen their limit.
    Deny,
}

/// What a rate limit counts requests by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitKey {
    /// The verified `sub`; the client address when no token was presented.
    #[default]
    Subject,
    /// The client address, as resolved through `trusted_proxies`.
    Client,
    /// Every caller of the route together.
    Route,
}

/// `[cors]`, and a route's `cors` table: each key a route sets overrides
/// the global one. Defaults are applied in `compile`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    /// Exact origins (`https://app.example.com`), or `"*"` without credentials.
    pub allowed_origins: Option<Vec<Spanned<String>>>,
    pub allow_credentials: Option<Spanned<bool>>,
    pub allowed_methods: Option<Vec<Spanned<String>>>,
    pub allowed_headers: Option<Vec<Spanned<String>>>,
    /// How long a browser may cache a preflight answer.
    pub max_age: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Vec<Spanned<String>>,
    pub admin_listen: Spanned<String>,
    pub admin_token_env: String,
    /// A file holding the admin token, used when the variable is not set.
    pub admin_token_file: Option<Spanned<PathBuf>>,
    /// Worker threads of the proxy; 0 means one per core.
    pub threads: usize,
    /// `WWW-Authenticate` realm.
    pub realm: String,
    /// After SIGTERM, how long the listeners keep accepting before shutdown.
    pub shutdown_grace: HumanDuration,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub shutdown_timeout: HumanDuration,
    /// Largest bearer token accepted, in bytes.
    pub max_token_bytes: usize,
    /// Idle upstream connections kept for reuse, per proxy thread.
    pub upstream_keepalive_pool: usize,
    /// TLS on every `listen` address, with HTTP/2 offered by ALPN.
    pub tls: Option<RawTls>,
    /// Peers (CIDRs) whose `X-Forwarded-For` / `Forwarded` are believed.
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Every `listen` address expects a PROXY protocol v1 or v2 header.
    pub proxy_protocol: Spanned<bool>,
    /// A request's header (and a PROXY header) must arrive within this.
    pub header_read_timeout: HumanDuration,
    /// An idle keep-alive connection is closed after this.
    pub keepalive_timeout: HumanDuration,
    /// The share (0.0 to 1.0) of successful requests given an access log
    /// line; refusals and failures are always logged.
    pub access_log_sample: Spanned<f64>,
    /// The engine's work-stealing runtime (one shared queue for all
    /// worker threads) rather than one runtime per thread.
    pub work_stealing: bool,
    /// Request headers named with `_`: drop (default), reject or allow.
    pub headers_with_underscores: HeadersWithUnderscores,
}

/// What the gateway does with a request header whose name has `_` in it
/// (`[server] headers_with_underscores`). Servers that follow CGI (WSGI,
/// PHP, some Java stacks) read `_` as `-`, so `X_User_Id` may reach them
/// as `X-User-Id`; nginx drops such headers by default, Envoy lets the
/// operator pick the same three answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadersWithUnderscores {
    /// Remove the header and forward the rest (nginx's default).
    #[default]
    Drop,
    /// Refuse the request: 400 `invalid_request`.
    Reject,
    /// Forward it unchanged (a name that folds to a framing, routing or
    /// forwarding header is refused whatever this says).
    Allow,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain.
    pub cert: Spanned<PathBuf>,
    /// PEM private key.
    pub key: Spanned<PathBuf>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: vec![Spanned::new(0..0, "0.0.0.0:8080".to_owned())],
            admin_listen: Spanned::new(0..0, "127.0.0.1:9090".to_owned()),
            admin_token_env: "PORTCULLIS_ADMIN_TOKEN".to_owned(),
            admin_token_file: None,
            threads: 0,
            realm: "portcullis".to_owned(),
            shutdown_grace: HumanDuration::from_secs(5),
            shutdown_timeout: HumanDuration::from_secs(10),
            max_token_bytes: 8192,
            upstream_keepalive_pool: 128,
            tls: None,
            trusted_proxies: Vec::new(),
            proxy_protocol: Spanned::new(0..0, false),
            header_read_timeout: HumanDuration::from_secs(10),
            keepalive_timeout: HumanDuration::from_secs(60),
            access_log_sample: Spanned::new(0..0, 1.0),
            work_stealing: true,
            headers_with_underscores: HeadersWithUnderscores::Drop,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// `sqlite://PATH` (relative to the config file) or `redis://HOST:PORT/DB`.
    pub url: Spanned<String>,
    /// A revocation reaches every instance within this; an instance that
    /// cannot confirm it is that fresh answers per `on_unavailable`.
    pub max_staleness: HumanDuration,
    pub on_unavailable: OnUnavailable,
    /// User records cached per instance.
    pub user_cache_entries: u64,
    /// Entries the change log keeps; an instance further behind resyncs.
    pub change_log_entries: u64,
    /// Redis: keys are named `{key_prefix}:…` (one Cluster hash slot);
    /// unset keeps `portcullis:…` on one server or Sentinel.
    pub key_prefix: Option<Spanned<String>>,
    /// Redis: replicas that must confirm a durable write (`WAIT`).
    pub min_replicas: u32,
    /// Redis: how long a durable write waits for them.
    pub replica_timeout: HumanDuration,
    /// Rate-limit keys kept in this instance's memory (the embedded
    /// store's limits, and every store's fallback); the least used go first.
    pub rate_limit_entries: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: Spanned::new(0..0, "sqlite://portcullis.db".to_owned()),
            max_staleness: HumanDuration::from_secs(1),
            on_unavailable: OnUnavailable::Deny,
            user_cache_entries: 1_000_000,
            change_log_entries: 100_000,
            key_prefix: None,
            min_replicas: 0,
            replica_timeout: HumanDuration::from_secs(1),
            rate_limit_entries: 100_000,
        }
    }
}

/// An external identity provider whose tokens the gateway accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub issuer: Spanned<String>,
    pub audience: String,
    /// Where the provider publishes its keys (RFC 7517).
    pub jwks_url: Option<Spanned<String>>,
    /// Or keys given here, like `[[tokens.keys]]`.
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// Accepted `typ` header values; `[]` accepts any, or none.
    #[serde(default = "default_external_typ")]
    pub typ: Vec<String>,
    /// Claims a token must carry, among sub, exp, iat, jti, nbf.
    #[serde(default = "default_external_claims")]
    pub required_claims: Vec<Spanned<String>>,
    /// How long a JWKS is used when its answer has no `Cache-Control: max-age`.
    #[serde(default = "default_jwks_ttl")]
    pub cache_ttl: HumanDuration,
    /// At most one refetch per this for tokens with an unknown `kid`.
    #[serde(default = "default_unknown_kid_cooldown")]
    pub unknown_kid_cooldown: HumanDuration,
}

fn default_external_typ() -> Vec<String> {
    vec!["at+jwt".to_owned(), "application/at+jwt".to_owned()]
}
fn default_external_claims() -> Vec<Spanned<String>> {
    ["sub", "exp", "iat"]
        .iter()
        .map(|c| Spanned::new(0..0, (*c).to_owned()))
        .collect()
}
fn default_jwks_ttl() -> HumanDuration {
    HumanDuration::from_secs(600)
}
fn default_unknown_kid_cooldown() -> HumanDuration {
    HumanDuration::from_secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSessions {
    pub refresh_ttl: HumanDuration,
    pub max_age: HumanDuration,
    pub reuse_grace: HumanDuration,
    /// Failures of one refresh token per `failure_window` before 429.
    pub max_failures: u32,
    pub failure_window: HumanDuration,
    /// Browser mode: the refresh token in an HttpOnly cookie, not the body.
    pub cookie: bool,
    pub cookie_name: String,
    pub allowed_origins: Vec<String>,
    pub csrf_header: Spanned<String>,
}

impl Default for RawSessions {
    fn default() -> Self {
        Self {
            refresh_ttl: HumanDuration::from_secs(7 * 24 * 3600),
            max_age: HumanDuration::from_secs(72 * 3600),
            reuse_grace: HumanDuration::from_secs(10),
            max_failures: 10,
            failure_window: HumanDuration::from_secs(60),
            cookie: false,
            cookie_name: "portcullis_refresh".to_owned(),
            allowed_origins: Vec::new(),
            csrf_header: Spanned::new(0..0, CSRF_HEADER.to_owned()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogin {
    pub upstream: Spanned<String>,
    pub path: Spanned<String>,
    #[serde(default = "default_subject_header")]
    pub subject_header: Spanned<String>,
    #[serde(default = "default_roles_header")]
    pub roles_header: Spanned<String>,
    #[serde(default = "default_claims_header")]
    pub claims_header: Spanned<String>,
    #[serde(default = "default_login_timeout")]
    pub timeout: HumanDuration,
    /// Failed logins slow down (`session::login_throttle`).
    #[serde(default = "default_true")]
    pub throttle: bool,
    /// Failures of one user name from one address before delays start.
    #[serde(default = "default_throttle_failures")]
    pub throttle_failures: Spanned<u32>,
    /// Failures from one address, whatever the user name, before delays start.
    #[serde(default = "default_throttle_address_failures")]
    pub throttle_address_failures: Spanned<u32>,
    /// The first delay; each further failure doubles it.
    #[serde(default = "default_throttle_delay")]
    pub throttle_delay: Spanned<HumanDuration>,
    #[serde(default = "default_throttle_max_delay")]
    pub throttle_max_delay: Spanned<HumanDuration>,
    /// Failures are forgotten this long after the last one.
    #[serde(default = "default_throttle_window")]
    pub throttle_window: Spanned<HumanDuration>,
    /// The form or JSON field that names the user.
    #[serde(default = "default_throttle_username_field")]
    pub throttle_username_field: Spanned<String>,
}

fn default_true() -> bool {
    true
}
fn default_throttle_failures() -> Spanned<u32> {
    Spanned::new(0..0, 5)
}
fn default_throttle_address_failures() -> Spanned<u32> {
    Spanned::new(0..0, 20)
}
fn default_throttle_delay() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::from_secs(1))
}
fn default_throttle_max_delay() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::from_secs(15 * 60))
}
fn default_throttle_window() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::from_secs(3600))
}
fn default_throttle_username_field() -> Spanned<String> {
    Spanned::new(0..0, "username".to_owned())
}

fn default_subject_header() -> Spanned<String> {
    Spanned::new(0..0, LOGIN_SUBJECT_HEADER.to_owned())
}
fn default_roles_header() -> Spanned<String> {
    Spanned::new(0..0, LOGIN_ROLES_HEADER.to_owned())
}
fn default_claims_header() -> Spanned<String> {
    Spanned::new(0..0, LOGIN_CLAIMS_HEADER.to_owned())
}
fn default_login_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokens {
    pub issuer: String,
    pub audience: String,
    #[serde(default = "default_access_ttl")]
    pub access_ttl: HumanDuration,
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    #[serde(default = "default_refresh_hint")]
    pub refresh_hint: HumanDuration,
    /// Tokens claiming a longer lifetime (`exp - iat`), or expiring later
    /// than this from now, are refused; admin revocations are bounded by it.
    #[serde(default = "default_max_token_lifetime")]
    pub max_token_lifetime: HumanDuration,
    pub signing_key: Option<Spanned<String>>,
    /// Entries in the verified-token cache.
    #[serde(default = "default_verified_cache_entries")]
    pub verified_cache_entries: u64,
    #[serde(default)]
    pub keys: Vec<RawKey>,
}

fn default_access_ttl() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn default_leeway() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_refresh_hint() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_max_token_lifetime() -> HumanDuration {
    HumanDuration::from_secs(24 * 3600)
}
fn default_verified_cache_entries() -> u64 {
    100_000
}

/// The algorithms a key may be pinned to (RFC 7518 names, accepted in any
/// case: `EdDSA`, `eddsa` and `EDDSA` are one algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    EdDSA,
    ES256,
    RS256,
    HS256,
}

impl KeyAlgorithm {
    pub const ALL: [KeyAlgorithm; 4] = [Self::EdDSA, Self::ES256, Self::RS256, Self::HS256];

    /// The RFC 7518 spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
            Self::HS256 => "HS256",
        }
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown algorithm `{s}`, expected EdDSA, ES256, RS256 or HS256 (any case)")
            })
    }
}

impl<'de> Deserialize<'de> for KeyAlgorithm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub kid: Spanned<String>,
    pub algorithm: KeyAlgorithm,
    /// PKCS#8 PEM; the key signs and verifies.
    pub private_key_file: Option<Spanned<PathBuf>>,
    /// SPKI PEM; the key only verifies.
    pub public_key_file: Option<Spanned<PathBuf>>,
    /// HS256: an environment variable whose bytes are the secret.
    pub secret_env: Option<Spanned<String>>,
    /// HS256: a file whose bytes (trailing newline removed) are the secret.
    pub secret_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIdentity {
    pub subject: Spanned<String>,
    pub roles: Spanned<String>,
    pub scopes: Spanned<String>,
    pub session: Spanned<String>,
    pub claims: BTreeMap<String, Spanned<String>>,
    pub forward_token: bool,
    /// Which credential let the request in: `token` or `api_key`.
    pub credential: Spanned<String>,
}

impl Default for RawIdentity {
    fn default() -> Self {
        let header = |name: &str| Spanned::new(0..0, name.to_owned());
        Self {
            subject: header(USER_ID_HEADER),
            roles: header(USER_ROLES_HEADER),
            scopes: header(USER_SCOPES_HEADER),
            session: header(SESSION_ID_HEADER),
            claims: BTreeMap::new(),
            forward_token: false,
            credential: header(USER_CREDENTIAL_HEADER),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Spanned<String>,
    pub targets: Vec<Spanned<String>>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: HumanDuration,
    #[serde(default = "default_read_timeout")]
    pub write_timeout: HumanDuration,
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// Active HTTP health checks; without it only passive ejection applies.
    pub health_check: Option<RawHealthCheck>,
    /// How long a target that refused a connection is left out.
    #[serde(default = "default_ejection")]
    pub ejection: HumanDuration,
    /// Speak TLS to the targets (certificates are always verified).
    #[serde(default)]
    pub tls: bool,
    /// The name to send as SNI and verify the certificate against;
    /// default: the host of the first target.
    pub sni: Option<String>,
    /// PEM file of the CA certificates to trust instead of the system's.
    pub ca_file: Option<Spanned<PathBuf>>,
    /// PEM certificate chain the gateway presents to targets that ask for
    /// a client certificate (mTLS); needs `client_key` and `tls = true`.
    pub client_cert: Option<Spanned<PathBuf>>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<Spanned<PathBuf>>,
    /// How often target names are resolved again (addresses never are).
    #[serde(default = "default_resolve_interval")]
    pub resolve_interval: Spanned<HumanDuration>,
    /// The backend's own credentials, set in place of the client's
    /// `Authorization` (see `compile::upstream_auth`).
    pub upstream_auth: Option<Spanned<RawUpstreamAuth>>,
    /// A signed identity assertion on every request to this upstream.
    pub assertion: Option<Spanned<RawAssertion>>,
}

/// `upstream_auth = { kind = "fixed", file = … }` or `{ kind =
/// "basic_subject", password_env = … }`: where the secret is, never the
/// secret itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamAuth {
    /// `"fixed"` or `"basic_subject"`.
    pub kind: Spanned<String>,
    /// `fixed`: a file holding the whole `Authorization` value.
    pub file: Option<Spanned<PathBuf>>,
    /// `fixed`: an environment variable holding it.
    pub env: Option<Spanned<String>>,
    /// `basic_subject`: a file holding the password.
    pub password_file: Option<Spanned<PathBuf>>,
    /// `basic_subject`: an environment variable holding it.
    pub password_env: Option<Spanned<String>>,
    /// Refused: a secret written into the configuration. Known here so
    /// that `check` says where secrets go rather than "unknown field".
    pub value: Option<Spanned<toml::Value>>,
    /// Refused, as `value`.
    pub password: Option<Spanned<toml::Value>>,
}

/// `assertion = { audience, header, ttl }`: a JWT the gateway signs for the
/// upstream, so that it can tell the gateway's requests from forged ones
/// (`auth::assertion`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssertion {
    /// The `aud` of the assertion: this upstream's name for itself.
    pub audience: Spanned<String>,
    #[serde(default = "default_assertion_header")]
    pub header: Spanned<String>,
    #[serde(default = "default_assertion_ttl")]
    pub ttl: Spanned<HumanDuration>,
}

fn default_assertion_header() -> Spanned<String> {
    Spanned::new(0..0, crate::vocabulary::ASSERTION_HEADER.to_owned())
}

fn default_assertion_ttl() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::from_secs(60))
}

fn default_resolve_interval() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration::from_secs(5))
}

fn default_ejection() -> HumanDuration {
    HumanDuration::from_secs(10)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// `GET` this path on every target; any 2xx is healthy.
    pub path: Spanned<String>,
    #[serde(default = "default_check_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_check_timeout")]
    pub timeout: HumanDuration,
    /// Consecutive successes before a target is healthy again.
    #[serde(default = "default_threshold")]
    pub healthy_threshold: usize,
    /// Consecutive failures before a target is left out.
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: usize,
}

fn default_check_interval() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_check_timeout() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_threshold() -> usize {
    2
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration::from_secs(2)
}
fn default_read_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_idle_timeout() -> HumanDuration {
    HumanDuration::from_secs(60)
}

/// How a route treats the bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No token is looked at; identity headers are still stripped.
    None,
    /// A missing token is fine; a presented one must be valid.
    Optional,
    /// A valid token is needed.
    Required,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    pub host: Option<Spanned<String>>,
    pub path: Spanned<String>,
    pub upstream: Spanned<String>,
    #[serde(default = "default_auth")]
    pub auth: AuthMode,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Step-up (RFC 9470): the token's `auth_time` must be at most this old.
    pub max_auth_age: Option<Spanned<HumanDuration>>,
    /// The upstream may end its user's sessions with
    /// `X-Portcullis-Session-Control` on a 2xx answer.
    pub session_control: Option<Spanned<bool>>,
    /// `match = "legacy"` for backends that read paths loosely.
    #[serde(default, rename = "match")]
    pub paths: PathMatch,
    /// Overrides `[cors]` keys for this route.
    pub cors: Option<Spanned<RawCors>>,
    /// The name of a `[[rate_limits]]` policy.
    pub rate_limit: Option<Spanned<String>>,
    /// Let in requests that present an API key (`X-Api-Key`).
    pub api_keys: Option<Spanned<bool>>,
    /// Overrides the upstream's `assertion` for this route.
    pub assertion: Option<Spanned<RawAssertion>>,
    /// The assertion names the method and path, signed per request.
    pub assertion_binds_request: Option<Spanned<bool>>,
    /// The request methods this route serves (`GET` implies `HEAD`);
    /// every method when absent. See `config::compile::policy`.
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    /// `claim = [values]`: each claim present and equal to one of them.
    pub require_claims: Option<Spanned<RawClaimConditions>>,
}

/// `require_claims`: claim name → the values it may have.
pub type RawClaimConditions = BTreeMap<String, Spanned<Vec<Spanned<toml::Value>>>>;

/// How a route's prefix is compared with the request path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMatch {
    /// Byte for byte, as RFC 3986 says paths compare.
    #[default]
    Standard,
    /// For backends (IIS and other Windows-era servers) that match paths
    /// case-insensitively and ignore trailing dots and spaces: the prefix
    /// matches in any case, and the spellings such a backend reads as
    /// another path (a trailing `.` or space, `::$DATA` streams, 8.3 short
    /// names, `%25`, escaped non-ASCII; `runtime::path::legacy_ambiguous`)
    /// are refused, so `/ADMIN` or `/admin.` cannot slip past `/admin`.
    Legacy,
}

fn default_auth() -> AuthMode {
    AuthMode::Required
}

/// The one wire format exported: OTLP over HTTP, protobuf bodies. gRPC
/// would bring tonic and a second HTTP/2 stack for the same spans.
pub const HTTP_PROTOBUF: &str = "http/protobuf";

/// `[tracing]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTracing {
    /// Spans are made and exported at all.
    pub enabled: bool,
    /// The OTLP/HTTP traces URL, used as written (`…/v1/traces`).
    pub endpoint: Spanned<String>,
    /// Only `"http/protobuf"`.
    pub protocol: Spanned<String>,
    /// The share (0.0 to 1.0) of new traces recorded.
    pub sample_ratio: Spanned<f64>,
    /// A continued trace follows its parent's sampling decision.
    pub parent_based: bool,
    /// Continue any client's `traceparent`, not only a trusted proxy's.
    pub trust_client_context: bool,
    /// `service.name` of the exported spans.
    pub service_name: Spanned<String>,
    /// Finished spans held for export; past this they are dropped and counted.
    pub queue_size: Spanned<usize>,
}

impl Default for RawTracing {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: Spanned::new(0..0, "http://127.0.0.1:4318/v1/traces".to_owned()),
            protocol: Spanned::new(0..0, HTTP_PROTOBUF.to_owned()),
            sample_ratio: Spanned::new(0..0, 1.0),
            parent_based: true,
            trust_client_context: false,
            service_name: Spanned::new(0..0, "portcullis".to_owned()),
            queue_size: Spanned::new(0..0, 2048),
        }
    }
}
