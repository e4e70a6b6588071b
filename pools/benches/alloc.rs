//! Allocator micro-benchmarks, all in one run so ratios are comparable:
//! - `pair/<size>`: one allocate + free pair (single thread, L1-hot) for every pool
//!   variant (`pool-mutex`: the default, thread caches in front of the mutex;
//!   `pool-mutex-uncached`: `thread_cache.enabled = false`; `pool-mutex-sized`: freed with
//!   the block's size, `MemoryPool::deallocate_sized`), glibc malloc and mimalloc;
//! - `churn`: random sizes (16 B..4 KiB, log-uniform) replacing one of 1024 live blocks;
//! - `cross_thread`: blocks allocated on one thread and freed on another (2 threads).
//!
//! `cargo bench -p pools --bench alloc -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pools::alloc::variable::Tlsf;
use pools::{
    AllocatorKind, CpuPool, FixedSizeAllocator, MemoryPool, OsChunks, PoolConfig,
    SizeClassedAllocator, StatsCounters, Strategy, SyncMode, Upstream,
};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [16, 64, 256, 4096];

fn upstream(config: &PoolConfig) -> Upstream {
    Upstream::new(
        Box::new(OsChunks::new(config.huge_pages)),
        Arc::from("bench"),
        config.chunk_size_bytes,
        config.growth_factor,
        config.max_size_bytes,
        Arc::new(StatsCounters::new()),
    )
}

/// `config` with the per-thread cache layer off (the mutex taken on every call).
fn uncached(allocator: AllocatorKind, block_size_bytes: usize) -> PoolConfig {
    let mut c = config(allocator, SyncMode::Mutex, block_size_bytes);
    c.thread_cache.enabled = false;
    c
}

fn config(allocator: AllocatorKind, sync: SyncMode, block_size_bytes: usize) -> PoolConfig {
    PoolConfig {
        allocator,
        sync,
        block_size_bytes,
        ..PoolConfig::default_cpu()
    }
}

/// The allocators under test, behind one interface for the loops below.
enum Subject {
    /// The strategies called directly (static dispatch, as an embedding program would).
    Fixed(FixedSizeAllocator),
    Classed(SizeClassedAllocator),
    Variable(Box<Tlsf>),
    /// A strategy behind `dyn Strategy` (what `CpuPool` calls).
    Raw(Box<dyn Strategy>),
    Pool(Arc<CpuPool>),
    /// A pool freed with the block's size (`MemoryPool::deallocate_sized`, as
    /// `GlobalAlloc::dealloc` frees); the other subjects ignore the size.
    PoolSized(Arc<CpuPool>),
    Glibc,
    Mimalloc,
}

impl Subject {
    #[inline(always)]
    fn alloc(&mut self, size: usize) -> NonNull<u8> {
        match self {
            Subject::Fixed(s) => s.allocate(size, 16).unwrap(),
            Subject::Classed(s) => s.allocate(size, 16).unwrap(),
            Subject::Variable(s) => s.allocate(size, 16).unwrap(),
            Subject::Raw(s) => s.allocate(size, 16).unwrap(),
            Subject::Pool(p) | Subject::PoolSized(p) => p.allocate(size).unwrap(),
            // SAFETY: plain malloc calls; the result is checked for null.
            Subject::Glibc => NonNull::new(unsafe { libc::malloc(size) }.cast()).unwrap(),
            // SAFETY: as above.
            Subject::Mimalloc => {
                // SAFETY: plain malloc; the result is checked for null.
                NonNull::new(unsafe { libmimalloc_sys::mi_malloc(size) }.cast()).unwrap()
            }
        }
    }

    /// `size` gives the size `ptr` was allocated with, called only by `PoolSized`, so the
    /// other subjects' loops do not compute it.
    ///
    /// # Safety
    /// `ptr` came from `alloc` of this subject and is not freed yet.
    #[inline(always)]
    unsafe fn free(&mut self, ptr: NonNull<u8>, size: impl FnOnce() -> usize) {
        match self {
            // SAFETY: forwarded contract.
            Subject::Fixed(s) => unsafe {
                s.deallocate(ptr);
            },
            // SAFETY: forwarded contract.
            Subject::Classed(s) => unsafe {
                s.deallocate(ptr);
            },
            // SAFETY: forwarded contract.
            Subject::Variable(s) => unsafe {
                s.deallocate(ptr);
            },
            // SAFETY: forwarded contract.
            Subject::Raw(s) => unsafe {
                s.deallocate(ptr);
            },
            // SAFETY: forwarded contract.
            Subject::Pool(p) => unsafe { p.deallocate(ptr) }.unwrap(),
            // SAFETY: forwarded contract (the size is only a hint).
            Subject::PoolSized(p) => unsafe { p.deallocate_sized(ptr, size()) }.unwrap(),
            // SAFETY: forwarded contract.
            Subject::Glibc => unsafe { libc::free(ptr.as_ptr().cast()) },
            // SAFETY: forwarded contract.
            Subject::Mimalloc => unsafe { libmimalloc_sys::mi_free(ptr.as_ptr().cast()) },
        }
    }
}

