//! Claim conditions (`require_claims`): a route admits a token only when
//! each listed claim is present and equals one of the listed values.
//!
//! Deliberately no expression language: a condition is a claim name and a
//! set of literals, compiled once when the configuration loads, and judged
//! with a map lookup and a few comparisons (docs/architecture.md says why
//! a CEL crate did not earn its place). No coercion: the string `"true"`
//! is not the boolean `true`, and `1.0` is not the integer `1`.

use serde_json::Value;

use super::AccessClaims;

/// One literal a claim may equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimValue {
    Text(Box<str>),
    Bool(bool),
    Integer(i64),
}

impl ClaimValue {
    /// Whether a JSON scalar is this value, of the same type.
    fn is(&self, value: &Value) -> bool {
        match (self, value) {
            (Self::Text(want), Value::String(have)) => **want == **have,
            (Self::Bool(want), Value::Bool(have)) => want == have,
            (Self::Integer(want), Value::Number(have)) => have.as_i64() == Some(*want),
            _ => false,
        }
    }
}

/// Where a claim is read from: the typed claims `sub` and `iss` are not in
/// the token's `extra` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Subject,
    Issuer,
    Other,
}

/// `claim = [values]`: the claim must be present and equal one of the
/// values, or, for an array claim, contain one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCondition {
    claim: Box<str>,
    source: Source,
    any_of: Vec<ClaimValue>,
    /// What the refusal's challenge names: `claim:NAME` (never a value,
    /// so a token of one tenant does not learn another tenant's name).
    missing: Box<str>,
}

/// Claims a condition may not name, and what to use instead: the ones the
/// verifier already judges, or that other route keys cover.
pub const RESERVED_CLAIMS: [(&str, &str); 10] = [
    ("roles", "use the route's roles"),
    ("scope", "use the route's scopes"),
    ("aud", "the audience is checked for every token"),
    ("exp", "times are checked for every token"),
    ("iat", "times are checked for every token"),
    ("nbf", "times are checked for every token"),
    ("auth_time", "use the route's max_auth_age"),
    ("jti", "a token id is no policy; revoke the token instead"),
    ("ver", "a token version is no policy"),
    ("sid", "a session id is no policy; end the session instead"),
];

impl ClaimCondition {
    /// A condition on `claim`, whose name is not among [`RESERVED_CLAIMS`]
    /// (the configuration checks that).
    pub fn new(claim: &str, any_of: Vec<ClaimValue>) -> Self {
        let source = match claim {
            "sub" => Source::Subject,
            "iss" => Source::Issuer,
            _ => Source::Other,
        };
        Self {
            claim: claim.into(),
            source,
            any_of,
            missing: format!("claim:{claim}").into(),
        }
    }

    pub fn claim(&self) -> &str {
        &self.claim
    }

    pub fn values(&self) -> &[ClaimValue] {
        &self.any_of
    }

    /// `claim:NAME`, for the `scope` of an `insufficient_scope` challenge.
    pub fn missing(&self) -> &str {
        &self.missing
    }

    pub fn holds(&self, claims: &AccessClaims) -> bool {
        match self.source {
            Source::Subject => self.any_text(&claims.sub),
            Source::Issuer => self.any_text(&claims.iss),
            Source::Other => claims
                .extra
                .get(&*self.claim)
                .is_some_and(|v| self.met_by(v)),
        }
    }

    fn any_text(&self, have: &str) -> bool {
        (self.any_of.iter()).any(|want| matches!(want, ClaimValue::Text(w) if **w == *have))
    }

    /// A scalar equal to a value, or an array holding one (one level: an
    /// array inside the array is no match).
    fn met_by(&self, value: &Value) -> bool {
        match value {
            Value::Array(items) => items.iter().any(|item| self.scalar_matches(item)),
            scalar => self.scalar_matches(scalar),
        }
    }

    fn scalar_matches(&self, value: &Value) -> bool {
        self.any_of.iter().any(|want| want.is(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::claims::Audience;
    use serde_json::json;

    fn token(extra: Value) -> AccessClaims {
        AccessClaims {
            iss: "https://idp".into(),
            aud: Audience::One("a".into()),
            sub: "alice".into(),
            jti: String::new(),
            iat: 0,
            exp: 0,
            nbf: None,
            sid: None,
            ver: None,
            auth_time: None,
            roles: Vec::new(),
            scope: None,
            extra: extra.as_object().cloned().unwrap_or_default(),
        }
    }

    fn text(s: &str) -> ClaimValue {
        ClaimValue::Text(s.into())
    }

    #[test]
    fn each_type_matches_only_its_own_type() {
        let tenant = ClaimCondition::new("tenant", vec![text("acme"), text("globex")]);
        assert!(tenant.holds(&token(json!({"tenant": "acme"}))));
        assert!(tenant.holds(&token(json!({"tenant": "globex"}))));
        assert!(!tenant.holds(&token(json!({"tenant": "ACME"}))));
        assert!(!tenant.holds(&token(json!({}))));
        assert!(!tenant.holds(&token(json!({"tenant": null}))));
        assert!(!tenant.holds(&token(json!({"tenant": {"name": "acme"}}))));
        let verified = ClaimCondition::new("email_verified", vec![ClaimValue::Bool(true)]);
        assert!(verified.holds(&token(json!({"email_verified": true}))));
        assert!(!verified.holds(&token(json!({"email_verified": false}))));
        assert!(!verified.holds(&token(json!({"email_verified": "true"}))));
        assert!(!verified.holds(&token(json!({"email_verified": 1}))));
        let level = ClaimCondition::new("level", vec![ClaimValue::Integer(3)]);
        assert!(level.holds(&token(json!({"level": 3}))));
        assert!(!level.holds(&token(json!({"level": 3.0}))));
        assert!(!level.holds(&token(json!({"level": "3"}))));
        assert!(!level.holds(&token(json!({"level": u64::MAX}))));
    }

    #[test]
    fn an_array_claim_must_contain_one_value_at_its_top_level() {
        let groups = ClaimCondition::new("groups", vec![text("ops")]);
        assert!(groups.holds(&token(json!({"groups": ["dev", "ops"]}))));
        assert!(!groups.holds(&token(json!({"groups": ["dev"]}))));
        assert!(!groups.holds(&token(json!({"groups": []}))));
        assert!(!groups.holds(&token(json!({"groups": [["ops"]]}))));
    }

    #[test]
    fn sub_and_iss_are_read_from_their_typed_claims() {
        let sub = ClaimCondition::new("sub", vec![text("alice")]);
        assert!(sub.holds(&token(json!({}))));
        let iss = ClaimCondition::new("iss", vec![text("https://other")]);
        assert!(!iss.holds(&token(json!({}))));
        assert_eq!(iss.missing(), "claim:iss");
    }
}
