//! `report.html`: one self-contained file — inline CSS and inline SVG charts, no scripts, no
//! external resources — so that it opens from a CI artifact download or an e-mail attachment.

use std::fmt::Write;

use crate::compare::table::{change_text, intro_text, is_ratio, margin_text, value_text};
use crate::compare::Comparison;
use crate::format;
use crate::{ResultsFile, Status};

const STYLE: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;\
margin:2em auto;max-width:1100px;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;font-size:14px}\
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}\
.regression{background:#fdd;font-weight:bold}.improvement{background:#dfd}\
.inconclusive{background:#ffd}.failed{color:#b00}.skipped{color:#777}\
figure{margin:1em 0}figure svg{max-width:100%;height:auto}\
.meta{color:#555}";

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A chart to embed: the trace it belongs to, a caption, and its SVG document.
pub struct InlinePlot {
    pub trace_index: usize,
    pub title: String,
    pub svg: String,
}

/// Strips an XML declaration (meaningless inside HTML) from an SVG document.
fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(start) => &svg[start..],
        None => svg,
    }
}

/// The whole report.
pub fn report_html(
    results: &ResultsFile,
    verdicts: Option<&Comparison>,
    plots: &[InlinePlot],
) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>poolbench report</title><style>{STYLE}</style></head><body>\n\
         <h1>poolbench replay report</h1>\n<p class=\"meta\">{} · {} ({} cores) · {} · rustc {}</p>\n",
        escape(&results.tool_version),
        escape(&results.machine.cpu),
        results.machine.cores,
        escape(&results.machine.os),
        escape(&results.machine.rustc)
    );
    match &results.clock {
        Some(c) => {
            let _ = writeln!(
                h,
                "<p>Clock: <code>{}</code>, {:.3} ticks/ns; clock floor {:.1} ns per read, \
                 subtracted from every latency sample.</p>",
                escape(&c.source),
                c.ticks_per_ns,
                c.overhead_ns
            );
        }
        None => h.push_str("<p>Clock: not recorded.</p>\n"),
    }
    if !results.options.is_null() {
        let _ = writeln!(
            h,
            "<p class=\"meta\">Options: <code>{}</code></p>",
            escape(&results.options.to_string())
        );
    }
    if let Some(cmp) = verdicts {
        verdict_section(&mut h, cmp);
    }
    for (index, trace) in results.traces.iter().enumerate() {
        let s = &trace.sanitation;
        let _ = write!(
            h,
            "<h2>{}</h2>\n<p>{} events · {} threads · peak live {}</p>\n\
             <table><tr><th>sanitation</th><th>repaired</th><th>unknown frees</th>\
             <th>double frees</th><th>live reallocations</th><th>leaks</th></tr>\
             <tr><td>counts</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>\n",
            escape(&trace.path),
            trace.events,
            trace.threads,
            format::bytes(trace.peak_live_bytes),
            s.repaired,
            s.unknown_frees,
            s.double_frees,
            s.live_reallocations,
            s.leaks
        );
        h.push_str(
            "<table><tr><th>backend</th><th>status</th><th>throughput</th><th>alloc p50</th>\
             <th>alloc p99</th><th>alloc p99.9</th><th>free p50</th><th>free p99</th>\
             <th>realloc p50</th><th>peak reserved</th><th>fragmentation</th>\
             <th>alloc failures</th></tr>\n",
        );
        for r in &trace.results {
            if r.status != Status::Ok {
                let class = if r.status == Status::Failed {
                    "failed"
                } else {
                    "skipped"
                };
                let _ = writeln!(
                    h,
                    "<tr class=\"{class}\"><td>{}</td><td colspan=\"11\">{class}: {}</td></tr>",
                    escape(&r.backend),
                    escape(r.reason.as_deref().unwrap_or("-"))
                );
                continue;
            }
            let l = &r.latency_ns;
            let _ =
                writeln!(
                h,
                "<tr><td>{}</td><td>ok</td><td>{}</td><td>{} ns</td><td>{} ns</td><td>{} ns</td>\
                 <td>{} ns</td><td>{} ns</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&r.backend),
                format::ops_per_sec(r.ops_per_sec),
                l.alloc.p50,
                l.alloc.p99,
                l.alloc.p999,
                l.free.p50,
                l.free.p99,
                if l.realloc.count > 0 { format!("{} ns", l.realloc.p50) } else { "-".into() },
                format::bytes(r.peak_reserved_bytes),
                r.fragmentation
                    .map(|f| format!("{:.1}%", 100.0 * f))
                    .unwrap_or_else(|| "-".into()),
                r.alloc_failures
            );
        }
        h.push_str("</table>\n");
        counts_table(&mut h, results, &trace.results);
        for plot in plots.iter().filter(|p| p.trace_index == index) {
            let _ = writeln!(
                h,
                "<figure>{}<figcaption>{}</figcaption></figure>",
                inline_svg(&plot.svg),
                escape(&plot.title)
            );
        }
    }
    h.push_str("</body></html>\n");
    h
}

