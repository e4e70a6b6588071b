use super::*;
use crate::fixtures::*;

const RUNS: usize = 8;

/// A run-major result: run i of every backend shares a machine-speed factor `speed[i]`.
fn file(speed: &[f64], pool_relative: f64, seed: u64) -> ResultsFile {
    let sys: Vec<f64> = speed.iter().map(|s| 1e7 * s).collect();
    let jitter = noisy(seed, speed.len(), 1.0, 0.01);
    let pool: Vec<f64> = speed
        .iter()
        .zip(&jitter)
        .map(|(s, j)| 4e7 * s * pool_relative * j)
        .collect();
    let lat = |base: f64| -> Vec<u64> { speed.iter().map(|s| (base / s).round() as u64).collect() };
    results(vec![trace(
        "traces/web.csv",
        vec![
            backend("system", &sys, &lat(50.0), &lat(400.0)),
            backend(
                "pool-fixed",
                &pool,
                &lat(12.0 / pool_relative),
                &lat(80.0 / pool_relative),
            ),
        ],
    )])
}

fn steady_speed(seed: u64, factor: f64) -> Vec<f64> {
    noisy(seed, RUNS, factor, 0.01)
}

#[test]
fn a_faster_machine_cancels_out() {
    let baseline = file(&steady_speed(1, 1.0), 1.0, 2);
    let current = file(&steady_speed(3, 2.0), 1.0, 4);
    let report = gate_results(&baseline, &current, &GateOptions::default());
    assert!(!report.is_unstable(), "{:?}", report.unstable_reasons);
    let throughput = report
        .comparison
        .cells
        .iter()
        .find(|c| c.backend == "pool-fixed" && c.metric == Metric::Throughput)
        .unwrap();
    assert_eq!(throughput.verdict, Verdict::Pass, "{throughput:?}");
    assert_eq!(report.exit_code(), EXIT_PASS);
}

#[test]
fn a_pool_twice_as_slow_relative_to_system_is_a_regression() {
    let baseline = file(&steady_speed(1, 1.0), 1.0, 2);
    let current = file(&steady_speed(3, 1.3), 0.5, 4);
    let report = gate_results(&baseline, &current, &GateOptions::default());
    assert_eq!(report.exit_code(), EXIT_REGRESSION);
    let lines = report.comparison.regression_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("pool-fixed") && l.contains("throughput")),
        "{lines:?}"
    );
    let cell = report
        .comparison
        .cells
        .iter()
        .find(|c| c.backend == "pool-fixed" && c.metric == Metric::Throughput)
        .unwrap();
    // Ratios to system: 4.0 in the baseline, 2.0 now.
    assert!((cell.base_value.unwrap() - 4.0).abs() < 0.1, "{cell:?}");
    assert!((cell.cand_value.unwrap() - 2.0).abs() < 0.1, "{cell:?}");
}

#[test]
fn drift_within_the_run_is_unstable_not_a_verdict() {
    let baseline = file(&steady_speed(1, 1.0), 1.0, 2);
    let mut speed = steady_speed(3, 1.0);
    for s in &mut speed[RUNS / 2..] {
        *s *= 0.7; // the machine slowed down halfway (a neighbour started)
    }
    let current = file(&speed, 0.5, 4);
    let report = gate_results(&baseline, &current, &GateOptions::default());
    assert!(report.is_unstable());
    assert_eq!(
        report.exit_code(),
        EXIT_UNSTABLE,
        "unstable wins over the regression"
    );
    assert!(
        report.unstable_reasons[0].contains("A/A"),
        "{:?}",
        report.unstable_reasons
    );
    let xml = crate::junit::junit_xml(&report.comparison, "gate");
    assert!(xml.contains("type=\"unstable\""), "{xml}");
}

#[test]
fn too_few_runs_for_the_a_a_check_is_unstable() {
    let baseline = file(&steady_speed(1, 1.0)[..4], 1.0, 2);
    let current = file(&steady_speed(3, 1.0)[..4], 1.0, 4);
    let report = gate_results(&baseline, &current, &GateOptions::default());
    assert_eq!(report.exit_code(), EXIT_UNSTABLE);
    assert!(
        report.unstable_reasons[0].contains("needs 6"),
        "{:?}",
        report.unstable_reasons
    );
}

#[test]
fn missing_reference_now_is_unstable() {
    let baseline = file(&steady_speed(1, 1.0), 1.0, 2);
    let mut current = file(&steady_speed(3, 1.0), 1.0, 4);
    current.traces[0].results.retain(|r| r.backend != "system");
    let report = gate_results(&baseline, &current, &GateOptions::default());
    assert_eq!(report.exit_code(), EXIT_UNSTABLE);
}

#[test]
fn baseline_against_itself_passes_every_cell() {
    let baseline = file(&steady_speed(1, 1.0), 1.0, 2);
    let report = gate_results(&baseline, &baseline, &GateOptions::default());
    assert_eq!(report.exit_code(), EXIT_PASS);
    for c in &report.comparison.cells {
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
    }
    // pool-fixed: 3 ratio metrics + 2 exact; system: 2 exact + the A/A cell.
    assert_eq!(report.comparison.cells.len(), 8);
    assert_eq!(report.comparison.noisy_cells, 3);
}

