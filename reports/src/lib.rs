//! Results schema, histograms files, plots, reports and regression statistics.

mod atomic;
pub mod compare;
mod error;
pub mod format;
pub mod gate;
pub mod hgrm;
pub mod html;
pub mod junit;
mod out_dir;
pub mod plots;
pub mod results;
pub mod stats;
pub mod summary_md;
pub mod table;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod golden_tests;

pub use atomic::{read_results_json, write_atomic, write_results_json};
pub use compare::{compare_results, CompareOptions, Comparison, Margins, Metric};
pub use error::ReportError;
pub use gate::{gate_results, GateOptions, GateReport};
pub use out_dir::{write_junit, write_out_dir, write_out_dir_with_verdicts};
pub use results::*;
pub use stats::Verdict;
pub use table::{Align, Table};

/// Latency histogram of one (trace, backend, op kind), merged over workers and runs,
/// in nanoseconds with the clock floor subtracted. Kept beside `ResultsFile` to write
/// `.hgrm` files and plots.
#[derive(Debug, Clone)]
pub struct NamedHistogram {
    /// Index into `ResultsFile::traces`.
    pub trace_index: usize,
    pub backend: String,
    /// `alloc`, `free` or `realloc`.
    pub op: String,
    pub histogram: hdrhistogram::Histogram<u64>,
}

/// Everything a replay produced: what `--out DIR` writes.
#[derive(Debug, Clone)]
pub struct RunArtifacts {
    pub results: ResultsFile,
    pub histograms: Vec<NamedHistogram>,
}
