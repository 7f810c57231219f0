//! The claims of an access token (RFC 9068 profile plus portcullis' own).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Claims of an access token, both as the gateway issues them and as it
/// reads them back. `sub` and `exp` are required of every token (without
/// them it fails to deserialize and is `token_invalid`); `iss` and `aud`
/// are checked by `jsonwebtoken::Validation`. `jti` and `iat` deserialize
/// as empty and 0 when absent: the verifier refuses that in the gateway's
/// own tokens, and an external issuer's `required_claims` decide for its.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: Audience,
    pub sub: String,
    /// Required of the gateway's own tokens; external issuers may omit it
    /// (their `required_claims` decide), and then it is empty.
    #[serde(default)]
    pub jti: String,
    /// Required of the gateway's own tokens; 0 when an external issuer
    /// omitted it.
    #[serde(default)]
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Session id: the refresh family this token was issued from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The user's token version when the token was issued. Other issuers
    /// use `ver` for their own purposes (`"2.0"`): anything but a `u64`
    /// reads as absent here, external tokens have it cleared after checks,
    /// and the verifier refuses the gateway's own tokens whose `ver` is
    /// present but not a whole number in 0..2^63.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "number_or_nothing"
    )]
    pub ver: Option<u64>,
    /// When the user last proved their credentials (OIDC Core §2, RFC 9470
    /// §3), Unix seconds: the gateway's own tokens carry their session's;
    /// an external issuer's is used when it sent one. Anything but a whole
    /// number reads as absent, and then a route with `max_auth_age`
    /// refuses the token.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "number_or_nothing"
    )]
    pub auth_time: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    pub roles: Vec<String>,
    /// Space-delimited scopes (RFC 8693 §4.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Everything else, e.g. claims taken from the login response.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl AccessClaims {
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
    }
}

/// `aud` may be one string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

fn number_or_nothing<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    Ok(Value::deserialize(deserializer)?.as_u64())
}

/// Accept `"admin"` as well as `["admin"]` for `roles`: identity providers
/// write both (oauth2-proxy and Spring Security read a lone string too).
/// A string is exactly one role, never split: `"admin user"` is the role
/// `admin user`, not `admin`; a `,` in it makes the token `token_invalid`
/// (see `IdentityHeaders::headers_for`). Any other type (`null`, a
/// number, an object, an array holding anything but strings) fails to
/// deserialize and is `token_invalid` too.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(role) => vec![role],
        OneOrMany::Many(roles) => roles,
    })
}
