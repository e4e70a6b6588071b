//! `MemoryStats`: a plain struct of counters (the snapshot) and `StatsCounters`, the atomics
//! a pool updates on its paths.
//!
//! ```text
//!   StatsCounters
//!   ├─ global line:   used_published_bytes, peak_used_bytes        (written rarely)
//!   ├─ global:        counts of serialized paths, reserved, failures, chunks ...
//!   └─ shards[0..32]: one 128-byte line each, one live thread each (plain stores)
//!      shards[32]:    every other thread (read-modify-writes)
//!        allocation_count, free_count, total_allocated_bytes,
//!        used_unpublished_bytes  ── |x| >= 64 KiB ──> moved to used_published_bytes
//! ```
//!
//! Concurrent pools (`on_alloc`, `on_free`) would otherwise make every core write the same
//! cache line on every operation, which costs more than a lock-free allocation. So each
//! thread claims a shard slot once (process-wide, given back when the thread exits) and
//! counts there as its only writer; `snapshot()` sums the shards. The used bytes a peak
//! needs stay close through the publish threshold (the accuracy contract is on
//! [`StatsCounters`]).

use serde::{Deserialize, Serialize};
// Plain statistics counters: they never order other memory, so they stay out of
// `crate::sync` (see its module doc).
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// A snapshot of a pool's counters. Block byte figures (`total_allocated_bytes`,
/// `*_used_bytes`) are usable sizes of the blocks handed out (at least what the caller
/// asked for: the size class or block size that served it); `*reserved_bytes` are bytes
/// taken from the upstream.
///
/// Accuracy: a snapshot taken while no operation is running is exact in every field but
/// `peak_used_bytes`, which is exact for a pool updated by one thread and within
/// `k * 64 KiB` of the true peak when `k` threads have allocated and freed in a
/// lock-free or thread-cached pool (see [`StatsCounters`]). A snapshot taken while other threads run is approximate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Sum of the usable sizes of every successful allocation ever made.
    pub total_allocated_bytes: u64,
    /// Sum of the usable sizes of the blocks live now.
    pub current_used_bytes: u64,
    /// Highest `current_used_bytes` seen (bounded error under concurrency: see above).
    pub peak_used_bytes: u64,
    /// Bytes taken from the upstream (OS or device) and not yet returned.
    pub reserved_bytes: u64,
    /// Highest `reserved_bytes` seen.
    pub peak_reserved_bytes: u64,
    pub allocation_count: u64,
    pub free_count: u64,
    /// Allocations that returned an error (out of memory or invalid request).
    pub failure_count: u64,
    /// Allocations served by the large-object path (above the largest size class).
    pub large_object_count: u64,
    /// Number of chunk (upstream) allocations made.
    pub chunk_count: u64,
    /// Bytes of free blocks held in per-thread caches now (part of `reserved_bytes`, not of
    /// `current_used_bytes`); 0 for pools without a thread cache.
    #[serde(default)]
    pub thread_cached_bytes: u64,
}

impl MemoryStats {
    /// Live blocks now.
    pub fn live_count(&self) -> u64 {
        self.allocation_count.saturating_sub(self.free_count)
    }

    /// `1 - used / reserved` now (0 when nothing is reserved).
    pub fn fragmentation(&self) -> f64 {
        if self.reserved_bytes == 0 {
            0.0
        } else {
            1.0 - self.current_used_bytes as f64 / self.reserved_bytes as f64
        }
    }

    /// Sum of several pools' stats (for `PoolManager::aggregate_stats`).
    pub fn merge(&mut self, other: &MemoryStats) {
        self.total_allocated_bytes += other.total_allocated_bytes;
        self.current_used_bytes += other.current_used_bytes;
        self.peak_used_bytes += other.peak_used_bytes;
        self.reserved_bytes += other.reserved_bytes;
        self.peak_reserved_bytes += other.peak_reserved_bytes;
        self.allocation_count += other.allocation_count;
        self.free_count += other.free_count;
        self.failure_count += other.failure_count;
        self.large_object_count += other.large_object_count;
        self.chunk_count += other.chunk_count;
        self.thread_cached_bytes += other.thread_cached_bytes;
    }
}

