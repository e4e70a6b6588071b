//! Generators: deterministic per seed, valid (no repairs, no leaks), timed, shaped as
//! their names say.

use workloads::gen::{generate_vec, GenKind, GenParams};
use workloads::{trace_stats, Compiler, OpKind, Sanitizer};

fn params(seed: u64, events: u64, threads: u32) -> GenParams {
    GenParams {
        seed,
        events,
        threads,
    }
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    for kind in GenKind::ALL {
        let a = generate_vec(kind, &params(42, 5_000, 4));
        let b = generate_vec(kind, &params(42, 5_000, 4));
        let c = generate_vec(kind, &params(43, 5_000, 4));
        assert_eq!(a, b, "{kind}");
        assert_ne!(a, c, "{kind}");
    }
}

#[test]
fn every_generated_trace_is_valid_timed_and_near_its_budget() {
    for kind in GenKind::ALL {
        for threads in [1, 2, 4, 8] {
            let events = generate_vec(kind, &params(7, 20_000, threads));
            assert!(
                (20_000..=20_004).contains(&(events.len() as u64)),
                "{kind}/{threads}: {} events",
                events.len()
            );
            let mut sanitizer = Sanitizer::new("gen".as_ref(), true);
            let mut compiler = Compiler::new("gen".as_ref(), true);
            let mut last_time = 0;
            for e in &events {
                let t = e.time_ns.expect("time_ns on every event");
                assert!(t >= last_time, "{kind}: time goes back");
                last_time = t;
                assert!(e.thread < threads as u64);
                sanitizer
                    .process(*e, &mut |clean| compiler.push(&clean).unwrap())
                    .unwrap_or_else(|err| panic!("{kind}/{threads}: {err}"));
            }
            let report = sanitizer.finish();
            assert_eq!(report, Default::default(), "{kind}/{threads}");
            let compiled = compiler.finish();
            assert_eq!(compiled.event_count, events.len() as u64);
            assert!(compiled.threads.iter().all(|t| t.times_ns.is_some()));
        }
    }
}

#[test]
fn shapes_match_their_names() {
    let p = params(3, 30_000, 4);
    let churn = trace_stats(&generate_vec(GenKind::FixedChurn, &p));
    assert_eq!(churn.size_histogram.len(), 1, "one size");
    assert_eq!(churn.cross_thread_frees, 0);

    let larson = trace_stats(&generate_vec(GenKind::Larson, &p));
    assert!(larson.cross_thread_frees > 0, "arrays move between threads");
    assert!(larson.cross_thread_frees < larson.frees);

    let pc = trace_stats(&generate_vec(GenKind::ProducerConsumer, &p));
    assert_eq!(
        pc.cross_thread_frees, pc.frees,
        "consumers free what producers made"
    );

    let mix = trace_stats(&generate_vec(GenKind::SizeMix, &p));
    assert!(mix.reallocs > 0);
    assert!(mix.size_histogram.len() >= 10, "log-normal spread");
    assert!(mix.max_size_bytes > 20_000 && mix.min_size_bytes < 16);

    let gpu_events = generate_vec(GenKind::GpuTraining, &params(3, 30_000, 3));
    let gpu = trace_stats(&gpu_events);
    assert!(gpu.min_size_bytes >= 512 && gpu.max_size_bytes >= 64 << 20);
    assert!(gpu.peak_live_bytes > 1 << 30, "GiB-scale peak");
    assert_eq!(gpu.streams.len(), 3);
    assert!(
        gpu.cross_thread_frees > 0,
        "loader thread's batches freed by the trainer"
    );
    assert!(gpu_events
        .iter()
        .all(|e| e.op == OpKind::Free || e.align == 256));
    // Weights are allocated once, first, and freed last, in reverse.
    let first = gpu_events[0];
    let last = gpu_events.last().unwrap();
    assert_eq!(
        (first.op, last.op, last.ptr),
        (OpKind::Alloc, OpKind::Free, first.ptr)
    );
    let frees_of_first = gpu_events
        .iter()
        .filter(|e| e.op == OpKind::Free && e.ptr == first.ptr)
        .count();
    assert_eq!(frees_of_first, 1);
}

#[test]
fn kind_names_round_trip() {
    for kind in GenKind::ALL {
        assert_eq!(kind.as_str().parse::<GenKind>().unwrap(), kind);
    }
    let err = "larsen".parse::<GenKind>().unwrap_err();
    assert!(
        err.contains("unknown workload 'larsen'") && err.contains("gpu-training"),
        "{err}"
    );
}
