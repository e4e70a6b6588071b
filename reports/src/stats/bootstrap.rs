//! Percentile bootstrap of `median(candidate) - median(base)`, resampling each side
//! independently (the runs of the two sides are not paired).

use super::rng::SplitMix64;

/// Median of `values` (mean of the middle two for an even count). Sorts a copy.
/// Returns NaN for an empty slice.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    median_in_place(&mut sorted)
}

fn median_in_place(values: &mut [f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    values.sort_unstable_by(f64::total_cmp);
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// A shift in medians (candidate minus base) and its two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Shift {
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
    /// Two-sided confidence level of `[lo, hi]`, e.g. 0.995.
    pub confidence: f64,
}

impl Shift {
    /// The same shift seen with the opposite sign (for metrics where lower values are worse).
    pub fn negated(self) -> Shift {
        Shift {
            estimate: -self.estimate,
            lo: -self.hi,
            hi: -self.lo,
            confidence: self.confidence,
        }
    }
}

/// Bootstraps `median(cand) - median(base)` with `resamples` resamples from a generator seeded
/// with `seed`, returning the percentile interval at `confidence` (two-sided).
/// Both slices must be non-empty.
pub fn bootstrap_median_shift(
    base: &[f64],
    cand: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Shift {
    assert!(
        !base.is_empty() && !cand.is_empty(),
        "bootstrap needs samples on both sides"
    );
    assert!(resamples > 0 && confidence > 0.0 && confidence < 1.0);
    let mut rng = SplitMix64::new(seed);
    let mut base_draw = vec![0.0; base.len()];
    let mut cand_draw = vec![0.0; cand.len()];
    let mut shifts = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for slot in base_draw.iter_mut() {
            *slot = base[rng.index(base.len())];
        }
        for slot in cand_draw.iter_mut() {
            *slot = cand[rng.index(cand.len())];
        }
        shifts.push(median_in_place(&mut cand_draw) - median_in_place(&mut base_draw));
    }
    shifts.sort_unstable_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    let lo_index = ((tail * resamples as f64).floor() as usize).min(resamples - 1);
    let hi_index = (((1.0 - tail) * resamples as f64).ceil() as usize)
        .saturating_sub(1)
        .clamp(lo_index, resamples - 1);
    Shift {
        estimate: median(cand) - median(base),
        lo: shifts[lo_index],
        hi: shifts[hi_index],
        confidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn constant_shift_gives_a_point_interval() {
        let base = [1.0, 1.0, 1.0, 1.0];
        let cand = [1.5, 1.5, 1.5, 1.5];
        let s = bootstrap_median_shift(&base, &cand, 10_000, 0.95, 1);
        assert_eq!((s.estimate, s.lo, s.hi), (0.5, 0.5, 0.5));
    }

    #[test]
    fn interval_contains_true_shift_and_narrows_with_more_runs() {
        let mut rng = SplitMix64::new(3);
        let mut draw =
            |n: usize, mu: f64| -> Vec<f64> { (0..n).map(|_| mu + 0.05 * rng.normal()).collect() };
        let (b10, c10) = (draw(10, 0.0), draw(10, 0.2));
        let (b80, c80) = (draw(80, 0.0), draw(80, 0.2));
        let s10 = bootstrap_median_shift(&b10, &c10, 10_000, 0.99, 5);
        let s80 = bootstrap_median_shift(&b80, &c80, 10_000, 0.99, 5);
        assert!(s10.lo < 0.2 && 0.2 < s10.hi, "{s10:?}");
        assert!(s80.lo < 0.2 && 0.2 < s80.hi, "{s80:?}");
        assert!(s80.hi - s80.lo < 0.6 * (s10.hi - s10.lo), "{s10:?} {s80:?}");
    }

    #[test]
    fn same_seed_same_interval() {
        let base = [1.0, 1.2, 0.9, 1.1, 1.05];
        let cand = [1.3, 1.1, 1.25, 1.4, 1.2];
        let a = bootstrap_median_shift(&base, &cand, 10_000, 0.95, 42);
        let b = bootstrap_median_shift(&base, &cand, 10_000, 0.95, 42);
        assert_eq!(a, b);
    }

    #[test]
    fn negated_swaps_bounds() {
        let s = Shift {
            estimate: 0.1,
            lo: 0.05,
            hi: 0.2,
            confidence: 0.9,
        };
        let n = s.negated();
        assert_eq!((n.estimate, n.lo, n.hi), (-0.1, -0.2, -0.05));
    }
}
