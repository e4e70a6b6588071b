//! `replay gen <KIND> -o <OUT> [--seed N] [--events N] [--threads N]`: write a synthetic
//! workload as canonical CSV (deterministic for a seed).

use std::path::PathBuf;

use anyhow::Context;
use atomic_file::write_atomically;
use workloads::gen::{generate, GenKind, GenParams};
use workloads::CsvWriter;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// fixed-churn, larson, producer-consumer, size-mix or gpu-training.
    pub kind: GenKind,
    /// Output canonical CSV file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// About this many events (blocks still live at the end are freed, within the budget).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Trace threads.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub threads: u32,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let params = GenParams {
        seed: args.seed,
        events: args.events,
        threads: args.threads,
    };
    let written = write_atomically(&args.output, |out| -> std::io::Result<_> {
        let mut w = CsvWriter::new(out)?;
        let mut result = Ok(());
        generate(args.kind, &params, &mut |e| {
            if result.is_ok() {
                result = w.write(&e);
            }
        });
        result?;
        Ok(w.finish()?.1)
    })
    .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{} (seed {}, {} threads) -> {}: {written} events",
        args.kind,
        args.seed,
        args.threads,
        args.output.display()
    );
    Ok(0)
}