/// Shards that one live thread each has to itself (plain stores, no read-modify-write).
const OWNED_SHARDS: usize = 32;
/// The shard every other thread updates with read-modify-writes (more than
/// `OWNED_SHARDS` live threads, or a thread whose thread-locals are being destroyed).
const SHARED_SHARD: usize = OWNED_SHARDS;
const SHARDS: usize = OWNED_SHARDS + 1;

/// A shard moves its unpublished used bytes to the published figure once they reach this
/// magnitude: the peak's error bound per thread that updates the counters.
pub const PEAK_PUBLISH_THRESHOLD_BYTES: i64 = 64 * 1024;

/// One thread's counters, alone on its cache line (two lines: adjacent-line prefetch).
/// Shards `0..OWNED_SHARDS` have one writer at a time, the thread holding that slot
/// (`shard_slot`); any thread may read them.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    allocation_count: AtomicU64,
    free_count: AtomicU64,
    total_allocated_bytes: AtomicU64,
    /// Used bytes counted here and not yet added to `used_published_bytes`: allocations
    /// minus frees made through this shard since its last publish. Invariant: within
    /// `(-PEAK_PUBLISH_THRESHOLD_BYTES, PEAK_PUBLISH_THRESHOLD_BYTES)` after each operation
    /// on an owned shard (the shared one can exceed it by a block per racing thread).
    used_unpublished_bytes: AtomicI64,
    /// For an owned shard: an allocation that takes `used_unpublished_bytes` above this
    /// takes the cold path (a publish, or a new peak). At most
    /// `PEAK_PUBLISH_THRESHOLD_BYTES - 1` and at most `peak - published` as the owner last
    /// read them, so below it the owner's estimate cannot be a new peak unless another
    /// thread published since (within the peak's documented bound). 0 at first: the first
    /// allocation computes it.
    alloc_trigger: AtomicI64,
}

/// The figures every thread reads on `on_alloc` and writes only on a publish.
#[derive(Debug, Default)]
#[repr(align(128))]
struct UsedBytes {
    /// Invariant: the true current used bytes are `used_published_bytes` plus every
    /// shard's `used_unpublished_bytes`. Signed: a shard that only frees publishes
    /// negative amounts, possibly before the allocating shard published its bytes.
    used_published_bytes: AtomicI64,
    peak_used_bytes: AtomicU64,
}

/// The atomics behind `MemoryStats`. Relaxed ordering throughout: counters are statistics,
/// not synchronisation.
///
/// Two ways to update the block counters, one per kind of pool:
/// - `on_alloc_serialized` / `on_free_serialized`, for a pool whose every writer holds its
///   lock: plain loads and stores on the global counters; every figure exact.
/// - `on_alloc` / `on_free`, for concurrent pools: each thread counts in its own shard
///   (see the module doc); the counts, `total_allocated_bytes` and `current_used_bytes`
///   of a snapshot are sums over the shards, exact once the updating threads are done.
///
/// Accuracy contract of `peak_used_bytes` under `on_alloc`: an `on_alloc` on an owned
/// shard samples `published + its own shard's unpublished bytes` whenever that could be a
/// new peak by what the owner last read (its `alloc_trigger`), and every publish samples
/// the new published figure; a sample misses the other shards' unpublished bytes, each of
/// magnitude below `PEAK_PUBLISH_THRESHOLD_BYTES` (64 KiB), and a trigger read before
/// another shard published can skip a sample by at most one more such amount. So the
/// recorded peak is within `k * 64 KiB` of the true peak, above or below, where `k` is the number
/// of shards holding unpublished bytes: at most the number of threads that have updated
/// these counters (a slot freed by an exiting thread is reused, with its bytes, by the
/// next thread that claims it). With a single thread it is exact. Beyond 32 live threads
/// the extra ones share one shard, which can exceed 64 KiB by a block per racing thread.
/// `snapshot()` only reads, and never reports a peak below the current used bytes.
#[derive(Debug)]
pub struct StatsCounters {
    used: UsedBytes,
    /// Counts of the serialized paths (the sharded paths count in `shards`).
    total_allocated_bytes: AtomicU64,
    allocation_count: AtomicU64,
    free_count: AtomicU64,
    reserved_bytes: AtomicU64,
    peak_reserved_bytes: AtomicU64,
    failure_count: AtomicU64,
    large_object_count: AtomicU64,
    chunk_count: AtomicU64,
    shards: [Shard; SHARDS],
}

