//! The recorders, end to end: the LD_PRELOAD library (found or built as `replay record`
//! does) on real programs (this test binary
//! re-run as a child with a workload named on its command line, and python3), and
//! `RecordingAlloc` as this binary's global allocator (recording only in a child that names
//! a trace file in `RUST_TRACE_ENV`).
//!
//! Traces are read back with the project's own loader: `load_trace` (sanitation must repair
//! nothing) and `read_ordered_events` (the global order replay uses).

use std::alloc::System;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use harness::commands::record::find_or_build_preload;
use workloads::record::{record_command, RecordingAlloc};
use workloads::{load_trace, read_ordered_events, Event, LoadOptions, OpKind};

const RUST_TRACE_ENV: &str = "POOLBENCH_TEST_RUST_TRACE";

#[global_allocator]
static GLOBAL: RecordingAlloc<System> = RecordingAlloc::from_env(System, RUST_TRACE_ENV);

/// First argument that makes this binary run a child workload instead of the tests.
const CHILD_FLAG: &str = "--poolbench-record-child";

// Sizes that nothing else in these processes asks for, so rows can be counted exactly.
const THREAD_BLOCK: usize = 4242;
const THREAD_LEAK: usize = 4343;
const MAIN_BLOCK: usize = 5555;
const LOOP_BLOCK: usize = 3333;
const HANDOFF_BLOCK: usize = 100_000;
const HANDOFF_GROWN: usize = 120_000;
const RUST_BLOCK: usize = 777;

const THREADS: usize = 6;
const BLOCKS_PER_THREAD: usize = 2000;
const LEAKS_PER_THREAD: usize = 3;
const MAIN_BLOCKS: usize = 3000;
const HANDOFFS: usize = 20_000;

/// Runs before `main` in every execution of this binary: a child run does its workload
/// and exits; a test run returns at once.
#[used]
#[link_section = ".init_array"]
static CHILD_ENTRY: extern "C" fn(c_int, *const *const c_char) = child_entry;

extern "C" fn child_entry(argc: c_int, argv: *const *const c_char) {
    if argc < 3 {
        return;
    }
    // SAFETY: glibc passes init_array functions the process's argc and argv; argv[1] and
    // argv[2] exist (argc >= 3) and are NUL-terminated.
    let (flag, workload) = unsafe { (CStr::from_ptr(*argv.add(1)), CStr::from_ptr(*argv.add(2))) };
    if flag.to_bytes() != CHILD_FLAG.as_bytes() {
        return;
    }
    match workload.to_bytes() {
        b"threads" => threads_then_exit_without_flush(),
        b"exit" => exit_while_threads_run(),
        b"handoff" => handoff_between_threads(),
        b"rust" => rust_allocations(),
        other => panic!(
            "unknown child workload {:?}",
            String::from_utf8_lossy(other)
        ),
    }
}

// black_box: the compiler may delete a malloc whose block is never used, and malloc/free
// pairs, since it knows what they do.
fn c_malloc(size: usize) -> usize {
    // SAFETY: plain malloc; the result is checked.
    let p = std::hint::black_box(unsafe { libc::malloc(std::hint::black_box(size)) });
    assert!(!p.is_null());
    p as usize
}

fn c_free(p: usize) {
    // SAFETY: `p` came from c_malloc or realloc and is freed once.
    unsafe { libc::free(std::hint::black_box(p) as *mut libc::c_void) }
}

