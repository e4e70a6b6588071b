//! The `replay` binary: exit codes and the results.json contract.

mod common;

use common::*;
use reports::{ResultsFile, Status};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use workloads::OpKind;

fn replay(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .output()
        .expect("the replay binary runs")
}

/// A canonical CSV of a generated larson trace (with time_ns) in `dir`.
fn write_trace(dir: &Path, threads: u64, events: u64) -> PathBuf {
    let path = dir.join("larson.csv");
    let mut text = String::from("thread,time_ns,op,ptr,size,align,old_ptr\n");
    for e in larson(threads, events, 11) {
        let old = if e.op == OpKind::Realloc {
            format!("{:#x}", e.old_ptr)
        } else {
            String::new()
        };
        let size = if e.op == OpKind::Free {
            String::new()
        } else {
            e.size.to_string()
        };
        text.push_str(&format!(
            "{},{},{},{:#x},{size},,{old}\n",
            e.thread,
            e.time_ns.unwrap(),
            e.op.as_str(),
            e.ptr
        ));
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_usage_error(o: &Output, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(2),
        "{what}: stderr {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty(), "{what}: nothing on stdout");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.trim().is_empty(), "{what}: says why");
}

#[test]
fn bad_input_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path(), 2, 200);
    let trace = trace.to_str().unwrap();
    assert_usage_error(&replay(&[]), "no trace");
    assert_usage_error(&replay(&["--runs", "1"]), "options but no trace");
    let o = replay(&["--backends", "system,nope", trace]);
    assert_usage_error(&o, "unknown backend");
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"));
    let o = replay(&["/no/such/trace.csv"]);
    assert_usage_error(&o, "missing file");
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/trace.csv"));
    assert_usage_error(
        &replay(&["--config", "/no/such.toml", trace]),
        "missing config",
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "allocator = \"quantum\"\n").unwrap();
    assert_usage_error(
        &replay(&["--config", bad.to_str().unwrap(), trace]),
        "bad config",
    );
    assert_usage_error(&replay(&["--threads", "0", trace]), "--threads 0");
    assert_usage_error(&replay(&["--pace", "fast", trace]), "bad pace");
    assert_usage_error(
        &replay(&["--capacity", "12 parsecs", trace]),
        "bad capacity",
    );
}

#[test]
fn json_output_is_the_results_contract() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path(), 4, 4_000);
    let out = dir.path().join("out");
    let o = replay(&[
        "--backends",
        "system,mimalloc,pool-variable,null",
        "--runs",
        "2",
        "--threads",
        "2",
        "--json",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
        trace.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let stdout = String::from_utf8(o.stdout).unwrap();
    let results = ResultsFile::from_json(&stdout).expect("stdout is results.json only");
    assert_eq!(results.schema, 1);
    assert_eq!(results.traces.len(), 1);
    let t = &results.traces[0];
    assert_eq!(t.threads, 4);
    assert!(t.events >= 4_000 && t.peak_live_bytes > 0);
    let names: Vec<&str> = t.results.iter().map(|r| r.backend.as_str()).collect();
    assert_eq!(names, ["system", "mimalloc", "pool-variable", "null"]);
    for r in &t.results {
        assert_eq!(r.status, Status::Ok, "{}: {:?}", r.backend, r.reason);
        assert_eq!(r.runs.len(), 2);
        assert!(r.ops_per_sec > 0.0);
        assert!(r.latency_ns.alloc.count > 0 && r.latency_ns.free.count > 0);
        assert!(r.runs.iter().all(|run| run.alloc_p50_ns.is_some()));
        assert_eq!(r.alloc_failures, 0);
    }
    let reserved = |name: &str| t.results.iter().find(|r| r.backend == name).unwrap();
    assert_eq!(
        reserved("pool-variable").reserved_source.as_deref(),
        Some("pool-stats")
    );
    assert!(reserved("pool-variable").peak_reserved_bytes >= t.peak_live_bytes);
    assert_eq!(reserved("null").reserved_source, None);

    // The contract's names, checked on the raw JSON.
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for key in ["schema", "tool_version", "machine", "traces", "clock"] {
        assert!(v.get(key).is_some(), "top-level {key}");
    }
    for key in ["cpu", "cores", "os", "rustc"] {
        assert!(v["machine"].get(key).is_some(), "machine.{key}");
    }
    let trace = &v["traces"][0];
    for key in [
        "path",
        "events",
        "threads",
        "peak_live_bytes",
        "sanitation",
        "results",
    ] {
        assert!(trace.get(key).is_some(), "trace.{key}");
    }
    for key in ["repaired", "unknown_frees", "leaks"] {
        assert!(trace["sanitation"].get(key).is_some(), "sanitation.{key}");
    }
    let r = &trace["results"][0];
    for key in [
        "backend",
        "status",
        "reason",
        "runs",
        "ops_per_sec",
        "latency_ns",
        "peak_reserved_bytes",
        "alloc_failures",
    ] {
        assert!(r.get(key).is_some(), "result.{key}");
    }
    for key in [
        "wall_ns",
        "ops_per_sec",
        "alloc_failures",
        "peak_reserved_bytes",
    ] {
        assert!(r["runs"][0].get(key).is_some(), "run.{key}");
    }
    for op in ["alloc", "free", "realloc"] {
        for key in ["count", "p50", "p90", "p99", "p999", "max"] {
            assert!(
                r["latency_ns"][op].get(key).is_some(),
                "latency_ns.{op}.{key}"
            );
        }
    }
    assert_eq!(r["status"], "ok");

    // --out wrote the same results and histograms.
    let written =
        ResultsFile::from_json(&std::fs::read_to_string(out.join("results.json")).unwrap())
            .unwrap();
    assert_eq!(written, results);
    let hgrm = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "hgrm")
        })
        .count();
    assert!(hgrm >= 4 * 2, "{hgrm} .hgrm files");
}

