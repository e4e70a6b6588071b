//! The per-thread cache layer of `CpuPool` (`docs/thread-cache.md`): shadow model with
//! the cache on and tiny limits (so refills, trims and budget drains happen all the time),
//! cross-thread frees, the flush on thread exit, reset, out-of-memory with the pool still
//! usable, and the debug checks that bypass or coexist with the cache.
//!
//! Every `unsafe { pool.deallocate(p) }` here frees a live block this test allocated from
//! that pool and does not use again (the contract of `MemoryPool::deallocate`).

mod common;

use common::{Model, Op};
use pools::{
    AllocFlags, AllocatorKind, CpuPool, MemoryPool, PoolConfig, PoolError, ReturnPolicy, SyncMode,
    ThreadCacheConfig,
};
use proptest::prelude::*;
use std::ptr::NonNull;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};

const KINDS: [AllocatorKind; 4] = [
    AllocatorKind::FixedSize,
    AllocatorKind::SizeClassed,
    AllocatorKind::VariableSize,
    AllocatorKind::LockFree,
];

fn cached(kind: AllocatorKind) -> PoolConfig {
    PoolConfig {
        allocator: kind,
        sync: SyncMode::Mutex,
        block_size_bytes: 256,
        ..PoolConfig::default_cpu()
    }
}

/// Addresses a pool handed out, as `usize` so they can cross threads.
fn addrs(ptrs: &[NonNull<u8>]) -> Vec<usize> {
    ptrs.iter().map(|p| p.as_ptr() as usize).collect()
}

fn ptr(addr: usize) -> NonNull<u8> {
    NonNull::new(addr as *mut u8).unwrap()
}

#[test]
fn default_config_caches_and_counts_exactly_in_one_thread() {
    for kind in KINDS {
        let pool = CpuPool::new("tc", cached(kind)).unwrap();
        let blocks: Vec<_> = (0..1000).map(|_| pool.allocate(48).unwrap()).collect();
        for &b in &blocks {
            // SAFETY: a live block of this pool, given back once.
            unsafe { pool.deallocate(b) }.unwrap();
        }
        let stats = pool.stats();
        assert_eq!(stats.allocation_count, 1000, "{kind:?}");
        assert_eq!(stats.free_count, 1000);
        assert_eq!(stats.current_used_bytes, 0);
        let usable = if kind == AllocatorKind::FixedSize {
            256
        } else {
            48
        };
        assert_eq!(stats.peak_used_bytes, 1000 * usable, "{kind:?}");
        assert_eq!(stats.total_allocated_bytes, 1000 * usable);
        assert!(stats.thread_cached_bytes > 0, "{kind:?}: nothing cached");
        assert!(stats.thread_cached_bytes <= ThreadCacheConfig::default().max_thread_bytes as u64);
        assert!(stats.reserved_bytes >= stats.thread_cached_bytes);
        // A block freed last is the next one handed out (LIFO reuse, no lock).
        let again = pool.allocate(48).unwrap();
        assert_eq!(again, *blocks.last().unwrap(), "{kind:?}");
        // SAFETY: a live block of this pool, given back once.
        unsafe { pool.deallocate(again) }.unwrap();
    }
}

