//! Configuration: TOML types, validation with `file:line:col`, and the
//! compiled [`Runtime`] the request path reads.
//!
//! Two layers: `raw` mirrors the file with serde; `compile` checks it as a
//! whole (every error collected, then reported together) and builds the
//! `runtime` types: route table, upstream pools, keys and header rules. The
//! request path never reads `raw`'s tables, only the vocabulary enums
//! declared there (`AuthMode`, `PathMatch`, …), which every layer shares.

mod compile;
mod diagnostics;
pub mod duration;
pub mod raw;
pub mod runtime;
pub mod traces;
mod unknown_keys;

use std::path::Path;

pub(crate) use diagnostics::Diagnostics;
pub use diagnostics::{ConfigError, Diagnostic, LoadOptions};
pub use runtime::{AdminToken, LoginSettings, Runtime, ServerSettings, StoreSettings};

/// Reads, parses and compiles a configuration file. Relative paths inside
/// it (key files) are resolved against the file's directory.
pub fn load(path: &Path) -> Result<Runtime, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_str(&text, path)
}

/// [`load`] with the options `check` takes.
pub fn load_with(path: &Path, options: LoadOptions) -> Result<Runtime, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    compile_text(&text, path, options)
}

/// Compiles configuration text as if it had been read from `path`.
pub fn load_str(text: &str, path: &Path) -> Result<Runtime, ConfigError> {
    compile_text(text, path, LoadOptions::default())
}

fn compile_text(text: &str, path: &Path, options: LoadOptions) -> Result<Runtime, ConfigError> {
    let mut sink = Diagnostics::new(path, text, options);
    let Some(raw) = parse(text, &mut sink) else {
        return Err(ConfigError::Invalid(sink.into_list()));
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let runtime = compile::compile(raw, base, &mut sink);
    match runtime {
        Some(runtime) if sink.is_empty() => Ok(runtime),
        _ => Err(ConfigError::Invalid(sink.into_list())),
    }
}

/// Unknown keys reported past, at most: a file this wrong is not worth
/// parsing again and again.
const MAX_UNKNOWN_KEYS: usize = 50;

/// The file as serde types. An unknown key is reported and blanked out,
/// and the text is read again, so the checks after it still run; any
/// other syntax error stops here.
fn parse(text: &str, sink: &mut Diagnostics) -> Option<raw::RawConfig> {
    let mut text = std::borrow::Cow::Borrowed(text);
    for _ in 0..MAX_UNKNOWN_KEYS {
        let e = match toml::from_str(&text) {
            Ok(raw) => return Some(raw),
            Err(e) => e,
        };
        let span = e.span().unwrap_or(0..0);
        sink.at(span.clone(), toml_message(&e));
        let unknown = e.message().starts_with("unknown field");
        text = std::borrow::Cow::Owned(match unknown {
            true => unknown_keys::without_entry(&text, &span)?,
            false => return None,
        });
    }
    None
}

/// The toml crate's message followed by its source excerpt with the caret.
fn toml_message(e: &toml::de::Error) -> String {
    let excerpt: Vec<String> = e
        .to_string()
        .lines()
        .filter(|line| line.contains('|'))
        .map(|line| format!("    {line}"))
        .collect();
    if excerpt.is_empty() {
        e.message().to_owned()
    } else {
        format!("{}\n{}", e.message(), excerpt.join("\n"))
    }
}
