//! What is wrong with a configuration file: each problem located by file,
//! line and column, collected so that every one is reported at once.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

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

/// How `portcullis check` loads a file; `serve` loads with the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Resolve every upstream target name: one that does not is an error
    /// at its position (`check --resolve`).
    pub resolve: bool,
    /// Check everything but the presence of secret files (keys, TLS
    /// certificates, CA bundles, the admin token file) and secret
    /// variables, so a deployment's configuration checks in CI without
    /// its production secrets (`check --skip-files`). A file that is
    /// there is still read and checked.
    pub skip_files: bool,
}

/// Collects diagnostics with positions computed from byte spans.
pub(crate) struct Diagnostics<'a> {
    file: &'a Path,
    text: &'a str,
    list: Vec<Diagnostic>,
    /// Resolve upstream target names too (`check --resolve`); loading
    /// otherwise never touches DNS.
    pub(crate) resolve: bool,
    /// A secret file or variable that is not there is passed over
    /// (`check --skip-files`).
    skip_files: bool,
}

impl<'a> Diagnostics<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str, options: LoadOptions) -> Self {
        Self {
            file,
            text,
            list: Vec::new(),
            resolve: options.resolve,
            skip_files: options.skip_files,
        }
    }

    /// Whether the secret file at `path` is to be passed over: it is not
    /// there, and this is `check --skip-files`.
    pub(crate) fn skips_file(&self, path: &Path) -> bool {
        self.skip_files && !path.exists()
    }

    /// Whether the secret variable `name` is to be passed over: it is not
    /// set, and this is `check --skip-files`.
    pub(crate) fn skips_variable(&self, name: &str) -> bool {
        self.skip_files && std::env::var_os(name).is_none()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn into_list(self) -> Vec<Diagnostic> {
        self.list
    }

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