/// `allocate_or_none` serves a cached block whose count needs its cold part (a new peak,
/// a publish) on its fast path, the cold part in a tail call: the figures stay exact.
/// The walk keeps the live bytes near their high-water mark, so that many allocations
/// make a new peak.
#[test]
fn register_entry_points_count_exactly_at_new_peaks() {
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    for kind in KINDS {
        let pool = CpuPool::new("tc", cached(kind)).unwrap();
        let mut rng = SmallRng::seed_from_u64(11);
        let mut live: Vec<(NonNull<u8>, u64)> = Vec::new();
        let (mut used, mut peak, mut allocations, mut bytes) = (0u64, 0u64, 0u64, 0u64);
        for _ in 0..20_000 {
            if live.is_empty() || rng.gen_bool(0.52) {
                let max = if kind == AllocatorKind::FixedSize {
                    256
                } else {
                    2000
                };
                let size = rng.gen_range(1..=max);
                let p = pool.allocate_or_none(size, 0).expect("allocate");
                // SAFETY: a live block of this pool.
                let usable = unsafe { pool.usable_size(p) }.unwrap() as u64;
                used += usable;
                peak = peak.max(used);
                allocations += 1;
                bytes += usable;
                live.push((p, usable));
            } else {
                let (p, usable) = live.swap_remove(rng.gen_range(0..live.len()));
                // SAFETY: a live block of this pool, given back once.
                assert!(unsafe { pool.deallocate_or_false(p) });
                used -= usable;
            }
        }
        let stats = pool.stats();
        assert_eq!(stats.peak_used_bytes, peak, "{kind:?}");
        assert_eq!(stats.current_used_bytes, used, "{kind:?}");
        assert_eq!(stats.allocation_count, allocations, "{kind:?}");
        assert_eq!(stats.total_allocated_bytes, bytes, "{kind:?}");
        for (p, _) in live {
            // SAFETY: a live block of this pool, given back once.
            assert!(unsafe { pool.deallocate_or_false(p) });
        }
    }
}

#[test]
fn blocks_of_classes_beyond_the_cache_bypass_it_exactly() {
    // The size-classed strategy's classes go to 32 KiB, the cache's to 4 KiB: a freed
    // 8 or 16 KiB block reads as "no cache class" from the page-class map (capped at the
    // cache's class count) and goes back to the strategy; a large object likewise.
    let pool = CpuPool::new("beyond", cached(AllocatorKind::SizeClassed)).unwrap();
    for round in 0..50 {
        let big = [8 << 10, 16 << 10, 100 << 10].map(|size| pool.allocate(size + round).unwrap());
        let small = pool.allocate(64).unwrap();
        // SAFETY: live blocks of this pool, each freed once, through both entry points.
        unsafe {
            assert!(pool.deallocate_or_false(big[0]));
            pool.deallocate(big[1]).unwrap();
            assert!(pool.deallocate_or_false(big[2]));
            pool.deallocate(small).unwrap();
        }
        let stats = pool.stats();
        assert_eq!(stats.current_used_bytes, 0);
        // Only the 64-byte class (and what its refills brought) is cached.
        assert!(
            stats.thread_cached_bytes < 8 << 10,
            "{}",
            stats.thread_cached_bytes
        );
    }
    let stats = pool.stats();
    assert_eq!(stats.allocation_count, 200);
    assert_eq!(stats.free_count, 200);
}

#[test]
fn disabled_layer_caches_nothing() {
    for kind in KINDS {
        let mut config = cached(kind);
        config.thread_cache.enabled = false;
        let pool = CpuPool::new("off", config).unwrap();
        let blocks: Vec<_> = (0..100).map(|_| pool.allocate(32).unwrap()).collect();
        for b in blocks {
            // SAFETY: a live block of this pool, given back once.
            unsafe { pool.deallocate(b) }.unwrap();
        }
        assert_eq!(pool.stats().thread_cached_bytes, 0, "{kind:?}");
    }
}

#[test]
fn caches_are_flushed_when_their_thread_exits() {
    for kind in KINDS {
        let pool = Arc::new(CpuPool::new("exit", cached(kind)).unwrap());
        let worker = Arc::clone(&pool);
        std::thread::spawn(move || {
            let blocks: Vec<_> = (0..500).map(|_| worker.allocate(64).unwrap()).collect();
            for b in blocks {
                // SAFETY: a live block of this pool, given back once.
                unsafe { worker.deallocate(b) }.unwrap();
            }
            assert!(worker.stats().thread_cached_bytes > 0);
        })
        .join()
        .unwrap();
        let stats = pool.stats();
        assert_eq!(stats.thread_cached_bytes, 0, "{kind:?}: exit did not flush");
        assert_eq!(stats.allocation_count, 500);
        assert_eq!(stats.free_count, 500);
        assert_eq!(stats.current_used_bytes, 0);
    }
}

