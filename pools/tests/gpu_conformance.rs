//! One conformance suite for every `GpuPool` configuration, on the simulated device
//! (RMM's typed tests: each configuration is instantiated with one line at the bottom).
//!
//! The simulated device is shared with the test (`Arc<Mutex<SimulatedDevice>>`), so the
//! shadow model can ask its vector clocks whether a stream was ordered after the free of a
//! block before the pool handed that block to it.

use pools::gpu::{DeviceUpstream, GpuPool, SimulatedDevice, StreamId};
use pools::{AllocFlags, AllocatorKind, FitPolicy, MemoryPool, PoolConfig, PoolError};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

const MIB: u64 = 1024 * 1024;
/// Granule of the "last free" shadow: every block is a multiple of the 256 B alignment.
const GRANULE: u64 = 256;

fn fixed() -> PoolConfig {
    PoolConfig {
        allocator: AllocatorKind::FixedSize,
        block_size_bytes: 4096,
        ..PoolConfig::default_gpu()
    }
}

fn variable_best_fit() -> PoolConfig {
    PoolConfig::default_gpu()
}

fn variable_first_fit() -> PoolConfig {
    PoolConfig {
        fit: FitPolicy::FirstFit,
        ..PoolConfig::default_gpu()
    }
}

fn debug() -> PoolConfig {
    PoolConfig::debug_gpu()
}

type Device = Arc<Mutex<SimulatedDevice>>;

fn pool_on(config: PoolConfig, capacity: u64) -> (GpuPool, Device) {
    let device: Device = Arc::new(Mutex::new(SimulatedDevice::new(capacity)));
    let pool = GpuPool::new("conformance", config, Box::new(device.clone())).unwrap();
    (pool, device)
}

fn addr(p: NonNull<u8>) -> u64 {
    p.as_ptr() as usize as u64
}

/// The shadow model: live ranges (no overlap), and for every granule the stream and epoch
/// of its last free (stream ordering).
struct Shadow {
    live: BTreeMap<u64, (u64, usize)>,
    last_free: HashMap<u64, (StreamId, u64)>,
}

impl Shadow {
    fn new() -> Self {
        Shadow {
            live: BTreeMap::new(),
            last_free: HashMap::new(),
        }
    }

    fn on_alloc(&mut self, dev: &Device, stream: StreamId, a: u64, len: u64, size: usize) {
        assert!(len >= size as u64, "usable {len} < requested {size}");
        if let Some((&prev, &(prev_len, _))) = self.live.range(..=a).next_back() {
            assert!(
                prev + prev_len <= a,
                "block {a:#x} overlaps live {prev:#x}+{prev_len}"
            );
        }
        if let Some((&next, _)) = self.live.range(a..).next() {
            assert!(
                a + len <= next,
                "block {a:#x}+{len} overlaps live {next:#x}"
            );
        }
        let device = dev.lock().unwrap();
        let mut g = a;
        while g < a + len {
            if let Some((owner, epoch)) = self.last_free.remove(&g) {
                assert!(
                    device.ordered_after(stream, owner, epoch),
                    "granule {g:#x} freed on {owner:?} at epoch {epoch} handed to {stream:?} \
                     before it waited for that free"
                );
            }
            g += GRANULE;
        }
        self.live.insert(a, (len, size));
    }

    fn on_free(&mut self, dev: &Device, stream: StreamId, a: u64) {
        let (len, _) = self.live.remove(&a).expect("freeing a live block");
        let epoch = dev.lock().unwrap().epoch(stream);
        let mut g = a;
        while g < a + len {
            self.last_free.insert(g, (stream, epoch));
            g += GRANULE;
        }
    }
}

fn random_program_no_overlap_and_stream_order(config: PoolConfig) {
    for seed in 0..4u64 {
        let (pool, dev) = pool_on(config.clone(), 256 * MIB);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut shadow = Shadow::new();
        let mut live: Vec<(NonNull<u8>, StreamId)> = Vec::new();
        for step in 0..3000 {
            let stream = StreamId(rng.gen_range(0..3));
            if live.is_empty() || rng.gen_bool(0.55) {
                let size = match rng.gen_range(0..10) {
                    0 => rng.gen_range(0..=64),
                    1..=6 => rng.gen_range(1..=8192),
                    _ => rng.gen_range(8192..=256 * 1024),
                };
                let p = pool.allocate_on(size, stream).unwrap();
                let len = pool.usable_size_checked(p).unwrap() as u64;
                assert_eq!(addr(p) % 256, 0, "default alignment is 256 B");
                shadow.on_alloc(&dev, stream, addr(p), len, size);
                live.push((p, stream));
            } else {
                let i = rng.gen_range(0..live.len());
                let (p, _) = live.swap_remove(i);
                // Free on a random stream: the block's next user may be anyone.
                pool.deallocate_on(p, stream).unwrap();
                shadow.on_free(&dev, stream, addr(p));
            }
            if step % 97 == 0 {
                pool.check_invariants().unwrap();
            }
        }
        pool.check_invariants().unwrap();
        let stats = pool.stats();
        assert_eq!(stats.live_count(), live.len() as u64);
        let used: u64 = shadow.live.values().map(|&(_, s)| s as u64).sum();
        assert_eq!(stats.current_used_bytes, used);
    }
}

