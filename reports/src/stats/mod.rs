//! Regression statistics: the Hodges–Lehmann shift of log values with its exact rank-sum
//! interval ([`shift`]), judged against a margin of practical equivalence (three-way verdict),
//! with a Bonferroni correction over every cell gated at once.
//!
//! Why logs: allocator throughput and latency are ratio-scale; a log shift reads directly as
//! "x% slower", is symmetric between base and candidate, and cancels machine speed when the
//! values are themselves ratios to an in-run reference (`replay gate`).
//!
//! Why ranks: a run disturbed by a neighbour on a shared CI machine is an outlier; one such
//! run moves a mean but barely moves a median of pairwise differences, and the interval's
//! coverage holds for any distribution and any number of runs.

pub mod rng;
pub mod shift;
pub mod verdict;

pub use rng::SplitMix64;
pub use shift::{median, rank_shift, Shift};
pub use verdict::{classify, runs_needed_per_side, Verdict};

/// Fewer runs than this on either side gives no estimate of noise: the cell is inconclusive.
pub const MIN_RUNS: usize = 3;
