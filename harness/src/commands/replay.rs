//! `replay [OPTIONS] <TRACE>...`: replay traces against backends and print a comparison.
//!
//! Human output goes to stdout; with `--json`, stdout carries results.json and nothing
//! else, and the human output goes to stderr (unless `--quiet`).

use super::EXIT_USAGE;
use crate::backends::gpu::{SimGpuPoolFactory, SimUpstreamFactory};
use crate::backends::pool::PoolAsConfiguredFactory;
use crate::backends::BackendSelection;
use crate::engine::{Pace, Touch};
use crate::runner::{replay_traces, ReplayOptions};
use anyhow::Context;
use pools::PoolConfig;
use reports::{format, Align, BackendResult, ResultsFile, Status, Table, TraceResult};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Trace files (canonical CSV, RMM log, Android memory_replay, PyTorch memory snapshot
    /// pickle; .gz/.zst/.zip read as is).
    #[arg(value_name = "TRACE")]
    pub traces: Vec<PathBuf>,
    /// Backends to replay against, comma separated [default: every CPU backend available:
    /// pool-fixed, pool-variable, pool-lockfree, system, mimalloc].
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub backends: Vec<String>,
    /// Pool configuration: a TOML file or a preset name (default_cpu, high_performance_cpu,
    /// debug_cpu, low_memory_cpu) [default: default_cpu].
    #[arg(long, value_name = "FILE|PRESET")]
    pub config: Option<String>,
    /// Write results.json, .hgrm histograms and reports into this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print results.json on stdout (and nothing else there).
    #[arg(long)]
    pub json: bool,
    /// Trace problems (double free, unknown pointer, ...) are errors instead of repairs.
    #[arg(long)]
    pub strict: bool,
    /// Worker threads [default: min(trace threads, cores)].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,
    /// Measured runs per backend (after one warm-up run).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Replay speed of the latency pass: max, or the recorded time_ns gaps at 1x, 2x,
    /// 0.5x, ... (ops/s always comes from an unpaced pass with no clock read per op).
    #[arg(long, value_name = "max|1x|<k>x", default_value = "max")]
    pub pace: Pace,
    /// Bytes the engine writes into each block it gets (host backends).
    #[arg(long, value_enum, default_value_t = Touch::First)]
    pub touch: Touch,
    /// Memory limit for pool backends (max_size) and the simulated device: 4096, 64KiB, 2GiB.
    #[arg(long, value_name = "BYTES", value_parser = pools::config::parse_bytes)]
    pub capacity: Option<u64>,
    /// Also replay on a simulated GPU of this size (sim-gpu-pool, sim-upstream), and find
    /// the smallest capacity that replays with no failure: 2MiB, 80GiB.
    #[arg(long, value_name = "CAPACITY", value_parser = pools::config::parse_bytes)]
    pub simulate_gpu: Option<u64>,
    /// No progress bar, no table when --json.
    #[arg(long)]
    pub quiet: bool,
    /// PyTorch snapshots: the record replayed as the free (completed: when the caching
    /// allocator may reuse the block; requested: when the program dropped it).
    #[arg(long, value_name = "completed|requested", default_value = "completed")]
    pub pytorch_free: workloads::FreeAt,
    #[command(flatten)]
    pub limits: super::limits::LimitArgs,
    /// Shortest throughput sample in milliseconds: each run repeats the trace (a fresh
    /// backend per pass) until its passes last this long, so one scheduler tick or neighbour
    /// cannot dominate a sample. 0 = one pass per run.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub min_sample_ms: u64,
    /// Also count each backend's instructions and simulated cache misses per op (alloc,
    /// free, realloc) under valgrind's callgrind: the deterministic tier `compare` and `gate`
    /// judge with an exact margin. Needs valgrind installed.
    #[arg(long)]
    pub counts: bool,
}

/// Resolve `--config`: an existing file is loaded, otherwise a preset name.
pub fn load_config(arg: Option<&str>) -> anyhow::Result<(PoolConfig, String)> {
    let Some(arg) = arg else {
        return Ok((PoolConfig::default_cpu(), "default_cpu".into()));
    };
    let path = Path::new(arg);
    if path.exists() {
        let config = PoolConfig::load(path)?;
        return Ok((config, arg.to_owned()));
    }
    match PoolConfig::preset(arg) {
        Some(config) => Ok((config, arg.to_owned())),
        None => anyhow::bail!(
            "cannot read pool config {arg}: no such file, and not a preset ({})",
            PoolConfig::PRESETS.join(", ")
        ),
    }
}

