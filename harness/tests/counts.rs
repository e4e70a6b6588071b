//! The counts tier end to end with a fake counts source (no valgrind needed): the counting
//! child runs natively for the real call counts, the fake prices each call per backend, and
//! the gate judges the result with the exact margin.

use harness::counts::{run_child, ChildManifest, CountedEntry, CountsRequest, CountsSource};
use harness::runner::{add_counts, replay_traces, ReplayOptions};
use reports::gate::{gate_results, GateOptions, EXIT_PASS, EXIT_REGRESSION};
use reports::{CountsInfo, OpCost, OpCounts};

/// Prices every call: `alloc_cost` instructions per alloc for pool-fixed, fixed costs for the
/// others.
struct FakeSource {
    pool_fixed_alloc_cost: u64,
}

impl CountsSource for FakeSource {
    fn info(&self) -> CountsInfo {
        CountsInfo {
            source: "fake".into(),
            tool_version: "fake-1".into(),
            estimated_cycles_formula: "Ir".into(),
        }
    }

    fn collect(&self, request: &CountsRequest) -> anyhow::Result<Vec<CountedEntry>> {
        let dir = tempfile::tempdir()?;
        let request_path = dir.path().join("request.json");
        let manifest_path = dir.path().join("manifest.json");
        std::fs::write(&request_path, serde_json::to_vec(request)?)?;
        run_child(&request_path, &manifest_path)?;
        let manifest: ChildManifest = serde_json::from_slice(&std::fs::read(&manifest_path)?)?;
        Ok(manifest
            .entries
            .into_iter()
            .map(|mut e| {
                let [alloc, free, realloc] = e.calls.expect("every CPU backend counted");
                let per_alloc = if e.backend == "pool-fixed" {
                    self.pool_fixed_alloc_cost
                } else {
                    90
                };
                let cost = |calls: u64, per_op: u64| {
                    OpCost {
                        calls,
                        instructions: calls * per_op,
                        estimated_cycles: calls * per_op,
                        ..OpCost::default()
                    }
                    .with_per_op()
                };
                e.counts = Some(OpCounts {
                    alloc: cost(alloc, per_alloc),
                    free: cost(free, 40),
                    realloc: cost(realloc, 300),
                });
                e
            })
            .collect())
    }
}

fn trace(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("churn.csv");
    let mut text = String::from("thread,op,ptr,size,old_ptr\n");
    for i in 0..200u64 {
        text.push_str(&format!("0,alloc,{},{},\n", 0x1000 + i * 16, 16 + i % 64));
        if i % 3 == 2 {
            text.push_str(&format!("0,free,{},,\n", 0x1000 + (i - 1) * 16));
        }
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn counts_are_attached_per_backend_and_judged_with_the_exact_margin() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ReplayOptions {
        traces: vec![trace(dir.path())],
        backends: harness::backends::BackendSelection::resolve(&[
            "system".into(),
            "pool-fixed".into(),
        ])
        .unwrap(),
        runs: 6,
        quiet: true,
        ..ReplayOptions::default()
    };
    let mut baseline = replay_traces(&opts).unwrap();
    add_counts(
        &mut baseline,
        &opts,
        &FakeSource {
            pool_fixed_alloc_cost: 100,
        },
    )
    .unwrap();
    let base = &baseline.results;
    assert_eq!(base.counts.as_ref().unwrap().source, "fake");
    for r in &base.traces[0].results {
        let counts = r.counts.expect("counts attached");
        assert_eq!(counts.alloc.calls, 200, "{}", r.backend);
        // 66 frees in the trace, the other 134 blocks leak and are freed by the engine.
        assert_eq!(counts.free.calls, 200, "{}", r.backend);
    }

    // Same timings, pool-fixed's alloc 3% costlier: a counts regression naming it.
    let mut current = baseline.clone();
    add_counts(
        &mut current,
        &opts,
        &FakeSource {
            pool_fixed_alloc_cost: 103,
        },
    )
    .unwrap();
    let report = gate_results(&baseline.results, &current.results, &GateOptions::default());
    assert!(report.counts_decided());
    assert_eq!(report.exit_code(), EXIT_REGRESSION);
    let lines = report.comparison.regression_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("pool-fixed") && l.contains("instructions_per_alloc")),
        "{lines:?}"
    );

    // Unchanged counts: a pass, whatever the wall-clock tier says of this machine.
    let report = gate_results(
        &baseline.results,
        &baseline.results,
        &GateOptions::default(),
    );
    assert_eq!(
        report.exit_code(),
        EXIT_PASS,
        "{:?}",
        report.unstable_reasons
    );
}
