//! The verified identity as headers for the upstream.
//!
//! The names come from `[identity]`; the values only ever from a verified
//! token. Stripping the client's copies of these names is the proxy's job
//! (`proxy::headers`); this module says which names and which values.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::AccessClaims;

/// One identity header as the upstream gets it: the name spelled as it
/// goes on the wire (the lower-case name), then the value. Given a
/// `HeaderName`, the proxy engine copies its bytes anew on every insert.
pub type ForwardedHeader = (Bytes, HeaderValue);

/// An identity header's name, and its spelling on the wire made once with
/// the configuration: each request's copy only counts a reference (an API
/// key's headers are made per request, a token's once per token).
#[derive(Debug, Clone)]
pub struct IdentityName {
    name: HeaderName,
    wire: Bytes,
}

impl From<HeaderName> for IdentityName {
    fn from(name: HeaderName) -> Self {
        let wire = Bytes::copy_from_slice(name.as_str().as_bytes());
        Self { name, wire }
    }
}

impl IdentityName {
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

pub struct IdentityHeaders {
    pub subject: IdentityName,
    pub roles: IdentityName,
    pub scopes: IdentityName,
    pub session: IdentityName,
    /// Which kind of credential let the request in: `token` or `api_key`.
    pub credential: IdentityName,
    /// Claim name → header name, e.g. `email` → `X-User-Email`.
    pub claims: Vec<(String, IdentityName)>,
    /// Keep `Authorization` on requests the gateway authenticated.
    pub forward_token: bool,
}

impl IdentityHeaders {
    /// Every header name the identity may be written to.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        [
            &self.subject,
            &self.roles,
            &self.scopes,
            &self.session,
            &self.credential,
        ]
        .into_iter()
        .chain(self.claims.iter().map(|(_, header)| header))
        .map(IdentityName::name)
    }

    /// The headers to set for a verified token, computed once per token and
    /// cached with it. A claim whose value cannot be a header value (control
    /// characters) is left out rather than mangled.
    ///
    /// `None` when the subject cannot be a header value or a role contains
    /// the `,` that separates roles: forwarding such a token would give the
    /// upstream no user, or roles the token does not hold.
    pub fn headers_for(&self, claims: &AccessClaims) -> Option<Vec<ForwardedHeader>> {
        self.headers_for_kind(claims, CredentialKind::Token)
    }

    /// [`Self::headers_for`], naming the kind of credential that proved
    /// the claims.
    pub fn headers_for_kind(
        &self,
        claims: &AccessClaims,
        kind: CredentialKind,
    ) -> Option<Vec<ForwardedHeader>> {
        let mut out = Vec::with_capacity(5 + self.claims.len());
        if !subject_forwardable(&claims.sub) || !claims.roles.iter().all(|r| role_separable(r)) {
            return None;
        }
        let subject = HeaderValue::from_str(&claims.sub).ok()?;
        out.push((self.subject.wire.clone(), subject));
        if !claims.roles.is_empty() {
            push(&mut out, &self.roles, &claims.roles.join(","));
        }
        if let Some(scope) = claims.scope.as_deref().filter(|s| !s.is_empty()) {
            push(&mut out, &self.scopes, scope);
        }
        if let Some(sid) = &claims.sid {
            push(&mut out, &self.session, sid);
        }
        for (claim, header) in &self.claims {
            match claims.extra.get(claim) {
                Some(Value::String(s)) => push(&mut out, header, s),
                Some(Value::Null) | None => {}
                Some(other) => push(&mut out, header, &other.to_string()),
            }
        }
        let kind = HeaderValue::from_static(kind.as_str());
        out.push((self.credential.wire.clone(), kind));
        Some(out)
    }
}

/// The kind of credential a request was let in with, as the upstream is
/// told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A bearer access token (the gateway's own or an external issuer's).
    Token,
    /// An API key.
    ApiKey,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::ApiKey => "api_key",
        }
    }
}

/// Whether a subject can be forwarded as it is: not empty, and a valid
/// header value (no control characters, ASCII only).
pub fn subject_forwardable(sub: &str) -> bool {
    !sub.is_empty() && HeaderValue::from_str(sub).is_ok()
}

/// Whether a role survives the comma-separated roles header as itself:
/// not blank and without the `,` that separates roles.
pub fn role_separable(role: &str) -> bool {
    !role.contains(',') && !role.trim().is_empty()
}

fn push(out: &mut Vec<ForwardedHeader>, name: &IdentityName, value: &str) {
    if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
        out.push((name.wire.clone(), value));
    } else {
        tracing::debug!(header = %name.name, "claim value cannot be a header value; not forwarded");
    }
}
