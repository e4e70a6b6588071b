//! `replay recommend <TRACE> -o pool.toml`: which `PoolConfig` serves this workload best?
//!
//! The search is successive halving over a structured candidate set:
//! 1. candidates: every allocator kind the trace can use, each with variations along one
//!    axis at a time (size-class granularity and limit, chunk size, growth factor, sync
//!    mode, alignment, huge pages, memory-return policy) — see [`candidates`];
//! 2. rounds: all candidates replay a prefix of the trace once; the better half (by the
//!    objective) go on to a prefix twice as long; the last round replays the whole trace
//!    with `--runs` runs and keeps at least [`MIN_FINALISTS`] candidates;
//! 3. the budget (`--budget`) is checked before every replay against an estimate from the
//!    replays so far; rounds shrink (fewer candidates, shorter prefixes) to fit it.
//!
//! Ranking: a configuration that fails allocations ranks below every one that does not
//! (it never wins unless all fail, and the output says so). Among the others, candidates
//! whose score is within [`TIE_MARGIN`] of the best are indistinguishable on a noisy
//! machine, and the simplest of them wins (fixed-size < size-classed < variable-size <
//! lock-free, then smaller chunks): simpler configs have fewer ways to surprise in
//! production.

use crate::backends;
use crate::engine::{Pace, Touch};
use crate::replay::{replay_inputs_with, sanitation_of, ReplayOptions, TraceInput};
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pools::config::human_bytes;
use pools::{AllocatorKind, FitPolicy, HugePages, PoolConfig, ReturnPolicy, SizeClasses, SyncMode};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use workloads::{CompiledTrace, OpKind, ThreadOps};

/// Candidates measured on the whole trace (the ranking table shows at least this many).
pub const MIN_FINALISTS: usize = 5;
/// Scores closer than this (natural-log units, ~10%) to the best are treated as ties: on
/// shared machines the same configuration's ops/s moves by 10-15% between runs.
pub const TIE_MARGIN: f64 = 0.10;
/// The first round's prefix: this many events, or the whole trace if shorter.
const FIRST_PREFIX_EVENTS: u64 = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Objective {
    /// Highest ops/s.
    Throughput,
    /// Lowest alloc p99 latency.
    P99,
    /// Lowest peak reserved bytes.
    Memory,
    /// ops/s, p99 and reserved bytes weighed together.
    Balanced,
}

impl Objective {
    /// Weights on ln(ops/s), -ln(p99), -ln(reserved).
    fn weights(self) -> (f64, f64, f64) {
        match self {
            Objective::Throughput => (1.0, 0.05, 0.05),
            Objective::P99 => (0.05, 1.0, 0.05),
            Objective::Memory => (0.05, 0.05, 1.0),
            Objective::Balanced => (1.0, 0.5, 0.5),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Objective::Throughput => "throughput",
            Objective::P99 => "p99",
            Objective::Memory => "memory",
            Objective::Balanced => "balanced",
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

/// What one replay of one candidate measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub ops_per_sec: f64,
    pub alloc_p99_ns: u64,
    pub peak_reserved_bytes: u64,
    pub alloc_failures: u64,
    /// Events of the prefix replayed.
    pub events: u64,
    pub runs: u32,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub config: PoolConfig,
    /// The latest (longest prefix) measurement.
    pub measured: Option<Measured>,
    /// Why it left the search, if it did (round and reason).
    pub eliminated_in_round: Option<usize>,
}

/// Shape of a trace that decides which candidates make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceShape {
    pub threads: usize,
    pub min_size_bytes: u64,
    pub max_size_bytes: u64,
    pub events: u64,
    pub largest_align: usize,
}

impl TraceShape {
    pub fn of(trace: &CompiledTrace) -> Self {
        let mut min = u64::MAX;
        let mut max = 0;
        let mut align = 0;
        for op in trace.threads.iter().flat_map(|t| &t.ops) {
            if op.kind != OpKind::Free {
                min = min.min(op.size);
                max = max.max(op.size);
                align = align.max(op.align());
            }
        }
        TraceShape {
            threads: trace.threads.len(),
            min_size_bytes: if min == u64::MAX { 0 } else { min },
            max_size_bytes: max,
            events: trace.event_count,
            largest_align: align,
        }
    }

