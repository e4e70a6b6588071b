//! Results schema, histograms files, plots, reports and regression statistics.

pub mod results;

pub use results::*;

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
