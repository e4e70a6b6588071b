//! The statistics contract under concurrency (see `StatsCounters`): counts, totals and
//! current used bytes exact once the threads are done; the peak within
//! `(threads - 1) * PEAK_PUBLISH_THRESHOLD_BYTES` of the true one, exact with one thread.

use pools::stats::PEAK_PUBLISH_THRESHOLD_BYTES;
use pools::{CpuPool, MemoryPool, PoolConfig, StatsCounters};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use std::ptr::NonNull;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;

const THRESHOLD: u64 = PEAK_PUBLISH_THRESHOLD_BYTES as u64;

struct Block(NonNull<u8>);
// SAFETY: a block handed to another thread is owned by that thread alone from then on.
unsafe impl Send for Block {}

#[test]
fn lock_free_pool_stats_are_exact_after_threads_finish() {
    const THREADS: usize = 4;
    const OPS: usize = 20_000;
    let pool = Arc::new(CpuPool::new("stats", PoolConfig::high_performance_cpu()).unwrap());
    // Thread i frees half of what it allocates itself and sends the other half to thread
    // i + 1 (cross-thread frees); each keeps some blocks live to the end.
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..THREADS).map(|_| mpsc::channel::<Block>()).unzip();
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(i, rx)| {
            let pool = Arc::clone(&pool);
            let tx = senders[(i + 1) % THREADS].clone();
            thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(i as u64);
                let (mut allocs, mut frees, mut total_bytes) = (0u64, 0u64, 0u64);
                let mut kept: Vec<NonNull<u8>> = Vec::new();
                for op in 0..OPS {
                    let size = (16.0f64 * 4096f64.powf(rng.gen::<f64>())) as usize;
                    let p = pool.allocate(size).unwrap();
                    allocs += 1;
                    // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
                    total_bytes += unsafe { pool.usable_size(p) }.unwrap() as u64;
                    match op % 4 {
                        0 => tx.send(Block(p)).unwrap(),
                        1 | 2 => {
                            // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
                            unsafe { pool.deallocate(p) }.unwrap();
                            frees += 1;
                        }
                        _ => kept.push(p),
                    }
                    if let Ok(Block(p)) = rx.try_recv() {
                        // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
                        unsafe { pool.deallocate(p) }.unwrap();
                        frees += 1;
                    }
                    if kept.len() > 64 {
                        // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
                        unsafe { pool.deallocate(kept.swap_remove(0)) }.unwrap();
                        frees += 1;
                    }
                }
                let kept: Vec<Block> = kept.into_iter().map(Block).collect();
                (allocs, frees, total_bytes, kept, rx)
            })
        })
        .collect();
    drop(senders);
    let mut expected = (0u64, 0u64, 0u64);
    let mut live: Vec<NonNull<u8>> = Vec::new();
    let mut pending_rx = Vec::new();
    for handle in handles {
        let (allocs, frees, total_bytes, kept, rx) = handle.join().unwrap();
        expected.0 += allocs;
        expected.1 += frees;
        expected.2 += total_bytes;
        live.extend(kept.into_iter().map(|Block(p)| p));
        pending_rx.push(rx);
    }
    // Blocks still in flight in the channels are live too.
    for rx in pending_rx {
        live.extend(rx.try_iter().map(|Block(p)| p));
    }
    let live_bytes: u64 = live
        .iter()
        // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
        .map(|&p| unsafe { pool.usable_size(p) }.unwrap() as u64)
        .sum();
    let stats = pool.stats();
    assert_eq!(stats.allocation_count, expected.0);
    assert_eq!(stats.free_count, expected.1);
    assert_eq!(stats.total_allocated_bytes, expected.2);
    assert_eq!(stats.live_count(), live.len() as u64);
    assert_eq!(stats.current_used_bytes, live_bytes);
    assert!(stats.peak_used_bytes >= stats.current_used_bytes);
    for p in live {
        // SAFETY: a live block of this pool, freed once (checked pools get bad ones on purpose).
        unsafe { pool.deallocate(p) }.unwrap();
    }
    let stats = pool.stats();
    assert_eq!(stats.current_used_bytes, 0);
    assert_eq!(stats.live_count(), 0);
}

