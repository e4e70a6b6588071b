//! The criterion `churn` bench's loop on its own, for valgrind and for long interleaved
//! timings (`docs/performance.md`, issue 13's eighth and ninth rounds): 1,024 live blocks
//! of 16 B - 4 KiB (log-uniform), each step frees the oldest and allocates a new one.
//! Two passes of `STEPS` steps; the second is timed.
//!
//! `cargo run --release -p pools --example churn_loop -- SUBJECT STEPS`, where SUBJECT is
//! `variable` (TLSF, mutex, thread cache), `variable-sized` (the same, freed with
//! `deallocate_sized` and each block's size), `classed` (size-classed, mutex, thread cache),
//! `lockfree` (`high_performance_cpu`) or `mimalloc`. `MAX_CLASS_BYTES`,
//! `MAX_CLASS_BLOCKS` and `MAX_THREAD_BYTES` in the environment override the mutex pools'
//! thread-cache bounds; `TOUCH=1` writes each block's first byte when it is allocated.

use pools::{AllocatorKind, CpuPool, MemoryPool, PoolConfig, SyncMode};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::ptr::NonNull;
use std::time::Instant;

const LIVE: usize = 1024;

fn config(subject: &str) -> Option<PoolConfig> {
    let allocator = match subject {
        "variable" | "variable-sized" => AllocatorKind::VariableSize,
        "classed" => AllocatorKind::SizeClassed,
        "lockfree" => return Some(PoolConfig::high_performance_cpu()),
        _ => return None,
    };
    let mut config = PoolConfig {
        allocator,
        sync: SyncMode::Mutex,
        ..PoolConfig::default_cpu()
    };
    let env = |name: &str| std::env::var(name).ok().map(|v| v.parse::<usize>());
    if let Some(bytes) = env("MAX_CLASS_BYTES") {
        config.thread_cache.max_class_bytes = bytes.expect("MAX_CLASS_BYTES: a byte count");
    }
    if let Some(blocks) = env("MAX_CLASS_BLOCKS") {
        config.thread_cache.max_class_blocks = blocks.expect("MAX_CLASS_BLOCKS: a count");
    }
    if let Some(bytes) = env("MAX_THREAD_BYTES") {
        config.thread_cache.max_thread_bytes = bytes.expect("MAX_THREAD_BYTES: a byte count");
    }
    Some(config)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (subject, steps) = match args.as_slice() {
        [_, subject, steps] => (subject.as_str(), steps.parse::<usize>().ok()),
        _ => ("", None),
    };
    let Some(steps) = steps.filter(|_| {
        matches!(
            subject,
            "variable" | "variable-sized" | "classed" | "lockfree" | "mimalloc"
        )
    }) else {
        eprintln!("usage: churn_loop variable|variable-sized|classed|lockfree|mimalloc STEPS");
        std::process::exit(2);
    };
    let pool = config(subject).map(|c| CpuPool::new("churn", c).expect("pool config"));
    let mut rng = SmallRng::seed_from_u64(1);
    let sizes: Vec<usize> = (0..4096)
        .map(|_| (16.0f64 * 256f64.powf(rng.gen::<f64>())) as usize)
        .collect();
    let alloc = |size: usize| -> NonNull<u8> {
        match &pool {
            Some(pool) => pool.allocate(size).expect("allocate"),
            None => {
                // SAFETY: a plain mi_malloc; the block is freed with mi_free below.
                let ptr = unsafe { libmimalloc_sys::mi_malloc(size) };
                NonNull::new(ptr.cast()).expect("mi_malloc")
            }
        }
    };
    let free = |ptr: NonNull<u8>| match &pool {
        // SAFETY: `ptr` came from this pool's `allocate` and is freed once.
        Some(pool) => unsafe { pool.deallocate(ptr) }.expect("deallocate"),
        // SAFETY: `ptr` came from mi_malloc and is freed once.
        None => unsafe { libmimalloc_sys::mi_free(ptr.as_ptr().cast()) },
    };
    // TOUCH=1: write each block's first byte when it is allocated, as a program does (and
    // as `replay` does by default, `--touch first`); the criterion bench does not.
    let touch = std::env::var("TOUCH").is_ok_and(|v| v == "1");
    if subject == "variable-sized" {
        let pool = pool.as_ref().expect("a pool subject");
        run_sized(pool, subject, steps, &sizes, touch);
        return;
    }
    let mut live: Vec<NonNull<u8>> = (0..LIVE).map(|i| alloc(sizes[i])).collect();
    for pass in 0..2 {
        let started = Instant::now();
        for i in 0..steps {
            let slot = i % LIVE;
            free(std::hint::black_box(live[slot]));
            let block = alloc(std::hint::black_box(sizes[i % sizes.len()]));
            if touch {
                // SAFETY: a live block of at least 16 bytes, ours until freed.
                unsafe { block.as_ptr().write_volatile(1) };
            }
            live[slot] = block;
        }
        if pass == 1 {
            let ns = started.elapsed().as_nanos() as f64 / steps.max(1) as f64;
            println!("{subject}: {ns:.2} ns per step");
        }
    }
    for ptr in live {
        free(ptr);
    }
}

/// The same loop for `variable-sized`: each live block's size is kept beside it and the
/// block is freed through `deallocate_sized` with it, as `GlobalAlloc::dealloc` frees. A
/// function of its own, so that the other subjects' loop stays the criterion bench's.
fn run_sized(pool: &CpuPool, subject: &str, steps: usize, sizes: &[usize], touch: bool) {
    let mut live: Vec<(NonNull<u8>, usize)> = sizes[..LIVE]
        .iter()
        .map(|&size| (pool.allocate(size).expect("allocate"), size))
        .collect();
    for pass in 0..2 {
        let started = Instant::now();
        for i in 0..steps {
            let slot = i % LIVE;
            let (ptr, size) = live[slot];
            // SAFETY: `ptr` came from this pool's `allocate` and is freed once (the size
            // is a hint).
            unsafe { pool.deallocate_sized(std::hint::black_box(ptr), size) }.expect("deallocate");
            let size = std::hint::black_box(sizes[i % sizes.len()]);
            let block = pool.allocate(size).expect("allocate");
            if touch {
                // SAFETY: a live block of at least 16 bytes, ours until freed.
                unsafe { block.as_ptr().write_volatile(1) };
            }
            live[slot] = (block, size);
        }
        if pass == 1 {
            let ns = started.elapsed().as_nanos() as f64 / steps.max(1) as f64;
            println!("{subject}: {ns:.2} ns per step");
        }
    }
    for (ptr, size) in live {
        // SAFETY: as above.
        unsafe { pool.deallocate_sized(ptr, size) }.expect("deallocate");
    }
}
