//! `replay counts-child REQUEST MANIFEST`: the process valgrind runs. It loads the traces,
//! makes one counting pass per (trace, backend) through the shims, marks the end of each with
//! [`super::counts_checkpoint`], and writes a manifest saying which dump is which.

use crate::backends::{self, BackendSetup};
use crate::engine::{ReplayPlan, Touch};
use anyhow::Context;
use pools::PoolConfig;
use reports::OpCounts;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Workers of a counting pass (see [`run_child`]).
pub const COUNTING_WORKERS: usize = 1;

/// What the child replays: the parts of `ReplayOptions` a counting pass depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountsRequest {
    pub traces: Vec<PathBuf>,
    pub backends: Vec<String>,
    /// The pool configuration as TOML.
    pub config_toml: String,
    /// `none`, `first` or `all`.
    pub touch: String,
    pub capacity_bytes: Option<u64>,
    pub strict: bool,
}

/// One (trace, backend) of a counting run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountedEntry {
    pub trace_index: usize,
    pub backend: String,
    /// The dump number callgrind gave this entry's costs (`None`: not counted).
    pub dump: Option<u32>,
    /// Calls made per op kind (alloc, free, realloc).
    pub calls: Option<[u64; 3]>,
    /// Filled by the parent from the dump.
    #[serde(default)]
    pub counts: Option<OpCounts>,
    /// Why there are no counts (skipped or failed backend).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildManifest {
    pub entries: Vec<CountedEntry>,
}

fn parse_touch(text: &str) -> anyhow::Result<Touch> {
    match text {
        "none" => Ok(Touch::None),
        "first" => Ok(Touch::First),
        "all" => Ok(Touch::All),
        other => anyhow::bail!("counts request: unknown touch '{other}'"),
    }
}

/// Runs the counting passes of `request_path` and writes the manifest to `manifest_path`.
pub fn run_child(request_path: &Path, manifest_path: &Path) -> anyhow::Result<()> {
    let request: CountsRequest = serde_json::from_slice(
        &std::fs::read(request_path)
            .with_context(|| format!("cannot read {}", request_path.display()))?,
    )
    .with_context(|| format!("{}: bad counts request", request_path.display()))?;
    let config = PoolConfig::from_toml(&request.config_toml)
        .map_err(|e| anyhow::anyhow!("counts request: pool config: {e}"))?;
    let touch = parse_touch(&request.touch)?;
    // A fixed order, whatever order the request lists them in: backends share the process
    // (glibc's heap, the simulated caches), so a backend's counts depend on which ran before
    // it. Reverse registry order counts the reference allocators (null, mimalloc, system)
    // before any pool: a change to a pool cannot move their counts (seen: up to 2% on
    // `system` and `mimalloc` when they ran after pools whose config changed).
    let requested =
        backends::BackendSelection::resolve(&request.backends).map_err(anyhow::Error::msg)?;
    let selected: Vec<_> = backends::registry()
        .iter()
        .rev()
        .filter(|b| requested.backends().iter().any(|r| r.name() == b.name()))
        .collect();
    let load = workloads::LoadOptions {
        strict: request.strict,
        keep_times: false,
        ..workloads::LoadOptions::default()
    };
    // Every trace is loaded before any pass, and the loops run backend-major: the reference
    // allocators' counts on every trace are taken before any pool has run in the process,
    // so no pool change can move them.
    let mut plans = Vec::with_capacity(request.traces.len());
    for path in &request.traces {
        let trace = workloads::load_trace(path, &load)
            .with_context(|| format!("cannot load trace {}", path.display()))?;
        // One worker: the trace's ops in their global order. Valgrind runs one thread at a
        // time anyway; with one worker the order of every call — and so every count — is the
        // same from run to run (with several, glibc's per-thread arenas and the wait/yield
        // interleaving made `system`'s counts move by up to 20%).
        let plan = ReplayPlan::new(&trace.compiled, COUNTING_WORKERS)
            .with_context(|| format!("trace {}", path.display()))?;
        plans.push(plan);
    }
    let setup = BackendSetup {
        config,
        capacity_bytes: request.capacity_bytes,
        workers: COUNTING_WORKERS,
        simulate_gpu_bytes: None,
    };
    let mut manifest = ChildManifest::default();
    let mut dumps = 0u32;
    for backend in &selected {
        for (trace_index, plan) in plans.iter().enumerate() {
            let mut entry = CountedEntry {
                trace_index,
                backend: backend.name().to_owned(),
                dump: None,
                calls: None,
                counts: None,
                reason: None,
            };
            match backend.check_available(&setup) {
                Err(why) => entry.reason = Some(format!("skipped: {why}")),
                Ok(()) => {
                    let outcome = backend.run_counted(&setup, plan, touch);
                    // Every attempted pass ends with a dump, so that a failed one's partial
                    // costs never leak into the next backend's.
                    super::counts_checkpoint(manifest.entries.len());
                    dumps += 1;
                    match outcome {
                        Ok(calls) => {
                            entry.dump = Some(dumps);
                            entry.calls = Some(calls);
                        }
                        Err(e) => entry.reason = Some(format!("failed: {e}")),
                    }
                }
            }
            manifest.entries.push(entry);
        }
    }
    std::fs::write(manifest_path, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_counts_calls_natively() {
        // Without valgrind the child still runs its passes and writes the manifest: the
        // calls per op kind are the trace's.
        let dir = tempfile::tempdir().unwrap();
        let trace = dir.path().join("t.csv");
        std::fs::write(
            &trace,
            "thread,op,ptr,size,old_ptr\n0,alloc,0x10,16,\n0,alloc,0x20,32,\n\
             0,realloc,0x30,64,0x20\n0,free,0x10,,\n",
        )
        .unwrap();
        let request = CountsRequest {
            traces: vec![trace],
            backends: vec!["system".into(), "pool-fixed".into()],
            config_toml: PoolConfig::default_cpu().to_toml(),
            touch: "first".into(),
            capacity_bytes: None,
            strict: false,
        };
        let request_path = dir.path().join("request.json");
        std::fs::write(&request_path, serde_json::to_vec(&request).unwrap()).unwrap();
        let manifest_path = dir.path().join("manifest.json");
        run_child(&request_path, &manifest_path).unwrap();
        let manifest: ChildManifest =
            serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
        assert_eq!(manifest.entries.len(), 2);
        // Reference allocators are counted before pools.
        assert_eq!(manifest.entries[0].backend, "system");
        for (i, entry) in manifest.entries.iter().enumerate() {
            assert_eq!(entry.dump, Some(i as u32 + 1));
            let [alloc, free, realloc] = entry.calls.unwrap();
            assert_eq!(alloc, 2);
            assert_eq!(realloc, 1);
            // One free in the trace, and the engine frees the block the trace leaks.
            assert_eq!(free, 2, "{entry:?}");
        }
    }
}
