//! The one way this workspace writes a file: a reader (a CI uploader, a dashboard polling a
//! directory, the next `replay --config`) sees the old file or the complete new one, never
//! a torn one, and after a crash or power loss the path holds one of the two.
//!
//! The steps, in this order:
//! 1. the content goes to a temporary file in the same directory as the target, so that
//!    the rename below never crosses a filesystem (a cross-device rename is a copy);
//! 2. the temporary file is fsynced, so that its data is on disk before its name is;
//! 3. it is renamed over the target (atomic on POSIX filesystems);
//! 4. the directory is fsynced, so that the rename itself survives a power loss.
//!
//! On any error the temporary file is removed and the target is left as it was.
//!
//! Temporary names are `.tmp-<pid>-<n>-<target name>`: hidden, unique within a process
//! (`n` counts this process's writes), and ending in the target's own extension, because
//! some writers (the PNG encoder) choose the format from the file name.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Buffer between the caller's writes and the temporary file.
const BUFFER_BYTES: usize = 256 * 1024;

/// Writes so far in this process: makes concurrent writes of one path use distinct
/// temporary files.
static WRITES: AtomicU64 = AtomicU64::new(0);

/// The temporary sibling a write of `path` goes through (see the crate docs).
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".tmp-{}-{n}-{name}", std::process::id()))
}

/// Streams the content through `write` into a temporary sibling of `path`, then moves it
/// into place (see the crate docs). An error from `write` or from the file system leaves
/// `path` as it was and no temporary file behind. Errors are returned as they come; the
/// caller names `path` in its own error.
pub fn write_atomically<T, E>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<io::Error>,
{
    write_through_temp_path(path, |temp| {
        let mut out = BufWriter::with_capacity(BUFFER_BYTES, File::create(temp)?);
        let value = write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?;
        Ok(value)
    })
}

/// For writers that insist on opening the file themselves (an image encoder given a
/// path): `write` creates and fills the file at the temporary path it is handed, which is
/// then synced and moved into place at `path` as [`write_atomically`] does.
pub fn write_through_temp_path<T, E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<io::Error>,
{
    let temp = temp_path_for(path);
    let written = write(&temp).and_then(|value| {
        File::open(&temp)?.sync_all()?;
        Ok(value)
    });
    let value = match written {
        Ok(value) => value,
        Err(e) => {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(e.into());
    }
    sync_directory_of(path)?;
    Ok(value)
}

/// fsync of the directory holding `path`, so that a rename into it is durable.
fn sync_directory_of(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        fs::write(&path, "old").unwrap();
        write_atomically(&path, |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        let failed = write_atomically(&path, |w| {
            w.write_all(b"partial")?;
            Err::<(), _>(io::Error::other("generator failed"))
        });
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "new", "old file kept");
        assert_eq!(names_in(dir.path()), vec!["out.csv"], "no temp left");
    }

    #[test]
    fn a_write_into_a_missing_directory_fails_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("a.txt");
        let err = write_atomically(&path, |w| w.write_all(b"x")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(names_in(dir.path()).is_empty());
    }

    #[test]
    fn the_directory_of_a_bare_file_name_is_the_current_one() {
        // `Path::new("a.txt").parent()` is `Some("")`, which cannot be opened.
        sync_directory_of(Path::new("a.txt")).unwrap();
    }

    #[test]
    fn temp_path_writers_keep_the_extension_and_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plot.png");
        let mut seen = PathBuf::new();
        write_through_temp_path(&path, |temp| {
            seen = temp.to_path_buf();
            fs::write(temp, b"png")
        })
        .unwrap();
        assert_eq!(seen.extension().unwrap(), "png");
        assert_eq!(seen.parent(), path.parent());
        assert_eq!(fs::read(&path).unwrap(), b"png");
        let failed = write_through_temp_path(&path, |temp| {
            fs::write(temp, b"half")?;
            Err::<(), _>(io::Error::other("encoder failed"))
        });
        assert_eq!(failed.unwrap_err().to_string(), "encoder failed");
        assert_eq!(fs::read(&path).unwrap(), b"png");
        assert_eq!(names_in(dir.path()), vec!["plot.png"]);
    }

    #[test]
    fn temporary_names_are_distinct_per_write() {
        let path = Path::new("/x/results.json");
        assert_ne!(temp_path_for(path), temp_path_for(path));
    }
}
