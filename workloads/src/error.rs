//! `TraceError`: every way reading, sanitising or compiling a trace can fail.
//!
//! Each variant that concerns the trace's content names the file, the 1-based line and
//! the offending value, so that a message reads like
//! `trace.csv:17: unknown op 'alocate' (expected alloc, free or realloc)`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Longest value quoted verbatim in a message; longer ones are cut with `...`.
const MAX_QUOTED_BYTES: usize = 60;

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    // The io errors are shown in the message and deliberately not exposed as `source()`,
    // so that a `{:#}` chain does not print them twice.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}: cannot decompress ({format}): {error}", path.display())]
    Decompress {
        path: PathBuf,
        line: u64,
        format: &'static str,
        error: std::io::Error,
    },
    #[error("{}: empty trace: no header and no events", path.display())]
    Empty { path: PathBuf },
    #[error(
        "{}:{line}: unrecognised trace format: '{value}' (expected a canonical CSV header \
         with thread,op,ptr, an RMM log header Thread,Time,Action,Pointer,Size,Stream, or \
         Android memory_replay lines '<tid>: malloc <ptr> <size>')",
        path.display()
    )]
    UnknownFormat {
        path: PathBuf,
        line: u64,
        value: Quoted,
    },
    #[error("{}:{line}: bad header '{value}': {reason}", path.display())]
    BadHeader {
        path: PathBuf,
        line: u64,
        value: Quoted,
        reason: String,
    },
    #[error("{}:{line}: unknown op '{value}' (expected {expected})", path.display())]
    UnknownOp {
        path: PathBuf,
        line: u64,
        value: Quoted,
        expected: &'static str,
    },
    #[error("{}:{line}: bad {field} '{value}': {reason}", path.display())]
    BadField {
        path: PathBuf,
        line: u64,
        field: &'static str,
        value: Quoted,
        reason: String,
    },
    #[error(
        "{}:{line}: truncated line '{value}': expected {expected} fields, found {found}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        line: u64,
        value: Quoted,
        expected: usize,
        found: usize,
    },
    #[error("{}:{line}: {problem} {ptr:#x} (--strict)", path.display())]
    Strict {
        path: PathBuf,
        line: u64,
        problem: &'static str,
        ptr: u64,
    },
    #[error("{}:{line}: trace too large: {what}", path.display())]
    TooLarge {
        path: PathBuf,
        line: u64,
        what: String,
    },
    /// A PyTorch memory snapshot (a pickle) that cannot be read: `at` is a byte offset of
    /// the pickle or the place in the snapshot (`device_traces[0][17]`).
    #[error("{}: {at}: {reason}", path.display())]
    Snapshot {
        path: PathBuf,
        at: String,
        reason: String,
    },
    /// Lines end in a bare CR (classic Mac OS): read as LF-ended, the whole file would be
    /// one header line and the trace silently empty.
    #[error(
        "{}:{line}: line ends are CR only (a carriage return inside the line at byte \
         {column}); convert them to LF first, e.g. tr '\\r' '\\n' < in > out",
        path.display()
    )]
    CrLineEnds {
        path: PathBuf,
        line: u64,
        column: usize,
    },
}

impl TraceError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TraceError::Io {
            path: path.to_path_buf(),
            error: source,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            TraceError::Io { path, .. }
            | TraceError::Decompress { path, .. }
            | TraceError::Empty { path }
            | TraceError::UnknownFormat { path, .. }
            | TraceError::BadHeader { path, .. }
            | TraceError::UnknownOp { path, .. }
            | TraceError::BadField { path, .. }
            | TraceError::Truncated { path, .. }
            | TraceError::Strict { path, .. }
            | TraceError::TooLarge { path, .. }
            | TraceError::Snapshot { path, .. }
            | TraceError::CrLineEnds { path, .. } => path,
        }
    }

    /// The 1-based line the error is about, when there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            TraceError::Io { .. } | TraceError::Empty { .. } | TraceError::Snapshot { .. } => None,
            TraceError::Decompress { line, .. }
            | TraceError::UnknownFormat { line, .. }
            | TraceError::BadHeader { line, .. }
            | TraceError::UnknownOp { line, .. }
            | TraceError::BadField { line, .. }
            | TraceError::Truncated { line, .. }
            | TraceError::Strict { line, .. }
            | TraceError::TooLarge { line, .. }
            | TraceError::CrLineEnds { line, .. } => Some(*line),
        }
    }
}

/// A value from the input, shown with non-printable bytes escaped (`\xff`) and cut to a
/// readable length, so that binary garbage still gives a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted(pub Vec<u8>);

impl Quoted {
    pub fn new(bytes: &[u8]) -> Self {
        let cut = bytes.len().min(MAX_QUOTED_BYTES + 1);
        Quoted(bytes[..cut].to_vec())
    }
}

impl From<&str> for Quoted {
    fn from(s: &str) -> Self {
        Quoted::new(s.as_bytes())
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.0[..self.0.len().min(MAX_QUOTED_BYTES)];
        write!(f, "{}", shown.escape_ascii())?;
        if self.0.len() > MAX_QUOTED_BYTES {
            f.write_str("...")?;
        }
        Ok(())
    }
}
