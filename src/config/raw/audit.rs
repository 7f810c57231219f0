//! `[audit]` as the file writes it: whether the decision trail is on and
//! where it goes. Checked and compiled by `config::compile::audit`.

use serde::Deserialize;
use toml::Spanned;

/// `[audit]`: the JSON-lines trail of decisions and admin actions
/// (README, "Audit trail").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    pub enabled: bool,
    /// `"stderr"`, or a file path (relative to the configuration file).
    pub destination: Spanned<String>,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            enabled: false,
            destination: Spanned::new(0..0, "stderr".to_owned()),
        }
    }
}
