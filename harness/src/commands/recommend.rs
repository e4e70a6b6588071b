//! `replay recommend <TRACE> -o pool.toml`: which `PoolConfig` serves this workload best?
//!
//! The command line: load the trace, pick the candidate space (CPU pool, or the GPU pool on
//! a real or simulated device) and the evaluator's backend, run the search (see
//! [`crate::recommend`]) with a progress bar, print the ranking and write the winner.

use crate::backends::gpu::{CudaAsyncFactory, GpuPoolFactory, SimGpuPoolFactory};
use crate::backends::mimalloc::MimallocFactory;
use crate::backends::pool::PoolAsConfiguredFactory;
use crate::backends::system::SystemFactory;
use crate::backends::RegisteredBackend;
use crate::progress::Progress;
use crate::recommend::{
    candidates, gpu_candidates, render, search, Objective, Reference, ReplayEvaluator, TraceShape,
};
use crate::runner::sanitation_of;
use anyhow::{bail, Context};
use pools::config::human_bytes;
use std::path::PathBuf;
use std::time::{Duration, Instant};

impl clap::ValueEnum for Objective {
    fn value_variants<'a>() -> &'a [Self] {
        &Objective::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            Objective::Throughput => "Highest ops/s",
            Objective::P99 => "Lowest alloc p99 latency",
            Objective::Memory => "Lowest peak reserved bytes",
            Objective::Balanced => "ops/s, p99 and reserved bytes weighed together",
        };
        Some(clap::builder::PossibleValue::new(self.as_str()).help(help))
    }
}

/// Which pool's configurations are searched, and on what memory.
#[derive(Debug, Clone, Copy, PartialEq)]
enum SearchSpace {
    /// `CpuPool` configurations (the `pool` backend).
    Cpu,
    /// `GpuPool` configurations on CUDA device 0 (`gpu-pool`).
    Gpu,
    /// `GpuPool` configurations on a simulated device of this many bytes (`sim-gpu-pool`).
    SimulatedGpu { device_bytes: u64 },
}

impl SearchSpace {
    /// The backend a candidate is replayed with.
    fn backend(self) -> &'static dyn RegisteredBackend {
        match self {
            SearchSpace::Cpu => &PoolAsConfiguredFactory,
            SearchSpace::Gpu => &GpuPoolFactory,
            SearchSpace::SimulatedGpu { .. } => &SimGpuPoolFactory,
        }
    }

    fn simulate_gpu_bytes(self) -> Option<u64> {
        match self {
            SearchSpace::SimulatedGpu { device_bytes } => Some(device_bytes),
            _ => None,
        }
    }

    /// What users would pick instead, replayed beside the candidates for scale.
    fn references(self) -> Vec<&'static dyn RegisteredBackend> {
        match self {
            SearchSpace::Cpu => vec![&SystemFactory, &MimallocFactory],
            SearchSpace::Gpu | SearchSpace::SimulatedGpu { .. } => vec![&CudaAsyncFactory],
        }
    }

    fn candidates(self, shape: &TraceShape) -> Vec<pools::PoolConfig> {
        match self {
            SearchSpace::Cpu => candidates(shape),
            _ => gpu_candidates(shape),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The trace to choose a configuration for.
    #[arg(value_name = "TRACE")]
    pub trace: PathBuf,
    /// Where to write the winning configuration (TOML).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// What "best" means.
    #[arg(long, value_enum, default_value_t = Objective::Balanced)]
    pub objective: Objective,
    /// Wall-clock budget for the search, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 120.0)]
    pub budget: f64,
    /// Runs per finalist on the whole trace.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Worker threads [default: min(trace threads, cores)].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,
    /// Search the GPU pool's space on a simulated device of this size (e.g. 2GiB, 80GiB).
    /// Traces with stream ids are searched in the GPU space anyway: on the real device
    /// when CUDA is present, else on a simulated device of 2x the trace's peak live bytes.
    #[arg(long, value_name = "CAPACITY", value_parser = pools::config::parse_bytes)]
    pub simulate_gpu: Option<u64>,
    /// Trace problems are errors instead of repairs.
    #[arg(long)]
    pub strict: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    if !(args.budget.is_finite() && args.budget > 0.0) {
        bail!(
            "--budget must be a positive number of seconds, got {}",
            args.budget
        );
    }
    if args.output.is_dir() {
        bail!(
            "-o {}: is a directory; give a file name such as pool.toml",
            args.output.display()
        );
    }
    let started = Instant::now();
    let load = workloads::LoadOptions {
        strict: args.strict,
        keep_times: false,
    };
    let loaded = workloads::load_trace(&args.trace, &load)
        .with_context(|| format!("cannot load trace {}", args.trace.display()))?;
    let shape = TraceShape::of(&loaded.compiled);
    let device_trace = !loaded.compiled.streams.is_empty();
    let space = match args.simulate_gpu {
        Some(device_bytes) => SearchSpace::SimulatedGpu { device_bytes },
        None if !device_trace => SearchSpace::Cpu,
        None if pools::gpu::cuda_available().is_ok() => SearchSpace::Gpu,
        None => {
            let device_bytes = (2 * loaded.compiled.peak_live_bytes).max(1 << 30);
            eprintln!(
                "replay recommend: the trace has stream ids and CUDA is not available: \
                 searching the GPU pool's space on a simulated device of {} \
                 (set the size with --simulate-gpu)",
                human_bytes(device_bytes)
            );
            SearchSpace::SimulatedGpu { device_bytes }
        }
    };
    let configs = space.candidates(&shape);
    let simulate_gpu_bytes = space.simulate_gpu_bytes();
    let mut eval = ReplayEvaluator {
        path: args.trace.display().to_string(),
        sanitation: sanitation_of(&loaded.sanitation),
        threads: args.threads.map(|t| t as usize),
        backend: space.backend(),
        simulate_gpu_bytes,
    };
    let mut progress = Progress::new(configs.len() as u64, args.quiet);
    // The loading time counts against the budget too.
    let budget = Duration::from_secs_f64(args.budget).saturating_sub(started.elapsed());
    let result = search(
        &loaded.compiled,
        configs,
        args.objective,
        args.runs,
        budget,
        &mut eval,
        &mut |_done, total, what| {
            progress.set_total(total as u64);
            progress.next(what);
        },
    );
    progress.finish();
    let search = result?;
    // The references replay what the ranked candidates replayed: the same prefix, as many
    // runs, in this same process.
    let ranked_runs = search.candidates[search.ranking[0]]
        .measured
        .map_or(args.runs, |m| m.runs);
    let ranked_trace = loaded.compiled.prefix(search.final_events);
    let references: Vec<Reference> = space
        .references()
        .into_iter()
        .map(|backend| eval.reference(backend, &ranked_trace, ranked_runs))
        .collect();
    print!(
        "{}",
        render(
            &search,
            args.objective,
            loaded.compiled.event_count,
            &references
        )
    );
    let winner = &search.candidates[search.ranking[0]].config;
    winner
        .save(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    if space == SearchSpace::Cpu {
        println!(
            "\nwrote {}; replay it beside system and mimalloc with:\n  replay --config {} {}",
            args.output.display(),
            args.output.display(),
            args.trace.display()
        );
    } else {
        println!(
            "\nwrote {}; replay it with:\n  replay --config {} {}{}",
            args.output.display(),
            args.output.display(),
            simulate_gpu_bytes.map_or(String::new(), |b| format!("--simulate-gpu {b} ")),
            args.trace.display()
        );
    }
    Ok(0)
}
