//! Trace reading throughput: canonical CSV parsing alone (MB/s of CSV on one core), the
//! whole `load_trace` pipeline (parse, order, sanitise, stats, compile), compiled bytes
//! per event, and the heap each takes at its peak (a counting global allocator).
//!
//! `cargo bench -p workloads --bench parse`

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use workloads::gen::{generate, GenKind, GenParams};
use workloads::{load_trace, read_events, read_ordered_events, CsvWriter, LoadOptions};

/// Counts heap bytes in use and their peak (allocations are rare on the measured paths:
/// buffers, chunks, vector growth).
struct CountingAlloc;

static HEAP_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_HEAP_BYTES: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = HEAP_BYTES.fetch_add(bytes, Relaxed) + bytes;
    PEAK_HEAP_BYTES.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed on to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded `GlobalAlloc` contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP_BYTES.fetch_sub(layout.size(), Relaxed);
        // SAFETY: forwarded `GlobalAlloc` contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            grew(new_size - layout.size());
        } else {
            HEAP_BYTES.fetch_sub(layout.size() - new_size, Relaxed);
        }
        // SAFETY: forwarded `GlobalAlloc` contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Run `f` and return its result with the most heap bytes it added at any moment.
fn peak_heap_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = HEAP_BYTES.load(Relaxed);
    PEAK_HEAP_BYTES.store(base, Relaxed);
    let out = f();
    (out, PEAK_HEAP_BYTES.load(Relaxed) - base)
}

const EVENTS: u64 = 1_000_000;

fn write_trace(dir: &Path, kind: GenKind) -> std::path::PathBuf {
    let path = dir.join(format!("{kind}.csv"));
    let file = std::fs::File::create(&path).unwrap();
    let mut w = CsvWriter::new(file).unwrap();
    let params = GenParams {
        seed: 1,
        events: EVENTS,
        threads: 8,
    };
    generate(kind, &params, &mut |e| w.write(&e).unwrap());
    w.finish().unwrap();
    path
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("csv");
    group.sample_size(10);
    for kind in [GenKind::SizeMix, GenKind::GpuTraining] {
        let path = write_trace(dir.path(), kind);
        let bytes = std::fs::metadata(&path).unwrap().len();
        group.throughput(Throughput::Bytes(bytes));
        group.bench_with_input(BenchmarkId::new("read_events", kind), &path, |b, p| {
            b.iter(|| {
                let n = read_events(p)
                    .unwrap()
                    .map(|e| e.unwrap().size)
                    .sum::<u64>();
                criterion::black_box(n)
            })
        });
        group.bench_with_input(BenchmarkId::new("load_trace", kind), &path, |b, p| {
            b.iter(|| {
                load_trace(p, &LoadOptions::default())
                    .unwrap()
                    .compiled
                    .event_count
            })
        });
        let ((events, held), ordered_peak) = peak_heap_of(|| {
            let r = read_ordered_events(&path).unwrap();
            let held = r.held_bytes();
            (r.count() as f64, held)
        });
        let (t, load_peak) = peak_heap_of(|| load_trace(&path, &LoadOptions::default()).unwrap());
        eprintln!(
            "{kind}: {bytes} bytes of CSV, {} events, compiled {} bytes = {:.2} bytes/event",
            t.compiled.event_count,
            t.compiled.memory_bytes(),
            t.compiled.memory_bytes() as f64 / t.compiled.event_count as f64
        );
        eprintln!(
            "{kind}: time order holds {:.2} bytes/event; peak heap per event: \
             read_ordered_events {:.2}, load_trace {:.2}",
            held as f64 / events,
            ordered_peak as f64 / events,
            load_peak as f64 / events
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
