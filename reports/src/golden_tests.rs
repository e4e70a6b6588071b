//! Golden tests of the text reports. To refresh after a deliberate change:
//! `UPDATE_GOLDEN=1 cargo test -p reports golden`, then review the diff.

use crate::compare::{compare_results, CompareOptions};
use crate::fixtures::*;
use crate::ResultsFile;

fn golden_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn check(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs from the golden file",
        path.display()
    );
}

/// Baseline and candidate with one clear regression in each tier (pool-fixed twice as slow,
/// mimalloc's frees 20% costlier in instructions), passes, and one improvement.
fn pair() -> (ResultsFile, ResultsFile) {
    let mut base = results(vec![trace(
        "workloads/traces/web.csv",
        vec![
            backend(
                "system",
                &[1.0e7, 1.02e7, 0.99e7, 1.01e7, 1.0e7, 0.98e7, 1.0e7, 1.01e7],
                &[50, 51, 50, 49, 50, 50, 51, 50],
                &[400, 410, 395, 405, 400, 398, 402, 400],
            ),
            backend(
                "pool-fixed",
                &[4.0e7, 4.1e7, 3.9e7, 4.05e7, 4.0e7, 3.95e7, 4.0e7, 4.02e7],
                &[12, 12, 13, 12, 12, 12, 12, 13],
                &[80, 82, 79, 81, 80, 80, 81, 79],
            ),
            backend(
                "mimalloc",
                &[3.0e7, 3.05e7, 2.95e7, 3.0e7, 3.02e7, 2.97e7, 3.0e7, 3.01e7],
                &[20, 20, 21, 20, 20, 20, 21, 20],
                &[150, 152, 149, 151, 150, 150, 151, 149],
            ),
        ],
    )]);
    base.counts = Some(counts_info());
    for (r, (alloc, free)) in base.traces[0]
        .results
        .iter_mut()
        .zip([(120, 80), (40, 30), (60, 50)])
    {
        r.counts = Some(counts(alloc, free, 200));
    }
    let mut cand = base.clone();
    cand.traces[0].results[2].counts = Some(counts(60, 60, 200));
    for run in &mut cand.traces[0].results[1].runs {
        run.ops_per_sec /= 2.0;
    }
    for run in &mut cand.traces[0].results[2].runs {
        run.ops_per_sec *= 1.3;
    }
    (base, cand)
}

#[test]
fn golden_summary_markdown() {
    let (base, cand) = pair();
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    check(
        "summary.md",
        &crate::summary_md::summary_markdown(&cand, Some(&cmp)),
    );
}

#[test]
fn golden_junit() {
    let (base, cand) = pair();
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    let xml = crate::junit::junit_xml(&cmp, "poolbench gate");
    assert!(xml.contains("failures=\"3\""), "{xml}");
    check("junit.xml", &xml);
}

#[test]
fn golden_compare_text() {
    let (base, cand) = pair();
    let cmp = compare_results(&base, &cand, &CompareOptions::default());
    check(
        "compare.txt",
        &crate::compare::render_comparison(&cmp, crate::compare::TableFormat::Text),
    );
}