/// Threads allocate and free, leave a few blocks live, and exit; then the process ends with
/// `_exit`, which runs no destructor: every thread's rows must have been written when the
/// thread exited.
fn threads_then_exit_without_flush() {
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(|| {
                let blocks: Vec<usize> = (0..BLOCKS_PER_THREAD)
                    .map(|_| c_malloc(THREAD_BLOCK))
                    .collect();
                blocks.into_iter().for_each(c_free);
                for _ in 0..LEAKS_PER_THREAD {
                    c_malloc(THREAD_LEAK);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(0) }
}

/// Rows buffered by the main thread must be written at `exit`, while two threads keep
/// allocating until the process is gone.
fn exit_while_threads_run() {
    for _ in 0..MAIN_BLOCKS {
        c_malloc(MAIN_BLOCK);
    }
    for _ in 0..2 {
        std::thread::spawn(|| loop {
            let p = c_malloc(LOOP_BLOCK);
            c_free(p);
        });
    }
    std::thread::sleep(Duration::from_millis(50));
    std::process::exit(0);
}

/// A producer allocates blocks large enough to bypass glibc's per-thread cache; a consumer
/// grows and frees them, so freed addresses keep coming back to the producer.
fn handoff_between_threads() {
    let (tx, rx) = mpsc::sync_channel::<usize>(4);
    let consumer = std::thread::spawn(move || {
        for p in rx {
            // SAFETY: `p` is a live malloc block handed over by the producer.
            let q = unsafe { libc::realloc(p as *mut libc::c_void, HANDOFF_GROWN) };
            assert!(!q.is_null());
            c_free(q as usize);
        }
    });
    let producer = std::thread::spawn(move || {
        for _ in 0..HANDOFFS {
            tx.send(c_malloc(HANDOFF_BLOCK)).unwrap();
        }
    });
    producer.join().unwrap();
    consumer.join().unwrap();
    std::process::exit(0);
}

/// Rust allocations through `RecordingAlloc`: boxes with a 64-byte alignment, growing
/// vectors (realloc), on several threads that exit before the process does.
fn rust_allocations() {
    #[repr(align(64))]
    struct Aligned([u8; RUST_BLOCK - RUST_BLOCK % 64 + 64]);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let boxes: Vec<Box<Aligned>> = (0..100)
                    .map(|i| Box::new(Aligned([(t + i) as u8; RUST_BLOCK - RUST_BLOCK % 64 + 64])))
                    .collect();
                let mut grown = Vec::new();
                for i in 0..10_000u32 {
                    grown.push(i);
                }
                let first_bytes: u64 = boxes.iter().map(|b| b.0[0] as u64).sum();
                std::hint::black_box((first_bytes, &grown));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    std::process::exit(0);
}

/// `record_command` with the recorder `replay record` would use (built on first use).
fn record_command_here(
    out: &Path,
    cmd: &[OsString],
) -> Result<workloads::record::RecordSummary, workloads::record::RecordError> {
    static PRELOAD: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let preload = PRELOAD.get_or_init(|| find_or_build_preload().expect("the LD_PRELOAD recorder"));
    record_command(out, cmd, preload)
}

fn self_command(workload: &str) -> Vec<OsString> {
    vec![
        std::env::current_exe().unwrap().into(),
        CHILD_FLAG.into(),
        workload.into(),
    ]
}

fn events_in_order(path: &Path) -> Vec<Event> {
    read_ordered_events(path)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

fn count(events: &[Event], op: OpKind, size: usize) -> usize {
    events
        .iter()
        .filter(|e| e.op == op && e.size == size as u64)
        .count()
}

/// Frees of blocks allocated with `size`, by following each pointer through the trace.
fn frees_of_size(events: &[Event], size: usize) -> usize {
    let mut live: HashMap<u64, u64> = HashMap::new();
    let mut frees = 0;
    for e in events {
        match e.op {
            OpKind::Alloc => {
                live.insert(e.ptr, e.size);
            }
            OpKind::Free => frees += (live.remove(&e.ptr) == Some(size as u64)) as usize,
            OpKind::Realloc => {
                live.remove(&e.old_ptr);
                live.insert(e.ptr, e.size);
            }
        }
    }
    frees
}

fn assert_clean(path: &Path) -> workloads::LoadedTrace {
    let loaded = load_trace(path, &LoadOptions::default()).unwrap();
    assert!(
        loaded.sanitation.is_clean(),
        "{}: {:?}",
        path.display(),
        loaded.sanitation
    );
    loaded
}

fn temp_trace(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn thread_exit_loses_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_trace(&dir, "threads.csv");
    let summary = record_command_here(&out, &self_command("threads")).unwrap();
    assert_eq!(summary.exit_code(), 0);
    let events = events_in_order(&out);
    assert_eq!(
        count(&events, OpKind::Alloc, THREAD_BLOCK),
        THREADS * BLOCKS_PER_THREAD
    );
    assert_eq!(
        frees_of_size(&events, THREAD_BLOCK),
        THREADS * BLOCKS_PER_THREAD
    );
    assert_eq!(
        count(&events, OpKind::Alloc, THREAD_LEAK),
        THREADS * LEAKS_PER_THREAD
    );
    // The main thread's rows are lost to `_exit` (they are few: under one buffer).
    assert!(summary.threads >= THREADS as u64, "{summary:?}");
    assert_eq!(summary.events, events.len() as u64);
}

#[test]
fn process_exit_loses_no_rows_while_threads_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_trace(&dir, "exit.csv");
    let summary = record_command_here(&out, &self_command("exit")).unwrap();
    assert_eq!(summary.exit_code(), 0);
    let events = events_in_order(&out);
    assert_eq!(count(&events, OpKind::Alloc, MAIN_BLOCK), MAIN_BLOCKS);
    let loop_allocs = count(&events, OpKind::Alloc, LOOP_BLOCK);
    let loop_frees = frees_of_size(&events, LOOP_BLOCK);
    assert!(loop_allocs > 100, "{loop_allocs}");
    // Each looping thread has at most one block live when the process ends.
    assert!(
        loop_allocs - loop_frees <= 2,
        "{loop_allocs} allocs, {loop_frees} frees"
    );
    assert_clean(&out);
}

#[test]
fn a_free_precedes_the_reuse_of_its_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_trace(&dir, "handoff.csv.zst");
    let summary = record_command_here(&out, &self_command("handoff")).unwrap();
    assert_eq!(summary.exit_code(), 0);
    assert_clean(&out);
    let events = events_in_order(&out);
    assert!(events.windows(2).all(|w| w[0].time_ns <= w[1].time_ns));
    // The point of the workload: addresses freed on one thread are reused on another.
    let mut freed_by: HashMap<u64, u64> = HashMap::new();
    let mut cross_thread_reuses = 0;
    for e in &events {
        match e.op {
            OpKind::Free => {
                freed_by.insert(e.ptr, e.thread);
            }
            OpKind::Alloc | OpKind::Realloc => {
                if let Some(t) = freed_by.remove(&e.ptr) {
                    cross_thread_reuses += (t != e.thread) as usize;
                }
                if e.op == OpKind::Realloc {
                    freed_by.insert(e.old_ptr, e.thread);
                }
            }
        }
    }
    assert!(cross_thread_reuses > 100, "{cross_thread_reuses}");
    assert_eq!(count(&events, OpKind::Alloc, HANDOFF_BLOCK), HANDOFFS);
    assert_eq!(count(&events, OpKind::Realloc, HANDOFF_GROWN), HANDOFFS);
}

#[test]
fn python_threads_record_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_trace(&dir, "python.csv.gz");
    let script = "
import threading, queue, json
q = queue.Queue()
def worker():
    while (item := q.get()) is not None:
        json.loads(json.dumps({'k': [item] * 50, 's': str(item) * 20}))
ts = [threading.Thread(target=worker) for _ in range(4)]
for t in ts: t.start()
for i in range(4000): q.put(i)
for t in ts: q.put(None)
for t in ts: t.join()
";
    let cmd: Vec<OsString> = vec!["python3".into(), "-c".into(), script.into()];
    let summary = record_command_here(&out, &cmd).unwrap();
    assert_eq!(summary.exit_code(), 0);
    assert!(summary.threads >= 5, "{summary:?}");
    assert!(summary.events > 10_000, "{summary:?}");
    let loaded = assert_clean(&out);
    assert_eq!(loaded.stats.events, summary.events);
}

