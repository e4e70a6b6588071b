//! Regression statistics: a bootstrap of the shift in medians of log values, judged against a
//! margin of practical equivalence (three-way verdict), with a Bonferroni correction over every
//! cell gated at once.
//!
//! Why logs: allocator throughput and latency are ratio-scale; a log shift reads directly as
//! "x% slower", is symmetric between base and candidate, and cancels machine speed when the
//! values are themselves ratios to an in-run reference (`replay gate`).
//!
//! Why medians: a run disturbed by a neighbour on a shared CI machine is an outlier; one such
//! run moves a mean but barely moves a median.

pub mod bootstrap;
pub mod rng;
pub mod verdict;

pub use bootstrap::{bootstrap_median_shift, median, Shift};
pub use rng::SplitMix64;
pub use verdict::{classify, runs_needed_per_side, Verdict};

/// Fewer runs than this on either side gives no estimate of noise: the cell is inconclusive.
pub const MIN_RUNS: usize = 3;

/// Smallest number of bootstrap resamples accepted (`--resamples`).
pub const MIN_RESAMPLES: usize = 10_000;

/// A deterministic 64-bit seed for one cell, from its identity (FNV-1a), so that a cell's
/// interval does not depend on which other cells were compared or in what order.
pub fn cell_seed(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0xff)) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}
