//! `replay stats <TRACE> [--json]`: what a trace contains, before replaying it.

use std::path::PathBuf;

use super::limits::LimitArgs;
use workloads::{trace_stats_with, TraceStats};

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
    #[command(flatten)]
    pub limits: LimitArgs,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let (format, stats) = trace_stats_with(&args.trace, args.strict, &args.limits.limits())?;
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
    for (k, v) in rows {
        let _ = writeln!(o, "{k:<20} {v}");
    }
    let _ = writeln!(o, "\nsize histogram (requested bytes)");
    let max = s.size_histogram.iter().map(|b| b.count).max().unwrap_or(1);
    for b in &s.size_histogram {
        let bar = "#".repeat(((b.count * 40).div_ceil(max)) as usize);
        let _ = writeln!(
            o,
            "  {:>12} .. {:<12} {:>12}  {bar}",
            b.min_bytes, b.max_bytes, b.count
        );
    }
    let _ = writeln!(
        o,
        "\nper thread\n  {:>20} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "thread", "events", "allocs", "frees", "reallocs", "cross frees"
    );
    for t in &s.per_thread {
        let _ = writeln!(
            o,
            "  {:>20} {:>12} {:>12} {:>12} {:>12} {:>12}",
            t.thread, t.events, t.allocs, t.frees, t.reallocs, t.cross_thread_frees
        );
    }
    if !s.streams.is_empty() {
        let _ = writeln!(o, "\nstreams");
        for st in &s.streams {
            let _ = writeln!(o, "  {:>#20x} {:>12} events", st.stream, st.events);
        }
    }
    o
}
