//! The .hgrm writer against a reference file.
//!
//! `tests/golden/latency.hgrm` was reviewed line by line against Java's
//! `outputPercentileDistribution` (HdrHistogram 2.x source): header `%12s %14s %10s %14s`, rows
//! `%12.3f %2.12f %10d %14.2f` at percentile levels 0, 10, 20, …, 50, 55, …, 75, 77.5, … (five
//! ticks per half distance), a last row at 100% without the `1/(1-Percentile)` column, and the
//! three `#[…]` footer lines. HdrHistogram_py 0.10.8 agrees on the header, the value and count at
//! each shared level (0% and 10%), mean, standard deviation, max and buckets; its percentile
//! iterator steps from the level reached rather than the level targeted (0.19, 0.271, …), which
//! Java does not, and it prints `TotalCount = %12.3f` where Java prints `Total count = %12d`.

use hdrhistogram::Histogram;
use reports::hgrm::{percentile_distribution, TICKS_PER_HALF_DISTANCE};

fn reference_histogram() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600 * 1_000 * 1_000 * 1_000, 3).unwrap();
    for v in 1..=1000 {
        h.record(v).unwrap();
    }
    h.record_n(5000, 10).unwrap();
    h.record(123_456).unwrap();
    h
}

#[test]
fn matches_the_reference_percentile_distribution() {
    let expected = include_str!("golden/latency.hgrm");
    let actual = percentile_distribution(&reference_histogram(), TICKS_PER_HALF_DISTANCE);
    if actual != expected {
        for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
            assert_eq!(a, e, "first difference at line {}", i + 1);
        }
        assert_eq!(actual.lines().count(), expected.lines().count());
    }
    assert_eq!(actual, expected);
}

#[test]
fn header_rows_and_footer_have_the_java_shape() {
    let text = percentile_distribution(&reference_histogram(), TICKS_PER_HALF_DISTANCE);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "       Value     Percentile TotalCount 1/(1-Percentile)"
    );
    assert_eq!(lines[1], "");
    let last_row = lines[lines.len() - 4];
    assert!(last_row.contains("1.000000000000") && last_row.trim_end().ends_with("1011"));
    assert!(lines[lines.len() - 3].starts_with("#[Mean    = "));
    assert!(lines[lines.len() - 2].starts_with("#[Max     = "));
    assert!(lines[lines.len() - 1].starts_with("#[Buckets = "));
}
