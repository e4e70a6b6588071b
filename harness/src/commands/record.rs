//! `replay record -o <OUT> -- <CMD> [ARGS…]`: run a program under the LD_PRELOAD recorder
//! and write its allocation trace (canonical CSV; `.gz` / `.zst` compress it).
//!
//! Exits with the program's exit code (128 + signal if a signal ended it), or 2 when the
//! arguments are wrong or nothing could be recorded.

use std::ffi::OsString;
use std::path::PathBuf;

use workloads::record::{record_command, RecordSummary};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Trace to write: canonical CSV in time order; a `.gz` or `.zst` name compresses it.
    #[arg(short = 'o', long = "out", value_name = "OUT")]
    pub out: PathBuf,
    /// The program to record and its arguments (after `--`). It must be dynamically linked.
    #[arg(
        value_name = "CMD",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let summary = record_command(&args.out, &args.command)?;
    eprintln!("{}", summary_text(&summary));
    Ok(summary.exit_code())
}

fn summary_text(s: &RecordSummary) -> String {
    let mut text = format!(
        "recorded {}: {} events ({} alloc, {} free, {} realloc), {} threads, {} bytes; \
         program exit code {}",
        s.out.display(),
        s.events,
        s.allocs,
        s.frees,
        s.reallocs,
        s.threads,
        s.file_bytes,
        s.exit_code(),
    );
    if s.partial_rows > 0 {
        text.push_str(&format!(
            "; {} row cut short by the program's end was dropped",
            s.partial_rows
        ));
    }
    text
}
