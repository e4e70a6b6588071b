//! `replay`: replay allocation traces against allocators, and the tools around it.

use clap::{Parser, Subcommand};
use harness::commands::{self, EXIT_USAGE};

#[derive(Debug, Parser)]
#[command(
    name = "replay",
    version,
    about = "Replay allocation traces against memory pools, malloc, mimalloc and CUDA allocators",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    replay: commands::replay::Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Trace statistics: events, threads, sizes, peak live bytes, cross-thread frees.
    Stats(commands::stats::Args),
    /// Convert any supported trace format to canonical CSV.
    Convert(commands::convert::Args),
    /// Generate a synthetic workload trace.
    Gen(commands::gen::Args),
    /// Record a real program's allocations (LD_PRELOAD).
    Record(commands::record::Args),
    /// Regression report between two results.json files.
    Compare(commands::compare::Args),
    /// Nightly performance gate against a baseline.
    Gate(commands::gate::Args),
    /// Search PoolConfig space for a trace and write the best as TOML.
    Recommend(commands::recommend::Args),
    /// Internal: the counting passes `--counts` runs under valgrind.
    #[command(hide = true)]
    CountsChild {
        request: std::path::PathBuf,
        manifest: std::path::PathBuf,
    },
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let result = match cli.command {
        Some(Command::Stats(a)) => commands::stats::run(a),
        Some(Command::Convert(a)) => commands::convert::run(a),
        Some(Command::Gen(a)) => commands::gen::run(a),
        Some(Command::Record(a)) => commands::record::run(a),
        Some(Command::Compare(a)) => commands::compare::run(a),
        Some(Command::Gate(a)) => commands::gate::run(a),
        Some(Command::Recommend(a)) => commands::recommend::run(a),
        Some(Command::CountsChild { request, manifest }) => {
            harness::counts::run_child(&request, &manifest).map(|()| 0)
        }
        None => commands::replay::run(cli.replay),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("replay: error: {e:#}");
            std::process::exit(EXIT_USAGE);
        }
    }
}
