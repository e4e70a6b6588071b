//! `replay record -o <OUT> -- <CMD> [ARGS…]`: run a program under the LD_PRELOAD recorder
//! and write its allocation trace (canonical CSV; `.gz` / `.zst` compress it).
//!
//! Exits with the program's exit code (128 + signal if a signal ended it), or 2 when the
//! arguments are wrong or nothing could be recorded.
//!
//! Finding the recorder library (or building it with cargo when this binary runs from a
//! checkout) is this command's job; recording itself is `workloads::record`.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use workloads::record::{record_command, RecordSummary, RECORDER_LIB};

/// Environment variable naming the recorder library to use instead of searching for it.
pub const RECORDER_LIB_ENV: &str = "POOLBENCH_RECORDER_LIB";

#[derive(Debug, thiserror::Error)]
pub enum FindRecorderError {
    #[error(
        "cannot find {RECORDER_LIB} (looked in: {searched}) and cannot build it: {reason}; \
         build it with `cargo build -p poolbench-recorder --release` or set {RECORDER_LIB_ENV}"
    )]
    NotFound { searched: String, reason: String },
    #[error("{RECORDER_LIB_ENV}={}: no such file", path.display())]
    EnvPath { path: PathBuf },
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Trace to write: canonical CSV in time order; a `.gz` or `.zst` name compresses it.
    #[arg(short = 'o', long = "out", value_name = "OUT")]
    pub out: PathBuf,
    /// The program to record and its arguments (after `--`). It must be dynamically linked.
    #[arg(
        value_name = "CMD",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    // A program that cannot be found is a usage error: say so before finding (perhaps
    // building) the recorder, which can take a minute.
    if let Some(program) = args.command.first() {
        if find_program(program).is_none() {
            anyhow::bail!(
                "cannot run {}: no such program (not a file, and not found on PATH)",
                Path::new(program).display()
            );
        }
    }
    let preload = find_or_build_preload()?;
    let summary = record_command(&args.out, &args.command, &preload)?;
    eprintln!("{}", summary_text(&summary));
    Ok(summary.exit_code())
}

/// Where `program` would be executed from: the path itself when it names a directory part,
/// else the first executable file of that name on `PATH` (what `execvp` does).
fn find_program(program: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_executable = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    let path = Path::new(program);
    if path.components().count() > 1 || program.as_encoded_bytes().contains(&b'/') {
        return is_executable(path).then(|| path.to_path_buf());
    }
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn summary_text(s: &RecordSummary) -> String {
    let mut text = format!(
        "recorded {}: {} events ({} alloc, {} free, {} realloc), {} threads, {} bytes; \
         program exit code {}",
        s.out.display(),
        s.events,
        s.allocs,
        s.frees,
        s.reallocs,
        s.threads,
        s.file_bytes,
        s.exit_code(),
    );
    if s.partial_rows > 0 {
        text.push_str(&format!(
            "; {} row cut short by the program's end was dropped",
            s.partial_rows
        ));
    }
    text
}

/// Path of the LD_PRELOAD recorder: `$POOLBENCH_RECORDER_LIB`, else a build next to the
/// running executable or in its target directory (release, then debug) that is newer than
/// the recorder's sources (when they are present), else one built now with
/// `cargo build -p poolbench-recorder --release` into `<target>/poolbench-recorder`
/// (a directory of its own, so that it works from inside `cargo test`), saying so on stderr.
pub fn find_or_build_preload() -> Result<PathBuf, FindRecorderError> {
    if let Some(path) = std::env::var_os(RECORDER_LIB_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(FindRecorderError::EnvPath { path })
        };
    }
    let workspace = workspace_root();
    let sources_mtime = workspace
        .as_deref()
        .and_then(|ws| newest_mtime(&ws.join("workloads/recorder")));
    let target = target_dir(workspace.as_deref());
    let candidates = candidate_paths(target.as_deref());
    for path in &candidates {
        let fresh = match (fs::metadata(path).and_then(|m| m.modified()), sources_mtime) {
            (Ok(built), Some(sources)) => built >= sources,
            (Ok(_), None) => true,
            (Err(_), _) => false,
        };
        if fresh {
            return Ok(path.clone());
        }
    }
    let searched = candidates
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let (Some(workspace), Some(target)) = (workspace, target) else {
        return Err(FindRecorderError::NotFound {
            searched,
            reason: "the poolbench sources are not available".into(),
        });
    };
    build_preload(&workspace, &target)
        .map_err(|reason| FindRecorderError::NotFound { searched, reason })
}

/// Builds the recorder into `<target>/poolbench-recorder`, a target directory of its own:
/// inside `cargo test` the outer cargo holds the lock on `<target>`.
fn build_preload(workspace: &Path, target: &Path) -> Result<PathBuf, String> {
    let target_dir = target.join("poolbench-recorder");
    seed_rustc_info(target, &target_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.stdin(Stdio::null());
    cmd.arg("build")
        .args(["-p", "poolbench-recorder", "--release", "--manifest-path"])
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    eprintln!(
        "poolbench: building the LD_PRELOAD recorder: {} build -p poolbench-recorder --release \
         --manifest-path {} --target-dir {}",
        Path::new(&cargo).display(),
        workspace.join("Cargo.toml").display(),
        target_dir.display()
    );
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status})"));
    }
    let lib = target_dir.join("release").join(RECORDER_LIB);
    if lib.is_file() {
        Ok(lib)
    } else {
        Err(format!(
            "cargo build succeeded but {} is missing",
            lib.display()
        ))
    }
}