impl Default for StatsCounters {
    fn default() -> Self {
        StatsCounters {
            used: UsedBytes::default(),
            total_allocated_bytes: AtomicU64::new(0),
            allocation_count: AtomicU64::new(0),
            free_count: AtomicU64::new(0),
            reserved_bytes: AtomicU64::new(0),
            peak_reserved_bytes: AtomicU64::new(0),
            failure_count: AtomicU64::new(0),
            large_object_count: AtomicU64::new(0),
            chunk_count: AtomicU64::new(0),
            shards: std::array::from_fn(|_| Shard::default()),
        }
    }
}

impl StatsCounters {
    pub fn new() -> Self {
        Self::default()
    }

    /// This thread's shard, and whether the thread holds it alone (see `shard_slot`).
    #[inline]
    fn shard(&self) -> (&Shard, bool) {
        let (slot, owned) = shard_slot::current();
        (&self.shards[slot], owned)
    }

    /// An allocation of `size_bytes` (usable) made by a concurrent pool: plain loads and
    /// stores on this thread's shard (read-modify-writes when it shares the shard), and
    /// two reads of a rarely written line for the peak (see the type's doc).
    #[inline]
    pub fn on_alloc(&self, size_bytes: usize) {
        let size = size_bytes as u64;
        let (shard, owned) = self.shard();
        if owned {
            if owned_alloc(shard, size_bytes) {
                self.on_alloc_cold(shard);
            }
            return;
        }
        add(&shard.allocation_count, 1, owned);
        add(&shard.total_allocated_bytes, size, owned);
        let unpublished = add_signed(&shard.used_unpublished_bytes, size as i64, owned);
        if unpublished >= PEAK_PUBLISH_THRESHOLD_BYTES {
            self.publish(shard, owned);
            return;
        }
        let estimate = self.used.used_published_bytes.load(Relaxed) + unpublished;
        if estimate > 0 && estimate as u64 > self.used.peak_used_bytes.load(Relaxed) {
            self.used
                .peak_used_bytes
                .fetch_max(estimate as u64, Relaxed);
        }
    }

    /// `on_alloc`, then `block`: the shape a pool's fast path wants (every call on it is
    /// in tail position, so the fast path keeps no register across a call).
    #[inline(always)]
    pub(crate) fn on_alloc_then(&self, size_bytes: usize, block: NonNull<u8>) -> NonNull<u8> {
        let Some(index) = shard_slot::owned_index() else {
            return self.on_alloc_unowned_then(size_bytes, block);
        };
        debug_assert!(index < OWNED_SHARDS);
        // SAFETY: an owned slot index is below `OWNED_SHARDS` (`Slot::claim`).
        let shard = unsafe { self.shards.get_unchecked(index) };
        if owned_alloc(shard, size_bytes) {
            return self.on_alloc_cold_then(shard, block);
        }
        block
    }

    #[cold]
    #[inline(never)]
    fn on_alloc_unowned_then(&self, size_bytes: usize, block: NonNull<u8>) -> NonNull<u8> {
        self.on_alloc(size_bytes);
        block
    }

