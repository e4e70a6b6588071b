//! The one error type of this crate: every variant names the file or input it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a results.json file: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: unsupported results schema {found} (this tool reads schema {expected})")]
    Schema {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl ReportError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }
}
