//! Human-readable durations ("30s", "5m", "7d") in configuration files.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written as a string such as `"90s"` or `"1h 30m"`.
///
/// Parse errors surface through serde, so the toml crate reports them with
/// the line and column of the offending value. Not `humantime-serde`: its
/// visitor drops humantime's reason (`unknown time unit "parsecs"`, with
/// the units it knows) for serde's `expected a duration`; this keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(DurationVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = HumanDuration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration string such as \"30s\", \"5m\" or \"7d\"")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<HumanDuration, E> {
        humantime::parse_duration(value)
            .map(HumanDuration)
            .map_err(|e| {
                E::custom(format!(
                    "invalid duration {value:?}: {e} (try \"30s\", \"5m\" or \"7d\")"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        d: HumanDuration,
    }

    #[test]
    fn parses_units_and_rejects_bare_numbers() {
        let h: Holder = toml::from_str("d = \"5m\"").expect("valid duration");
        assert_eq!(h.d.0, Duration::from_secs(300));
        let err = toml::from_str::<Holder>("d = \"5 parsecs\"")
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("invalid duration"), "{err}");
        // humantime's own reason, which says what to write instead.
        assert!(
            err.to_string().contains("unknown time unit \"parsecs\""),
            "{err}"
        );
        assert!(toml::from_str::<Holder>("d = 5").is_err());
    }
}
