//! Charts, as PNG files and as SVG text (inlined into report.html): latency by percentile
//! (HdrHistogram plotter convention: x on a log `1/(1-p)` scale), latency histograms,
//! throughput with min–max whiskers over runs, and memory over the trace.

mod data;
mod font;
mod render;

use std::path::Path;

pub use data::{plan_plots, Chart, PlotSpec};
pub use font::{ensure_font, FONT_FAMILY};
pub use render::PLOT_SIZE;

use plotters::prelude::*;

use crate::ReportError;

fn plot_error(path: &Path, message: String) -> ReportError {
    ReportError::Plot {
        path: path.to_path_buf(),
        message,
    }
}

/// The chart as a standalone SVG document.
pub fn render_svg(spec: &PlotSpec) -> Result<String, ReportError> {
    let path = Path::new(&spec.stem).with_extension("svg");
    ensure_font().map_err(|m| plot_error(&path, m))?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, PLOT_SIZE).into_drawing_area();
        render::draw(&root, spec).map_err(|m| plot_error(&path, m))?;
    }
    Ok(svg)
}

/// Writes the chart as a PNG file at `path` (atomically: drawn to a temporary sibling, then
/// renamed).
pub fn render_png(spec: &PlotSpec, path: &Path) -> Result<(), ReportError> {
    ensure_font().map_err(|m| plot_error(path, m))?;
    let temp = crate::atomic::temp_sibling(path);
    let drawn = {
        let root = BitMapBackend::new(&temp, PLOT_SIZE).into_drawing_area();
        render::draw(&root, spec)
    };
    if let Err(m) = drawn {
        let _ = std::fs::remove_file(&temp);
        return Err(plot_error(path, m));
    }
    crate::atomic::finish_atomic(&temp, path)
}
