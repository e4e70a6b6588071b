//! One conformance suite for every CPU pool (RMM-style): each test body below runs for every
//! allocator kind in every sync mode it supports, instantiated with one line per variant at
//! the bottom of this file. A new strategy or sync mode gets the whole suite by adding a line.
//!
//! What every variant must do: survive a random program checked by the shadow model
//! (`common::Model`), with and without the debug checks; answer double frees, foreign and
//! interior pointers with `InvalidPointer` when checked, and refuse the `_checked` entry
//! points with `InvalidOperation` when not; honour sizes, zeroing and alignments; reset
//! safely; fail at `max_size_bytes` with the numbers and keep working; serve
//! `allocator_api2` collections.

mod common;

use common::{Model, Op};
use pools::{
    AllocFlags, AllocatorKind, CpuPool, MemoryPool, PoolConfig, PoolError, ReturnPolicy, SyncMode,
};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::ptr::NonNull;

/// The variant's base config: `allocator` in `sync` mode, otherwise the default preset.
fn variant(allocator: AllocatorKind, sync: SyncMode) -> PoolConfig {
    let mut c = PoolConfig::default_cpu();
    c.allocator = allocator;
    c.sync = sync;
    c
}

/// The largest request a variant serves without a large-object path: fixed-size pools
/// serve one block size only.
fn max_request(c: &PoolConfig) -> usize {
    if c.allocator == AllocatorKind::FixedSize {
        c.block_size_bytes
    } else {
        20_000
    }
}

fn random_program(base: PoolConfig, checked: bool) {
    let mut config = base;
    config.block_size_bytes = 512;
    config.debug.check_pointers = checked;
    config.debug.poison_on_free = checked;
    let summary = config.summary();
    let pool = CpuPool::new("conformance", config.clone()).unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut model = Model::default();
    let max = max_request(&config);
    for _ in 0..20_000 {
        let op = match rng.gen_range(0..100) {
            0..=49 => Op::Alloc {
                size: rng.gen_range(0..=max),
                align_shift: rng.gen_range(0..=6),
            },
            50..=91 => Op::Free { index: rng.gen() },
            _ => Op::Realloc {
                index: rng.gen(),
                size: rng.gen_range(1..=max),
            },
        };
        model.step(&pool, &op, checked);
    }
    assert_eq!(model.failures, 0, "{summary}");
    model.drain(&pool);
}

fn checked(base: PoolConfig, track_live: bool) -> PoolConfig {
    let mut c = base;
    c.debug.check_pointers = true;
    c.debug.poison_on_free = true;
    c.debug.track_live = track_live;
    c.debug.leak_report = false;
    c
}

fn is_invalid_pointer<T: std::fmt::Debug>(r: &Result<T, PoolError>) -> bool {
    matches!(r, Err(PoolError::InvalidPointer { .. }))
}

fn checked_pools_reject_bad_pointers(base: PoolConfig) {
    for track_live in [false, true] {
        let pool = CpuPool::new("checked", checked(base.clone(), track_live)).unwrap();
        assert!(pool.verifies_pointers());
        let p = pool.allocate(48).unwrap();
        let q = pool.allocate(48).unwrap();
        pool.deallocate_checked(p).unwrap();
        // A double free: the checked form and (in checked mode) the unsafe form too.
        let err = pool.deallocate_checked(p).unwrap_err();
        assert!(
            matches!(err, PoolError::InvalidPointer { .. }),
            "{}: {err}",
            base.summary()
        );
        assert!(err.to_string().contains("checked"), "names the pool: {err}");
        // SAFETY: deliberately breaks the contract; checked mode promises an error here.
        assert!(is_invalid_pointer(&unsafe { pool.deallocate(p) }));
        // The next two allocations are distinct: the double free did not corrupt the pool.
        let a = pool.allocate(48).unwrap();
        let b = pool.allocate(48).unwrap();
        assert_ne!(a, b);
        let mut on_stack = [0u8; 64];
        let foreign = NonNull::new(on_stack.as_mut_ptr()).unwrap();
        assert!(is_invalid_pointer(&pool.deallocate_checked(foreign)));
        assert!(is_invalid_pointer(&pool.usable_size_checked(foreign)));
        assert!(is_invalid_pointer(&pool.reallocate_checked(foreign, 10)));
        let unmapped = NonNull::new(0xdead_0000 as *mut u8).unwrap();
        assert!(is_invalid_pointer(&pool.deallocate_checked(unmapped)));
        assert!(is_invalid_pointer(&pool.reallocate_checked(unmapped, 64)));
        let interior = NonNull::new(q.as_ptr().wrapping_add(8)).unwrap();
        assert!(
            is_invalid_pointer(&pool.deallocate_checked(interior)),
            "{} interior",
            base.summary()
        );
        assert!(pool.usable_size_checked(q).unwrap() >= 48);
        let q = pool
            .reallocate_checked(q, max_request(&base).min(4000))
            .unwrap();
        for block in [q, a, b] {
            pool.deallocate_checked(block).unwrap();
        }
        assert_eq!(pool.stats().live_count(), 0);
    }
}

