//! An output directory written as one set: every file goes into a staging directory beside
//! the destination, which is then renamed into place. A reader of `DIR` sees the old set
//! or the new one, never `results.json` of one run beside `report.html` of another.
//!
//! ```text
//! parent/.DIR.poolbench-tmp-PID   staging: the new set is written here
//! parent/.DIR.poolbench-old-PID   the previous DIR, for the instant between two renames
//! ```
//!
//! Entries of an existing `DIR` that poolbench does not write (a CI job's `junit.xml`,
//! a user's notes) are moved into the new directory, so only poolbench's own files are
//! replaced. A run killed at any point leaves staging or old directories behind; the next
//! `prepare` of the same `DIR` removes them once their process is gone (and puts an old
//! directory back if it was killed between the two renames).
//!
//! `prepare` runs before the replay, so an unwritable `--out` is found in milliseconds,
//! not after the whole replay.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::ReportError;

const TMP_TAG: &str = ".poolbench-tmp-";
const OLD_TAG: &str = ".poolbench-old-";

/// A staging directory for `dest`; dropped without `commit`, it is removed.
#[derive(Debug)]
pub struct StagedDir {
    dest: PathBuf,
    staging: PathBuf,
    committed: bool,
}

/// Whether a file name in an output directory is one that poolbench writes there (and so
/// is replaced by the next run, not carried over).
pub fn is_report_file(name: &str) -> bool {
    matches!(name, "results.json" | "report.html" | "summary.md")
        || [".hgrm", ".png", ".svg"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

impl StagedDir {
    /// Check that `dest` can be written (it is a directory or can be created as one),
    /// remove stale temporaries of earlier runs, and create the staging directory.
    pub fn prepare(dest: &Path) -> Result<StagedDir, ReportError> {
        let dest = absolute(dest)?;
        if dest.exists() && !dest.is_dir() {
            return Err(ReportError::io(
                &dest,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a directory",
                ),
            ));
        }
        let (parent, name) = split(&dest)?;
        std::fs::create_dir_all(&parent).map_err(|e| ReportError::io(&parent, e))?;
        remove_stale(&parent, &name, &dest);
        let staging = parent.join(tagged(&name, TMP_TAG, std::process::id()));
        // A leftover of this very pid (a reused pid) is stale as well.
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging).map_err(|e| ReportError::io(&dest, e))?;
        Ok(StagedDir {
            dest,
            staging,
            committed: false,
        })
    }

    /// Where the files go until `commit`.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The directory the set is committed to.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Rename the staged set into place, carrying over entries of the previous directory
    /// that poolbench did not write.
    pub fn commit(mut self) -> Result<(), ReportError> {
        let io = |path: &Path, e| ReportError::io(path, e);
        if !self.dest.exists() {
            std::fs::rename(&self.staging, &self.dest).map_err(|e| io(&self.dest, e))?;
        } else {
            let (parent, name) = split(&self.dest)?;
            let old = parent.join(tagged(&name, OLD_TAG, std::process::id()));
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&self.dest, &old).map_err(|e| io(&self.dest, e))?;
            if let Err(e) = std::fs::rename(&self.staging, &self.dest) {
                // Put the previous set back rather than leave no directory at all.
                let _ = std::fs::rename(&old, &self.dest);
                return Err(io(&self.dest, e));
            }
            carry_over(&old, &self.dest);
            let _ = std::fs::remove_dir_all(&old);
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

fn absolute(dest: &Path) -> Result<PathBuf, ReportError> {
    // `.` or `..` name no entry to rename: resolve them first.
    let resolved = if dest.exists() {
        dest.canonicalize()
    } else {
        std::path::absolute(dest)
    };
    resolved.map_err(|e| ReportError::io(dest, e))
}

fn split(dest: &Path) -> Result<(PathBuf, OsString), ReportError> {
    match (dest.parent(), dest.file_name()) {
        (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name.to_os_string())),
        _ => Err(ReportError::Invalid(format!(
            "{}: cannot be an output directory (it has no parent to stage in)",
            dest.display()
        ))),
    }
}

fn tagged(name: &OsString, tag: &str, pid: u32) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(tag);
    s.push(pid.to_string());
    s
}

/// Whether process `pid` still runs (its staging directory may be in use).
fn alive(pid: u32) -> bool {
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove the staging and old directories that dead runs left beside `dest`.
fn remove_stale(parent: &Path, name: &OsString, dest: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = {
        let mut s = OsString::from(".");
        s.push(name);
        s.into_string().unwrap_or_default()
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let (is_old, pid) = if let Some(pid) = rest.strip_prefix(TMP_TAG) {
            (false, pid)
        } else if let Some(pid) = rest.strip_prefix(OLD_TAG) {
            (true, pid)
        } else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        let path = entry.path();
        if is_old {
            if !dest.exists() {
                // Killed between the two renames: the old set is the current one.
                let _ = std::fs::rename(&path, dest);
                continue;
            }
            carry_over(&path, dest);
        }
        let _ = std::fs::remove_dir_all(&path);
    }
}

/// Move the entries of `from` that poolbench does not write into `to` (never over an
/// entry already there).
fn carry_over(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_some_and(is_report_file) {
            continue;
        }
        let target = to.join(&name);
        if !target.exists() {
            let _ = std::fs::rename(entry.path(), target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_set_replaces_the_old_one_whole_and_keeps_foreign_files() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        for name in [
            "results.json",
            "report.html",
            "old.system.alloc.hgrm",
            "junit.xml",
        ] {
            std::fs::write(dest.join(name), "old").unwrap();
        }
        let staged = StagedDir::prepare(&dest).unwrap();
        std::fs::write(staged.path().join("results.json"), "new").unwrap();
        staged.commit().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dest)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["junit.xml", "results.json"]);
        assert_eq!(
            std::fs::read_to_string(dest.join("results.json")).unwrap(),
            "new"
        );
        // Nothing is left beside it.
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temporaries_of_dead_runs_are_removed_and_an_interrupted_swap_undone() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("out");
        // pid 0 never names a live process of ours.
        let stale_tmp = root.path().join(".out.poolbench-tmp-0");
        std::fs::create_dir(&stale_tmp).unwrap();
        std::fs::write(stale_tmp.join("results.json"), "partial").unwrap();
        let stale_old = root.path().join(".out.poolbench-old-0");
        std::fs::create_dir(&stale_old).unwrap();
        std::fs::write(stale_old.join("results.json"), "previous").unwrap();
        let staged = StagedDir::prepare(&dest).unwrap();
        assert!(!stale_tmp.exists());
        // The old set was put back (the run died between its two renames)...
        assert_eq!(
            std::fs::read_to_string(dest.join("results.json")).unwrap(),
            "previous"
        );
        // ...and is replaced by this run's.
        std::fs::write(staged.path().join("summary.md"), "new").unwrap();
        staged.commit().unwrap();
        assert!(!dest.join("results.json").exists());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_unwritable_destination_is_an_error_before_anything_runs() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("plain-file");
        std::fs::write(&file, "x").unwrap();
        let err = StagedDir::prepare(&file.join("out")).unwrap_err();
        assert!(err.to_string().contains("plain-file"), "{err}");
        let err = StagedDir::prepare(&file).unwrap_err();
        assert!(
            err.to_string().contains("exists and is not a directory"),
            "{err}"
        );
        // A staging directory dropped without commit leaves nothing.
        let dest = root.path().join("out");
        drop(StagedDir::prepare(&dest).unwrap());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
    }
}