#[test]
fn forked_and_spawned_children_are_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_trace(&dir, "fork.csv");
    let script = "
import ctypes, os, subprocess
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
pid = os.fork()
if pid == 0:
    for _ in range(500): libc.free(libc.malloc(6543))
    os._exit(0)
os.waitpid(pid, 0)
subprocess.run(['python3', '-c', 'import ctypes; [ctypes.CDLL(None).malloc(6545) for _ in range(50)]'], check=True)
for _ in range(500): libc.free(libc.malloc(6544))
";
    let cmd: Vec<OsString> = vec!["python3".into(), "-c".into(), script.into()];
    let summary = record_command_here(&out, &cmd).unwrap();
    assert_eq!(summary.exit_code(), 0);
    let events = events_in_order(&out);
    assert_eq!(count(&events, OpKind::Alloc, 6543), 0);
    assert_eq!(count(&events, OpKind::Alloc, 6545), 0);
    assert_eq!(count(&events, OpKind::Alloc, 6544), 500);
    assert_eq!(frees_of_size(&events, 6544), 500);
    assert_clean(&out);
}

#[test]
fn exit_status_is_the_programs() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_trace(&dir, "sh.csv");
    let cmd: Vec<OsString> = vec!["sh".into(), "-c".into(), "kill -TERM $$".into()];
    let summary = record_command_here(&out, &cmd).unwrap();
    assert_eq!(summary.exit_code(), 128 + libc::SIGTERM);
    assert!(out.is_file());
    let missing = record_command_here(&out, &["/nonexistent/program".into()]);
    assert!(missing
        .unwrap_err()
        .to_string()
        .contains("/nonexistent/program"));
}