fn unchecked_pools_refuse_the_checked_forms(base: PoolConfig) {
    let pool = CpuPool::new("unchecked", base.clone()).unwrap();
    assert!(!pool.verifies_pointers());
    let p = pool.allocate(48).unwrap();
    let unmapped = NonNull::new(0xdead_0000 as *mut u8).unwrap();
    for ptr in [p, unmapped] {
        assert!(matches!(
            pool.deallocate_checked(ptr),
            Err(PoolError::InvalidOperation { .. })
        ));
        assert!(matches!(
            pool.usable_size_checked(ptr),
            Err(PoolError::InvalidOperation { .. })
        ));
        assert!(matches!(
            pool.reallocate_checked(ptr, 100),
            Err(PoolError::InvalidOperation { .. })
        ));
    }
    // Nothing changed: the block is still live and can be freed once.
    assert_eq!(pool.stats().live_count(), 1);
    // SAFETY: p is a live block of this pool, freed once.
    unsafe { pool.deallocate(p) }.unwrap();
    assert_eq!(pool.stats().live_count(), 0);
}

fn sizes_zeroing_and_alignments(base: PoolConfig) {
    let mut config = base;
    config.block_size_bytes = 512;
    let pool = CpuPool::new("sizes", config.clone()).unwrap();
    let p = pool.allocate(0).unwrap();
    // SAFETY: p is a live block of this pool.
    assert!(unsafe { pool.usable_size(p) }.unwrap() >= 1);
    // SAFETY: as above, freed once.
    unsafe { pool.deallocate(p) }.unwrap();
    // Through every entry point, 0 bytes are a distinct block of at least 1 byte.
    let a = pool.allocate_or_none(0, 1).unwrap();
    let b = pool.allocate_or_none(0, 1).unwrap();
    assert_ne!(a, b);
    // SAFETY: a and b are live blocks of this pool; each is reallocated or freed once.
    unsafe {
        assert!(pool.usable_size(a).unwrap() >= 1);
        let a = pool.reallocate_or_none(a, 0).unwrap();
        assert!(pool.usable_size(a).unwrap() >= 1);
        assert!(pool.deallocate_or_false(a));
        assert!(pool.deallocate_or_false(b));
    }
    let max_align = if config.allocator == AllocatorKind::FixedSize {
        512
    } else {
        4096
    };
    let mut align = 1;
    while align <= max_align {
        let p = pool
            .allocate_with(
                100,
                AllocFlags {
                    align,
                    zeroed: true,
                },
            )
            .unwrap_or_else(|e| panic!("{}: align {align}: {e}", config.summary()));
        assert_eq!(p.as_ptr() as usize % align, 0);
        // SAFETY: p is a live block of at least 100 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p.as_ptr(), 100) };
        assert!(bytes.iter().all(|&b| b == 0));
        // SAFETY: p is a live block of this pool, freed once.
        unsafe { pool.deallocate(p) }.unwrap();
        align *= 2;
    }
    let err = pool.allocate_with(8, AllocFlags::aligned(3)).unwrap_err();
    assert!(matches!(err, PoolError::InvalidOperation { .. }));
}

