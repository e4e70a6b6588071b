//! The lock-free allocator: thread heaps, slabs with remote-free stacks, no mutex on the
//! allocate/free path. The design, the ASCII picture and the ABA argument are in
//! [`docs/lockfree-design.md`](../../../../docs/lockfree-design.md); read it first.
//!
//! - [`stack`]: the two push-many / take-all stacks (remote frees, re-queued slabs).
//! - [`slab`]: one slab's header, free list and bump carving.
//! - [`heap`]: a thread heap (bins per size class) and its ownership hand-off.
//! - [`region`]: slabs carved from OS chunks by an atomic bump, under a byte budget.
//! - [`large`]: requests above the largest slab class, one mapping each.
//! - `tls` (private): the thread-local map from allocator id to heap.
//!
//! Every atomic comes from [`crate::sync`], which is loom under `cfg(loom)`. The model
//! checks are run with:
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target-loom cargo test -p pools --test loom --release
//! ```
//!
//! Statistics: the allocator reports what it takes from the OS (`on_reserve`,
//! `on_release`) and large objects (`on_large_object`); per-operation counters
//! (`on_alloc`, `on_free`, `on_failure`, `on_reset`) are the pool's, as for every `Strategy`.

mod heap;
mod large;
mod region;
mod slab;
mod stack;
mod tls;

pub(crate) use self::heap::Heap;
use self::large::LargeObjects;
use self::region::{Regions, PAGES_PER_REGION};
pub(crate) use self::slab::Slab;
pub(crate) use self::slab::MAX_SLAB_ALIGN_BYTES;
use self::slab::{SpanKind, SPAN_LARGE};
use self::stack::IntrusiveStack;
use super::segment::{class_slot, SegmentGeometry, MAX_CLASS_CAP};
use super::size_class::{ClassLookup, SizeClassTable, QUANTUM_BYTES};
use super::BlockState;
use crate::config::PoolConfig;
use crate::error::PoolError;
use crate::stats::StatsCounters;
use crate::sync::Ordering;
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// Building blocks exported for the loom model checks in `pools/tests/loom.rs` only.
#[cfg(loom)]
pub mod loom_exports {
    pub use super::heap::HeapState;
    pub use super::region::{ByteBudget, SlabBump};
    pub use super::stack::{IntrusiveStack, Linked, PushOutcome, RemoteFreeStack, RemoteHead};
}

/// Smallest region (128 pages of 8 KiB); also the alignment of every large mapping.
const MIN_SEGMENT_BYTES: usize = 1024 * 1024;
/// Largest region (pages of 32 KiB).
const MAX_SEGMENT_BYTES: usize = 4 * 1024 * 1024;
/// Most pages of one slab; classes that need more take the large-object path.
const MAX_SPAN_PAGES: usize = 32;
/// A slab wastes at most this fraction of its span when some span up to `MAX_SPAN_PAGES`
/// allows it (else the least wasteful is used).
const MAX_SPAN_WASTE: f64 = 0.25;

/// What every heap needs from its allocator; lives as long as the allocator.
pub(crate) struct Core {
    regions: Regions,
    classes: SizeClassTable,
    /// Classes `0..slab_class_count` are served from slabs.
    slab_class_count: usize,
    /// `span_pages[c]`: pages of every slab of class `c` (1..=MAX_SPAN_PAGES).
    span_pages: Box<[usize]>,
    /// A power of two: regions and large mappings are aligned to it.
    segment_bytes: usize,
    /// `max(config.alignment, 16)`: the alignment of a plain `allocate`.
    min_align_bytes: usize,
    /// `debug.check_pointers`: slabs keep a live bitmap, double frees are ignored.
    checking: bool,
    /// The page-class maps' cap (`LockFreeAllocator::set_class_cap`): slab classes from it
    /// on, and large objects, read as its slot.
    class_cap: u16,
}

impl Core {
    /// The page-class map's entry for slabs of `class`.
    #[inline]
    pub(crate) fn class_slot(&self, class: usize) -> u16 {
        let class = u16::try_from(class).map_or(self.class_cap, |c| c.min(self.class_cap));
        class_slot(class)
    }
}

