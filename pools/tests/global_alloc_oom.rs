//! `PoolGlobalAlloc`'s failure path allocates nothing that outlives it: a program that
//! handles many allocation failures keeps running. (Each failure builds a `PoolError`
//! with a message; before the per-thread scratch buffer, every message stayed in the
//! 256 KiB bootstrap arena and about 43,000 failures ended in an abort.)
//!
//! This test binary runs entirely on the pool: its `#[global_allocator]` is the pool.

use pools::{AllocatorKind, PoolConfig, PoolGlobalAlloc};

/// A hard limit, so that every huge request fails at once with `OutOfMemory` (no mmap).
const LIMIT_BYTES: usize = 1 << 30;

fn global_config() -> PoolConfig {
    PoolConfig {
        allocator: AllocatorKind::SizeClassed,
        max_size_bytes: Some(LIMIT_BYTES),
        ..PoolConfig::default_cpu()
    }
}

#[global_allocator]
static GLOBAL: PoolGlobalAlloc = PoolGlobalAlloc::new("global-oom", global_config);

/// More than twice the failures that used to exhaust the arena.
const FAILURES: u64 = 100_000;

#[test]
fn a_hundred_thousand_handled_failures_and_the_pool_still_serves() {
    for i in 0..FAILURES {
        let mut v: Vec<u8> = Vec::new();
        assert!(
            v.try_reserve_exact(1 << 46).is_err(),
            "failure {i}: 64 TiB was granted under a 1 GiB limit"
        );
        // Alternate with successes, so scratch rewinds interleave with real blocks.
        if i % 1000 == 0 {
            let kept: Box<[u8]> = vec![i as u8; 100].into_boxed_slice();
            assert_eq!(kept[99], i as u8);
        }
    }
    let pool = GLOBAL.pool().expect("the pool was built on first use");
    let stats = pools::MemoryPool::stats(pool);
    assert!(
        stats.failure_count >= FAILURES,
        "{} failures counted",
        stats.failure_count
    );
    // Still alive and serving: a large block, a small one, and a string.
    let big = vec![1u8; 4 << 20];
    let text = format!("{} bytes", big.len());
    assert_eq!(text, "4194304 bytes");
}

#[test]
fn failures_on_many_threads_at_once() {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..10_000 {
                    let mut v: Vec<u64> = Vec::new();
                    assert!(v.try_reserve(1 << 44).is_err());
                    v.push(1);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
