//! Sessions the gateway serves itself: issuing token pairs at login,
//! refresh with rotation and reuse detection, logout, devices, the
//! refresh cookie, and session control from the backend.
//!
//! Nothing here knows pingora: the proxy parses requests and writes
//! responses, this module decides against the [`Store`](crate::store::Store).

pub mod control;
pub mod cookie;
pub mod devices;
pub mod grant;
pub mod login_throttle;
pub mod ratelimit;
pub mod secrets;
pub mod service;
pub mod subject;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use control::SessionControl;
pub use cookie::CookieSettings;
pub use devices::{clean_device_label, DeviceList, DeviceSession};
pub use service::{LogoutError, ReauthError, RefreshError, SessionError, Sessions};

/// `[sessions]`, compiled.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Idle lifetime, sliding with every refresh.
    pub refresh_ttl: Duration,
    /// Absolute lifetime from login, never extended by rotation.
    pub max_age: Duration,
    /// A rotated-out refresh token presented again within this gets the
    /// winning rotation's pair instead of killing the session.
    pub reuse_grace: Duration,
    pub max_failures: u32,
    pub failure_window: Duration,
    pub cookie: Option<CookieSettings>,
}

/// An RFC 6749 §5.1 token response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub refresh_token: String,
}

/// What every access token of a session carries beyond `sub`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entitlements {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// Claims the gateway sets itself; a login response cannot supply them.
const RESERVED_CLAIMS: [&str; 12] = [
    "iss",
    "aud",
    "sub",
    "exp",
    "iat",
    "nbf",
    "jti",
    "sid",
    "ver",
    "auth_time",
    "roles",
    "scope",
];

impl Entitlements {
    /// Drops claims that would collide with the ones the gateway sets.
    pub fn without_reserved_claims(mut self) -> Self {
        self.claims
            .retain(|name, _| !RESERVED_CLAIMS.contains(&name.as_str()));
        self
    }
}