/// A size-classed allocator with per-thread heaps and no lock on its hot paths (see the
/// module doc). `Send + Sync`; every method takes `&self` except `reset`.
pub struct LockFreeAllocator {
    core: Core,
    /// Process-unique, never reused: keys this allocator's heaps in every thread's TLS.
    id: u64,
    /// Every heap ever created for this allocator; each holds one `Arc` strong count
    /// (from `Arc::into_raw`). Push-only until `Drop`.
    heaps: IntrusiveStack<Heap>,
    large: LargeObjects,
    /// The slab classes of requests up to 4 KiB by table lookup (`try_allocate_local`).
    lookup: ClassLookup,
}

/// What `LockFreeAllocator::try_free_local` did (the heap and slab live as long as the
/// allocator: heaps are registered, and slabs are in its regions, until its `Drop`).
pub(crate) enum FreeLocal<'a> {
    /// The block is back in its slab: its usable bytes.
    Done(usize),
    /// The block is back in its slab, which it emptied: `heap.after_local_empty(slab)`
    /// must follow (by this thread, which owns `heap`).
    Emptied {
        heap: &'a Heap,
        slab: &'a Slab,
        usable: usize,
    },
    /// Nothing done.
    Declined,
}

impl LockFreeAllocator {
    /// An allocator for `config` (its size classes, chunk sizes, growth, limit, alignment,
    /// huge pages and pointer checking). Counts `initial_size_bytes` as committed at once
    /// (see `Regions` for what reserved bytes mean).
    pub fn new(
        name: Arc<str>,
        config: &PoolConfig,
        stats: Arc<StatsCounters>,
    ) -> Result<Self, PoolError> {
        config
            .validate()
            .map_err(|e| PoolError::invalid_op(&name, e.to_string()))?;
        let classes = SizeClassTable::new(&config.size_classes);
        let segment_bytes = (classes.max_class_bytes() * 8)
            .next_power_of_two()
            .clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
        let page_bytes = segment_bytes / region::PAGES_PER_REGION;
        let span_pages: Box<[usize]> = (0..classes.class_count())
            .map_while(|c| {
                span_pages_for(
                    page_bytes,
                    classes.class_size(c),
                    classes.class_alignment(c),
                    config.debug.check_pointers,
                )
            })
            .collect();
        let slab_class_count = span_pages.len();
        let min_align_bytes = config.alignment.max(QUANTUM_BYTES);
        if min_align_bytes > segment_bytes / 2 {
            return Err(PoolError::invalid_op(
                &name,
                format!(
                    "alignment {} exceeds the lock-free allocator's maximum of {} bytes",
                    config.alignment,
                    segment_bytes / 2
                ),
            ));
        }
        let regions = Regions::new(
            name,
            segment_bytes,
            config.max_size_bytes,
            config.huge_pages,
            stats,
        );
        if config.initial_size_bytes > 0 {
            regions.map_initial(config.initial_size_bytes)?;
        }
        // Empty unless `try_allocate_local` may serve (`serves_local`): its one size
        // compare then also answers that.
        let serves_local = min_align_bytes <= QUANTUM_BYTES && !config.debug.check_pointers;
        let lookup = ClassLookup::new(
            &classes,
            if serves_local { 4096 } else { 0 },
            slab_class_count,
        );
        Ok(LockFreeAllocator {
            lookup,
            core: Core {
                regions,
                classes,
                slab_class_count,
                span_pages,
                segment_bytes,
                min_align_bytes,
                checking: config.debug.check_pointers,
                class_cap: 0,
            },
            id: tls::next_allocator_id(),
            heaps: IntrusiveStack::new(),
            large: LargeObjects::new(),
        })
    }

    /// The slab class serving `size` bytes at `align` (already raised to the minimum), or
    /// `None` for the large-object path.
    #[inline(always)]
    fn slab_class(&self, size: usize, align: usize) -> Option<usize> {
        let class = if align <= QUANTUM_BYTES {
            self.core.classes.class_of(size)
        } else if align <= MAX_SLAB_ALIGN_BYTES && align.is_power_of_two() {
            self.core.classes.aligned_class_of(size, align)
        } else {
            None
        };
        class.filter(|&c| c < self.core.slab_class_count)
    }

