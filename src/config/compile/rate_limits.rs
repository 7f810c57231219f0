//! `[[rate_limits]]` → the named [`RateLimitPolicy`]s routes refer to:
//! each name once and a plain token, a rate that parses (`"100/m"`), a
//! burst of at least one.

use std::collections::HashMap;
use std::sync::Arc;

use toml::Spanned;

use crate::config::raw::RawRateLimit;
use crate::config::runtime::rate_limit::RateLimitPolicy;
use crate::config::Diagnostics;
use crate::store::rate_limit::Gcra;

pub(super) type Policies = HashMap<String, Arc<RateLimitPolicy>>;

pub(super) fn rate_limits(raw: &[RawRateLimit], sink: &mut Diagnostics) -> Policies {
    let mut policies = Policies::new();
    for entry in raw {
        let name = entry.name.get_ref();
        if policies.contains_key(name) {
            sink.at(
                entry.name.span(),
                format!("duplicate rate limit name {name:?}"),
            );
            continue;
        }
        if let Some(policy) = policy(entry, sink) {
            policies.insert(name.clone(), Arc::new(policy));
        }
    }
    policies
}

fn policy(raw: &RawRateLimit, sink: &mut Diagnostics) -> Option<RateLimitPolicy> {
    let name = raw.name.get_ref();
    // The name is written inside a structured-field string (RFC 8941 §3.3.3).
    let plain = !name.is_empty()
        && name.len() <= 64
        && (name.bytes()).all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !plain {
        sink.at(
            raw.name.span(),
            "a rate limit name is 1 to 64 letters, digits, '-', '_' or '.'",
        );
    }
    let (count, window) = parse_rate(&raw.rate, sink)?;
    let burst = raw.burst.as_ref().map_or(count, |b| *b.get_ref());
    if burst == 0 {
        if let Some(b) = &raw.burst {
            sink.at(b.span(), "burst must be at least 1");
        }
        return None;
    }
    Some(RateLimitPolicy {
        name: name.clone(),
        gcra: Gcra {
            emission_us: window * 1_000_000 / count,
            burst,
        },
        key: raw.key,
        exempt_roles: raw.roles.clone(),
        exempt_scopes: raw.scopes.clone(),
        on_unavailable: raw.on_unavailable,
        policy_field: format!("\"{name}\";q={count};w={window}"),
    })
}

/// `"COUNT/UNIT"` → (count, window in seconds); at most one request per
/// microsecond.
fn parse_rate(rate: &Spanned<String>, sink: &mut Diagnostics) -> Option<(u64, u64)> {
    let parsed = rate.get_ref().split_once('/').and_then(|(count, unit)| {
        let window = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        };
        let count: u64 = count.trim().parse().ok()?;
        (1..=window * 1_000_000)
            .contains(&count)
            .then_some((count, window))
    });
    if parsed.is_none() {
        sink.at(
            rate.span(),
            format!(
                "rate {:?} is not COUNT/UNIT with a positive count and a unit of s, m, h or d (\"100/m\", \"20/s\")",
                rate.get_ref()
            ),
        );
    }
    parsed
}