#[test]
fn blocks_freed_by_another_thread_are_reused_and_counted() {
    for kind in KINDS {
        let pool = Arc::new(CpuPool::new("cross", cached(kind)).unwrap());
        let (to_freer, freer_inbox) = mpsc::channel::<Vec<usize>>();
        let (freed, wait_freed) = mpsc::channel::<()>();
        let freer_pool = Arc::clone(&pool);
        let freer = std::thread::spawn(move || {
            for batch in freer_inbox {
                for addr in batch {
                    // SAFETY: a live block of this pool, given back once.
                    unsafe { freer_pool.deallocate(ptr(addr)) }.unwrap();
                }
                freed.send(()).unwrap();
            }
        });
        let mut seen = std::collections::HashSet::new();
        for round in 0..50 {
            let blocks: Vec<_> = (0..200).map(|_| pool.allocate(100).unwrap()).collect();
            for &b in &blocks {
                // SAFETY: live blocks of at least 100 bytes.
                unsafe { b.as_ptr().write_bytes(round as u8, 100) };
            }
            let batch = addrs(&blocks);
            seen.extend(batch.iter().copied());
            to_freer.send(batch).unwrap();
            // Lock-step, so that the freer's flushed blocks are there to be reused.
            wait_freed.recv().unwrap();
        }
        drop(to_freer);
        freer.join().unwrap();
        let stats = pool.stats();
        assert_eq!(stats.allocation_count, 50 * 200, "{kind:?}");
        assert_eq!(stats.free_count, 50 * 200);
        assert_eq!(stats.current_used_bytes, 0);
        assert_eq!(stats.live_count(), 0);
        // The freer's cache went back to the pool on exit; blocks were reused, not leaked.
        assert!(seen.len() < 50 * 200, "{kind:?}: no block was ever reused");
        let peak = stats.peak_reserved_bytes;
        assert!(
            peak < 8 << 20,
            "{kind:?}: reserved {peak} for 20 KiB live at a time"
        );
    }
}

#[test]
fn many_threads_hammer_one_pool_without_overlap() {
    for kind in KINDS {
        let pool = Arc::new(CpuPool::new("hammer", cached(kind)).unwrap());
        let threads = 6;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let pool = Arc::clone(&pool);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut live: Vec<(NonNull<u8>, u8, usize)> = Vec::new();
                    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ t as u64;
                    for i in 0..20_000 {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        if live.len() < 64 && (!seed.is_multiple_of(3) || live.is_empty()) {
                            let size = 1 + (seed >> 20) as usize % 250;
                            let p = pool.allocate(size).unwrap();
                            let tag = (i % 251) as u8;
                            // SAFETY: live block of `size` bytes.
                            unsafe { p.as_ptr().write_bytes(tag, size) };
                            live.push((p, tag, size));
                        } else {
                            let (p, tag, size) =
                                live.swap_remove((seed >> 8) as usize % live.len());
                            // SAFETY: still live, `size` bytes.
                            let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), size) };
                            assert!(bytes.iter().all(|&b| b == tag), "block overwritten");
                            // SAFETY: a live block of this pool, given back once.
                            unsafe { pool.deallocate(p) }.unwrap();
                        }
                    }
                    addrs(&live.iter().map(|l| l.0).collect::<Vec<_>>())
                })
            })
            .collect();
        // The main thread reads the statistics while they run: the unpublished counts of
        // running threads may be read mid-update, but never wildly off.
        while !handles.iter().all(|h| h.is_finished()) {
            let stats = pool.stats();
            assert!(
                stats.allocation_count <= threads as u64 * 20_000,
                "{kind:?}"
            );
            assert!(stats.free_count <= threads as u64 * 20_000, "{kind:?}");
            std::thread::yield_now();
        }
        // Leftovers are freed by the main thread: cross-thread frees after the owners exit.
        for h in handles {
            for addr in h.join().unwrap() {
                // SAFETY: a live block of this pool, given back once.
                unsafe { pool.deallocate(ptr(addr)) }.unwrap();
            }
        }
        let stats = pool.stats();
        assert_eq!(stats.current_used_bytes, 0, "{kind:?}");
        assert_eq!(stats.allocation_count, stats.free_count);
    }
}

