//! The per-thread cache layer of `CpuPool` in front of a locked strategy: tcmalloc-style
//! thread caches, with the locked strategy itself as the central layer. The design and
//! its invariants are in `docs/thread-cache.md`.
//!
//! ```text
//!  thread A                 thread B                      shared (CacheShared)
//!  ┌───────────────────┐    ┌───────────────────┐         ┌──────────────────────────┐
//!  │ class 0: [b b b ] │    │ class 0: [b     ] │ refill  │ Mutex<Box<dyn Strategy>> │
//!  │ class 1: [b     ] │◄──►│ class 1: [b b b ] │◄───────►│ (half a magazine a time) │
//!  │ ...   counters    │    │ ...   counters    │ flush   │ registry of caches       │
//!  └───────────────────┘    └───────────────────┘         └──────────────────────────┘
//!  allocate: class = table[(size + 15) / 16]; pop            (no lock, no atomic RMW)
//!  free:     class of the block's usable size; push          (no lock, no atomic RMW)
//! ```
//!
//! - A block freed by any thread goes to the freeing thread's cache (blocks belong to the
//!   pool, not to a thread), so cross-thread frees need nothing special; a producer
//!   thread refills from the strategy and a consumer thread flushes into it, half a
//!   magazine per lock.
//! - Each magazine holds at most `capacity[class]` blocks and each thread at most
//!   `thread_cache.max_thread_bytes`; beyond either, half is given back under the lock.
//! - Thread exit gives every cached block back (`tls`), `reset` forgets them with the
//!   strategy's memory, dropping the pool drops them with it.
//! - Counts are batched per thread (single-writer atomics, plain loads and stores) and
//!   published into `StatsCounters` every 64 KiB of used-byte change and when the thread
//!   retires or the pool resets; `stats()` adds the unpublished batches, so a snapshot
//!   taken while no operation runs is exact.

mod central;
mod classes;
mod rack;
mod tls;

pub(crate) use self::central::{Central, CentralGuard, LockFreeCentral};
pub(crate) use self::classes::{CacheClasses, RequestSlots};
pub(crate) use self::rack::{slot_of_class, Rack, RackHead};
pub(crate) use self::tls::{last_used_entry, last_used_rack};

use self::rack::{bump, RackBox};

use crate::alloc::lockfree::MAX_SLAB_ALIGN_BYTES;
use crate::alloc::segment::{SegmentGeometry, CLASS_SLOT_BYTES, MAX_IN_SEGMENT_ALIGN};
use crate::alloc::Strategy;
use crate::error::PoolError;
use crate::stats::{CountBatch, StatsCounters, PEAK_PUBLISH_THRESHOLD_BYTES};
use std::mem::size_of;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

/// Largest alignment a class's blocks have by their layout alone (`natural_alignment`):
/// the segment heap's spans and the lock-free allocator's slabs both stop at 4 KiB.
const MAX_NATURAL_ALIGN: usize = MAX_IN_SEGMENT_ALIGN;
const _: () = assert!(MAX_SLAB_ALIGN_BYTES == MAX_NATURAL_ALIGN);

/// How the layer learns a live block's usable size without the strategy's lock.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BlockSizer {
    /// Every block has this many usable bytes (fixed-size strategy). Its one class owns
    /// every span of its segment heap (owner 0, cache class 0), so the free fast path
    /// reads the class from the heap's page-class map with this geometry, as for
    /// `SegmentClass` (`CacheShared::segment_class`).
    Uniform(usize, SegmentGeometry),
    /// Segment-heap blocks (size-classed strategy) whose span's owner index is their
    /// cache class (`CacheClasses::matches_table`): a free reads the owner and nothing
    /// else. The first variant: the free fast path tests for it with one compare.
    SegmentClass(SegmentGeometry),
    /// Other segment-heap blocks: the span header's block size.
    Segment(SegmentGeometry),
    /// TLSF blocks: the boundary tag in front of the payload.
    Tlsf,
    /// The lock-free allocator's blocks: its region and large headers keep a page-class
    /// map at the segment heaps' offset, capped at the class count as theirs are
    /// (`LockFreeAllocator::set_class_cap`), so the free fast path reads it as for
    /// `SegmentClass`; the usable size comes from the slab's or large header.
    LockFree(SegmentGeometry),
}

impl BlockSizer {
    /// Usable bytes of a live block.
    ///
    /// # Safety
    /// `ptr` is a live block of the strategy this sizer was made for, and its allocation
    /// happens-before this call.
    #[inline(always)]
    pub(crate) unsafe fn usable_bytes(self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded contract.
        unsafe { self.classify(ptr).0 }
    }

    /// Whether a live block of `usable_bytes` is resized to `new_size` in place, when that
    /// follows from the size alone (`None`: ask the strategy, under the lock). The answers
    /// are the strategies' own `resize_in_place` rules: the fixed-size and size-classed
    /// strategies keep a block while it holds the new size and is less than twice it;
    /// TLSF also keeps such a block (without splitting its tail off) and needs its lists
    /// to grow or to shrink further.
    #[inline]
    pub(crate) fn resizes_in_place(self, usable_bytes: usize, new_size: usize) -> Option<bool> {
        let keeps = new_size <= usable_bytes && new_size.saturating_mul(2) > usable_bytes;
        match self {
            BlockSizer::Uniform(bytes, _) => Some(new_size <= bytes),
            BlockSizer::SegmentClass(_) | BlockSizer::Segment(_) | BlockSizer::LockFree(_) => {
                Some(keeps)
            }
            BlockSizer::Tlsf => keeps.then_some(true),
        }
    }

    /// Usable bytes of a live block, and whether it may be cached at all (large objects
    /// of the size-classed strategy may not: they go back to the OS when freed).
    ///
    /// # Safety
    /// As for `usable_bytes`.
    #[inline(always)]
    unsafe fn classify(self, ptr: NonNull<u8>) -> (usize, bool) {
        match self {
            BlockSizer::Uniform(bytes, _) => (bytes, true),
            // SAFETY: forwarded contract.
            BlockSizer::SegmentClass(geometry) | BlockSizer::Segment(geometry) => unsafe {
                geometry.usable_bytes(ptr)
            },
            BlockSizer::Tlsf => {
                // SAFETY: forwarded contract.
                let usable = unsafe { crate::alloc::variable::usable_bytes_unlocked(ptr) };
                (usable, true)
            }
            // SAFETY: forwarded contract: a live block of the lock-free allocator this
            // geometry is of.
            BlockSizer::LockFree(geometry) => unsafe {
                crate::alloc::lockfree::usable_bytes_unlocked(ptr, geometry.segment_mask())
            },
        }
    }

