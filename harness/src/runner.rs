//! The replay as a library call: load traces, replay each against every backend for a
//! number of runs, and gather what results.json and the reports need.
//!
//! Runs are run-major: warm-up run, then for each measured run `i`, every backend in turn
//! (starting from backend `i mod n`, so no backend always follows the same one), each on a
//! fresh instance, so drift over time (thermal, other tenants) hits every backend alike and
//! run `i` of a backend pairs with run `i` of the reference. Each throughput sample repeats
//! the trace until it lasts `min_sample_ns`.
//! Histograms are merged over workers and runs, never averaged.
//!
//! With `counts`, the deterministic tier is collected afterwards ([`crate::counts`]).

use crate::backends::{BackendSelection, BackendSetup, RegisteredBackend};
use crate::clock::Clock;
use crate::engine::{
    pass::panic_message, LatencyHistograms, Pace, PassOptions, ReplayPlan, RunMeasurement, Touch,
};
use crate::progress::Progress;
use anyhow::{bail, Context};
use pools::PoolConfig;
use reports::{
    BackendResult, LatencySet, MemorySample, NamedHistogram, ResultsFile, RunArtifacts, RunResult,
    Sanitation, Status, TraceResult, SCHEMA_VERSION,
};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use workloads::CompiledTrace;

/// Everything a replay needs besides the traces' contents.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Trace files (for [`replay_traces`]; [`replay_inputs`] takes compiled traces).
    pub traces: Vec<PathBuf>,
    /// The backends to replay, in table order (resolved from names at the edge:
    /// [`BackendSelection::resolve`]); the default is the default set.
    pub backends: BackendSelection,
    /// Pool configuration; pool backends override the allocator kind per backend.
    pub config: PoolConfig,
    /// Where `config` came from (a file, a preset name), recorded in results.json.
    pub config_source: String,
    /// Workers; `None` = min(trace threads, cores). Never more than the trace's threads.
    pub threads: Option<usize>,
    /// Measured runs (at least 1).
    pub runs: usize,
    /// Unrecorded warm-up runs before them.
    pub warmup: usize,
    pub touch: Touch,
    pub pace: Pace,
    /// Pool backends' `max_size_bytes` and the simulated device's size.
    pub capacity_bytes: Option<u64>,
    /// `--simulate-gpu`: the size of the simulated device `sim-gpu-pool` and `sim-upstream`
    /// run on (the command adds them to the selection; backends with a capacity also report
    /// `min_capacity_bytes`).
    pub simulate_gpu_bytes: Option<u64>,
    /// Trace problems are errors instead of repairs.
    pub strict: bool,
    /// No progress bar and no warnings on stderr.
    pub quiet: bool,
    /// PyTorch snapshots: the record replayed as the free.
    pub pytorch_free_at: workloads::FreeAt,
    /// Where reading a trace stops with an error.
    pub limits: workloads::ReadLimits,
    /// Shortest throughput sample: a run repeats the trace (each pass on a fresh backend)
    /// until its passes add up to this. 0 = one pass.
    pub min_sample_ns: u64,
    /// Also collect the counts tier (valgrind) for every (trace, backend).
    pub counts: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            traces: Vec::new(),
            backends: BackendSelection::default_set(),
            config: PoolConfig::default_cpu(),
            config_source: "default_cpu".into(),
            threads: None,
            runs: 3,
            warmup: 1,
            touch: Touch::First,
            pace: Pace::Max,
            capacity_bytes: None,
            simulate_gpu_bytes: None,
            strict: false,
            quiet: false,
            pytorch_free_at: workloads::FreeAt::Completed,
            limits: workloads::ReadLimits::default(),
            min_sample_ns: 0,
            counts: false,
        }
    }
}

/// A compiled trace and what results.json says about where it came from.
#[derive(Debug, Clone, Copy)]
pub struct TraceInput<'a> {
    pub path: &'a str,
    pub compiled: &'a CompiledTrace,
    pub sanitation: &'a Sanitation,
}

