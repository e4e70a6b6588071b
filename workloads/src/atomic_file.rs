//! Writing an output trace atomically: into a temporary sibling file, flushed to disk,
//! then renamed over the target, so a reader never sees half a trace and a failed run
//! leaves the old file (if any) in place.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "trace".into());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Stream the file's content through `write`, then move it into place at `path`.
/// Errors name the path they concern.
pub fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> io::Result<T>,
) -> io::Result<T> {
    let temp = temp_sibling(path);
    let named = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    let file = File::create(&temp).map_err(|e| named("cannot create", &temp, e))?;
    let result = (|| {
        let mut out = BufWriter::with_capacity(256 * 1024, &file);
        let value = write(&mut out)?;
        out.flush()?;
        drop(out);
        file.sync_all()?;
        Ok(value)
    })();
    let value = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(named("cannot write", &temp, e));
        }
    };
    std::fs::rename(&temp, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        named("cannot move the output into place at", path, e)
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let failed = write_atomically(&path, |w| {
            w.write_all(b"partial")?;
            Err::<(), _>(io::Error::other("generator failed"))
        });
        assert!(failed.is_err());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "new",
            "old file kept"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp left"
        );
    }
}
