//! Shadow-model property test of the size-classed allocator through `CpuPool`: random
//! alloc / free / realloc / reset programs with sizes across small classes, the largest
//! classes and the large-object path, alignments up to 8 KiB.

mod common;

use common::{Model, Op};
use pools::{AllocatorKind, CpuPool, MemoryPool, PoolConfig, ReturnPolicy, SizeClasses, SyncMode};
use proptest::prelude::*;

fn config_strategy() -> impl Strategy<Value = PoolConfig> {
    (
        prop::sample::select(vec![1u32, 2, 4, 8]),
        prop::sample::select(vec![256usize, 4096, 32 << 10]),
        prop::sample::select(vec![
            ReturnPolicy::Keep,
            ReturnPolicy::OnReset,
            ReturnPolicy::WhenEmpty,
        ]),
        any::<bool>(),
        prop::sample::select(vec![SyncMode::SingleThreaded, SyncMode::Mutex]),
        prop::sample::select(vec![0usize, 1 << 20]),
        prop::sample::select(vec![None, Some(16usize << 20)]),
        prop::sample::select(vec![1usize, 16, 64]),
    )
        .prop_map(
            |(cpd, max_class, ret, checked, sync, initial, max, align)| {
                let mut c = PoolConfig::default_cpu();
                c.allocator = AllocatorKind::SizeClassed;
                c.size_classes = SizeClasses {
                    classes_per_doubling: cpd,
                    max_class_bytes: max_class,
                };
                c.return_policy = ret;
                c.debug.check_pointers = checked;
                c.sync = sync;
                c.initial_size_bytes = initial;
                c.max_size_bytes = max;
                c.alignment = align;
                c.chunk_size_bytes = 256 << 10;
                c
            },
        )
}

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        60 => 0usize..=256,
        25 => 257usize..=8192,
        10 => 8193usize..=40_000,
        2 => 40_001usize..=300_000,
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        50 => (size_strategy(), prop_oneof![8 => 0u8..=6, 2 => 7u8..=13])
            .prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        40 => any::<usize>().prop_map(|index| Op::Free { index }),
        8 => (any::<usize>(), size_strategy()).prop_map(|(index, size)| Op::Realloc { index, size }),
        1 => Just(Op::Reset),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn size_classed_pool_matches_the_model(
        config in config_strategy(),
        ops in prop::collection::vec(op_strategy(), 2000..4000),
    ) {
        let checked = config.debug.check_pointers;
        let pool = CpuPool::new("size-classed-model", config.clone()).unwrap();
        let mut model = Model::default();
        for op in &ops {
            model.step(&pool, op, checked);
        }
        prop_assert!(model.ops >= 2000);
        // Only the 16 MiB limit can make requests fail; failures are counted one for one.
        prop_assert_eq!(pool.stats().failure_count as usize, model.failures);
        model.drain(&pool);
    }
}

/// A size-classed pool whose classes stop at 4 KiB: larger requests are large objects.
fn small_classes_pool(name: &str) -> CpuPool {
    let mut c = PoolConfig::default_cpu();
    c.allocator = AllocatorKind::SizeClassed;
    c.size_classes.max_class_bytes = 4096;
    CpuPool::new(name, c).unwrap()
}

#[test]
fn large_objects_at_every_alignment_are_told_from_class_blocks() {
    let pool = small_classes_pool("aligned");
    // Large objects at every alignment from a page to beyond a segment, and small blocks
    // beside them: the free fast path tells them apart by the page-class map (debug
    // builds check it against the span headers on every free).
    for align in [1usize << 12, 1 << 14, 1 << 18, 1 << 21, 1 << 23] {
        let big = pool
            .allocate_with(300_000, pools::AllocFlags::aligned(align))
            .unwrap();
        let small = pool.allocate(48).unwrap();
        assert_eq!(big.as_ptr() as usize % align, 0);
        // SAFETY: live blocks of this pool, each freed once.
        unsafe {
            assert!(pool.usable_size(big).unwrap() >= 300_000);
            pool.deallocate(big).unwrap();
            pool.deallocate(small).unwrap();
        }
    }
    let stats = pool.stats();
    assert_eq!(stats.allocation_count, 10);
    assert_eq!(stats.free_count, 10);
    assert_eq!(stats.large_object_count, 5);
    assert_eq!(stats.current_used_bytes, 0);
}