    /// A fixed-size pool serves this trace without wasting more than half of each block.
    pub fn fits_fixed_size(&self) -> bool {
        self.max_size_bytes > 0 && self.max_size_bytes <= 2 * self.min_size_bytes.max(1)
    }
}

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// The candidate set for a trace: for each allocator kind that fits, a base configuration
/// and one-axis variations of it. Deterministic; every candidate validates.
pub fn candidates(shape: &TraceShape) -> Vec<PoolConfig> {
    let single = shape.threads <= 1;
    let mutex_or_single = if single {
        SyncMode::SingleThreaded
    } else {
        SyncMode::Mutex
    };
    let base = PoolConfig {
        sync: mutex_or_single,
        return_policy: ReturnPolicy::Keep,
        ..PoolConfig::default_cpu()
    };
    let mut out: Vec<PoolConfig> = Vec::new();
    let mut push = |c: PoolConfig| {
        if c.validate().is_ok() && !out.contains(&c) {
            out.push(c);
        }
    };
    // Variations shared by every kind: chunking, growth, huge pages, return policy.
    let axes = |c: &PoolConfig| -> Vec<PoolConfig> {
        let mut v = vec![c.clone()];
        // Chunk size and growth shape only the variable-size allocator's memory; the
        // segment-based kinds (fixed, size-classed, lock-free) map fixed-size segments and
        // take only the initial reservation from the config.
        if c.allocator == AllocatorKind::VariableSize {
            for chunk in [64 * KIB, 4 * MIB] {
                v.push(PoolConfig {
                    chunk_size_bytes: chunk,
                    initial_size_bytes: chunk,
                    ..c.clone()
                });
            }
            v.push(PoolConfig {
                growth_factor: 1.0,
                ..c.clone()
            });
        } else {
            v.push(PoolConfig {
                initial_size_bytes: 0,
                ..c.clone()
            });
        }
        v.push(PoolConfig {
            huge_pages: HugePages::Madvise,
            ..c.clone()
        });
        v.push(PoolConfig {
            return_policy: ReturnPolicy::WhenEmpty,
            ..c.clone()
        });
        if c.alignment < 64 {
            v.push(PoolConfig {
                alignment: 64,
                ..c.clone()
            });
        }
        v
    };

    if shape.fits_fixed_size() {
        let align = base.alignment.max(shape.largest_align).max(8) as u64;
        let block = shape.max_size_bytes.div_ceil(align) * align;
        let fixed = PoolConfig {
            allocator: AllocatorKind::FixedSize,
            block_size_bytes: block as usize,
            ..base.clone()
        };
        for c in axes(&fixed) {
            push(c);
        }
    }

    let classed = PoolConfig {
        allocator: AllocatorKind::SizeClassed,
        ..base.clone()
    };
    for c in axes(&classed) {
        push(c);
    }
    for (per_doubling, max_class) in [(2, 32 * KIB), (8, 32 * KIB), (4, 4 * KIB), (4, 256 * KIB)] {
        push(PoolConfig {
            size_classes: SizeClasses {
                classes_per_doubling: per_doubling,
                max_class_bytes: max_class,
            },
            ..classed.clone()
        });
    }

    for fit in [FitPolicy::BestFit, FitPolicy::FirstFit] {
        let variable = PoolConfig {
            allocator: AllocatorKind::VariableSize,
            fit,
            ..base.clone()
        };
        if fit == FitPolicy::BestFit {
            for c in axes(&variable) {
                push(c);
            }
        } else {
            push(variable);
        }
    }

    let lockfree = PoolConfig {
        allocator: AllocatorKind::LockFree,
        sync: SyncMode::LockFree,
        ..base.clone()
    };
    push(lockfree.clone());
    push(PoolConfig {
        initial_size_bytes: 0,
        ..lockfree.clone()
    });
    push(PoolConfig {
        size_classes: SizeClasses {
            classes_per_doubling: 8,
            max_class_bytes: 32 * KIB,
        },
        ..lockfree
    });
    out
}

/// The GPU pool's space: device memory, fixed-size blocks (when the sizes allow) and
/// variable-size best/first fit, growth chunk size and factor, alignment, initial
/// reservation and return policy, around `PoolConfig::default_gpu()`.
pub fn gpu_candidates(shape: &TraceShape) -> Vec<PoolConfig> {
    let base = PoolConfig::default_gpu();
    let mut out: Vec<PoolConfig> = Vec::new();
    let mut push = |c: PoolConfig| {
        if c.validate().is_ok() && !out.contains(&c) {
            out.push(c);
        }
    };
    let mut kinds = vec![
        base.clone(),
        PoolConfig {
            fit: FitPolicy::FirstFit,
            ..base.clone()
        },
    ];
    if shape.fits_fixed_size() {
        let align = base.alignment.max(shape.largest_align) as u64;
        kinds.push(PoolConfig {
            allocator: AllocatorKind::FixedSize,
            block_size_bytes: (shape.max_size_bytes.div_ceil(align) * align) as usize,
            ..base.clone()
        });
    }
    for k in kinds {
        push(k.clone());
        for chunk in [64 * MIB, 512 * MIB] {
            push(PoolConfig {
                chunk_size_bytes: chunk,
                ..k.clone()
            });
        }
        push(PoolConfig {
            growth_factor: 1.0,
            chunk_size_bytes: 32 * MIB,
            ..k.clone()
        });
        push(PoolConfig {
            alignment: 512,
            ..k.clone()
        });
        push(PoolConfig {
            return_policy: ReturnPolicy::WhenEmpty,
            ..k.clone()
        });
    }
    out
}

/// Ops with `seq < events` of every thread: a valid trace on its own, since an op only
/// ever waits for ops with a smaller sequence number.
pub fn prefix(trace: &CompiledTrace, events: u64) -> CompiledTrace {
    if events >= trace.event_count {
        return trace.clone();
    }
    let threads = trace
        .threads
        .iter()
        .map(|t| {
            let n = t.ops.partition_point(|op| (op.seq as u64) < events);
            ThreadOps {
                trace_thread: t.trace_thread,
                ops: t.ops[..n].to_vec(),
                times_ns: t.times_ns.as_ref().map(|v| v[..n].to_vec()),
            }
        })
        .filter(|t| !t.ops.is_empty())
        .collect();
    CompiledTrace {
        threads,
        slot_count: trace.slot_count,
        event_count: events,
        streams: trace.streams.clone(),
        peak_live_bytes: trace.peak_live_bytes,
    }
}

/// Score of a measurement relative to the best figures of its round (higher is better).
pub fn score(m: &Measured, best: &Measured, objective: Objective) -> f64 {
    let (wt, wp, wm) = objective.weights();
    let ln_ratio = |a: f64, b: f64| (a.max(1e-9) / b.max(1e-9)).ln();
    wt * ln_ratio(m.ops_per_sec, best.ops_per_sec)
        - wp * ln_ratio(
            m.alloc_p99_ns.max(1) as f64,
            best.alloc_p99_ns.max(1) as f64,
        )
        - wm * ln_ratio(
            m.peak_reserved_bytes.max(1) as f64,
            best.peak_reserved_bytes.max(1) as f64,
        )
}

/// Best figure on each axis among `ms` (the reference `score` divides by).
fn best_of<'a>(ms: impl Iterator<Item = &'a Measured>) -> Measured {
    let mut best = Measured {
        ops_per_sec: 0.0,
        alloc_p99_ns: u64::MAX,
        peak_reserved_bytes: u64::MAX,
        alloc_failures: 0,
        events: 0,
        runs: 0,
    };
    for m in ms {
        best.ops_per_sec = best.ops_per_sec.max(m.ops_per_sec);
        best.alloc_p99_ns = best.alloc_p99_ns.min(m.alloc_p99_ns);
        best.peak_reserved_bytes = best.peak_reserved_bytes.min(m.peak_reserved_bytes);
    }
    best
}