/// Most replay workers per core: beyond a few per core, workers only queue for the CPU
/// (and thousands of them make a short trace take minutes).
pub const MAX_WORKERS_PER_CORE: usize = 4;

/// The library options these arguments ask for.
pub fn options(args: &Args) -> anyhow::Result<ReplayOptions> {
    let (config, config_source) = load_config(args.config.as_deref())?;
    let mut backends = BackendSelection::resolve(&args.backends).map_err(anyhow::Error::msg)?;
    for trace in &args.traces {
        if !trace.is_file() {
            anyhow::bail!("{}: no such trace file", trace.display());
        }
    }
    if args.capacity == Some(0) {
        anyhow::bail!("--capacity 0: the capacity must be greater than zero bytes");
    }
    if args.backends.is_empty() && args.config.is_some() {
        // A config given explicitly is also replayed exactly as written (`pool`), beside
        // the default set (whose pool backends override its allocator kind).
        let defaults = backends;
        backends = BackendSelection::of(vec![&PoolAsConfiguredFactory]);
        for &backend in defaults.backends() {
            backends.add(backend);
        }
    }
    if args.simulate_gpu.is_some() {
        backends.add(&SimGpuPoolFactory);
        backends.add(&SimUpstreamFactory);
    }
    // Every config a backend would refuse at creation is refused now, before any replay.
    let setup = crate::backends::BackendSetup {
        config: config.clone(),
        capacity_bytes: args.capacity,
        workers: 1,
        simulate_gpu_bytes: args.simulate_gpu,
    };
    for &backend in backends.backends() {
        backend.check_setup(&setup).map_err(|e| {
            anyhow::anyhow!(
                "--config {config_source} cannot run on {}: {e}",
                backend.name()
            )
        })?;
    }
    let threads = args.threads.map(|t| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cap = cores * MAX_WORKERS_PER_CORE;
        if t as usize > cap {
            eprintln!(
                "replay: warning: --threads {t} clamped to {cap} ({MAX_WORKERS_PER_CORE} per core on {cores} cores)"
            );
        }
        (t as usize).min(cap)
    });
    Ok(ReplayOptions {
        traces: args.traces.clone(),
        backends,
        config,
        config_source,
        threads,
        runs: args.runs as usize,
        warmup: 1,
        touch: args.touch,
        pace: args.pace,
        capacity_bytes: args.capacity,
        simulate_gpu_bytes: args.simulate_gpu,
        strict: args.strict,
        quiet: args.quiet,
        pytorch_free_at: args.pytorch_free,
        limits: args.limits.limits(),
        min_sample_ns: args.min_sample_ms.saturating_mul(1_000_000),
        counts: args.counts,
    })
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    if args.traces.is_empty() {
        eprintln!(
            "error: the following required arguments were not provided:\n  <TRACE>...\n\n\
             Usage: replay [OPTIONS] <TRACE>...\n       replay <COMMAND>\n\n\
             For more information, try '--help'."
        );
        return Ok(EXIT_USAGE);
    }
    let opts = options(&args)?;
    // Found before the replay, not after it: an unwritable --out loses nothing.
    let staged = match &args.out {
        Some(dir) => Some(
            reports::StagedDir::prepare(dir)
                .with_context(|| format!("--out {}: cannot write there", dir.display()))?,
        ),
        None => None,
    };
    let artifacts = replay_traces(&opts)?;
    if let Some(staged) = staged {
        let dir = staged.dest().to_path_buf();
        let written = reports::write_staged_out_dir(staged, &artifacts, None)
            .with_context(|| format!("cannot write the results into {}", dir.display()))?;
        if !args.quiet {
            eprintln!(
                "replay: wrote {} files into {}",
                written.len(),
                dir.display()
            );
        }
    }
    let human = render(&artifacts.results);
    if args.json {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", artifacts.results.to_json())?;
        if !args.quiet {
            eprint!("{human}");
        }
    } else {
        print!("{human}");
    }
    Ok(exit_code(&artifacts.results))
}