    /// The cache class of a live block, if it may be cached, and its usable bytes.
    ///
    /// # Safety
    /// As for `usable_bytes`.
    #[inline(always)]
    unsafe fn class_of(self, ptr: NonNull<u8>, classes: &CacheClasses) -> (Option<usize>, usize) {
        if let BlockSizer::SegmentClass(geometry) = self {
            // SAFETY: forwarded contract.
            let (usable, owner) = unsafe { geometry.usable_bytes_and_owner(ptr) };
            let class = owner as usize;
            // A large object's owner (`OWNER_LARGE`) is beyond every class.
            return ((class < classes.class_count()).then_some(class), usable);
        }
        // SAFETY: forwarded contract.
        let (usable, cacheable) = unsafe { self.classify(ptr) };
        let class = if cacheable {
            classes.class_of_usable(usable)
        } else {
            None
        };
        (class, usable)
    }
}

/// One size class of one thread's cache: a stack of free blocks in the slots
/// `bottom..limit` of the cache's storage, kept as three pointers so that a pop compares
/// `top` with `bottom` and a push compares it with `limit`, with no index arithmetic.
/// One cache line: a class's magazine is found with one shift.
///
/// Invariant: `bottom <= top <= limit`, all within the storage (the slots
/// `bottom..limit` are this magazine's alone); the slots `bottom..top` hold distinct free
/// blocks of the pool's strategy (live to the strategy) of exactly `block_bytes` usable
/// bytes (`class_bytes[class]`).
///
/// The fast paths' own counts live here, and a fast allocation keeps none: the blocks
/// popped by `Rack::try_pop` and `Rack::pop_counted` since the last `publish_all` are
/// `pushes + base - len`. `pushes` counts `Rack::push_counted`'s frees; every other change of `len` (a slow path's push or
/// pop, which counts itself in the thread's counters; a refill; a flush) moves `base`
/// with it; `publish_all` (thread exit, reset) takes both and sets `pushes = 0, base =
/// len`. Until then they count in `stats()` through `ThreadCache::pending`.
///
/// `top`, `pushes`, `base` and `refill_batch` have one writer (the owner, or a thread
/// holding the strategy lock while the owner is in no pool call: see `ThreadCache`);
/// `stats()` may read them from any thread, so they are atomics, used with plain loads
/// and stores.
#[repr(C, align(64))]
struct Magazine {
    top: AtomicPtr<*mut u8>,
    bottom: *mut *mut u8,
    limit: *mut *mut u8,
    block_bytes: usize,
    pushes: AtomicU64,
    base: AtomicI64,
    /// Blocks the next refill takes: 1 at first, doubled by each refill up to half the
    /// capacity (tcmalloc's slow start): a class used once costs one block, not half a
    /// magazine carved and left cached.
    refill_batch: AtomicUsize,
}

impl Magazine {
    /// Blocks held.
    fn len(&self) -> usize {
        (self.top.load(Relaxed) as usize - self.bottom as usize) / size_of::<*mut u8>()
    }

    /// Blocks it may hold.
    fn capacity(&self) -> usize {
        (self.limit as usize - self.bottom as usize) / size_of::<*mut u8>()
    }

    /// `base += delta` (by the writer).
    fn add_base(&self, delta: i64) {
        self.base.store(self.base.load(Relaxed) + delta, Relaxed);
    }

    /// Blocks handed out by `try_pop` / `pop_counted` since the last `publish_all` (0 if a
    /// reader in another thread sees the fields from different moments and they do not
    /// add up).
    fn fast_pops(&self) -> u64 {
        let pops = self.pushes.load(Relaxed) as i64 + self.base.load(Relaxed) - self.len() as i64;
        u64::try_from(pops).unwrap_or(0)
    }
}

/// One thread's cache for one pool. Shared (`Arc`) by the thread's TLS map and the pool's
/// registry.
///
/// Invariant (who changes the magazines and their slots): the owning thread inside a pool
/// call, or a thread holding the pool's strategy lock while the owner is in no pool call:
/// the owner itself on thread exit (`retire`), or `reset`, whose contract excludes
/// concurrent calls. The counters have one writer under the same rule; anyone may read
/// them.
///
/// What every operation writes is in the rack, whose allocation is aligned and padded to
/// 128 bytes (two lines: adjacent-line prefetch), so that the racks of two threads never
/// share a line; the rest is aligned the same way.
#[repr(align(128))]
pub(crate) struct ThreadCache {
    /// The counters both fast paths touch and the magazines, in one allocation
    /// (`rack.rs`): `room`, `room_limit` and the slow paths' counts are in its head.
    ///
    /// The used bytes (allocated minus freed usable bytes) not yet published, `used`, are
    /// kept as `trigger - room`, so that an allocation's count is one subtraction and one
    /// sign test. Invariant: `used` within `(-PEAK_PUBLISH_THRESHOLD_BYTES,
    /// PEAK_PUBLISH_THRESHOLD_BYTES)` after each operation.
    ///
    /// A free's fast path declines when its `room` would exceed `room_limit`: the lower
    /// of the budget's bound (`max_thread_bytes - gap`: `cached` at most
    /// `max_thread_bytes`) and the publish bound (`trigger + PEAK_PUBLISH_THRESHOLD_BYTES
    /// - 1`: `used` above `-PEAK_PUBLISH_THRESHOLD_BYTES`). One compare for both.
    rack: RackBox,
    /// Backing store of every magazine's slots (written only through the magazines'
    /// pointers).
    _storage: Box<[*mut u8]>,
    /// An allocation that takes `used` above this (`room` below 0) takes the cold path of
    /// the counts (`counts_cold`, from the slow path or `CacheShared::counts_cold_here`):
    /// a publish, or a new pool-wide peak. Invariant: at most
    /// `PEAK_PUBLISH_THRESHOLD_BYTES - 1`, and at most `peak - published` as this thread
    /// last read them (so below it, `published + used` cannot be a new peak unless another
    /// thread published since: the error the peak's documented bound allows).
    trigger: AtomicI64,
    /// The bytes in all magazines (`cached`) minus `room`. The fast paths move both by
    /// the block's bytes (a pop uses a cached block, a push caches a freed one), so they
    /// leave `gap` alone and keep no cached-bytes counter of their own: `cached` is
    /// `room + gap`. Every other change of either (refills, flushes, direct allocations
    /// and frees, a new trigger) updates `gap`, and `room_limit` with it.
    gap: AtomicI64,
    /// `thread_cache.max_thread_bytes`.
    max_thread_bytes: i64,
}

// SAFETY: `_storage`'s raw pointers are addresses of pool blocks, written only through the
// magazines (whose access follows the type's invariant: one user at a time).
unsafe impl Send for ThreadCache {}
// SAFETY: as above; the counters are atomics.
unsafe impl Sync for ThreadCache {}