/// Lower is simpler: the tie-breaker.
fn simplicity(c: &PoolConfig) -> (u8, usize, u8) {
    let kind = match c.allocator {
        AllocatorKind::FixedSize => 0,
        AllocatorKind::SizeClassed => 1,
        AllocatorKind::VariableSize => 2,
        AllocatorKind::LockFree => 3,
    };
    let extras = (c.huge_pages != HugePages::Off) as u8
        + (c.return_policy != ReturnPolicy::Keep) as u8
        + (c.alignment != PoolConfig::default_cpu().alignment) as u8;
    (kind, c.chunk_size_bytes, extras)
}

/// Order candidate indices best first: non-failing before failing, then score; among the
/// non-failing ones within `TIE_MARGIN` of the best score, the simplest first.
pub fn rank(cands: &[Candidate], objective: Objective) -> Vec<usize> {
    let measured: Vec<usize> = (0..cands.len())
        .filter(|&i| cands[i].measured.is_some())
        .collect();
    let best = best_of(measured.iter().filter_map(|&i| cands[i].measured.as_ref()));
    let scored = |i: usize| {
        let m = cands[i].measured.as_ref().expect("measured");
        (m.alloc_failures > 0, score(m, &best, objective))
    };
    let mut order = measured.clone();
    order.sort_by(|&a, &b| {
        let (fa, sa) = scored(a);
        let (fb, sb) = scored(b);
        fa.cmp(&fb).then(sb.total_cmp(&sa))
    });
    // Tie group at the top: the non-failing candidates within TIE_MARGIN of the leader.
    if let Some(&lead) = order.first() {
        let (lead_fails, lead_score) = scored(lead);
        let tied = order
            .iter()
            .take_while(|&&i| {
                let (f, s) = scored(i);
                f == lead_fails && lead_score - s <= TIE_MARGIN
            })
            .count();
        order[..tied].sort_by(|&a, &b| {
            simplicity(&cands[a].config)
                .cmp(&simplicity(&cands[b].config))
                .then(scored(b).1.total_cmp(&scored(a).1))
        });
    }
    order
}

/// Pareto front over (ops/s up, p99 down, reserved down) among `idx`.
pub fn pareto_front(cands: &[Candidate], idx: &[usize]) -> Vec<usize> {
    let m = |i: usize| cands[i].measured.expect("measured");
    idx.iter()
        .copied()
        .filter(|&i| {
            let a = m(i);
            !idx.iter().any(|&j| {
                let b = m(j);
                j != i
                    && b.ops_per_sec >= a.ops_per_sec
                    && b.alloc_p99_ns <= a.alloc_p99_ns
                    && b.peak_reserved_bytes <= a.peak_reserved_bytes
                    && (b.ops_per_sec > a.ops_per_sec
                        || b.alloc_p99_ns < a.alloc_p99_ns
                        || b.peak_reserved_bytes < a.peak_reserved_bytes)
            })
        })
        .collect()
}

