//! Multi-threaded tests of the lock-free allocator: cross-thread frees through channels,
//! heap abandonment and adoption, the size limit, and (ignored) a quick timing against a
//! mutex-protected allocator and mimalloc.

use pools::alloc::lockfree::LockFreeAllocator;
use pools::alloc::BlockState;
use pools::{PoolConfig, PoolError, StatsCounters};
use std::ptr::NonNull;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// A block sent to another thread: address, size, and the pattern seed written into it.
struct Sent {
    addr: usize,
    size: usize,
    seed: u64,
}

fn pattern_byte(seed: u64, i: usize) -> u8 {
    (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (i as u8)
}

fn write_pattern(ptr: NonNull<u8>, size: usize, seed: u64) {
    for i in 0..size.min(256) {
        // SAFETY: the block has at least `size` bytes.
        unsafe { ptr.as_ptr().add(i).write(pattern_byte(seed, i)) };
    }
}

fn check_pattern(addr: usize, size: usize, seed: u64) {
    for i in 0..size.min(256) {
        // SAFETY: a live block of at least `size` bytes, handed over through a channel.
        let byte = unsafe { (addr as *const u8).add(i).read() };
        assert_eq!(
            byte,
            pattern_byte(seed, i),
            "block {addr:#x} byte {i} corrupted"
        );
    }
}

fn allocator(config: &PoolConfig) -> Arc<LockFreeAllocator> {
    Arc::new(
        LockFreeAllocator::new(Arc::from("threads"), config, Arc::new(StatsCounters::new()))
            .expect("valid config"),
    )
}

fn checked_config() -> PoolConfig {
    let mut config = PoolConfig::high_performance_cpu();
    config.initial_size_bytes = 0;
    config.chunk_size_bytes = MIB;
    config.debug.check_pointers = true;
    config
}

/// One round: every thread allocates blocks, fills them, sends them to the next thread,
/// which checks and frees them. Returns (usable bytes allocated, usable bytes freed).
fn ring_round(
    alloc: &Arc<LockFreeAllocator>,
    threads: usize,
    per_thread: usize,
    round: u64,
) -> (usize, usize) {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| mpsc::channel::<Sent>()).unzip();
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(t, rx)| {
            let tx = senders[(t + 1) % threads].clone();
            let alloc = Arc::clone(alloc);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let mut allocated = 0;
                let mut freed = 0;
                let mut rng = ((t as u64 + 1) * 0x2545_F491_4F6C_DD1D) ^ round;
                for i in 0..per_thread {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let size = match rng % 100 {
                        0 => 40 * KIB + (rng as usize >> 8) % (200 * KIB),
                        1..=9 => 1 + (rng as usize >> 8) % (16 * KIB),
                        _ => 1 + (rng as usize >> 8) % 512,
                    };
                    let ptr = alloc.allocate(size, 16).expect("allocate");
                    // SAFETY: just allocated.
                    allocated += unsafe { alloc.usable_size(ptr) };
                    let seed = (t as u64) << 32 | i as u64;
                    write_pattern(ptr, size, seed);
                    tx.send(Sent {
                        addr: ptr.as_ptr() as usize,
                        size,
                        seed,
                    })
                    .unwrap();
                    // Free what arrived meanwhile, so frees interleave with allocations.
                    while let Ok(got) = rx.try_recv() {
                        freed += free_sent(&alloc, got);
                    }
                }
                drop(tx);
                (rx, allocated, freed)
            })
        })
        .collect();
    drop(senders);
    let mut allocated = 0;
    let mut freed = 0;
    let mut leftovers = Vec::new();
    for h in handles {
        let (rx, a, f) = h.join().unwrap();
        allocated += a;
        freed += f;
        leftovers.push(rx);
    }
    // Blocks still in flight are freed here, by a thread that owns none of them.
    for rx in leftovers {
        for got in rx.try_iter() {
            freed += free_sent(alloc, got);
        }
    }
    (allocated, freed)
}

