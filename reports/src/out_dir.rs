//! `replay … --out DIR`: everything a run produced, as files.

use std::path::{Path, PathBuf};

use crate::compare::Comparison;
use crate::hgrm::{hgrm_file_name, percentile_distribution, TICKS_PER_HALF_DISTANCE};
use crate::html::{report_html, InlinePlot};
use crate::plots::{plan_plots, render_png, render_svg};
use crate::staged_dir::StagedDir;
use crate::summary_md::summary_markdown;
use crate::{write_atomic, write_results_json, ReportError, RunArtifacts};

/// Writes `results.json`, one `.hgrm` per (trace, backend, op), a PNG and an SVG per chart,
/// `report.html` and `summary.md` into `dir` (created if missing). The set is written as
/// one (see [`StagedDir`]): a reader sees the previous run's files or this run's, never a
/// mix. Returns the paths written, `results.json` first.
pub fn write_out_dir(dir: &Path, artifacts: &RunArtifacts) -> Result<Vec<PathBuf>, ReportError> {
    write_out_dir_with_verdicts(dir, artifacts, None)
}

/// [`write_out_dir`], with a gate's or comparison's verdicts added to the HTML and markdown.
pub fn write_out_dir_with_verdicts(
    dir: &Path,
    artifacts: &RunArtifacts,
    verdicts: Option<&Comparison>,
) -> Result<Vec<PathBuf>, ReportError> {
    write_staged_out_dir(StagedDir::prepare(dir)?, artifacts, verdicts)
}

/// [`write_out_dir_with_verdicts`] into a directory prepared (checked) before the run.
pub fn write_staged_out_dir(
    staged: StagedDir,
    artifacts: &RunArtifacts,
    verdicts: Option<&Comparison>,
) -> Result<Vec<PathBuf>, ReportError> {
    let written = write_files(staged.path(), artifacts, verdicts)?;
    let dest = staged.dest().to_path_buf();
    staged.commit()?;
    Ok(written
        .iter()
        .filter_map(|p| p.file_name())
        .map(|name| dest.join(name))
        .collect())
}

fn write_files(
    dir: &Path,
    artifacts: &RunArtifacts,
    verdicts: Option<&Comparison>,
) -> Result<Vec<PathBuf>, ReportError> {
    let results = &artifacts.results;
    let mut written = Vec::new();

    let path = dir.join("results.json");
    write_results_json(&path, results)?;
    written.push(path);

    for h in &artifacts.histograms {
        let trace = results.traces.get(h.trace_index).ok_or_else(|| {
            ReportError::Invalid(format!(
                "histogram {}/{} names trace {} of {}",
                h.backend,
                h.op,
                h.trace_index,
                results.traces.len()
            ))
        })?;
        let path = dir.join(hgrm_file_name(&trace.path, &h.backend, &h.op));
        write_atomic(
            &path,
            percentile_distribution(&h.histogram, TICKS_PER_HALF_DISTANCE).as_bytes(),
        )?;
        written.push(path);
    }

    let mut inline = Vec::new();
    for spec in plan_plots(artifacts) {
        let svg = render_svg(&spec)?;
        let svg_path = dir.join(format!("{}.svg", spec.stem));
        write_atomic(&svg_path, svg.as_bytes())?;
        written.push(svg_path);
        let png_path = dir.join(format!("{}.png", spec.stem));
        render_png(&spec, &png_path)?;
        written.push(png_path);
        inline.push(InlinePlot {
            trace_index: spec.trace_index,
            title: spec.title,
            svg,
        });
    }

    let path = dir.join("report.html");
    write_atomic(&path, report_html(results, verdicts, &inline).as_bytes())?;
    written.push(path);

    let path = dir.join("summary.md");
    write_atomic(&path, summary_markdown(results, verdicts).as_bytes())?;
    written.push(path);
    Ok(written)
}