/// Replays `trace` against one configuration.
pub trait Evaluator {
    fn evaluate(
        &mut self,
        config: &PoolConfig,
        trace: &CompiledTrace,
        runs: u32,
    ) -> anyhow::Result<Measured>;
}

/// The real evaluator: the `pool` backend through the replay engine.
pub struct ReplayEvaluator {
    pub path: String,
    pub sanitation: reports::Sanitation,
    pub threads: Option<usize>,
    /// `pool` (CPU), `gpu-pool` (real device) or `sim-gpu-pool` (simulated device).
    pub backend: &'static str,
    /// Size of the simulated device for `sim-gpu-pool`.
    pub simulate_gpu_bytes: Option<u64>,
}

impl Evaluator for ReplayEvaluator {
    fn evaluate(
        &mut self,
        config: &PoolConfig,
        trace: &CompiledTrace,
        runs: u32,
    ) -> anyhow::Result<Measured> {
        let backend = backends::find(self.backend)
            .with_context(|| format!("the `{}` backend is not registered", self.backend))?;
        let opts = ReplayOptions {
            backends: vec![self.backend.into()],
            simulate_gpu_bytes: self.simulate_gpu_bytes,
            config: config.clone(),
            config_source: "recommend candidate".into(),
            threads: self.threads,
            runs: runs as usize,
            warmup: 0,
            touch: Touch::First,
            pace: Pace::Max,
            quiet: true,
            ..ReplayOptions::default()
        };
        let input = TraceInput {
            path: &self.path,
            compiled: trace,
            sanitation: &self.sanitation,
        };
        // `replay_inputs_with` adds no backend of its own: only the one asked for runs.
        let artifacts = replay_inputs_with(&[input], &opts, &[backend])?;
        let r = &artifacts.results.traces[0].results[0];
        if r.status != reports::Status::Ok {
            bail!(
                "configuration [{}] could not be replayed: {}",
                config.summary(),
                r.reason.as_deref().unwrap_or("no reason given")
            );
        }
        Ok(Measured {
            ops_per_sec: r.ops_per_sec,
            alloc_p99_ns: r.latency_ns.alloc.p99,
            peak_reserved_bytes: r.peak_reserved_bytes,
            alloc_failures: r.alloc_failures,
            events: trace.event_count,
            runs,
        })
    }
}

/// The outcome of a search.
#[derive(Debug)]
pub struct Search {
    pub candidates: Vec<Candidate>,
    /// Candidate indices, best first, among those measured on the longest prefix reached.
    pub ranking: Vec<usize>,
    /// Events of the longest prefix every ranked candidate replayed.
    pub final_events: u64,
    pub rounds: usize,
    pub elapsed: Duration,
    pub budget_cut: bool,
}

