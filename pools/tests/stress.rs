//! Multi-threaded stress: blocks allocated on one thread are freed on another, for every
//! thread-safe `CpuPool` variant (mutex with each strategy, lock-free). Each block carries
//! its own address and a tag, checked by the freeing thread, so overlap or corruption
//! across threads shows up.

use pools::{AllocatorKind, CpuPool, MemoryPool, PoolConfig, SyncMode};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::ptr::NonNull;
use std::sync::mpsc;
use std::sync::Arc;

const THREADS: usize = 4;
const BLOCKS_PER_THREAD: usize = 40_000;

/// A block in flight between threads.
struct Block {
    ptr: NonNull<u8>,
    len: usize,
    tag: u8,
}

// SAFETY: a `Block` is handed from the allocating thread to the freeing thread; only the
// holder touches its bytes.
unsafe impl Send for Block {}

fn stress(config: PoolConfig) {
    let summary = config.summary();
    let max_size = if config.allocator == AllocatorKind::FixedSize {
        config.block_size_bytes
    } else {
        3000
    };
    let pool = Arc::new(CpuPool::new("stress", config).unwrap());
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS)
        .map(|_| mpsc::sync_channel::<Block>(256))
        .unzip();
    std::thread::scope(|s| {
        for (t, receiver) in receivers.into_iter().enumerate() {
            let pool = Arc::clone(&pool);
            let next = senders[(t + 1) % THREADS].clone();
            s.spawn(move || {
                let mut rng = SmallRng::seed_from_u64(t as u64);
                let mut kept = Vec::new();
                for i in 0..BLOCKS_PER_THREAD {
                    let len = rng.gen_range(8..=max_size);
                    let ptr = pool.allocate(len).expect("allocate");
                    let tag = (t * 31 + i) as u8;
                    // SAFETY: ptr is a live block of at least len >= 8 bytes.
                    unsafe {
                        ptr.as_ptr()
                            .cast::<usize>()
                            .write_unaligned(ptr.as_ptr() as usize);
                        ptr.as_ptr().add(8).write_bytes(tag, len - 8);
                    }
                    let block = Block { ptr, len, tag };
                    if i % 4 == 0 {
                        kept.push(block);
                    } else {
                        next.send(block).unwrap();
                    }
                    while let Ok(block) = receiver.try_recv() {
                        check_and_free(&*pool, block);
                    }
                    if kept.len() > 64 {
                        check_and_free(&*pool, kept.swap_remove(rng.gen_range(0..kept.len())));
                    }
                }
                drop(next);
                for block in kept {
                    check_and_free(&*pool, block);
                }
                // Drain until every sender (the previous thread) is done.
                for block in receiver {
                    check_and_free(&*pool, block);
                }
            });
        }
        drop(senders);
    });
    let stats = pool.stats();
    assert_eq!(stats.live_count(), 0, "{summary}");
    assert_eq!(stats.current_used_bytes, 0, "{summary}");
    assert_eq!(stats.allocation_count, (THREADS * BLOCKS_PER_THREAD) as u64);
}

fn check_and_free(pool: &dyn MemoryPool, block: Block) {
    // SAFETY: the block is live and written by its allocating thread before being sent
    // (the channel orders the writes before these reads).
    unsafe {
        let addr = block.ptr.as_ptr().cast::<usize>().read_unaligned();
        assert_eq!(
            addr,
            block.ptr.as_ptr() as usize,
            "block header overwritten"
        );
        let body = std::slice::from_raw_parts(block.ptr.as_ptr().add(8), block.len - 8);
        assert!(
            body.iter().all(|&b| b == block.tag),
            "block body overwritten"
        );
    }
    // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
    unsafe { pool.deallocate(block.ptr) }.expect("deallocate");
}

fn mutex(allocator: AllocatorKind) -> PoolConfig {
    let mut c = PoolConfig::default_cpu();
    c.allocator = allocator;
    c.sync = SyncMode::Mutex;
    c.block_size_bytes = 256;
    c
}

#[test]
fn mutex_fixed_size_cross_thread() {
    stress(mutex(AllocatorKind::FixedSize));
}

#[test]
fn mutex_size_classed_cross_thread() {
    stress(mutex(AllocatorKind::SizeClassed));
}

#[test]
fn mutex_variable_size_cross_thread() {
    stress(mutex(AllocatorKind::VariableSize));
}

#[test]
fn lock_free_cross_thread() {
    stress(PoolConfig::high_performance_cpu());
}

#[test]
fn checked_mutex_size_classed_cross_thread() {
    let mut c = mutex(AllocatorKind::SizeClassed);
    c.debug.check_pointers = true;
    c.debug.track_live = true;
    c.return_policy = pools::ReturnPolicy::WhenEmpty;
    stress(c);
}

#[test]
fn checked_lock_free_cross_thread() {
    let mut c = PoolConfig::high_performance_cpu();
    c.debug.check_pointers = true;
    stress(c);
}