/// Load every trace of `opts.traces` and replay them (see [`replay_inputs`]).
pub fn replay_traces(opts: &ReplayOptions) -> anyhow::Result<RunArtifacts> {
    check_options(opts)?;
    if opts.traces.is_empty() {
        bail!("no trace given");
    }
    let load = workloads::LoadOptions {
        strict: opts.strict,
        keep_times: opts.pace != Pace::Max,
        read: workloads::ReadOptions {
            limits: opts.limits,
            pytorch_free_at: opts.pytorch_free_at,
        },
    };
    let mut loaded = Vec::with_capacity(opts.traces.len());
    for path in &opts.traces {
        let trace = workloads::load_trace(path, &load)
            .with_context(|| format!("cannot load trace {}", path.display()))?;
        if let Some(span_ns) = trace.compiled.time_span_ns() {
            opts.pace
                .check_span(span_ns)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("trace {}", path.display()))?;
        }
        loaded.push((path.display().to_string(), trace));
    }
    let sanitations: Vec<Sanitation> = loaded
        .iter()
        .map(|(_, t)| sanitation_of(&t.sanitation))
        .collect();
    let inputs: Vec<TraceInput<'_>> = loaded
        .iter()
        .zip(&sanitations)
        .map(|((path, t), sanitation)| TraceInput {
            path,
            compiled: &t.compiled,
            sanitation,
        })
        .collect();
    let mut artifacts = replay_inputs(&inputs, opts)?;
    for (trace, (_, loaded)) in artifacts.results.traces.iter_mut().zip(&loaded) {
        if let Some(snapshot) = &loaded.snapshot {
            crate::recorded::add_pytorch_row(trace, snapshot);
        }
    }
    if opts.counts {
        let source = crate::counts::CallgrindSource::locate()?;
        if !opts.quiet {
            eprintln!(
                "replay: counting instructions under {} (one pass per trace and backend)",
                source.version
            );
        }
        add_counts(&mut artifacts, opts, &source)?;
    }
    Ok(artifacts)
}

/// Collects the counts tier for the traces and backends of `artifacts` from `source`.
pub fn add_counts(
    artifacts: &mut RunArtifacts,
    opts: &ReplayOptions,
    source: &dyn crate::counts::CountsSource,
) -> anyhow::Result<()> {
    let request = crate::counts::CountsRequest {
        traces: opts.traces.clone(),
        backends: opts
            .backends
            .backends()
            .iter()
            .map(|b| b.name().to_owned())
            .collect(),
        config_toml: opts.config.to_toml(),
        touch: opts.touch.as_str().to_owned(),
        capacity_bytes: opts.capacity_bytes,
        strict: opts.strict,
    };
    let entries = source.collect(&request)?;
    crate::counts::attach_counts(&mut artifacts.results, source.info(), &entries);
    Ok(())
}

/// results.json's sanitation counts from the loader's report.
pub fn sanitation_of(report: &workloads::SanitationReport) -> Sanitation {
    Sanitation {
        repaired: report.repaired,
        unknown_frees: report.unknown_frees + report.unknown_reallocs,
        leaks: report.leaks,
        double_frees: report.double_frees,
        live_reallocations: report.live_reallocations,
    }
}

fn check_options(opts: &ReplayOptions) -> anyhow::Result<()> {
    if opts.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if opts.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    opts.config
        .validate()
        .with_context(|| format!("pool config from {}", opts.config_source))?;
    Ok(())
}

/// Workers for a trace: `--threads` or min(trace threads, cores), at most the trace's
/// threads (an extra worker would have no ops), at least 1.
pub fn workers_for(trace: &CompiledTrace, threads: Option<usize>) -> usize {
    let trace_threads = trace.threads.len().max(1);
    threads
        .unwrap_or_else(crate::machine::available_cores)
        .min(trace_threads)
        .max(1)
}