fn reset_releases_everything(base: PoolConfig) {
    let mut c = base;
    c.block_size_bytes = 256;
    c.return_policy = ReturnPolicy::OnReset;
    let summary = c.summary();
    let lock_free = c.allocator == AllocatorKind::LockFree;
    let mut pool = CpuPool::new("reset", c).unwrap();
    let initial = pool.stats().reserved_bytes;
    let blocks: Vec<_> = (0..20_000).map(|_| pool.allocate(200).unwrap()).collect();
    assert!(pool.stats().reserved_bytes > initial, "{summary}");
    assert_eq!(pool.stats().live_count(), blocks.len() as u64);
    if lock_free {
        // `&self` cannot exclude other threads from a lock-free pool.
        // SAFETY: the call is refused before anything is released.
        let refused = unsafe { MemoryPool::reset(&pool) };
        assert!(matches!(refused, Err(PoolError::InvalidOperation { .. })));
        assert_eq!(pool.stats().live_count(), blocks.len() as u64);
    }
    drop(blocks);
    pool.reset_exclusive().unwrap();
    let stats = pool.stats();
    assert_eq!(stats.current_used_bytes, 0);
    assert_eq!(stats.live_count(), 0);
    if !lock_free {
        assert_eq!(stats.reserved_bytes, initial, "{summary}");
    }
    // Usable again.
    let p = pool.allocate(200).unwrap();
    // SAFETY: p is a live block of this pool, freed once.
    unsafe { pool.deallocate(p) }.unwrap();
}

/// Large objects freed and allocated again in a steady state reuse their memory (no new
/// mapping per object), a much smaller request does not hold a big freed mapping, and the
/// kept mappings are bounded once everything is freed (a quarter of the most live large
/// bytes, or a couple of segments).
fn freed_large_objects_are_reused(base: PoolConfig) {
    const MIB: usize = 1 << 20;
    let summary = base.summary();
    let tlsf = base.allocator == AllocatorKind::VariableSize;
    let fixed = base.allocator == AllocatorKind::FixedSize;
    let pool = CpuPool::new("large", base).unwrap();
    if fixed {
        // One block size only: a large request is refused, not served.
        let refused = pool.allocate(48 * MIB);
        assert!(
            matches!(refused, Err(PoolError::InvalidOperation { .. })),
            "{summary}"
        );
        return;
    }
    let initial = pool.stats().reserved_bytes;
    let mut blocks: Vec<_> = (0..6).map(|_| pool.allocate(48 * MIB).unwrap()).collect();
    let reserved = pool.stats().reserved_bytes;
    for round in 0..20 {
        let p = blocks.remove(round % blocks.len());
        // SAFETY: p is a live block of this pool, freed once.
        unsafe { pool.deallocate(p) }.unwrap();
        // Within a quarter of the freed object's size: served by its memory.
        let size = if round % 2 == 0 { 48 * MIB } else { 40 * MIB };
        blocks.push(pool.allocate(size).unwrap());
        assert_eq!(
            pool.stats().reserved_bytes,
            reserved,
            "{summary}: round {round}"
        );
    }
    if !tlsf {
        // A sixth of a freed mapping's size: a mapping of its own, the big one kept.
        let p = blocks.pop().unwrap();
        // SAFETY: as above.
        unsafe { pool.deallocate(p) }.unwrap();
        blocks.push(pool.allocate(8 * MIB).unwrap());
        assert!(pool.stats().reserved_bytes > reserved, "{summary}");
    }
    let most_live = pool.stats().reserved_bytes - initial;
    for p in blocks {
        // SAFETY: as above.
        unsafe { pool.deallocate(p) }.unwrap();
    }
    assert_eq!(pool.stats().current_used_bytes, 0, "{summary}");
    if !tlsf {
        let kept = pool.stats().reserved_bytes - initial;
        assert!(
            kept <= 8 * MIB as u64 + most_live / 4,
            "{summary}: {kept} bytes kept after freeing every large object"
        );
    }
}

