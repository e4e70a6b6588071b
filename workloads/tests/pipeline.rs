//! Sanitation, compilation and statistics on small hand-written traces with known answers.

use std::path::{Path, PathBuf};

use workloads::{
    load_trace, CompiledOp, CompiledTrace, LoadOptions, LoadedTrace, OpKind, TraceError,
};

fn csv(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("t.csv");
    std::fs::write(
        &path,
        format!("thread,time_ns,op,ptr,size,old_ptr,stream,align\n{body}"),
    )
    .unwrap();
    path
}

fn load(body: &str) -> LoadedTrace {
    let dir = tempfile::tempdir().unwrap();
    load_trace(&csv(dir.path(), body), &LoadOptions::default()).unwrap()
}

fn load_strict(body: &str) -> TraceError {
    let dir = tempfile::tempdir().unwrap();
    let p = csv(dir.path(), body);
    let err = load_trace(
        &p,
        &LoadOptions {
            strict: true,
            keep_times: false,
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}:", p.display())));
    err
}

/// All ops in global order, with their trace thread.
fn global(c: &CompiledTrace) -> Vec<(u64, CompiledOp)> {
    let mut all: Vec<(u64, CompiledOp)> = c
        .threads
        .iter()
        .flat_map(|t| t.ops.iter().map(move |op| (t.trace_thread, *op)))
        .collect();
    all.sort_by_key(|(_, op)| op.seq);
    all
}

#[test]
fn compiled_op_is_24_bytes() {
    assert_eq!(std::mem::size_of::<CompiledOp>(), 24);
}

// ---- sanitation ----

#[test]
fn clean_trace_needs_no_repair() {
    let t = load("0,1,alloc,0x10,8,,,\n0,2,free,0x10,,,,\n");
    assert_eq!(t.sanitation, Default::default());
    assert!(t.sanitation.is_clean());
}

#[test]
fn alloc_of_live_pointer_frees_the_old_block_first() {
    let t = load("0,1,alloc,0x10,8,,,\n1,2,alloc,0x10,16,,,\n1,3,free,0x10,,,,\n");
    let s = t.sanitation;
    assert_eq!((s.live_reallocations, s.repaired, s.leaks), (1, 1, 0));
    let kinds: Vec<(u64, OpKind, u64)> = global(&t.compiled)
        .iter()
        .map(|(th, op)| (*th, op.kind, op.size))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (0, OpKind::Alloc, 8),
            (1, OpKind::Free, 0),
            (1, OpKind::Alloc, 16),
            (1, OpKind::Free, 0)
        ]
    );
    let e = load_strict("0,1,alloc,0x10,8,,,\n1,2,alloc,0x10,16,,,\n");
    assert_eq!(
        e.to_string().split_once(':').unwrap().1,
        "3: alloc of still-live pointer 0x10 (--strict)"
    );
}

#[test]
fn unknown_and_double_frees_are_dropped() {
    let t = load("0,1,free,0x99,,,,\n0,2,alloc,0x10,8,,,\n0,3,free,0x10,,,,\n0,4,free,0x10,,,,\n");
    let s = t.sanitation;
    assert_eq!((s.unknown_frees, s.double_frees, s.repaired), (1, 1, 2));
    assert_eq!(t.compiled.event_count, 2);
    assert_eq!(t.stats.events, 2);
    let e = load_strict("0,1,alloc,0x10,8,,,\n0,2,free,0x10,,,,\n0,3,free,0x10,,,,\n");
    assert_eq!(e.line(), Some(4));
    assert!(
        e.to_string()
            .ends_with(":4: double free of pointer 0x10 (--strict)"),
        "{e}"
    );
    let e = load_strict("0,1,free,0xabc,,,,\n");
    assert!(
        e.to_string()
            .ends_with(":2: free of unknown pointer 0xabc (--strict)"),
        "{e}"
    );
}

