//! What each chart shows, taken from a run's artifacts: plain numbers, no drawing.

use std::collections::BTreeSet;

use crate::hgrm::trace_stem;
use crate::{RunArtifacts, Status};

/// One chart and the file stem its PNG and SVG are written under.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSpec {
    /// Index into `ResultsFile::traces`.
    pub trace_index: usize,
    /// File name without extension, e.g. `web.percentiles.alloc`.
    pub stem: String,
    pub title: String,
    pub chart: Chart,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Chart {
    /// Latency against percentile, one line per backend: points `(quantile, ns)`, quantile < 1.
    Percentiles {
        series: Vec<(String, Vec<(f64, f64)>)>,
    },
    /// Counts of latencies in power-of-two buckets: `(low_ns, high_ns, count)`.
    Histogram { buckets: Vec<(f64, f64, u64)> },
    /// Throughput per backend: `(backend, median, min, max)` ops/s over runs.
    Throughput { bars: Vec<(String, f64, f64, f64)> },
    /// Bytes over the trace: the ideal live bytes and each backend's reserved bytes, against
    /// the event sequence number.
    Memory {
        live: Vec<(f64, f64)>,
        reserved: Vec<(String, Vec<(f64, f64)>)>,
    },
}

/// Every chart of a run, in the order the HTML report shows them.
pub fn plan_plots(artifacts: &RunArtifacts) -> Vec<PlotSpec> {
    let mut plots = Vec::new();
    for (trace_index, trace) in artifacts.results.traces.iter().enumerate() {
        let stem = crate::hgrm::file_safe(&trace_stem(&trace.path));
        let name = trace_stem(&trace.path);
        let of_trace: Vec<_> = artifacts
            .histograms
            .iter()
            .filter(|h| h.trace_index == trace_index && !h.histogram.is_empty())
            .collect();
        let ops: BTreeSet<&str> = of_trace.iter().map(|h| h.op.as_str()).collect();
        for op in ["alloc", "free", "realloc"]
            .into_iter()
            .filter(|op| ops.contains(op))
        {
            let series = of_trace
                .iter()
                .filter(|h| h.op == op)
                .map(|h| {
                    let points = h
                        .histogram
                        .iter_quantiles(crate::hgrm::TICKS_PER_HALF_DISTANCE)
                        .filter(|v| v.quantile_iterated_to() < 1.0)
                        .map(|v| (v.quantile_iterated_to(), v.value_iterated_to() as f64))
                        .collect();
                    (h.backend.clone(), points)
                })
                .collect();
            plots.push(PlotSpec {
                trace_index,
                stem: format!("{stem}.percentiles.{op}"),
                title: format!("{name}: {op} latency by percentile"),
                chart: Chart::Percentiles { series },
            });
        }
        for h in of_trace.iter().filter(|h| h.op == "alloc") {
            let buckets = h
                .histogram
                .iter_log(1, 2.0)
                .map(|v| {
                    let high = v.value_iterated_to() as f64;
                    (
                        (high / 2.0).max(0.5),
                        high.max(1.0),
                        v.count_since_last_iteration(),
                    )
                })
                .filter(|b| b.2 > 0)
                .collect();
            plots.push(PlotSpec {
                trace_index,
                stem: format!("{stem}.{}.histogram", crate::hgrm::file_safe(&h.backend)),
                title: format!("{name}: {} alloc latency histogram", h.backend),
                chart: Chart::Histogram { buckets },
            });
        }
        let ok: Vec<_> = trace
            .results
            .iter()
            .filter(|r| r.status == Status::Ok && !r.runs.is_empty())
            .collect();
        if !ok.is_empty() {
            let bars = ok
                .iter()
                .map(|r| {
                    let per_run: Vec<f64> = r.runs.iter().map(|run| run.ops_per_sec).collect();
                    let min = per_run.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = per_run.iter().copied().fold(0.0, f64::max);
                    (r.backend.clone(), crate::stats::median(&per_run), min, max)
                })
                .collect();
            plots.push(PlotSpec {
                trace_index,
                stem: format!("{stem}.throughput"),
                title: format!("{name}: throughput (median, min–max over runs)"),
                chart: Chart::Throughput { bars },
            });
        }
        // Recorded rows (`torch-caching`: PyTorch's own reserved curve) have no runs but
        // a series; the live line comes from a replayed backend.
        let with_series: Vec<_> = trace
            .results
            .iter()
            .filter(|r| r.status == Status::Ok && !r.memory_series.is_empty())
            .filter(|r| r.recorded || !r.runs.is_empty())
            .collect();
        let live_from = with_series
            .iter()
            .find(|r| !r.recorded)
            .or(with_series.first());
        if let Some(first) = live_from {
            let live = first
                .memory_series
                .iter()
                .map(|s| (s.seq as f64, s.live_bytes as f64))
                .collect();
            let reserved = with_series
                .iter()
                .map(|r| {
                    let points = r
                        .memory_series
                        .iter()
                        .map(|s| (s.seq as f64, s.reserved_bytes as f64))
                        .collect();
                    (r.backend.clone(), points)
                })
                .collect();
            plots.push(PlotSpec {
                trace_index,
                stem: format!("{stem}.memory"),
                title: format!("{name}: live (ideal) and reserved bytes"),
                chart: Chart::Memory { live, reserved },
            });
        }
    }
    plots
}
