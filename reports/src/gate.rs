//! `replay gate`: today's run against a stored baseline, with machine speed cancelled out.
//!
//! Each run `i` measures every backend back to back (the engine is run-major), so
//! `ours_i / reference_i` — throughput, alloc p50, alloc p99 — is a property of the allocator
//! that a faster or slower CI machine leaves alone. The distributions of these per-run log
//! ratios are compared between the baseline and now with the same bootstrap and three-way
//! verdict as `replay compare` ([`crate::compare`]).
//!
//! Before trusting any verdict, an A/A check: the reference backend's throughput in the first
//! half of today's runs against the second half. Identical code, so anything but a pass means
//! the machine drifted or is too noisy, and the gate reports "unstable" (exit 3) instead.
//! Deterministic metrics (reserved bytes, failures) and statuses are compared exactly.

use serde::Serialize;

use crate::compare::{
    deterministic_cells, judge_cells, match_backends, match_traces, sort_cells, status_cell,
    CellSamples, CompareOptions, Comparison, Metric,
};
use crate::stats::{Verdict, MIN_RUNS};
use crate::{BackendResult, ResultsFile, Status};

/// The backend every other one is divided by.
pub const DEFAULT_REFERENCE_BACKEND: &str = "system";

/// Runs the A/A check needs: [`MIN_RUNS`] in each half.
pub const MIN_GATE_RUNS: usize = 2 * MIN_RUNS;

/// Exit codes of `replay gate` (and `replay compare`, which has no unstable outcome).
pub const EXIT_PASS: i32 = 0;
pub const EXIT_REGRESSION: i32 = 1;
pub const EXIT_UNSTABLE: i32 = 3;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateOptions {
    pub compare: CompareOptions,
    pub reference_backend: String,
}