    /// A block of at least `size` bytes aligned to `align` (a power of two; values below
    /// the configured alignment are raised to it). `size == 0` is served as 1 byte.
    /// Errors: `OutOfMemory` (with the numbers) or `InvalidOperation` (bad alignment).
    #[inline]
    pub fn allocate(&self, size: usize, align: usize) -> Result<NonNull<u8>, PoolError> {
        let align = align.max(self.core.min_align_bytes);
        match self.slab_class(size, align) {
            Some(class) => {
                let heap = tls::current_heap(self.id);
                if heap.is_null() {
                    return self.allocate_without_cached_heap(class);
                }
                // SAFETY: a heap found in this thread's TLS is owned by this thread and
                // alive (the TLS entry holds an `Arc`); the class is a slab class.
                unsafe { (*heap).allocate(&self.core, class) }
            }
            _ => self.allocate_large(size, align),
        }
    }

    /// The fast path of `allocate_sized` at the configured alignment (at most 16): a block
    /// of the current slab of this thread's last-used heap, with its usable bytes, or
    /// `None` (then call `allocate_sized`).
    #[inline(always)]
    pub(crate) fn try_allocate_local(&self, size: usize) -> Option<(NonNull<u8>, usize)> {
        // Only slab classes are in the lookup, and only without checking and at most
        // 16-byte alignment (`serves_local`; empty otherwise): `try_pop_unchecked`'s
        // contract holds. `get_nonzero` serves nothing from an empty lookup, and leaves 0
        // bytes to the miss (which serves it as 1).
        let (class, bytes) = self.lookup.get_nonzero(size)?;
        // SAFETY: a heap found in this thread's TLS is owned by this thread and alive (the
        // TLS entry holds an `Arc`); the class is a slab class.
        let block = unsafe { tls::last_heap(self.id)?.try_pop_unchecked(&self.core, class)? };
        // Slabs of class `c` are formatted with blocks of `class_size(c)` bytes.
        Some((block, bytes))
    }

    /// `try_allocate_local`'s miss (the heap's current slab of the class is empty, or
    /// this thread used another allocator last): the same request through the heap's
    /// slow path (a refill), with the class the lookup already gives; requests the lookup
    /// does not serve take `allocate_sized` at the allocator's alignment.
    #[cold]
    #[inline(never)]
    pub(crate) fn allocate_local_miss(
        &self,
        size: usize,
    ) -> Result<(NonNull<u8>, usize), PoolError> {
        let Some((class, bytes)) = self.lookup.get(size.max(1)) else {
            return self.allocate_sized(size.max(1), 0);
        };
        let heap = tls::current_heap(self.id);
        let block = if heap.is_null() {
            self.allocate_without_cached_heap(class)?
        } else {
            // SAFETY: as in `allocate`: a heap from this thread's TLS is owned by this
            // thread and alive; the lookup holds slab classes only.
            unsafe { (*heap).allocate(&self.core, class)? }
        };
        // Slabs of class `c` are formatted with blocks of `class_size(c)` bytes.
        Ok((block, bytes))
    }

    /// Whether `try_allocate_local` serves this allocator's requests (its alignment is at
    /// most the size classes' quantum, and pointers are not checked).
    pub(crate) fn serves_local(&self) -> bool {
        self.core.min_align_bytes <= QUANTUM_BYTES && !self.core.checking
    }

