//! The verified identity as headers for the upstream.
//!
//! The names come from `[identity]`; the values only ever from a verified
//! token. Stripping the client's copies of these names is the proxy's job
//! (`proxy::headers`); this module says which names and which values.

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::AccessClaims;

pub struct IdentityHeaders {
    pub subject: HeaderName,
    pub roles: HeaderName,
    pub scopes: HeaderName,
    pub session: HeaderName,
    /// Claim name → header name, e.g. `email` → `X-User-Email`.
    pub claims: Vec<(String, HeaderName)>,
    /// Keep `Authorization` on requests the gateway authenticated.
    pub forward_token: bool,
}

impl IdentityHeaders {
    /// Every header name the identity may be written to.
    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        [&self.subject, &self.roles, &self.scopes, &self.session]
            .into_iter()
            .chain(self.claims.iter().map(|(_, header)| header))
    }

    /// The headers to set for a verified token, computed once per token and
    /// cached with it. A claim whose value cannot be a header value (control
    /// characters) is left out rather than mangled.
    ///
    /// `None` when the subject cannot be a header value or a role contains
    /// the `,` that separates roles: forwarding such a token would give the
    /// upstream no user, or roles the token does not hold.
    pub fn headers_for(&self, claims: &AccessClaims) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let mut out = Vec::with_capacity(4 + self.claims.len());
        if !subject_forwardable(&claims.sub) || !claims.roles.iter().all(|r| role_separable(r)) {
            return None;
        }
        let subject = HeaderValue::from_str(&claims.sub).ok()?;
        out.push((self.subject.clone(), subject));
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
        Some(out)
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

fn push(out: &mut Vec<(HeaderName, HeaderValue)>, name: &HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
        out.push((name.clone(), value));
    } else {
        tracing::debug!(header = %name, "claim value cannot be a header value; not forwarded");
    }
}
