//! The one error type of this crate: every variant names the file or input it is about.
//! The underlying error is part of the message (not a `source()`), so that a caller printing
//! the chain (`{:#}` in anyhow) shows it once.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: not a results.json file: {error}", path.display())]
    Json {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("{}: unsupported results schema {found} (this tool reads schema {expected})", path.display())]
    Schema {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("plot {}: {message}", path.display())]
    Plot { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ReportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            error: source,
        }
    }
}