    /// `allocate`, also returning the block's usable bytes (what `usable_size` would
    /// answer) without looking the block up again: the class size for a slab block.
    #[inline]
    pub fn allocate_sized(
        &self,
        size: usize,
        align: usize,
    ) -> Result<(NonNull<u8>, usize), PoolError> {
        let align = align.max(self.core.min_align_bytes);
        match self.slab_class(size, align) {
            Some(class) => {
                let heap = tls::current_heap(self.id);
                let block = if heap.is_null() {
                    self.allocate_without_cached_heap(class)?
                } else {
                    // SAFETY: as in `allocate`.
                    unsafe { (*heap).allocate(&self.core, class)? }
                };
                // Slabs of class `c` are formatted with blocks of `class_size(c)` bytes.
                Ok((block, self.core.classes.class_size(class)))
            }
            _ => {
                let block = self.allocate_large(size, align)?;
                // SAFETY: just handed out by this allocator.
                Ok((block, unsafe { self.usable_size(block) }))
            }
        }
    }

    /// Up to `out.len()` blocks for requests of `size` bytes at `align`, written to the
    /// front of `out`, if their class's blocks have exactly `usable` bytes (a thread
    /// cache's refill: `Strategy::allocate_batch`'s contract); returns how many. The class
    /// and this thread's heap are found once for the whole batch. Stops early, keeping
    /// what it has, at the first failure; takes none for a large object, another usable
    /// size, or while this thread's TLS is being torn down (the caller then allocates one
    /// block directly).
    pub(crate) fn allocate_batch(
        &self,
        size: usize,
        align: usize,
        usable: usize,
        out: &mut [*mut u8],
    ) -> usize {
        let align = align.max(self.core.min_align_bytes);
        let Some(class) = self.slab_class(size, align) else {
            return 0;
        };
        if self.core.classes.class_size(class) != usable {
            return 0;
        }
        let mut heap = tls::current_heap(self.id);
        if heap.is_null() {
            match tls::heap_for(self) {
                Some(found) => heap = found,
                None => return 0,
            }
        }
        for (taken, slot) in out.iter_mut().enumerate() {
            // SAFETY: a heap from this thread's TLS is owned by this thread and alive (the
            // TLS entry holds an `Arc`); the class is a slab class.
            match unsafe { (*heap).allocate(&self.core, class) } {
                Ok(block) => *slot = block.as_ptr(),
                Err(_) => return taken,
            }
        }
        out.len()
    }

    #[cold]
    fn allocate_without_cached_heap(&self, class: usize) -> Result<NonNull<u8>, PoolError> {
        match tls::heap_for(self) {
            // SAFETY: as in `allocate`: the TLS entry owns the heap for this thread.
            Some(heap) => unsafe { (*heap).allocate(&self.core, class) },
            None => {
                // This thread's TLS is being torn down: borrow a heap for one call.
                let heap = self.adopt_or_create_heap();
                // SAFETY: `adopt_or_create_heap` made this thread the heap's owner; the
                // registry keeps it alive.
                let result = unsafe { (*heap).allocate(&self.core, class) };
                // SAFETY: as above.
                unsafe { (*heap).state.abandon() };
                result
            }
        }
    }

    #[cold]
    fn allocate_large(&self, size: usize, align: usize) -> Result<NonNull<u8>, PoolError> {
        if !align.is_power_of_two() || align > self.core.segment_bytes / 2 {
            return Err(PoolError::invalid_op(
                self.core.regions.pool_name(),
                format!(
                    "alignment {align}: must be a power of two of at most {} bytes here",
                    self.core.segment_bytes / 2
                ),
            ));
        }
        self.large.allocate(
            &self.core.regions,
            self.core.segment_bytes,
            size.max(1),
            align,
            class_slot(self.core.class_cap),
        )
    }

    /// A heap this thread now owns: an abandoned one if any, else a new registered one.
    /// The returned heap stays alive until the allocator is dropped.
    pub(crate) fn adopt_or_create_heap(&self) -> *const Heap {
        let mut node = self.heaps.head();
        while let Some(heap) = NonNull::new(node) {
            // SAFETY: registered heaps live until `Drop` (the registry holds an `Arc`).
            let heap_ref = unsafe { heap.as_ref() };
            if heap_ref.state.try_adopt() {
                return heap.as_ptr();
            }
            // SAFETY: reached from the registry head; alive.
            node = unsafe { IntrusiveStack::next(heap) };
        }
        let heap = Arc::into_raw(Arc::new(Heap::new(
            self.core.slab_class_count,
            MAX_SPAN_PAGES,
        )));
        // SAFETY: the registry's strong count keeps the heap alive until `Drop`, which is
        // the only place it is taken off the registry; it is on no stack yet.
        unsafe { self.heaps.push(NonNull::new_unchecked(heap.cast_mut())) };
        heap
    }

