//! Atomic file writes: a reader (a CI uploader, a dashboard polling the directory) sees either
//! the old file or the complete new one, never a torn write.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{ReportError, ResultsFile};

/// The temporary sibling of `path` a write goes through. It keeps `path`'s extension, because
/// some writers (the PNG encoder) pick the format from it, and it lives in the same directory,
/// so that the final `rename` never crosses a filesystem.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

/// Writes `bytes` to `path` through a temporary sibling, fsynced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let temp = temp_sibling(path);
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(ReportError::io(path, e));
    }
    finish_atomic(&temp, path)
}

/// Renames a completed temporary file over its destination (removing it on failure).
pub(crate) fn finish_atomic(temp: &Path, path: &Path) -> Result<(), ReportError> {
    std::fs::rename(temp, path).map_err(|e| {
        let _ = std::fs::remove_file(temp);
        ReportError::io(path, e)
    })
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