/// Exit code of a replay that ran: 1 when some trace got no result at all because every
/// backend that ran on it failed (skipped backends, such as CUDA ones on a machine without
/// a GPU, are not failures); 0 otherwise.
pub fn exit_code(results: &ResultsFile) -> i32 {
    let all_failed = results.traces.iter().any(|t| {
        t.results.iter().any(|r| r.status == Status::Failed)
            && t.results.iter().all(|r| r.status != Status::Ok)
    });
    if all_failed {
        eprintln!("replay: error: every backend failed on a trace (see the reasons above)");
        EXIT_ALL_FAILED
    } else {
        0
    }
}

/// Exit code when every backend failed on some trace.
pub const EXIT_ALL_FAILED: i32 = 1;

/// The human report: warnings, then per trace its sanitation, the clock and the table.
pub fn render(results: &ResultsFile) -> String {
    let mut out = String::new();
    if cfg!(debug_assertions) {
        out.push_str("warning: debug build: use --release for figures you compare\n");
    }
    if let Some(gpu) = &results.machine.gpu {
        let _ = writeln!(
            out,
            "device: {} ({}{}), driver {}, CUDA {}",
            gpu.name,
            format::bytes(gpu.total_memory_bytes),
            gpu.compute_capability
                .as_deref()
                .map(|c| format!(", compute {c}"))
                .unwrap_or_default(),
            gpu.driver_version.as_deref().unwrap_or("?"),
            gpu.cuda_version
        );
    }
    let workers = results.options.get("workers").and_then(|w| w.as_array());
    for (i, trace) in results.traces.iter().enumerate() {
        let workers = workers
            .and_then(|w| w.get(i))
            .and_then(|w| w.as_u64())
            .unwrap_or(0);
        render_trace(&mut out, results, trace, workers);
    }
    out
}

fn render_trace(out: &mut String, results: &ResultsFile, trace: &TraceResult, workers: u64) {
    let s = &trace.sanitation;
    let _ = writeln!(
        out,
        "\n{}: {} events, {} threads on {} workers, peak live {}",
        trace.path,
        trace.events,
        trace.threads,
        workers,
        format::bytes(trace.peak_live_bytes)
    );
    let _ = writeln!(
        out,
        "sanitation: {} repaired (unknown frees {}, double frees {}, live reallocations {}), leaks {}",
        s.repaired, s.unknown_frees, s.double_frees, s.live_reallocations, s.leaks
    );
    if let Some(p) = &trace.pytorch {
        let n = |k: &str| p.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let _ = writeln!(
            out,
            "pytorch snapshot: {} entries ({} alloc, {} free_requested, {} free_completed, {} segment, {} oom); \
             free at {}{}; {} blocks from before recording allocated first{}",
            n("entries"),
            n("allocs"),
            n("free_requested"),
            n("free_completed"),
            n("segment_events"),
            n("ooms"),
            p.get("free_at").and_then(|v| v.as_str()).unwrap_or("?"),
            if p.get("free_at_fallback").and_then(|v| v.as_bool()) == Some(true) {
                " (the trace has no free_completed)"
            } else {
                ""
            },
            n("pre_recording_blocks"),
            if p.get("truncated").and_then(|v| v.as_bool()) == Some(true) {
                "; TRUNCATED at its start: the recorder's max_entries ring dropped the oldest entries"
            } else {
                ""
            }
        );
    }
    if let Some(clock) = &results.clock {
        let o = &results.options;
        let _ = writeln!(
            out,
            "clock: {}, floor {:.1} ns subtracted from every sample, resolution {:.0} ns; {} runs + {} warm-up, touch {}, pace {}",
            clock.source,
            clock.overhead_ns,
            clock.resolution_ns.unwrap_or(1.0),
            o.get("runs").and_then(|v| v.as_u64()).unwrap_or(0),
            o.get("warmup").and_then(|v| v.as_u64()).unwrap_or(0),
            o.get("touch").and_then(|v| v.as_str()).unwrap_or("?"),
            o.get("pace").and_then(|v| v.as_str()).unwrap_or("?"),
        );
    }
    let reference = ops_reference(trace);
    let ratio_header = reference.map_or("x ref".to_owned(), |r| format!("x {}", r.backend));
    let header = [
        "backend",
        "status",
        "ops/s median (min-max)",
        ratio_header.as_str(),
        "alloc p50",
        "p99",
        "p99.9",
        "max",
        "free p50",
        "p99",
        "peak reserved (x ideal)",
        "failures",
    ];
    // Backend and status left-aligned, the figures right-aligned.
    let mut table = Table::new(&header).align_from(2, Align::Right);
    let mut notes: Vec<(String, Vec<&str>)> = Vec::new();
    for r in &trace.results {
        match r.status {
            Status::Ok if r.recorded => {
                table.row(recorded_row(r, trace.peak_live_bytes, header.len()))
            }
            Status::Ok => {
                let mut cells = row(r, trace.peak_live_bytes);
                let ratio = reference
                    .filter(|reference| reference.ops_per_sec > 0.0)
                    .map_or("-".to_owned(), |reference| {
                        format!("{:.2}x", r.ops_per_sec / reference.ops_per_sec)
                    });
                cells.insert(3, ratio);
                table.row(cells);
            }
            Status::Skipped | Status::Failed => {
                let status = if r.status == Status::Skipped {
                    "skipped"
                } else {
                    "failed"
                };
                let why = format!(
                    "{status}: {}",
                    r.reason.as_deref().unwrap_or("no reason given")
                );
                // Backends skipped (or failed) for the same reason share one line.
                match notes.iter_mut().find(|(w, _)| *w == why) {
                    Some((_, names)) => names.push(&r.backend),
                    None => notes.push((why, vec![&r.backend])),
                }
                let mut cells = vec![r.backend.clone(), status.to_owned()];
                cells.resize(header.len(), "-".to_owned());
                table.row(cells);
            }
        }
    }
    out.push_str(&table.text());
    for (why, names) in notes {
        let _ = writeln!(out, "  {} {why}", names.join(", "));
    }
    if let Some(line) = verdict_line(trace) {
        let _ = writeln!(out, "{line}");
    }
}