    #[cold]
    #[inline(never)]
    fn on_alloc_cold_then(&self, shard: &Shard, block: NonNull<u8>) -> NonNull<u8> {
        self.on_alloc_cold(shard);
        block
    }

    /// `on_free`, then `true` (see `on_alloc_then`).
    #[inline(always)]
    pub(crate) fn on_free_then_true(&self, size_bytes: usize) -> bool {
        let Some(index) = shard_slot::owned_index() else {
            return self.on_free_unowned_then_true(size_bytes);
        };
        // SAFETY: as in `on_alloc_then`.
        let shard = unsafe { self.shards.get_unchecked(index) };
        add(&shard.free_count, 1, true);
        let unpublished = add_signed(&shard.used_unpublished_bytes, -(size_bytes as i64), true);
        if unpublished <= -PEAK_PUBLISH_THRESHOLD_BYTES {
            return self.publish_then_true(shard);
        }
        true
    }

    #[cold]
    #[inline(never)]
    fn on_free_unowned_then_true(&self, size_bytes: usize) -> bool {
        self.on_free(size_bytes);
        true
    }

    #[cold]
    #[inline(never)]
    fn publish_then_true(&self, shard: &Shard) -> bool {
        self.publish(shard, true);
        true
    }

    /// The owner's cold path of `on_alloc`: publish at the threshold, else raise the peak
    /// to the estimate; then recompute the trigger.
    #[cold]
    #[inline(never)]
    fn on_alloc_cold(&self, shard: &Shard) {
        let unpublished = shard.used_unpublished_bytes.load(Relaxed);
        if unpublished >= PEAK_PUBLISH_THRESHOLD_BYTES {
            self.publish(shard, true);
            return;
        }
        self.note_used_estimate(unpublished);
        self.reset_trigger(shard);
    }

    /// An owned shard's `alloc_trigger` from the figures now (by its owner).
    fn reset_trigger(&self, shard: &Shard) {
        let trigger = self
            .peak_headroom_bytes()
            .min(PEAK_PUBLISH_THRESHOLD_BYTES - 1);
        shard.alloc_trigger.store(trigger, Relaxed);
    }

    /// A free of a block of `size_bytes` (usable) by a concurrent pool.
    #[inline]
    pub fn on_free(&self, size_bytes: usize) {
        let (shard, owned) = self.shard();
        add(&shard.free_count, 1, owned);
        let unpublished = add_signed(&shard.used_unpublished_bytes, -(size_bytes as i64), owned);
        if unpublished <= -PEAK_PUBLISH_THRESHOLD_BYTES {
            self.publish(shard, owned);
        }
    }

    /// Move `shard`'s unpublished used bytes to the published figure (keeping their sum,
    /// the true used bytes, unchanged) and raise the peak to the result.
    #[cold]
    fn publish(&self, shard: &Shard, owned: bool) {
        let moved = if owned {
            let moved = shard.used_unpublished_bytes.load(Relaxed);
            shard.used_unpublished_bytes.store(0, Relaxed);
            moved
        } else {
            shard.used_unpublished_bytes.swap(0, Relaxed)
        };
        let published = self.used.used_published_bytes.fetch_add(moved, Relaxed) + moved;
        if published > 0 {
            self.used
                .peak_used_bytes
                .fetch_max(published as u64, Relaxed);
        }
        if owned {
            self.reset_trigger(shard);
        }
    }

    /// `on_alloc` for a caller that serialises every writer of these counters (a pool
    /// updating them only while holding its lock): plain loads and stores instead of
    /// read-modify-writes, which are most of the cost of a pool's fast path; every figure
    /// exact. Readers (`snapshot`) may run concurrently. Not to be mixed with `on_alloc` /
    /// `on_free` on the same counters.
    #[inline]
    pub fn on_alloc_serialized(&self, size_bytes: usize) {
        let size = size_bytes as u64;
        add(&self.total_allocated_bytes, size, true);
        add(&self.allocation_count, 1, true);
        let used = &self.used.used_published_bytes;
        let now = used.load(Relaxed) + size as i64;
        used.store(now, Relaxed);
        if now as u64 > self.used.peak_used_bytes.load(Relaxed) {
            self.used.peak_used_bytes.store(now as u64, Relaxed);
        }
    }