impl ThreadCache {
    fn new(classes: &CacheClasses, max_thread_bytes: usize) -> Self {
        let max_thread_bytes = i64::try_from(max_thread_bytes).unwrap_or(i64::MAX);
        let total: usize = classes.capacity.iter().sum();
        let mut storage: Box<[*mut u8]> = vec![ptr::null_mut(); total].into_boxed_slice();
        let mut offset = 0;
        let base = storage.as_mut_ptr();
        // One magazine per class, and one more, of no capacity: a free whose block is of no
        // cached class (`SegmentGeometry::slot_of` and `RequestSlots::exact_slot_of_usable`
        // answer the class count's slot) finds it full, with no bounds check on the way.
        let none = Magazine {
            top: AtomicPtr::new(ptr::null_mut()),
            bottom: ptr::null_mut(),
            limit: ptr::null_mut(),
            block_bytes: 0,
            pushes: AtomicU64::new(0),
            base: AtomicI64::new(0),
            refill_batch: AtomicUsize::new(0),
        };
        let magazines = (0..classes.class_count())
            .map(|c| {
                let capacity = classes.capacity[c];
                // SAFETY: offsets stay within `storage` (the capacities sum to its length;
                // `limit` may be one past its end).
                let (bottom, limit) = unsafe { (base.add(offset), base.add(offset + capacity)) };
                offset += capacity;
                Magazine {
                    top: AtomicPtr::new(bottom),
                    bottom,
                    limit,
                    block_bytes: classes.class_bytes[c],
                    pushes: AtomicU64::new(0),
                    base: AtomicI64::new(0),
                    refill_batch: AtomicUsize::new(1),
                }
            })
            .chain(std::iter::once(none))
            .collect();
        // `used` 0, and the first allocation computes the real trigger.
        let head = RackHead::new(max_thread_bytes.min(PEAK_PUBLISH_THRESHOLD_BYTES - 1));
        ThreadCache {
            rack: RackBox::new(head, magazines),
            _storage: storage,
            trigger: AtomicI64::new(0),
            gap: AtomicI64::new(0),
            max_thread_bytes,
        }
    }

