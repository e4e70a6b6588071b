//! `replay stats <TRACE> [--json]`: what a trace contains, before replaying it.

use std::path::PathBuf;

use super::limits::LimitArgs;
use reports::{Align, Table};
use workloads::{trace_stats_with, FreeAt, ReadOptions, SnapshotSummary, TraceStats};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Trace file (canonical CSV, RMM log, Android memory_replay or PyTorch memory snapshot
    /// pickle; .gz/.zst/.zip read as is).
    pub trace: PathBuf,
    /// Print exactly one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Fail on the first sanitation problem instead of repairing it.
    #[arg(long)]
    pub strict: bool,
    /// PyTorch snapshots: the record replayed as the free (completed: when the caching
    /// allocator may reuse the block; requested: when the program dropped it).
    #[arg(long, value_name = "completed|requested", default_value = "completed")]
    pub pytorch_free: FreeAt,
    #[command(flatten)]
    pub limits: LimitArgs,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let read = ReadOptions {
        limits: args.limits.limits(),
        pytorch_free_at: args.pytorch_free,
    };
    let (format, stats, snapshot) = trace_stats_with(&args.trace, args.strict, &read)?;
    if args.json {
        let mut v = serde_json::to_value(&stats)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("path".into(), args.trace.display().to_string().into());
            obj.insert("format".into(), format.as_str().into());
            if let Some(snapshot) = &snapshot {
                obj.insert("pytorch".into(), serde_json::to_value(snapshot)?);
            }
        }
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print!(
            "{}",
            table(&args.trace.display().to_string(), format.as_str(), &stats)
        );
        if let Some(snapshot) = &snapshot {
            print!("{}", snapshot_lines(snapshot));
        }
    }
    Ok(0)
}

/// What a PyTorch snapshot held besides its events (also printed by `replay`).
pub fn snapshot_lines(s: &SnapshotSummary) -> String {
    let mut o = String::from("\npytorch snapshot\n");
    let free = match (s.free_at, s.free_at_fallback) {
        (Some(f), false) => f.as_str().to_owned(),
        (Some(f), true) => format!("{} (the trace has no free_completed)", f.as_str()),
        (None, _) => "-".to_owned(),
    };
    let rows = [
        (
            "entries",
            format!(
                "{} on {} device(s): {} alloc, {} free_requested, {} free_completed, {} segment, {} oom",
                s.entries, s.devices, s.allocs, s.free_requested, s.free_completed,
                s.segment_events, s.ooms
            ),
        ),
        ("free replayed at", free),
        (
            "before recording",
            format!(
                "{} blocks, {} allocated at the start",
                s.pre_recording_blocks,
                bytes(s.pre_recording_bytes)
            ),
        ),
        (
            "pytorch reserved",
            format!(
                "peak {}, at start {}, at end {}",
                bytes(s.peak_reserved_bytes),
                bytes(s.initial_reserved_bytes),
                bytes(s.final_reserved_bytes)
            ),
        ),
        ("streams (lanes)", s.streams.to_string()),
        (
            "truncated",
            if s.truncated {
                "yes: the recorder's max_entries ring dropped the oldest entries".to_owned()
            } else {
                "no".to_owned()
            },
        ),
    ];
    for (k, v) in rows {
        o.push_str(&format!("  {k:<18} {v}\n"));
    }
    o
}

pub(crate) fn bytes(n: u64) -> String {
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
