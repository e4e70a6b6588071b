//! `replay compare`: two results files, cell by cell — (trace, backend, metric) — in two
//! tiers (see [`Tier`]).
//!
//! - Counts (deterministic): instructions per alloc / free / realloc and estimated cycles per
//!   op, from `replay --counts`, judged against a small exact margin (default 1%).
//! - Wall-clock (noisy): throughput, alloc p50 and alloc p99, judged per run. When both files
//!   ran the reference backend (`system`), each run's value is first divided by the
//!   reference's value in the same run (samples are paired within a run: machine speed and
//!   drift cancel); then the two files' samples are compared with an exact rank-sum interval
//!   ([`crate::stats`]).
//! - Exact: `peak_reserved_bytes`, `alloc_failures` and the backend's status.

pub(crate) mod judge;
pub(crate) mod table;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::stats::{Shift, Verdict};
use crate::{BackendResult, OpCounts, ResultsFile, RunResult, Status, TraceResult};

pub(crate) use judge::{judge_cells, CellSamples};
pub use table::{render_comparison, TableFormat};

/// Which kind of evidence a cell's verdict rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Instruction and simulated cache-miss counts (valgrind): deterministic, exact margin.
    Counts,
    /// Timings: noisy, judged through an interval.
    WallClock,
    /// Bytes, failure counts and statuses: compared directly.
    Exact,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Counts => "counts",
            Tier::WallClock => "wall-clock",
            Tier::Exact => "exact",
        }
    }
}

/// What a cell measures. Noisy metrics are compared through a rank-sum interval; the others
/// exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Throughput,
    AllocP50,
    AllocP99,
    PeakReservedBytes,
    AllocFailures,
    Status,
    /// `replay gate`'s A/A check: the reference backend's throughput, first half of the runs
    /// against the second half. Anything but a pass means the machine is too noisy to judge.
    ReferenceStability,
    /// Instructions per alloc call (counts tier).
    InstructionsPerAlloc,
    /// Instructions per free call (counts tier).
    InstructionsPerFree,
    /// Instructions per realloc call (counts tier).
    InstructionsPerRealloc,
    /// Estimated cycles per call of any kind (counts tier; see `CountsInfo`).
    EstimatedCyclesPerOp,
}

impl Metric {
    pub const NOISY: [Metric; 3] = [Metric::Throughput, Metric::AllocP50, Metric::AllocP99];

    pub const COUNTS: [Metric; 4] = [
        Metric::InstructionsPerAlloc,
        Metric::InstructionsPerFree,
        Metric::InstructionsPerRealloc,
        Metric::EstimatedCyclesPerOp,
    ];

    pub fn tier(self) -> Tier {
        match self {
            Metric::Throughput
            | Metric::AllocP50
            | Metric::AllocP99
            | Metric::ReferenceStability => Tier::WallClock,
            Metric::InstructionsPerAlloc
            | Metric::InstructionsPerFree
            | Metric::InstructionsPerRealloc
            | Metric::EstimatedCyclesPerOp => Tier::Counts,
            Metric::PeakReservedBytes | Metric::AllocFailures | Metric::Status => Tier::Exact,
        }
    }

    /// The counts-tier value of this metric: (per-op value, calls it is over).
    pub(crate) fn count_value(self, counts: &OpCounts) -> Option<(f64, u64)> {
        let cost = match self {
            Metric::InstructionsPerAlloc => counts.alloc.with_per_op(),
            Metric::InstructionsPerFree => counts.free.with_per_op(),
            Metric::InstructionsPerRealloc => counts.realloc.with_per_op(),
            Metric::EstimatedCyclesPerOp => {
                let all = counts.all();
                return Some((all.estimated_cycles_per_op, all.calls));
            }
            _ => return None,
        };
        Some((cost.instructions_per_op, cost.calls))
    }

