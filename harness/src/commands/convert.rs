//! `replay convert <IN> -o <OUT>`: any supported trace -> canonical CSV, in global order.
//! Events are written as read (no sanitation), so nothing is silently changed; the output
//! appears atomically.

use std::path::PathBuf;

use super::limits::LimitArgs;
use anyhow::Context;
use atomic_file::write_atomically;
use workloads::{read_ordered_events_with, CsvWriter, FreeAt, ReadOptions, TraceError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input trace (canonical CSV, RMM log, Android memory_replay or PyTorch memory snapshot
    /// pickle; .gz/.zst/.zip read as is).
    pub input: PathBuf,
    /// Output canonical CSV file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// PyTorch snapshots: the record written as the free (completed or requested).
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
    let mut events = read_ordered_events_with(&args.input, &read)?;
    let format = events.format();
    let mut trace_error: Option<TraceError> = None;
    let written = write_atomically(&args.output, |out| {
        let mut w = CsvWriter::new(out)?;
        for e in events.by_ref() {
            match e {
                Ok(e) => w.write(&e)?,
                Err(err) => {
                    trace_error = Some(err);
                    return Err(std::io::Error::other("input trace is invalid"));
                }
            }
        }
        Ok(w.finish()?.1)
    });
    if let Some(err) = trace_error {
        return Err(err.into());
    }
    let written = written.with_context(|| format!("writing {}", args.output.display()))?;
    let failures = events.alloc_failures();
    let snapshot = events.snapshot().map(|s| {
        format!(
            "; pytorch: free at {}{}, {} blocks from before recording allocated first, \
             segment events not written (PyTorch's peak reserved {} B){}",
            s.free_at.unwrap_or_default().as_str(),
            if s.free_at_fallback {
                " (no free_completed in the trace)"
            } else {
                ""
            },
            s.pre_recording_blocks,
            s.peak_reserved_bytes,
            if s.truncated {
                "; truncated at its start (max_entries)"
            } else {
                ""
            }
        )
    });
    println!(
        "{} ({}) -> {}: {written} events{}{}",
        args.input.display(),
        format.as_str(),
        args.output.display(),
        if failures > 0 {
            format!(", {failures} failed allocations skipped")
        } else {
            String::new()
        },
        snapshot.unwrap_or_default()
    );
    Ok(0)
}