    /// The registry's `Arc` of a heap (for the TLS to hold another count).
    ///
    /// # Safety
    /// `heap` came from `adopt_or_create_heap` of this allocator.
    pub(crate) unsafe fn heap_arc(heap: *const Heap) -> Arc<Heap> {
        // SAFETY: the registry holds a strong count for the heap (contract), so adding one
        // and rebuilding an `Arc` from the same pointer is sound.
        unsafe {
            Arc::increment_strong_count(heap);
            Arc::from_raw(heap)
        }
    }

    /// Free a block; returns its usable size. With `debug.check_pointers`, a block that is
    /// not live (a double free, even a racing one) is left alone and 0 is returned.
    ///
    /// # Safety
    /// `ptr` was returned by `allocate` of this allocator and, unless checking is on, not
    /// freed since; no one uses the block after this call.
    #[inline(always)]
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>) -> usize {
        let addr = ptr.as_ptr() as usize;
        if self.core.checking {
            return self.deallocate_checked(ptr);
        }
        let span = (addr & !(self.core.segment_bytes - 1)) as *const SpanKind;
        // SAFETY: the segment-aligned base of every block holds a region header or a large
        // header, both starting with `SpanKind` (contract: the block is ours).
        if unsafe { &*span }.kind.load(Ordering::Relaxed) == SPAN_LARGE {
            // SAFETY: a live large block of this allocator (contract).
            return unsafe { self.free_large(ptr) };
        }
        // SAFETY: a slab block: the region's page map leads to its slab.
        let slab = unsafe { self.core.regions.slab_of(addr) };
        // SAFETY: a live block of `slab` (contract).
        unsafe { self.free_slab_block(slab, ptr) }
    }

    /// The free fast path of an allocator that does not check pointers, for a slab block
    /// of this thread's last-used heap whose slab is listed: the block goes back to its
    /// slab (`FreeLocal::Done`, or `Emptied` when the slab has no used block left and is
    /// not its class's current slab, whose rest is `Heap::after_local_empty`). Anything
    /// else (a large object, another heap's block, an unlisted slab) is `Declined`, with
    /// nothing done, for `deallocate` to do it all. No call, so its caller saves no
    /// register.
    ///
    /// # Safety
    /// As for `deallocate`, and the allocator does not check pointers.
    #[inline(always)]
    pub(crate) unsafe fn try_free_local(&self, ptr: NonNull<u8>) -> FreeLocal<'_> {
        debug_assert!(!self.core.checking);
        let addr = ptr.as_ptr() as usize;
        let span = (addr & !(self.core.segment_bytes - 1)) as *const SpanKind;
        // SAFETY: as in `deallocate`.
        if unsafe { &*span }.kind.load(Ordering::Relaxed) == SPAN_LARGE {
            return FreeLocal::Declined;
        }
        // SAFETY: as in `deallocate`: a slab block.
        let slab = unsafe { self.core.regions.slab_of(addr) };
        let owner = slab.owner_heap();
        if !tls::is_last_heap(owner) {
            return FreeLocal::Declined;
        }
        // SAFETY: this thread owns the slab's heap (its TLS says so), and the block is
        // live (contract).
        match unsafe { slab.try_push_local(ptr) } {
            None => FreeLocal::Declined,
            // SAFETY: as above; the slab is the heap's.
            Some(0) if !unsafe { (*owner).is_current(slab) } => FreeLocal::Emptied {
                // SAFETY: the owner heap is registered until the allocator's `Drop`.
                heap: unsafe { &*owner },
                slab,
                usable: slab.block_bytes(),
            },
            Some(_) => FreeLocal::Done(slab.block_bytes()),
        }
    }

    /// # Safety
    /// `ptr` is a live large block of this allocator.
    #[cold]
    #[inline(never)]
    unsafe fn free_large(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded contract.
        unsafe {
            self.large
                .free(&self.core.regions, ptr, self.core.segment_bytes)
        }
    }

    /// `deallocate` with `check_pointers`: the pointer is validated the way `block_state`
    /// does (never reading outside this allocator's memory), and the live bit or large
    /// slot is cleared with one atomic operation, so of two racing frees of a block
    /// exactly one frees it. Anything else returns 0 and changes nothing.
    #[cold]
    fn deallocate_checked(&self, ptr: NonNull<u8>) -> usize {
        let addr = ptr.as_ptr() as usize;
        let Some(base) = self.core.regions.carved_slab_of(addr) else {
            return self
                .large
                .free_checked(&self.core.regions, addr, self.core.segment_bytes)
                .unwrap_or(0);
        };
        // SAFETY: a carved slab of a live region (see `block_state`).
        let slab = unsafe { &*(base as *const Slab) };
        if !slab.is_formatted() {
            return 0;
        }
        match slab.block_index(addr) {
            // SAFETY: the live bit was set, and this call cleared it: the block was live
            // and this call is its one freer.
            Some(index) if slab.clear_live(index) => unsafe { self.free_slab_block(slab, ptr) },
            _ => 0,
        }
    }

    /// Give a slab block back to its owner (locally or through the remote stack).
    ///
    /// # Safety
    /// `ptr` is a live block of `slab`, freed by this call alone and not used after.
    #[inline]
    unsafe fn free_slab_block(&self, slab: &Slab, ptr: NonNull<u8>) -> usize {
        let usable = slab.block_bytes();
        let owner = slab.owner_heap();
        if tls::is_last_heap(owner) {
            // SAFETY: this thread owns the slab's heap (its TLS says so), and the block
            // is live (contract).
            unsafe { (*owner).free_local(slab, ptr) };
        } else {
            // SAFETY: forwarded contract.
            unsafe { self.free_not_last(slab, owner, ptr) };
        }
        usable
    }

    /// A free of a block whose heap is not this thread's last-used one: this thread's
    /// heap of this allocator after all (it last used another allocator), or another
    /// thread's.
    ///
    /// # Safety
    /// `ptr` is a live block of `slab`, whose owner heap is `owner`.
    #[cold]
    #[inline(never)]
    unsafe fn free_not_last(&self, slab: &Slab, owner: *const Heap, ptr: NonNull<u8>) {
        if ptr::eq(tls::current_heap(self.id), owner) {
            // SAFETY: as in `free_slab_block`.
            unsafe { (*owner).free_local(slab, ptr) };
        } else {
            // SAFETY: forwarded contract.
            unsafe { Self::free_remote(slab, owner, ptr) };
        }
    }

    /// A free by a thread that does not own the slab's heap.
    ///
    /// # Safety
    /// `ptr` is a live block of `slab`, whose owner heap is `owner`.
    #[cold]
    #[inline(never)]
    unsafe fn free_remote(slab: &Slab, owner: *const Heap, ptr: NonNull<u8>) {
        // SAFETY: the block is live and ours (contract); the owner heap outlives this
        // call (registered until `Drop`), and the push's outcome is passed on as is.
        unsafe {
            let outcome = slab.push_remote(ptr);
            (*owner).requeue(slab, outcome);
        }
    }

    /// Usable bytes of a live block.
    ///
    /// # Safety
    /// `ptr` is a live block of this allocator.
    #[inline]
    pub unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        let addr = ptr.as_ptr() as usize;
        let span = (addr & !(self.core.segment_bytes - 1)) as *const SpanKind;
        // SAFETY: as in `deallocate`.
        unsafe {
            if (*span).kind.load(Ordering::Relaxed) == SPAN_LARGE {
                LargeObjects::usable_size(ptr, self.core.segment_bytes)
            } else {
                self.core.regions.slab_of(addr).block_bytes()
            }
        }
    }

    /// What `ptr` is, without trusting it: reads only region records, the large-object
    /// table and the header atomics of a carved slab of this allocator. Without
    /// `debug.check_pointers`, freed slab blocks are reported `Live` (no bitmap to tell).
    pub fn block_state(&self, ptr: NonNull<u8>) -> BlockState {
        let addr = ptr.as_ptr() as usize;
        if let Some(base) = self.core.regions.carved_slab_of(addr) {
            // SAFETY: a carved slab of a live region: its header is `Slab`-valid memory
            // (zeroed or formatted), and only header atomics are read.
            let slab = unsafe { &*(base as *const Slab) };
            if !slab.is_formatted() {
                return BlockState::NotLive;
            }
            return match slab.block_index(addr) {
                Some(index) => match slab.is_live(index) {
                    Some(false) => BlockState::NotLive,
                    Some(true) | None => BlockState::Live(slab.block_bytes()),
                },
                None => BlockState::NotLive,
            };
        }
        match self.large.find(addr) {
            Some(usable) => BlockState::Live(usable),
            None => BlockState::Foreign,
        }
    }

    /// Release every block at once; every pointer handed out before is invalid after.
    /// With `return_chunks`, every region but the initial one goes back to the OS (large
    /// objects always do).
    pub fn reset(&mut self, return_chunks: bool) {
        self.large
            .free_all(&self.core.regions, self.core.segment_bytes);
        let mut node = self.heaps.head();
        while let Some(heap) = NonNull::new(node) {
            // SAFETY: `&mut self`: no thread is inside this allocator, so no heap is in
            // use; registered heaps are alive.
            unsafe {
                heap.as_ref().forget_slabs();
                node = IntrusiveStack::next(heap);
            }
        }
        self.core.regions.reset(return_chunks);
    }

    /// Bytes held from the OS now (regions and large objects).
    pub fn reserved_bytes(&self) -> usize {
        self.core.regions.budget().reserved_bytes()
    }

    /// Bytes of freed large objects' mappings kept for reuse (part of `reserved_bytes`).
    pub fn cached_large_bytes(&self) -> usize {
        self.large.cached_bytes()
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Cap the page-class maps at `cap` (at most `MAX_CLASS_CAP`): slabs of a class below
    /// it read as its slot, every other slab and every large object as `cap`'s, so that a
    /// thread cache with `cap + 1` slots (`CacheShared`) uses them with no bounds check.
    /// Before any block is allocated (the entries are written when slabs are formatted).
    pub(crate) fn set_class_cap(&mut self, cap: u16) {
        assert!(cap <= MAX_CLASS_CAP, "class cap {cap} over {MAX_CLASS_CAP}");
        self.core.class_cap = cap;
    }

    /// The size-class table of the slab classes (class `c` of it is slab class `c`).
    pub(crate) fn table(&self) -> &SizeClassTable {
        &self.core.classes
    }

    /// Where a thread cache finds the class slot of a block (`SegmentGeometry::slot_of`):
    /// the region and large headers' page-class maps, capped as `set_class_cap` said.
    pub(crate) fn geometry(&self) -> SegmentGeometry {
        SegmentGeometry::lock_free(
            self.core.segment_bytes,
            self.core.regions.page_shift(),
            self.core.class_cap,
        )
    }
}

