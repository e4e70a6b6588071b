//! HdrHistogram's percentile-distribution text (`.hgrm`), byte for byte the format of Java's
//! `AbstractHistogram.outputPercentileDistribution(out, ticksPerHalfDistance, 1.0)`, which the
//! HdrHistogram plotter and most latency tooling read.
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!       12.000 0.000000000000          1           1.00
//!       ...
//!      873.000 1.000000000000        500
//! #[Mean    =       40.210, StdDeviation   =       31.007]
//! #[Max     =      873.000, Total count    =          500]
//! #[Buckets =           22, SubBuckets     =         2048]
//! ```
//! Values are in the histogram's own unit (nanoseconds here) with as many decimals as the
//! histogram has significant digits, as Java prints them.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// Rows per halving of the remaining distance to 100%, as HdrHistogram's tools use.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The `.hgrm` text of `hist`.
pub fn percentile_distribution(hist: &Histogram<u64>, ticks_per_half_distance: u32) -> String {
    let decimals = usize::from(hist.sigfig());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !hist.is_empty() {
        let mut total_count: u64 = 0;
        for v in hist.iter_quantiles(ticks_per_half_distance) {
            total_count += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64;
            let quantile = v.quantile_iterated_to();
            if quantile < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.decimals$} {quantile:>2.12} {total_count:>10} {:>14.2}",
                    1.0 / (1.0 - quantile)
                );
            } else {
                let _ = writeln!(
                    out,
                    "{value:>12.decimals$} {quantile:>2.12} {total_count:>10}"
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.decimals$}, StdDeviation   = {:>12.decimals$}]",
        hist.mean(),
        hist.stdev()
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.decimals$}, Total count    = {:>12}]",
        hist.max() as f64,
        hist.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        hist.buckets(),
        sub_bucket_count(hist.sigfig())
    );
    out
}

/// HdrHistogram's sub-bucket count for `sigfig` significant digits: the power of two that
/// resolves `2 * 10^sigfig` distinct values (2048 for 3 digits).
pub fn sub_bucket_count(sigfig: u8) -> u32 {
    let largest_single_unit = 2 * 10u64.pow(u32::from(sigfig));
    largest_single_unit.next_power_of_two() as u32
}

/// The `.hgrm` file name of one (trace, backend, op): `<trace-stem>.<backend>.<op>.hgrm`.
/// Characters other than ASCII letters, digits, `-` and `_` become `_`.
pub fn hgrm_file_name(trace_path: &str, backend: &str, op: &str) -> String {
    format!(
        "{}.{}.{}.hgrm",
        file_safe(&trace_stem(trace_path)),
        file_safe(backend),
        file_safe(op)
    )
}

/// A trace's name without directories and without its extensions (`.csv.gz` too).
pub fn trace_stem(trace_path: &str) -> String {
    let name = std::path::Path::new(trace_path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| trace_path.to_string());
    let mut stem = name.as_str();
    for ext in [".gz", ".zst", ".zip"] {
        stem = stem.strip_suffix(ext).unwrap_or(stem);
    }
    for ext in [".csv", ".txt", ".log", ".trace"] {
        stem = stem.strip_suffix(ext).unwrap_or(stem);
    }
    if stem.is_empty() {
        name
    } else {
        stem.to_string()
    }
}

pub(crate) fn file_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_buckets_match_hdrhistogram() {
        assert_eq!(sub_bucket_count(1), 32);
        assert_eq!(sub_bucket_count(2), 256);
        assert_eq!(sub_bucket_count(3), 2048);
    }

    #[test]
    fn file_names() {
        assert_eq!(
            hgrm_file_name("workloads/traces/web-server.csv.gz", "pool-fixed", "alloc"),
            "web-server.pool-fixed.alloc.hgrm"
        );
        assert_eq!(
            hgrm_file_name("a b.csv", "x/y", "free"),
            "a_b.x_y.free.hgrm"
        );
    }

    #[test]
    fn empty_histogram_has_header_and_footer_only() {
        let h = Histogram::<u64>::new(3).unwrap();
        let text = percentile_distribution(&h, 5);
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("Total count    =            0"));
    }
}