/// A cache full of older freed large objects makes room for the newest: a program's next
/// iteration asks for what its last one freed.
fn the_newest_freed_large_object_is_kept(base: PoolConfig) {
    const MIB: usize = 1 << 20;
    if matches!(
        base.allocator,
        AllocatorKind::FixedSize | AllocatorKind::VariableSize
    ) {
        // No large-object cache: one block size, or TLSF's own chunks.
        return;
    }
    let summary = base.summary();
    let pool = CpuPool::new("newest", base).unwrap();
    // Live large objects let the cache hold a quarter of their bytes (128 MiB).
    let ballast: Vec<_> = (0..8).map(|_| pool.allocate(64 * MIB).unwrap()).collect();
    let mut last = None;
    for size_mib in 9..40 {
        let p = pool.allocate(size_mib * MIB).unwrap();
        // SAFETY: a live block of this pool, freed once.
        unsafe { pool.deallocate(p) }.unwrap();
        last = Some((p, size_mib * MIB));
    }
    let (freed, size) = last.unwrap();
    let again = pool.allocate(size).unwrap();
    assert_eq!(
        again, freed,
        "{summary}: the newest freed mapping serves the same size"
    );
    // SAFETY: as above.
    unsafe { pool.deallocate(again) }.unwrap();
    for p in ballast {
        // SAFETY: as above.
        unsafe { pool.deallocate(p) }.unwrap();
    }
}

fn oom_at_the_limit_reports_numbers_and_recovers(base: PoolConfig) {
    let limit = 4 << 20;
    let mut c = base;
    c.block_size_bytes = 4096;
    c.initial_size_bytes = 0;
    c.chunk_size_bytes = 256 << 10;
    c.max_size_bytes = Some(limit);
    let summary = c.summary();
    let pool = CpuPool::new("oom", c).unwrap();
    let mut blocks = Vec::new();
    let err = loop {
        match pool.allocate(4000) {
            Ok(p) => blocks.push(p),
            Err(e) => break e,
        }
        assert!(blocks.len() < 10_000, "{summary}: limit not enforced");
    };
    match &err {
        PoolError::OutOfMemory {
            pool,
            requested_bytes,
            limit_bytes,
            ..
        } => {
            assert_eq!(pool, "oom");
            assert_eq!(*requested_bytes, 4000, "{summary}: {err}");
            assert_eq!(*limit_bytes, limit);
        }
        other => panic!("{summary}: expected OutOfMemory, got {other}"),
    }
    assert!(err.to_string().contains("4000"), "{err}");
    let stats = pool.stats();
    assert!(stats.reserved_bytes <= limit as u64);
    assert_eq!(stats.failure_count, 1);
    assert!(
        blocks.len() * 4000 >= limit / 2,
        "{summary}: only {} blocks",
        blocks.len()
    );
    // Still usable: free one, allocate one.
    // SAFETY: every entry of `blocks` is a live block of this pool, freed once.
    unsafe { pool.deallocate(blocks.pop().unwrap()) }.unwrap();
    blocks.push(pool.allocate(4000).unwrap());
    // A request beyond the limit fails without disturbing anything.
    assert!(matches!(
        pool.allocate(limit + 1),
        Err(PoolError::OutOfMemory { .. }) | Err(PoolError::InvalidOperation { .. })
    ));
    // The `_or_none` entry point fails the same way, and counts it.
    let failures = pool.stats().failure_count;
    assert!(pool.allocate_or_none(4000, 0).is_none(), "{summary}");
    assert_eq!(pool.stats().failure_count, failures + 1, "{summary}");
    for p in blocks {
        // SAFETY: as above.
        unsafe { pool.deallocate(p) }.unwrap();
    }
    assert_eq!(pool.stats().live_count(), 0);
}

fn allocator_api_collections(base: PoolConfig) {
    if base.allocator == AllocatorKind::FixedSize {
        // One block size: a growing Vec outgrows it by design.
        return;
    }
    let pool = CpuPool::new("vec-in", base).unwrap();
    {
        let mut v = allocator_api2::vec::Vec::new_in(&pool);
        for i in 0..50_000u32 {
            v.push(i);
        }
        assert_eq!(v.len(), 50_000);
        assert_eq!(v[49_999], 49_999);
        let addr = NonNull::new(v.as_ptr() as *mut u8).unwrap();
        assert_eq!(pool.stats().live_count(), 1);
        // SAFETY: the Vec's buffer is a live block of this pool, and the Vec is not
        // touched concurrently.
        assert!(unsafe { pool.usable_size(addr) }.unwrap() >= 200_000);
        let mut zeroed = allocator_api2::vec::Vec::<u64, _>::with_capacity_in(10, &pool);
        zeroed.extend_from_slice(&[1, 2, 3]);
        assert_eq!(zeroed.iter().sum::<u64>(), 6);
    }
    assert_eq!(pool.stats().live_count(), 0);
}

