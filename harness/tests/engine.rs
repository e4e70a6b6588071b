//! Engine correctness: every block freed exactly once with the size it was allocated with,
//! cross-worker waits honoured, no deadlock with many trace threads on few workers,
//! failures counted, panics reported.

mod common;

use common::*;
use harness::engine::{
    replay_compiled, run_pass, EngineError, PassKind, PassOptions, ReplayPlan, Touch,
};
use harness::Backend;
use std::sync::atomic::Ordering;
use workloads::{CompiledOp, CompiledTrace, OpKind, ThreadOps};

fn op(seq: u32, slot: u32, ordinal: u32, kind: OpKind, size: u64, cross: bool) -> CompiledOp {
    CompiledOp {
        size,
        seq,
        slot,
        ordinal,
        kind,
        flags: CompiledOp::make_flags(cross, 0),
        stream: 0,
    }
}

/// Thread 0 allocates slots 0 and 1; thread 1 reallocs slot 0 and frees both.
fn hand_built() -> CompiledTrace {
    CompiledTrace {
        threads: vec![
            ThreadOps {
                trace_thread: 7,
                ops: vec![
                    op(0, 0, 0, OpKind::Alloc, 100, false),
                    op(1, 1, 0, OpKind::Alloc, 200, false),
                ],
                times_ns: None,
            },
            ThreadOps {
                trace_thread: 9,
                ops: vec![
                    op(2, 0, 1, OpKind::Realloc, 300, true),
                    op(3, 1, 1, OpKind::Free, 0, true),
                    op(4, 0, 2, OpKind::Free, 0, false),
                ],
                times_ns: None,
            },
        ],
        slot_count: 2,
        event_count: 5,
        streams: vec![],
        peak_live_bytes: 500,
    }
}

fn check_balanced(trace: &CompiledTrace, workers: usize) {
    let plan = ReplayPlan::new(trace, workers).unwrap();
    for kind in [PassKind::Throughput, PassKind::Timed] {
        let backend = CheckingBackend::new();
        let outcome = run_pass(&backend, &plan, kind, Touch::First, Default::default())
            .unwrap_or_else(|e| panic!("{workers} workers, {kind:?}: {e}"));
        assert_eq!(outcome.alloc_failures, 0);
        assert_eq!(outcome.leaked_blocks, 0);
        assert_eq!(backend.live_blocks(), 0, "every block freed");
        let allocs = backend.allocs.load(Ordering::Relaxed);
        let frees = backend.frees.load(Ordering::Relaxed);
        let reallocs = backend.reallocs.load(Ordering::Relaxed);
        let count = |k: OpKind| {
            trace
                .threads
                .iter()
                .flat_map(|t| &t.ops)
                .filter(|o| o.kind == k)
                .count() as u64
        };
        assert_eq!(allocs, count(OpKind::Alloc));
        assert_eq!(frees, count(OpKind::Free), "no free skipped or repeated");
        assert_eq!(reallocs, count(OpKind::Realloc));
        if kind == PassKind::Timed {
            let latency = outcome.latency.expect("timed pass records latency");
            assert_eq!(latency.alloc.len(), allocs);
            assert_eq!(latency.free.len(), frees);
            assert_eq!(latency.realloc.len(), reallocs);
        }
    }
}

#[test]
fn hand_built_trace_frees_every_block_once_on_one_and_two_workers() {
    let trace = hand_built();
    check_balanced(&trace, 1);
    check_balanced(&trace, 2);
    let plan = ReplayPlan::new(&trace, 2).unwrap();
    assert_eq!(plan.cross_worker_ops(), 2);
    assert_eq!(plan.peak_live_bytes(), 500);
}

#[test]
fn inconsistent_ordinals_are_rejected_not_replayed() {
    let mut trace = hand_built();
    trace.threads[1].ops[2].ordinal = 5;
    match ReplayPlan::new(&trace, 2) {
        Err(EngineError::InvalidTrace(msg)) => assert!(msg.contains("ordinal"), "{msg}"),
        other => panic!("expected InvalidTrace, got {:?}", other.map(|_| ())),
    }
    let mut trace = hand_built();
    trace.threads[1].ops[0].flags = 0;
    assert!(matches!(
        ReplayPlan::new(&trace, 2),
        Err(EngineError::InvalidTrace(_))
    ));
}

#[test]
fn generated_traces_with_many_threads_replay_on_one_and_two_workers() {
    for (name, events) in [
        ("producer-consumer", producer_consumer(16, 20_000, 1)),
        ("larson", larson(16, 20_000, 2)),
    ] {
        let trace = compile(events);
        assert_eq!(trace.threads.len(), 16, "{name}");
        for workers in [1, 2, 4] {
            let trace = trace.clone();
            with_timeout(120, move || check_balanced(&trace, workers));
        }
    }
}