fn alignment(config: PoolConfig) {
    let (pool, _dev) = pool_on(config.clone(), 64 * MIB);
    for size in [1usize, 3, 255, 256, 257, 1000, 4096, 100_000] {
        let p = pool.allocate(size).unwrap();
        assert_eq!(addr(p) % 256, 0, "size {size}");
        assert!(pool.usable_size_checked(p).unwrap() >= size);
    }
    // Zero-byte requests still get a distinct, aligned block.
    let z1 = pool.allocate(0).unwrap();
    let z2 = pool.allocate(0).unwrap();
    assert_ne!(z1, z2);
    for align in [512usize, 4096, 65536] {
        match pool.allocate_with(100, AllocFlags::aligned(align)) {
            Ok(p) => assert_eq!(addr(p) % align as u64, 0, "align {align}"),
            // Fixed-size pools serve larger alignments only up to the device granularity.
            Err(PoolError::InvalidOperation { .. })
                if config.allocator == AllocatorKind::FixedSize && align > 512 => {}
            Err(e) => panic!("align {align}: {e}"),
        }
    }
    assert!(matches!(
        pool.allocate_with(8, AllocFlags::aligned(300)),
        Err(PoolError::InvalidOperation { .. })
    ));
    pool.check_invariants().unwrap();
}

fn same_stream_reuse_is_immediate(config: PoolConfig) {
    let (pool, dev) = pool_on(config, 64 * MIB);
    let s = StreamId(1);
    // Keeps the chunk from being entirely free (the debug preset returns empty chunks).
    let _keeper = pool.allocate_on(1000, s).unwrap();
    let a = pool.allocate_on(1000, s).unwrap();
    pool.deallocate_on(a, s).unwrap();
    let before = pool.gpu_stats();
    let b = pool.allocate_on(1000, s).unwrap();
    let after = pool.gpu_stats();
    assert_eq!(
        a, b,
        "a block freed on a stream is reused at once on that stream"
    );
    assert_eq!(
        after.event_waits, before.event_waits,
        "no wait within a stream"
    );
    assert_eq!(after.same_stream_reuses, before.same_stream_reuses + 1);
    assert_eq!(dev.lock().unwrap().counts().event_waits, 0);
}

fn cross_stream_reuse_waits_on_the_event(config: PoolConfig) {
    let (pool, dev) = pool_on(config, 64 * MIB);
    let (s1, s2) = (StreamId(1), StreamId(2));
    let _keeper = pool.allocate_on(1000, s1).unwrap();
    let a = pool.allocate_on(1000, s1).unwrap();
    pool.deallocate_on(a, s1).unwrap();
    let epoch = dev.lock().unwrap().epoch(s1);
    assert!(epoch > 0, "a free records the stream's event");
    assert!(!dev.lock().unwrap().ordered_after(s2, s1, epoch));
    let before = pool.gpu_stats();
    let b = pool.allocate_on(1000, s2).unwrap();
    let after = pool.gpu_stats();
    // Stream 2 has no free list: it takes stream 1's block, after waiting on its event.
    assert_eq!(a, b);
    assert_eq!(after.cross_stream_reuses, before.cross_stream_reuses + 1);
    assert_eq!(after.event_waits, before.event_waits + 1);
    assert_eq!(after.upstream.event_waits, before.upstream.event_waits + 1);
    assert_eq!(after.chunks_grown, before.chunks_grown, "no growth needed");
    assert!(dev.lock().unwrap().ordered_after(s2, s1, epoch));
}