#[test]
fn recording_alloc_records_a_rust_program() {
    let dir = tempfile::tempdir().unwrap();
    let out = temp_trace(&dir, "rust.csv");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_FLAG, "rust"])
        .env(RUST_TRACE_ENV, &out)
        .env_remove("LD_PRELOAD")
        .status()
        .unwrap();
    assert!(status.success());
    let loaded = assert_clean(&out);
    let events = events_in_order(&out);
    assert_eq!(loaded.stats.events, events.len() as u64);
    let aligned_size = RUST_BLOCK - RUST_BLOCK % 64 + 64;
    let aligned: Vec<_> = events
        .iter()
        .filter(|e| e.op == OpKind::Alloc && e.size == aligned_size as u64)
        .collect();
    assert_eq!(aligned.len(), 400);
    assert!(aligned.iter().all(|e| e.align == 64 && e.ptr % 64 == 0));
    assert_eq!(frees_of_size(&events, aligned_size), 400);
    assert!(events
        .iter()
        .any(|e| e.op == OpKind::Realloc && e.old_ptr != 0));
    assert!(loaded.stats.threads >= 5, "{:?}", loaded.stats.threads);
}

/// The sample traces in `workloads/traces/` (made by the recorder, see its README) load with
/// no sanitation repair and hold what the README says.
#[test]
fn sample_traces_load_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../workloads/traces");
    // (file, minimum events, threads)
    let expected = [
        ("python-json.csv", 10_000, 1),
        ("python-threads.csv.zst", 50_000, 5),
        ("sqlite.csv.zst", 200_000, 1),
        ("perl-text.csv.zst", 200_000, 1),
    ];
    for (name, min_events, threads) in expected {
        let path = dir.join(name);
        let loaded = assert_clean(&path);
        assert!(
            loaded.stats.events >= min_events,
            "{name}: {}",
            loaded.stats.events
        );
        assert_eq!(loaded.stats.threads, threads, "{name}");
        assert!(std::fs::metadata(&path).unwrap().len() < 2 << 20, "{name}");
    }
}
