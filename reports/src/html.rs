//! `report.html`: one self-contained file — inline CSS and inline SVG charts, no scripts, no
//! external resources — so that it opens from a CI artifact download or an e-mail attachment.

use std::fmt::Write;

use crate::compare::table::{change_text, value_text};
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

fn verdict_section(h: &mut String, cmp: &Comparison) {
    h.push_str("<h2>Verdicts</h2>\n");
    if let Some(reference) = &cmp.reference_backend {
        let _ = writeln!(
            h,
            "<p>Values are ratios to <code>{}</code> measured in the same run.</p>",
            escape(reference)
        );
    }
    let _ = writeln!(
        h,
        "<p>{} noisy cells judged at {:.2}% confidence each (Bonferroni), {} bootstrap resamples.</p>",
        cmp.noisy_cells,
        100.0 * cmp.confidence,
        cmp.resamples
    );
    h.push_str(
        "<table><tr><th>trace</th><th>backend</th><th>metric</th><th>base</th><th>candidate</th>\
         <th>change [CI]</th><th>margin</th><th>verdict</th><th>note</th></tr>\n",
    );
    let ratio = cmp.reference_backend.is_some();
    for c in &cmp.cells {
        let _ =
            writeln!(
            h,
            "<tr class=\"{v}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{v}</td><td>{}</td></tr>",
            escape(&c.trace),
            escape(&c.backend),
            c.metric,
            escape(&value_text(c.metric, c.base_value, ratio)),
            escape(&value_text(c.metric, c.cand_value, ratio)),
            escape(&change_text(c)),
            if c.margin > 0.0 { format!("±{:.0}%", 100.0 * c.margin) } else { "exact".into() },
            escape(c.note.as_deref().unwrap_or("")),
            v = c.verdict
        );
    }
    h.push_str("</table>\n");
    for note in &cmp.notes {
        let _ = writeln!(h, "<p class=\"meta\">{}</p>", escape(note));
    }
}
