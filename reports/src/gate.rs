//! `replay gate`: today's run against a stored baseline, in two tiers.
//!
//! **Counts** (deterministic, `replay --counts`): instructions per op and estimated cycles per
//! op, judged against an exact margin ([`crate::compare::count_cells`]). Where both files have
//! them, they decide on any machine, however noisy.
//!
//! **Wall-clock**, with machine speed cancelled out: each run `i` measures every backend back
//! to back (the engine is run-major), so
//! `ours_i / reference_i` — throughput, alloc p50, alloc p99 — is a property of the allocator
//! that a faster or slower CI machine leaves alone. The distributions of these per-run log
//! ratios are compared between the baseline and now with the same rank-sum interval and
//! three-way verdict as `replay compare` ([`crate::compare`]).
//!
//! Before trusting a wall-clock verdict, an A/A check: the reference backend's throughput in
//! the first half of today's runs against the second half. Identical code, so anything but a
//! pass means the machine drifted or is too noisy: the wall-clock cells are then demoted to
//! inconclusive, and the gate exits 3 ("unstable") only when no counts cell could decide
//! instead. Exact metrics (reserved bytes, failures) and statuses are compared directly.

use serde::Serialize;

use crate::compare::{
    count_presence_note, deterministic_cells, judge_cells, match_backends, match_traces,
    sort_cells, status_cell, CellSamples, CompareOptions, Comparison, Metric, Tier,
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
    /// Why the wall-clock tier was judged unstable (empty when stable). Its cells are then
    /// inconclusive.
    pub unstable_reasons: Vec<String>,
    /// Differences between the baseline's and today's tools or machine that move counts
    /// (valgrind, rustc, replay version) or timings (machine): printed as warnings.
    pub warnings: Vec<String>,
}

impl GateReport {
    /// The wall-clock tier could not be trusted.
    pub fn is_unstable(&self) -> bool {
        !self.unstable_reasons.is_empty()
    }

    /// Whether the counts tier judged anything (then it decides even on a noisy machine).
    pub fn counts_decided(&self) -> bool {
        self.comparison.count_cells > 0
    }

    /// 1 on any regression (wall-clock cells only count when the A/A check passed: they are
    /// demoted otherwise); else 3 when neither tier could decide (wall-clock unstable and no
    /// counts cell); else 0.
    pub fn exit_code(&self) -> i32 {
        if self.comparison.exit_code() != 0 {
            EXIT_REGRESSION
        } else if self.is_unstable() && !self.counts_decided() {
            EXIT_UNSTABLE
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

/// The wall-clock cell samples of `metric` for backend `base`/`cand`: per-run log ratios to the
/// reference in the same run, on each side. The margin is widened by the clock's resolution
/// relative to this backend's own latency and to the reference's: both ends of the ratio are
/// quantised.
pub(crate) fn ratio_samples(
    trace: &str,
    metric: Metric,
    base: &BackendResult,
    base_ref: &BackendResult,
    cand: &BackendResult,
    cand_ref: &BackendResult,
    clock_ns: f64,
) -> CellSamples {
    let base_logs = log_ratios(metric, base, base_ref);
    let cand_logs = log_ratios(metric, cand, cand_ref);
    let ratio = |logs: &[f64]| crate::stats::median(logs).exp();
    let median_of = |r: &BackendResult| {
        crate::stats::median(
            &r.runs
                .iter()
                .filter_map(|run| metric.run_value(run))
                .collect::<Vec<_>>(),
        )
    };
    CellSamples {
        trace: trace.to_string(),
        backend: base.backend.clone(),
        metric,
        base_value: ratio(&base_logs),
        cand_value: ratio(&cand_logs),
        base_logs,
        cand_logs,
        resolution_log: crate::compare::judge::resolution_log_with(
            metric,
            median_of(base),
            clock_ns,
        ) + crate::compare::judge::resolution_log_with(
            metric,
            median_of(base_ref),
            clock_ns,
        ),
    }
}

/// Differences between the two files' tools and machine.
fn version_warnings(baseline: &ResultsFile, current: &ResultsFile) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut differ = |what: &str, base: &str, now: &str, why: &str| {
        if base != now {
            warnings.push(format!(
                "{what} differs: baseline {base}, now {now} ({why})"
            ));
        }
    };
    differ(
        "replay version",
        &baseline.tool_version,
        &current.tool_version,
        "counts move with the code",
    );
    differ(
        "rustc",
        &baseline.machine.rustc,
        &current.machine.rustc,
        "counts move with the compiler",
    );
    if let (Some(b), Some(c)) = (&baseline.counts, &current.counts) {
        differ(
            "counting tool",
            &b.tool_version,
            &c.tool_version,
            "counts move with the simulator",
        );
    }
    differ(
        "machine",
        &format!(
            "{} ({} cores)",
            baseline.machine.cpu, baseline.machine.cores
        ),
        &format!("{} ({} cores)", current.machine.cpu, current.machine.cores),
        "wall-clock ratios and cache behaviour may move",
    );
    warnings
}

pub(crate) fn reference_of<'a>(
    results: &'a [BackendResult],
    name: &str,
) -> Option<&'a BackendResult> {
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
            notes.extend(count_presence_note(&trace, b, c));
            cells.extend(deterministic_cells(&trace, b, c, &options.compare.margins));
            if b.backend == reference {
                continue;
            }
            let (Some(base_ref), Some(cand_ref)) = (base_ref, cand_ref) else {
                continue;
            };
            for metric in Metric::NOISY {
                let sample = ratio_samples(&trace, metric, b, base_ref, c, cand_ref, clock_ns);
                if sample.base_logs.is_empty() && sample.cand_logs.is_empty() {
                    continue;
                }
                noisy.push(sample);
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
    if !unstable_reasons.is_empty() {
        // The machine was too noisy for timings: their verdicts are not evidence either way.
        for cell in cells.iter_mut() {
            if cell.metric.tier() == Tier::WallClock
                && cell.metric != Metric::ReferenceStability
                && matches!(cell.verdict, Verdict::Regression | Verdict::Improvement)
            {
                cell.note = Some(format!(
                    "{} demoted: wall-clock tier unstable on this machine",
                    cell.verdict
                ));
                cell.verdict = Verdict::Inconclusive;
            }
        }
    }
    sort_cells(&mut cells);
    notes.extend(
        unstable_reasons
            .iter()
            .map(|r| format!("UNSTABLE (wall-clock tier): {r}")),
    );
    let count_cells = cells
        .iter()
        .filter(|c| c.metric.tier() == Tier::Counts)
        .count();
    let warnings = version_warnings(baseline, current);
    notes.extend(warnings.iter().map(|w| format!("WARNING: {w}")));
    GateReport {
        comparison: Comparison {
            reference_backend: Some(reference.to_string()),
            cells,
            notes,
            noisy_cells,
            confidence,
            count_cells,
        },
        unstable_reasons,
        warnings,
    }
}

#[cfg(test)]
mod tests;