    /// The name used in tables, JUnit test names and exit messages.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Throughput => "throughput",
            Metric::AllocP50 => "alloc_p50",
            Metric::AllocP99 => "alloc_p99",
            Metric::PeakReservedBytes => "peak_reserved_bytes",
            Metric::AllocFailures => "alloc_failures",
            Metric::Status => "status",
            Metric::ReferenceStability => "reference_stability",
            Metric::InstructionsPerAlloc => "instructions_per_alloc",
            Metric::InstructionsPerFree => "instructions_per_free",
            Metric::InstructionsPerRealloc => "instructions_per_realloc",
            Metric::EstimatedCyclesPerOp => "estimated_cycles_per_op",
        }
    }

    /// Larger values are better (throughput); for the others smaller is better.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::Throughput | Metric::ReferenceStability)
    }

    /// Latency metrics are integer nanoseconds: one nanosecond of resolution widens their
    /// margin, so that 7 ns against 8 ns is not called a 14% regression.
    pub(crate) fn resolution(self) -> f64 {
        match self {
            Metric::AllocP50 | Metric::AllocP99 => 1.0,
            _ => 0.0,
        }
    }

    /// This run's value of a noisy metric, if the run recorded it.
    pub(crate) fn run_value(self, run: &RunResult) -> Option<f64> {
        match self {
            Metric::Throughput | Metric::ReferenceStability => Some(run.ops_per_sec),
            Metric::AllocP50 => run.alloc_p50_ns.map(|v| v as f64),
            Metric::AllocP99 => run.alloc_p99_ns.map(|v| v as f64),
            _ => None,
        }
        .filter(|v| v.is_finite() && *v >= 0.0)
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Margins of practical equivalence, as fractions (0.05 = 5%).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Margins {
    pub throughput: f64,
    pub alloc_p50: f64,
    pub alloc_p99: f64,
    /// Growth of `peak_reserved_bytes` beyond this fraction is a regression.
    pub peak_reserved: f64,
    /// Growth of a counts-tier value (instructions or estimated cycles per op) beyond this
    /// fraction is a regression; shrinking beyond it an improvement.
    pub counts: f64,
}

impl Default for Margins {
    fn default() -> Self {
        Margins {
            throughput: 0.05,
            alloc_p50: 0.05,
            alloc_p99: 0.10,
            peak_reserved: 0.10,
            counts: 0.01,
        }
    }
}

impl Margins {
    pub fn for_metric(&self, metric: Metric) -> f64 {
        match metric {
            Metric::Throughput | Metric::ReferenceStability => self.throughput,
            Metric::AllocP50 => self.alloc_p50,
            Metric::AllocP99 => self.alloc_p99,
            Metric::PeakReservedBytes => self.peak_reserved,
            Metric::InstructionsPerAlloc
            | Metric::InstructionsPerFree
            | Metric::InstructionsPerRealloc
            | Metric::EstimatedCyclesPerOp => self.counts,
            Metric::AllocFailures | Metric::Status => 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareOptions {
    pub margins: Margins,
    /// Family-wise error rate, split (Bonferroni) over every noisy cell judged.
    pub alpha: f64,
    /// `replay compare`: divide each run's wall-clock values by this backend's in the same run
    /// when both files ran it (`None`: compare raw values).
    pub reference_backend: Option<String>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            margins: Margins::default(),
            alpha: 0.05,
            reference_backend: Some(crate::gate::DEFAULT_REFERENCE_BACKEND.to_string()),
        }
    }
}

/// One judged (trace, backend, metric).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    /// The trace's file name (traces are matched by file name, so that a baseline recorded
    /// from another checkout still matches).
    pub trace: String,
    pub backend: String,
    pub metric: Metric,
    pub base_runs: usize,
    pub cand_runs: usize,
    /// Median of the compared values (ops/s, ns, bytes, count; for `replay gate`, the ratio to
    /// the reference backend).
    pub base_value: Option<f64>,
    pub cand_value: Option<f64>,
    /// Change as a log ratio, worse positive (noisy metrics: with its rank-sum interval;
    /// deterministic ones: a point).
    pub change: Option<Shift>,
    /// Margin as a fraction.
    pub margin: f64,
    pub verdict: Verdict,
    pub note: Option<String>,
}

impl Cell {
    /// The change in the metric's own direction, as a fraction (`-0.5` = throughput halved,
    /// `+1.0` = latency doubled): `(estimate, lo, hi)`.
    pub fn relative_change(&self) -> Option<(f64, f64, f64)> {
        let s = self.change?;
        let natural = if self.metric.higher_is_better() {
            s.negated()
        } else {
            s
        };
        Some((
            natural.estimate.exp_m1(),
            natural.lo.exp_m1(),
            natural.hi.exp_m1(),
        ))
    }
}

/// The outcome of comparing two results files (or a gate run against its baseline).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// `Some("system")` when values are ratios to that backend in the same run (`replay gate`).
    pub reference_backend: Option<String>,
    pub cells: Vec<Cell>,
    /// Traces or backends present on one side only, and similar remarks.
    pub notes: Vec<String>,
    /// Noisy cells judged together (the Bonferroni divisor).
    pub noisy_cells: usize,
    /// Two-sided confidence of each noisy cell's interval: `1 - alpha / noisy_cells`.
    pub confidence: f64,
    /// Counts-tier cells judged (both sides had counts).
    pub count_cells: usize,
}

