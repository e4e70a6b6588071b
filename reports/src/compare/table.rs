//! The comparison as a table: aligned text for a terminal, or GitHub markdown.

use super::{Cell, Comparison, Metric};
use crate::stats::Verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Text,
    Markdown,
}

/// A value of `metric` for a person: ops/s, ns, bytes or a count; `ratio` marks values that are
/// ratios to the reference backend.
pub(crate) fn value_text(metric: Metric, value: Option<f64>, ratio: bool) -> String {
    let Some(v) = value else {
        return "-".to_string();
    };
    if ratio
        && matches!(
            metric,
            Metric::Throughput | Metric::AllocP50 | Metric::AllocP99
        )
    {
        return format!("{v:.3}x");
    }
    match metric {
        Metric::InstructionsPerAlloc
        | Metric::InstructionsPerFree
        | Metric::InstructionsPerRealloc => format!("{v:.1} instr/op"),
        Metric::EstimatedCyclesPerOp => format!("{v:.1} est. cycles/op"),
        Metric::Throughput | Metric::ReferenceStability => crate::format::ops_per_sec(v),
        Metric::AllocP50 | Metric::AllocP99 => format!("{v:.0} ns"),
        Metric::PeakReservedBytes => crate::format::bytes(v as u64),
        Metric::AllocFailures => format!("{v:.0}"),
        Metric::Status => "-".to_string(),
    }
}

/// `-50.0% [-51.2%, -48.7%]` (noisy) or `+12.0%` (deterministic), in the metric's direction.
pub(crate) fn change_text(cell: &Cell) -> String {
    let Some((estimate, lo, hi)) = cell.relative_change() else {
        return cell.note.clone().unwrap_or_else(|| "-".to_string());
    };
    let pct = |x: f64| format!("{:+.1}%", 100.0 * x);
    match cell.change {
        Some(s) if s.confidence < 1.0 && s.is_bounded() => {
            format!("{} [{}, {}]", pct(estimate), pct(lo), pct(hi))
        }
        Some(s) if s.confidence < 1.0 => format!("{} [unbounded]", pct(estimate)),
        _ if cell.metric == Metric::AllocFailures => {
            let (b, c) = (
                cell.base_value.unwrap_or(0.0),
                cell.cand_value.unwrap_or(0.0),
            );
            format!("{:+.0}", c - b)
        }
        _ => pct(estimate),
    }
}

fn verdict_text(verdict: Verdict, format: TableFormat) -> String {
    match (verdict, format) {
        (Verdict::Regression, TableFormat::Markdown) => "**regression**".to_string(),
        (v, _) => v.as_str().to_string(),
    }
}

/// Whether `cell`'s values are ratios to the comparison's reference backend.
pub(crate) fn is_ratio(cmp: &Comparison, cell: &Cell) -> bool {
    cmp.reference_backend
        .as_deref()
        .is_some_and(|r| r != cell.backend)
}

/// `±1%` or `exact`.
pub(crate) fn margin_text(cell: &Cell) -> String {
    if cell.margin > 0.0 {
        let pct = 100.0 * cell.margin;
        if pct < 10.0 && pct.fract() != 0.0 {
            format!("±{pct:.1}%")
        } else {
            format!("±{pct:.0}%")
        }
    } else {
        "exact".to_string()
    }
}

/// The line above a verdict table: what the values are and how the tiers were judged.
pub(crate) fn intro_text(cmp: &Comparison) -> String {
    let reference = match &cmp.reference_backend {
        Some(r) => format!("wall-clock values are ratios to `{r}` in the same run; "),
        None => String::new(),
    };
    format!(
        "{reference}{} counts cells (exact margin); {} wall-clock cells, exact rank-sum \
         intervals at {:.2}% each (Bonferroni)",
        cmp.count_cells,
        cmp.noisy_cells,
        100.0 * cmp.confidence
    )
}

/// Renders the comparison: a header line, the table, notes, and a one-line tally.
pub fn render_comparison(cmp: &Comparison, format: TableFormat) -> String {
    let headers = [
        "trace",
        "backend",
        "tier",
        "metric",
        "base",
        "candidate",
        "change [CI]",
        "margin",
        "verdict",
        "note",
    ];
    let rows: Vec<[String; 10]> = cmp
        .cells
        .iter()
        .map(|c| {
            let ratio = is_ratio(cmp, c);
            [
                c.trace.clone(),
                c.backend.clone(),
                c.metric.tier().name().to_string(),
                c.metric.name().to_string(),
                value_text(c.metric, c.base_value, ratio),
                value_text(c.metric, c.cand_value, ratio),
                change_text(c),
                margin_text(c),
                verdict_text(c.verdict, format),
                c.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut out = String::new();
    let intro = intro_text(cmp);
    match format {
        TableFormat::Markdown => {
            out.push_str(&format!("_{intro}_\n\n"));
            out.push_str(&markdown_table(&headers, &rows));
        }
        TableFormat::Text => {
            out.push_str(&format!("{intro}\n\n"));
            out.push_str(&text_table(&headers, &rows));
        }
    }
    if !cmp.notes.is_empty() {
        out.push('\n');
        for note in &cmp.notes {
            out.push_str(&format!("- {note}\n"));
        }
    }
    out.push_str(&format!(
        "\n{} regression, {} improvement, {} pass, {} inconclusive\n",
        cmp.count(Verdict::Regression),
        cmp.count(Verdict::Improvement),
        cmp.count(Verdict::Pass),
        cmp.count(Verdict::Inconclusive)
    ));
    out
}

/// A GitHub markdown table ([`crate::Table::markdown`]).
pub(crate) fn markdown_table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> String {
    table_of(headers, rows).markdown()
}

/// A left-aligned text table with a rule under the headers ([`crate::Table::text`]).
pub(crate) fn text_table<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> String {
    table_of(headers, rows).with_rule().text()
}

fn table_of<const N: usize>(headers: &[&str; N], rows: &[[String; N]]) -> crate::Table {
    let mut table = crate::Table::new(headers);
    for row in rows {
        table.row(row.to_vec());
    }
    table
}