#[test]
fn realloc_of_unknown_pointer_is_a_fresh_alloc() {
    let t = load("0,1,realloc,0x20,64,0x10,,\n0,2,free,0x20,,,,\n");
    let s = t.sanitation;
    assert_eq!((s.unknown_reallocs, s.repaired, s.leaks), (1, 1, 0));
    let ops = global(&t.compiled);
    assert_eq!(ops[0].1.kind, OpKind::Realloc);
    assert_eq!(ops[0].1.ordinal, 0, "a new slot");
    let e = load_strict("0,1,realloc,0x20,64,0x10,,\n");
    assert!(
        e.to_string()
            .ends_with(":2: realloc of unknown pointer 0x10 (--strict)"),
        "{e}"
    );
}

#[test]
fn leaks_are_counted_not_repaired() {
    let t = load("0,1,alloc,0x10,8,,,\n0,2,alloc,0x20,8,,,\n0,3,free,0x10,,,,\n");
    assert_eq!((t.sanitation.leaks, t.sanitation.repaired), (1, 0));
    assert_eq!((t.stats.leaks, t.stats.leaked_bytes), (1, 8));
}

// ---- compiler ----

#[test]
fn slots_are_dense_and_reused_after_free() {
    let t = load(
        "0,1,alloc,0xa,8,,,\n0,2,alloc,0xb,8,,,\n0,3,free,0xa,,,,\n0,4,alloc,0xc,8,,,\n\
         0,5,free,0xb,,,,\n0,6,free,0xc,,,,\n",
    );
    let c = &t.compiled;
    assert_eq!(c.slot_count, 2);
    let slots: Vec<(u32, u32)> = global(c)
        .iter()
        .map(|(_, op)| (op.slot, op.ordinal))
        .collect();
    assert_eq!(slots, vec![(0, 0), (1, 0), (0, 1), (0, 2), (1, 1), (0, 3)]);
    let seqs: Vec<u32> = global(c).iter().map(|(_, op)| op.seq).collect();
    assert_eq!(seqs, (0..6).collect::<Vec<_>>());
}

#[test]
fn cross_thread_flag_marks_ops_whose_predecessor_ran_elsewhere() {
    let t = load(
        "0,1,alloc,0xa,8,,,\n1,2,realloc,0xb,16,0xa,,\n1,3,free,0xb,,,,\n0,4,alloc,0xc,8,,,\n",
    );
    let ops = global(&t.compiled);
    let summary: Vec<(u64, OpKind, u32, u32, bool)> = ops
        .iter()
        .map(|(th, op)| (*th, op.kind, op.slot, op.ordinal, op.cross_thread()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, OpKind::Alloc, 0, 0, false),
            // realloc keeps the block's slot; its predecessor (the alloc) ran on thread 0
            (1, OpKind::Realloc, 0, 1, true),
            (1, OpKind::Free, 0, 2, false),
            // thread 0 reuses the slot thread 1 freed: it must wait for that free
            (0, OpKind::Alloc, 0, 3, true),
        ]
    );
    assert_eq!(t.compiled.threads.len(), 2);
    assert_eq!(t.compiled.threads[0].trace_thread, 0);
    assert_eq!(t.compiled.threads[1].ops.len(), 2);
}

#[test]
fn a_thread_reuses_its_own_freed_slots_first() {
    // Thread 1 frees slot 0 (block 0xa) and thread 0 frees slot 1 (block 0xb); each then
    // allocates again and gets back the slot it freed itself.
    let t = load(
        "0,1,alloc,0xa,8,,,\n0,2,alloc,0xb,8,,,\n1,3,free,0xa,,,,\n0,4,free,0xb,,,,\n\
         0,5,alloc,0xc,8,,,\n1,6,alloc,0xd,8,,,\n",
    );
    let ops = global(&t.compiled);
    assert_eq!((ops[4].1.slot, ops[4].1.cross_thread()), (1, false));
    assert_eq!((ops[5].1.slot, ops[5].1.cross_thread()), (0, false));
    assert_eq!(t.compiled.slot_count, 2);
}

