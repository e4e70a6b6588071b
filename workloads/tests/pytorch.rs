//! The PyTorch memory snapshot importer: the shipped real snapshot, the sample one, the
//! mapping on hand-built snapshots, and malformed or hostile pickles.

use std::io::Write;
use std::path::{Path, PathBuf};

use workloads::{
    load_trace, read_events, read_events_with, trace_stats_with, FreeAt, LoadOptions, OpKind,
    ReadOptions, TraceError, TraceFormat,
};

/// The real snapshot of `../shared/traces/pytorch` (see its README), when present.
fn shipped_snapshot() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/traces/pytorch/gpt_train.pickle.gz");
    if p.is_file() {
        Some(p)
    } else {
        println!("skipped: {} is not here", p.display());
        None
    }
}

fn sample_snapshot() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/pytorch-sample.pickle.gz")
}

// ------------------------------------------------------------ a small pickle writer

/// Plain Python data, as a test writes it.
#[derive(Clone)]
enum Py {
    None,
    Int(i64),
    Str(String),
    List(Vec<Py>),
    Tuple(Vec<Py>),
    Dict(Vec<(String, Py)>),
}

fn s(v: &str) -> Py {
    Py::Str(v.into())
}

fn encode_into(v: &Py, out: &mut Vec<u8>) {
    match v {
        Py::None => out.push(b'N'),
        Py::Int(i) => {
            // LONG1 with 8 bytes: any i64.
            out.extend_from_slice(&[0x8a, 8]);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Py::Str(t) => {
            out.push(b'X');
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
        }
        Py::List(items) => {
            out.push(b']');
            if !items.is_empty() {
                out.push(b'(');
                for i in items {
                    encode_into(i, out);
                }
                out.push(b'e');
            }
        }
        Py::Tuple(items) => {
            out.push(b'(');
            for i in items {
                encode_into(i, out);
            }
            out.push(b't');
        }
        Py::Dict(items) => {
            out.push(b'}');
            if !items.is_empty() {
                out.push(b'(');
                for (k, v) in items {
                    encode_into(&s(k), out);
                    encode_into(v, out);
                }
                out.push(b'u');
            }
        }
    }
}

fn pickle(v: &Py) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    encode_into(v, &mut out);
    out.push(b'.');
    out
}

fn entry(action: &str, addr: i64, size: i64, stream: i64, time_us: i64) -> Py {
    Py::Dict(vec![
        ("action".into(), s(action)),
        ("addr".into(), Py::Int(addr)),
        ("size".into(), Py::Int(size)),
        ("stream".into(), Py::Int(stream)),
        ("time_us".into(), Py::Int(time_us)),
        ("compile_context".into(), s("N/A")),
        ("user_metadata".into(), s("")),
    ])
}

