//! Configuration: TOML types, validation with `file:line:col`, and the
//! compiled [`Runtime`] the request path reads.
//!
//! Two layers: `raw` mirrors the file with serde; `compile` checks it as a
//! whole (every error collected, then reported together) and builds the
//! `runtime` types: route table, upstream pools, keys and header rules. The
//! request path never reads `raw`'s tables, only the vocabulary enums
//! declared there (`AuthMode`, `PathMatch`, …), which every layer shares.

mod compile;
pub mod duration;
pub mod raw;
pub mod runtime;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use runtime::{AdminToken, LoginSettings, Runtime, ServerSettings, StoreSettings};

/// One problem in a configuration file, located by line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            Self::Invalid(list) => list,
            Self::Read { .. } => &[],
        }
    }
}

fn render(list: &[Diagnostic]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads, parses and compiles a configuration file. Relative paths inside
/// it (key files) are resolved against the file's directory.
pub fn load(path: &Path) -> Result<Runtime, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_str(&text, path)
}

/// [`load`], and every target name resolved: one that does not is an
/// error at its position (`portcullis check --resolve`).
pub fn load_resolving(path: &Path) -> Result<Runtime, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    compile_text(&text, path, true)
}

/// Compiles configuration text as if it had been read from `path`.
pub fn load_str(text: &str, path: &Path) -> Result<Runtime, ConfigError> {
    compile_text(text, path, false)
}

fn compile_text(text: &str, path: &Path, resolve: bool) -> Result<Runtime, ConfigError> {
    let mut sink = Diagnostics {
        file: path,
        text,
        list: Vec::new(),
        resolve,
    };
    let raw: raw::RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            sink.at(e.span().unwrap_or(0..0), toml_message(&e));
            return Err(ConfigError::Invalid(sink.list));
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let runtime = compile::compile(raw, base, &mut sink);
    match runtime {
        Some(runtime) if sink.list.is_empty() => Ok(runtime),
        _ => Err(ConfigError::Invalid(sink.list)),
    }
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

/// Collects diagnostics with positions computed from byte spans.
pub(crate) struct Diagnostics<'a> {
    file: &'a Path,
    text: &'a str,
    list: Vec<Diagnostic>,
    /// Resolve upstream target names too (`check --resolve`); loading
    /// otherwise never touches DNS.
    pub(crate) resolve: bool,
}

impl Diagnostics<'_> {
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.list.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        });
    }
}