#[test]
fn workload_generators_with_16_threads_replay_on_one_and_two_workers() {
    use workloads::gen::{generate_vec, GenKind, GenParams};
    for kind in [GenKind::Larson, GenKind::ProducerConsumer] {
        let params = GenParams {
            seed: 3,
            events: 30_000,
            threads: 16,
        };
        let trace = compile(generate_vec(kind, &params));
        assert!(
            trace.threads.len() >= 8,
            "{kind}: {} threads",
            trace.threads.len()
        );
        for workers in [1, 2] {
            let trace = trace.clone();
            with_timeout(120, move || check_balanced(&trace, workers));
        }
    }
}

#[test]
fn cross_worker_frees_wait_for_their_alloc() {
    // Every free in producer-consumer crosses threads; with 2 workers many cross workers.
    let trace = compile(producer_consumer(2, 50_000, 3));
    let plan = ReplayPlan::new(&trace, 2).unwrap();
    assert!(
        plan.cross_worker_ops() > 10_000,
        "{}",
        plan.cross_worker_ops()
    );
    for _ in 0..3 {
        let trace = trace.clone();
        with_timeout(120, move || check_balanced(&trace, 2));
    }
}

#[test]
fn failed_allocations_are_counted_and_their_frees_skipped() {
    let trace = compile(larson(4, 20_000, 4));
    let plan = ReplayPlan::new(&trace, 2).unwrap();
    let backend = LimitedBackend::new(8 * 1024);
    let outcome = run_pass(
        &backend,
        &plan,
        PassKind::Timed,
        Touch::None,
        Default::default(),
    )
    .expect("failures are not errors");
    assert!(outcome.alloc_failures > 0);
    assert_eq!(backend.inner.live_blocks(), 0);
    assert!(!outcome.memory_series.is_empty());
}

struct PanicsOnThirdFree(CheckingBackend);

impl Backend for PanicsOnThirdFree {
    fn alloc(&self, size: usize, align: usize, stream: u16) -> usize {
        self.0.alloc(size, align, stream)
    }
    unsafe fn free(&self, addr: usize, size: usize, stream: u16) {
        if self.0.frees.load(Ordering::Relaxed) == 2 {
            panic!("backend bug on the third free");
        }
        // SAFETY: forwarded contract: a live block of the inner backend.
        unsafe { self.0.free(addr, size, stream) }
    }
    unsafe fn realloc(
        &self,
        addr: usize,
        old: usize,
        new: usize,
        align: usize,
        stream: u16,
    ) -> usize {
        // SAFETY: forwarded contract: a live block of the inner backend.
        unsafe { self.0.realloc(addr, old, new, align, stream) }
    }
    fn address_space(&self) -> harness::AddressSpace {
        harness::AddressSpace::Device
    }
}

#[test]
fn a_panicking_backend_stops_every_worker_and_is_reported() {
    let trace = compile(producer_consumer(8, 10_000, 5));
    let plan = ReplayPlan::new(&trace, 2).unwrap();
    let result = with_timeout(120, move || {
        replay_compiled(
            || Ok(PanicsOnThirdFree(CheckingBackend::new())),
            &plan,
            &PassOptions::default(),
        )
        .map(|_| ())
    });
    match result {
        Err(EngineError::Panicked(msg)) => assert!(msg.contains("third free"), "{msg}"),
        other => panic!("expected Panicked, got {other:?}"),
    }
}