    /// The rack, for the fast paths.
    #[inline(always)]
    pub(crate) fn rack(&self) -> Rack<'_> {
        self.rack.rack()
    }

    /// The rack's head: the counters.
    fn head(&self) -> &RackHead {
        self.rack.head()
    }

    /// The rack's address, for the thread's last-used entry.
    pub(super) fn rack_raw(&self) -> *const RackHead {
        self.rack.as_raw()
    }

    /// The magazine of `class`.
    ///
    /// # Safety
    /// `class` is a class of the pool, or the class count (the magazine of no capacity
    /// past the classes).
    #[inline(always)]
    unsafe fn magazine(&self, class: usize) -> &Magazine {
        // SAFETY: the caller's contract.
        unsafe { self.rack().magazine(class) }
    }

    /// Pop a block of `class`: the block and its usable bytes. The allocation is not
    /// counted (`count_alloc`).
    ///
    /// # Safety
    /// As for `take_top`.
    unsafe fn pop(&self, class: usize) -> Option<(NonNull<u8>, usize)> {
        // SAFETY: forwarded contract.
        let (block, bytes) = unsafe { self.rack().take_top(slot_of_class(class))? };
        // SAFETY: as above.
        unsafe { self.magazine(class) }.add_base(-1);
        self.add_gap(-(bytes as i64));
        Some((block, bytes))
    }

    /// Bytes in all magazines (exact for the owner; a reader in another thread may see
    /// `room` and `gap` from different moments).
    fn cached_bytes(&self) -> usize {
        let cached = self.head().room.load(Relaxed) + self.gap.load(Relaxed);
        usize::try_from(cached).unwrap_or(0)
    }

    /// `gap += delta`, and the free fast path's limit from it (by the owner).
    fn add_gap(&self, delta: i64) {
        self.gap.store(self.gap.load(Relaxed) + delta, Relaxed);
        self.update_room_limit();
    }

    /// `room_limit` from `gap` and `trigger` (by the owner, with `room` and `gap` up to
    /// date: debug builds check `cached` against the magazines here).
    fn update_room_limit(&self) {
        #[cfg(debug_assertions)]
        {
            let held: usize = self
                .rack
                .magazines()
                .iter()
                .map(|m| m.len() * m.block_bytes)
                .sum();
            debug_assert_eq!(
                self.cached_bytes(),
                held,
                "cached bytes drifted from the magazines"
            );
        }
        let budget = self.max_thread_bytes - self.gap.load(Relaxed);
        let publish = self.trigger.load(Relaxed) + PEAK_PUBLISH_THRESHOLD_BYTES - 1;
        // SAFETY: this runs for the counters' writer (every caller is a slow path of the
        // owner, or a thread holding the lock while the owner is in no call).
        unsafe { self.head().set_room_limit(budget.min(publish)) };
    }

    /// Push a free block of `class` unless the magazine or the thread's budget is full:
    /// the block's usable bytes (its class's), or `None`. The free is not counted
    /// (`count_free`).
    ///
    /// # Safety
    /// As for `take_top`; `block` is a block of the strategy of exactly
    /// `class_bytes[class]` usable bytes that nobody uses any more.
    unsafe fn push(&self, class: usize, block: NonNull<u8>) -> Option<usize> {
        // SAFETY: forwarded contract.
        let magazine = unsafe { self.magazine(class) };
        let bytes = magazine.block_bytes;
        let cached = self.cached_bytes() + bytes;
        let top = magazine.top.load(Relaxed);
        if top == magazine.limit || cached as i64 > self.max_thread_bytes {
            return None;
        }
        // SAFETY: `top < limit`: the slot at `top` is the magazine's, and free.
        unsafe {
            *top = block.as_ptr();
            magazine.top.store(top.add(1), Relaxed);
        }
        magazine.add_base(1);
        self.add_gap(bytes as i64);
        Some(bytes)
    }

    /// How many blocks the next refill of `class` takes (and doubles it for the one
    /// after, up to half the capacity).
    ///
    /// # Safety
    /// As for `take_top`.
    unsafe fn next_refill_batch(&self, class: usize) -> usize {
        // SAFETY: forwarded contract.
        let magazine = unsafe { self.magazine(class) };
        let half = magazine.capacity() / 2;
        let batch = magazine.refill_batch.load(Relaxed).min(half);
        magazine
            .refill_batch
            .store((batch * 2).clamp(1, half.max(1)), Relaxed);
        batch
    }

    /// Add up to `want` blocks to `class`'s magazine (as many as its capacity and the
    /// thread's budget allow): `take` writes blocks into the free slots it is given and
    /// says how many it wrote.
    ///
    /// # Safety
    /// As for `push`, for every block `take` writes.
    unsafe fn fill(&self, class: usize, want: usize, take: impl FnOnce(&mut [*mut u8]) -> usize) {
        let cached = self.cached_bytes();
        // SAFETY: forwarded contract.
        let magazine = unsafe { self.magazine(class) };
        let budget =
            (self.max_thread_bytes as usize).saturating_sub(cached) / magazine.block_bytes.max(1);
        let room = want.min(magazine.capacity() - magazine.len()).min(budget);
        let top = magazine.top.load(Relaxed);
        // SAFETY: the `room` slots from `top` are below `limit`: the magazine's, and free.
        let slots = unsafe { std::slice::from_raw_parts_mut(top, room) };
        let taken = take(slots).min(room);
        // SAFETY: `taken <= room`: still within the magazine.
        magazine.top.store(unsafe { top.add(taken) }, Relaxed);
        magazine.add_base(taken as i64);
        let bytes = taken * magazine.block_bytes;
        self.add_gap(bytes as i64);
    }

    /// Count an allocation of `usable_bytes` (by the writer of the counters), with the
    /// cached bytes unchanged (after a `pop`, which counted their fall).
    fn count_alloc(&self, usable_bytes: usize, stats: &StatsCounters) {
        bump(&self.head().allocation_count, 1);
        bump(&self.head().total_allocated_bytes, usable_bytes as u64);
        let room = self.head().room.load(Relaxed) - usable_bytes as i64;
        self.head().room.store(room, Relaxed);
        self.add_gap(usable_bytes as i64);
        if room < 0 {
            self.counts_cold(stats);
        }
    }

    /// Count a free of `usable_bytes` (by the writer of the counters), with the cached
    /// bytes unchanged (after a `push`, which counted their rise).
    fn count_free(&self, usable_bytes: usize, stats: &StatsCounters) {
        bump(&self.head().free_count, 1);
        let room = self.head().room.load(Relaxed) + usable_bytes as i64;
        self.head().room.store(room, Relaxed);
        self.add_gap(-(usable_bytes as i64));
        if room >= self.trigger.load(Relaxed) + PEAK_PUBLISH_THRESHOLD_BYTES {
            self.counts_cold(stats);
        }
    }

    /// The cold part of the counts: publish the batch when the unpublished used bytes
    /// reached the threshold either way, else raise the pool's peak to this thread's
    /// estimate; then recompute the trigger.
    #[cold]
    #[inline(never)]
    fn counts_cold(&self, stats: &StatsCounters) {
        let used = self.used();
        if used.abs() >= PEAK_PUBLISH_THRESHOLD_BYTES {
            self.publish(stats);
        } else {
            stats.note_used_estimate(used);
            self.reset_trigger(stats, used);
        }
    }

    /// The used bytes not yet published.
    fn used(&self) -> i64 {
        self.trigger.load(Relaxed) - self.head().room.load(Relaxed)
    }

    /// The trigger from the pool's figures now, keeping `used` and the cached bytes (by
    /// the writer of the counters).
    fn reset_trigger(&self, stats: &StatsCounters, used: i64) {
        let cached = self.head().room.load(Relaxed) + self.gap.load(Relaxed);
        let trigger = stats
            .peak_headroom_bytes()
            .min(PEAK_PUBLISH_THRESHOLD_BYTES - 1);
        let room = trigger - used;
        self.trigger.store(trigger, Relaxed);
        self.head().room.store(room, Relaxed);
        self.gap.store(cached - room, Relaxed);
        self.update_room_limit();
    }

    /// The counts not yet published (for readers): the thread's counters and its
    /// magazines' fast-path counts.
    fn pending(&self) -> CountBatch {
        let mut batch = self.pending_counters();
        for magazine in self.rack.magazines().iter() {
            let pops = magazine.fast_pops();
            batch.allocation_count += pops;
            batch.total_allocated_bytes += pops * magazine.block_bytes as u64;
            batch.free_count += magazine.pushes.load(Relaxed);
        }
        batch
    }

    /// The thread's own counters not yet published, without the magazines' counts.
    fn pending_counters(&self) -> CountBatch {
        CountBatch {
            allocation_count: self.head().allocation_count.load(Relaxed),
            free_count: self.head().free_count.load(Relaxed),
            total_allocated_bytes: self.head().total_allocated_bytes.load(Relaxed),
            used_bytes: self.used(),
        }
    }

    /// Move the thread's counters and used bytes into `stats` (by the writer of the
    /// counters): the used bytes' threshold publish. The magazines' counts stay where
    /// they are (readers add them, `pending`), so this costs the same whatever the number
    /// of classes; `publish_all` moves them too.
    #[cold]
    fn publish(&self, stats: &StatsCounters) {
        stats.publish_batch(&self.pending_counters());
        self.head().allocation_count.store(0, Relaxed);
        self.head().free_count.store(0, Relaxed);
        self.head().total_allocated_bytes.store(0, Relaxed);
        self.reset_trigger(stats, 0);
    }

    /// `publish`, with the magazines' counts: for a cache that is going away or being
    /// emptied (thread exit, reset).
    #[cold]
    fn publish_all(&self, stats: &StatsCounters) {
        stats.publish_batch(&self.pending());
        self.head().allocation_count.store(0, Relaxed);
        self.head().free_count.store(0, Relaxed);
        self.head().total_allocated_bytes.store(0, Relaxed);
        for magazine in self.rack.magazines().iter() {
            magazine.pushes.store(0, Relaxed);
            magazine.base.store(magazine.len() as i64, Relaxed);
        }
        self.reset_trigger(stats, 0);
    }
}

/// The fast paths' operations on a thread cache's rack (the caller is the cache's owner,
/// inside a pool call: `ThreadCache`'s invariant).
impl<'a> Rack<'a> {
    /// Take the top block of the magazine at `slot`, with no count: the block and its
    /// usable bytes. The caller counts the cached bytes' change (`pop`, `pop_counted`).
    ///
    /// # Safety
    /// The caller may change the magazines (`ThreadCache`'s invariant); `slot` is the
    /// slot of a class of the pool (`slot_of_class`).
    #[inline(always)]
    unsafe fn take_top(self, slot: usize) -> Option<(NonNull<u8>, usize)> {
        // SAFETY: forwarded contract.
        let magazine = unsafe { self.magazine_at(slot) };
        let top = magazine.top.load(Relaxed);
        if top == magazine.bottom {
            return None;
        }
        // SAFETY: `bottom < top`: the slot below `top` is the magazine's and holds a block.
        let block = unsafe {
            let top = top.sub(1);
            magazine.top.store(top, Relaxed);
            *top
        };
        // SAFETY: magazine blocks are non-null (magazine invariant).
        Some((
            unsafe { NonNull::new_unchecked(block) },
            magazine.block_bytes,
        ))
    }

    /// Pop a block of the class at `slot` and count the allocation (the fast path): the
    /// block, and
    /// whether the counts' cold part (`counts_cold`) must follow. The cached bytes and
    /// `room` fall together: `gap` stays.
    ///
    /// # Safety
    /// As for `take_top`.
    #[inline(always)]
    pub(crate) unsafe fn pop_counted(self, slot: usize) -> Option<(NonNull<u8>, bool)> {
        // SAFETY: forwarded contract.
        let (block, bytes) = unsafe { self.take_top(slot)? };
        let head = self.head();
        let room = head.room.load(Relaxed) - bytes as i64;
        head.room.store(room, Relaxed);
        Some((block, room < 0))
    }

