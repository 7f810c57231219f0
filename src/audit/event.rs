//! What the audit trail records: a request's decision and an admin
//! action, as borrowed fields with no free text, and the names their
//! values take in a line.

use std::net::IpAddr;

/// The audit lines' name where they share a stream with the log (stderr):
/// every line carries it as `"target"`, as the JSON log's lines do.
pub const AUDIT_TARGET: &str = "portcullis::audit";

/// How the client proved who it is, as the line names it. New kinds are
/// added as the gateway learns them (`api_key` with API keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// Nothing the gateway looked at (a public route, no token sent).
    None,
    /// A bearer access token.
    Token,
    /// A refresh token or the session cookie (the session endpoints).
    Session,
    /// An API key (the route must accept keys).
    ApiKey,
}

/// The gateway's answer to whether a request may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Refused,
}

impl Credential {
    /// Its name in a line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Token => "token",
            Self::Session => "session",
            Self::ApiKey => "api_key",
        }
    }
}

impl Verdict {
    /// Its name in a line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Refused => "refused",
        }
    }
}

/// One request's decision. `rule` names what decided it (README's table:
/// `public`, `authenticated`, `requirement`, `token`, `roles`, …) and
/// `missing` what the client lacked (the roles, scopes or claims).
#[derive(Debug, Clone)]
pub struct Decision<'a> {
    pub request_id: &'a str,
    /// The client through the trusted proxies (`[server] trusted_proxies`).
    pub client: Option<IpAddr>,
    pub subject: Option<&'a str>,
    pub credential: Credential,
    /// The route's name, one of the gateway's endpoints, or `_unrouted`.
    pub route: &'a str,
    pub method: &'a str,
    pub decision: Verdict,
    /// `ok`, or the contract code the client got.
    pub code: &'a str,
    pub rule: &'a str,
    /// Written only when not empty.
    pub missing: &'a [&'a str],
    /// The request's trace (`[tracing]`), written only when it has one.
    pub trace_id: Option<&'a str>,
}

/// One admin action: who asked (the admin caller's address), what, on
/// what, and how it ended.
#[derive(Debug, Clone)]
pub struct AdminAction<'a> {
    /// The admin request's id; `None` for a reload by SIGHUP.
    pub request_id: Option<&'a str>,
    /// `admin_api` or `sighup`.
    pub source: &'a str,
    /// The admin API's peer; `None` for a reload by SIGHUP.
    pub caller: Option<IpAddr>,
    /// `token_revoke`, `user_revoke`, `user_disable`, `user_enable`,
    /// `session_issue`, `session_end`, `reload` (API keys add theirs).
    pub action: &'a str,
    /// The subject, session id or token id acted on; never a token.
    pub resource: Option<&'a str>,
    /// `ok`, or the contract code of the refusal.
    pub outcome: &'a str,
}