/// The slab holding a live block of a lock-free allocator whose regions are
/// `!segment_mask + 1` bytes, or `None` for a large object: found from the block's
/// address alone, as `LockFreeAllocator::deallocate` finds it.
///
/// # Safety
/// `block` is a live block of such an allocator, and its allocation happens-before this
/// call.
#[inline(always)]
unsafe fn slab_of_block<'a>(block: NonNull<u8>, segment_mask: usize) -> Option<&'a Slab> {
    let addr = block.as_ptr() as usize;
    let base = addr & segment_mask;
    // SAFETY: as in `LockFreeAllocator::deallocate`: the base holds a region or large
    // header, both starting with `SpanKind`; a slab block's page map entry leads to its
    // formatted slab (the caller's contract).
    unsafe {
        if (*(base as *const SpanKind)).kind.load(Ordering::Relaxed) == SPAN_LARGE {
            return None;
        }
        let page_shift = (!segment_mask + 1).trailing_zeros() - PAGES_PER_REGION.trailing_zeros();
        Some(region::slab_at(base, addr, page_shift))
    }
}

/// Usable bytes of a live block of a lock-free allocator whose regions are
/// `!segment_mask + 1` bytes, read from its slab's or large header alone (a thread cache's
/// slow paths, `thread_cache::BlockSizer::LockFree`), and whether it is a slab block (a
/// large object is not cached: its mapping goes back when it is freed).
///
/// # Safety
/// As for `slab_of_block`.
#[inline(always)]
pub(crate) unsafe fn usable_bytes_unlocked(
    block: NonNull<u8>,
    segment_mask: usize,
) -> (usize, bool) {
    // SAFETY: forwarded contract; a large block's header is at the same masked base.
    unsafe {
        match slab_of_block(block, segment_mask) {
            Some(slab) => (slab.block_bytes(), true),
            None => (LargeObjects::usable_size(block, !segment_mask + 1), false),
        }
    }
}