    /// `on_free` for a caller that serialises every writer (see `on_alloc_serialized`).
    #[inline]
    pub fn on_free_serialized(&self, size_bytes: usize) {
        self.free_count
            .store(self.free_count.load(Relaxed) + 1, Relaxed);
        let used = &self.used.used_published_bytes;
        used.store((used.load(Relaxed) - size_bytes as i64).max(0), Relaxed);
    }

    #[inline]
    pub fn on_failure(&self) {
        self.failure_count.fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn on_large_object(&self) {
        self.large_object_count.fetch_add(1, Relaxed);
    }

    /// A chunk of `bytes` was taken from the upstream.
    pub fn on_reserve(&self, bytes: usize) {
        self.chunk_count.fetch_add(1, Relaxed);
        let now = self.reserved_bytes.fetch_add(bytes as u64, Relaxed) + bytes as u64;
        self.peak_reserved_bytes.fetch_max(now, Relaxed);
    }

    /// A chunk of `bytes` went back to the upstream.
    pub fn on_release(&self, bytes: usize) {
        self.reserved_bytes.fetch_sub(bytes as u64, Relaxed);
    }

    /// Add a thread cache's batched counts (see `thread_cache`): read-modify-writes on the
    /// global counters, then the peak raised to the new published used bytes. The caller
    /// zeroes its own counts in the same step, so their sum with the cache's unpublished
    /// figures is unchanged.
    pub(crate) fn publish_batch(&self, batch: &CountBatch) {
        self.allocation_count
            .fetch_add(batch.allocation_count, Relaxed);
        self.free_count.fetch_add(batch.free_count, Relaxed);
        self.total_allocated_bytes
            .fetch_add(batch.total_allocated_bytes, Relaxed);
        let moved = batch.used_bytes;
        let published = self.used.used_published_bytes.fetch_add(moved, Relaxed) + moved;
        if published > 0 {
            self.used
                .peak_used_bytes
                .fetch_max(published as u64, Relaxed);
        }
    }

    /// Raise the peak to `published + unpublished_bytes` (a thread's own unpublished used
    /// bytes): the peak contract of `on_alloc`, for callers that batch their counts.
    #[inline]
    pub(crate) fn note_used_estimate(&self, unpublished_bytes: i64) {
        let estimate = self.used.used_published_bytes.load(Relaxed) + unpublished_bytes;
        if estimate > 0 && estimate as u64 > self.used.peak_used_bytes.load(Relaxed) {
            self.note_peak(estimate as u64);
        }
    }

    /// How far the published used bytes are below the peak: a thread whose unpublished
    /// used bytes stay at or below this cannot make a new peak by its own estimate.
    pub(crate) fn peak_headroom_bytes(&self) -> i64 {
        let peak = i64::try_from(self.used.peak_used_bytes.load(Relaxed)).unwrap_or(i64::MAX);
        peak.saturating_sub(self.used.used_published_bytes.load(Relaxed))
    }

    #[cold]
    fn note_peak(&self, estimate: u64) {
        self.used.peak_used_bytes.fetch_max(estimate, Relaxed);
    }

    /// Every block was released at once by `reset()`. Exact when no `on_alloc` / `on_free`
    /// runs meanwhile (the pool's reset holds its lock or `&mut`). Writes no shard (they
    /// have one writer each): the published figure is set to minus their sum instead.
    pub fn on_reset(&self) {
        let (allocations, frees) = self.counts();
        self.free_count
            .fetch_add(allocations.saturating_sub(frees), Relaxed);
        self.used
            .used_published_bytes
            .store(-self.unpublished_bytes(), Relaxed);
    }

    /// Sum of every shard's `used_unpublished_bytes`.
    fn unpublished_bytes(&self) -> i64 {
        self.shards
            .iter()
            .map(|s| s.used_unpublished_bytes.load(Relaxed))
            .sum()
    }

    /// `(allocation_count, free_count)` over the global counters and every shard.
    fn counts(&self) -> (u64, u64) {
        self.shards.iter().fold(
            (
                self.allocation_count.load(Relaxed),
                self.free_count.load(Relaxed),
            ),
            |(a, f), s| {
                (
                    a + s.allocation_count.load(Relaxed),
                    f + s.free_count.load(Relaxed),
                )
            },
        )
    }

    /// The figures now: global counters plus shard sums, the used bytes being the
    /// published figure plus every shard's unpublished bytes. Exact when no operation runs
    /// meanwhile, approximate otherwise; reads only.
    pub fn snapshot(&self) -> MemoryStats {
        self.snapshot_with(&CountBatch::default(), 0)
    }

    /// `snapshot()` with counts not yet published (thread caches' batches) added, and the
    /// bytes of free blocks held in thread caches.
    pub(crate) fn snapshot_with(&self, pending: &CountBatch, cached_bytes: u64) -> MemoryStats {
        let total_allocated_bytes = self
            .shards
            .iter()
            .fold(self.total_allocated_bytes.load(Relaxed), |sum, s| {
                sum + s.total_allocated_bytes.load(Relaxed)
            });
        let total_allocated_bytes = total_allocated_bytes + pending.total_allocated_bytes;
        let (allocation_count, free_count) = self.counts();
        let (allocation_count, free_count) = (
            allocation_count + pending.allocation_count,
            free_count + pending.free_count,
        );
        let used = self.used.used_published_bytes.load(Relaxed)
            + self.unpublished_bytes()
            + pending.used_bytes;
        let current_used_bytes = used.max(0) as u64;
        MemoryStats {
            total_allocated_bytes,
            current_used_bytes,
            peak_used_bytes: self
                .used
                .peak_used_bytes
                .load(Relaxed)
                .max(current_used_bytes),
            reserved_bytes: self.reserved_bytes.load(Relaxed),
            peak_reserved_bytes: self.peak_reserved_bytes.load(Relaxed),
            allocation_count,
            free_count,
            failure_count: self.failure_count.load(Relaxed),
            large_object_count: self.large_object_count.load(Relaxed),
            chunk_count: self.chunk_count.load(Relaxed),
            thread_cached_bytes: cached_bytes,
        }
    }
}

/// Counts made outside `StatsCounters` and added to it in one step (a thread cache's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CountBatch {
    pub allocation_count: u64,
    pub free_count: u64,
    pub total_allocated_bytes: u64,
    /// Allocated minus freed usable bytes.
    pub used_bytes: i64,
}