/// Gives the recorder's target directory the outer one's cache of rustc's target probe
/// (`.rustc_info.json`, keyed by the compiler's fingerprint, so a stale copy is ignored).
/// Cargo probes rustc with the program read from `/dev/null`; CI sandboxes exist where
/// `/dev/null` is a regular file that earlier build scripts' output has filled, and there the
/// probe fails with rustc's syntax errors about that output. With the cache, the nested build
/// runs no probe (and saves its ~100 ms). Best effort: without a cache cargo probes as usual.
fn seed_rustc_info(outer: &Path, nested: &Path) {
    const CACHE: &str = ".rustc_info.json";
    let (from, to) = (outer.join(CACHE), nested.join(CACHE));
    if to.exists() {
        return;
    }
    // Cargo caches failed probes too: copy only a cache whose every probe succeeded.
    let Ok(text) = fs::read_to_string(&from) else {
        return;
    };
    let all_succeeded = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let outputs = v.get("outputs")?.as_object()?;
            Some(
                outputs
                    .values()
                    .all(|o| o.get("success") == Some(&true.into())),
            )
        })
        .unwrap_or(false);
    if all_succeeded && fs::create_dir_all(nested).is_ok() {
        let _ = fs::write(&to, text);
    }
}

/// The workspace this binary was built from, if its sources are still there.
fn workspace_root() -> Option<PathBuf> {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    ws.join("workloads/recorder/Cargo.toml")
        .is_file()
        .then(|| ws.to_path_buf())
}

/// The cargo target directory: the running executable's nearest ancestor holding
/// `CACHEDIR.TAG` (cargo puts one there), else `$CARGO_TARGET_DIR`, else `<workspace>/target`.
fn target_dir(workspace: Option<&Path>) -> Option<PathBuf> {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe
            .ancestors()
            .skip(1)
            .find(|d| d.join("CACHEDIR.TAG").is_file())
        {
            return Some(dir.to_path_buf());
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return Some(match workspace {
            Some(ws) if dir.is_relative() => ws.join(dir),
            _ => dir,
        });
    }
    workspace.map(|ws| ws.join("target"))
}

fn candidate_paths(target: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        if exe_dir.file_name() == Some(OsStr::new("deps")) {
            if let Some(profile_dir) = exe_dir.parent() {
                dirs.push(profile_dir.to_path_buf());
            }
        }
        dirs.push(exe_dir);
    }
    if let Some(target) = target {
        dirs.push(target.join("release"));
        dirs.push(target.join("debug"));
        dirs.push(target.join("poolbench-recorder/release"));
    }
    let mut seen = BTreeSet::new();
    dirs.into_iter()
        .map(|d| d.join(RECORDER_LIB))
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// Newest modification time of the recorder's sources (its `src/` and `Cargo.toml`).
fn newest_mtime(crate_dir: &Path) -> Option<SystemTime> {
    let mut newest = fs::metadata(crate_dir.join("Cargo.toml"))
        .and_then(|m| m.modified())
        .ok()?;
    for entry in fs::read_dir(crate_dir.join("src")).ok()?.flatten() {
        if let Ok(t) = entry.metadata().and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    Some(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_include_release_and_debug() {
        let c = candidate_paths(Some(Path::new("/t")));
        assert!(c.contains(&PathBuf::from("/t/release").join(RECORDER_LIB)));
        assert!(c.contains(&PathBuf::from("/t/debug").join(RECORDER_LIB)));
        let unique: BTreeSet<_> = c.iter().collect();
        assert_eq!(unique.len(), c.len());
    }

    #[test]
    fn programs_are_found_as_execvp_finds_them() {
        assert!(find_program(OsStr::new("sh")).is_some());
        assert!(find_program(OsStr::new("/bin/sh")).is_some());
        assert!(find_program(OsStr::new("/nonexistent/program")).is_none());
        assert!(find_program(OsStr::new("no-such-program-poolbench")).is_none());
        // A directory or a file without an execute bit is not a program.
        assert!(find_program(OsStr::new("/tmp")).is_none());
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert!(find_program(plain.as_os_str()).is_none());
    }

    #[test]
    fn the_probe_cache_is_seeded_once() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("poolbench-recorder");
        let outer = dir.path().join(".rustc_info.json");
        // A cache holding a failed probe is not copied.
        fs::write(
            &outer,
            r#"{"outputs":{"1":{"success":true},"2":{"success":false}}}"#,
        )
        .unwrap();
        seed_rustc_info(dir.path(), &nested);
        assert!(!nested.join(".rustc_info.json").exists());
        let good = r#"{"outputs":{"1":{"success":true}}}"#;
        fs::write(&outer, good).unwrap();
        seed_rustc_info(dir.path(), &nested);
        assert_eq!(
            fs::read_to_string(nested.join(".rustc_info.json")).unwrap(),
            good
        );
        // An existing cache is cargo's own: left alone.
        fs::write(&outer, r#"{"outputs":{}}"#).unwrap();
        seed_rustc_info(dir.path(), &nested);
        assert_eq!(
            fs::read_to_string(nested.join(".rustc_info.json")).unwrap(),
            good
        );
    }
}