/// `file` with counts: pool-fixed's alloc costs `pool_alloc` instructions per call.
fn counted_file(speed: &[f64], pool_relative: f64, seed: u64, pool_alloc: u64) -> ResultsFile {
    let mut f = file(speed, pool_relative, seed);
    f.counts = Some(counts_info());
    for r in &mut f.traces[0].results {
        r.counts = Some(if r.backend == "system" {
            counts(120, 80, 200)
        } else {
            counts(pool_alloc, 30, 150)
        });
    }
    f
}

#[test]
fn counts_decide_where_the_wall_clock_tier_is_unstable() {
    let baseline = counted_file(&steady_speed(1, 1.0), 1.0, 2, 40);
    let mut speed = steady_speed(3, 1.0);
    for s in &mut speed[RUNS / 2..] {
        *s *= 0.6; // a neighbour started halfway: the A/A check fails
    }
    // Timings say pool-fixed is 2x slower (noise, here); the counts are unchanged.
    let current = counted_file(&speed, 0.5, 4, 40);
    let report = gate_results(&baseline, &current, &GateOptions::default());
    assert!(report.is_unstable());
    assert!(report.counts_decided());
    assert_eq!(
        report.exit_code(),
        EXIT_PASS,
        "{:#?}",
        report.comparison.cells
    );
    let demoted = report
        .comparison
        .cells
        .iter()
        .find(|c| c.backend == "pool-fixed" && c.metric == Metric::Throughput)
        .unwrap();
    assert_eq!(demoted.verdict, Verdict::Inconclusive);
    assert!(
        demoted.note.as_deref().unwrap().contains("demoted"),
        "{demoted:?}"
    );
}

#[test]
fn a_count_past_the_exact_margin_is_a_regression_naming_backend_and_metric() {
    let baseline = counted_file(&steady_speed(1, 1.0), 1.0, 2, 40);
    // 2% more instructions per alloc: past the 1% margin, however noisy the timings.
    let current = counted_file(&steady_speed(3, 1.0), 1.0, 4, 41);
    let report = gate_results(&baseline, &current, &GateOptions::default());
    assert_eq!(report.exit_code(), EXIT_REGRESSION);
    let lines = report.comparison.regression_lines();
    assert!(
        lines.iter().any(|l| l.contains("pool-fixed")
            && l.contains("instructions_per_alloc")
            && l.contains("counts tier")),
        "{lines:?}"
    );
    // Every regression is pool-fixed's (estimated cycles per op moved with it), none a timing.
    assert!(
        lines
            .iter()
            .all(|l| l.contains("pool-fixed") && l.contains("counts tier")),
        "{lines:?}"
    );
    // Within the margin (0.5%: 200 vs 201 per call) is a pass; beyond it downwards an
    // improvement, which never fails the gate.
    let same = counted_file(&steady_speed(3, 1.0), 1.0, 4, 40);
    let report = gate_results(&baseline, &same, &GateOptions::default());
    assert_eq!(report.exit_code(), EXIT_PASS);
    let cheaper = counted_file(&steady_speed(3, 1.0), 1.0, 4, 30);
    let report = gate_results(&baseline, &cheaper, &GateOptions::default());
    assert_eq!(report.exit_code(), EXIT_PASS);
    let cell = report
        .comparison
        .cells
        .iter()
        .find(|c| c.backend == "pool-fixed" && c.metric == Metric::InstructionsPerAlloc)
        .unwrap();
    assert_eq!(cell.verdict, Verdict::Improvement);
    assert_eq!(cell.metric.tier(), crate::compare::Tier::Counts);
}

#[test]
fn margin_of_the_counts_tier_is_configurable() {
    let baseline = counted_file(&steady_speed(1, 1.0), 1.0, 2, 40);
    let current = counted_file(&steady_speed(3, 1.0), 1.0, 4, 41);
    let mut options = GateOptions::default();
    options.compare.margins.counts = 0.05;
    assert_eq!(
        gate_results(&baseline, &current, &options).exit_code(),
        EXIT_PASS
    );
}

#[test]
fn counts_on_one_side_only_are_noted_not_judged() {
    let baseline = counted_file(&steady_speed(1, 1.0), 1.0, 2, 40);
    let current = file(&steady_speed(3, 1.0), 1.0, 4);
    let report = gate_results(&baseline, &current, &GateOptions::default());
    assert!(!report.counts_decided());
    assert!(
        report
            .comparison
            .notes
            .iter()
            .any(|n| n.contains("counts in the baseline only")),
        "{:?}",
        report.comparison.notes
    );
}

#[test]
fn tool_and_compiler_changes_are_warned_about() {
    let baseline = counted_file(&steady_speed(1, 1.0), 1.0, 2, 40);
    let mut current = counted_file(&steady_speed(3, 1.0), 1.0, 4, 40);
    current.machine.rustc = "1.96.0".into();
    current.counts.as_mut().unwrap().tool_version = "valgrind-3.22.0".into();
    let report = gate_results(&baseline, &current, &GateOptions::default());
    assert!(
        report.warnings.iter().any(|w| w.contains("rustc")),
        "{:?}",
        report.warnings
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("valgrind-3.22.0")),
        "{:?}",
        report.warnings
    );
}
