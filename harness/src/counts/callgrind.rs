//! Counts from valgrind's callgrind: running the child under it, and reading its dumps.
//!
//! A dump (callgrind format, version 1) lists, per function (`fn=`), cost lines
//! `<positions> <event counts>`; a call from that function (`cfn=`, `calls=`) is followed by
//! one cost line holding the call's inclusive cost. The inclusive cost of a shim is therefore
//! the sum of every cost line inside its `fn=` blocks. Names are compressed: `(id) name` the
//! first time, `(id)` afterwards, for `fn=` and `cfn=` alike.

use super::child::{ChildManifest, CountedEntry, CountsRequest};
use super::{op_counts, CountsSource};
use anyhow::{bail, Context};
use reports::CountsInfo;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Simulated cost of one op kind in one dump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCost {
    pub instructions: u64,
    pub l1_misses: u64,
    pub ll_misses: u64,
}

/// The shims' inclusive costs in one dump: alloc, free, realloc.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DumpCosts {
    pub per_kind: [KindCost; 3],
}

/// Shim name fragments, in `DumpCosts::per_kind` order.
const SHIMS: [&str; 3] = ["counted_op_alloc", "counted_op_free", "counted_op_realloc"];

/// Reads one callgrind dump. `origin` names the file in errors.
pub fn parse_callgrind_dump(text: &str, origin: &str) -> anyhow::Result<DumpCosts> {
    let mut positions = 1usize;
    let mut events: Vec<String> = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut current: Option<usize> = None; // shim index of the current `fn=` block
    let mut costs = DumpCosts::default();
    for (number, line) in text.lines().enumerate() {
        let at = || format!("{origin}:{}", number + 1);
        if let Some(rest) = line.strip_prefix("positions:") {
            positions = rest.split_whitespace().count().max(1);
        } else if let Some(rest) = line.strip_prefix("events:") {
            events = rest.split_whitespace().map(str::to_owned).collect();
        } else if let Some(rest) = line.strip_prefix("fn=") {
            let name = resolve_name(rest, &mut names);
            current = SHIMS.iter().position(|s| name.contains(s));
        } else if let Some(rest) = line.strip_prefix("cfn=") {
            resolve_name(rest, &mut names); // defines the id for later `fn=` lines
        } else if line.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '*')) {
            let Some(kind) = current else { continue };
            if events.is_empty() {
                bail!("{}: cost line before the `events:` header", at());
            }
            let mut fields = line.split_whitespace().skip(positions);
            let cost = &mut costs.per_kind[kind];
            for event in &events {
                let Some(field) = fields.next() else { break };
                let value: u64 = field
                    .parse()
                    .with_context(|| format!("{}: bad count '{field}' for {event}", at()))?;
                match event.as_str() {
                    "Ir" => cost.instructions += value,
                    "I1mr" | "D1mr" | "D1mw" => cost.l1_misses += value,
                    "ILmr" | "DLmr" | "DLmw" => cost.ll_misses += value,
                    _ => {}
                }
            }
        }
    }
    if events.is_empty() {
        bail!("{origin}: not a callgrind dump (no `events:` line)");
    }
    Ok(costs)
}

/// `(id) name` defines and returns `name`; `(id)` looks it up; a bare name is itself.
fn resolve_name(spec: &str, names: &mut HashMap<String, String>) -> String {
    let spec = spec.trim();
    if let Some(rest) = spec.strip_prefix('(') {
        if let Some(close) = rest.find(')') {
            let id = &rest[..close];
            let name = rest[close + 1..].trim();
            if name.is_empty() {
                return names.get(id).cloned().unwrap_or_default();
            }
            names.insert(id.to_owned(), name.to_owned());
            return name.to_owned();
        }
    }
    spec.to_owned()
}

/// Counts from `valgrind --tool=callgrind`, running this binary's `counts-child`.
#[derive(Debug, Clone)]
pub struct CallgrindSource {
    pub valgrind: PathBuf,
    /// `valgrind-3.19.0`.
    pub version: String,
    /// The `replay` binary to run under valgrind.
    pub replay: PathBuf,
}

/// What to install when valgrind is missing.
pub const INSTALL_HINT: &str = "install valgrind (Debian/Ubuntu: `sudo apt-get install valgrind`; \
Fedora: `sudo dnf install valgrind`; Alpine: `apk add valgrind`), or set VALGRIND to its path";

impl CallgrindSource {
    /// Finds valgrind (`$VALGRIND`, else `valgrind` on `PATH`) and this binary.
    pub fn locate() -> anyhow::Result<Self> {
        let valgrind = std::env::var_os("VALGRIND")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("valgrind"));
        let output = Command::new(&valgrind).arg("--version").output();
        let version = match output {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            Ok(o) => bail!(
                "--counts: `{} --version` failed ({}); {INSTALL_HINT}",
                valgrind.display(),
                o.status
            ),
            Err(e) => bail!(
                "--counts needs valgrind, which could not be run ({}: {e}); {INSTALL_HINT}",
                valgrind.display()
            ),
        };
        let replay = std::env::current_exe().context("--counts: cannot find the replay binary")?;
        Ok(CallgrindSource {
            valgrind,
            version,
            replay,
        })
    }
}