#[test]
fn large_objects_are_counted_and_returned() {
    let pool = small_classes_pool("large");
    let before = pool.stats().reserved_bytes;
    let p = pool.allocate(100_000).unwrap();
    let q = pool
        .allocate_with(10, pools::AllocFlags::aligned(1 << 20))
        .unwrap();
    assert_eq!(q.as_ptr() as usize % (1 << 20), 0);
    // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
    assert!(unsafe { pool.usable_size(p) }.unwrap() >= 100_000);
    let stats = pool.stats();
    assert_eq!(stats.large_object_count, 2);
    assert!(stats.reserved_bytes >= before + 100_000);
    // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
    unsafe { pool.deallocate(p) }.unwrap();
    // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
    unsafe { pool.deallocate(q) }.unwrap();
    // The 100 KB mapping is kept for the next large object (the cache holds at most a
    // segment's worth); the 1 MiB-aligned one is beyond what the cache serves.
    let cached = pool.stats().reserved_bytes - before;
    assert!(
        (100_000..=1 << 20).contains(&cached),
        "cached {cached} bytes"
    );
    // The next large object of a similar size reuses it: no new mapping.
    let r = pool.allocate(90_000).unwrap();
    assert_eq!(pool.stats().reserved_bytes - before, cached);
    // SAFETY: a live block of this pool, freed once.
    unsafe { pool.deallocate(r) }.unwrap();
    // A reset gives the cached mapping back.
    let mut pool = pool;
    pool.reset_exclusive().unwrap();
    assert_eq!(pool.stats().reserved_bytes, before);
}

#[test]
fn large_objects_go_back_at_once_under_a_size_limit() {
    // A cached mapping would count against the limit and could fail a later request.
    let mut c = PoolConfig::default_cpu();
    c.allocator = AllocatorKind::SizeClassed;
    c.max_size_bytes = Some(64 << 20);
    let pool = CpuPool::new("large-limited", c).unwrap();
    let before = pool.stats().reserved_bytes;
    let p = pool.allocate(100_000).unwrap();
    // SAFETY: a live block of this pool, freed once.
    unsafe { pool.deallocate(p) }.unwrap();
    assert_eq!(pool.stats().reserved_bytes, before);
}

#[test]
fn large_objects_go_back_at_once_with_return_when_empty() {
    let mut c = PoolConfig::default_cpu();
    c.allocator = AllocatorKind::SizeClassed;
    c.return_policy = pools::ReturnPolicy::WhenEmpty;
    let pool = CpuPool::new("large-return", c).unwrap();
    let before = pool.stats().reserved_bytes;
    let p = pool.allocate(100_000).unwrap();
    // SAFETY: a live block of this pool, freed once.
    unsafe { pool.deallocate(p) }.unwrap();
    assert_eq!(pool.stats().reserved_bytes, before);
}

#[test]
fn alignment_up_to_4k_stays_in_classes_and_beyond_goes_large() {
    let mut c = PoolConfig::default_cpu();
    c.allocator = AllocatorKind::SizeClassed;
    let pool = CpuPool::new("aligned", c).unwrap();
    for shift in 0..=16 {
        let align = 1usize << shift;
        for size in [1usize, 17, 100, 3000, 5000] {
            let p = pool
                .allocate_with(size, pools::AllocFlags::aligned(align))
                .unwrap();
            assert_eq!(p.as_ptr() as usize % align, 0, "size {size} align {align}");
            // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
            unsafe { pool.deallocate(p) }.unwrap();
        }
    }
    // 4 KiB-aligned small requests are served by the 4 KiB class, not the large path.
    assert_eq!(pool.stats().large_object_count, 5 * 4);
}
