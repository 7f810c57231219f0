//! A route's `methods` and `require_claims`, checked and compiled once
//! when the configuration loads, and the rule that routes may share a host
//! and path only with disjoint methods (and one `cors` between them).

use std::collections::HashMap;

use http::Method;
use toml::Spanned;

use crate::auth::conditions::{ClaimCondition, ClaimValue, RESERVED_CLAIMS};
use crate::config::raw::{AuthMode, RawRoute};
use crate::config::runtime::methods::with_implied_head;
use crate::config::Diagnostics;

/// Where a route sits in the table: its host (lower case, `None` for any
/// host) and its normalised prefix. Routes share one only with disjoint
/// `methods`.
pub(super) type RouteKey = (Option<String>, String);

/// `methods` as configured, `None` when absent (every method).
pub(super) fn methods(raw: &RawRoute, sink: &mut Diagnostics) -> Option<Vec<Method>> {
    let list = raw.methods.as_ref()?;
    if list.get_ref().is_empty() {
        sink.at(
            list.span(),
            "methods = [] would serve nothing; leave methods out to serve every method",
        );
    }
    let mut methods: Vec<Method> = Vec::new();
    for entry in list.get_ref() {
        let Some(method) = method(entry, sink) else {
            continue;
        };
        if methods.contains(&method) {
            sink.at(entry.span(), format!("method {method} is listed twice"));
        }
        methods.push(method);
    }
    Some(methods)
}

fn method(entry: &Spanned<String>, sink: &mut Diagnostics) -> Option<Method> {
    let text = entry.get_ref();
    let problem = if text.is_empty() || !text.bytes().all(is_tchar) {
        format!("{text:?} is not a method name (an RFC 9110 token)")
    } else if text.bytes().any(|b| b.is_ascii_lowercase()) {
        format!(
            "method {text:?} must be upper case: methods are case-sensitive (RFC 9110 §9.1), \
             and {text:?} is not {:?}",
            text.to_ascii_uppercase()
        )
    } else if text == "CONNECT" {
        "CONNECT never reaches a route: the gateway refuses it".to_owned()
    } else {
        return Method::from_bytes(text.as_bytes()).ok();
    };
    sink.at(entry.span(), problem);
    None
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `require_claims`, each condition with its values; on a route that
/// does not need a token it could never be met for every request.
pub(super) fn claim_conditions(raw: &RawRoute, sink: &mut Diagnostics) -> Vec<ClaimCondition> {
    let Some(table) = &raw.require_claims else {
        return Vec::new();
    };
    if raw.auth != AuthMode::Required {
        sink.at(table.span(), "require_claims needs auth = \"required\"");
    }
    // In the file's order: the first that fails is the one named.
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(_, values)| values.span().start);
    let mut conditions = Vec::new();
    for (name, values) in entries {
        if let Some(condition) = claim_condition(name, values, sink) {
            conditions.push(condition);
        }
    }
    conditions
}

fn claim_condition(
    name: &str,
    values: &Spanned<Vec<Spanned<toml::Value>>>,
    sink: &mut Diagnostics,
) -> Option<ClaimCondition> {
    // The name ends up in a quoted challenge attribute (`scope="claim:…"`).
    let printable = |b: u8| b.is_ascii_graphic() && b != b'"' && b != b'\\';
    if name.is_empty() || !name.bytes().all(printable) {
        let message = format!("claim name {name:?} must be printable ASCII without quotes");
        sink.at(values.span(), message);
        return None;
    }
    if let Some((_, instead)) = RESERVED_CLAIMS.iter().find(|(n, _)| *n == name) {
        sink.at(
            values.span(),
            format!("{name} cannot be a claim condition: {instead}"),
        );
        return None;
    }
    if values.get_ref().is_empty() {
        let message = format!("require_claims.{name} = [] can never hold; list at least one value");
        sink.at(values.span(), message);
        return None;
    }
    let literals: Vec<ClaimValue> = (values.get_ref().iter())
        .filter_map(|value| claim_value(value, sink))
        .collect();
    (literals.len() == values.get_ref().len()).then(|| ClaimCondition::new(name, literals))
}

fn claim_value(value: &Spanned<toml::Value>, sink: &mut Diagnostics) -> Option<ClaimValue> {
    let problem = match value.get_ref() {
        toml::Value::String(s) => return Some(ClaimValue::Text(s.as_str().into())),
        toml::Value::Boolean(b) => return Some(ClaimValue::Bool(*b)),
        toml::Value::Integer(i) => return Some(ClaimValue::Integer(*i)),
        toml::Value::Float(_) => "a float is never compared exactly: use an integer or a string",
        _ => "a claim's value is a string, a boolean or an integer",
    };
    sink.at(value.span(), problem);
    None
}

/// What the routes before this one took of a host and path.
#[derive(Default)]
pub(super) struct PathTable {
    taken: HashMap<RouteKey, Vec<Taken>>,
}

struct Taken {
    /// `None`: every method.
    methods: Option<Vec<Method>>,
    /// It sets `cors`.
    cors: bool,
}

impl PathTable {
    /// Whether `raw` may join the routes of `key`: with disjoint methods,
    /// and `cors` on one of them only. Reports why not.
    pub(super) fn admit(
        &mut self,
        key: RouteKey,
        raw: &RawRoute,
        methods: Option<&[Method]>,
        sink: &mut Diagnostics,
    ) -> bool {
        let prefix = key.1.clone();
        let methods = methods.map(with_implied_head);
        let others = self.taken.entry(key).or_default();
        let clash = others
            .iter()
            .find_map(|other| clash(methods.as_deref(), other.methods.as_deref()));
        if let Some(clash) = clash {
            let span = raw.methods.as_ref().map_or(raw.path.span(), Spanned::span);
            sink.at(span, clash.message(&prefix));
            return false;
        }
        let cors_taken = others.iter().any(|other| other.cors);
        if let (true, Some(cors)) = (cors_taken, &raw.cors) {
            sink.at(
                cors.span(),
                "only one route of a host and path may set cors: a preflight is answered \
                 for the path, before its method is known",
            );
        }
        let cors = raw.cors.is_some();
        others.push(Taken { methods, cors });
        true
    }
}

enum Clash {
    /// Neither route has methods: the old rule.
    Duplicate,
    /// One route serves every method.
    EveryMethod,
    /// Both serve this method.
    Both(Method),
}

impl Clash {
    fn message(&self, prefix: &str) -> String {
        match self {
            Self::Duplicate => {
                format!("duplicate route: another route has the same host and path {prefix:?}")
            }
            Self::EveryMethod => format!(
                "duplicate route: routes of the same host and path {prefix:?} must each list \
                 methods, disjoint from the others'"
            ),
            Self::Both(method) => format!(
                "duplicate route: another route of the same host and path {prefix:?} also \
                 serves {method}{}",
                if *method == Method::HEAD {
                    " (GET implies HEAD)"
                } else {
                    ""
                }
            ),
        }
    }
}

fn clash(this: Option<&[Method]>, other: Option<&[Method]>) -> Option<Clash> {
    match (this, other) {
        (None, None) => Some(Clash::Duplicate),
        (None, Some(_)) | (Some(_), None) => Some(Clash::EveryMethod),
        (Some(this), Some(other)) => (this.iter())
            .find(|m| other.contains(m))
            .map(|m| Clash::Both(m.clone())),
    }
}