impl CountBatch {
    pub fn add(&mut self, other: &CountBatch) {
        self.allocation_count += other.allocation_count;
        self.free_count += other.free_count;
        self.total_allocated_bytes += other.total_allocated_bytes;
        self.used_bytes += other.used_bytes;
    }
}

/// `counter += v`, returning the new value: a plain load and store when this thread is the
/// counter's only writer (`owned`), a read-modify-write otherwise.
#[inline(always)]
fn add(counter: &AtomicU64, v: u64, owned: bool) -> u64 {
    if owned {
        let now = counter.load(Relaxed).wrapping_add(v);
        counter.store(now, Relaxed);
        now
    } else {
        counter.fetch_add(v, Relaxed).wrapping_add(v)
    }
}

/// An allocation counted by the owner of `shard`: plain loads and stores and one compare.
/// Whether the cold part (`StatsCounters::on_alloc_cold`) must follow.
#[inline(always)]
fn owned_alloc(shard: &Shard, size_bytes: usize) -> bool {
    add(&shard.allocation_count, 1, true);
    add(&shard.total_allocated_bytes, size_bytes as u64, true);
    let unpublished = add_signed(&shard.used_unpublished_bytes, size_bytes as i64, true);
    unpublished > shard.alloc_trigger.load(Relaxed)
}

