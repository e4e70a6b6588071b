//! The three-way verdict against a margin of practical equivalence, on a "worse is positive"
//! log scale.

use super::shift::Shift;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The whole interval lies inside `±margin`: equivalent.
    Pass,
    /// The whole interval lies beyond `-margin`: better (reported, never a failure).
    Improvement,
    /// The interval straddles a margin boundary: more runs (or a quieter machine) needed.
    Inconclusive,
    /// The whole interval lies beyond `+margin`: worse.
    Regression,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Improvement => "improvement",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Regression => "regression",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Verdict of a shift (worse positive) against `margin_log` (> 0, in the same log units).
pub fn classify(shift: &Shift, margin_log: f64) -> Verdict {
    if shift.lo > margin_log {
        Verdict::Regression
    } else if shift.hi < -margin_log {
        Verdict::Improvement
    } else if shift.lo >= -margin_log && shift.hi <= margin_log {
        Verdict::Pass
    } else {
        Verdict::Inconclusive
    }
}

/// Runs per side that would likely decide an inconclusive cell, assuming the interval keeps
/// its centre and its width shrinks as `sqrt(1/n_base + 1/n_cand)`. `None` when the estimate
/// sits on the margin itself (no finite number of runs decides it).
pub fn runs_needed_per_side(
    shift: &Shift,
    margin_log: f64,
    base_runs: usize,
    cand_runs: usize,
) -> Option<usize> {
    let half_width = 0.5 * (shift.hi - shift.lo);
    // The interval needs to clear the nearer margin boundary on its own side of it.
    let needed_half_width = (shift.estimate.abs() - margin_log).abs();
    if half_width <= 0.0 {
        return Some(base_runs.max(cand_runs));
    }
    if needed_half_width < 1e-9 {
        return None;
    }
    let inverse_runs_now = 1.0 / base_runs as f64 + 1.0 / cand_runs as f64;
    let scale = needed_half_width / half_width;
    let runs = 2.0 / (inverse_runs_now * scale * scale);
    Some((runs.ceil() as usize).max(base_runs.max(cand_runs) + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shift(lo: f64, hi: f64) -> Shift {
        Shift {
            estimate: 0.5 * (lo + hi),
            lo,
            hi,
            confidence: 0.95,
        }
    }

    #[test]
    fn four_outcomes() {
        let m = 0.05;
        assert_eq!(classify(&shift(0.06, 0.2), m), Verdict::Regression);
        assert_eq!(classify(&shift(-0.2, -0.06), m), Verdict::Improvement);
        assert_eq!(classify(&shift(-0.04, 0.04), m), Verdict::Pass);
        assert_eq!(classify(&shift(0.01, 0.09), m), Verdict::Inconclusive);
        assert_eq!(classify(&shift(-0.09, 0.0), m), Verdict::Inconclusive);
    }

    #[test]
    fn runs_needed_scales_with_inverse_square_of_width() {
        // Estimate 0.0, half-width 0.1 with 5 runs a side; passing needs half-width 0.05:
        // four times the runs.
        let s = shift(-0.1, 0.1);
        assert_eq!(runs_needed_per_side(&s, 0.05, 5, 5), Some(20));
        // Estimate exactly on the margin: nothing decides it.
        let on_margin = Shift {
            estimate: 0.05,
            lo: 0.0,
            hi: 0.1,
            confidence: 0.95,
        };
        assert_eq!(runs_needed_per_side(&on_margin, 0.05, 5, 5), None);
    }
}
