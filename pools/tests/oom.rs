//! Out of memory at `max_size_bytes`: a clear `OutOfMemory` with the numbers, counted as a
//! failure, and the pool keeps working once memory is freed.

use pools::{AllocatorKind, CpuPool, MemoryPool, PoolConfig, PoolError, SyncMode};

#[test]
fn oom_at_the_limit_reports_numbers_and_the_pool_recovers() {
    for allocator in [
        AllocatorKind::FixedSize,
        AllocatorKind::SizeClassed,
        AllocatorKind::VariableSize,
        AllocatorKind::LockFree,
    ] {
        let limit = 4 << 20;
        let mut c = PoolConfig::default_cpu();
        c.allocator = allocator;
        if allocator == AllocatorKind::LockFree {
            c.sync = SyncMode::LockFree;
        }
        c.block_size_bytes = 4096;
        c.initial_size_bytes = 0;
        c.chunk_size_bytes = 256 << 10;
        c.max_size_bytes = Some(limit);
        let pool = CpuPool::new("oom", c).unwrap();
        let mut blocks = Vec::new();
        let err = loop {
            match pool.allocate(4000) {
                Ok(p) => blocks.push(p),
                Err(e) => break e,
            }
            assert!(blocks.len() < 10_000, "{allocator:?}: limit not enforced");
        };
        match &err {
            PoolError::OutOfMemory {
                pool,
                requested_bytes,
                limit_bytes,
                ..
            } => {
                assert_eq!(pool, "oom");
                assert_eq!(*requested_bytes, 4000, "{allocator:?}: {err}");
                assert_eq!(*limit_bytes, limit);
            }
            other => panic!("{allocator:?}: expected OutOfMemory, got {other}"),
        }
        assert!(err.to_string().contains("4000"), "{err}");
        let stats = pool.stats();
        assert!(stats.reserved_bytes <= limit as u64);
        assert_eq!(stats.failure_count, 1);
        assert!(
            blocks.len() * 4000 >= limit / 2,
            "{allocator:?}: only {} blocks",
            blocks.len()
        );
        // Still usable: free one, allocate one.
        pool.deallocate(blocks.pop().unwrap()).unwrap();
        blocks.push(pool.allocate(4000).unwrap());
        // A request beyond the limit fails without disturbing anything.
        assert!(matches!(
            pool.allocate(limit + 1),
            Err(PoolError::OutOfMemory { .. }) | Err(PoolError::InvalidOperation { .. })
        ));
        for p in blocks {
            pool.deallocate(p).unwrap();
        }
        assert_eq!(pool.stats().live_count(), 0);
    }
}