#[test]
fn reset_forgets_every_threads_cache() {
    for kind in KINDS {
        let mut config = cached(kind);
        config.return_policy = ReturnPolicy::OnReset;
        let mut pool = Arc::new(CpuPool::new("reset", config).unwrap());
        let (give, take) = mpsc::channel::<Arc<CpuPool>>();
        let (done, filled) = mpsc::channel::<Vec<usize>>();
        let idle_pool = Arc::clone(&pool);
        let idle = std::thread::spawn(move || {
            let blocks: Vec<_> = (0..300).map(|_| idle_pool.allocate(32).unwrap()).collect();
            for &b in &blocks {
                // SAFETY: a live block of this pool, given back once.
                unsafe { idle_pool.deallocate(b) }.unwrap();
            }
            // Let go of the pool but stay alive, its cache still registered, while the
            // main thread resets.
            drop(idle_pool);
            done.send(Vec::new()).unwrap();
            let idle_pool = take.recv().unwrap();
            let fresh: Vec<_> = (0..50).map(|_| idle_pool.allocate(32).unwrap()).collect();
            done.send(addrs(&fresh)).unwrap();
        });
        filled.recv().unwrap();
        let mine: Vec<_> = (0..100).map(|_| pool.allocate(32).unwrap()).collect();
        assert!(pool.stats().thread_cached_bytes > 0);
        if kind == AllocatorKind::LockFree {
            // `&self` cannot exclude a lock-free pool's threads: the `&mut` form.
            Arc::get_mut(&mut pool).unwrap().reset_exclusive().unwrap();
        } else {
            // SAFETY: the other thread is in no pool call, and no block handed out before
            // is used after the reset.
            unsafe { pool.reset() }.unwrap();
        }
        let stats = pool.stats();
        assert_eq!(stats.thread_cached_bytes, 0, "{kind:?}");
        assert_eq!(stats.current_used_bytes, 0);
        assert_eq!(stats.live_count(), 0);
        drop(mine);
        // After the reset both threads get blocks again, none handed out twice.
        let after: Vec<_> = (0..50).map(|_| pool.allocate(32).unwrap()).collect();
        give.send(Arc::clone(&pool)).unwrap();
        let theirs = filled.recv().unwrap();
        idle.join().unwrap();
        let mut all = addrs(&after);
        all.extend(theirs);
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all.len(),
            n,
            "{kind:?}: a block was handed out twice after reset"
        );
        for a in all {
            // SAFETY: a live block of this pool, given back once.
            unsafe { pool.deallocate(ptr(a)) }.unwrap();
        }
        assert_eq!(pool.stats().current_used_bytes, 0);
    }
}

#[test]
fn lock_free_pools_above_16_byte_alignment_run_without_the_layer() {
    // The cache's classes at 64-byte alignment are not the allocator's slab classes, on
    // which the free fast path's page-class map relies: the heaps serve every call.
    let mut config = cached(AllocatorKind::LockFree);
    config.alignment = 64;
    let pool = CpuPool::new("lf64", config).unwrap();
    let blocks: Vec<_> = (0..200)
        .map(|i| pool.allocate(16 + i % 300).unwrap())
        .collect();
    for &b in &blocks {
        assert_eq!(b.as_ptr() as usize % 64, 0);
        // SAFETY: a live block of this pool, given back once.
        unsafe { pool.deallocate(b) }.unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.thread_cached_bytes, 0);
    assert_eq!(stats.live_count(), 0);
    assert_eq!(stats.allocation_count, 200);
}

