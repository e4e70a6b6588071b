//! Shadow-model property test of the fixed-size allocator through `CpuPool`:
//! random alloc / free / realloc / reset programs over many configurations.

mod common;

use common::{Model, Op};
use pools::{AllocatorKind, CpuPool, MemoryPool, PoolConfig, ReturnPolicy, SyncMode};
use proptest::prelude::*;

fn config_strategy() -> impl Strategy<Value = PoolConfig> {
    (
        prop::sample::select(vec![1usize, 8, 16, 24, 48, 64, 100, 256, 4096]),
        prop::sample::select(vec![1usize, 8, 16, 64]),
        prop::sample::select(vec![
            ReturnPolicy::Keep,
            ReturnPolicy::OnReset,
            ReturnPolicy::WhenEmpty,
        ]),
        any::<bool>(),
        prop::sample::select(vec![SyncMode::SingleThreaded, SyncMode::Mutex]),
        prop::sample::select(vec![0usize, 64 << 10, 1 << 20]),
        prop::sample::select(vec![None, Some(1usize << 20), Some(4 << 20)]),
    )
        .prop_map(|(block, align, ret, checked, sync, initial, max)| {
            let mut c = PoolConfig::default_cpu();
            c.allocator = AllocatorKind::FixedSize;
            c.block_size_bytes = block;
            c.alignment = align;
            c.return_policy = ret;
            c.debug.check_pointers = checked;
            c.sync = sync;
            c.initial_size_bytes = initial.min(max.unwrap_or(usize::MAX));
            c.max_size_bytes = max;
            c.chunk_size_bytes = 64 << 10;
            c
        })
}

fn op_strategy(block: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        50 => (1..=block + block / 8 + 1, 0u8..8).prop_map(|(size, align_shift)| Op::Alloc { size, align_shift }),
        40 => any::<usize>().prop_map(|index| Op::Free { index }),
        8 => (any::<usize>(), 1..=block).prop_map(|(index, size)| Op::Realloc { index, size }),
        1 => Just(Op::Reset),
    ]
}

fn case_strategy() -> impl Strategy<Value = (PoolConfig, Vec<Op>)> {
    config_strategy().prop_flat_map(|config| {
        let ops = prop::collection::vec(op_strategy(config.block_size_bytes), 2000..4000);
        (Just(config), ops)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn fixed_size_pool_matches_the_model((config, ops) in case_strategy()) {
        let checked = config.debug.check_pointers;
        let pool = CpuPool::new("fixed-model", config.clone()).unwrap();
        let initial_reserved_bytes = pool.stats().reserved_bytes;
        let mut model = Model::default();
        for op in &ops {
            model.step(&pool, op, checked);
        }
        model.drain(&pool);
        // Failures (oversized requests, over-aligned requests, the 1 MiB / 4 MiB limits)
        // are counted one for one.
        let stats = pool.stats();
        prop_assert_eq!(stats.failure_count as usize, model.failures);
        if config.return_policy != ReturnPolicy::Keep {
            // SAFETY: the model drained every block; none is used afterwards.
            unsafe { pool.reset() }.unwrap();
            prop_assert_eq!(pool.stats().reserved_bytes, initial_reserved_bytes);
        }
    }
}

#[test]
fn fixed_block_requests_beyond_the_block_are_invalid_operations() {
    let mut c = PoolConfig::default_cpu();
    c.allocator = AllocatorKind::FixedSize;
    c.block_size_bytes = 64;
    let pool = CpuPool::new("fixed-limits", c).unwrap();
    assert!(matches!(
        pool.allocate(65),
        Err(pools::PoolError::InvalidOperation { .. })
    ));
    assert!(matches!(
        pool.allocate_with(8, pools::AllocFlags::aligned(128)),
        Err(pools::PoolError::InvalidOperation { .. })
    ));
    let p = pool
        .allocate_with(8, pools::AllocFlags::aligned(64))
        .unwrap();
    assert_eq!(p.as_ptr() as usize % 64, 0);
    // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
    assert_eq!(unsafe { pool.usable_size(p) }.unwrap(), 64);
    // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
    unsafe { pool.deallocate(p) }.unwrap();
    assert_eq!(pool.stats().failure_count, 2);
}

#[test]
fn when_empty_returns_grown_chunks_to_the_os() {
    let mut c = PoolConfig::default_cpu();
    c.allocator = AllocatorKind::FixedSize;
    c.block_size_bytes = 4096;
    c.initial_size_bytes = 0;
    c.chunk_size_bytes = 64 << 10;
    c.growth_factor = 1.0;
    c.return_policy = ReturnPolicy::WhenEmpty;
    let pool = CpuPool::new("fixed-when-empty", c).unwrap();
    let blocks: Vec<_> = (0..200).map(|_| pool.allocate(4096).unwrap()).collect();
    let grown = pool.stats().reserved_bytes;
    assert!(grown >= 200 * 4096);
    for p in blocks {
        // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
        unsafe { pool.deallocate(p) }.unwrap();
    }
    // Every segment emptied; only the one still used for carving is kept.
    let after = pool.stats().reserved_bytes;
    assert!(
        after < grown / 4,
        "reserved {after} of {grown} after freeing everything"
    );
}