/// The counts tier beside the timings, for the backends that have counts.
fn counts_table(h: &mut String, results: &ResultsFile, backends: &[crate::BackendResult]) {
    let counted: Vec<_> = backends
        .iter()
        .filter_map(|r| Some((r, r.counts?)))
        .collect();
    if counted.is_empty() {
        return;
    }
    let source = results
        .counts
        .as_ref()
        .map(|c| {
            format!(
                "{} ({}); estimated cycles = {}",
                c.source, c.tool_version, c.estimated_cycles_formula
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        h,
        "<p>Counts tier, per call of the backend (deterministic): {}</p>\n\
         <table><tr><th>backend</th><th>instr/alloc</th><th>instr/free</th>\
         <th>instr/realloc</th><th>L1 misses/op</th><th>LL misses/op</th>\
         <th>est. cycles/op</th></tr>",
        escape(&source)
    );
    for (r, counts) in counted {
        let per = |cost: crate::OpCost| {
            let cost = cost.with_per_op();
            if cost.calls == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", cost.instructions_per_op)
            }
        };
        let all = counts.all();
        let per_call = |v: u64| {
            if all.calls == 0 {
                0.0
            } else {
                v as f64 / all.calls as f64
            }
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.3}</td>\
             <td>{:.1}</td></tr>",
            escape(&r.backend),
            per(counts.alloc),
            per(counts.free),
            per(counts.realloc),
            per_call(all.l1_misses),
            per_call(all.ll_misses),
            all.estimated_cycles_per_op
        );
    }
    h.push_str("</table>\n");
}

fn verdict_section(h: &mut String, cmp: &Comparison) {
    h.push_str("<h2>Verdicts</h2>\n");
    let _ = writeln!(h, "<p>{}.</p>", escape(&intro_text(cmp)));
    h.push_str(
        "<table><tr><th>trace</th><th>backend</th><th>tier</th><th>metric</th><th>base</th>\
         <th>candidate</th><th>change [CI]</th><th>margin</th><th>verdict</th><th>note</th></tr>\n",
    );
    for c in &cmp.cells {
        let _ = writeln!(
            h,
            "<tr class=\"{v}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{v}</td><td>{}</td></tr>",
            escape(&c.trace),
            escape(&c.backend),
            c.metric.tier().name(),
            c.metric,
            escape(&value_text(c.metric, c.base_value, is_ratio(cmp, c))),
            escape(&value_text(c.metric, c.cand_value, is_ratio(cmp, c))),
            escape(&change_text(c)),
            margin_text(c),
            escape(c.note.as_deref().unwrap_or("")),
            v = c.verdict
        );
    }
    h.push_str("</table>\n");
    for note in &cmp.notes {
        let _ = writeln!(h, "<p class=\"meta\">{}</p>", escape(note));
    }
}