impl Comparison {
    /// Cells judged regressions (the A/A check's cell is a statement about the machine, not
    /// the code, and never one).
    pub fn regressions(&self) -> impl Iterator<Item = &Cell> {
        self.cells
            .iter()
            .filter(|c| c.verdict == Verdict::Regression && c.metric != Metric::ReferenceStability)
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.cells.iter().filter(|c| c.verdict == verdict).count()
    }

    /// Cells of one tier.
    pub fn tier_cells(&self, tier: Tier) -> impl Iterator<Item = &Cell> {
        self.cells.iter().filter(move |c| c.metric.tier() == tier)
    }

    /// 1 if any cell regressed, else 0 (pass, improvement and inconclusive all exit 0).
    pub fn exit_code(&self) -> i32 {
        i32::from(self.regressions().next().is_some())
    }

    /// One line per regression: `REGRESSION <trace> <backend> <metric>: <change>`.
    pub fn regression_lines(&self) -> Vec<String> {
        self.regressions()
            .map(|c| {
                format!(
                    "REGRESSION {} {} {} ({} tier): {}",
                    c.trace,
                    c.backend,
                    c.metric,
                    c.metric.tier().name(),
                    table::change_text(c)
                )
            })
            .collect()
    }
}

/// A trace's key for matching across files: its file name.
pub fn trace_key(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// Pairs the traces of two files by [`trace_key`], noting those on one side only.
pub(crate) fn match_traces<'a>(
    base: &'a ResultsFile,
    cand: &'a ResultsFile,
    notes: &mut Vec<String>,
) -> Vec<(String, &'a TraceResult, &'a TraceResult)> {
    let cand_by_key: BTreeMap<String, &TraceResult> = cand
        .traces
        .iter()
        .map(|t| (trace_key(&t.path), t))
        .collect();
    let mut pairs = Vec::new();
    for b in &base.traces {
        let key = trace_key(&b.path);
        match cand_by_key.get(&key) {
            Some(c) => pairs.push((key, b, *c)),
            None => notes.push(format!("trace {key}: in the baseline only")),
        }
    }
    let base_keys: Vec<String> = base.traces.iter().map(|t| trace_key(&t.path)).collect();
    for key in cand_by_key.keys() {
        if !base_keys.contains(key) {
            notes.push(format!("trace {key}: in the candidate only"));
        }
    }
    pairs
}

/// Pairs the backends of two traces by name, noting those on one side only.
pub(crate) fn match_backends<'a>(
    trace: &str,
    base: &'a TraceResult,
    cand: &'a TraceResult,
    notes: &mut Vec<String>,
) -> Vec<(&'a BackendResult, &'a BackendResult)> {
    let mut pairs = Vec::new();
    for b in &base.results {
        match cand.results.iter().find(|c| c.backend == b.backend) {
            Some(c) => pairs.push((b, c)),
            None => notes.push(format!("{trace} {}: in the baseline only", b.backend)),
        }
    }
    for c in &cand.results {
        if !base.results.iter().any(|b| b.backend == c.backend) {
            notes.push(format!("{trace} {}: in the candidate only", c.backend));
        }
    }
    pairs
}

