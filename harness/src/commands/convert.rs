//! `replay convert <IN> -o <OUT>`: any supported trace -> canonical CSV, in global order.
//! Events are written as read (no sanitation), so nothing is silently changed; the output
//! appears atomically.

use std::path::PathBuf;

use anyhow::Context;
use atomic_file::write_atomically;
use workloads::{read_ordered_events, CsvWriter, TraceError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input trace (canonical CSV, RMM log or Android memory_replay; .gz/.zst/.zip read as is).
    pub input: PathBuf,
    /// Output canonical CSV file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let mut events = read_ordered_events(&args.input)?;
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
    println!(
        "{} ({}) -> {}: {written} events{}",
        args.input.display(),
        format.as_str(),
        args.output.display(),
        if failures > 0 {
            format!(", {failures} failed allocations skipped")
        } else {
            String::new()
        }
    );
    Ok(0)
}
