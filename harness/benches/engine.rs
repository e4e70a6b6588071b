//! Engine overhead, in release:
//! - `engine_overhead/system_replay` vs `engine_overhead/hand_loop`: the untimed
//!   (throughput) pass of the `system` backend over a single-threaded generated trace, and
//!   a minimal loop over the same compiled ops calling libc directly (target: within 10 %);
//! - `null/one_worker`: the `null` backend's events/s on one core (target: >= 100 M/s).
//!
//! The engine's figures are its own wall time per pass (see `pass_wall`); the hand loop is
//! timed around the loop alone, on a pool thread as the engine's worker is.
//!
//! `cargo bench -p harness --bench engine`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use harness::backends::null::NullBackend;
use harness::backends::system::SystemBackend;
use harness::engine::{run_pass, Pace, PassKind, ReplayPlan, Touch};
use harness::Backend;
use std::path::Path;
use std::time::{Duration, Instant};
use workloads::gen::{generate_vec, GenKind, GenParams};
use workloads::{CompiledOp, CompiledTrace, OpKind};

const EVENTS: u64 = 200_000;

fn single_threaded_trace(kind: GenKind) -> CompiledTrace {
    let params = GenParams {
        seed: 42,
        events: EVENTS,
        threads: 1,
    };
    workloads::compile(Path::new(kind.as_str()), generate_vec(kind, &params), false)
        .expect("generated traces compile")
}

/// The whole trace's ops in global order (one trace thread).
fn ops_in_order(trace: &CompiledTrace) -> Vec<CompiledOp> {
    let mut ops: Vec<CompiledOp> = trace.threads.iter().flat_map(|t| t.ops.clone()).collect();
    ops.sort_unstable_by_key(|op| op.seq);
    ops
}

/// The least a replay can do: one address per slot, libc called directly.
fn hand_loop(ops: &[CompiledOp], addrs: &mut [usize]) {
    for op in ops {
        let slot = &mut addrs[op.slot as usize];
        match op.kind {
            OpKind::Alloc => {
                // SAFETY: `malloc` has no preconditions.
                *slot = unsafe { libc::malloc(op.size as usize) } as usize;
            }
            OpKind::Free => {
                // SAFETY: `*slot` is the live block this slot's alloc returned (or null).
                unsafe { libc::free(*slot as *mut libc::c_void) };
                *slot = 0;
            }
            OpKind::Realloc => {
                // SAFETY: `*slot` is null or the slot's live block, taken over by realloc.
                *slot =
                    unsafe { libc::realloc(*slot as *mut libc::c_void, op.size as usize) } as usize;
            }
        }
    }
}

/// Total wall time of `iters` throughput passes as the engine measures it (from every
/// worker starting to the last finishing): what `replay` turns into ops/s. Waking the
/// worker thread is left out; on a machine shared with other jobs it can take longer than
/// the pass itself.
fn pass_wall<B: Backend>(backend: &B, plan: &ReplayPlan, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let outcome = run_pass(backend, plan, PassKind::Throughput, Touch::None, Pace::Max)
            .expect("the backend does not panic");
        total += Duration::from_nanos(outcome.wall_ns);
    }
    total
}

fn engine_overhead(c: &mut Criterion) {
    let trace = single_threaded_trace(GenKind::Larson);
    let plan = ReplayPlan::new(&trace, 1).expect("plan");
    let ops = ops_in_order(&trace);
    let mut group = c.benchmark_group("engine_overhead");
    group.throughput(Throughput::Elements(trace.event_count));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(8));
    // One backend for every iteration: both loops then run on the same warm malloc heap
    // (a fresh `SystemBackend` trims the heap, which would charge page faults to the engine).
    let backend = SystemBackend::new();
    group.bench_function("system_replay", |b| {
        b.iter_custom(|iters| pass_wall(&backend, &plan, iters))
    });
    // On a pool thread like the engine's worker, so both use a per-thread malloc arena.
    let worker = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one thread");
    group.bench_function("hand_loop", |b| {
        b.iter_custom(|iters| {
            worker.install(|| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut addrs = vec![0usize; trace.slot_count as usize];
                    let started = Instant::now();
                    hand_loop(&ops, &mut addrs);
                    total += started.elapsed();
                }
                total
            })
        })
    });
    group.finish();
}

fn null_backend(c: &mut Criterion) {
    let trace = single_threaded_trace(GenKind::Larson);
    let plan = ReplayPlan::new(&trace, 1).expect("plan");
    let mut group = c.benchmark_group("null");
    group.throughput(Throughput::Elements(trace.event_count));
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("one_worker", |b| {
        b.iter_custom(|iters| pass_wall(&NullBackend, &plan, iters))
    });
    group.finish();
}

criterion_group!(benches, engine_overhead, null_backend);
criterion_main!(benches);