/// Writes the verdicts as JUnit XML at `path`, atomically.
pub fn write_junit(path: &Path, verdicts: &Comparison) -> Result<(), ReportError> {
    write_atomic(
        path,
        crate::junit::junit_xml(verdicts, "poolbench gate").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::NamedHistogram;
    use hdrhistogram::Histogram;

    fn histogram(seed: u64, center_ns: f64) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in noisy_ns(seed, 5_000, center_ns, 0.6) {
            h.record(v.max(1)).unwrap();
        }
        h
    }

    pub(crate) fn artifacts() -> RunArtifacts {
        let results = results(vec![trace(
            "workloads/traces/web server.csv",
            vec![
                backend("system", &noisy(1, 5, 1e7, 0.03), &[50; 5], &[400; 5]),
                backend("pool-fixed", &noisy(2, 5, 4e7, 0.03), &[12; 5], &[80; 5]),
            ],
        )]);
        let mut histograms = Vec::new();
        for (i, name) in ["system", "pool-fixed"].into_iter().enumerate() {
            for (j, op) in ["alloc", "free"].into_iter().enumerate() {
                histograms.push(NamedHistogram {
                    trace_index: 0,
                    backend: name.into(),
                    op: op.into(),
                    histogram: histogram((i * 2 + j) as u64, 40.0 / (i + 1) as f64),
                });
            }
        }
        RunArtifacts {
            results,
            histograms,
        }
    }

    #[test]
    fn writes_every_file_and_a_self_contained_report() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let artifacts = artifacts();
        let written = write_out_dir(&out, &artifacts).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "results.json",
            "web_server.system.alloc.hgrm",
            "web_server.pool-fixed.free.hgrm",
            "web_server.percentiles.alloc.png",
            "web_server.percentiles.free.svg",
            "web_server.system.histogram.png",
            "web_server.throughput.svg",
            "web_server.memory.png",
            "report.html",
            "summary.md",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} not in {names:?}"
            );
        }
        // Nothing else (no temporary files) is left in the directory.
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), written.len());
        let back = crate::read_results_json(&out.join("results.json")).unwrap();
        assert_eq!(back, artifacts.results);
        let hgrm = std::fs::read_to_string(out.join("web_server.system.alloc.hgrm")).unwrap();
        assert!(hgrm.contains("Total count    =         5000"), "{hgrm}");

        let html = std::fs::read_to_string(out.join("report.html")).unwrap();
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("<svg").count(), 6, "every chart inline");
        assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("<img"));
        assert!(
            !html.contains("http://")
                || html.matches("http://").count()
                    == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
        );
        assert!(html.contains("clock floor 6.5 ns"));
        assert!(html.contains("<td>counts</td><td>3</td><td>2</td><td>1</td><td>0</td><td>1</td>"));
        let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
        assert!(md.contains("| pool-fixed | ok |"), "{md}");
    }

    #[test]
    fn every_plot_renders_to_png_and_svg_with_the_bundled_font() {
        let dir = tempfile::tempdir().unwrap();
        let plots = crate::plots::plan_plots(&artifacts());
        assert_eq!(plots.len(), 6);
        for spec in &plots {
            let svg = crate::plots::render_svg(spec).unwrap();
            assert!(svg.contains("<text"), "{}: no text drawn", spec.stem);
            assert!(
                svg.contains(&crate::html::escape(&spec.title)),
                "{}: no title",
                spec.stem
            );
            let png = dir.path().join(format!("{}.png", spec.stem));
            crate::plots::render_png(spec, &png).unwrap();
            let bytes = std::fs::read(&png).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", spec.stem);
            // Width and height from the IHDR chunk.
            let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
            let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
            assert_eq!((width, height), crate::plots::PLOT_SIZE);
        }
        let percentiles = crate::plots::render_svg(&plots[0]).unwrap();
        for label in ["50%", "90%", "99%", "99.9%"] {
            assert!(percentiles.contains(label), "axis label {label} missing");
        }
    }
}