/// Successive halving within `budget`. `on_step` sees (replays done, replays planned).
pub fn search(
    trace: &CompiledTrace,
    configs: Vec<PoolConfig>,
    objective: Objective,
    runs: u32,
    budget: Duration,
    eval: &mut dyn Evaluator,
    on_step: &mut dyn FnMut(usize, usize, &str),
) -> anyhow::Result<Search> {
    let started = Instant::now();
    let total_events = trace.event_count.max(1);
    let mut cands: Vec<Candidate> = configs
        .into_iter()
        .map(|config| Candidate {
            config,
            measured: None,
            eliminated_in_round: None,
        })
        .collect();
    if cands.is_empty() {
        bail!("no candidate configuration");
    }
    // Rounds: prefixes doubling from FIRST_PREFIX_EVENTS up to the whole trace.
    let mut prefixes = Vec::new();
    let mut p = FIRST_PREFIX_EVENTS.min(total_events);
    while p < total_events {
        prefixes.push(p);
        p = p.saturating_mul(4);
    }
    prefixes.push(total_events);
    // Survivors per round: halve until MIN_FINALISTS remain for the last round.
    let mut alive: Vec<usize> = (0..cands.len()).collect();
    // Cost model: seconds per (event x run), learned from the replays so far. A replay is a
    // throughput pass and a timed pass, so it costs about twice the events.
    let mut sec_per_event_run = 0.0f64;
    let mut measured_event_runs = 0.0f64;
    let mut seconds_spent = 0.0f64;
    let mut budget_cut = false;
    let mut final_events = 0;
    let mut rounds = 0;
    let planned_total: usize = {
        let mut n = alive.len();
        let mut total = 0;
        for (i, _) in prefixes.iter().enumerate() {
            total += n;
            if i + 1 < prefixes.len() {
                n = (n / 2).max(MIN_FINALISTS.min(n));
            }
        }
        total
    };
    let mut done = 0usize;
    for (round, &events) in prefixes.iter().enumerate() {
        let last = round + 1 == prefixes.len();
        let round_runs = if last { runs } else { 1 };
        let sub = prefix(trace, events);
        // Fit the round into what is left of the budget: drop the weakest if needed.
        let left = budget.as_secs_f64() - started.elapsed().as_secs_f64();
        if measured_event_runs > 0.0 {
            let per_candidate = sec_per_event_run * events as f64 * round_runs as f64;
            let affordable = (left / per_candidate.max(1e-9)).floor() as usize;
            if affordable == 0 {
                budget_cut = true;
                break;
            }
            if affordable < alive.len() {
                budget_cut = true;
                alive.truncate(affordable.max(1));
            }
        }
        for &i in &alive {
            if started.elapsed() >= budget && done > 0 {
                budget_cut = true;
                break;
            }
            on_step(done, planned_total, &cands[i].config.summary());
            let t0 = Instant::now();
            let m = eval.evaluate(&cands[i].config, &sub, round_runs)?;
            let dt = t0.elapsed().as_secs_f64();
            seconds_spent += dt;
            measured_event_runs += events as f64 * round_runs as f64;
            sec_per_event_run = seconds_spent / measured_event_runs;
            cands[i].measured = Some(m);
            done += 1;
        }
        // Every alive candidate measured on this prefix? Otherwise rank on the previous.
        let complete = alive
            .iter()
            .all(|&i| cands[i].measured.is_some_and(|m| m.events == events));
        if !complete {
            budget_cut = true;
            alive.retain(|&i| cands[i].measured.is_some_and(|m| m.events == events));
            if alive.is_empty() {
                break;
            }
        }
        final_events = events;
        rounds = round + 1;
        if last {
            break;
        }
        // Keep the better half (at least MIN_FINALISTS).
        let view: Vec<Candidate> = alive.iter().map(|&i| cands[i].clone()).collect();
        let order = rank(&view, objective);
        let keep = (alive.len() / 2).max(MIN_FINALISTS.min(alive.len()));
        let next: Vec<usize> = order[..keep].iter().map(|&k| alive[k]).collect();
        for &i in &alive {
            if !next.contains(&i) {
                cands[i].eliminated_in_round = Some(round);
            }
        }
        alive = next;
    }
    if final_events == 0 {
        bail!(
            "the budget ({:.0} s) ran out before any candidate finished a replay; give more --budget",
            budget.as_secs_f64()
        );
    }
    // Rank the candidates measured on the final prefix.
    let finalists: Vec<usize> = (0..cands.len())
        .filter(|&i| cands[i].measured.is_some_and(|m| m.events == final_events))
        .collect();
    let view: Vec<Candidate> = finalists.iter().map(|&i| cands[i].clone()).collect();
    let ranking = rank(&view, objective)
        .into_iter()
        .map(|k| finalists[k])
        .collect();
    Ok(Search {
        candidates: cands,
        ranking,
        final_events,
        rounds,
        elapsed: started.elapsed(),
        budget_cut,
    })
}

