//! Synthetic results for tests: known per-run values, so that verdicts have known answers.

use crate::stats::SplitMix64;
use crate::*;

pub fn machine() -> Machine {
    Machine {
        cpu: "test cpu".into(),
        cores: 2,
        os: "linux".into(),
        rustc: "1.95.0".into(),
        gpu: None,
    }
}

pub fn results(traces: Vec<TraceResult>) -> ResultsFile {
    ResultsFile {
        schema: SCHEMA_VERSION,
        tool_version: "0.1.0".into(),
        machine: machine(),
        clock: Some(ClockInfo {
            source: "rdtsc".into(),
            overhead_ns: 6.5,
            ticks_per_ns: 2.9,
            resolution_ns: None,
        }),
        options: serde_json::json!({ "runs": 5, "threads": 2 }),
        counts: None,
        traces,
    }
}

pub fn trace(path: &str, results: Vec<BackendResult>) -> TraceResult {
    TraceResult {
        path: path.into(),
        events: 1000,
        threads: 2,
        peak_live_bytes: 1 << 20,
        sanitation: Sanitation {
            repaired: 3,
            unknown_frees: 2,
            leaks: 1,
            double_frees: 1,
            live_reallocations: 0,
        },
        results,
        pytorch: None,
    }
}

/// An `ok` backend whose runs have these throughputs and alloc p50/p99 latencies.
pub fn backend(name: &str, ops_per_sec: &[f64], p50_ns: &[u64], p99_ns: &[u64]) -> BackendResult {
    let runs: Vec<RunResult> = (0..ops_per_sec.len())
        .map(|i| RunResult {
            wall_ns: (1e9 * 1000.0 / ops_per_sec[i]) as u64,
            ops_per_sec: ops_per_sec[i],
            alloc_failures: 0,
            peak_reserved_bytes: 2 << 20,
            alloc_p50_ns: p50_ns.get(i).copied(),
            alloc_p99_ns: p99_ns.get(i).copied(),
            free_p50_ns: p50_ns.get(i).copied(),
            trace_passes: None,
        })
        .collect();
    let summary = |p50: u64, p99: u64| LatencySummary {
        count: 500,
        p50,
        p90: (p50 + p99) / 2,
        p99,
        p999: p99 * 2,
        max: p99 * 4,
    };
    let p50 = p50_ns.first().copied().unwrap_or(20);
    let p99 = p99_ns.first().copied().unwrap_or(100);
    BackendResult {
        backend: name.into(),
        status: Status::Ok,
        reason: None,
        ops_per_sec: crate::stats::median(ops_per_sec),
        latency_ns: LatencySet {
            alloc: summary(p50, p99),
            free: summary(p50 / 2 + 1, p99 / 2 + 1),
            realloc: LatencySummary::default(),
        },
        runs,
        peak_reserved_bytes: 2 << 20,
        alloc_failures: 0,
        reserved_source: Some("pool-stats".into()),
        fragmentation: Some(0.25),
        config: None,
        min_capacity_bytes: None,
        memory_series: (0..20)
            .map(|i| MemorySample {
                seq: i * 50,
                live_bytes: (i * 40_000) % 700_000,
                reserved_bytes: 1 << 20,
            })
            .collect(),
        alloc_latency_by_size_bucket: Vec::new(),
        recorded: false,
        counts: None,
    }
}

/// Counts of a backend whose ops cost `alloc`, `free` and `realloc` instructions each (with
/// one L1 miss per 10 calls), over 600 allocs, 500 frees and 100 reallocs.
pub fn counts(alloc: u64, free: u64, realloc: u64) -> OpCounts {
    let cost = |calls: u64, per_op: u64| {
        OpCost {
            calls,
            instructions: calls * per_op,
            l1_misses: calls / 10,
            ll_misses: 0,
            estimated_cycles: calls * per_op + calls,
            ..OpCost::default()
        }
        .with_per_op()
    };
    OpCounts {
        alloc: cost(600, alloc),
        free: cost(500, free),
        realloc: cost(100, realloc),
    }
}

/// What a counted results file records about its source.
pub fn counts_info() -> CountsInfo {
    CountsInfo {
        source: "callgrind".into(),
        tool_version: "valgrind-3.19.0".into(),
        estimated_cycles_formula: "Ir + 10*(I1mr + D1mr + D1mw) + 100*(ILmr + DLmr + DLmw)".into(),
    }
}

/// `n` values around `center` with multiplicative noise of standard deviation `rel_sd`.
pub fn noisy(seed: u64, n: usize, center: f64, rel_sd: f64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| center * (rel_sd * rng.normal()).exp())
        .collect()
}

/// Latencies (ns) around `center`, with the same noise model.
pub fn noisy_ns(seed: u64, n: usize, center: f64, rel_sd: f64) -> Vec<u64> {
    noisy(seed, n, center, rel_sd)
        .into_iter()
        .map(|v| v.round() as u64)
        .collect()
}