/// `add` for the signed used-bytes delta.
#[inline(always)]
fn add_signed(counter: &AtomicI64, v: i64, owned: bool) -> i64 {
    if owned {
        let now = counter.load(Relaxed) + v;
        counter.store(now, Relaxed);
        now
    } else {
        counter.fetch_add(v, Relaxed) + v
    }
}

/// Which shard a thread counts in: the lowest slot no live thread holds, claimed on the
/// thread's first update and given back when it exits, so up to `OWNED_SHARDS` live threads
/// each have a shard to themselves and update it with plain stores (criterion and the
/// replay engine start and stop threads all the time; round-robin would soon pair two live
/// threads on one shard). Other threads share `SHARED_SHARD` with read-modify-writes.
mod shard_slot {
    use super::{OWNED_SHARDS, SHARED_SHARD};
    use std::cell::Cell;
    use std::sync::atomic::{
        AtomicU32,
        Ordering::{Acquire, Relaxed, Release},
    };

    const _: () = assert!(OWNED_SHARDS == 32);

    /// Bit `i` set iff a live thread holds slot `i`. Release on giving a slot back and
    /// Acquire on claiming it: the next holder sees the last one's plain stores to the
    /// shard and continues from them.
    static CLAIMED: AtomicU32 = AtomicU32::new(0);

    /// Invariant: `owned` iff this thread set bit `index` of `CLAIMED` and has not
    /// cleared it; the thread then is the only writer of shard `index` of every
    /// `StatsCounters`.
    struct Slot {
        index: usize,
        owned: bool,
    }

    impl Slot {
        fn claim() -> Slot {
            let mut taken = CLAIMED.load(Relaxed);
            while taken != u32::MAX {
                let index = (!taken).trailing_zeros();
                match CLAIMED.compare_exchange_weak(taken, taken | 1 << index, Acquire, Relaxed) {
                    Ok(_) => {
                        return Slot {
                            index: index as usize,
                            owned: true,
                        }
                    }
                    Err(now) => taken = now,
                }
            }
            Slot {
                index: SHARED_SHARD,
                owned: false,
            }
        }
    }

    impl Drop for Slot {
        fn drop(&mut self) {
            OWNED_INDEX.with(|c| c.set(0));
            if self.owned {
                CLAIMED.fetch_and(!(1 << self.index), Release);
            }
        }
    }

    thread_local! {
        static SLOT: Slot = Slot::claim();
        /// The owned slot's index plus one, or 0 (not claimed yet, not owned, or given
        /// back): a `const` thread-local with no destructor is one `%fs`-relative load,
        /// where `SLOT` (lazy, with a destructor) checks its state first. `Slot::drop`
        /// clears it before giving the slot back.
        static OWNED_INDEX: Cell<usize> = const { Cell::new(0) };
    }

    /// This thread's shard index and whether the thread owns it; the shared shard while
    /// the thread-local is being torn down.
    #[inline(always)]
    pub(super) fn current() -> (usize, bool) {
        match owned_index() {
            Some(index) => (index, true),
            None => current_slow(),
        }
    }

    /// This thread's slot when it owns one and has used it before (else `None`: call
    /// `current`).
    #[inline(always)]
    pub(super) fn owned_index() -> Option<usize> {
        OWNED_INDEX.with(Cell::get).checked_sub(1)
    }

    #[cold]
    #[inline(never)]
    fn current_slow() -> (usize, bool) {
        SLOT.try_with(|slot| {
            if slot.owned {
                OWNED_INDEX.with(|c| c.set(slot.index + 1));
            }
            (slot.index, slot.owned)
        })
        .unwrap_or((SHARED_SHARD, false))
    }
}