    /// Usable bytes of the blocks of the class at `slot` (0 for the magazine of no
    /// class).
    ///
    /// # Safety
    /// `slot` is a class's of the rack's cache, or the class count's.
    #[inline(always)]
    pub(crate) unsafe fn block_bytes_at(self, slot: usize) -> usize {
        // SAFETY: forwarded contract.
        unsafe { self.magazine_at(slot) }.block_bytes
    }

    /// Pop a block of the class at `slot` and count the allocation, for the allocation
    /// fast path: `None`, with nothing done, when the magazine is empty or the count needs
    /// its cold part (`room` would go below 0: a publish, or a new peak). The slow path
    /// does all of it then, so the fast path makes no call and returns the block in the
    /// register it loads it into. The cached bytes and `room` fall together: `gap` stays.
    ///
    /// # Safety
    /// As for `take_top`.
    #[inline(always)]
    pub(crate) unsafe fn try_pop(self, slot: usize) -> Option<NonNull<u8>> {
        // SAFETY: forwarded contract.
        let magazine = unsafe { self.magazine_at(slot) };
        let top = magazine.top.load(Relaxed);
        if top == magazine.bottom {
            return None;
        }
        let head = self.head();
        let room = head.room.load(Relaxed) - magazine.block_bytes as i64;
        if room < 0 {
            return None;
        }
        head.room.store(room, Relaxed);
        // SAFETY: `bottom < top`: the slot below `top` is the magazine's and holds a
        // block, non-null (magazine invariant).
        unsafe {
            let top = top.sub(1);
            magazine.top.store(top, Relaxed);
            Some(NonNull::new_unchecked(*top))
        }
    }

    /// `push` and the free's count in one, for the free fast path: `false`, with nothing
    /// done, when the magazine is full or when `room` would pass `room_limit` (the
    /// thread's budget is full, or the count needs its cold part, a publish). The slow
    /// path does all of it then, so the fast path makes no call and saves no register.
    /// The cached bytes and `room` rise together: `gap` stays.
    ///
    /// # Safety
    /// As for `ThreadCache::push`, with `slot` the class's slot (`slot_of_class`); or
    /// `slot` is the class count's (the magazine of no capacity past the classes), which
    /// always declines, whatever the block.
    #[inline(always)]
    pub(crate) unsafe fn push_counted(self, slot: usize, block: NonNull<u8>) -> bool {
        // SAFETY: forwarded contract.
        let magazine = unsafe { self.magazine_at(slot) };
        let head = self.head();
        let room = head.room.load(Relaxed) + magazine.block_bytes as i64;
        let top = magazine.top.load(Relaxed);
        // SAFETY: the caller's contract: this thread owns the cache, in a pool call.
        if top == magazine.limit || room > unsafe { head.room_limit() } {
            return false;
        }
        // SAFETY: `top < limit`: the slot at `top` is the magazine's, and free.
        unsafe {
            *top = block.as_ptr();
            magazine.top.store(top.add(1), Relaxed);
        }
        bump(&magazine.pushes, 1);
        head.room.store(room, Relaxed);
        true
    }
}

/// What `CpuPool` shares with its threads' caches: the central layer and the registry.
pub(crate) struct CacheShared {
    /// Process-unique: keys this pool's caches in every thread's TLS.
    pub(crate) id: u64,
    name: Arc<str>,
    /// Where refills come from and flushes go (`central.rs`).
    central: Central,
    pub(crate) stats: Arc<StatsCounters>,
    pub(crate) classes: CacheClasses,
    pub(crate) sizer: BlockSizer,
    /// The geometry of a segment heap whose span owners are the cache classes
    /// (`BlockSizer::SegmentClass`, and `Uniform`'s one class), apart from the enum: the
    /// free fast path tests this one field instead of dispatching on the sizer.
    segment_class: Option<SegmentGeometry>,
    /// The pool's alignment: every cached block has it.
    align: usize,
    /// Whether a class's blocks are aligned to its size's lowest set bit (up to
    /// `MAX_NATURAL_ALIGN`), so that a request aligned beyond the pool's alignment can
    /// be served from a class whose size is a multiple of it (`aligned_class`): the
    /// size-classed strategy's spans and the lock-free allocator's slabs lay their
    /// blocks out so, when the cache classes are theirs.
    natural_alignment: bool,
    max_thread_bytes: usize,
    /// The caches of every thread that used the pool and has not exited. Lock order:
    /// `central` before `registry`.
    registry: Mutex<Vec<Arc<ThreadCache>>>,
}

impl CacheShared {
    pub(crate) fn new(
        name: Arc<str>,
        central: Central,
        stats: Arc<StatsCounters>,
        classes: CacheClasses,
        sizer: BlockSizer,
        align: usize,
        max_thread_bytes: usize,
    ) -> Self {
        let segment_class = match sizer {
            BlockSizer::SegmentClass(geometry)
            | BlockSizer::Uniform(_, geometry)
            | BlockSizer::LockFree(geometry) => {
                // `slot_of` answers a class's slot or the class count's ("not cached"),
                // which the free path adds to the rack's address (`ThreadCache::new` keeps
                // one magazine more).
                assert_eq!(usize::from(geometry.class_cap()), classes.class_count());
                Some(geometry)
            }
            _ => None,
        };
        let natural_alignment =
            matches!(sizer, BlockSizer::SegmentClass(_) | BlockSizer::LockFree(_));
        CacheShared {
            id: tls::next_pool_id(),
            name,
            central,
            stats,
            classes,
            sizer,
            segment_class,
            align,
            natural_alignment,
            max_thread_bytes,
            registry: Mutex::new(Vec::new()),
        }
    }