fn merge_then_grow(config: PoolConfig) {
    // Two neighbours of one chunk freed on two streams: only a merge makes them one block.
    let config = PoolConfig {
        chunk_size_bytes: MIB as usize,
        growth_factor: 1.0,
        ..config
    };
    let variable = config.allocator == AllocatorKind::VariableSize;
    let (pool, _dev) = pool_on(config, 64 * MIB);
    let quarter = if variable { (MIB / 4) as usize } else { 4096 };
    let a = pool.allocate_on(quarter, StreamId(0)).unwrap();
    let b = pool.allocate_on(quarter, StreamId(0)).unwrap();
    let keeper = pool.allocate_on(quarter, StreamId(0)).unwrap();
    pool.deallocate_on(a, StreamId(1)).unwrap();
    pool.deallocate_on(b, StreamId(2)).unwrap();
    let grown = pool.gpu_stats().chunks_grown;
    if variable {
        let before = pool.gpu_stats();
        let both = pool.allocate_on(2 * quarter, StreamId(3)).unwrap();
        let after = pool.gpu_stats();
        assert_eq!(
            after.chunks_grown, grown,
            "served by merging, not by growing"
        );
        assert_eq!(both, a, "a and b coalesced after the merge");
        assert!(after.stream_merges - before.stream_merges >= 2);
        assert!(after.event_waits - before.event_waits >= 2);
        pool.deallocate_on(both, StreamId(3)).unwrap();
    }
    // Larger than anything free: the pool grows (or, fixed-size, takes a large object).
    let big = pool.allocate_on(3 * MIB as usize, StreamId(3)).unwrap();
    assert!(pool.gpu_stats().chunks_grown > grown || pool.stats().large_object_count > 0);
    pool.deallocate_on(big, StreamId(3)).unwrap();
    pool.deallocate_on(keeper, StreamId(0)).unwrap();
    pool.check_invariants().unwrap();
}

fn coalesces_to_one_block_per_chunk(config: PoolConfig) {
    // Fixed-size pools serve up to one block from chunks; larger requests are large objects.
    let max_size = if config.allocator == AllocatorKind::FixedSize {
        4096
    } else {
        20_000
    };
    let (pool, _dev) = pool_on(config, 256 * MIB);
    let mut rng = SmallRng::seed_from_u64(7);
    let mut live = Vec::new();
    for _ in 0..2000 {
        let stream = StreamId(rng.gen_range(0..4));
        live.push((
            pool.allocate_on(rng.gen_range(1..=max_size), stream)
                .unwrap(),
            stream,
        ));
    }
    // Free in random order, each on a random stream.
    while !live.is_empty() {
        let (p, _) = live.swap_remove(rng.gen_range(0..live.len()));
        pool.deallocate_on(p, StreamId(rng.gen_range(0..4)))
            .unwrap();
    }
    pool.synchronize().unwrap();
    pool.check_invariants().unwrap();
    let chunks = pool.chunks();
    let extents = pool.free_extents();
    assert!(chunks.len() > 1, "the test should span several chunks");
    assert_eq!(
        extents.len(),
        chunks.len(),
        "one free block per chunk: {extents:?}"
    );
    for (e, (c, len)) in extents.iter().zip(&chunks) {
        assert_eq!(e.chunk, *c);
        assert_eq!(e.addr, *c);
        // The fixed-size strategy leaves the tail shorter than a block unused.
        assert!(
            e.len <= *len && len - e.len < 4096,
            "{e:?} vs chunk {c:#x}+{len}"
        );
    }
    assert_eq!(pool.stats().current_used_bytes, 0);
}

fn out_of_memory_leaves_the_pool_usable(config: PoolConfig) {
    let capacity = 8 * MIB;
    let (pool, dev) = pool_on(config, capacity);
    let mut live = Vec::new();
    loop {
        match pool.allocate(300_000) {
            Ok(p) => live.push(p),
            Err(PoolError::OutOfMemory {
                requested_bytes,
                limit_bytes,
                ..
            }) => {
                assert!(requested_bytes >= 300_000);
                assert!(limit_bytes > 0);
                break;
            }
            Err(e) => panic!("expected OutOfMemory, got {e}"),
        }
        assert!(live.len() < 100, "8 MiB cannot hold 100 x 300 kB");
    }
    assert!(
        live.len() >= 20,
        "only {} blocks fitted in 8 MiB",
        live.len()
    );
    let failures = pool.stats().failure_count;
    assert!(failures >= 1);
    assert!(dev.lock().unwrap().counts().reserved_bytes <= capacity);
    pool.check_invariants().unwrap();
    // Still usable: free one, allocate again.
    pool.deallocate_checked(live.pop().unwrap()).unwrap();
    live.push(pool.allocate(300_000).unwrap());
    // A request larger than the device fails cleanly too.
    assert!(matches!(
        pool.allocate(capacity as usize * 2),
        Err(PoolError::OutOfMemory { .. })
    ));
    for p in live {
        pool.deallocate_checked(p).unwrap();
    }
    pool.check_invariants().unwrap();
}

fn invalid_pointers_are_errors(config: PoolConfig) {
    let (pool, _dev) = pool_on(config, 64 * MIB);
    let p = pool.allocate(1000).unwrap();
    let inside = NonNull::new(unsafe_free_offset(p, 256)).unwrap();
    assert!(matches!(
        pool.deallocate_checked(inside),
        Err(PoolError::InvalidPointer { .. })
    ));
    pool.deallocate_checked(p).unwrap();
    assert!(matches!(
        pool.deallocate_checked(p),
        Err(PoolError::InvalidPointer { .. })
    ));
    let foreign = NonNull::new(0x1000 as *mut u8).unwrap();
    assert!(matches!(
        pool.deallocate_checked(foreign),
        Err(PoolError::InvalidPointer { .. })
    ));
    pool.check_invariants().unwrap();
}