#[test]
fn streams_alignment_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let p = csv(
        dir.path(),
        "0,100,alloc,0xa,8,,,64\n0,200,alloc,0xb,8,,0x7,\n0,300,free,0xa,,,0x9,\n0,400,free,0xb,,,0x7,\n",
    );
    let t = load_trace(
        &p,
        &LoadOptions {
            strict: false,
            keep_times: true,
            ..Default::default()
        },
    )
    .unwrap();
    let c = &t.compiled;
    // The first op had no stream: it is on the default stream 0, index 0.
    assert_eq!(c.streams, vec![0, 7, 9]);
    let streams: Vec<u16> = global(c).iter().map(|(_, op)| op.stream).collect();
    assert_eq!(streams, vec![0, 1, 2, 1]);
    assert_eq!(global(c)[0].1.align(), 64);
    assert_eq!(global(c)[1].1.align(), 0);
    assert_eq!(
        c.threads[0].times_ns.as_deref(),
        Some(&[100, 200, 300, 400][..])
    );
    let t = load_trace(&p, &LoadOptions::default()).unwrap();
    assert!(
        t.compiled.threads[0].times_ns.is_none(),
        "times only when asked"
    );
    let t = load("0,,alloc,0xa,8,,,\n");
    assert!(t.compiled.streams.is_empty());
}

#[test]
fn compiler_rejects_unsanitised_input_without_panicking() {
    use workloads::{compile, Event};
    let free = Event {
        thread: 0,
        time_ns: None,
        op: OpKind::Free,
        ptr: 0x10,
        size: 0,
        align: 0,
        old_ptr: 0,
        stream: None,
        device: None,
        line: 9,
    };
    let err = compile(Path::new("x.csv"), [free], false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "x.csv:9: bad ptr '0x10': free of a pointer that is not live (the compiler needs a sanitised trace)"
    );
}

// ---- statistics ----

#[test]
fn peak_live_bytes_counts_realloc_as_release_then_new() {
    // live: 100 -> 300 -> realloc(100 -> 50): 250 -> free 200: 50 -> alloc 120: 170
    let t = load(
        "0,1,alloc,0xa,100,,,\n0,2,alloc,0xb,200,,,\n0,3,realloc,0xc,50,0xa,,\n\
         0,4,free,0xb,,,,\n0,5,alloc,0xd,120,,,\n0,6,free,0xc,,,,\n0,7,free,0xd,,,,\n",
    );
    assert_eq!(t.stats.peak_live_bytes, 300);
    assert_eq!(t.compiled.peak_live_bytes, 300);
    assert_eq!(t.stats.peak_live_blocks, 2);
    // Growing realloc: 100 -> realloc to 1000 counts 1000, not 1100.
    let t = load("0,1,alloc,0xa,100,,,\n0,2,realloc,0xb,1000,0xa,,\n");
    assert_eq!(t.stats.peak_live_bytes, 1000);
    assert_eq!(t.compiled.peak_live_bytes, 1000);
}

#[test]
fn cross_thread_frees_count_frees_and_reallocs_of_other_threads_blocks() {
    let t = load(
        "0,1,alloc,0xa,8,,,\n0,2,alloc,0xb,8,,,\n1,3,free,0xa,,,,\n\
         1,4,realloc,0xc,16,0xb,,\n1,5,realloc,0xd,32,0xc,,\n2,6,free,0xd,,,,\n",
    );
    let s = &t.stats;
    // free 0xa by 1 (alloc 0): yes; realloc 0xb by 1: yes; realloc 0xc by 1 (made by 1): no;
    // free 0xd by 2 (made by 1): yes.
    assert_eq!(s.cross_thread_frees, 3);
    let per: Vec<(u64, u64, u64, u64, u64)> = s
        .per_thread
        .iter()
        .map(|t| {
            (
                t.thread,
                t.allocs,
                t.frees,
                t.reallocs,
                t.cross_thread_frees,
            )
        })
        .collect();
    assert_eq!(per, vec![(0, 2, 0, 0, 0), (1, 0, 1, 2, 2), (2, 0, 1, 0, 1)]);
    assert_eq!(
        (s.events, s.allocs, s.frees, s.reallocs, s.threads),
        (6, 2, 2, 2, 3)
    );
}

