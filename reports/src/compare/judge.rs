//! Judging noisy (wall-clock) cells together: one Bonferroni-corrected confidence level, one
//! exact rank-sum interval per cell.

use super::{Cell, CompareOptions, Metric};
use crate::stats::{self, Verdict, MIN_RUNS};

/// The values of one noisy cell, ready to judge.
#[derive(Debug, Clone)]
pub(crate) struct CellSamples {
    pub trace: String,
    pub backend: String,
    pub metric: Metric,
    /// Natural logs of the compared values.
    pub base_logs: Vec<f64>,
    pub cand_logs: Vec<f64>,
    /// Medians of the compared values, for display.
    pub base_value: f64,
    pub cand_value: f64,
    /// Added to the metric's margin (log units): the measurement's resolution.
    pub resolution_log: f64,
}

/// Logs of values: latency below the 1 ns resolution counts as 1 ns; a zero throughput as a
/// vanishingly small one (it stays ordered below every real value).
pub(crate) fn log_value(metric: Metric, value: f64) -> f64 {
    value.max(metric.resolution().max(1e-12)).ln()
}

impl CellSamples {
    pub fn from_values(
        trace: &str,
        backend: &str,
        metric: Metric,
        base: &[f64],
        cand: &[f64],
    ) -> Self {
        let base_value = stats::median(base);
        CellSamples {
            trace: trace.to_string(),
            backend: backend.to_string(),
            metric,
            base_logs: base.iter().map(|&v| log_value(metric, v)).collect(),
            cand_logs: cand.iter().map(|&v| log_value(metric, v)).collect(),
            base_value,
            cand_value: stats::median(cand),
            resolution_log: resolution_log(metric, base_value),
        }
    }
}

/// How much one unit of the metric's resolution is, as a log ratio, at `base_value`.
pub(crate) fn resolution_log(metric: Metric, base_value: f64) -> f64 {
    resolution_log_with(metric, base_value, metric.resolution())
}

/// [`resolution_log`] with the latency resolution of the measuring clock (ns, >= 1).
pub(crate) fn resolution_log_with(metric: Metric, base_value: f64, clock_ns: f64) -> f64 {
    let resolution = if metric.resolution() > 0.0 {
        metric.resolution().max(clock_ns)
    } else {
        0.0
    };
    if resolution > 0.0 && base_value.is_finite() {
        (resolution / base_value.max(resolution)).ln_1p()
    } else {
        0.0
    }
}

impl CellSamples {
    /// Widen the margin by the measuring clock's resolution instead of 1 ns.
    pub fn with_clock_resolution(mut self, clock_ns: f64) -> Self {
        self.resolution_log = resolution_log_with(self.metric, self.base_value, clock_ns);
        self
    }
}

/// Judges every cell at the Bonferroni-corrected level over the cells that have enough runs.
/// Returns the cells and that two-sided confidence level.
pub(crate) fn judge_cells(samples: Vec<CellSamples>, options: &CompareOptions) -> (Vec<Cell>, f64) {
    let judged = samples
        .iter()
        .filter(|s| s.base_logs.len() >= MIN_RUNS && s.cand_logs.len() >= MIN_RUNS)
        .count();
    let confidence = 1.0 - options.alpha / judged.max(1) as f64;
    let cells = samples
        .into_iter()
        .map(|s| judge_one(s, options, confidence))
        .collect();
    (cells, confidence)
}

fn judge_one(s: CellSamples, options: &CompareOptions, confidence: f64) -> Cell {
    let margin = options.margins.for_metric(s.metric);
    let (base_runs, cand_runs) = (s.base_logs.len(), s.cand_logs.len());
    let mut cell = Cell {
        trace: s.trace.clone(),
        backend: s.backend.clone(),
        metric: s.metric,
        base_runs,
        cand_runs,
        base_value: Some(s.base_value).filter(|v| v.is_finite()),
        cand_value: Some(s.cand_value).filter(|v| v.is_finite()),
        change: None,
        margin,
        verdict: Verdict::Inconclusive,
        note: None,
    };
    if base_runs < MIN_RUNS || cand_runs < MIN_RUNS {
        cell.note = Some(format!(
            "too few runs to judge ({base_runs} vs {cand_runs}; need {MIN_RUNS} a side)"
        ));
        return cell;
    }
    let shift = stats::rank_shift(&s.base_logs, &s.cand_logs, confidence);
    let worse_positive = if s.metric.higher_is_better() {
        shift.negated()
    } else {
        shift
    };
    let margin_log = margin.ln_1p() + s.resolution_log;
    cell.change = Some(worse_positive);
    cell.verdict = stats::classify(&worse_positive, margin_log);
    if !worse_positive.is_bounded() {
        cell.note = Some(format!(
            "too few runs for a {:.2}% interval ({base_runs} vs {cand_runs}; about {} a side would do)",
            100.0 * confidence,
            stats::shift::runs_for_confidence(confidence)
        ));
    } else if cell.verdict == Verdict::Inconclusive {
        cell.note = Some(
            match stats::runs_needed_per_side(&worse_positive, margin_log, base_runs, cand_runs) {
                Some(n) => format!("about {n} runs a side would decide"),
                None => "change is at the margin; more runs will not decide".to_string(),
            },
        );
    }
    cell
}
