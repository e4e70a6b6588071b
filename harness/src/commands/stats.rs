//! `replay stats <TRACE> [--json]`: what a trace contains, before replaying it.

use std::path::PathBuf;

use reports::{Align, Table};
use workloads::{trace_stats_of, TraceStats};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Trace file (canonical CSV, RMM log or Android memory_replay; .gz/.zst/.zip read as is).
    pub trace: PathBuf,
    /// Print exactly one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Fail on the first sanitation problem instead of repairing it.
    #[arg(long)]
    pub strict: bool,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let (format, stats) = trace_stats_of(&args.trace, args.strict)?;
    if args.json {
        let mut v = serde_json::to_value(&stats)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("path".into(), args.trace.display().to_string().into());
            obj.insert("format".into(), format.as_str().into());
        }
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print!(
            "{}",
            table(&args.trace.display().to_string(), format.as_str(), &stats)
        );
    }
    Ok(0)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {} ({n})", UNITS[unit])
    }
}

fn table(path: &str, format: &str, s: &TraceStats) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let san = &s.sanitation;
    let rows: Vec<(&str, String)> = vec![
        ("trace", path.to_string()),
        ("format", format.to_string()),
        ("events", s.events.to_string()),
        ("allocs", s.allocs.to_string()),
        ("frees", s.frees.to_string()),
        ("reallocs", s.reallocs.to_string()),
        ("threads", s.threads.to_string()),
        ("peak live bytes", bytes(s.peak_live_bytes)),
        ("peak live blocks", s.peak_live_blocks.to_string()),
        ("requested bytes", bytes(s.requested_bytes)),
        ("sizes", format!("{} .. {}", bytes(s.min_size_bytes), bytes(s.max_size_bytes))),
        ("cross-thread frees", s.cross_thread_frees.to_string()),
        ("leaks", format!("{} blocks, {}", s.leaks, bytes(s.leaked_bytes))),
        ("alloc failures", s.alloc_failures.to_string()),
        (
            "duration",
            s.duration_ns
                .map_or("-".into(), |d| format!("{:.6} s", d as f64 / 1e9)),
        ),
        (
            "sanitation",
            format!(
                "{} repaired: {} unknown frees, {} double frees, {} allocs of live pointers, {} reallocs of unknown pointers",
                san.repaired, san.unknown_frees, san.double_frees, san.live_reallocations, san.unknown_reallocs
            ),
        ),
    ];
    let mut summary = Table::new(&[]);
    for (k, v) in rows {
        summary.row(vec![k.to_owned(), v]);
    }
    o.push_str(&summary.text());

    let _ = writeln!(o, "\nsize histogram (requested bytes)");
    let max = s.size_histogram.iter().map(|b| b.count).max().unwrap_or(1);
    // min .. max, count, bar
    let mut histogram = Table::new(&[])
        .indent(2)
        .align(0, Align::Right)
        .align(3, Align::Right);
    for b in &s.size_histogram {
        histogram.row(vec![
            b.min_bytes.to_string(),
            "..".to_owned(),
            b.max_bytes.to_string(),
            b.count.to_string(),
            "#".repeat(((b.count * 40).div_ceil(max)) as usize),
        ]);
    }
    o.push_str(&histogram.text());

    let _ = writeln!(o, "\nper thread");
    let mut threads = Table::new(&[
        "thread",
        "events",
        "allocs",
        "frees",
        "reallocs",
        "cross frees",
    ])
    .indent(2)
    .align_from(0, Align::Right);
    for t in &s.per_thread {
        threads.row(
            [
                t.thread,
                t.events,
                t.allocs,
                t.frees,
                t.reallocs,
                t.cross_thread_frees,
            ]
            .iter()
            .map(u64::to_string)
            .collect(),
        );
    }
    o.push_str(&threads.text());
    if !s.streams.is_empty() {
        let _ = writeln!(o, "\nstreams");
        let mut streams = Table::new(&[])
            .indent(2)
            .align_from(0, Align::Right)
            .align(2, Align::Left);
        for st in &s.streams {
            streams.row(vec![
                format!("{:#x}", st.stream),
                st.events.to_string(),
                "events".to_owned(),
            ]);
        }
        o.push_str(&streams.text());
    }
    o
}
