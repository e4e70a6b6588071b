//! GpuPool growth on variable shapes (simulated device): exact-size chunks, and entirely
//! free chunks given back rather than let a growth raise the reserved peak.

use pools::gpu::{GpuPool, StreamId};
use pools::{MemoryPool, PoolConfig, ReturnPolicy};

const MIB: usize = 1 << 20;
const GIB: u64 = 1 << 30;

/// An inference cache that grows: each step allocates a buffer 10% larger than the last,
/// then frees the old one. Live bytes never exceed two buffers.
fn growing_cache(pool: &GpuPool, steps: usize) -> usize {
    let mut size = 100 * MIB;
    let mut old = pool.allocate_on(size, StreamId(0)).unwrap();
    let mut max_live = size;
    for _ in 0..steps {
        let next = size + size / 10;
        let new = pool.allocate_on(next, StreamId(0)).unwrap();
        max_live = max_live.max(size + next);
        pool.deallocate_on(old, StreamId(0)).unwrap();
        pool.check_invariants().unwrap();
        old = new;
        size = next;
    }
    pool.deallocate_on(old, StreamId(0)).unwrap();
    max_live
}

#[test]
fn growing_cache_keeps_reserved_near_live() {
    let pool = GpuPool::simulated("cache", PoolConfig::default_gpu(), 80 * GIB).unwrap();
    let max_live = growing_cache(&pool, 20);
    let peak = pool.stats().peak_reserved_bytes as usize;
    assert!(
        peak <= max_live + 2 * MIB,
        "peak reserved {peak} B for at most {max_live} B live"
    );
    assert!(pool.gpu_stats().chunks_returned > 0);
}

#[test]
fn keep_policy_keeps_every_chunk() {
    let config = PoolConfig {
        return_policy: ReturnPolicy::Keep,
        ..PoolConfig::default_gpu()
    };
    let pool = GpuPool::simulated("cache-keep", config, 80 * GIB).unwrap();
    let max_live = growing_cache(&pool, 20);
    assert_eq!(pool.gpu_stats().chunks_returned, 0);
    // Every buffer size stays cached: far more than ever lives at once.
    assert!(pool.stats().peak_reserved_bytes as usize > 3 * max_live);
}

#[test]
fn steady_state_within_the_peak_returns_nothing() {
    // Two shapes alternating: after the first round every request fits the cached chunks
    // or the peak, so nothing goes back to the device.
    let pool = GpuPool::simulated("steady", PoolConfig::default_gpu(), 80 * GIB).unwrap();
    for _ in 0..10 {
        for size in [64 * MIB, 3 * MIB, 40 * MIB, 300] {
            let p = pool.allocate_on(size, StreamId(0)).unwrap();
            pool.deallocate_on(p, StreamId(0)).unwrap();
        }
    }
    let g = pool.gpu_stats();
    assert_eq!(g.chunks_returned, 0);
    assert!(g.chunks_grown <= 2, "{g:?}");
}