/// `p + offset` as an address only (device pointers are never dereferenced).
fn unsafe_free_offset(p: NonNull<u8>, offset: usize) -> *mut u8 {
    p.as_ptr().wrapping_add(offset)
}

fn reset_releases_everything(config: PoolConfig) {
    let (pool, dev) = pool_on(config.clone(), 256 * MIB);
    let mut rng = SmallRng::seed_from_u64(3);
    for _ in 0..500 {
        pool.allocate_on(rng.gen_range(1..100_000), StreamId(rng.gen_range(0..3)))
            .unwrap();
    }
    let grown = pool.chunks().len();
    // SAFETY: no block of this pool is used after the reset.
    unsafe { pool.reset() }.unwrap();
    let stats = pool.stats();
    assert_eq!(stats.current_used_bytes, 0);
    assert_eq!(stats.live_count(), 0);
    // The default return policies give grown chunks back; nothing initial was configured.
    assert_eq!(
        pool.chunks().len(),
        0,
        "{grown} chunks were grown, none kept"
    );
    assert_eq!(dev.lock().unwrap().counts().reserved_bytes, 0);
    assert_eq!(stats.reserved_bytes, 0);
    // Usable after reset.
    let p = pool.allocate(5000).unwrap();
    pool.deallocate_checked(p).unwrap();
    pool.check_invariants().unwrap();
}

fn reallocate_and_device_copies(config: PoolConfig) {
    let (pool, _dev) = pool_on(config, 64 * MIB);
    let p = pool.allocate(1000).unwrap();
    let q = pool.reallocate_checked(p, 50_000).unwrap();
    assert!(pool.usable_size_checked(q).unwrap() >= 50_000);
    assert!(matches!(
        pool.usable_size_checked(p),
        Err(PoolError::InvalidPointer { .. }) | Ok(_)
    ));
    let r = pool.allocate(100).unwrap();
    pool.copy_device_to_device(r, q, 100).unwrap();
    assert!(matches!(
        pool.copy_device_to_device(r, q, 100_000),
        Err(PoolError::InvalidPointer { .. })
    ));
    // Host <-> simulated device has nothing to copy: a clear error, not silence.
    let e = pool.copy_host_to_device(r, &[1, 2, 3]).unwrap_err();
    assert!(e.to_string().contains("simulated"), "{e}");
}

macro_rules! conformance {
    ($($name:ident => $config:expr;)*) => {$(
        mod $name {
            use super::*;
            #[test] fn no_overlap_and_stream_order() { random_program_no_overlap_and_stream_order($config) }
            #[test] fn alignment_256() { alignment($config) }
            #[test] fn same_stream_reuse() { same_stream_reuse_is_immediate($config) }
            #[test] fn cross_stream_reuse() { cross_stream_reuse_waits_on_the_event($config) }
            #[test] fn merge_and_grow() { merge_then_grow($config) }
            #[test] fn coalescing() { coalesces_to_one_block_per_chunk($config) }
            #[test] fn out_of_memory() { out_of_memory_leaves_the_pool_usable($config) }
            #[test] fn invalid_pointers() { invalid_pointers_are_errors($config) }
            #[test] fn reset() { reset_releases_everything($config) }
            #[test] fn realloc_and_copies() { reallocate_and_device_copies($config) }
        }
    )*};
}

conformance! {
    fixed_size => fixed();
    variable_best_fit => variable_best_fit();
    variable_first_fit => variable_first_fit();
    debug_checks => debug();
}

#[test]
fn manager_creates_simulated_gpu_pools() {
    let manager = pools::PoolManager::new();
    let pool = manager
        .create_simulated_gpu_pool("sim", PoolConfig::default_gpu(), 16 * MIB)
        .unwrap();
    assert!(manager.list().contains(&"sim".to_string()));
    let p = pool.allocate_on(1000, StreamId(2)).unwrap();
    assert_eq!(manager.get("sim").unwrap().stats().live_count(), 1);
    pool.deallocate_on(p, StreamId(2)).unwrap();
    assert!(matches!(
        manager.create_simulated_gpu_pool("sim", PoolConfig::default_gpu(), MIB),
        Err(PoolError::InvalidOperation { .. })
    ));
    // Without a driver the CUDA variant is an error, never a panic.
    if pools::gpu::cuda_available().is_err() {
        assert!(matches!(
            manager.create_gpu_pool("dev", PoolConfig::default_gpu()),
            Err(PoolError::Cuda { .. })
        ));
    }
}
