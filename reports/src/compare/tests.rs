use super::*;
use crate::fixtures::*;

fn one(backend_result: BackendResult) -> ResultsFile {
    results(vec![trace("traces/web.csv", vec![backend_result])])
}

fn cell<'a>(cmp: &'a Comparison, backend: &str, metric: Metric) -> &'a Cell {
    cmp.cells
        .iter()
        .find(|c| c.backend == backend && c.metric == metric)
        .unwrap_or_else(|| panic!("no cell {backend} {metric}"))
}

fn steady(name: &str, seed: u64, ops: f64, p50: f64, p99: f64, n: usize) -> BackendResult {
    backend(
        name,
        &noisy(seed, n, ops, 0.01),
        &noisy_ns(seed + 1, n, p50, 0.01),
        &noisy_ns(seed + 2, n, p99, 0.01),
    )
}

#[test]
fn equal_samples_pass() {
    let base = one(steady("pool-fixed", 1, 2e7, 40.0, 300.0, 8));
    let cand = one(steady("pool-fixed", 10, 2e7, 40.0, 300.0, 8));
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    for metric in Metric::NOISY {
        assert_eq!(
            cell(&cmp, "pool-fixed", metric).verdict,
            Verdict::Pass,
            "{metric}"
        );
    }
    assert_eq!(cmp.exit_code(), 0);
}

#[test]
fn candidate_twice_as_slow_every_run_is_a_regression_naming_the_backend() {
    let base = results(vec![trace(
        "a/web.csv",
        vec![
            steady("system", 1, 1e7, 60.0, 400.0, 6),
            steady("pool-variable", 4, 2e7, 40.0, 300.0, 6),
        ],
    )]);
    let mut cand = base.clone();
    // Same file name in another directory: matched by name.
    cand.traces[0].path = "b/web.csv".into();
    let slow = &mut cand.traces[0].results[1];
    for run in &mut slow.runs {
        run.ops_per_sec /= 2.0;
        run.alloc_p50_ns = run.alloc_p50_ns.map(|v| v * 2);
    }
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    let throughput = cell(&cmp, "pool-variable", Metric::Throughput);
    assert_eq!(throughput.verdict, Verdict::Regression);
    let (change, _, _) = throughput.relative_change().unwrap();
    assert!((change + 0.5).abs() < 1e-9, "{change}");
    assert_eq!(
        cell(&cmp, "pool-variable", Metric::AllocP50).verdict,
        Verdict::Regression
    );
    assert_eq!(
        cell(&cmp, "system", Metric::Throughput).verdict,
        Verdict::Pass
    );
    assert_eq!(cmp.exit_code(), 1);
    let lines = cmp.regression_lines();
    assert!(lines
        .iter()
        .any(|l| l.contains("pool-variable") && l.contains("throughput")));
    assert!(!lines.iter().any(|l| l.contains("system")));
}

#[test]
fn two_percent_slower_is_not_a_regression_at_the_default_margin() {
    let base = one(steady("mimalloc", 3, 3e7, 30.0, 200.0, 10));
    let mut cand = base.clone();
    for run in &mut cand.traces[0].results[0].runs {
        run.ops_per_sec *= 0.98;
    }
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    let v = cell(&cmp, "mimalloc", Metric::Throughput).verdict;
    assert_eq!(v, Verdict::Pass);
    assert_eq!(cmp.exit_code(), 0);
}

#[test]
fn heavy_noise_is_inconclusive_with_a_runs_estimate() {
    let base = one(backend("pool-lockfree", &noisy(5, 6, 2e7, 0.4), &[], &[]));
    let cand = one(backend("pool-lockfree", &noisy(6, 6, 1.8e7, 0.4), &[], &[]));
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    let c = cell(&cmp, "pool-lockfree", Metric::Throughput);
    assert_eq!(c.verdict, Verdict::Inconclusive);
    let note = c.note.as_deref().unwrap();
    assert!(note.contains("runs a side"), "{note}");
    assert_eq!(cmp.exit_code(), 0);
}

#[test]
fn a_file_compared_with_itself_passes() {
    let file = results(vec![
        trace(
            "x.csv",
            vec![
                steady("system", 1, 1e7, 50.0, 500.0, 8),
                steady("pool-fixed", 2, 4e7, 12.0, 90.0, 8),
            ],
        ),
        trace("y.csv", vec![steady("system", 3, 9e6, 55.0, 520.0, 8)]),
    ]);
    let cmp = compare_results(&file, &file, &CompareOptions::default());
    assert!(!cmp.cells.is_empty());
    for c in &cmp.cells {
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
    }
    assert_eq!(cmp.noisy_cells, 9);
    assert!((cmp.confidence - (1.0 - 0.05 / 9.0)).abs() < 1e-12);
}

#[test]
fn improvement_is_reported_and_does_not_fail() {
    let base = one(steady("pool-fixed", 1, 1e7, 40.0, 300.0, 6));
    let mut cand = base.clone();
    for run in &mut cand.traces[0].results[0].runs {
        run.ops_per_sec *= 1.5;
    }
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    assert_eq!(
        cell(&cmp, "pool-fixed", Metric::Throughput).verdict,
        Verdict::Improvement
    );
    assert_eq!(cmp.exit_code(), 0);
}