#[test]
fn table_reports_sanitation_clock_and_each_backend() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path(), 2, 2_000);
    let o = replay(&[
        "--backends",
        "system,pool-fixed",
        "--runs",
        "1",
        "--quiet",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8(o.stdout).unwrap();
    if cfg!(debug_assertions) {
        assert!(text.starts_with("warning: debug build"), "{text}");
    }
    for want in [
        "sanitation:",
        "clock:",
        "floor",
        "system",
        "pool-fixed",
        "ops/s",
        "alloc p50",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let sanitation = text.find("sanitation:").unwrap();
    let table = text.find("alloc p50").unwrap();
    assert!(sanitation < table);
}

#[test]
fn capacity_limited_pool_counts_failures_and_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write_trace(dir.path(), 2, 4_000);
    let o = replay(&[
        "--backends",
        "pool-variable,system",
        "--capacity",
        "16KiB",
        "--runs",
        "1",
        "--json",
        "--quiet",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let results = ResultsFile::from_json(&String::from_utf8(o.stdout).unwrap()).unwrap();
    let t = &results.traces[0];
    assert!(
        t.peak_live_bytes > 16 * 1024,
        "the trace needs more than the capacity"
    );
    let pool = &t.results[0];
    assert_eq!(pool.status, Status::Ok, "{:?}", pool.reason);
    assert!(pool.alloc_failures > 0);
    assert!(pool.peak_reserved_bytes <= 16 * 1024);
    assert_eq!(
        t.results[1].alloc_failures, 0,
        "system has no capacity limit"
    );
}

/// `realloc(p, 0)` in a trace: glibc frees `p` and returns NULL for it, which must not turn
/// into a double free (an abort of the whole process) in any backend.
#[test]
fn zero_size_realloc_is_replayed_safely_on_every_cpu_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("realloc0.csv");
    let mut text = String::from("thread,time_ns,op,ptr,size,align,old_ptr\n");
    for i in 0..100u64 {
        let (a, b) = (0x1000 + i * 0x100, 0x900000 + i * 0x100);
        text.push_str(&format!("0,{},alloc,{a:#x},48,,\n", i * 10));
        text.push_str(&format!("0,{},realloc,{b:#x},0,,{a:#x}\n", i * 10 + 1));
        if i % 2 == 0 {
            text.push_str(&format!("0,{},free,{b:#x},,,\n", i * 10 + 2));
        }
    }
    std::fs::write(&path, text).unwrap();
    let out = replay(&[
        "--backends",
        "system,mimalloc,pool-fixed,pool-variable,pool-lockfree",
        "--runs",
        "1",
        "--json",
        "--quiet",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = ResultsFile::from_json(&String::from_utf8_lossy(&out.stdout)).unwrap();
    for r in &results.traces[0].results {
        assert_eq!(r.status, Status::Ok, "{}: {:?}", r.backend, r.reason);
        assert_eq!(r.alloc_failures, 0, "{}", r.backend);
    }
}