    /// The central layer, for a slow path (the strategy's mutex, or the lock-free
    /// allocator with no lock).
    #[inline]
    pub(crate) fn lock(&self) -> Result<CentralGuard<'_>, PoolError> {
        self.central.access(&self.name)
    }

    /// The strategy's lock, for what only a locked strategy is asked (TLSF's in-place
    /// resize: `BlockSizer::resizes_in_place` answers every other sizer itself); the
    /// lock-free allocator has no such question.
    pub(crate) fn lock_strategy(&self) -> Result<MutexGuard<'_, Box<dyn Strategy>>, PoolError> {
        match &self.central {
            Central::Locked(strategy) => strategy
                .lock()
                .map_err(|_| PoolError::invalid_op(&self.name, central::POISONED)),
            Central::LockFree(_) => Err(PoolError::invalid_op(
                &self.name,
                "the lock-free allocator has no strategy lock",
            )),
        }
    }

    /// Whether the central layer is the lock-free allocator.
    pub(crate) fn is_lock_free(&self) -> bool {
        matches!(self.central, Central::LockFree(_))
    }

    /// Forget every thread's cached blocks and reset the central layer: under the
    /// strategy's lock, or for the lock-free allocator under the registry's lock, which
    /// exiting threads hold while they flush (`retire`).
    ///
    /// # Safety
    /// No other thread is inside a call on this pool, and no block handed out before is
    /// used afterwards.
    pub(crate) unsafe fn reset(&self, return_chunks: bool) -> Result<(), PoolError> {
        match &self.central {
            Central::Locked(_) => {
                let mut strategy = self.lock()?;
                // SAFETY: the caller's contract; we hold the strategy's lock, which exiting
                // threads take before they flush.
                unsafe { self.forget_all(&self.registry()) };
                strategy.reset(return_chunks);
            }
            Central::LockFree(central) => {
                let registry = self.registry();
                // SAFETY: the caller's contract; we hold the registry's lock, which exiting
                // threads hold while they flush.
                unsafe {
                    self.forget_all(&registry);
                    central.reset(return_chunks);
                }
            }
        }
        Ok(())
    }

    fn registry(&self) -> MutexGuard<'_, Vec<Arc<ThreadCache>>> {
        // The registry is only pushed to and removed from: consistent after a panic.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register_thread(&self) -> Arc<ThreadCache> {
        let cache = Arc::new(ThreadCache::new(&self.classes, self.max_thread_bytes));
        self.registry().push(Arc::clone(&cache));
        cache
    }

    /// The fast path: a cached block for a request of `size` bytes at the pool's
    /// alignment, or `None` (not cacheable, no cache yet, or the magazine is empty).
    #[inline(always)]
    pub(crate) fn try_allocate(&self, size: usize) -> Option<NonNull<u8>> {
        // SAFETY: a rack from this thread's TLS is this thread's cache's, alive (the TLS
        // map holds the cache's `Arc`), and this thread is inside a pool call.
        let rack = unsafe { tls::last_used_rack(self.id)? };
        self.try_allocate_in(rack, size)
    }

    /// `try_allocate` from `rack`, the rack of this thread's cache of this pool (from
    /// `tls::last_used_rack`, in this pool call).
    #[inline(always)]
    pub(crate) fn try_allocate_in(&self, rack: Rack<'_>, size: usize) -> Option<NonNull<u8>> {
        let slot = self.classes.slot_of_request(size)?;
        // SAFETY: the caller's contract (this thread's rack, in a pool call); `slot` is one
        // of the pool's classes'.
        unsafe { self.pop_in(rack, slot) }
    }

    /// A block from `rack`'s magazine at `slot`, counted (the cold part of the count
    /// here), or `None` when it is empty.
    ///
    /// # Safety
    /// `rack` is this thread's cache's rack of this pool, in a pool call, and `slot` is
    /// the slot of one of the pool's classes.
    #[inline(always)]
    unsafe fn pop_in(&self, rack: Rack<'_>, slot: usize) -> Option<NonNull<u8>> {
        // SAFETY: forwarded contract.
        let (block, cold) = unsafe { rack.pop_counted(slot)? };
        if cold {
            self.counts_cold_here();
        }
        Some(block)
    }

    /// The cache class serving a request of `size` bytes aligned to `align`, a power of
    /// two above the pool's alignment, if blocks of a cached class have that alignment
    /// (see `natural_alignment`).
    pub(crate) fn aligned_class(&self, size: usize, align: usize) -> Option<usize> {
        if !self.natural_alignment || align > MAX_NATURAL_ALIGN {
            return None;
        }
        self.classes.class_of_aligned_request(size, align)
    }

    /// A cached block of `class`, or `None` (not a class of the pool, no cache yet, or
    /// the magazine is empty): the fast path of `aligned_class`'s requests.
    pub(crate) fn try_allocate_class(&self, class: usize) -> Option<NonNull<u8>> {
        if class >= self.classes.class_count() {
            return None;
        }
        // SAFETY: as in `try_allocate`.
        let rack = unsafe { tls::last_used_rack(self.id)? };
        // SAFETY: this thread's rack of this pool, in a pool call; `class` is one of the
        // pool's classes (checked above).
        unsafe { self.pop_in(rack, slot_of_class(class)) }
    }

    /// `try_allocate_in` that declines (with nothing done) where the count needs its cold
    /// part, as the allocation fast path does (`Rack::try_pop`).
    #[inline(always)]
    pub(crate) fn try_pop_in(&self, rack: Rack<'_>, size: usize) -> Option<NonNull<u8>> {
        let slot = self.classes.slot_of_request(size)?;
        // SAFETY: as in `try_allocate_in`.
        unsafe { rack.try_pop(slot) }
    }

    /// The counts' cold part for this thread's cache of this pool, after a pop through
    /// its rack (`try_allocate_in`; `CpuPool::counted_cold`, after `allocate_or_none`'s
    /// pop).
    #[cold]
    #[inline(never)]
    pub(crate) fn counts_cold_here(&self) {
        // SAFETY: the caller found this thread's cache of this pool last used (its rack),
        // and nothing since changed that; the reference ends with this call.
        if let Some(cache) = unsafe { tls::current(self.id) } {
            cache.counts_cold(&self.stats);
        }
    }

    /// Make this thread's cache for the pool (if it has one) the last used, so that the
    /// fast paths (which only look there) find it.
    pub(crate) fn make_last_used(&self) {
        // SAFETY: the reference is dropped at once.
        unsafe { tls::current(self.id) };
    }

    /// The fast path of a free: into this thread's cache, or `false`.
    ///
    /// # Safety
    /// `ptr` is a live block of this pool's strategy, not used after this call, and its
    /// allocation happens-before it.
    #[inline(always)]
    pub(crate) unsafe fn try_free(&self, ptr: NonNull<u8>) -> bool {
        // SAFETY: forwarded contract.
        let class = unsafe { self.cache_class(ptr) };
        // SAFETY: forwarded contract; the class is the block's.
        unsafe { self.try_free_classified(ptr, class) }
    }

    /// `try_free` into `rack`, the rack of this thread's cache of this pool (from
    /// `tls::last_used_rack`, in this pool call), for a `BlockSizer::Segment` pool, with
    /// the class from the sizer alone: `CpuPool` serves the others inline before it comes
    /// here (`segment_class` and TLSF caches), and this path declines them.
    ///
    /// # Safety
    /// As for `try_free`.
    #[inline(always)]
    pub(crate) unsafe fn try_free_in(&self, rack: Rack<'_>, ptr: NonNull<u8>) -> bool {
        // The one sizer `CpuPool` does not serve inline (`fast_segment`, `fast_tlsf`); any
        // other declines to the slow path, which serves it right, and the dispatch below
        // inlines this one arm alone (no register for the others' code).
        if !matches!(self.sizer, BlockSizer::Segment(_)) {
            return false;
        }
        // SAFETY: forwarded contract.
        let Some(class) = (unsafe { self.sizer.class_of(ptr, &self.classes) }).0 else {
            return false;
        };
        // SAFETY: the rack is this thread's cache's, in a pool call; the block has exactly
        // the class's usable size and is unused (forwarded contract).
        unsafe { rack.push_counted(slot_of_class(class), ptr) }
    }

    /// The cache class of a live block, or `None` when it may not be cached: the free
    /// fast path's lookup (a cached block's usable size is its class's).
    ///
    /// # Safety
    /// As for `try_free`, except that the block stays live.
    #[inline(always)]
    pub(crate) unsafe fn cache_class(&self, ptr: NonNull<u8>) -> Option<usize> {
        match self.segment_class {
            // A block of no cached class (a large object included) reads as the class
            // count's slot (`CacheShared::new` checks the cap).
            Some(geometry) => {
                // SAFETY: forwarded contract.
                let slot = usize::from(unsafe { geometry.slot_of(ptr) });
                Some(slot / CLASS_SLOT_BYTES - 1)
                    .filter(|&class| class < self.classes.class_count())
            }
            // SAFETY: forwarded contract.
            None => unsafe { self.sizer.class_of(ptr, &self.classes) }.0,
        }
    }

    /// The geometry of a pool whose span owners are its cache classes (`segment_class`;
    /// its class cap is the class count), for `CpuPool`'s inline free path.
    pub(crate) fn segment_class(&self) -> Option<SegmentGeometry> {
        self.segment_class
    }

    /// Usable bytes of every block of cache class `class`.
    ///
    /// # Safety
    /// `class` is a class of the pool (below `class_count`).
    #[inline(always)]
    pub(crate) unsafe fn class_bytes_unchecked(&self, class: usize) -> usize {
        // SAFETY: the caller's contract.
        unsafe { *self.classes.class_bytes.get_unchecked(class) }
    }

    /// A live block's cache class (if it may be cached) and usable bytes.
    ///
    /// # Safety
    /// As for `try_free`, except that the block stays live.
    #[inline(always)]
    pub(crate) unsafe fn classify(&self, ptr: NonNull<u8>) -> (Option<usize>, usize) {
        // SAFETY: forwarded contract.
        unsafe { self.sizer.class_of(ptr, &self.classes) }
    }

    /// `try_free` of a block already classified by `classify`.
    ///
    /// # Safety
    /// As for `try_free`; `class` is what `classify` said of `ptr`.
    #[inline(always)]
    pub(crate) unsafe fn try_free_classified(
        &self,
        ptr: NonNull<u8>,
        class: Option<usize>,
    ) -> bool {
        let Some(class) = class else {
            return false;
        };
        // SAFETY: as in `try_allocate`.
        let Some(rack) = (unsafe { tls::last_used_rack(self.id) }) else {
            return false;
        };
        // SAFETY: as above; the block has exactly the class's usable size and is unused.
        unsafe { rack.push_counted(slot_of_class(class), ptr) }
    }

    /// Count an in-place reallocation (one free and one allocation) by this thread.
    pub(crate) fn count_resize(self: &Arc<Self>, old_usable: usize, new_usable: usize) {
        // SAFETY: as in `try_allocate`.
        let cache = unsafe {
            match tls::current(self.id) {
                Some(cache) => Some(cache),
                None => tls::get_or_create(self).as_ref(),
            }
        };
        self.count_free(cache, old_usable);
        self.count_alloc(cache, new_usable);
    }

    /// Count an allocation made outside the magazines (through the lock).
    fn count_alloc(&self, cache: Option<&ThreadCache>, usable_bytes: usize) {
        match cache {
            Some(cache) => cache.count_alloc(usable_bytes, &self.stats),
            None => self.stats.on_alloc(usable_bytes),
        }
    }

    fn count_free(&self, cache: Option<&ThreadCache>, usable_bytes: usize) {
        match cache {
            Some(cache) => cache.count_free(usable_bytes, &self.stats),
            None => self.stats.on_free(usable_bytes),
        }
    }

    /// The slow path of an allocation at the pool's alignment: refill the magazine of
    /// the request's class (half its capacity) under the lock and take one block, or
    /// allocate directly when the request is not cacheable or this thread has no cache.
    /// On a strategy error, this thread's cache is given back and the request retried
    /// once: cached blocks must not make the pool fail where it would not without them.
    #[cold]
    pub(crate) fn allocate_slow(
        self: &Arc<Self>,
        size: usize,
        align: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        let class = if align <= self.align {
            self.classes.class_of_request(size)
        } else {
            self.aligned_class(size, align)
        };
        // SAFETY: as in `try_allocate`.
        let cache = unsafe { tls::current_or_create(self).as_ref() };
        if let (Some(class), Some(cache)) = (class, cache) {
            // A block cached after all (the fast path missed because this thread had
            // used another pool): no lock.
            // SAFETY: this thread owns the cache and is inside a pool call; `class` is
            // one of the pool's classes.
            if let Some((block, cold)) = unsafe { cache.rack().pop_counted(slot_of_class(class)) } {
                if cold {
                    cache.counts_cold(&self.stats);
                }
                return Ok(block);
            }
        }
        let mut strategy = self.lock()?;
        let result = match (class, cache) {
            (Some(class), Some(cache)) => self.refill(strategy.as_mut(), cache, class),
            _ => Self::allocate_direct(strategy.as_mut(), size, align),
        };
        let (ptr, usable) = match result {
            Ok(served) => served,
            Err(error) => {
                let Some(cache) = cache else {
                    return Err(error);
                };
                // SAFETY: this thread owns `cache` and is inside a pool call.
                let given_back = unsafe { Self::drain(strategy.as_mut(), cache, 0) };
                if given_back == 0 {
                    return Err(error);
                }
                let bytes = class.map_or(size, |c| self.classes.class_bytes[c]);
                Self::allocate_direct(strategy.as_mut(), bytes, align)?
            }
        };
        drop(strategy);
        self.count_alloc(cache, usable);
        Ok(ptr)
    }

    fn allocate_direct(
        strategy: &mut dyn Strategy,
        size: usize,
        align: usize,
    ) -> Result<(NonNull<u8>, usize), PoolError> {
        let ptr = strategy.allocate(size, align)?;
        // SAFETY: ptr was just handed out by this strategy.
        let usable = unsafe { strategy.usable_size(ptr) };
        Ok((ptr, usable))
    }

    /// Fill `class`'s magazine from the strategy (the slow-start batch) and return one
    /// more block for the caller, all with one `allocate_batch`. Blocks whose usable size
    /// is not exactly the class's are not cached (back to the strategy; the caller then
    /// gets one block directly).
    fn refill(
        &self,
        strategy: &mut dyn Strategy,
        cache: &ThreadCache,
        class: usize,
    ) -> Result<(NonNull<u8>, usize), PoolError> {
        let bytes = self.classes.class_bytes[class];
        // SAFETY: this thread owns the cache and is inside a pool call.
        let want = unsafe { cache.next_refill_batch(class) };
        // One batch for the magazine and the caller's block together. SAFETY: this thread
        // owns the cache and is inside a pool call; the strategy writes blocks of exactly
        // the class's usable size that nobody else knows.
        unsafe {
            cache.fill(class, want + 1, |slots| {
                strategy.allocate_batch(bytes, self.align, bytes, slots)
            })
        };
        // SAFETY: as above; `class` is one of the pool's classes.
        if let Some(served) = unsafe { cache.pop(class) } {
            return Ok(served);
        }
        // Nothing cached (no room under the thread's budget, a TLSF block of another
        // usable size, or the strategy failed): one block directly, with its error.
        Self::allocate_direct(strategy, bytes, self.align)
    }

    /// The slow path of a free: give half of the full magazine (or, over the thread's
    /// budget, half of every magazine) back under the lock and cache the block, or free
    /// it directly when it is not cacheable or this thread has no cache.
    ///
    /// # Safety
    /// As for `try_free`.
    #[cold]
    pub(crate) unsafe fn free_slow(self: &Arc<Self>, ptr: NonNull<u8>) -> Result<(), PoolError> {
        // SAFETY: forwarded contract.
        let (class, usable) = unsafe { self.sizer.class_of(ptr, &self.classes) };
        // SAFETY: as in `try_allocate`.
        let cache = unsafe { tls::current_or_create(self).as_ref() };
        if let (Some(class), Some(cache)) = (class, cache) {
            // Room in the magazine and the budget (the fast path only declined for the
            // counts' cold part, or this thread had used another pool): no lock.
            // SAFETY: this thread owns the cache and is inside a pool call; the block has
            // exactly the class's usable size and is unused.
            if unsafe { cache.push(class, ptr) }.is_some() {
                cache.count_free(usable, &self.stats);
                return Ok(());
            }
        }
        let mut strategy = self.lock()?;
        match (class, cache) {
            (Some(class), Some(cache)) => {
                // SAFETY: this thread owns the cache and is inside a pool call.
                unsafe {
                    let magazine = cache.magazine(class);
                    let over_budget = cache.cached_bytes() + usable > self.max_thread_bytes;
                    if magazine.top.load(Relaxed) == magazine.limit {
                        Self::trim(strategy.as_mut(), cache, class, magazine.capacity() / 2);
                    } else if over_budget {
                        Self::drain(strategy.as_mut(), cache, 2);
                    }
                    if cache.push(class, ptr).is_none() {
                        strategy.deallocate(ptr);
                    }
                }
            }
            // SAFETY: ptr is a live block of the strategy, unused from now (contract).
            _ => unsafe {
                strategy.deallocate(ptr);
            },
        }
        drop(strategy);
        self.count_free(cache, usable);
        Ok(())
    }

    /// Give the oldest blocks of `class` back until `keep` remain.
    ///
    /// # Safety
    /// The caller may touch the cache's magazines and holds the strategy's lock
    /// (`strategy` is the locked strategy).
    unsafe fn trim(strategy: &mut dyn Strategy, cache: &ThreadCache, class: usize, keep: usize) {
        // SAFETY: forwarded contract.
        let magazine = unsafe { cache.magazine(class) };
        let len = magazine.len();
        if len <= keep {
            return;
        }
        let give = len - keep;
        // SAFETY: the slots `bottom..top` hold blocks of this strategy that nobody uses;
        // the newest `keep` move down to the bottom (the most recently freed stay cached).
        unsafe {
            for i in 0..give {
                strategy.deallocate(NonNull::new_unchecked(*magazine.bottom.add(i)));
            }
            ptr::copy(magazine.bottom.add(give), magazine.bottom, keep);
            magazine.top.store(magazine.bottom.add(keep), Relaxed);
        }
        magazine.add_base(-(give as i64));
        let bytes = give * magazine.block_bytes;
        cache.add_gap(-(bytes as i64));
    }

    /// Give back all but `1 / divisor` of every magazine (`divisor == 0`: everything);
    /// returns the number of blocks given back.
    ///
    /// # Safety
    /// As for `trim`.
    unsafe fn drain(strategy: &mut dyn Strategy, cache: &ThreadCache, divisor: usize) -> usize {
        let mut given = 0;
        // SAFETY: forwarded contract (each `trim` reborrows the magazines afresh).
        unsafe {
            for class in 0..cache.rack.magazines().len() {
                let len = cache.magazine(class).len();
                let keep = len.checked_div(divisor).unwrap_or(0);
                given += len - keep;
                Self::trim(strategy, cache, class, keep);
            }
        }
        given
    }

    /// Thread exit: give every cached block back, publish the counts, unregister.
    fn retire(&self, cache: &Arc<ThreadCache>) {
        // The lock-free allocator is reset under the registry's lock (`reset`): hold it
        // while flushing into it. The strategy's lock does that for the others (lock
        // order: strategy, then registry).
        let registry = self.is_lock_free().then(|| self.registry());
        // A poisoned lock: the strategy may be inconsistent; leave the blocks where they
        // are (the pool is unusable anyway) but keep the counts.
        if let Ok(mut strategy) = self.lock() {
            // SAFETY: the owner is exiting (in no pool call); we hold the strategy's lock,
            // or the registry's for the lock-free allocator.
            unsafe { Self::drain(strategy.as_mut(), cache, 0) };
        }
        cache.publish_all(&self.stats);
        let mut registry = registry.unwrap_or_else(|| self.registry());
        registry.retain(|c| !Arc::ptr_eq(c, cache));
    }

    /// Forget every cached block of every thread in `registry` (the registry's contents,
    /// locked), and publish every thread's counts (before the central layer's reset).
    ///
    /// # Safety
    /// No other thread is inside a call on this pool (their caches are touched), and the
    /// caller holds the lock exiting threads take before they flush (`reset`).
    unsafe fn forget_all(&self, registry: &[Arc<ThreadCache>]) {
        for cache in registry {
            // The magazines may be changed here: no owner is in a pool call (contract);
            // exiting owners wait for the lock the caller holds.
            for magazine in cache.rack.magazines().iter() {
                magazine.add_base(-(magazine.len() as i64));
                magazine.top.store(magazine.bottom, Relaxed);
            }
            // Nothing cached: `room + gap == 0`.
            cache.gap.store(-cache.head().room.load(Relaxed), Relaxed);
            cache.publish_all(&self.stats);
        }
    }

    /// `(pending counts of every thread, bytes cached in every thread)`, for `stats()`.
    pub(crate) fn pending(&self) -> (CountBatch, u64) {
        let mut pending = CountBatch::default();
        let mut cached = 0u64;
        for cache in self.registry().iter() {
            pending.add(&cache.pending());
            cached += cache.cached_bytes() as u64;
        }
        (pending, cached)
    }
}
