//! The shift between two samples of log values: the Hodges–Lehmann estimate (median of every
//! pairwise difference) with its exact Mann–Whitney (Wilcoxon rank-sum) confidence interval.
//!
//! Why this test: it is distribution-free and exact for any sample size. Its coverage does not
//! rest on asymptotics, so three to ten samples per side — what a nightly job can afford — give
//! intervals that mean what they say; a percentile bootstrap of medians is anti-conservative
//! there and called unchanged builds regressions. When the samples are too few to reach the
//! requested confidence at all, the interval is unbounded and the cell is inconclusive.

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

/// A shift (candidate minus base) and its two-sided confidence interval. `lo`/`hi` are
/// infinite when the samples are too few for `confidence`.
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

    /// Whether the interval is bounded (enough samples for its confidence).
    pub fn is_bounded(&self) -> bool {
        self.lo.is_finite() && self.hi.is_finite()
    }
}

/// Above this many pairs the null distribution of the rank-sum statistic is taken from its
/// normal approximation (then already accurate to far below the levels used here).
const EXACT_PAIRS_LIMIT: usize = 2_500;

/// Hodges–Lehmann shift of `cand` against `base` with the exact Mann–Whitney interval at
/// `confidence` (two-sided). Both slices must be non-empty.
pub fn rank_shift(base: &[f64], cand: &[f64], confidence: f64) -> Shift {
    assert!(
        !base.is_empty() && !cand.is_empty(),
        "a shift needs samples on both sides"
    );
    assert!(confidence > 0.0 && confidence < 1.0);
    let mut diffs: Vec<f64> = cand
        .iter()
        .flat_map(|c| base.iter().map(move |b| c - b))
        .collect();
    let estimate = median_in_place(&mut diffs); // also sorts `diffs`
    let pairs = diffs.len();
    let k = lower_rank(base.len(), cand.len(), (1.0 - confidence) / 2.0);
    let (lo, hi) = if k == 0 {
        (f64::NEG_INFINITY, f64::INFINITY)
    } else {
        (diffs[k - 1], diffs[pairs - k])
    };
    Shift {
        estimate,
        lo,
        hi,
        confidence,
    }
}

/// Samples per side (equal sides) that give a bounded interval at `confidence`.
pub fn runs_for_confidence(confidence: f64) -> usize {
    let tail = (1.0 - confidence) / 2.0;
    (2..200)
        .find(|&n| lower_rank(n, n, tail) > 0)
        .unwrap_or(200)
}

/// The largest `k` with `P(U < k) <= tail` under the null hypothesis, where `U` counts the
/// pairs (base, candidate) whose candidate is the larger: the interval is the `k`-th smallest
/// to the `k`-th largest pairwise difference. 0 when even `P(U = 0)` exceeds `tail`.
fn lower_rank(n: usize, m: usize, tail: f64) -> usize {
    let pairs = n * m;
    if pairs > EXACT_PAIRS_LIMIT {
        let mean = pairs as f64 / 2.0;
        let sd = (pairs as f64 * (n + m + 1) as f64 / 12.0).sqrt();
        let z = normal_quantile(1.0 - tail);
        // Continuity-corrected: P(U <= c) ~ Phi((c + 0.5 - mean) / sd).
        let c = (mean - z * sd - 0.5).floor();
        return if c < 0.0 { 0 } else { c as usize + 1 };
    }
    let counts = rank_sum_counts(n, m);
    let total: f64 = counts.iter().sum();
    let mut below = 0.0;
    let mut k = 0;
    for &ways in &counts {
        if (below + ways) / total > tail {
            break;
        }
        below += ways;
        k += 1;
    }
    k.min(pairs / 2)
}

/// Number of orderings of `n` base and `m` candidate values (all distinct) giving `U = u`, for
/// `u` in `0..=n*m`. Split on the largest of the `i + j` values: a candidate value exceeds all
/// `i` base values (adding `i` to `U`), a base value exceeds no candidate (adding nothing):
/// `f(i, j, u) = f(i - 1, j, u) + f(i, j - 1, u - i)`.
fn rank_sum_counts(n: usize, m: usize) -> Vec<f64> {
    let pairs = n * m;
    // Row i of the table (every j), built from row i - 1.
    let mut prev: Vec<Vec<f64>> = (0..=m).map(|_| unit(pairs)).collect(); // i = 0
    for i in 1..=n {
        let mut cur: Vec<Vec<f64>> = Vec::with_capacity(m + 1);
        cur.push(unit(pairs)); // j = 0
        for j in 1..=m {
            let mut d = prev[j].clone();
            let candidate_largest = &cur[j - 1];
            for u in i..=pairs {
                d[u] += candidate_largest[u - i];
            }
            cur.push(d);
        }
        prev = cur;
    }
    prev.swap_remove(m)
}

