//! `replay recommend` end to end: real replays of generated traces through the binary.

use pools::{AllocatorKind, PoolConfig};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn replay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_replay"))
        .args(args)
        .output()
        .expect("run replay")
}

fn gen(kind: &str, out: &Path, events: u64, threads: u32) {
    let o = replay(&[
        "gen",
        kind,
        "-o",
        out.to_str().unwrap(),
        "--seed",
        "7",
        "--events",
        &events.to_string(),
        "--threads",
        &threads.to_string(),
    ]);
    assert!(
        o.status.success(),
        "gen {kind}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Recommendations are measured: two running at once on a 2-core runner would measure
/// each other. One at a time in this file.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn recommend(trace: &Path, toml: &Path, extra: &[&str]) -> String {
    let _one_at_a_time = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let mut args = vec![
        "recommend",
        trace.to_str().unwrap(),
        "-o",
        toml.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    let o = replay(&args);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "recommend failed: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

#[test]
fn uniform_trace_gets_a_fixed_size_pool_that_fits() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("churn.csv");
    let toml = dir.path().join("pool.toml");
    gen("fixed-churn", &trace, 200_000, 1);
    let out = recommend(&trace, &toml, &["--budget", "60", "--runs", "3"]);
    let ranked = out
        .lines()
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .count();
    assert!(ranked >= 5, "ranking has {ranked} rows:\n{out}");
    // system and mimalloc, measured in the same run, as unranked reference rows.
    for reference in ["system", "mimalloc"] {
        assert!(
            out.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.first() == Some(&"ref")
                    && cells.get(1) == Some(&reference)
                    && cells
                        .get(2)
                        .is_some_and(|ops| ops.parse::<f64>().is_ok_and(|v| v > 0.0))
            }),
            "no {reference} reference row:\n{out}"
        );
    }
    assert!(out.contains("Pareto"), "{out}");
    assert!(out.contains("Winner:"), "{out}");
    // The balanced objective weighs measured ops/s: with the thread caches, the cached kinds
    // run within a few percent of each other, so which of them wins is this machine's
    // noise. A fixed-size candidate that fits must be in the ranking.
    assert!(
        out.lines().any(|l| l.contains("fixed-size")),
        "no fixed-size candidate:\n{out}"
    );
    let config = PoolConfig::load(&toml).unwrap();
    // The written TOML round-trips to an equal config.
    assert_eq!(PoolConfig::from_toml(&config.to_toml()).unwrap(), config);
    assert_eq!(
        PoolConfig::from_toml(&std::fs::read_to_string(&toml).unwrap()).unwrap(),
        config
    );
    // Deterministic: by peak reserved bytes (exact, not timed) every kind ties on this
    // trace, and a tie goes to the simplest configuration: a fixed-size pool whose block
    // holds the trace's one size.
    let out = recommend(
        &trace,
        &toml,
        &["--budget", "60", "--runs", "3", "--objective", "memory"],
    );
    let config = PoolConfig::load(&toml).unwrap();
    assert_eq!(config.allocator, AllocatorKind::FixedSize, "{out}");
    assert!(config.block_size_bytes >= 64, "{config:?}");
}

#[test]
fn size_mix_trace_does_not_get_a_fixed_size_pool() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("mix.csv");
    let toml = dir.path().join("pool.toml");
    gen("size-mix", &trace, 40_000, 2);
    let out = recommend(&trace, &toml, &["--budget", "60", "--runs", "1"]);
    let config = PoolConfig::load(&toml).unwrap();
    assert_ne!(config.allocator, AllocatorKind::FixedSize, "{out}");
    // The recommended file drives a normal replay beside system and mimalloc.
    let o = replay(&[
        "--config",
        toml.to_str().unwrap(),
        "--runs",
        "1",
        "--json",
        "--quiet",
        trace.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = json["traces"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["backend"].as_str().unwrap())
        .collect();
    for want in ["pool", "system", "mimalloc"] {
        assert!(names.contains(&want), "{names:?}");
    }
}

#[test]
fn budget_is_respected_on_a_large_trace() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("larson.csv");
    let toml = dir.path().join("pool.toml");
    gen("larson", &trace, 1_500_000, 4);
    let budget_s = 8.0;
    let t0 = Instant::now();
    let out = recommend(&trace, &toml, &["--budget", "8", "--runs", "1"]);
    let spent = t0.elapsed();
    // Margin: one replay in flight when the budget runs out, and process start-up.
    assert!(
        spent < Duration::from_secs_f64(budget_s * 1.5 + 10.0),
        "took {spent:?} for a {budget_s} s budget:\n{out}"
    );
    assert!(PoolConfig::load(&toml).is_ok());
}

#[test]
fn bad_arguments_are_usage_errors() {
    let o = replay(&["recommend", "/no/such/trace.csv", "-o", "/tmp/x.toml"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/no/such/trace.csv"), "{err}");
    let o = replay(&["recommend", "x.csv", "-o", "y.toml", "--budget", "0"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn device_traces_are_searched_in_the_gpu_space() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("gpu.csv");
    let toml = dir.path().join("gpu.toml");
    gen("gpu-training", &trace, 20_000, 2);
    let out = recommend(
        &trace,
        &toml,
        &["--budget", "60", "--runs", "1", "--simulate-gpu", "80GiB"],
    );
    let config = PoolConfig::load(&toml).unwrap();
    assert_eq!(config.memory_type, pools::MemoryType::Device, "{out}");
    assert!(out.contains("--simulate-gpu"), "{out}");
    // cuda-async is the reference for device traces (skipped, with its reason, without CUDA).
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("ref") && l.contains("cuda-async")),
        "{out}"
    );
}