#[test]
fn peak_is_exact_with_one_thread() {
    let stats = StatsCounters::new();
    // Far below the publish threshold: the peak must still be seen.
    stats.on_alloc(1000);
    stats.on_alloc(24);
    stats.on_free(1000);
    stats.on_alloc(500);
    stats.on_free(24);
    stats.on_free(500);
    let s = stats.snapshot();
    assert_eq!((s.peak_used_bytes, s.current_used_bytes), (1024, 0));
    // Across several publishes.
    let mut used = 0u64;
    let mut peak = 1024u64;
    let mut rng = SmallRng::seed_from_u64(7);
    let mut live = Vec::new();
    for _ in 0..100_000 {
        if live.is_empty() || rng.gen_bool(0.55) {
            let size = rng.gen_range(1..20_000usize);
            stats.on_alloc(size);
            used += size as u64;
            peak = peak.max(used);
            live.push(size);
        } else {
            let size = live.swap_remove(rng.gen_range(0..live.len()));
            stats.on_free(size);
            used -= size as u64;
        }
    }
    let s = stats.snapshot();
    assert_eq!((s.peak_used_bytes, s.current_used_bytes), (peak, used));
}

#[test]
fn peak_is_within_the_documented_bound_with_threads() {
    const THREADS: usize = 4;
    const BLOCKS: usize = 1000;
    const BLOCK_BYTES: usize = 1000;
    let bound = (THREADS as u64 - 1) * THRESHOLD;
    for round in 0..5 {
        let stats = Arc::new(StatsCounters::new());
        let barrier = Arc::new(Barrier::new(THREADS));
        // Every block is allocated before the barrier and freed after it: the true peak
        // is all of them at once.
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let (stats, barrier) = (Arc::clone(&stats), Arc::clone(&barrier));
                thread::spawn(move || {
                    for _ in 0..BLOCKS {
                        stats.on_alloc(BLOCK_BYTES);
                    }
                    barrier.wait();
                    for _ in 0..BLOCKS {
                        stats.on_free(BLOCK_BYTES);
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        let true_peak = (THREADS * BLOCKS * BLOCK_BYTES) as u64;
        let s = stats.snapshot();
        assert_eq!(s.current_used_bytes, 0);
        assert!(
            s.peak_used_bytes.abs_diff(true_peak) < bound,
            "round {round}: peak {} vs true {true_peak}, bound {bound}",
            s.peak_used_bytes
        );
    }

    // Allocate on one thread, free on another (the cross-thread bench's pattern): the
    // freeing thread's unpublished (negative) bytes must not inflate the peak beyond the
    // bound. Blocks in flight are at most the channel's capacity plus the batch each
    // side holds.
    const BATCH: usize = 64;
    const CAPACITY: usize = 4;
    let stats = Arc::new(StatsCounters::new());
    let (tx, rx) = mpsc::sync_channel::<Vec<usize>>(CAPACITY);
    let freer = {
        let stats = Arc::clone(&stats);
        thread::spawn(move || {
            for batch in rx {
                batch.into_iter().for_each(|size| stats.on_free(size));
            }
        })
    };
    for _ in 0..5_000 {
        let batch: Vec<usize> = (0..BATCH)
            .map(|_| {
                stats.on_alloc(256);
                256
            })
            .collect();
        tx.send(batch).unwrap();
    }
    drop(tx);
    freer.join().unwrap();
    let true_peak_at_most = ((CAPACITY + 2) * BATCH * 256) as u64;
    let s = stats.snapshot();
    assert_eq!(s.current_used_bytes, 0);
    assert_eq!((s.allocation_count, s.free_count), (5_000 * 64, 5_000 * 64));
    assert!(
        s.peak_used_bytes < true_peak_at_most + THRESHOLD,
        "peak {} with at most {true_peak_at_most} live",
        s.peak_used_bytes
    );
}

#[test]
fn reset_counts_every_live_block_freed() {
    let stats = Arc::new(StatsCounters::new());
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let stats = Arc::clone(&stats);
            thread::spawn(move || {
                for _ in 0..100 {
                    stats.on_alloc(100 + i);
                }
                stats.on_free(100 + i);
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    stats.on_reset();
    let s = stats.snapshot();
    assert_eq!((s.current_used_bytes, s.live_count()), (0, 0));
    assert_eq!((s.allocation_count, s.free_count), (300, 300));
    stats.on_alloc(64);
    assert_eq!(stats.snapshot().current_used_bytes, 64);
}