/// The distribution of `U` with no pair: 0 in one way.
fn unit(pairs: usize) -> Vec<f64> {
    let mut d = vec![0.0; pairs + 1];
    d[0] = 1.0;
    d
}

/// Quantile of the standard normal distribution (Acklam's rational approximation, relative
/// error below 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
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
    fn rank_sum_counts_match_small_cases() {
        // n = m = 2: U in 0..=4 with counts 1, 1, 2, 1, 1 (C(4, 2) = 6 orderings).
        assert_eq!(rank_sum_counts(2, 2), vec![1.0, 1.0, 2.0, 1.0, 1.0]);
        let counts = rank_sum_counts(5, 7);
        assert_eq!(counts.iter().sum::<f64>(), 792.0); // C(12, 5)
        for u in 0..=35 {
            assert_eq!(counts[u], counts[35 - u], "symmetric at {u}");
        }
    }

    #[test]
    fn lower_rank_follows_the_tables() {
        // Published critical values of the rank-sum test: n = m = 10, two-sided 5%: U <= 23.
        assert_eq!(lower_rank(10, 10, 0.025), 24);
        // n = m = 3: P(U = 0) = 1/20 > 0.025: no bounded 95% interval.
        assert_eq!(lower_rank(3, 3, 0.025), 0);
        assert_eq!(lower_rank(3, 3, 0.05), 1);
        // The normal approximation continues the exact values smoothly.
        let exact = lower_rank(50, 50, 0.025);
        let approx = {
            let n = 50.0_f64;
            let sd = (n * n * (2.0 * n + 1.0) / 12.0).sqrt();
            (n * n / 2.0 - 1.959_964 * sd - 0.5).floor() as usize + 1
        };
        assert!(exact.abs_diff(approx) <= 2, "{exact} {approx}");
    }

    #[test]
    fn constant_shift_gives_a_point_interval() {
        let base = [1.0, 1.0, 1.0, 1.0, 1.0];
        let cand = [1.5, 1.5, 1.5, 1.5, 1.5];
        let s = rank_shift(&base, &cand, 0.95);
        assert_eq!((s.estimate, s.lo, s.hi), (0.5, 0.5, 0.5));
    }

    #[test]
    fn every_sample_shifted_by_the_same_amount_is_recovered_whatever_the_spread() {
        // Samples spread 2x (as one-pass runs on a shared machine do), candidate = base - ln 2
        // sample by sample: the estimate is exact, the interval excludes 0 at 99%.
        let base: Vec<f64> = [
            36.7f64, 77.5, 41.0, 52.3, 60.1, 45.9, 70.2, 39.8, 48.8, 66.0,
        ]
        .iter()
        .map(|v| v.ln())
        .collect();
        let cand: Vec<f64> = base.iter().map(|v| v - 2f64.ln()).collect();
        let s = rank_shift(&base, &cand, 0.99);
        assert!((s.estimate + 2f64.ln()).abs() < 0.1, "{s:?}");
        assert!(s.hi < 0.0, "{s:?}");
    }

    #[test]
    fn too_few_samples_give_an_unbounded_interval() {
        let s = rank_shift(&[0.0, 0.1, 0.2], &[0.5, 0.6, 0.7], 0.99);
        assert!(!s.is_bounded());
        assert!((s.estimate - 0.5).abs() < 1e-12);
    }

    #[test]
    fn coverage_is_at_least_the_confidence_for_few_samples() {
        // A/A with 5 samples a side from a heavy-tailed distribution: a 90% interval must
        // contain the true shift 0 at least 90% of the time (exact test: up to rounding of k).
        let mut rng = crate::stats::SplitMix64::new(9);
        let mut draw = || {
            let x = rng.normal();
            x * x * x // heavy tails
        };
        let trials = 2_000;
        let mut covered = 0;
        for _ in 0..trials {
            let base: Vec<f64> = (0..5).map(|_| draw()).collect();
            let cand: Vec<f64> = (0..5).map(|_| draw()).collect();
            let s = rank_shift(&base, &cand, 0.90);
            if s.lo <= 0.0 && 0.0 <= s.hi {
                covered += 1;
            }
        }
        assert!(covered as f64 / trials as f64 >= 0.88, "{covered}/{trials}");
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
