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