/// Whether a backend replays on a (real or simulated) device.
fn is_device_backend(name: &str) -> bool {
    matches!(
        name,
        "cuda-malloc" | "cuda-async" | "gpu-pool" | "sim-gpu-pool" | "sim-upstream"
    )
}

/// The backend the ops/s ratio column divides by: `cuda-async` for device traces (PyTorch
/// snapshots, or runs of device backends only), `system` for host traces; the other one
/// when the preferred one did not run here; `None` when neither did.
fn ops_reference(trace: &TraceResult) -> Option<&BackendResult> {
    let replayed = |r: &&BackendResult| r.status == Status::Ok && !r.recorded;
    let order = if is_device_trace(trace) {
        ["cuda-async", "system"]
    } else {
        ["system", "cuda-async"]
    };
    order.iter().find_map(|name| {
        trace
            .results
            .iter()
            .filter(replayed)
            .find(|r| r.backend == *name)
    })
}

/// A trace of device memory: a PyTorch snapshot, or one only device backends replayed.
fn is_device_trace(trace: &TraceResult) -> bool {
    trace.pytorch.is_some()
        || trace
            .results
            .iter()
            .filter(|r| r.status == Status::Ok && !r.recorded)
            .all(|r| is_device_backend(&r.backend))
}

/// `fastest: X (..); leanest: Y (..)` over the backends replayed here: the device backends
/// for a device trace (host allocators replaying it measure host memory), every backend
/// otherwise. Recorded rows such as `torch-caching` are references, not candidates; a
/// backend with failed allocations is not the leanest.
fn verdict_line(trace: &TraceResult) -> Option<String> {
    let device = is_device_trace(trace);
    let replayed: Vec<&BackendResult> = trace
        .results
        .iter()
        .filter(|r| r.status == Status::Ok && !r.recorded)
        .filter(|r| !device || is_device_backend(&r.backend))
        .collect();
    let fastest = replayed
        .iter()
        .max_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec))?;
    let mut line = format!(
        "fastest: {} ({})",
        fastest.backend,
        format::ops_per_sec(fastest.ops_per_sec)
    );
    let leanest = replayed
        .iter()
        .filter(|r| r.reserved_source.is_some() && r.alloc_failures == 0)
        .min_by_key(|r| r.peak_reserved_bytes);
    match leanest {
        Some(r) => {
            let _ = write!(
                line,
                "; leanest: {} ({} peak reserved",
                r.backend,
                format::bytes(r.peak_reserved_bytes)
            );
            if let Some(torch) = trace.results.iter().find(|t| t.recorded) {
                if torch.peak_reserved_bytes > 0 {
                    let _ = write!(
                        line,
                        ", {:.3}x {}",
                        r.peak_reserved_bytes as f64 / torch.peak_reserved_bytes as f64,
                        torch.backend
                    );
                }
            }
            line.push(')');
        }
        None => line.push_str("; leanest: - (no backend measured its reserved memory)"),
    }
    Some(line)
}