/// Replay compiled traces against the backends of `opts` (`opts.traces` is not read).
pub fn replay_inputs(
    inputs: &[TraceInput<'_>],
    opts: &ReplayOptions,
) -> anyhow::Result<RunArtifacts> {
    check_options(opts)?;
    let selected = opts.backends.backends();
    let clock = Clock::global();
    let pass = PassOptions {
        touch: opts.touch,
        pace: opts.pace,
        min_sample_ns: opts.min_sample_ns,
    };
    let mut progress = Progress::new(
        (inputs.len() * (opts.warmup + opts.runs) * selected.len()) as u64,
        opts.quiet,
    );
    let mut traces = Vec::with_capacity(inputs.len());
    let mut histograms = Vec::new();
    let mut workers_per_trace = Vec::with_capacity(inputs.len());
    for (trace_index, input) in inputs.iter().enumerate() {
        let workers = workers_for(input.compiled, opts.threads);
        workers_per_trace.push(workers);
        let plan = ReplayPlan::new(input.compiled, workers)
            .with_context(|| format!("trace {}", input.path))?;
        if opts.pace != Pace::Max && !plan.has_times() && !opts.quiet {
            eprintln!(
                "replay: {}: the trace has no time_ns; --pace {} ignored",
                input.path, opts.pace
            );
        }
        let setup = BackendSetup {
            config: opts.config.clone(),
            capacity_bytes: opts.capacity_bytes,
            workers,
            simulate_gpu_bytes: opts.simulate_gpu_bytes,
        };
        let mut states: Vec<BackendState> = selected
            .iter()
            .map(|&b| BackendState::new(b, &setup))
            .collect();
        let backend_count = states.len();
        for run in 0..opts.warmup + opts.runs {
            let measured = run >= opts.warmup;
            for k in 0..backend_count {
                let state = &mut states[(k + run) % backend_count];
                progress.next(&format!(
                    "{} {} run {}/{}",
                    short_name(input.path),
                    state.backend.name(),
                    run + 1,
                    opts.warmup + opts.runs
                ));
                if state.status != Status::Ok {
                    continue;
                }
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    state.backend.run_once(&setup, &plan, &pass)
                }));
                match outcome {
                    Ok(Ok(m)) if measured => state.record(m),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => state.fail(e.to_string()),
                    Err(payload) => state.fail(panic_message(payload.as_ref())),
                }
            }
        }
        let mut results = Vec::with_capacity(states.len());
        for state in states {
            let state_backend = state.backend;
            let (mut result, latency) = state.finish(&setup);
            if result.status == Status::Ok {
                result.min_capacity_bytes =
                    state_backend.min_capacity_bytes(&setup, input.compiled);
            }
            if let Some(latency) = latency {
                for (op, h) in [
                    ("alloc", latency.alloc),
                    ("free", latency.free),
                    ("realloc", latency.realloc),
                ] {
                    if !h.is_empty() {
                        histograms.push(NamedHistogram {
                            trace_index,
                            backend: result.backend.clone(),
                            op: op.to_owned(),
                            histogram: h,
                        });
                    }
                }
            }
            results.push(result);
        }
        traces.push(TraceResult {
            path: input.path.to_owned(),
            events: plan.event_count(),
            threads: input.compiled.threads.len() as u32,
            peak_live_bytes: plan.peak_live_bytes(),
            sanitation: input.sanitation.clone(),
            results,
            pytorch: None,
        });
    }
    progress.finish();

    let options = serde_json::json!({
        "backends": opts.backends.names(),
        "threads": opts.threads,
        "workers": workers_per_trace,
        "runs": opts.runs,
        "warmup": opts.warmup,
        "touch": opts.touch.as_str(),
        "pace": opts.pace.to_string(),
        "capacity_bytes": opts.capacity_bytes,
        "strict": opts.strict,
        "config": opts.config.summary(),
        "config_source": opts.config_source,
        "debug_build": cfg!(debug_assertions),
        "min_sample_ns": opts.min_sample_ns,
    });
    let mut machine = crate::machine::describe();
    if selected
        .iter()
        .any(|b| crate::backends::gpu::is_cuda_backend(b.name()))
    {
        machine.gpu = crate::backends::gpu::device_info().ok();
    }
    Ok(RunArtifacts {
        results: ResultsFile {
            schema: SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
            machine,
            clock: Some(clock.info()),
            options,
            counts: None,
            traces,
        },
        histograms,
    })
}