/// A growing reallocation that moves its block gets slack (a quarter, and at least the new
/// size up to 64 bytes), so the next few growth steps stay in place
/// (`CpuPool::move_target`); a pool with a byte cap gets the exact size. The contents
/// survive both.
fn growing_realloc_gets_slack(base: PoolConfig) {
    if base.allocator == AllocatorKind::FixedSize {
        return; // one block size: a growing block cannot move
    }
    for capped in [false, true] {
        let mut config = base.clone();
        if capped {
            config.max_size_bytes = Some(64 << 20);
        }
        let pool = CpuPool::new("slack", config).unwrap();
        let p = pool.allocate(600).unwrap();
        // Neighbours, so that TLSF cannot grow p in place either.
        let blockers: Vec<_> = (0..4).map(|_| pool.allocate(600).unwrap()).collect();
        // SAFETY: p is a live block of at least 600 bytes.
        unsafe { p.as_ptr().write_bytes(0x5a, 600) };
        // SAFETY: p is a live block of this pool.
        let q = unsafe { pool.reallocate(p, 1200) }.unwrap();
        // SAFETY: q is live.
        let usable = unsafe { pool.usable_size(q) }.unwrap();
        // SAFETY: q holds at least the 600 bytes copied from p.
        let kept = unsafe { std::slice::from_raw_parts(q.as_ptr(), 600) };
        assert!(
            kept.iter().all(|&b| b == 0x5a),
            "contents lost (capped: {capped})"
        );
        assert_ne!(
            q, p,
            "1200 bytes fit a 600-byte block's place (capped: {capped})"
        );
        if capped {
            assert!(
                usable < 1500,
                "capped pool got slack: {usable} usable for 1200"
            );
        } else {
            assert!(usable >= 1500, "no slack: {usable} usable for 1200");
            // The next growth step stays in place.
            // SAFETY: q is live.
            let r = unsafe { pool.reallocate(q, 1400) }.unwrap();
            assert_eq!(r, q, "a growth step within the slack moved the block");
        }
        for b in blockers.into_iter().chain([q]) {
            // SAFETY: b is live (the in-place step kept q) and unused from here.
            unsafe { pool.deallocate(b) }.unwrap();
        }
    }
    // A small block that doubles gets at least its new size again (up to 64 bytes), so
    // sqlite-style 16, 24, 40 growth moves every other step, not every step.
    let pool = CpuPool::new("small slack", base).unwrap();
    let p = pool.allocate(16).unwrap();
    let blockers: Vec<_> = (0..4).map(|_| pool.allocate(16).unwrap()).collect();
    // SAFETY: p is a live block of this pool.
    let q = unsafe { pool.reallocate(p, 24) }.unwrap();
    // SAFETY: q is live.
    let usable = unsafe { pool.usable_size(q) }.unwrap();
    if q != p {
        assert!(usable >= 48, "small growth got {usable} usable for 24");
    }
    // SAFETY: q is live.
    let r = unsafe { pool.reallocate(q, 40) }.unwrap();
    assert_eq!(r, q, "40 bytes did not fit the slack of a 24-byte block");
    for b in blockers.into_iter().chain([r]) {
        // SAFETY: b is live and unused from here.
        unsafe { pool.deallocate(b) }.unwrap();
    }
}

