//! Results schema, histograms files, plots, reports and regression statistics.

pub mod results;

pub use results::*;