/// The status cell, when status alone decides: `Some` when either side did not run `ok`
/// (then no metric of this backend is compared).
pub(crate) fn status_cell(trace: &str, base: &BackendResult, cand: &BackendResult) -> Option<Cell> {
    let reason = |r: &BackendResult| r.reason.clone().unwrap_or_else(|| "no reason given".into());
    let (verdict, note) = match (base.status, cand.status) {
        (Status::Ok, Status::Ok) => return None,
        (Status::Ok, Status::Failed) => (
            Verdict::Regression,
            format!("failed now (ran in the baseline): {}", reason(cand)),
        ),
        (Status::Ok, Status::Skipped) => (
            Verdict::Inconclusive,
            format!("skipped now: {}", reason(cand)),
        ),
        (_, Status::Ok) => (
            Verdict::Inconclusive,
            format!("not ok in the baseline: {}", reason(base)),
        ),
        (_, _) => (
            Verdict::Pass,
            format!("not ok on either side: {}", reason(cand)),
        ),
    };
    Some(Cell {
        trace: trace.to_string(),
        backend: base.backend.clone(),
        metric: Metric::Status,
        base_runs: base.runs.len(),
        cand_runs: cand.runs.len(),
        base_value: None,
        cand_value: None,
        change: None,
        margin: 0.0,
        verdict,
        note: Some(note),
    })
}

/// The deterministic cells of one backend: reserved bytes within its margin, failures never up.
pub(crate) fn deterministic_cells(
    trace: &str,
    base: &BackendResult,
    cand: &BackendResult,
    margins: &Margins,
) -> Vec<Cell> {
    let mut cells = Vec::new();
    // Process-wide counters (RSS, glibc's mallinfo2) depend on what ran before in the process,
    // not only on this backend: they are shown but not gated.
    // Sources are named by what they read, joined with `+` (`rss+mallinfo2`).
    let reserved_comparable = |r: &BackendResult| {
        !r.reserved_source.as_deref().is_some_and(|source| {
            source
                .split('+')
                .any(|part| part == "rss" || part == "mallinfo2")
        })
    };
    if reserved_comparable(base) && reserved_comparable(cand) {
        let (b, c) = (base.peak_reserved_bytes, cand.peak_reserved_bytes);
        let m = margins.peak_reserved;
        let verdict = if (c as f64) > b as f64 * (1.0 + m) {
            Verdict::Regression
        } else if (c as f64) < b as f64 * (1.0 - m) {
            Verdict::Improvement
        } else {
            Verdict::Pass
        };
        cells.push(exact_cell(
            trace,
            base,
            cand,
            Metric::PeakReservedBytes,
            b,
            c,
            m,
            verdict,
        ));
    }
    let (b, c) = (base.alloc_failures, cand.alloc_failures);
    let verdict = match c.cmp(&b) {
        std::cmp::Ordering::Greater => Verdict::Regression,
        std::cmp::Ordering::Less => Verdict::Improvement,
        std::cmp::Ordering::Equal => Verdict::Pass,
    };
    cells.push(exact_cell(
        trace,
        base,
        cand,
        Metric::AllocFailures,
        b,
        c,
        0.0,
        verdict,
    ));
    cells.extend(count_cells(trace, base, cand, margins));
    cells
}

/// The counts-tier cells of one backend: each per-op count within `margins.counts` of the
/// baseline's, in either direction, or it is a regression (grew) or an improvement (shrank).
/// Counts are deterministic, so no interval is needed; the margin absorbs what little moves
/// between identical runs (thread interleaving under valgrind, address-dependent paths).
pub(crate) fn count_cells(
    trace: &str,
    base: &BackendResult,
    cand: &BackendResult,
    margins: &Margins,
) -> Vec<Cell> {
    let (Some(base_counts), Some(cand_counts)) = (&base.counts, &cand.counts) else {
        return Vec::new();
    };
    let m = margins.counts;
    Metric::COUNTS
        .iter()
        .filter_map(|&metric| {
            let (b, base_calls) = metric.count_value(base_counts)?;
            let (c, cand_calls) = metric.count_value(cand_counts)?;
            if base_calls == 0 || cand_calls == 0 {
                return None; // the trace has no such op
            }
            let verdict = if c > b * (1.0 + m) {
                Verdict::Regression
            } else if c < b * (1.0 - m) {
                Verdict::Improvement
            } else {
                Verdict::Pass
            };
            let change = c.max(1e-9).ln() - b.max(1e-9).ln();
            Some(Cell {
                trace: trace.to_string(),
                backend: base.backend.clone(),
                metric,
                base_runs: 1,
                cand_runs: 1,
                base_value: Some(b),
                cand_value: Some(c),
                change: Some(Shift {
                    estimate: change,
                    lo: change,
                    hi: change,
                    confidence: 1.0,
                }),
                margin: m,
                verdict,
                note: (base_calls != cand_calls).then(|| {
                    format!("calls differ: {base_calls} in the baseline, {cand_calls} now")
                }),
            })
        })
        .collect()
}

