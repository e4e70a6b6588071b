//! `junit.xml`: one test case per judged (trace, backend, metric), so that CI systems show the
//! gate's verdicts in their test UI. Regressions are failures, inconclusive cells are skipped,
//! passes and improvements pass.

use crate::compare::{table::change_text, Comparison, Metric};
use crate::stats::Verdict;

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even when escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// How a cell appears in JUnit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Passed,
    Regression,
    Skipped,
    /// The A/A check failed and no counts decided: a failure of type `unstable`.
    Unstable,
    /// The A/A check failed but counts decided: skipped.
    SkippedUnstable,
}

/// The JUnit XML document of `cmp`, under a suite named `suite`.
pub fn junit_xml(cmp: &Comparison, suite: &str) -> String {
    // A failed A/A check fails the suite only when it left no verdict at all: with counts
    // cells judged, the counts decide and the unstable wall-clock tier is merely skipped.
    let counts_decided = cmp.count_cells > 0;
    let outcome = |c: &crate::compare::Cell| -> Outcome {
        if c.metric == Metric::ReferenceStability && c.verdict != Verdict::Pass {
            if counts_decided {
                Outcome::SkippedUnstable
            } else {
                Outcome::Unstable
            }
        } else {
            match c.verdict {
                Verdict::Regression => Outcome::Regression,
                Verdict::Inconclusive => Outcome::Skipped,
                Verdict::Pass | Verdict::Improvement => Outcome::Passed,
            }
        }
    };
    let failures = cmp
        .cells
        .iter()
        .filter(|c| matches!(outcome(c), Outcome::Regression | Outcome::Unstable))
        .count();
    let skipped = cmp
        .cells
        .iter()
        .filter(|c| matches!(outcome(c), Outcome::Skipped | Outcome::SkippedUnstable))
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"{0}\" tests=\"{1}\" failures=\"{2}\" errors=\"0\" skipped=\"{3}\">\n",
        xml_escape(suite),
        cmp.cells.len(),
        failures,
        skipped
    ));
    out.push_str(&format!(
        "  <testsuite name=\"{0}\" tests=\"{1}\" failures=\"{2}\" errors=\"0\" skipped=\"{3}\">\n",
        xml_escape(suite),
        cmp.cells.len(),
        failures,
        skipped
    ));
    for cell in &cmp.cells {
        let message = format!(
            "[{} tier] {} {} {}: {}{}",
            cell.metric.tier().name(),
            cell.trace,
            cell.backend,
            cell.metric,
            change_text(cell),
            cell.note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        out.push_str(&format!(
            "    <testcase classname=\"{}.{}\" name=\"{}\" time=\"0\"",
            xml_escape(&cell.trace),
            xml_escape(&cell.backend),
            cell.metric
        ));
        match outcome(cell) {
            Outcome::SkippedUnstable => out.push_str(&format!(
                ">\n      <skipped message=\"wall-clock tier unstable (counts decide): {}\"/>\n    </testcase>\n",
                xml_escape(&message)
            )),
            Outcome::Unstable => out.push_str(&format!(
                ">\n      <failure type=\"unstable\" message=\"unstable environment: {0}\">{0}</failure>\n    </testcase>\n",
                xml_escape(&message)
            )),
            Outcome::Regression => out.push_str(&format!(
                ">\n      <failure type=\"regression\" message=\"{0}\">{0}</failure>\n    </testcase>\n",
                xml_escape(&message)
            )),
            Outcome::Skipped => out.push_str(&format!(
                ">\n      <skipped message=\"inconclusive: {}\"/>\n    </testcase>\n",
                xml_escape(&message)
            )),
            Outcome::Passed => out.push_str(&format!(
                ">\n      <system-out>{}: {}</system-out>\n    </testcase>\n",
                cell.verdict,
                xml_escape(&message)
            )),
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(
            xml_escape("a<b & \"c\"\u{1}"),
            "a&lt;b &amp; &quot;c&quot; "
        );
    }
}