fn short_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One backend's results while the runs go on.
struct BackendState {
    backend: &'static dyn RegisteredBackend,
    status: Status,
    reason: Option<String>,
    runs: Vec<RunResult>,
    latency: Option<LatencyHistograms>,
    /// (peak reserved, fragmentation) of the run with the highest peak.
    peak: Option<(u64, Option<f64>)>,
    memory_series: Vec<MemorySample>,
    reserved_known: bool,
}

impl BackendState {
    fn new(backend: &'static dyn RegisteredBackend, setup: &BackendSetup) -> Self {
        let (status, reason) = match backend.check_available(setup) {
            Ok(()) => (Status::Ok, None),
            Err(why) => (Status::Skipped, Some(why.0)),
        };
        BackendState {
            backend,
            status,
            reason,
            runs: Vec::new(),
            latency: None,
            peak: None,
            memory_series: Vec::new(),
            reserved_known: false,
        }
    }

    fn fail(&mut self, reason: String) {
        self.status = Status::Failed;
        self.reason = Some(reason);
    }

    fn record(&mut self, m: RunMeasurement) {
        let run = m.latency.summary();
        let nonzero = |s: &reports::LatencySummary, v: u64| (s.count > 0).then_some(v);
        self.runs.push(RunResult {
            wall_ns: m.wall_ns,
            ops_per_sec: m.ops_per_sec,
            alloc_failures: m.alloc_failures,
            peak_reserved_bytes: m.peak_reserved_bytes,
            alloc_p50_ns: nonzero(&run.alloc, run.alloc.p50),
            alloc_p99_ns: nonzero(&run.alloc, run.alloc.p99),
            free_p50_ns: nonzero(&run.free, run.free.p50),
            trace_passes: Some(m.throughput_passes),
        });
        match &mut self.latency {
            None => self.latency = Some(m.latency),
            Some(total) => total.add(&m.latency),
        }
        self.reserved_known |= m.reserved_known;
        let higher = match self.peak {
            None => true,
            Some((peak, _)) => m.peak_reserved_bytes > peak,
        };
        if higher {
            self.peak = Some((m.peak_reserved_bytes, m.fragmentation));
        }
        if self.memory_series.is_empty() {
            self.memory_series = m.memory_series;
        }
    }

    fn finish(self, setup: &BackendSetup) -> (BackendResult, Option<LatencyHistograms>) {
        let mut ops: Vec<f64> = self.runs.iter().map(|r| r.ops_per_sec).collect();
        ops.sort_by(f64::total_cmp);
        let median = match ops.len() {
            0 => 0.0,
            n if n % 2 == 1 => ops[n / 2],
            n => (ops[n / 2 - 1] + ops[n / 2]) / 2.0,
        };
        let latency_ns = self
            .latency
            .as_ref()
            .map_or_else(LatencySet::default, |h| h.summary());
        let result = BackendResult {
            backend: self.backend.name().to_owned(),
            status: self.status,
            reason: self.reason,
            ops_per_sec: median,
            latency_ns,
            peak_reserved_bytes: self
                .runs
                .iter()
                .map(|r| r.peak_reserved_bytes)
                .max()
                .unwrap_or(0),
            alloc_failures: self
                .runs
                .iter()
                .map(|r| r.alloc_failures)
                .max()
                .unwrap_or(0),
            reserved_source: self
                .reserved_known
                .then(|| self.backend.reserved_source().to_owned()),
            fragmentation: self.peak.and_then(|(_, f)| f),
            config: self.backend.config_summary(setup),
            min_capacity_bytes: None,
            memory_series: self.memory_series,
            alloc_latency_by_size_bucket: self
                .latency
                .as_ref()
                .map(|h| h.size_bucket_summary())
                .unwrap_or_default(),
            runs: self.runs,
            recorded: false,
            counts: None,
        };
        (result, self.latency)
    }
}
