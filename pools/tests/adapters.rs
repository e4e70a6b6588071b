//! The allocator adapters. This test binary runs entirely on a pool: its
//! `#[global_allocator]` is a `PoolGlobalAlloc`, so the test harness, its threads and
//! every `Vec` below live in pool memory.

use pools::{AllocatorKind, MemoryPool, PoolAllocator, PoolConfig, PoolGlobalAlloc, PoolManager};
use std::collections::HashMap;
use std::sync::Arc;

fn global_config() -> PoolConfig {
    PoolConfig {
        allocator: AllocatorKind::SizeClassed,
        ..PoolConfig::default_cpu()
    }
}

#[global_allocator]
static GLOBAL: PoolGlobalAlloc = PoolGlobalAlloc::new("global", global_config);

#[test]
fn the_global_allocator_is_the_pool() {
    let before = GLOBAL
        .pool()
        .expect("the harness already allocated")
        .stats();
    let mut v: Vec<u64> = Vec::new();
    for i in 0..100_000 {
        v.push(i);
    }
    let text: String = (0..1000).map(|i| format!("{i},")).collect();
    let mut map = HashMap::new();
    for i in 0..10_000 {
        map.insert(i, i.to_string());
    }
    assert_eq!(v.iter().sum::<u64>(), 99_999 * 100_000 / 2);
    assert!(text.starts_with("0,1,2,"));
    assert_eq!(map[&9_999], "9999");
    let big = vec![7u8; 5 << 20];
    assert!(big.iter().all(|&b| b == 7));
    let after = GLOBAL.pool().unwrap().stats();
    assert!(after.allocation_count >= before.allocation_count + 10_000);
    assert!(after.large_object_count > before.large_object_count);
}

#[test]
fn the_global_pool_works_across_threads() {
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut blocks: Vec<Box<[u8]>> = Vec::new();
                for i in 0..20_000usize {
                    blocks.push(vec![t as u8; 1 + i % 700].into_boxed_slice());
                    if i % 3 == 0 {
                        blocks.swap_remove(i % blocks.len());
                    }
                }
                blocks
            })
        })
        .collect();
    // Freed here, allocated there.
    for (t, h) in handles.into_iter().enumerate() {
        let blocks = h.join().unwrap();
        assert!(blocks.iter().all(|b| b.iter().all(|&x| x == t as u8)));
    }
}

#[test]
fn over_aligned_global_allocations() {
    #[repr(align(4096))]
    struct Page([u8; 4096]);
    let pages: Vec<Box<Page>> = (0..50).map(|_| Box::new(Page([1; 4096]))).collect();
    for page in &pages {
        assert_eq!(&**page as *const Page as usize % 4096, 0);
        assert_eq!(page.0[4095], 1);
    }
}

#[test]
fn unsupported_global_configs_are_named() {
    let mut c = global_config();
    assert!(PoolGlobalAlloc::unsupported_reason(&c).is_none());
    c.debug.track_live = true;
    assert!(PoolGlobalAlloc::unsupported_reason(&c)
        .unwrap()
        .contains("track_live"));
    let c = PoolConfig::default_cpu();
    assert!(PoolGlobalAlloc::unsupported_reason(&c)
        .unwrap()
        .contains("size-classed"));
}

#[test]
fn pool_allocator_handle_over_a_managed_pool() {
    let manager = PoolManager::new();
    let shared = manager.create_cpu_pool("shared", global_config()).unwrap();
    let handle = PoolAllocator::new(Arc::clone(&shared)).unwrap();
    let mut a = allocator_api2::vec::Vec::new_in(handle.clone());
    let mut b = allocator_api2::vec::Vec::new_in(handle);
    a.extend(0..1000u32);
    b.extend(0..10u8);
    assert_eq!(shared.stats().live_count(), 2);
    drop(a);
    drop(b);
    assert_eq!(shared.stats().live_count(), 0);
}