#[test]
fn out_of_memory_is_an_error_and_the_pool_stays_usable() {
    for kind in KINDS {
        let mut config = cached(kind);
        config.initial_size_bytes = 1 << 20;
        config.max_size_bytes = Some(2 << 20);
        config.chunk_size_bytes = 256 << 10;
        let pool = CpuPool::new("oom", config).unwrap();
        let mut blocks = Vec::new();
        let err = loop {
            match pool.allocate(200) {
                Ok(p) => blocks.push(p),
                Err(e) => break e,
            }
            assert!(blocks.len() < 100_000, "{kind:?}: no limit hit");
        };
        match err {
            PoolError::OutOfMemory {
                requested_bytes, ..
            } => assert_eq!(requested_bytes, 200, "{kind:?}"),
            other => panic!("{kind:?}: {other}"),
        }
        assert!(pool.stats().failure_count >= 1);
        for b in blocks.drain(..) {
            // SAFETY: a live block of this pool, given back once.
            unsafe { pool.deallocate(b) }.unwrap();
        }
        // Usable again, and every block comes back.
        for _ in 0..1000 {
            blocks.push(pool.allocate(200).unwrap());
        }
        for b in blocks {
            // SAFETY: a live block of this pool, given back once.
            unsafe { pool.deallocate(b) }.unwrap();
        }
        assert_eq!(pool.stats().current_used_bytes, 0);
    }
}

#[test]
fn over_aligned_requests_are_served_from_the_cache() {
    // The size-classed strategy and the lock-free allocator align each class's blocks to
    // its size's lowest set bit (up to 4 KiB): a request aligned beyond the pool's 16
    // bytes takes a class whose size is a multiple of its alignment, from this thread's
    // magazine, so the block just freed comes straight back.
    for kind in [AllocatorKind::SizeClassed, AllocatorKind::LockFree] {
        let pool = CpuPool::new("aligned", cached(kind)).unwrap();
        for shift in 5..=12 {
            let align = 1usize << shift;
            for size in [1, 24, 100, 200, 1000, 3000, align - 1, align, 4096] {
                let flags = AllocFlags::aligned(align);
                let a = pool.allocate_with(size, flags).unwrap();
                assert_eq!(
                    a.as_ptr() as usize % align,
                    0,
                    "{kind:?}: {size} at {align}"
                );
                // SAFETY: a live block of at least `size` bytes.
                unsafe { a.as_ptr().write_bytes(0x5A, size) };
                // SAFETY: a live block of this pool, given back once.
                unsafe { pool.deallocate(a) }.unwrap();
                assert!(pool.stats().thread_cached_bytes > 0, "{kind:?}");
                let b = pool.allocate_with(size, flags).unwrap();
                assert_eq!(a, b, "{kind:?}: {size} at {align} from the magazine");
                // SAFETY: as above.
                unsafe { pool.deallocate(b) }.unwrap();
            }
        }
        assert_eq!(pool.stats().current_used_bytes, 0);
    }
}

#[test]
fn cached_blocks_do_not_make_a_large_request_fail() {
    // TLSF can only serve the big block once the small ones cached by this thread have
    // gone back and coalesced: the failing refill drains the cache and retries.
    let mut config = cached(AllocatorKind::VariableSize);
    config.initial_size_bytes = 1 << 20;
    config.max_size_bytes = Some(1 << 20);
    let pool = CpuPool::new("drain", config).unwrap();
    let small: Vec<_> = (0..3000).map(|_| pool.allocate(64).unwrap()).collect();
    for b in small {
        // SAFETY: a live block of this pool, given back once.
        unsafe { pool.deallocate(b) }.unwrap();
    }
    assert!(pool.stats().thread_cached_bytes > 0);
    let big = pool
        .allocate(900 << 10)
        .expect("cache drained before failing");
    // SAFETY: a live block of this pool, given back once.
    unsafe { pool.deallocate(big) }.unwrap();
}

