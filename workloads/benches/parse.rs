//! Trace reading throughput: canonical CSV parsing alone (MB/s of CSV on one core), the
//! whole `load_trace` pipeline (parse, order, sanitise, stats, compile), and compiled
//! bytes per event.
//!
//! `cargo bench -p workloads --bench parse`

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use workloads::gen::{generate, GenKind, GenParams};
use workloads::{load_trace, read_events, CsvWriter, LoadOptions};

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
        let t = load_trace(&path, &LoadOptions::default()).unwrap();
        eprintln!(
            "{kind}: {bytes} bytes of CSV, {} events, compiled {} bytes = {:.2} bytes/event",
            t.compiled.event_count,
            t.compiled.memory_bytes(),
            t.compiled.memory_bytes() as f64 / t.compiled.event_count as f64
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
