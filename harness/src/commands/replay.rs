//! `replay [OPTIONS] <TRACE>...`: replay traces against backends and print a comparison.
//!
//! Human output goes to stdout; with `--json`, stdout carries results.json and nothing
//! else, and the human output goes to stderr (unless `--quiet`).

use super::EXIT_USAGE;
use crate::backends;
use crate::engine::{Pace, Touch};
use crate::replay::{replay_traces, ReplayOptions};
use anyhow::Context;
use pools::PoolConfig;
use reports::{format, BackendResult, ResultsFile, Status, TraceResult};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Trace files (canonical CSV, RMM log, Android memory_replay; .gz/.zst/.zip read as is).
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

/// The library options these arguments ask for.
pub fn options(args: &Args) -> anyhow::Result<ReplayOptions> {
    let (config, config_source) = load_config(args.config.as_deref())?;
    backends::resolve(&args.backends).map_err(anyhow::Error::msg)?;
    for trace in &args.traces {
        if !trace.is_file() {
            anyhow::bail!("{}: no such trace file", trace.display());
        }
    }
    let mut backend_names = args.backends.clone();
    if backend_names.is_empty() && args.config.is_some() {
        // A config given explicitly is also replayed exactly as written (`pool`), beside
        // the default set (whose pool backends override its allocator kind).
        backend_names.push("pool".to_owned());
        let defaults = backends::resolve(&[]).map_err(anyhow::Error::msg)?;
        backend_names.extend(defaults.iter().map(|b| b.name().to_owned()));
    }
    Ok(ReplayOptions {
        traces: args.traces.clone(),
        backends: backend_names,
        config,
        config_source,
        threads: args.threads.map(|t| t as usize),
        runs: args.runs as usize,
        warmup: 1,
        touch: args.touch,
        pace: args.pace,
        capacity_bytes: args.capacity,
        simulate_gpu_bytes: args.simulate_gpu,
        strict: args.strict,
        quiet: args.quiet,
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
    let artifacts = replay_traces(&opts)?;
    if let Some(dir) = &args.out {
        let written = reports::write_out_dir(dir, &artifacts)
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
    Ok(0)
}

/// The human report: warnings, then per trace its sanitation, the clock and the table.
pub fn render(results: &ResultsFile) -> String {
    let mut out = String::new();
    if cfg!(debug_assertions) {
        out.push_str("warning: debug build: use --release for figures you compare\n");
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
    let header = [
        "backend",
        "status",
        "ops/s median (min-max)",
        "alloc p50",
        "p99",
        "p99.9",
        "max",
        "free p50",
        "p99",
        "peak reserved (x ideal)",
        "failures",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    let mut notes = Vec::new();
    for r in &trace.results {
        match r.status {
            Status::Ok => rows.push(row(r, trace.peak_live_bytes)),
            Status::Skipped | Status::Failed => {
                let status = if r.status == Status::Skipped {
                    "skipped"
                } else {
                    "failed"
                };
                notes.push(format!(
                    "{} {status}: {}",
                    r.backend,
                    r.reason.as_deref().unwrap_or("no reason given")
                ));
                let mut cells = vec![r.backend.clone(), status.to_owned()];
                cells.resize(header.len(), "-".to_owned());
                rows.push(cells);
            }
        }
    }
    out.push_str(&table(&rows));
    for note in notes {
        let _ = writeln!(out, "  {note}");
    }
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
    let reserved = if r.reserved_source.is_none() {
        "-".to_owned()
    } else if ideal_bytes == 0 {
        format::bytes(r.peak_reserved_bytes)
    } else {
        format!(
            "{} ({:.2}x)",
            format::bytes(r.peak_reserved_bytes),
            r.peak_reserved_bytes as f64 / ideal_bytes as f64
        )
    };
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

/// Left-aligned first two columns, right-aligned numbers, two spaces between columns.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            if c > 0 {
                line.push_str("  ");
            }
            if c < 2 {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            } else {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