/// Peak reserved bytes and their ratio to the ideal, or `-` when not measured.
fn reserved_cell(r: &BackendResult, ideal_bytes: u64) -> String {
    if r.reserved_source.is_none() {
        "-".to_owned()
    } else if ideal_bytes == 0 {
        format::bytes(r.peak_reserved_bytes)
    } else {
        format!(
            "{} ({:.2}x)",
            format::bytes(r.peak_reserved_bytes),
            r.peak_reserved_bytes as f64 / ideal_bytes as f64
        )
    }
}

/// A row recorded in the trace (`torch-caching`): memory and failures only.
fn recorded_row(r: &BackendResult, ideal_bytes: u64, columns: usize) -> Vec<String> {
    let mut cells = vec![r.backend.clone(), "recorded".to_owned()];
    cells.resize(columns - 2, "-".to_owned());
    cells.push(reserved_cell(r, ideal_bytes));
    cells.push(r.alloc_failures.to_string());
    cells
}

fn row(r: &BackendResult, ideal_bytes: u64) -> Vec<String> {
    let ns = |v: u64| format::nanos(v as f64);
    let min = r
        .runs
        .iter()
        .map(|x| x.ops_per_sec)
        .fold(f64::INFINITY, f64::min);
    let max = r.runs.iter().map(|x| x.ops_per_sec).fold(0.0, f64::max);
    let throughput = if r.runs.len() > 1 {
        format!(
            "{} ({}-{})",
            format::ops_per_sec(r.ops_per_sec),
            short_ops(min),
            short_ops(max)
        )
    } else {
        format::ops_per_sec(r.ops_per_sec)
    };
    let reserved = reserved_cell(r, ideal_bytes);
    let l = &r.latency_ns;
    vec![
        r.backend.clone(),
        "ok".to_owned(),
        throughput,
        ns(l.alloc.p50),
        ns(l.alloc.p99),
        ns(l.alloc.p999),
        ns(l.alloc.max),
        ns(l.free.p50),
        ns(l.free.p99),
        reserved,
        r.alloc_failures.to_string(),
    ]
}

/// `12.3M`, `850k`: the min-max range beside a full figure.
fn short_ops(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real results file (the CI baseline) with the statuses of its first trace set.
    fn results_with(statuses: &[Status]) -> ResultsFile {
        let mut results: ResultsFile =
            serde_json::from_str(include_str!("../../../ci/baseline.json")).unwrap();
        let trace = &mut results.traces[0];
        trace.results.truncate(statuses.len());
        for (r, &status) in trace.results.iter_mut().zip(statuses) {
            r.status = status;
        }
        results
    }

    #[test]
    fn exit_code_is_1_only_when_every_backend_that_ran_failed() {
        use Status::*;
        assert_eq!(exit_code(&results_with(&[Ok, Failed])), 0);
        assert_eq!(exit_code(&results_with(&[Failed, Failed])), EXIT_ALL_FAILED);
        assert_eq!(
            exit_code(&results_with(&[Skipped, Failed])),
            EXIT_ALL_FAILED
        );
        // Skipped for want of a GPU is not a failure.
        assert_eq!(exit_code(&results_with(&[Skipped, Skipped])), 0);
    }
}
