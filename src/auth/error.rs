//! Why a request was refused, as the client contract states it.
//!
//! An `AuthError` is an outcome for the client, not a fault of the gateway:
//! each variant knows its status, its contract code (shared/DESIGN.md) and a
//! static reason used as a log and metric label. Descriptions are generic on
//! purpose: no key material and no library error text reach a client.

use http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token on a route that needs one (RFC 6750 §3.1: no error code).
    #[error("no bearer token")]
    Missing,
    /// Two tokens, a token in the query string, or a malformed `Bearer` header.
    #[error("malformed request: {0}")]
    InvalidRequest(&'static str),
    /// Bad signature, wrong iss/aud/typ/alg, unknown kid, malformed token.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// Past `exp` plus the leeway.
    #[error("token expired")]
    Expired,
    /// The token's jti was revoked, its `ver` is below the user's version, or
    /// it was issued before the user's cut-off.
    #[error("token revoked")]
    Revoked,
    /// The user is known but no longer allowed in.
    #[error("account disabled")]
    Disabled,
    /// The revocation view is not fresh and the store cannot answer: fail closed.
    #[error("authentication state unavailable")]
    Unavailable,
    /// The route needs a role or scope the token lacks.
    #[error("insufficient scope")]
    InsufficientScope { required: String },
    /// The route needs a login at most `max_age` seconds old (RFC 9470).
    #[error("reauthentication required")]
    ReauthenticationRequired { max_age: u64 },
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Missing
            | Self::Invalid(_)
            | Self::Expired
            | Self::Revoked
            | Self::ReauthenticationRequired { .. } => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::InsufficientScope { .. } | Self::Disabled => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `error` field of the body and the `X-Portcullis-Error` header.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::InvalidRequest(_) => "invalid_request",
            Self::Invalid(_) => "token_invalid",
            Self::Expired => "token_expired",
            Self::Revoked => "token_revoked",
            Self::Disabled => "account_disabled",
            Self::Unavailable => "auth_unavailable",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::ReauthenticationRequired { .. } => "reauthentication_required",
        }
    }

    /// A short label for logs and metrics; never shown to clients.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::InvalidRequest(reason) | Self::Invalid(reason) => reason,
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::Disabled => "disabled",
            Self::Unavailable => "unavailable",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::ReauthenticationRequired { .. } => "reauthentication_required",
        }
    }

    /// The generic, human-readable `error_description`.
    pub fn description(&self) -> &'static str {
        match self {
            Self::Missing => "a bearer token is required",
            Self::InvalidRequest(_) => "the request is malformed",
            Self::Invalid(_) => "the access token is invalid",
            Self::Expired => "the access token has expired",
            Self::Revoked => "the access token has been revoked",
            Self::Disabled => "the account is disabled",
            Self::Unavailable => "authentication is temporarily unavailable",
            Self::InsufficientScope { .. } => "the access token lacks a required role or scope",
            Self::ReauthenticationRequired { .. } => "a more recent login is required",
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3), if the answer takes one.
    pub fn challenge(&self, realm: &str) -> Option<String> {
        Some(match self {
            Self::Disabled | Self::Unavailable => return None,
            Self::Missing => format!("Bearer realm=\"{realm}\""),
            Self::InvalidRequest(_) => format!("Bearer realm=\"{realm}\", error=\"invalid_request\""),
            Self::Invalid(_) => format!("Bearer realm=\"{realm}\", error=\"invalid_token\""),
            Self::Expired => format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"token expired\""
            ),
            Self::Revoked => format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"token revoked\""
            ),
            Self::InsufficientScope { required } => format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{required}\""
            ),
            // RFC 9470 §3: `max_age` tells the client how recent the new
            // login must be.
            Self::ReauthenticationRequired { max_age } => format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_user_authentication\", \
                 error_description=\"a more recent login is required\", max_age={max_age}"
            ),
        })
    }
}
