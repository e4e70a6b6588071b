//! Reading and writing results files. Every write goes through `atomic_file`: a reader (a CI
//! uploader, a dashboard polling the directory) sees either the old file or the complete new
//! one, never a torn write.

use std::io::Write;
use std::path::Path;

use crate::{ReportError, ResultsFile};

/// Writes `bytes` to `path` atomically (`atomic_file`: a temporary sibling, fsynced, renamed
/// over `path`, the directory fsynced), naming `path` in the error.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    atomic_file::write_atomically(path, |w| w.write_all(bytes))
        .map_err(|e| ReportError::io(path, e))
}

/// Writes `results` as pretty JSON (with a trailing newline) to `path`, atomically.
pub fn write_results_json(path: &Path, results: &ResultsFile) -> Result<(), ReportError> {
    let mut text = results.to_json();
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads and parses a results.json file, checking its schema version.
pub fn read_results_json(path: &Path) -> Result<ResultsFile, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
    let results = ResultsFile::from_json(&text).map_err(|error| ReportError::Json {
        path: path.to_path_buf(),
        error,
    })?;
    if results.schema != crate::SCHEMA_VERSION {
        return Err(ReportError::Schema {
            path: path.to_path_buf(),
            found: results.schema,
            expected: crate::SCHEMA_VERSION,
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.txt")]);
    }

    #[test]
    fn atomic_write_into_missing_directory_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("a.txt");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("a.txt"), "{err}");
    }
}