/// Two threads allocate, hand blocks to each other and free what the other allocated.
fn cross_thread_frees(base: PoolConfig) {
    if base.sync == SyncMode::SingleThreaded {
        return;
    }
    let max = max_request(&base).min(4096);
    let pool = CpuPool::new("threads", base).unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<usize>(1024);
    std::thread::scope(|s| {
        let producer = &pool;
        s.spawn(move || {
            for i in 0..50_000usize {
                let size = 1 + (i * 7919) % max;
                let p = producer.allocate(size).unwrap();
                // SAFETY: p is a live block of at least `size` bytes.
                unsafe { p.as_ptr().write_bytes((i % 251) as u8, size.min(64)) };
                tx.send(p.as_ptr() as usize).unwrap();
            }
        });
        for i in 0..50_000usize {
            let addr = rx.recv().unwrap();
            let p = NonNull::new(addr as *mut u8).unwrap();
            // SAFETY: the producer wrote the block before sending it; it is live.
            assert_eq!(unsafe { *p.as_ptr() }, (i % 251) as u8);
            // SAFETY: each received block is live and freed once, here.
            unsafe { pool.deallocate(p) }.unwrap();
        }
    });
    assert_eq!(pool.stats().live_count(), 0);
}

macro_rules! cpu_conformance {
    ($name:ident, $allocator:expr, $sync:expr) => {
        cpu_conformance!($name, $allocator, $sync, true);
    };
    ($name:ident, $allocator:expr, $sync:expr, $thread_cache:expr) => {
        mod $name {
            use super::*;
            fn base() -> PoolConfig {
                let mut c = variant($allocator, $sync);
                c.thread_cache.enabled = $thread_cache;
                c
            }
            #[test]
            fn random_program_unchecked() {
                random_program(base(), false)
            }
            #[test]
            fn random_program_checked() {
                random_program(base(), true)
            }
            #[test]
            fn checked_pools_reject_bad_pointers() {
                super::checked_pools_reject_bad_pointers(base())
            }
            #[test]
            fn unchecked_pools_refuse_the_checked_forms() {
                super::unchecked_pools_refuse_the_checked_forms(base())
            }
            #[test]
            fn sizes_zeroing_and_alignments() {
                super::sizes_zeroing_and_alignments(base())
            }
            #[test]
            fn reset_releases_everything() {
                super::reset_releases_everything(base())
            }
            #[test]
            fn freed_large_objects_are_reused() {
                super::freed_large_objects_are_reused(base())
            }
            #[test]
            fn the_newest_freed_large_object_is_kept() {
                super::the_newest_freed_large_object_is_kept(base())
            }
            #[test]
            fn oom_at_the_limit_reports_numbers_and_recovers() {
                super::oom_at_the_limit_reports_numbers_and_recovers(base())
            }
            #[test]
            fn allocator_api_collections() {
                super::allocator_api_collections(base())
            }
            #[test]
            fn growing_realloc_gets_slack() {
                super::growing_realloc_gets_slack(base())
            }
            #[test]
            fn cross_thread_frees() {
                super::cross_thread_frees(base())
            }
        }
    };
}

cpu_conformance!(fixed_mutex, AllocatorKind::FixedSize, SyncMode::Mutex);
cpu_conformance!(
    fixed_single,
    AllocatorKind::FixedSize,
    SyncMode::SingleThreaded
);
cpu_conformance!(
    size_classed_mutex,
    AllocatorKind::SizeClassed,
    SyncMode::Mutex
);
cpu_conformance!(
    size_classed_single,
    AllocatorKind::SizeClassed,
    SyncMode::SingleThreaded
);
cpu_conformance!(variable_mutex, AllocatorKind::VariableSize, SyncMode::Mutex);
cpu_conformance!(
    variable_single,
    AllocatorKind::VariableSize,
    SyncMode::SingleThreaded
);
cpu_conformance!(lock_free, AllocatorKind::LockFree, SyncMode::LockFree);
// The lock-free allocator's own heaps serve every call (no thread cache in front).
cpu_conformance!(
    lock_free_uncached,
    AllocatorKind::LockFree,
    SyncMode::LockFree,
    false
);
cpu_conformance!(
    size_classed_uncached,
    AllocatorKind::SizeClassed,
    SyncMode::Mutex,
    false
);
// The busy-flag core: single-threaded pools without the thread cache.
cpu_conformance!(
    fixed_single_uncached,
    AllocatorKind::FixedSize,
    SyncMode::SingleThreaded,
    false
);
cpu_conformance!(
    variable_single_uncached,
    AllocatorKind::VariableSize,
    SyncMode::SingleThreaded,
    false
);