fn pair_subjects(size: usize) -> Vec<(&'static str, Subject)> {
    use AllocatorKind::*;
    use SyncMode::*;
    let fixed = config(FixedSize, SingleThreaded, size);
    let classed = config(SizeClassed, Mutex, size);
    let variable = config(VariableSize, Mutex, size);
    let pool = |c: PoolConfig| Subject::Pool(Arc::new(CpuPool::new("bench", c).unwrap()));
    vec![
        (
            "fixed/raw-static",
            Subject::Fixed(FixedSizeAllocator::new(upstream(&fixed), &fixed).unwrap()),
        ),
        ("fixed/pool-single", pool(fixed.clone())),
        ("fixed/pool-mutex", pool(config(FixedSize, Mutex, size))),
        (
            "size-classed/raw-static",
            Subject::Classed(SizeClassedAllocator::new(upstream(&classed), &classed).unwrap()),
        ),
        ("size-classed/pool-mutex", pool(classed.clone())),
        (
            "size-classed/pool-mutex-uncached",
            pool(uncached(SizeClassed, size)),
        ),
        (
            "variable/raw-static",
            Subject::Variable(Box::new(Tlsf::new(upstream(&variable), &variable).unwrap())),
        ),
        (
            "variable/raw-dyn",
            Subject::Raw(Box::new(Tlsf::new(upstream(&variable), &variable).unwrap())),
        ),
        ("variable/pool-mutex", pool(variable.clone())),
        (
            "variable/pool-mutex-sized",
            Subject::PoolSized(Arc::new(CpuPool::new("bench", variable).unwrap())),
        ),
        (
            "variable/pool-mutex-uncached",
            pool(uncached(VariableSize, size)),
        ),
        ("lock-free/pool", pool(PoolConfig::high_performance_cpu())),
        ("glibc", Subject::Glibc),
        ("mimalloc", Subject::Mimalloc),
    ]
}

fn bench_pairs(c: &mut Criterion) {
    for size in SIZES {
        let mut group = c.benchmark_group(format!("pair/{size}"));
        for (name, mut subject) in pair_subjects(size) {
            group.bench_function(name, |b| {
                b.iter(|| {
                    let p = subject.alloc(black_box(size));
                    // SAFETY: p was just allocated by this subject.
                    unsafe { subject.free(black_box(p), || size) };
                })
            });
        }
        group.finish();
    }
}

fn bench_churn(c: &mut Criterion) {
    const LIVE: usize = 1024;
    let mut rng = SmallRng::seed_from_u64(1);
    let sizes: Vec<usize> = (0..4096)
        .map(|_| (16.0f64 * 256f64.powf(rng.gen::<f64>())) as usize)
        .collect();
    let mut group = c.benchmark_group("churn");
    let variable = || {
        let config = config(AllocatorKind::VariableSize, SyncMode::Mutex, 64);
        Arc::new(CpuPool::new("b", config).unwrap())
    };
    let subjects: Vec<(&str, Subject)> = vec![
        (
            "size-classed/pool-mutex",
            Subject::Pool(Arc::new(
                CpuPool::new("b", config(AllocatorKind::SizeClassed, SyncMode::Mutex, 64)).unwrap(),
            )),
        ),
        ("variable/pool-mutex", Subject::Pool(variable())),
        ("variable/pool-mutex-sized", Subject::PoolSized(variable())),
        (
            "size-classed/pool-mutex-uncached",
            Subject::Pool(Arc::new(
                CpuPool::new("b", uncached(AllocatorKind::SizeClassed, 64)).unwrap(),
            )),
        ),
        (
            "lock-free/pool",
            Subject::Pool(Arc::new(
                CpuPool::new("b", PoolConfig::high_performance_cpu()).unwrap(),
            )),
        ),
        ("glibc", Subject::Glibc),
        ("mimalloc", Subject::Mimalloc),
    ];
    for (name, mut subject) in subjects {
        if let Subject::PoolSized(pool) = &subject {
            churn_sized(&mut group, name, pool, &sizes);
            continue;
        }
        let mut live: Vec<NonNull<u8>> = (0..LIVE).map(|i| subject.alloc(sizes[i])).collect();
        let mut i = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                let slot = i % LIVE;
                // SAFETY: live[slot] is a live block of this subject.
                unsafe { subject.free(live[slot], || unreachable!("not a sized subject")) };
                live[slot] = subject.alloc(sizes[i % sizes.len()]);
                i = i.wrapping_add(1);
            })
        });
        for p in live {
            // SAFETY: every remaining block is live.
            unsafe { subject.free(p, || unreachable!("not a sized subject")) };
        }
    }
    group.finish();
}