#[test]
fn too_few_runs_is_inconclusive() {
    let base = one(steady("pool-fixed", 1, 1e7, 40.0, 300.0, 2));
    let mut cand = base.clone();
    for run in &mut cand.traces[0].results[0].runs {
        run.ops_per_sec /= 3.0;
    }
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    let c = cell(&cmp, "pool-fixed", Metric::Throughput);
    assert_eq!(c.verdict, Verdict::Inconclusive);
    assert!(c.note.as_deref().unwrap().contains("too few runs"));
}

#[test]
fn one_nanosecond_of_latency_resolution_is_not_a_regression() {
    let base = one(backend("pool-fixed", &[1e7; 5], &[7; 5], &[20; 5]));
    let cand = one(backend("pool-fixed", &[1e7; 5], &[8; 5], &[21; 5]));
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    assert_eq!(
        cell(&cmp, "pool-fixed", Metric::AllocP50).verdict,
        Verdict::Pass
    );
    assert_eq!(
        cell(&cmp, "pool-fixed", Metric::AllocP99).verdict,
        Verdict::Pass
    );
}

#[test]
fn one_step_of_a_coarse_clock_is_not_a_regression() {
    // 20 ns against 30 ns is a 50% change, but a clock that steps by 10 ns can't tell them
    // apart reliably: with the clock's resolution recorded, it is not a regression.
    let clocked = |mut f: ResultsFile, step_ns: Option<f64>| {
        f.clock = Some(crate::ClockInfo {
            source: "rdtsc".into(),
            overhead_ns: 22.0,
            ticks_per_ns: 2.6,
            resolution_ns: step_ns,
        });
        f
    };
    let base = one(backend("pool-fixed", &[1e7; 6], &[20; 6], &[200; 6]));
    let cand = one(backend("pool-fixed", &[1e7; 6], &[30; 6], &[200; 6]));
    let coarse = compare_results(
        &clocked(base.clone(), Some(10.0)),
        &clocked(cand.clone(), Some(10.0)),
        &CompareOptions::default(),
    );
    assert_ne!(
        cell(&coarse, "pool-fixed", Metric::AllocP50).verdict,
        Verdict::Regression
    );
    // The same data from a 1 ns clock is a regression.
    let fine = compare_results(
        &clocked(base, Some(1.0)),
        &clocked(cand, Some(1.0)),
        &CompareOptions::default(),
    );
    assert_eq!(
        cell(&fine, "pool-fixed", Metric::AllocP50).verdict,
        Verdict::Regression
    );
}

#[test]
fn deterministic_metrics_are_exact() {
    let base = one(steady("pool-variable", 1, 1e7, 40.0, 300.0, 5));
    let mut cand = base.clone();
    cand.traces[0].results[0].peak_reserved_bytes =
        base.traces[0].results[0].peak_reserved_bytes * 12 / 10;
    cand.traces[0].results[0].alloc_failures = 1;
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    assert_eq!(
        cell(&cmp, "pool-variable", Metric::PeakReservedBytes).verdict,
        Verdict::Regression
    );
    assert_eq!(
        cell(&cmp, "pool-variable", Metric::AllocFailures).verdict,
        Verdict::Regression
    );

    let mut within = base.clone();
    within.traces[0].results[0].peak_reserved_bytes =
        base.traces[0].results[0].peak_reserved_bytes * 105 / 100;
    let cmp = compare_results(&base, &within, &CompareOptions::default());
    assert_eq!(
        cell(&cmp, "pool-variable", Metric::PeakReservedBytes).verdict,
        Verdict::Pass
    );
}

#[test]
fn a_backend_failing_now_is_a_regression_and_skipped_is_not() {
    let base = results(vec![trace(
        "t.csv",
        vec![
            steady("gpu-pool", 1, 1e7, 40.0, 300.0, 5),
            steady("cuda-async", 2, 1e6, 400.0, 3000.0, 5),
        ],
    )]);
    let mut cand = base.clone();
    cand.traces[0].results[0].status = Status::Failed;
    cand.traces[0].results[0].reason = Some("out of device memory".into());
    cand.traces[0].results[1].status = Status::Skipped;
    cand.traces[0].results[1].reason = Some("no CUDA driver".into());
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    assert_eq!(
        cell(&cmp, "gpu-pool", Metric::Status).verdict,
        Verdict::Regression
    );
    assert_eq!(
        cell(&cmp, "cuda-async", Metric::Status).verdict,
        Verdict::Inconclusive
    );
    assert_eq!(
        cmp.cells.len(),
        2,
        "no metric compared for a backend that did not run"
    );
}