fn segment(address: i64, total: i64, stream: i64, blocks: Vec<(i64, i64, &str)>) -> Py {
    Py::Dict(vec![
        ("device".into(), Py::Int(0)),
        ("address".into(), Py::Int(address)),
        ("total_size".into(), Py::Int(total)),
        ("stream".into(), Py::Int(stream)),
        ("segment_type".into(), s("large")),
        (
            "segment_pool_id".into(),
            Py::Tuple(vec![Py::Int(0), Py::Int(0)]),
        ),
        (
            "blocks".into(),
            Py::List(
                blocks
                    .into_iter()
                    .map(|(a, size, state)| {
                        Py::Dict(vec![
                            ("address".into(), Py::Int(a)),
                            ("size".into(), Py::Int(size)),
                            ("requested_size".into(), Py::Int(size - 8)),
                            ("state".into(), s(state)),
                            ("frames".into(), Py::List(vec![])),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

fn snapshot(segments: Vec<Py>, traces: Vec<Vec<Py>>) -> Py {
    Py::Dict(vec![
        ("segments".into(), Py::List(segments)),
        (
            "device_traces".into(),
            Py::List(traces.into_iter().map(Py::List).collect()),
        ),
        ("allocator_settings".into(), Py::Dict(vec![])),
        ("external_annotations".into(), Py::List(vec![])),
    ])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn read_err(path: &Path) -> String {
    match read_events(path) {
        Ok(r) => match r.collect::<Result<Vec<_>, _>>() {
            Ok(_) => panic!("{} was read without an error", path.display()),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

// ------------------------------------------------------------ the real snapshot

#[test]
fn shipped_snapshot_counts_and_peaks() {
    let Some(path) = shipped_snapshot() else {
        return;
    };
    let r = read_events(&path).unwrap();
    assert_eq!(r.format(), TraceFormat::PyTorch);
    let s = r.snapshot().unwrap().clone();
    assert_eq!(s.entries, 14_019);
    assert_eq!(s.allocs, 4_656);
    assert_eq!(s.free_requested, 4_653);
    assert_eq!(s.free_completed, 4_650);
    assert_eq!(s.segment_events, 60);
    assert_eq!(s.ooms, 0);
    assert_eq!(s.streams, 2);
    assert_eq!(s.free_at, Some(FreeAt::Completed));
    assert!(!s.free_at_fallback && !s.truncated);
    assert_eq!(s.pre_recording_blocks, 0);
    assert_eq!(s.initial_reserved_bytes, 0);
    assert_eq!(
        s.peak_reserved_bytes, 2_799_697_920,
        "PyTorch's max_memory_reserved()"
    );
    let events: Vec<_> = r.map(Result::unwrap).collect();
    assert_eq!(
        events.iter().filter(|e| e.op == OpKind::Alloc).count(),
        4_656
    );
    assert_eq!(
        events.iter().filter(|e| e.op == OpKind::Free).count(),
        4_650
    );
    assert_eq!(
        events.iter().map(|e| e.thread).max(),
        Some(1),
        "one lane per stream"
    );

    let loaded = load_trace(&path, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.format, TraceFormat::PyTorch);
    assert_eq!(loaded.stats.peak_live_bytes, 2_627_450_888);
    assert_eq!(loaded.stats.leaks, 6);
    assert_eq!(loaded.sanitation.repaired, 0);
    assert_eq!(loaded.stats.streams.len(), 2);
    assert!(loaded.snapshot.is_some());

    // Freeing at free_requested frees earlier: the peak cannot be higher.
    let requested = ReadOptions {
        pytorch_free_at: FreeAt::Requested,
        ..ReadOptions::default()
    };
    let (_, stats, snap) = trace_stats_with(&path, false, &requested).unwrap();
    assert_eq!(snap.unwrap().free_at, Some(FreeAt::Requested));
    assert!(stats.peak_live_bytes <= 2_627_450_888);
    assert_eq!(stats.frees, 4_653);
}

#[test]
fn sample_snapshot_reads_clean() {
    let path = sample_snapshot();
    let loaded = load_trace(&path, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.format, TraceFormat::PyTorch);
    let s = loaded.snapshot.unwrap();
    assert!(s.allocs > 500, "{s:?}");
    assert_eq!(loaded.sanitation.repaired, 0);
    assert!(s.peak_reserved_bytes >= loaded.stats.peak_live_bytes);
    assert_eq!(s.streams, 2);
}

// ------------------------------------------------------------ the mapping

#[test]
fn mapping_of_every_action() {
    const MIB: i64 = 1 << 20;
    let seg_a = 0x7f00_0000_0000;
    let seg_b = 0x7f10_0000_0000;
    let old_seg = 0x7e00_0000_0000;
    let trace = vec![
        entry("snapshot", 0, 0, 0, 5),
        entry("segment_alloc", seg_a, 2 * MIB, 0, 10),
        entry("alloc", seg_a, 1000, 0, 11),
        // A block allocated before recording began, freed now.
        entry("free_requested", old_seg, 4096, 0, 12),
        entry("free_completed", old_seg, 4096, 0, 12),
        entry("oom", 0, 64 * MIB, 0, 13),
        entry("segment_alloc", seg_b, 20 * MIB, 7, 14),
        entry("alloc", seg_b, 5 * MIB, 7, 15),
        entry("free_requested", seg_b, 5 * MIB, 7, 16),
        entry("free_requested", seg_a, 1000, 0, 17),
        entry("free_completed", seg_a, 1000, 0, 18),
        entry("free_completed", seg_b, 5 * MIB, 7, 19),
        entry("segment_free", seg_b, 20 * MIB, 7, 20),
        // An annotation marker: no address, no size.
        Py::Dict(vec![("action".into(), s("user_defined"))]),
    ];
    let segments = vec![
        // Held before recording: its active block was allocated before recording too.
        segment(
            old_seg,
            2 * MIB,
            0,
            vec![
                (old_seg + 8192, 512, "active_allocated"),
                (old_seg, 4096, "inactive"),
            ],
        ),
        segment(seg_a, 2 * MIB, 0, vec![(seg_a, 2 * MIB, "inactive")]),
    ];
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "snap.pickle",
        &pickle(&snapshot(segments, vec![trace])),
    );
    let r = read_events(&p).unwrap();
    let s = r.snapshot().unwrap().clone();
    assert_eq!(r.alloc_failures(), 1);
    let events: Vec<_> = r.map(Result::unwrap).collect();
    // Pre-recording blocks come first: the freed one, then the active one (size
    // requested_size).
    assert_eq!(
        (events[0].op, events[0].ptr, events[0].size),
        (OpKind::Alloc, old_seg as u64, 4096)
    );
    assert_eq!(
        (events[1].op, events[1].ptr, events[1].size),
        (OpKind::Alloc, old_seg as u64 + 8192, 504)
    );
    assert_eq!(s.pre_recording_blocks, 2);
    assert_eq!(s.pre_recording_bytes, 4096 + 504);
    let ops: Vec<(OpKind, u64, u64)> = events[2..]
        .iter()
        .map(|e| (e.op, e.ptr, e.thread))
        .collect();
    assert_eq!(
        ops,
        vec![
            (OpKind::Alloc, seg_a as u64, 0),
            (OpKind::Free, old_seg as u64, 0),
            (OpKind::Alloc, seg_b as u64, 1),
            (OpKind::Free, seg_a as u64, 0),
            (OpKind::Free, seg_b as u64, 1),
        ],
        "frees at free_completed; stream 7 is lane 1"
    );
    assert_eq!(events[4].stream, Some(7));
    assert_eq!(events[4].time_ns, Some(15_000));
    assert_eq!(s.ooms, 1);
    assert!(!s.truncated);
    // Reserved: the old segment (no segment_alloc in the trace) from the start; seg_a
    // was created in the trace.
    assert_eq!(s.initial_reserved_bytes, 2 * MIB as u64);
    assert_eq!(s.peak_reserved_bytes, 24 * MIB as u64);
    assert_eq!(s.final_reserved_bytes, 4 * MIB as u64);
    assert_eq!(s.reserved_after(0), 2 * MIB as u64);
    assert_eq!(
        s.reserved_after(3),
        4 * MIB as u64,
        "seg_a came before event 3 (alloc)"
    );
    assert_eq!(s.reserved_after(5), 24 * MIB as u64);
    assert_eq!(s.reserved_after(7), 4 * MIB as u64);

    // free_requested: frees move earlier.
    let r = read_events_with(
        &p,
        &ReadOptions {
            pytorch_free_at: FreeAt::Requested,
            ..ReadOptions::default()
        },
    )
    .unwrap();
    let frees: Vec<u64> = r
        .map(Result::unwrap)
        .filter(|e| e.op == OpKind::Free)
        .map(|e| e.line)
        .collect();
    assert_eq!(
        frees,
        vec![4, 9, 10],
        "entry numbers of the free_requested records"
    );
}

#[test]
fn falls_back_to_free_requested_and_reports_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let only_requested = vec![
        entry("alloc", 0x1000, 512, 0, 1),
        entry("free_requested", 0x1000, 512, 0, 2),
    ];
    let p = write(
        dir.path(),
        "a.pickle",
        &pickle(&snapshot(vec![], vec![only_requested])),
    );
    let r = read_events(&p).unwrap();
    let s = r.snapshot().unwrap().clone();
    assert!(s.free_at_fallback);
    assert_eq!(s.free_at, Some(FreeAt::Requested));
    assert_eq!(
        r.filter(|e| e.as_ref().unwrap().op == OpKind::Free).count(),
        1
    );

    // The ring dropped the request of the first completion.
    let cut = vec![
        entry("free_completed", 0x2000, 512, 0, 1),
        entry("alloc", 0x1000, 512, 0, 2),
        entry("free_requested", 0x1000, 512, 0, 3),
        entry("free_completed", 0x1000, 512, 0, 4),
    ];
    let p = write(
        dir.path(),
        "b.pickle",
        &pickle(&snapshot(vec![], vec![cut])),
    );
    let s = read_events(&p).unwrap().snapshot().unwrap().clone();
    assert!(s.truncated);
    assert_eq!(s.pre_recording_blocks, 1);
}

#[test]
fn compressed_snapshots_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = pickle(&snapshot(
        vec![],
        vec![vec![entry("alloc", 0x1000, 512, 0, 1)]],
    ));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&bytes).unwrap();
    let gz_path = write(dir.path(), "x.pickle.gz", &gz.finish().unwrap());
    let zst_path = write(
        dir.path(),
        "x.zst",
        &zstd::encode_all(&bytes[..], 1).unwrap(),
    );
    for p in [gz_path, zst_path] {
        let r = read_events(&p).unwrap();
        assert_eq!(r.format(), TraceFormat::PyTorch);
        assert_eq!(r.count(), 1);
    }
}

#[test]
fn two_devices_merge_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "d.pickle",
        &pickle(&snapshot(
            vec![],
            vec![
                vec![
                    entry("alloc", 0x1000, 512, 0, 10),
                    entry("alloc", 0x2000, 512, 0, 30),
                ],
                vec![entry("alloc", 0x9000, 512, 0, 20)],
            ],
        )),
    );
    let r = read_events(&p).unwrap();
    let got: Vec<(u64, Option<u64>, u64)> = r
        .map(Result::unwrap)
        .map(|e| (e.ptr, e.device, e.thread))
        .collect();
    assert_eq!(
        got,
        vec![
            (0x1000, Some(0), 0),
            (0x9000, Some(1), 1),
            (0x2000, Some(0), 0)
        ]
    );
}

// ------------------------------------------------------------ malformed and hostile input

#[test]
fn malformed_snapshots_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = pickle(&snapshot(
        vec![],
        vec![vec![entry("alloc", 0x1000, 512, 0, 1)]],
    ));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "ends early"),
        (
            "toplevel",
            pickle(&Py::List(vec![Py::Int(1)])),
            "top level: a list, expected a dict",
        ),
        (
            "no_traces",
            pickle(&Py::Dict(vec![("segments".into(), Py::List(vec![]))])),
            "no 'device_traces'",
        ),
        (
            "no_size",
            pickle(&snapshot(
                vec![],
                vec![vec![Py::Dict(vec![
                    ("action".into(), s("alloc")),
                    ("addr".into(), Py::Int(4096)),
                ])]],
            )),
            "device_traces[0][0]: an 'alloc' entry without 'size'",
        ),
        (
            "bad_action",
            pickle(&snapshot(vec![], vec![vec![entry("alocate", 1, 1, 0, 0)]])),
            "unknown action 'alocate'",
        ),
        (
            "negative",
            pickle(&snapshot(vec![], vec![vec![entry("alloc", 4096, -5, 0, 0)]])),
            "'size' is negative (-5)",
        ),
        (
            "string_size",
            pickle(&snapshot(
                vec![],
                vec![vec![Py::Dict(vec![
                    ("action".into(), s("alloc")),
                    ("addr".into(), Py::Int(4096)),
                    ("size".into(), s("big")),
                ])]],
            )),
            "'size' is a str, expected an int",
        ),
        (
            "entry_not_dict",
            pickle(&snapshot(vec![], vec![vec![Py::None]])),
            "device_traces[0][0]: expected a dict, found a None",
        ),
        (
            "global",
            b"\x80\x02cos\nsystem\nq\x00X\x05\x00\x00\x00echo q\x01\x85q\x02Rq\x03.".to_vec(),
            "refused opcode GLOBAL: it imports 'os.system'",
        ),
        (
            "stack_global",
            b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x011\x94\x85\x94R\x94.".to_vec(),
            "refused opcode STACK_GLOBAL: it imports 'builtins.eval'",
        ),
        (
            "reduce",
            b"\x80\x04])R.".to_vec(),
            "refused opcode REDUCE",
        ),
        (
            "build",
            b"\x80\x04}}b.".to_vec(),
            "refused opcode BUILD",
        ),
        (
            "huge_string",
            b"\x80\x04\x8d\xff\xff\xff\xff\x00\x00\x00\x00".to_vec(),
            "the importer's limit",
        ),
    ];
    for (name, bytes, want) in cases {
        let p = write(dir.path(), &format!("{name}.pickle"), &bytes);
        let msg = read_err(&p);
        assert!(
            msg.contains(&p.display().to_string()),
            "{name}: no path in '{msg}'"
        );
        assert!(msg.contains(want), "{name}: '{msg}' lacks '{want}'");
    }
    // Through load_trace too, with the same message.
    let p = dir.path().join("global.pickle");
    let e = load_trace(&p, &LoadOptions::default()).unwrap_err();
    assert!(matches!(e, TraceError::Snapshot { .. }), "{e}");
}

#[test]
fn shared_entry_bomb_is_bounded() {
    // One entry dict with 100k keys, shared by 100k list items through the memo: reading
    // every item in full would be 10^10 steps; the importer stops with an error instead.
    let mut p = vec![0x80, 4, b'}', b'(']; // root dict
    p.extend_from_slice(b"X\x0d\x00\x00\x00device_traces");
    p.extend_from_slice(b"](]("); // device_traces = [[ ... ]]
    p.extend_from_slice(b"}("); // the shared entry
    p.extend_from_slice(b"\x8c\x06action\x8c\x05alloc\x8c\x04addrM\x00\x10\x8c\x04sizeM\x00\x02");
    for i in 0..100_000u32 {
        let k = format!("k{i}");
        p.push(0x8c);
        p.push(k.len() as u8);
        p.extend_from_slice(k.as_bytes());
        p.extend_from_slice(b"K\x01");
    }
    p.extend_from_slice(b"u\x94"); // memo 0 = the entry
    for _ in 0..100_000 {
        p.extend_from_slice(b"h\x00");
    }
    p.extend_from_slice(b"eeu.");
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bomb.pickle", &p);
    let started = std::time::Instant::now();
    let msg = read_err(&path);
    assert!(msg.contains("shares its containers"), "{msg}");
    assert!(started.elapsed().as_secs() < 30);
}

#[test]
fn mutated_snapshots_never_panic() {
    // The sample snapshot with bytes flipped, cut or duplicated at pseudo-random places:
    // every variant is read to its end or to an error, never a panic.
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(sample_snapshot()).unwrap()),
        &mut raw,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut ok, mut errors) = (0, 0);
    for i in 0..200 {
        let mut bytes = raw.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 3 {
                0 => bytes[at] = next() as u8,
                1 => bytes.truncate(at.max(3)),
                _ => {
                    let piece: Vec<u8> = bytes[at..(at + 16).min(bytes.len())].to_vec();
                    bytes.splice(at..at, piece);
                }
            }
        }
        let p = write(dir.path(), &format!("m{i}.pickle"), &bytes);
        match read_events(&p) {
            Ok(r) => match r.collect::<Result<Vec<_>, _>>() {
                Ok(_) => ok += 1,
                Err(_) => errors += 1,
            },
            Err(e) => {
                assert!(e.to_string().contains(&p.display().to_string()), "{e}");
                errors += 1
            }
        }
    }
    assert_eq!(ok + errors, 200);
    assert!(errors > 0);
}