fn free_sent(alloc: &LockFreeAllocator, got: Sent) -> usize {
    check_pattern(got.addr, got.size, got.seed);
    let ptr = NonNull::new(got.addr as *mut u8).unwrap();
    assert!(matches!(alloc.block_state(ptr), BlockState::Live(_)));
    // SAFETY: a live block, sent to this thread by its allocating thread.
    let usable = unsafe { alloc.deallocate(ptr) };
    assert!(usable >= got.size);
    // (No `block_state` check after the free: the owner may already have reused it.)
    usable
}

#[test]
fn cross_thread_ring_accounts_for_every_byte() {
    let alloc = allocator(&checked_config());
    let mut most_allocated_in_a_round = 0;
    for round in 0..8 {
        let (allocated, freed) = ring_round(&alloc, 4, 20_000, round);
        assert_eq!(
            allocated, freed,
            "round {round}: every usable byte comes back"
        );
        most_allocated_in_a_round = most_allocated_in_a_round.max(allocated);
    }
    // Later rounds run on new threads that adopt the abandoned heaps and collect the
    // remote frees left in them, so memory is reused, not leaked round after round. How
    // many blocks are in flight at a round's peak depends on how the threads interleave
    // (from a fifth of a round's bytes to nearly all of them), so the bound is a round's
    // whole allocation, twice over for slab fragmentation: keeping every round's memory
    // would take eight rounds' worth. Freed large objects' mappings may be kept in a
    // bounded cache; they are not slab memory.
    let slabs = alloc.reserved_bytes() - alloc.cached_large_bytes();
    assert!(
        slabs <= 2 * most_allocated_in_a_round,
        "{slabs} bytes of slabs reserved after 8 rounds of at most {most_allocated_in_a_round}"
    );
    assert!(alloc.cached_large_bytes() <= 2 * (4 << 20));
}

#[test]
fn unchecked_cross_thread_ring() {
    let mut config = checked_config();
    config.debug.check_pointers = false;
    let alloc = allocator(&config);
    let (allocated, freed) = ring_round(&alloc, 4, 20_000, 7);
    assert_eq!(allocated, freed);
}

#[test]
fn exited_thread_heap_is_adopted_with_its_memory() {
    let alloc = allocator(&checked_config());
    // A thread allocates 2000 blocks and exits without freeing them.
    let blocks: Vec<usize> = {
        let alloc = Arc::clone(&alloc);
        thread::spawn(move || {
            (0..2000)
                .map(|i| {
                    let ptr = alloc.allocate(64, 16).unwrap();
                    write_pattern(ptr, 64, i);
                    ptr.as_ptr() as usize
                })
                .collect()
        })
        .join()
        .unwrap()
    };
    let reserved = alloc.reserved_bytes();
    // Another thread frees them all (remote frees into an abandoned heap).
    {
        let alloc = Arc::clone(&alloc);
        let blocks = blocks.clone();
        thread::spawn(move || {
            for (i, &addr) in blocks.iter().enumerate() {
                free_sent(
                    &alloc,
                    Sent {
                        addr,
                        size: 64,
                        seed: i as u64,
                    },
                );
            }
        })
        .join()
        .unwrap();
    }
    // A third thread adopts the abandoned heap: once the slab's never-used blocks run out
    // it collects the remote frees, so every freed block comes back to it.
    let reused = {
        let alloc = Arc::clone(&alloc);
        thread::spawn(move || {
            let got: Vec<usize> = (0..20_000)
                .map(|_| alloc.allocate(64, 16).unwrap().as_ptr() as usize)
                .collect();
            for &addr in &got {
                // SAFETY: live blocks of this allocator.
                unsafe { alloc.deallocate(NonNull::new(addr as *mut u8).unwrap()) };
            }
            got
        })
        .join()
        .unwrap()
    };
    let reused: std::collections::HashSet<usize> = reused.into_iter().collect();
    let missing = blocks.iter().filter(|a| !reused.contains(a)).count();
    assert_eq!(
        missing, 0,
        "{missing} of the freed blocks were never handed out again"
    );
    // 20 000 blocks of 64 B need 1.25 MiB of slabs; 2000 of them were reused, and the
    // first region (1 MiB) was already mapped.
    assert!(
        alloc.reserved_bytes() <= reserved + 2 * MIB,
        "reserved grew from {reserved} to {}",
        alloc.reserved_bytes()
    );
}