#[test]
fn one_sided_traces_and_backends_are_noted() {
    let base = results(vec![
        trace("a.csv", vec![steady("system", 1, 1e7, 40.0, 300.0, 5)]),
        trace("gone.csv", vec![steady("system", 1, 1e7, 40.0, 300.0, 5)]),
    ]);
    let cand = results(vec![trace(
        "a.csv",
        vec![
            steady("system", 1, 1e7, 40.0, 300.0, 5),
            steady("mimalloc", 1, 1e7, 40.0, 300.0, 5),
        ],
    )]);
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    assert!(cmp
        .notes
        .iter()
        .any(|n| n.contains("gone.csv") && n.contains("baseline only")));
    assert!(cmp
        .notes
        .iter()
        .any(|n| n.contains("mimalloc") && n.contains("candidate only")));
}

#[test]
fn tables_render_every_cell() {
    let base = one(steady("pool-fixed", 1, 2e7, 40.0, 300.0, 6));
    let mut cand = base.clone();
    for run in &mut cand.traces[0].results[0].runs {
        run.ops_per_sec /= 2.0;
    }
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    let text = render_comparison(&cmp, TableFormat::Text);
    let md = render_comparison(&cmp, TableFormat::Markdown);
    assert!(
        text.contains("regression") && text.contains("-50.0%"),
        "{text}"
    );
    assert!(
        md.contains("| web.csv | pool-fixed | wall-clock | throughput |"),
        "{md}"
    );
    assert!(md.contains("**regression**"));
    assert!(md.contains("1 regression"));
}

#[test]
fn process_wide_reserved_counters_are_not_gated() {
    let mut base = one(steady("system", 1, 1e7, 40.0, 300.0, 5));
    base.traces[0].results[0].reserved_source = Some("mallinfo2".into());
    let mut cand = base.clone();
    cand.traces[0].results[0].peak_reserved_bytes *= 3;
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    assert!(!cmp
        .cells
        .iter()
        .any(|c| c.metric == Metric::PeakReservedBytes));
    assert_eq!(cmp.exit_code(), 0);
}

#[test]
fn combined_process_wide_sources_are_not_gated() {
    let mut base = one(steady("system", 1, 1e7, 40.0, 300.0, 5));
    base.traces[0].results[0].reserved_source = Some("rss+mallinfo2".into());
    let mut cand = base.clone();
    cand.traces[0].results[0].peak_reserved_bytes *= 3;
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    assert!(!cmp
        .cells
        .iter()
        .any(|c| c.metric == Metric::PeakReservedBytes));
    // A per-backend source is gated.
    base.traces[0].results[0].reserved_source = Some("pool-stats".into());
    cand.traces[0].results[0].reserved_source = Some("pool-stats".into());
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    assert_eq!(cmp.exit_code(), 1);
}

#[test]
fn counts_are_judged_with_the_exact_margin_in_compare_too() {
    let mut base = one(steady("pool-variable", 1, 2e7, 40.0, 300.0, 8));
    base.traces[0].results[0].counts = Some(counts(50, 30, 120));
    let mut cand = base.clone();
    cand.traces[0].results[0].counts = Some(counts(50, 36, 120)); // free +20%
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    assert_eq!(cmp.count_cells, 4);
    assert_eq!(
        cell(&cmp, "pool-variable", Metric::InstructionsPerFree).verdict,
        Verdict::Regression
    );
    assert_eq!(
        cell(&cmp, "pool-variable", Metric::InstructionsPerAlloc).verdict,
        Verdict::Pass
    );
    assert_eq!(cmp.exit_code(), 1);
    let table = render_comparison(&cmp, TableFormat::Text);
    assert!(table.contains("instructions_per_free"), "{table}");
    assert!(table.contains("counts"), "{table}");
}

#[test]
fn per_run_ratios_to_the_reference_cancel_a_machine_slowing_down() {
    // Both backends' runs swing 2x with the machine; pool-variable's ratio to system is
    // steady. A candidate whose pool runs are exactly 2x slower run by run is a regression
    // even though the raw ranges overlap; a 2% slower one is not.
    let speed = noisy(7, 10, 1.0, 0.3);
    let make = |factor: f64| {
        let sys: Vec<f64> = speed.iter().map(|s| 1e7 * s).collect();
        let jitter = noisy(8, 10, 1.0, 0.005);
        let pool: Vec<f64> = speed
            .iter()
            .zip(&jitter)
            .map(|(s, j)| 3e7 * s * j * factor)
            .collect();
        results(vec![trace(
            "perl.csv",
            vec![
                backend("system", &sys, &[], &[]),
                backend("pool-variable", &pool, &[], &[]),
            ],
        )])
    };
    let base = make(1.0);
    let cmp = compare_results(&base, &make(0.5), &CompareOptions::default());
    let c = cell(&cmp, "pool-variable", Metric::Throughput);
    assert_eq!(c.verdict, Verdict::Regression, "{c:?}");
    assert_eq!(cmp.reference_backend.as_deref(), Some("system"));
    let cmp = compare_results(&base, &make(0.98), &CompareOptions::default());
    let c = cell(&cmp, "pool-variable", Metric::Throughput);
    assert_ne!(c.verdict, Verdict::Regression, "{c:?}");
    assert_eq!(cmp.exit_code(), 0);
}
