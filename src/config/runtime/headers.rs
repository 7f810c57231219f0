//! The header rules compiled from `[identity]`: every name the gateway
//! sets for the upstream (identity, forwarding, request id), matched in
//! every spelling a backend might fold together (any case, `_` for `-`),
//! and a `Connection` header that names one loses that token, so a
//! hop-by-hop rule downstream cannot remove the value the gateway set.

use http::header::CONNECTION;
use http::{HeaderMap, HeaderValue};

use crate::auth::IdentityHeaders;
use crate::vocabulary::{API_KEY_HEADER, FORWARDING};

/// The prefix of the forwarding family, folded.
const X_FORWARDED_FAMILY: &str = "x-forwarded-";

/// Headers that override the request's path on some servers (IIS URL
/// Rewrite, older Symfony and Zend), folded.
const PATH_OVERRIDES: [&str; 2] = ["x-original-url", "x-rewrite-url"];

pub struct HeaderRules {
    /// Lower-case, `-`-separated names.
    reserved: Vec<String>,
}

impl HeaderRules {
    pub fn new(identity: &IdentityHeaders) -> Self {
        let mut reserved: Vec<String> = identity
            .names()
            .map(|name| fold(name.as_str()))
            .chain(FORWARDING.iter().map(|s| (*s).to_owned()))
            // A client's API key is the gateway's to read, never a backend's.
            .chain([API_KEY_HEADER.to_owned()])
            .collect();
        reserved.sort();
        reserved.dedup();
        Self { reserved }
    }

    /// Also reserves `names` (the upstreams' assertion headers), which
    /// only the gateway may set.
    pub fn reserving(mut self, names: &[http::HeaderName]) -> Self {
        self.reserved
            .extend(names.iter().map(|name| fold(name.as_str())));
        self.reserved.sort();
        self.reserved.dedup();
        self
    }

    /// Whether `name`, folded, is one the gateway owns: an identity or
    /// forwarding header it sets, any other of the `X-Forwarded-*` family
    /// (`-Prefix`, `-Port`, `-Ssl`: frameworks build redirects and links
    /// from them, and only the gateway may describe this hop), or a header
    /// some servers take the request's path from (`X-Original-URL`,
    /// `X-Rewrite-URL`), which would route past the gateway's path rules.
    pub fn is_reserved(&self, name: &str) -> bool {
        self.reserved.iter().any(|r| folds_to(name, r))
            || name
                .get(..X_FORWARDED_FAMILY.len())
                .is_some_and(|head| folds_to(head, X_FORWARDED_FAMILY))
            || PATH_OVERRIDES.iter().any(|r| folds_to(name, r))
    }

    /// The inbound header names to remove, and the rewritten `Connection`
    /// value (`Some(None)` = remove it) when it named a reserved header.
    pub fn plan(&self, headers: &HeaderMap) -> StripPlan {
        let remove = headers
            .keys()
            .filter(|name| self.is_reserved(name.as_str()))
            .map(|name| name.as_str().to_owned())
            .collect();
        StripPlan {
            remove,
            connection: self.rewrite_connection(headers),
        }
    }

    fn rewrite_connection(&self, headers: &HeaderMap) -> Option<Option<HeaderValue>> {
        let mut values = headers.get_all(CONNECTION).iter().peekable();
        values.peek()?;
        let tokens: Vec<&str> = values
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect();
        if !tokens.iter().any(|t| self.is_reserved(t)) {
            return None;
        }
        let kept: Vec<&str> = tokens
            .into_iter()
            .filter(|t| !self.is_reserved(t))
            .collect();
        Some(if kept.is_empty() {
            None
        } else {
            HeaderValue::from_str(&kept.join(", ")).ok()
        })
    }
}

/// What to change on an inbound request before the gateway sets its own headers.
#[derive(Debug, Default)]
pub struct StripPlan {
    pub remove: Vec<String>,
    pub connection: Option<Option<HeaderValue>>,
}

impl StripPlan {
    /// Applies the plan to a plain `HeaderMap` (the proxy applies it to
    /// pingora's request type the same way).
    pub fn apply(self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name.as_str());
        }
        match self.connection {
            Some(Some(value)) => {
                headers.insert(CONNECTION, value);
            }
            Some(None) => {
                headers.remove(CONNECTION);
            }
            None => {}
        }
    }
}

fn fold(name: &str) -> String {
    name.bytes().map(|b| fold_byte(b) as char).collect()
}

fn fold_byte(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

fn folds_to(name: &str, folded: &str) -> bool {
    name.len() == folded.len()
        && name
            .bytes()
            .zip(folded.bytes())
            .all(|(a, b)| fold_byte(a) == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;
    use proptest::prelude::*;

    fn rules() -> HeaderRules {
        let h = |s: &str| HeaderName::from_bytes(s.as_bytes()).expect("name").into();
        HeaderRules::new(&IdentityHeaders {
            subject: h("x-user-id"),
            roles: h("x-user-roles"),
            scopes: h("x-user-scopes"),
            session: h("x-session-id"),
            credential: h("x-user-credential"),
            claims: vec![("email".into(), h("x-user-email"))],
            forward_token: false,
        })
    }

    #[test]
    fn connection_cannot_name_a_reserved_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, X-User-Id, x_user_roles"),
        );
        let plan = rules().plan(&headers);
        plan.apply(&mut headers);
        assert_eq!(
            headers.get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"keep-alive"[..])
        );
    }

    fn spelling_of(name: &'static str) -> impl Strategy<Value = String> {
        proptest::collection::vec((any::<bool>(), any::<bool>()), name.len()).prop_map(
            move |flips| {
                name.bytes()
                    .zip(flips)
                    .map(|(b, (upper, underscore))| match b {
                        b'-' if underscore => '_',
                        b if upper => b.to_ascii_uppercase() as char,
                        b => b as char,
                    })
                    .collect()
            },
        )
    }

    proptest! {
        /// Every spelling of a reserved name, any number of times, is removed;
        /// other headers survive.
        #[test]
        fn every_spelling_is_stripped(
            spellings in proptest::collection::vec(
                prop_oneof![spelling_of("x-user-id"), spelling_of("x-user-email"), spelling_of("x-forwarded-for")],
                1..6,
            )
        ) {
            let mut headers = HeaderMap::new();
            for s in &spellings {
                headers.append(HeaderName::from_bytes(s.as_bytes()).expect("name"), HeaderValue::from_static("spoofed"));
            }
            headers.insert("x-unrelated", HeaderValue::from_static("kept"));
            rules().plan(&headers).apply(&mut headers);
            prop_assert_eq!(headers.len(), 1);
            prop_assert!(headers.contains_key("x-unrelated"));
        }
    }
}
