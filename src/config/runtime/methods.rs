//! A route's `methods`: the request methods it serves. Several routes may
//! share a host and path with disjoint method sets; a method none of them
//! serves is answered `405` with `Allow` listing those that are.
//!
//! Methods compare case-sensitively (RFC 9110 §9.1): `get` is not `GET`.
//! `GET` implies `HEAD` (RFC 9110 §9.3.2; nginx's `limit_except GET` does
//! the same): a `HEAD` tells what a `GET` would, so it gets the same policy.

use std::sync::Arc;

use http::Method;

/// The methods a route serves, and the `Allow` of its host and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMethods {
    own: Vec<Method>,
    /// Every method some route of the same host and path serves, in the
    /// order configured: the `Allow` header of a `405` there.
    allow: Arc<str>,
}

impl RouteMethods {
    /// `configured` as written (checked: tokens, upper case, no repeats);
    /// `HEAD` is added after `GET` unless listed.
    pub fn new(configured: &[Method]) -> Self {
        Self {
            own: with_implied_head(configured),
            allow: Arc::from(""),
        }
    }

    pub fn allows(&self, method: &Method) -> bool {
        self.own.iter().any(|m| m == method)
    }

    /// The methods served, `HEAD` included when `GET` is.
    pub fn list(&self) -> &[Method] {
        &self.own
    }

    /// The `Allow` header of a `405` on this route's host and path.
    pub fn allow(&self) -> &str {
        &self.allow
    }

    pub(super) fn set_allow(&mut self, allow: Arc<str>) {
        self.allow = allow;
    }

    /// `GET,HEAD`: for the route table and default route names.
    pub fn joined(&self, separator: &str) -> String {
        let names: Vec<&str> = self.own.iter().map(Method::as_str).collect();
        names.join(separator)
    }
}

/// `methods` with `HEAD` after `GET` when it is not listed already.
pub fn with_implied_head(configured: &[Method]) -> Vec<Method> {
    let mut own = configured.to_vec();
    if own.contains(&Method::GET) && !own.contains(&Method::HEAD) {
        let after_get = own
            .iter()
            .position(|m| m == Method::GET)
            .map_or(0, |i| i + 1);
        own.insert(after_get, Method::HEAD);
    }
    own
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_implies_head_and_nothing_else_is_implied() {
        let methods = RouteMethods::new(&[Method::POST, Method::GET]);
        assert_eq!(methods.joined(","), "POST,GET,HEAD");
        assert!(methods.allows(&Method::HEAD));
        assert!(!methods.allows(&Method::OPTIONS));
        let lower = Method::from_bytes(b"get").expect("a token");
        assert!(!methods.allows(&lower), "methods are case-sensitive");
        let delete = RouteMethods::new(&[Method::DELETE]);
        assert_eq!(delete.joined(","), "DELETE");
    }
}