/// What the page-class map must say of a live block (`SegmentGeometry::slot_of`'s debug
/// check): its slab's class slot, capped at `cap`, or `cap`'s for a large object.
///
/// # Safety
/// As for `slab_of_block`.
#[cfg(debug_assertions)]
pub(crate) unsafe fn expected_slot(block: NonNull<u8>, segment_mask: usize, cap: u16) -> u16 {
    // SAFETY: forwarded contract.
    let class = match unsafe { slab_of_block(block, segment_mask) } {
        Some(slab) => u16::try_from(slab.class()).map_or(cap, |c| c.min(cap)),
        None => cap,
    };
    class_slot(class)
}

/// Pages of a slab for blocks of `block_bytes` (aligned to `block_align_bytes`): the fewest
/// that waste at most `MAX_SPAN_WASTE`, else the least wasteful; `None` when not even one
/// block fits in `MAX_SPAN_PAGES` pages (the class takes the large-object path).
fn span_pages_for(
    page_bytes: usize,
    block_bytes: usize,
    block_align_bytes: usize,
    checking: bool,
) -> Option<usize> {
    let waste = |pages: usize| {
        let span = pages * page_bytes;
        let (_, _, capacity) = Slab::layout(span, block_bytes, block_align_bytes, checking);
        (capacity > 0).then(|| (span - capacity * block_bytes) as f64 / span as f64)
    };
    let fitting = (1..=MAX_SPAN_PAGES).filter_map(|p| waste(p).map(|w| (p, w)));
    fitting
        .clone()
        .find(|&(_, w)| w <= MAX_SPAN_WASTE)
        .or_else(|| fitting.min_by(|a, b| a.1.total_cmp(&b.1)))
        .map(|(p, _)| p)
}

impl Drop for LockFreeAllocator {
    fn drop(&mut self) {
        self.large
            .free_all(&self.core.regions, self.core.segment_bytes);
        let mut node = self.heaps.replace(ptr::null_mut());
        while let Some(heap) = NonNull::new(node) {
            // SAFETY: `&mut self`; the registry holds one strong count per heap, released
            // here. Threads may still hold their own `Arc`s: they see DEAD and never touch
            // the (soon unmapped) slabs again.
            unsafe {
                node = IntrusiveStack::next(heap);
                heap.as_ref().state.mark_dead();
                drop(Arc::from_raw(heap.as_ptr().cast_const()));
            }
        }
        // `core.regions` unmaps every region when it drops, after this.
    }
}

impl std::fmt::Debug for LockFreeAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockFreeAllocator")
            .field("pool", &self.core.regions.pool_name())
            .field("segment_bytes", &self.core.segment_bytes)
            .field("slab_classes", &self.core.slab_class_count)
            .field("reserved_bytes", &self.reserved_bytes())
            .finish()
    }
}

// The allocator must be shareable across threads (`CpuPool` with `SyncMode::LockFree`).
// It is, without an `unsafe impl`: its shared state is atomics and `Arc`s.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<LockFreeAllocator>();
};