/// The ranking table, the Pareto front and a few sentences on why the winner won.
pub fn render(search: &Search, objective: Objective, trace_events: u64) -> String {
    let c = &search.candidates;
    let m = |i: usize| c[i].measured.expect("ranked candidates are measured");
    let front = pareto_front(c, &search.ranking);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "objective: {}; {} candidates, {} rounds, {:.1} s; ranked on {} of {} events{}",
        objective.as_str(),
        c.len(),
        search.rounds,
        search.elapsed.as_secs_f64(),
        search.final_events,
        trace_events,
        if search.budget_cut {
            " (budget reached: some replays were cut)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "{:>4}  {:<1} {:<58} {:>12} {:>10} {:>12} {:>8}",
        "rank", "", "configuration", "ops/s", "alloc p99", "reserved", "failures"
    );
    for (r, &i) in search.ranking.iter().enumerate() {
        let mm = m(i);
        let _ = writeln!(
            out,
            "{:>4}  {:<1} {:<58} {:>12.0} {:>8} ns {:>12} {:>8}",
            r + 1,
            if front.contains(&i) { "*" } else { "" },
            truncate(&c[i].config.summary(), 58),
            mm.ops_per_sec,
            mm.alloc_p99_ns,
            human_bytes(mm.peak_reserved_bytes),
            mm.alloc_failures
        );
    }
    let _ = writeln!(
        out,
        "* = on the Pareto front over (ops/s, alloc p99, reserved)"
    );
    out.push('\n');
    out.push_str(&explain(search, objective));
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// Why the winner won and what it gives up, in a few sentences.
pub fn explain(search: &Search, objective: Objective) -> String {
    let c = &search.candidates;
    let Some(&win) = search.ranking.first() else {
        return "No candidate finished.\n".into();
    };
    let w = c[win].measured.expect("measured");
    let mut s = String::new();
    if w.alloc_failures > 0 {
        let _ = writeln!(
            s,
            "Every candidate failed allocations on this trace; the winner failed {} — \
             raise the pool's max_size_bytes or the machine's memory before trusting it.",
            w.alloc_failures
        );
    }
    let others: Vec<usize> = search.ranking.iter().copied().skip(1).collect();
    let best_ops = search
        .ranking
        .iter()
        .map(|&i| c[i].measured.expect("m").ops_per_sec)
        .fold(0.0, f64::max);
    let best_p99 = search
        .ranking
        .iter()
        .map(|&i| c[i].measured.expect("m").alloc_p99_ns)
        .min()
        .unwrap_or(0);
    let best_res = search
        .ranking
        .iter()
        .map(|&i| c[i].measured.expect("m").peak_reserved_bytes)
        .min()
        .unwrap_or(0);
    let _ = write!(
        s,
        "Winner: {} — {:.0} ops/s, alloc p99 {} ns, {} reserved at peak.",
        c[win].config.summary(),
        w.ops_per_sec,
        w.alloc_p99_ns,
        human_bytes(w.peak_reserved_bytes)
    );
    if let Some(&second) = others.first() {
        let r = c[second].measured.expect("m");
        let _ = write!(
            s,
            " Against the runner-up ({}): {:+.1}% ops/s, {:+.1}% p99, {:+.1}% reserved.",
            c[second].config.summary(),
            pct(w.ops_per_sec, r.ops_per_sec),
            pct(w.alloc_p99_ns as f64, r.alloc_p99_ns as f64),
            pct(w.peak_reserved_bytes as f64, r.peak_reserved_bytes as f64)
        );
        let bs = best_of(
            search
                .ranking
                .iter()
                .map(|i| c[*i].measured.as_ref().expect("m")),
        );
        if (score(&w, &bs, objective) - score(&r, &bs, objective)).abs() <= TIE_MARGIN
            && w.alloc_failures == r.alloc_failures
        {
            let _ = write!(
                s,
                " The two are within the noise of one machine ({:.0}%); the simpler configuration is preferred.",
                TIE_MARGIN * 100.0
            );
        }
    }
    let mut trades = Vec::new();
    if w.ops_per_sec < best_ops * 0.97 {
        trades.push(format!(
            "{:.1}% of the best throughput",
            100.0 * w.ops_per_sec / best_ops.max(1e-9)
        ));
    }
    if best_p99 > 0 && w.alloc_p99_ns as f64 > best_p99 as f64 * 1.03 {
        trades.push(format!(
            "a p99 {:.2}x the lowest",
            w.alloc_p99_ns as f64 / best_p99 as f64
        ));
    }
    if best_res > 0 && w.peak_reserved_bytes as f64 > best_res as f64 * 1.03 {
        trades.push(format!(
            "{:.2}x the reserved memory of the leanest",
            w.peak_reserved_bytes as f64 / best_res as f64
        ));
    }
    if trades.is_empty() {
        let _ = writeln!(
            s,
            " It gives nothing up: it is at or within 3% of the best on every measure."
        );
    } else {
        let _ = writeln!(s, " It trades away: {}.", trades.join(", "));
    }
    s
}

fn pct(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        100.0 * (a - b) / b
    }
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
        ..Default::default()
    };
    let loaded = workloads::load_trace(&args.trace, &load)
        .with_context(|| format!("cannot load trace {}", args.trace.display()))?;
    let shape = TraceShape::of(&loaded.compiled);
    let device_trace = !loaded.compiled.streams.is_empty();
    let (configs, backend, simulate_gpu_bytes) = if args.simulate_gpu.is_some() || device_trace {
        match args.simulate_gpu {
            Some(bytes) => (gpu_candidates(&shape), "sim-gpu-pool", Some(bytes)),
            None if pools::gpu::cuda_available().is_ok() => {
                (gpu_candidates(&shape), "gpu-pool", None)
            }
            None => {
                let bytes = (2 * loaded.compiled.peak_live_bytes).max(1 << 30);
                eprintln!(
                    "replay recommend: the trace has stream ids and CUDA is not available: \
                     searching the GPU pool's space on a simulated device of {} \
                     (set the size with --simulate-gpu)",
                    human_bytes(bytes)
                );
                (gpu_candidates(&shape), "sim-gpu-pool", Some(bytes))
            }
        }
    } else {
        (candidates(&shape), "pool", None)
    };
    let mut eval = ReplayEvaluator {
        path: args.trace.display().to_string(),
        sanitation: sanitation_of(&loaded.sanitation),
        threads: args.threads.map(|t| t as usize),
        backend,
        simulate_gpu_bytes,
    };
    let bar =
        ProgressBar::with_draw_target(Some(configs.len() as u64), ProgressDrawTarget::hidden());
    if !args.quiet && std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {wide_msg}",
    ) {
        bar.set_style(style);
    }
    // The loading time counts against the budget too.
    let budget = Duration::from_secs_f64(args.budget).saturating_sub(started.elapsed());
    let result = search(
        &loaded.compiled,
        configs,
        args.objective,
        args.runs,
        budget,
        &mut eval,
        &mut |done, total, what| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(what.to_owned());
        },
    );
    bar.finish_and_clear();
    let search = result?;
    print!(
        "{}",
        render(&search, args.objective, loaded.compiled.event_count)
    );
    let winner = &search.candidates[search.ranking[0]].config;
    winner
        .save(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    if backend == "pool" {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(min: u64, max: u64, threads: usize) -> TraceShape {
        TraceShape {
            threads,
            min_size_bytes: min,
            max_size_bytes: max,
            events: 1000,
            largest_align: 0,
        }
    }

    #[test]
    fn candidates_validate_and_cover_every_kind() {
        let cs = candidates(&shape(64, 64, 2));
        assert!(cs.len() >= 15, "{} candidates", cs.len());
        for c in &cs {
            c.validate().unwrap();
        }
        for kind in [
            AllocatorKind::FixedSize,
            AllocatorKind::SizeClassed,
            AllocatorKind::VariableSize,
            AllocatorKind::LockFree,
        ] {
            assert!(cs.iter().any(|c| c.allocator == kind), "{kind:?} missing");
        }
        let fixed = cs
            .iter()
            .find(|c| c.allocator == AllocatorKind::FixedSize)
            .unwrap();
        assert!(fixed.block_size_bytes >= 64);
        assert!(cs.iter().all(|c| c.sync != SyncMode::SingleThreaded));
    }

    #[test]
    fn no_fixed_size_candidate_for_wide_size_ranges() {
        let cs = candidates(&shape(16, 100_000, 1));
        assert!(cs.iter().all(|c| c.allocator != AllocatorKind::FixedSize));
        assert!(cs
            .iter()
            .any(|c| c.sync == SyncMode::SingleThreaded
                && c.allocator == AllocatorKind::VariableSize));
    }

    #[test]
    fn gpu_candidates_are_device_configs() {
        let cs = gpu_candidates(&shape(1 << 20, 1 << 30, 2));
        assert!(cs.len() >= 8, "{} candidates", cs.len());
        for c in &cs {
            c.validate().unwrap();
            assert_eq!(c.memory_type, pools::MemoryType::Device);
            assert!(c.alignment >= 256);
        }
        assert!(cs.iter().any(|c| c.fit == FitPolicy::FirstFit));
        assert!(cs.iter().all(|c| c.allocator != AllocatorKind::FixedSize));
        let uniform = gpu_candidates(&shape(1 << 20, 1 << 20, 1));
        assert!(uniform
            .iter()
            .any(|c| c.allocator == AllocatorKind::FixedSize));
    }

    fn cand(kind: AllocatorKind, ops: f64, p99: u64, res: u64, fail: u64) -> Candidate {
        Candidate {
            config: PoolConfig {
                allocator: kind,
                sync: if kind == AllocatorKind::LockFree {
                    SyncMode::LockFree
                } else {
                    SyncMode::Mutex
                },
                ..PoolConfig::default_cpu()
            },
            measured: Some(Measured {
                ops_per_sec: ops,
                alloc_p99_ns: p99,
                peak_reserved_bytes: res,
                alloc_failures: fail,
                events: 10,
                runs: 1,
            }),
            eliminated_in_round: None,
        }
    }

    #[test]
    fn failing_candidates_never_win_unless_all_fail() {
        let cs = vec![
            cand(AllocatorKind::VariableSize, 1e9, 10, 1 << 20, 3),
            cand(AllocatorKind::SizeClassed, 1e6, 100, 1 << 24, 0),
        ];
        assert_eq!(rank(&cs, Objective::Throughput)[0], 1);
        let all_fail = vec![
            cand(AllocatorKind::VariableSize, 1e9, 10, 1 << 20, 3),
            cand(AllocatorKind::SizeClassed, 1e6, 100, 1 << 24, 1),
        ];
        let order = rank(&all_fail, Objective::Throughput);
        assert_eq!(order[0], 0);
    }

    #[test]
    fn objective_changes_the_winner() {
        let cs = vec![
            cand(AllocatorKind::LockFree, 2e7, 200, 64 << 20, 0),
            cand(AllocatorKind::VariableSize, 1e7, 100, 8 << 20, 0),
        ];
        assert_eq!(rank(&cs, Objective::Throughput)[0], 0);
        assert_eq!(rank(&cs, Objective::Memory)[0], 1);
        assert_eq!(rank(&cs, Objective::P99)[0], 1);
    }

    #[test]
    fn ties_go_to_the_simpler_configuration() {
        let cs = vec![
            cand(AllocatorKind::SizeClassed, 1.01e7, 100, 1 << 20, 0),
            cand(AllocatorKind::FixedSize, 1.00e7, 100, 1 << 20, 0),
        ];
        assert_eq!(rank(&cs, Objective::Balanced)[0], 1);
        // A clear win is not a tie.
        let cs = vec![
            cand(AllocatorKind::SizeClassed, 2e7, 100, 1 << 20, 0),
            cand(AllocatorKind::FixedSize, 1e7, 100, 1 << 20, 0),
        ];
        assert_eq!(rank(&cs, Objective::Balanced)[0], 0);
    }

    #[test]
    fn pareto_front_drops_dominated_points() {
        let cs = vec![
            cand(AllocatorKind::LockFree, 2e7, 200, 64 << 20, 0),
            cand(AllocatorKind::VariableSize, 1e7, 100, 8 << 20, 0),
            cand(AllocatorKind::SizeClassed, 0.5e7, 300, 80 << 20, 0),
        ];
        let front = pareto_front(&cs, &[0, 1, 2]);
        assert_eq!(front, vec![0, 1]);
    }

    /// An evaluator with a known answer: throughput falls with block waste.
    struct Model {
        calls: usize,
        delay: Duration,
    }

    impl Evaluator for Model {
        fn evaluate(
            &mut self,
            c: &PoolConfig,
            t: &CompiledTrace,
            runs: u32,
        ) -> anyhow::Result<Measured> {
            self.calls += 1;
            std::thread::sleep(self.delay);
            let ops = match c.allocator {
                AllocatorKind::FixedSize => 3e7,
                AllocatorKind::LockFree => 2.5e7,
                AllocatorKind::SizeClassed => 2e7,
                AllocatorKind::VariableSize => 1e7,
            };
            Ok(Measured {
                ops_per_sec: ops,
                alloc_p99_ns: 50,
                peak_reserved_bytes: c.chunk_size_bytes as u64,
                alloc_failures: 0,
                events: t.event_count,
                runs,
            })
        }
    }

    fn synthetic_trace(events: u32) -> CompiledTrace {
        use workloads::CompiledOp;
        let ops = (0..events)
            .map(|seq| CompiledOp {
                size: 64,
                seq,
                slot: 0,
                ordinal: seq,
                kind: if seq % 2 == 0 {
                    OpKind::Alloc
                } else {
                    OpKind::Free
                },
                flags: 0,
                stream: 0,
            })
            .collect();
        CompiledTrace {
            threads: vec![ThreadOps {
                trace_thread: 0,
                ops,
                times_ns: None,
            }],
            slot_count: 1,
            event_count: events as u64,
            streams: vec![],
            peak_live_bytes: 64,
        }
    }

    #[test]
    fn successive_halving_finds_the_model_winner() {
        let trace = synthetic_trace(200_000);
        let configs = candidates(&TraceShape::of(&trace));
        let n = configs.len();
        let mut model = Model {
            calls: 0,
            delay: Duration::ZERO,
        };
        let s = search(
            &trace,
            configs,
            Objective::Throughput,
            3,
            Duration::from_secs(60),
            &mut model,
            &mut |_, _, _| {},
        )
        .unwrap();
        let w = &s.candidates[s.ranking[0]];
        assert_eq!(w.config.allocator, AllocatorKind::FixedSize);
        assert_eq!(s.final_events, 200_000);
        assert!(s.ranking.len() >= MIN_FINALISTS);
        // Halving: far fewer replays than candidates x rounds.
        assert!(
            model.calls < n * s.rounds,
            "{} calls for {n} candidates",
            model.calls
        );
        assert!(!s.budget_cut);
        let text = render(&s, Objective::Throughput, 200_000);
        assert!(
            text.lines().any(|l| l.trim_start().starts_with("1 ")),
            "{text}"
        );
        assert!(text.contains("Winner:"));
    }

    #[test]
    fn budget_is_respected() {
        let trace = synthetic_trace(2_000_000);
        let configs = candidates(&TraceShape::of(&trace));
        let mut model = Model {
            calls: 0,
            delay: Duration::from_millis(40),
        };
        let budget = Duration::from_millis(500);
        let t0 = Instant::now();
        let s = search(
            &trace,
            configs,
            Objective::Balanced,
            3,
            budget,
            &mut model,
            &mut |_, _, _| {},
        );
        let spent = t0.elapsed();
        assert!(
            // The replay in flight when the budget runs out, on a loaded machine.
            spent < budget + Duration::from_millis(1000),
            "spent {spent:?}"
        );
        let s = s.unwrap();
        assert!(s.budget_cut);
        assert!(!s.ranking.is_empty());
    }

    #[test]
    fn prefix_keeps_only_earlier_ops() {
        let trace = synthetic_trace(100);
        let p = prefix(&trace, 10);
        assert_eq!(p.event_count, 10);
        assert_eq!(p.threads[0].ops.len(), 10);
        assert!(p.threads[0].ops.iter().all(|o| o.seq < 10));
    }
}