/// `churn` for a pool freed with each block's size (`deallocate_sized`): the program keeps
/// each live block's size beside it, as a `Vec` or a `Box` knows its layout.
fn churn_sized(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    pool: &CpuPool,
    sizes: &[usize],
) {
    const LIVE: usize = 1024;
    let mut live: Vec<(NonNull<u8>, usize)> = sizes[..LIVE]
        .iter()
        .map(|&size| (pool.allocate(size).unwrap(), size))
        .collect();
    let mut i = 0usize;
    group.bench_function(name, |b| {
        b.iter(|| {
            let slot = i % LIVE;
            let (ptr, size) = live[slot];
            // SAFETY: live[slot] is a live block of this pool (the size is a hint).
            unsafe { pool.deallocate_sized(black_box(ptr), size) }.unwrap();
            let size = sizes[i % sizes.len()];
            live[slot] = (pool.allocate(black_box(size)).unwrap(), size);
            i = i.wrapping_add(1);
        })
    });
    for (ptr, size) in live {
        // SAFETY: every remaining block is live.
        unsafe { pool.deallocate_sized(ptr, size) }.unwrap();
    }
}

/// Blocks allocated on this thread, freed on a second one; time per block.
fn cross_thread(
    subject: Arc<dyn Fn(usize) -> NonNull<u8> + Send + Sync>,
    free: Arc<dyn Fn(NonNull<u8>) + Send + Sync>,
    iters: u64,
) -> Duration {
    const BATCH: usize = 256;
    struct Batch(Vec<NonNull<u8>>);
    // SAFETY: the batch's blocks are handed to the freeing thread, sole owner from then on.
    unsafe impl Send for Batch {}
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(8);
    let freer = std::thread::spawn(move || {
        for batch in rx {
            for p in batch.0 {
                free(p);
            }
        }
    });
    let start = Instant::now();
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(BATCH);
        tx.send(Batch((0..n).map(|_| subject(64)).collect()))
            .unwrap();
        left -= n;
    }
    drop(tx);
    freer.join().unwrap();
    start.elapsed()
}

fn bench_cross_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_thread");
    group.throughput(Throughput::Elements(1));
    for (name, config) in [
        (
            "size-classed/pool-mutex",
            config(AllocatorKind::SizeClassed, SyncMode::Mutex, 64),
        ),
        (
            "variable/pool-mutex",
            config(AllocatorKind::VariableSize, SyncMode::Mutex, 64),
        ),
        ("lock-free/pool", PoolConfig::high_performance_cpu()),
    ] {
        let pool = Arc::new(CpuPool::new("cross", config).unwrap());
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                let (a, f) = (Arc::clone(&pool), Arc::clone(&pool));
                cross_thread(
                    Arc::new(move |size| a.allocate(size).unwrap()),
                    // SAFETY: `cross_thread` frees each block it allocated once.
                    Arc::new(move |p| unsafe { f.deallocate(p) }.unwrap()),
                    iters,
                )
            })
        });
    }
    group.bench_function(BenchmarkId::from_parameter("glibc"), |b| {
        b.iter_custom(|iters| {
            cross_thread(
                // SAFETY: plain malloc/free of blocks owned by the benchmark.
                Arc::new(|size| NonNull::new(unsafe { libc::malloc(size) }.cast()).unwrap()),
                // SAFETY: `cross_thread` frees each block it allocated once.
                Arc::new(|p| unsafe { libc::free(p.as_ptr().cast()) }),
                iters,
            )
        })
    });
    group.bench_function(BenchmarkId::from_parameter("mimalloc"), |b| {
        b.iter_custom(|iters| {
            cross_thread(
                // SAFETY: plain mi_malloc/mi_free of blocks owned by the benchmark.
                Arc::new(|size| {
                    // SAFETY: plain malloc; the result is checked for null.
                    NonNull::new(unsafe { libmimalloc_sys::mi_malloc(size) }.cast()).unwrap()
                }),
                // SAFETY: `cross_thread` frees each block it allocated once.
                Arc::new(|p| unsafe { libmimalloc_sys::mi_free(p.as_ptr().cast()) }),
                iters,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench_pairs, bench_churn, bench_cross_thread);
criterion_main!(benches);
