//! `summary.md`: a compact markdown report for a CI job summary (GitHub caps a step summary at
//! 1 MiB and renders large ones slowly; we stay under [`SUMMARY_LIMIT_BYTES`]).

use crate::compare::table::markdown_table;
use crate::compare::{render_comparison, Comparison, TableFormat};
use crate::format;
use crate::{BackendResult, ResultsFile, Status};

/// Largest `summary.md` written; longer summaries are cut at a line and say so.
pub const SUMMARY_LIMIT_BYTES: usize = 64 * 1024;

fn status_text(r: &BackendResult) -> String {
    match r.status {
        Status::Ok => "ok".to_string(),
        Status::Skipped => format!("skipped: {}", r.reason.as_deref().unwrap_or("-")),
        Status::Failed => format!("**failed**: {}", r.reason.as_deref().unwrap_or("-")),
    }
}

/// The counts tier beside the timings: instructions per op kind and estimated cycles per op,
/// for the backends that have counts (empty when none has).
fn counts_table(results: &[BackendResult]) -> String {
    let rows: Vec<[String; 5]> = results
        .iter()
        .filter_map(|r| {
            let counts = r.counts?;
            let per = |cost: crate::OpCost| {
                let cost = cost.with_per_op();
                if cost.calls == 0 {
                    "-".to_string()
                } else {
                    format!("{:.1}", cost.instructions_per_op)
                }
            };
            Some([
                r.backend.clone(),
                per(counts.alloc),
                per(counts.free),
                per(counts.realloc),
                format!("{:.1}", counts.all().estimated_cycles_per_op),
            ])
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let headers = [
        "backend (counts tier)",
        "instr/alloc",
        "instr/free",
        "instr/realloc",
        "est. cycles/op",
    ];
    format!("{}\n", markdown_table(&headers, &rows))
}

/// The results as markdown: one section per trace with its sanitation counts and a table of
/// backends; then, when given, the gate's or comparison's verdicts.
pub fn summary_markdown(results: &ResultsFile, verdicts: Option<&Comparison>) -> String {
    let mut out = String::from("# poolbench replay\n\n");
    out.push_str(&format!(
        "`{}` · {} ({} cores) · {} · rustc {}",
        results.tool_version,
        results.machine.cpu,
        results.machine.cores,
        results.machine.os,
        results.machine.rustc
    ));
    if let Some(clock) = &results.clock {
        out.push_str(&format!(
            " · clock `{}`, floor {:.1} ns subtracted",
            clock.source, clock.overhead_ns
        ));
    }
    out.push_str("\n\n");
    if let Some(cmp) = verdicts {
        out.push_str("## Verdicts\n\n");
        let regressions = cmp.regression_lines();
        if regressions.is_empty() {
            out.push_str("No regression.\n\n");
        } else {
            for line in regressions {
                out.push_str(&format!("- **{line}**\n"));
            }
            out.push('\n');
        }
        out.push_str(&render_comparison(cmp, TableFormat::Markdown));
        out.push('\n');
    }
    for trace in &results.traces {
        let s = &trace.sanitation;
        out.push_str(&format!(
            "## {}\n\n{} events, {} threads, peak live {} · sanitation: {} repaired \
             ({} unknown frees, {} double frees, {} live reallocations), {} leaks\n\n",
            trace.path,
            trace.events,
            trace.threads,
            format::bytes(trace.peak_live_bytes),
            s.repaired,
            s.unknown_frees,
            s.double_frees,
            s.live_reallocations,
            s.leaks
        ));
        let headers = [
            "backend",
            "status",
            "throughput",
            "alloc p50",
            "alloc p99",
            "free p50",
            "free p99",
            "peak reserved",
            "alloc failures",
        ];
        let rows: Vec<[String; 9]> = trace
            .results
            .iter()
            .map(|r| {
                let ok = r.status == Status::Ok;
                let ns = |v: u64| if ok { format!("{v} ns") } else { "-".into() };
                [
                    r.backend.clone(),
                    status_text(r),
                    if ok {
                        format::ops_per_sec(r.ops_per_sec)
                    } else {
                        "-".into()
                    },
                    ns(r.latency_ns.alloc.p50),
                    ns(r.latency_ns.alloc.p99),
                    ns(r.latency_ns.free.p50),
                    ns(r.latency_ns.free.p99),
                    if ok {
                        format::bytes(r.peak_reserved_bytes)
                    } else {
                        "-".into()
                    },
                    if ok {
                        r.alloc_failures.to_string()
                    } else {
                        "-".into()
                    },
                ]
            })
            .collect();
        out.push_str(&markdown_table(&headers, &rows));
        out.push('\n');
        out.push_str(&counts_table(&trace.results));
    }
    truncate_markdown(out, SUMMARY_LIMIT_BYTES)
}

/// Cuts `text` at the last line break that leaves room for a note saying so.
pub fn truncate_markdown(text: String, limit_bytes: usize) -> String {
    if text.len() <= limit_bytes {
        return text;
    }
    let note = format!(
        "\n_Summary truncated: {} bytes exceed the {limit_bytes}-byte limit; \
         see report.html and results.json for everything._\n",
        text.len()
    );
    let mut cut = limit_bytes.saturating_sub(note.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let cut = text[..cut].rfind('\n').map_or(0, |i| i + 1);
    let mut out = text[..cut].to_string();
    out.push_str(&note);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_lines_and_says_so() {
        let text: String = (0..10_000).map(|i| format!("| row {i} |\n")).collect();
        let out = truncate_markdown(text, 4096);
        assert!(out.len() <= 4096);
        assert!(out.contains("Summary truncated"));
        let body = &out[..out.find("\n_Summary").unwrap()];
        assert!(body
            .lines()
            .all(|l| l.starts_with("| row ") && l.ends_with(" |")));
    }

    #[test]
    fn short_text_is_untouched() {
        assert_eq!(truncate_markdown("a\n".into(), 10), "a\n");
    }
}