#[test]
fn out_of_memory_is_an_error_with_numbers_and_recoverable() {
    let mut config = PoolConfig::high_performance_cpu();
    config.initial_size_bytes = 0;
    config.chunk_size_bytes = 256 * KIB;
    config.growth_factor = 1.0;
    config.max_size_bytes = Some(2 * MIB);
    let alloc = allocator(&config);
    let mut live = Vec::new();
    let err = loop {
        match alloc.allocate(1000, 16) {
            Ok(ptr) => live.push(ptr),
            Err(e) => break e,
        }
        assert!(alloc.reserved_bytes() <= 2 * MIB);
    };
    match err {
        PoolError::OutOfMemory {
            pool,
            requested_bytes,
            available_bytes,
            limit_bytes,
        } => {
            assert_eq!(pool, "threads");
            assert_eq!(limit_bytes, 2 * MIB);
            assert!(
                requested_bytes > available_bytes,
                "{requested_bytes} <= {available_bytes}"
            );
        }
        other => panic!("expected OutOfMemory, got {other}"),
    }
    assert!(live.len() > 1000, "only {} blocks fit in 2 MiB", live.len());
    // A large request beyond the limit fails the same way and names the request.
    match alloc.allocate(3 * MIB, 16) {
        Err(PoolError::OutOfMemory {
            requested_bytes, ..
        }) => assert_eq!(requested_bytes, 3 * MIB),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    // Usable afterwards: freeing makes room for the same class at once.
    for ptr in live.drain(..100) {
        // SAFETY: live blocks.
        unsafe { alloc.deallocate(ptr) };
    }
    for _ in 0..100 {
        live.push(alloc.allocate(1000, 16).expect("room after frees"));
    }
    for ptr in live {
        // SAFETY: live blocks.
        unsafe { alloc.deallocate(ptr) };
    }
    let mut alloc = Arc::try_unwrap(alloc).unwrap();
    alloc.reset(true);
    assert_eq!(
        alloc.reserved_bytes(),
        0,
        "no initial region: everything returned"
    );
    assert!(
        alloc.allocate(MIB, 16).is_ok(),
        "a large object fits after the reset"
    );
}

#[test]
fn dropping_the_allocator_while_threads_keep_their_tls_is_safe() {
    for _ in 0..3 {
        let alloc = allocator(&checked_config());
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let worker = {
            let alloc = Arc::clone(&alloc);
            thread::spawn(move || {
                let p = alloc.allocate(32, 16).unwrap();
                // SAFETY: live block.
                unsafe { alloc.deallocate(p) };
                drop(alloc);
                // The allocator is dropped on the main thread while this thread's TLS
                // still holds its heap; the thread then exits (abandoning a DEAD heap).
                go_rx.recv().unwrap();
            })
        };
        thread::sleep(std::time::Duration::from_millis(10));
        drop(alloc);
        go_tx.send(()).unwrap();
        worker.join().unwrap();
    }
}

/// Timing, not a correctness check: `cargo test -p pools --test lockfree_threads --release
/// -- --ignored --nocapture timing`. Prints ns per alloc+free pair.
#[test]
#[ignore]
fn timing_against_mutex_and_mimalloc() {
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::Mutex;
    use std::time::Instant;
    const PAIRS: usize = 2_000_000;
    let mut config = PoolConfig::high_performance_cpu();
    config.huge_pages = pools::HugePages::Off;
    let lf = allocator(&config);
    let mi = mimalloc::MiMalloc;
    let layout = Layout::from_size_align(64, 16).unwrap();

    // Single thread, alloc+free pairs with a small working set.
    let start = Instant::now();
    let mut ring = [std::ptr::null_mut::<u8>(); 64];
    for i in 0..PAIRS {
        let slot = &mut ring[i % 64];
        if let Some(p) = NonNull::new(*slot) {
            // SAFETY: live block.
            unsafe { lf.deallocate(p) };
        }
        *slot = lf.allocate(64, 16).unwrap().as_ptr();
    }
    let lf_ns = start.elapsed().as_nanos() as f64 / PAIRS as f64;
    for p in ring.iter().filter_map(|p| NonNull::new(*p)) {
        // SAFETY: live block.
        unsafe { lf.deallocate(p) };
    }
    let start = Instant::now();
    let mut ring = [std::ptr::null_mut::<u8>(); 64];
    for i in 0..PAIRS {
        let slot = &mut ring[i % 64];
        if !slot.is_null() {
            // SAFETY: from mimalloc with this layout.
            unsafe { mi.dealloc(*slot, layout) };
        }
        // SAFETY: non-zero layout.
        *slot = unsafe { mi.alloc(layout) };
    }
    let mi_ns = start.elapsed().as_nanos() as f64 / PAIRS as f64;
    for p in ring {
        // SAFETY: from mimalloc with this layout.
        unsafe { mi.dealloc(p, layout) };
    }
    println!("single thread alloc+free (64 B): lock-free {lf_ns:.1} ns, mimalloc {mi_ns:.1} ns");

    // Two threads: producer allocates, consumer frees (every free is remote).
    fn cross<A: Fn() -> usize + Sync, F: Fn(usize) + Sync>(alloc: A, free: F) -> f64 {
        const N: usize = 1_000_000;
        let (tx, rx) = mpsc::sync_channel::<Vec<usize>>(64);
        let start = Instant::now();
        thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..N / 256 {
                    tx.send((0..256).map(|_| alloc()).collect()).unwrap();
                }
                drop(tx);
            });
            s.spawn(|| {
                for batch in rx {
                    batch.into_iter().for_each(&free);
                }
            });
        });
        start.elapsed().as_nanos() as f64 / N as f64
    }
    let lf_cross = cross(
        || lf.allocate(64, 16).unwrap().as_ptr() as usize,
        // SAFETY: live blocks from the producer.
        |a| unsafe {
            lf.deallocate(NonNull::new(a as *mut u8).unwrap());
        },
    );
    let mutex_pool = Mutex::new(());
    let mx_cross = cross(
        || {
            let _g = mutex_pool.lock().unwrap();
            // SAFETY: non-zero layout (mimalloc behind a mutex stands in for a locked pool).
            unsafe { mi.alloc(layout) as usize }
        },
        |a| {
            let _g = mutex_pool.lock().unwrap();
            // SAFETY: from mimalloc with this layout.
            unsafe { mi.dealloc(a as *mut u8, layout) };
        },
    );
    let mi_cross = cross(
        // SAFETY: non-zero layout.
        || unsafe { mi.alloc(layout) as usize },
        // SAFETY: from mimalloc with this layout.
        |a| unsafe { mi.dealloc(a as *mut u8, layout) },
    );
    println!(
        "2 threads, allocate here / free there (64 B): lock-free {lf_cross:.1} ns/pair, \
         mutex-wrapped {mx_cross:.1}, mimalloc {mi_cross:.1}"
    );
    let stats = StatsCounters::new();
    let start = Instant::now();
    for _ in 0..PAIRS {
        stats.on_alloc(64);
        stats.on_free(64);
    }
    println!(
        "StatsCounters on_alloc+on_free (uncontended): {:.1} ns",
        start.elapsed().as_nanos() as f64 / PAIRS as f64
    );
}