#[test]
fn a_run_measures_throughput_latency_and_memory() {
    // One worker: ops run in exactly the trace's global order, so the backend's live
    // bytes equal the trace's at every sample.
    let trace = compile(larson(4, 20_000, 6));
    let plan = ReplayPlan::new(&trace, 1).unwrap();
    let m = replay_compiled(
        || Ok(LimitedBackend::new(usize::MAX / 2)),
        &plan,
        &PassOptions::default(),
    )
    .unwrap();
    assert_eq!(m.events, trace.event_count);
    assert!(m.ops_per_sec > 0.0 && m.wall_ns > 0);
    assert_eq!(m.alloc_failures, 0);
    assert!(m.reserved_known);
    assert!(m.peak_reserved_bytes > 0 && m.peak_reserved_bytes <= trace.peak_live_bytes);
    let f = m.fragmentation.unwrap();
    assert!(f.abs() < 1e-9, "live == reserved here: {f}");
    assert!(m.memory_series.len() <= 500 && m.memory_series.len() >= 400);
    assert!(m.memory_series.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[test]
fn a_throughput_sample_repeats_the_trace_until_it_lasts_the_minimum() {
    let trace = compile(larson(2, 2_000, 8));
    let plan = ReplayPlan::new(&trace, 1).unwrap();
    let one = replay_compiled(
        || Ok(LimitedBackend::new(usize::MAX / 2)),
        &plan,
        &PassOptions::default(),
    )
    .unwrap();
    assert_eq!(one.throughput_passes, 1);
    let min_sample_ns = 30_000_000;
    let long = replay_compiled(
        || Ok(LimitedBackend::new(usize::MAX / 2)),
        &plan,
        &PassOptions {
            min_sample_ns,
            ..PassOptions::default()
        },
    )
    .unwrap();
    assert!(long.wall_ns >= min_sample_ns, "{}", long.wall_ns);
    assert!(long.throughput_passes > 1, "{}", long.throughput_passes);
    // ops/s counts every pass's events.
    let implied = long.ops_per_sec * long.wall_ns as f64 / 1e9;
    let events = trace.event_count as f64 * f64::from(long.throughput_passes);
    assert!(
        (implied - events).abs() < 1e-6 * events,
        "{implied} vs {events}"
    );
}

#[test]
fn paced_replay_takes_the_recorded_time() {
    // 2 000 events, 100 ns apart in the trace: 200 µs at 1x, 0.2 µs apart at 1000x.
    let trace = compile(producer_consumer(2, 2_000, 7));
    let plan = ReplayPlan::new(&trace, 1).unwrap();
    assert!(plan.has_times());
    let backend = CheckingBackend::new();
    let started = std::time::Instant::now();
    let outcome = run_pass(
        &backend,
        &plan,
        PassKind::Timed,
        Touch::None,
        "0.01x".parse().unwrap(),
    )
    .unwrap();
    // At 0.01x the ~200 µs trace takes ~20 ms.
    assert!(
        started.elapsed().as_millis() >= 15,
        "{:?}",
        started.elapsed()
    );
    assert!(outcome.wall_ns >= 15_000_000);
    // The throughput pass is never paced: it reads no clock per op.
    let backend = CheckingBackend::new();
    let outcome = run_pass(
        &backend,
        &plan,
        PassKind::Throughput,
        Touch::None,
        "0.01x".parse().unwrap(),
    )
    .unwrap();
    assert!(outcome.wall_ns < 15_000_000, "{} ns", outcome.wall_ns);
}

mod through_the_registry {
    use super::*;
    use harness::backends::{BackendFactory, BackendSelection, BackendSetup, RegisteredBackend};
    use harness::runner::{replay_inputs, ReplayOptions, TraceInput};
    use reports::{Sanitation, Status};

    struct PanickingFactory;

    impl BackendFactory for PanickingFactory {
        type Backend = PanicsOnThirdFree;
        fn name(&self) -> &'static str {
            "panics"
        }
        fn description(&self) -> &'static str {
            "panics on its third free"
        }
        fn create(&self, _: &BackendSetup) -> Result<PanicsOnThirdFree, String> {
            Ok(PanicsOnThirdFree(CheckingBackend::new()))
        }
        fn reserved_source(&self) -> &'static str {
            "none"
        }
    }

    struct UnavailableFactory;

    impl BackendFactory for UnavailableFactory {
        type Backend = CheckingBackend;
        fn name(&self) -> &'static str {
            "unavailable"
        }
        fn description(&self) -> &'static str {
            "never available"
        }
        fn check_available(&self, _: &BackendSetup) -> Result<(), harness::Unavailable> {
            Err(harness::Unavailable("no such device".into()))
        }
        fn create(&self, _: &BackendSetup) -> Result<CheckingBackend, String> {
            unreachable!("an unavailable backend is never created")
        }
        fn reserved_source(&self) -> &'static str {
            "none"
        }
    }

    #[test]
    fn a_panicking_backend_is_failed_and_the_others_still_run() {
        let trace = compile(producer_consumer(4, 5_000, 8));
        let replayed = trace.clone();
        let artifacts = with_timeout(120, move || {
            let sanitation = Sanitation::default();
            let input = TraceInput {
                path: "generated",
                compiled: &replayed,
                sanitation: &sanitation,
            };
            let backends: Vec<&'static dyn RegisteredBackend> = vec![
                &PanickingFactory,
                &UnavailableFactory,
                harness::backends::find("null").unwrap(),
            ];
            let opts = ReplayOptions {
                backends: BackendSelection::of(backends),
                runs: 2,
                threads: Some(2),
                quiet: true,
                ..ReplayOptions::default()
            };
            replay_inputs(&[input], &opts).unwrap()
        });
        let results = &artifacts.results.traces[0].results;
        assert_eq!(results[0].status, Status::Failed);
        assert!(results[0].reason.as_deref().unwrap().contains("third free"));
        assert_eq!(results[1].status, Status::Skipped);
        assert_eq!(results[1].reason.as_deref(), Some("no such device"));
        assert_eq!(results[2].status, Status::Ok);
        assert_eq!(results[2].runs.len(), 2);
        assert_eq!(
            results[2].latency_ns.alloc.count,
            2 * trace
                .threads
                .iter()
                .flat_map(|t| &t.ops)
                .filter(|o| o.kind == OpKind::Alloc)
                .count() as u64,
            "merged over runs, not averaged"
        );
    }
}