/// Notes for backends whose counts exist on one side only.
pub(crate) fn count_presence_note(
    trace: &str,
    base: &BackendResult,
    cand: &BackendResult,
) -> Option<String> {
    match (base.counts.is_some(), cand.counts.is_some()) {
        (true, false) => Some(format!(
            "{trace} {}: counts in the baseline only (run with --counts to judge them)",
            base.backend
        )),
        (false, true) => Some(format!(
            "{trace} {}: counts in the candidate only (the baseline has none)",
            base.backend
        )),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn exact_cell(
    trace: &str,
    base: &BackendResult,
    cand: &BackendResult,
    metric: Metric,
    base_value: u64,
    cand_value: u64,
    margin: f64,
    verdict: Verdict,
) -> Cell {
    // Log of (1 + value) keeps zero counts finite; for byte counts the +1 is negligible.
    let change = (cand_value as f64).ln_1p() - (base_value as f64).ln_1p();
    Cell {
        trace: trace.to_string(),
        backend: base.backend.clone(),
        metric,
        base_runs: base.runs.len(),
        cand_runs: cand.runs.len(),
        base_value: Some(base_value as f64),
        cand_value: Some(cand_value as f64),
        change: Some(Shift {
            estimate: change,
            lo: change,
            hi: change,
            confidence: 1.0,
        }),
        margin,
        verdict,
        note: None,
    }
}

/// Compares every (trace, backend) present in both files.
pub fn compare_results(
    base: &ResultsFile,
    cand: &ResultsFile,
    options: &CompareOptions,
) -> Comparison {
    let mut notes = Vec::new();
    let mut cells = Vec::new();
    let mut noisy = Vec::new();
    // Latencies can't be told apart below the coarser of the two clocks' steps.
    let clock_ns = base
        .latency_resolution_ns()
        .max(cand.latency_resolution_ns());
    let mut used_reference = false;
    for (trace, base_trace, cand_trace) in match_traces(base, cand, &mut notes) {
        let reference = options.reference_backend.as_deref().and_then(|name| {
            Some((
                crate::gate::reference_of(&base_trace.results, name)?,
                crate::gate::reference_of(&cand_trace.results, name)?,
            ))
        });
        for (b, c) in match_backends(&trace, base_trace, cand_trace, &mut notes) {
            if let Some(cell) = status_cell(&trace, b, c) {
                cells.push(cell);
                continue;
            }
            // Paired within a run: this backend's value over the reference's in the same run.
            let paired = reference.filter(|(base_ref, _)| base_ref.backend != b.backend);
            used_reference |= paired.is_some();
            for metric in Metric::NOISY {
                let sample = match paired {
                    Some((base_ref, cand_ref)) => crate::gate::ratio_samples(
                        &trace, metric, b, base_ref, c, cand_ref, clock_ns,
                    ),
                    None => {
                        let values = |r: &BackendResult| -> Vec<f64> {
                            r.runs
                                .iter()
                                .filter_map(|run| metric.run_value(run))
                                .collect()
                        };
                        CellSamples::from_values(&trace, &b.backend, metric, &values(b), &values(c))
                            .with_clock_resolution(clock_ns)
                    }
                };
                if sample.base_logs.is_empty() && sample.cand_logs.is_empty() {
                    continue; // not recorded by either file (e.g. older harness)
                }
                noisy.push(sample);
            }
            notes.extend(count_presence_note(&trace, b, c));
            cells.extend(deterministic_cells(&trace, b, c, &options.margins));
        }
    }
    let (judged, confidence) = judge_cells(noisy, options);
    let noisy_cells = judged.len();
    cells.extend(judged);
    sort_cells(&mut cells);
    let count_cells = cells
        .iter()
        .filter(|c| c.metric.tier() == Tier::Counts)
        .count();
    Comparison {
        reference_backend: options.reference_backend.clone().filter(|_| used_reference),
        cells,
        notes,
        noisy_cells,
        confidence,
        count_cells,
    }
}

pub(crate) fn sort_cells(cells: &mut [Cell]) {
    cells.sort_by(|a, b| (&a.trace, &a.backend, a.metric).cmp(&(&b.trace, &b.backend, b.metric)));
}

#[cfg(test)]
mod tests;
