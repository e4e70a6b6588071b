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
    // The PNG encoder opens the file itself (and picks the format from its extension, which
    // the temporary name keeps). A drawing error is kept to be reported as a plot error.
    let mut draw_error = None;
    atomic_file::write_through_temp_path(path, |temp| {
        let root = BitMapBackend::new(temp, PLOT_SIZE).into_drawing_area();
        render::draw(&root, spec).map_err(|m| {
            let e = std::io::Error::other(m.clone());
            draw_error = Some(m);
            e
        })
    })
    .map_err(|e| match draw_error.take() {
        Some(m) => plot_error(path, m),
        None => ReportError::io(path, e),
    })
}
