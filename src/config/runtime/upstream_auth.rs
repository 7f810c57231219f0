//! The backend's own credentials (`[[upstreams]] upstream_auth`): what the
//! gateway puts in `Authorization` for a backend that understands only HTTP
//! Basic auth or a fixed service token. Reading the secret and checking it
//! is `compile::upstream_auth`'s; removing the client's `Authorization` and
//! setting this value is the proxy's.
//!
//! The secret is never printed: `Debug` shows only the kind, and every
//! value is marked sensitive (HPACK never indexes it).

use base64::Engine;
use http::HeaderValue;

/// How the gateway authenticates itself to one upstream.
#[derive(Clone)]
pub enum UpstreamAuth {
    /// The same `Authorization` value (`Basic …`, `Bearer …`) on every
    /// request.
    Fixed(HeaderValue),
    /// `Basic` with the verified subject as user name and this password.
    BasicSubject {
        /// The password, as bytes (RFC 7617 §2.1: UTF-8 on the wire).
        password: Vec<u8>,
    },
}

impl std::fmt::Debug for UpstreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(_) => f.write_str("UpstreamAuth::Fixed(<secret>)"),
            Self::BasicSubject { .. } => f.write_str("UpstreamAuth::BasicSubject(<secret>)"),
        }
    }
}

impl UpstreamAuth {
    /// A fixed value, marked sensitive.
    pub fn fixed(mut value: HeaderValue) -> Self {
        value.set_sensitive(true);
        Self::Fixed(value)
    }

    /// Whether the value names the user, so that a request needs a
    /// verified subject to carry it.
    pub fn needs_subject(&self) -> bool {
        matches!(self, Self::BasicSubject { .. })
    }

    /// The `Authorization` value for a request whose verified subject is
    /// `subject` (`None`: no token). `None` when there is nothing to send:
    /// `basic_subject` without a subject, or with one that contains the `:`
    /// a Basic user name cannot hold (RFC 7617 §2: the backend would split
    /// it there and read another user). The backend, which enforces its
    /// own auth, then refuses the request itself.
    pub fn authorization(&self, subject: Option<&str>) -> Option<HeaderValue> {
        match self {
            Self::Fixed(value) => Some(value.clone()),
            Self::BasicSubject { password } => {
                let subject = subject.filter(|s| !s.is_empty() && !s.contains(':'))?;
                Some(basic(subject, password))
            }
        }
    }
}

/// `Basic base64(user ":" password)`, marked sensitive.
fn basic(user: &str, password: &[u8]) -> HeaderValue {
    let mut pair = Vec::with_capacity(user.len() + 1 + password.len());
    pair.extend_from_slice(user.as_bytes());
    pair.push(b':');
    pair.extend_from_slice(password);
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_subject_names_the_user_and_never_a_user_with_a_colon() {
        let auth = UpstreamAuth::BasicSubject {
            password: b"s3cret".to_vec(),
        };
        // base64("alice:s3cret")
        let value = auth.authorization(Some("alice")).expect("a value");
        assert_eq!(value, "Basic YWxpY2U6czNjcmV0");
        assert!(value.is_sensitive());
        assert_eq!(auth.authorization(Some("admin:x")), None);
        assert_eq!(auth.authorization(Some("")), None);
        assert_eq!(auth.authorization(None), None);
        // A non-ASCII subject is sent as UTF-8 (RFC 7617 §2.1).
        let value = auth.authorization(Some("zoë")).expect("a value");
        assert_eq!(value, "Basic em/DqzpzM2NyZXQ=");
    }

    #[test]
    fn a_fixed_value_goes_on_every_request_and_is_never_printed() {
        let auth = UpstreamAuth::fixed(HeaderValue::from_static("Bearer svc-token-123"));
        assert_eq!(
            auth.authorization(None),
            Some(HeaderValue::from_static("Bearer svc-token-123"))
        );
        assert!(auth
            .authorization(Some("bob"))
            .is_some_and(|v| v.is_sensitive()));
        let printed = format!("{auth:?}");
        assert!(!printed.contains("svc-token"), "{printed}");
        let basic = UpstreamAuth::BasicSubject {
            password: b"s3cret".to_vec(),
        };
        assert!(!format!("{basic:?}").contains("s3cret"));
    }
}
