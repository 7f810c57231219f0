//! `[cors]` and each route's `cors` → [`CorsTable`]: defaults, the
//! route-over-global merge, and the checks (`*` never with credentials,
//! origins in the exact form browsers send).

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, Method};
use toml::Spanned;

use super::routes::route_key;
use crate::config::raw::{RawCors, RawRoute};
use crate::config::runtime::cors::{CorsPolicy, CorsTable};
use crate::config::Diagnostics;
use crate::vocabulary::REQUEST_ID_HEADER;

const DEFAULT_METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
const DEFAULT_HEADERS: [&str; 3] = ["authorization", "content-type", REQUEST_ID_HEADER];
const DEFAULT_MAX_AGE_SECS: u64 = 600;

/// The compiled policies; `csrf_header` is allowed by default, since the
/// client library sends it on cookie-mode calls.
pub(super) fn cors_table(
    raw: &RawCors,
    raw_routes: &[RawRoute],
    csrf_header: &str,
    sink: &mut Diagnostics,
) -> CorsTable {
    let empty = RawCors::default();
    let global = policy(raw, &empty, csrf_header, sink);
    let mut routes = HashMap::new();
    for route in raw_routes {
        let Some(own) = &route.cors else { continue };
        let policy = policy(own.get_ref(), raw, csrf_header, sink);
        // A route that does not compile is reported by `routes`.
        if let Some(key) = route_key(route) {
            routes.insert(key, Arc::new(policy));
        }
    }
    CorsTable::new(global, routes)
}

/// `own`'s keys, else `fallback`'s, else the defaults.
fn policy(own: &RawCors, fallback: &RawCors, csrf: &str, sink: &mut Diagnostics) -> CorsPolicy {
    let credentials =
        either(&own.allow_credentials, &fallback.allow_credentials).is_some_and(|c| *c.get_ref());
    let mut policy = CorsPolicy {
        credentials,
        methods: methods(
            either(&own.allowed_methods, &fallback.allowed_methods),
            sink,
        ),
        headers: headers(
            either(&own.allowed_headers, &fallback.allowed_headers),
            csrf,
            sink,
        ),
        max_age_secs: either(&own.max_age, &fallback.max_age)
            .map_or(DEFAULT_MAX_AGE_SECS, |d| d.0.as_secs()),
        ..CorsPolicy::default()
    };
    let origins = either(&own.allowed_origins, &fallback.allowed_origins);
    for origin in origins.into_iter().flatten() {
        add_origin(&mut policy, origin, sink);
    }
    policy
}

fn either<'a, T>(own: &'a Option<T>, fallback: &'a Option<T>) -> Option<&'a T> {
    own.as_ref().or(fallback.as_ref())
}

/// `*` with credentials would let every site make calls as the user, so
/// the two never meet.
fn add_origin(policy: &mut CorsPolicy, origin: &Spanned<String>, sink: &mut Diagnostics) {
    let value = origin.get_ref();
    if value == "*" {
        if policy.credentials {
            sink.at(
                origin.span(),
                "allowed_origins = \"*\" cannot be combined with allow_credentials = true: list the origins",
            );
        }
        policy.any_origin = true;
    } else if exact_origin(value) {
        policy.origins.push(value.clone());
    } else {
        sink.at(
            origin.span(),
            format!("{value:?} is not an origin such as \"https://app.example.com\" (scheme, host, optional port; no path)"),
        );
    }
}

fn methods(raw: Option<&Vec<Spanned<String>>>, sink: &mut Diagnostics) -> Vec<String> {
    let Some(raw) = raw else {
        return DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect();
    };
    raw.iter()
        .filter_map(|m| {
            let upper = m.get_ref().to_ascii_uppercase();
            if upper == "*" || Method::from_bytes(upper.as_bytes()).is_ok() {
                Some(upper)
            } else {
                sink.at(m.span(), format!("{:?} is not an HTTP method", m.get_ref()));
                None
            }
        })
        .collect()
}

fn headers(raw: Option<&Vec<Spanned<String>>>, csrf: &str, sink: &mut Diagnostics) -> Vec<String> {
    let Some(raw) = raw else {
        let mut list: Vec<String> = DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect();
        list.push(csrf.to_ascii_lowercase());
        return list;
    };
    raw.iter()
        .filter_map(|h| {
            let lower = h.get_ref().to_ascii_lowercase();
            if lower == "*" || HeaderName::from_bytes(lower.as_bytes()).is_ok() {
                Some(lower)
            } else {
                sink.at(h.span(), format!("{:?} is not a header name", h.get_ref()));
                None
            }
        })
        .collect()
}

/// `scheme://host[:port]` exactly as a browser serialises an `Origin`.
fn exact_origin(value: &str) -> bool {
    let Some((scheme, rest)) = value.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && rest == rest.to_ascii_lowercase()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}