#[test]
fn checked_mode_bypasses_the_cache_and_catches_double_and_foreign_frees() {
    for kind in KINDS {
        let mut config = cached(kind);
        config.debug.check_pointers = true;
        let pool = CpuPool::new("checked", config).unwrap();
        let p = pool.allocate(40).unwrap();
        pool.deallocate_checked(p).unwrap();
        assert!(matches!(
            pool.deallocate_checked(p),
            Err(PoolError::InvalidPointer { .. })
        ));
        let mut local = [0u64; 8];
        let foreign = NonNull::new(local.as_mut_ptr().cast::<u8>()).unwrap();
        assert!(matches!(
            pool.deallocate_checked(foreign),
            Err(PoolError::InvalidPointer { .. })
        ));
        assert_eq!(pool.stats().thread_cached_bytes, 0, "{kind:?}");
    }
}

#[test]
fn live_tracking_and_poisoning_work_with_the_cache() {
    for kind in KINDS {
        let mut config = cached(kind);
        config.debug.track_live = true;
        config.debug.poison_on_free = true;
        let pool = CpuPool::new("tracked", config).unwrap();
        let p = pool.allocate(40).unwrap();
        // SAFETY: a live block of this pool, given back once.
        unsafe { pool.deallocate(p) }.unwrap();
        assert!(pool.stats().thread_cached_bytes > 0, "{kind:?}: not cached");
        // SAFETY: the block sits in this thread's cache, unused; reading it is reading
        // pool memory we own.
        let first = unsafe { p.as_ptr().add(8).read() };
        assert_eq!(first, pools::config::POISON_BYTE, "{kind:?}: not poisoned");
        let q = pool.allocate(40).unwrap();
        assert_eq!(pool.leak_report().len(), 1);
        // SAFETY: a live block of this pool, given back once.
        unsafe { pool.deallocate(q) }.unwrap();
        assert!(pool.leak_report().is_empty());
    }
}

#[test]
fn one_thread_never_holds_more_than_its_budget() {
    for kind in [AllocatorKind::SizeClassed, AllocatorKind::VariableSize] {
        let mut config = cached(kind);
        config.thread_cache = ThreadCacheConfig {
            max_thread_bytes: 8 << 10,
            max_class_bytes: 2 << 10,
            ..ThreadCacheConfig::default()
        };
        let pool = CpuPool::new("budget", config).unwrap();
        let mut blocks = Vec::new();
        for size in (16..=4096).step_by(16) {
            for _ in 0..8 {
                blocks.push(pool.allocate(size).unwrap());
            }
        }
        for b in blocks {
            // SAFETY: a live block of this pool, given back once.
            unsafe { pool.deallocate(b) }.unwrap();
            assert!(pool.stats().thread_cached_bytes <= 8 << 10, "{kind:?}");
        }
    }
}

/// A move through the cache whose old block finds its magazine full: the copy and the
/// free still happen (the slow end of `reallocate_move`), counted exactly.
#[test]
fn a_move_into_a_full_magazine_copies_and_frees_the_old_block() {
    // TLSF blocks of up to 256 bytes move through the cache as size-classed ones do.
    for kind in [AllocatorKind::SizeClassed, AllocatorKind::VariableSize] {
        a_move_into_a_full_magazine(kind);
    }
}