#[test]
fn size_histogram_uses_log2_buckets() {
    let t = load(
        "0,1,alloc,0xa,0,,,\n0,2,alloc,0xb,1,,,\n0,3,alloc,0xc,2,,,\n0,4,alloc,0xd,3,,,\n\
         0,5,alloc,0xe,1024,,,\n0,6,realloc,0xf,2047,0xe,,\n",
    );
    let h: Vec<(u64, u64, u64)> = t
        .stats
        .size_histogram
        .iter()
        .map(|b| (b.min_bytes, b.max_bytes, b.count))
        .collect();
    assert_eq!(h, vec![(0, 0, 1), (1, 1, 1), (2, 3, 2), (1024, 2047, 2)]);
    assert_eq!((t.stats.min_size_bytes, t.stats.max_size_bytes), (0, 2047));
    assert_eq!(t.stats.leaks, 5);
    assert_eq!(t.stats.duration_ns, Some(5));
}

#[test]
fn stats_serialise_with_the_documented_names() {
    let t = load("0,1,alloc,0xa,8,,0x2,\n1,2,free,0xa,,,0x2,\n");
    let v = serde_json::to_value(&t.stats).unwrap();
    for key in [
        "events",
        "allocs",
        "frees",
        "reallocs",
        "threads",
        "peak_live_bytes",
        "cross_thread_frees",
        "leaks",
        "size_histogram",
        "per_thread",
        "streams",
        "sanitation",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    assert_eq!(v["streams"][0]["stream"], 2);
    assert_eq!(v["streams"][0]["events"], 2);
    assert_eq!(v["sanitation"]["unknown_frees"], 0);
    assert_eq!(v["cross_thread_frees"], 1);
}

#[test]
fn load_trace_stats_equal_the_standalone_collector() {
    // load_trace takes block bookkeeping from the compiler; trace_stats_of keeps its own.
    use workloads::gen::{generate, GenKind, GenParams};
    use workloads::{trace_stats_of, CsvWriter};
    let dir = tempfile::tempdir().unwrap();
    let mut cross_thread_frees = 0;
    for kind in GenKind::ALL {
        let path = dir.path().join(format!("{kind}.csv"));
        let mut w = CsvWriter::new(std::fs::File::create(&path).unwrap()).unwrap();
        let params = GenParams {
            seed: 5,
            events: 20_000,
            threads: 5,
        };
        generate(kind, &params, &mut |e| w.write(&e).unwrap());
        w.finish().unwrap();
        let loaded = load_trace(&path, &LoadOptions::default()).unwrap();
        assert_eq!(
            loaded.stats,
            trace_stats_of(&path, false).unwrap().1,
            "{kind}"
        );
        cross_thread_frees += loaded.stats.cross_thread_frees;
    }
    assert!(cross_thread_frees > 0);
    // A trace that needs every repair, and leaks.
    let body = "0,1,free,0x99,,,,\n0,2,alloc,0x10,8,,,\n1,3,alloc,0x10,16,,,\n\
                1,4,free,0x10,,,,\n1,5,free,0x10,,,,\n0,6,realloc,0x20,64,0x30,,\n\
                1,7,realloc,0x40,32,0x20,,\n0,8,alloc,0x50,5,,,\n";
    let path = csv(dir.path(), body);
    let loaded = load_trace(&path, &LoadOptions::default()).unwrap();
    let standalone = trace_stats_of(&path, false).unwrap().1;
    assert_eq!(loaded.stats, standalone);
    assert_eq!((standalone.leaks, standalone.leaked_bytes), (2, 37));
    assert_eq!(standalone.cross_thread_frees, 2);
}