impl CountsSource for CallgrindSource {
    fn info(&self) -> CountsInfo {
        CountsInfo {
            source: "callgrind".into(),
            tool_version: self.version.clone(),
            estimated_cycles_formula: super::ESTIMATED_CYCLES_FORMULA.into(),
        }
    }

    fn collect(&self, request: &CountsRequest) -> anyhow::Result<Vec<CountedEntry>> {
        let dir = tempfile::Builder::new()
            .prefix("poolbench-counts.")
            .tempdir()
            .context("--counts: cannot make a temporary directory")?;
        let request_path = dir.path().join("request.json");
        let manifest_path = dir.path().join("manifest.json");
        std::fs::write(&request_path, serde_json::to_vec(request)?)
            .with_context(|| format!("cannot write {}", request_path.display()))?;
        let out_base = dir.path().join("callgrind.out");
        let log = dir.path().join("valgrind.log");
        let status = Command::new(&self.valgrind)
            .arg("--tool=callgrind")
            .arg("--collect-atstart=no")
            .arg("--toggle-collect=*counted_op_*")
            .arg("--dump-after=*counts_checkpoint*")
            .arg("--cache-sim=yes")
            .arg(format!("--callgrind-out-file={}", out_base.display()))
            .arg(format!("--log-file={}", log.display()))
            .arg(&self.replay)
            .arg("counts-child")
            .arg(&request_path)
            .arg(&manifest_path)
            .status()
            .with_context(|| format!("cannot run {}", self.valgrind.display()))?;
        if !status.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "--counts: the replay under callgrind failed ({status}); valgrind's log ends:\n{}",
                tail.join("\n")
            );
        }
        let manifest: ChildManifest = serde_json::from_slice(
            &std::fs::read(&manifest_path)
                .with_context(|| format!("cannot read {}", manifest_path.display()))?,
        )
        .with_context(|| format!("{}: bad manifest", manifest_path.display()))?;
        read_dumps(&out_base, manifest)
    }
}

/// Pairs the manifest's entries with dump files `<base>.<dump>` and fills their counts.
fn read_dumps(out_base: &Path, manifest: ChildManifest) -> anyhow::Result<Vec<CountedEntry>> {
    let mut entries = Vec::with_capacity(manifest.entries.len());
    for mut entry in manifest.entries {
        if let (Some(dump), Some(calls)) = (entry.dump, entry.calls) {
            let path = PathBuf::from(format!("{}.{dump}", out_base.display()));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("--counts: cannot read {}", path.display()))?;
            let costs = parse_callgrind_dump(&text, &path.display().to_string())?;
            entry.counts = Some(op_counts(&costs, calls));
        }
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "# callgrind format
version: 1
creator: callgrind-3.19.0
positions: line
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
summary: 999 0 0 0 0 0 0 0 0

ob=(6) /tmp/replay
fl=(1) src/engine.rs
fn=(10) harness::engine::pass::run_ops
cfn=(20) harness::counts::counted_op_alloc
calls=3 12
40 500 0 0 1 2 3 0 1 0
fn=(20)
12 100 20 10 0 1 0 0 0 0
+2 50
cfn=(30) pools::cpu_pool::CpuPool::allocate_with
calls=3 80
* 250 10 10 0 0 1 0 0 1
fn=(30)
80 250 10 10 0 0 1 0 0 1
fn=(40) harness::counts::counted_op_free::<harness::backends::pool::PoolBackend>
5 77 0 0 1 0 0 1 0 0
";

    #[test]
    fn shim_costs_are_inclusive_and_per_kind() {
        let costs = parse_callgrind_dump(DUMP, "test").unwrap();
        // alloc: self 100 + 50, plus the call's inclusive 250; the caller's line is not its.
        assert_eq!(
            costs.per_kind[0],
            KindCost {
                instructions: 400,
                l1_misses: 2,
                ll_misses: 1
            }
        );
        assert_eq!(
            costs.per_kind[1],
            KindCost {
                instructions: 77,
                l1_misses: 1,
                ll_misses: 1
            }
        );
        assert_eq!(costs.per_kind[2], KindCost::default());
    }

    #[test]
    fn garbage_is_an_error_naming_the_line() {
        let err = parse_callgrind_dump("events: Ir\nfn=(1) x::counted_op_free\n3 12x\n", "dump.1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dump.1:3") && err.contains("12x"), "{err}");
        assert!(parse_callgrind_dump("hello\n", "f").is_err());
    }

    #[test]
    fn estimated_cycles_follow_the_formula() {
        let costs = parse_callgrind_dump(DUMP, "test").unwrap();
        let counts = op_counts(&costs, [3, 1, 0]);
        assert_eq!(counts.alloc.estimated_cycles, 400 + 10 * 2 + 100);
        assert!((counts.alloc.instructions_per_op - 400.0 / 3.0).abs() < 1e-9);
        assert_eq!(counts.realloc.instructions_per_op, 0.0);
    }
}