fn a_move_into_a_full_magazine(kind: AllocatorKind) {
    let mut config = cached(kind);
    config.thread_cache = ThreadCacheConfig {
        max_class_blocks: 2,
        ..ThreadCacheConfig::default()
    };
    let pool = CpuPool::new("full", config).unwrap();
    let small: Vec<_> = (0..3).map(|_| pool.allocate(48).unwrap()).collect();
    let target = pool.allocate(200).unwrap();
    // SAFETY: live blocks of this pool, given back once: the 48-byte magazine is full (2)
    // and the 200-byte class has a block cached for the move.
    unsafe {
        pool.deallocate(small[0]).unwrap();
        pool.deallocate(small[1]).unwrap();
        pool.deallocate(target).unwrap();
    }
    let old = small[2];
    // SAFETY: `old` is live and 48 bytes long.
    unsafe { old.as_ptr().write_bytes(0x5a, 48) };
    let before = pool.stats();
    // SAFETY: `old` is a live block of this pool, not used after a successful move.
    let new = unsafe { pool.reallocate_or_none(old, 150) }.expect("move");
    assert_ne!(new, old, "{kind:?}: a 48-byte block cannot hold 150 bytes");
    // SAFETY: the new block is live and at least 150 bytes long.
    let bytes = unsafe { std::slice::from_raw_parts(new.as_ptr(), 48) };
    assert!(
        bytes.iter().all(|&b| b == 0x5a),
        "{kind:?}: contents lost in the move"
    );
    let after = pool.stats();
    assert_eq!(after.allocation_count, before.allocation_count + 1);
    assert_eq!(after.free_count, before.free_count + 1);
    assert_eq!(after.live_count(), before.live_count());
    // SAFETY: the new block is live, given back once.
    unsafe { pool.deallocate(new) }.unwrap();
    assert_eq!(pool.stats().current_used_bytes, 0);
}

#[test]
fn bad_cache_limits_are_rejected_with_the_field() {
    let mut config = PoolConfig::default_cpu();
    config.thread_cache.max_class_bytes = 1 << 20;
    config.thread_cache.max_thread_bytes = 1 << 10;
    let err = CpuPool::new("bad", config).unwrap_err().to_string();
    assert!(err.contains("thread_cache.max_class_bytes"), "{err}");
    let mut config = PoolConfig::default_cpu();
    config.thread_cache.max_class_blocks = 0;
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("thread_cache.max_class_blocks"), "{err}");
    let text = PoolConfig::default_cpu().to_toml();
    assert!(text.contains("[thread_cache]"), "{text}");
    assert_eq!(
        PoolConfig::from_toml(&text).unwrap(),
        PoolConfig::default_cpu()
    );
}

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        70 => 0usize..=512,
        20 => 513usize..=5000,
        10 => 5001usize..=70_000,
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        50 => (size_strategy(), prop_oneof![9 => Just(0u8), 1 => 5u8..=7])
            .prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        40 => any::<usize>().prop_map(|index| Op::Free { index }),
        8 => (any::<usize>(), size_strategy()).prop_map(|(index, size)| Op::Realloc { index, size }),
        2 => Just(Op::Reset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every kind with tiny cache limits, so magazines fill, trim, refill and drain all
    /// the time; the shadow model checks overlap, contents and exact statistics after
    /// every step.
    #[test]
    fn shadow_model_with_tiny_caches(
        kind in prop::sample::select(KINDS.to_vec()),
        blocks in 2usize..=6,
        class_bytes in prop::sample::select(vec![64usize, 512, 4096]),
        ret in prop::sample::select(vec![ReturnPolicy::Keep, ReturnPolicy::OnReset, ReturnPolicy::WhenEmpty]),
        ops in prop::collection::vec(op_strategy(), 1..400),
    ) {
        let mut config = cached(kind);
        config.block_size_bytes = 5000;
        config.return_policy = ret;
        config.thread_cache = ThreadCacheConfig {
            enabled: true,
            max_block_bytes: 4096,
            max_class_bytes: class_bytes,
            max_class_blocks: blocks,
            max_thread_bytes: 8192,
        };
        let pool = CpuPool::new("model", config).unwrap();
        let mut model = Model::default();
        // A lock-free pool resets only through `reset_exclusive`
        // (`reset_forgets_every_threads_cache`); `MemoryPool::reset` refuses it.
        let resets = kind != AllocatorKind::LockFree;
        for op in ops.iter().filter(|op| resets || !matches!(op, Op::Reset)) {
            model.step(&pool, op, false);
            prop_assert!(pool.stats().thread_cached_bytes <= 8192);
        }
        model.drain(&pool);
    }
}