impl Default for GateOptions {
    fn default() -> Self {
        GateOptions {
            compare: CompareOptions::default(),
            reference_backend: DEFAULT_REFERENCE_BACKEND.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateReport {
    /// Every verdict, A/A cells (`reference_stability`) included.
    pub comparison: Comparison,
    /// Why the environment was judged unstable (empty when stable).
    pub unstable_reasons: Vec<String>,
}

impl GateReport {
    pub fn is_unstable(&self) -> bool {
        !self.unstable_reasons.is_empty()
    }

    /// 3 when unstable (no verdict is trusted), else 1 on any regression, else 0.
    pub fn exit_code(&self) -> i32 {
        if self.is_unstable() {
            EXIT_UNSTABLE
        } else if self.comparison.exit_code() != 0 {
            EXIT_REGRESSION
        } else {
            EXIT_PASS
        }
    }
}

/// Per-run `ln(ours_i / reference_i)` of a noisy metric, over runs both recorded.
fn log_ratios(metric: Metric, ours: &BackendResult, reference: &BackendResult) -> Vec<f64> {
    ours.runs
        .iter()
        .zip(&reference.runs)
        .filter_map(|(o, r)| {
            let (o, r) = (metric.run_value(o)?, metric.run_value(r)?);
            Some(
                crate::compare::judge::log_value(metric, o)
                    - crate::compare::judge::log_value(metric, r),
            )
        })
        .collect()
}

fn reference_of<'a>(results: &'a [BackendResult], name: &str) -> Option<&'a BackendResult> {
    results
        .iter()
        .find(|r| r.backend == name && r.status == Status::Ok)
}

/// Judges `current` against `baseline` (see the module documentation).
pub fn gate_results(
    baseline: &ResultsFile,
    current: &ResultsFile,
    options: &GateOptions,
) -> GateReport {
    let reference = options.reference_backend.as_str();
    let mut notes = Vec::new();
    let mut cells = Vec::new();
    let mut noisy = Vec::new();
    let mut aa = Vec::new();
    let mut unstable_reasons = Vec::new();
    let clock_ns = baseline
        .latency_resolution_ns()
        .max(current.latency_resolution_ns());
    for (trace, base_trace, cand_trace) in match_traces(baseline, current, &mut notes) {
        let base_ref = reference_of(&base_trace.results, reference);
        let cand_ref = reference_of(&cand_trace.results, reference);
        match cand_ref {
            Some(r) => {
                let speeds: Vec<f64> = r
                    .runs
                    .iter()
                    .filter_map(|run| Metric::Throughput.run_value(run))
                    .collect();
                let half = speeds.len() / 2;
                if half < MIN_RUNS {
                    unstable_reasons.push(format!(
                        "{trace}: {} runs of `{reference}`; the A/A check needs {MIN_GATE_RUNS}",
                        speeds.len()
                    ));
                }
                aa.push(CellSamples::from_values(
                    &trace,
                    reference,
                    Metric::ReferenceStability,
                    &speeds[..half],
                    &speeds[speeds.len() - half..],
                ));
            }
            None => unstable_reasons.push(format!(
                "{trace}: reference backend `{reference}` did not run ok now; nothing to divide by"
            )),
        }
        if base_ref.is_none() {
            notes.push(format!(
                "{trace}: reference backend `{reference}` did not run ok in the baseline; \
                 only exact metrics compared"
            ));
        }
        for (b, c) in match_backends(&trace, base_trace, cand_trace, &mut notes) {
            if let Some(cell) = status_cell(&trace, b, c) {
                cells.push(cell);
                continue;
            }
            cells.extend(deterministic_cells(&trace, b, c, &options.compare.margins));
            if b.backend == reference {
                continue;
            }
            let (Some(base_ref), Some(cand_ref)) = (base_ref, cand_ref) else {
                continue;
            };
            for metric in Metric::NOISY {
                let base_logs = log_ratios(metric, b, base_ref);
                let cand_logs = log_ratios(metric, c, cand_ref);
                if base_logs.is_empty() && cand_logs.is_empty() {
                    continue;
                }
                let ratio = |logs: &[f64]| crate::stats::median(logs).exp();
                // The clock's resolution, relative to this backend's own latency and to the
                // reference's: both ends of the ratio are quantised.
                let median_of = |r: &crate::results::BackendResult| {
                    crate::stats::median(
                        &r.runs
                            .iter()
                            .filter_map(|run| metric.run_value(run))
                            .collect::<Vec<_>>(),
                    )
                };
                let own_median = median_of(b);
                let ref_median = median_of(base_ref);
                noisy.push(CellSamples {
                    trace: trace.clone(),
                    backend: b.backend.clone(),
                    metric,
                    base_value: ratio(&base_logs),
                    cand_value: ratio(&cand_logs),
                    base_logs,
                    cand_logs,
                    resolution_log: crate::compare::judge::resolution_log_with(
                        metric, own_median, clock_ns,
                    ) + crate::compare::judge::resolution_log_with(
                        metric, ref_median, clock_ns,
                    ),
                });
            }
        }
    }
    let (judged, confidence) = judge_cells(noisy, &options.compare);
    let noisy_cells = judged.len();
    cells.extend(judged);
    let (aa_cells, _) = judge_cells(aa, &options.compare);
    for cell in &aa_cells {
        if cell.verdict != Verdict::Pass && cell.base_runs >= MIN_RUNS {
            let change = crate::compare::table::change_text(cell);
            unstable_reasons.push(format!(
                "{}: A/A check of `{}` throughput, first half of the runs against the second: \
                 {} ({change}, margin ±{:.0}%)",
                cell.trace,
                cell.backend,
                cell.verdict,
                100.0 * cell.margin
            ));
        }
    }
    cells.extend(aa_cells);
    sort_cells(&mut cells);
    notes.extend(unstable_reasons.iter().map(|r| format!("UNSTABLE: {r}")));
    GateReport {
        comparison: Comparison {
            reference_backend: Some(reference.to_string()),
            cells,
            notes,
            noisy_cells,
            confidence,
            resamples: options.compare.resamples,
        },
        unstable_reasons,
    }
}

#[cfg(test)]
mod tests;
