//! Where slabs come from: regions (chunks from the OS) carved by an atomic bump, under a
//! byte budget that enforces `max_size_bytes` without a lock.

use super::slab::{Slab, SpanKind, SPAN_REGION};
use super::stack::{IntrusiveStack, Linked};
use crate::alloc::segment::PAGE_CLASS_OFFSET;
use crate::alloc::{Chunk, ChunkSource};
use crate::config::HugePages;
use crate::error::PoolError;
use crate::os::OsChunks;
use crate::stats::StatsCounters;
use crate::sync::{AtomicPtr, AtomicU8, AtomicUsize, Ordering, UnsafeCell};
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// Bytes taken from the OS, bounded by a limit; shared by regions and large objects.
///
/// Invariant: `reserved_bytes <= limit_bytes` at every instant, and `reserved_bytes`
/// equals the bytes mapped now plus those reserved by mappings in progress.
#[derive(Debug)]
pub struct ByteBudget {
    reserved_bytes: AtomicUsize,
    /// `usize::MAX` when the config sets no limit.
    limit_bytes: usize,
}

impl ByteBudget {
    pub fn new(limit_bytes: Option<usize>) -> Self {
        ByteBudget {
            reserved_bytes: AtomicUsize::new(0),
            limit_bytes: limit_bytes.unwrap_or(usize::MAX),
        }
    }

    /// Reserve `bytes`, or say how many bytes were available when it failed.
    pub fn try_reserve(&self, bytes: usize) -> Result<(), usize> {
        let mut reserved = self.reserved_bytes.load(Ordering::Relaxed);
        loop {
            let available = self.limit_bytes - reserved;
            if bytes > available {
                return Err(available);
            }
            // Relaxed: the counter orders no other memory; the CAS alone keeps the sum
            // under the limit.
            match self.reserved_bytes.compare_exchange_weak(
                reserved,
                reserved + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => reserved = actual,
            }
        }
    }

    pub fn release(&self, bytes: usize) {
        let before = self.reserved_bytes.fetch_sub(bytes, Ordering::Relaxed);
        debug_assert!(before >= bytes, "released more than reserved");
    }

    pub fn reserved_bytes(&self) -> usize {
        self.reserved_bytes.load(Ordering::Relaxed)
    }

    /// Used by the loom model checks.
    #[cfg_attr(not(loom), allow(dead_code))]
    pub fn available_bytes(&self) -> usize {
        self.limit_bytes - self.reserved_bytes()
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }
}

/// Hands out disjoint pieces of `[start_bytes, len_bytes)` to concurrent callers.
///
/// Invariant: the ranges `[offset, offset + bytes)` returned by `carve` are pairwise
/// disjoint and inside `[start_bytes, len_bytes)`. `next_bytes` may run past `len_bytes`
/// (failed carves still add), which only means "exhausted".
#[derive(Debug)]
pub struct SlabBump {
    next_bytes: AtomicUsize,
    start_bytes: usize,
    len_bytes: usize,
}

impl SlabBump {
    pub fn new(start_bytes: usize, len_bytes: usize) -> Self {
        SlabBump {
            next_bytes: AtomicUsize::new(start_bytes),
            start_bytes,
            len_bytes,
        }
    }

    /// The offset of a fresh range of `bytes`, or `None` when exhausted. Relaxed: the
    /// range is the caller's alone (fetch_add hands every offset out once) and the memory
    /// is fresh.
    #[inline]
    pub fn carve(&self, bytes: usize) -> Option<usize> {
        if self.next_bytes.load(Ordering::Relaxed) >= self.len_bytes {
            return None;
        }
        let offset = self.next_bytes.fetch_add(bytes, Ordering::Relaxed);
        (offset + bytes <= self.len_bytes).then_some(offset)
    }

    pub fn has_room(&self, bytes: usize) -> bool {
        self.next_bytes.load(Ordering::Relaxed) + bytes <= self.len_bytes
    }

    /// End of the bytes handed out so far (slabs that may hold blocks lie below it).
    pub fn carved_bytes(&self) -> usize {
        self.next_bytes.load(Ordering::Relaxed).min(self.len_bytes)
    }

    /// Start again from `start_bytes` (under exclusive access: every slab is dead).
    pub fn reset(&mut self) {
        self.next_bytes.store(self.start_bytes, Ordering::Relaxed);
    }
}

/// Page 0 of every region: the span-kind word (a masked pointer tells a region from a
/// large object by it), the page-class map and the page map.
#[repr(C)]
pub struct RegionHeader {
    pub span: SpanKind,
    _pad: [u8; PAGE_CLASS_PAD],
    /// For each page of a formatted slab, the slot of its class for a thread cache in
    /// front of the allocator (`PageClassMap`), at `PAGE_CLASS_OFFSET`.
    pub page_class: PageClassMap,
    /// For each page of a carved slab, 1 + the slab's first page; 0 while not carved.
    /// Written (Relaxed) by the carver before it formats the slab, so every thread that
    /// holds a block of the slab got it after these stores (the block's hand-off); checked
    /// lookups may race with a carve and read 0, which means "not a slab".
    page_map: [AtomicU8; PAGES_PER_REGION],
}

const _: () = assert!(std::mem::size_of::<RegionHeader>() <= MIN_PAGE_BYTES);
#[cfg(not(loom))]
const _: () = assert!(std::mem::offset_of!(RegionHeader, page_class) == PAGE_CLASS_OFFSET);

/// Bytes between the span-kind word and the page-class map in region and large headers.
pub(crate) const PAGE_CLASS_PAD: usize =
    PAGE_CLASS_OFFSET.saturating_sub(std::mem::size_of::<SpanKind>());

/// The page-class map of a region or large header: what `SegmentGeometry::slot_of` reads
/// for a block (the thread cache's free fast path; `alloc::segment` keeps the same map at
/// the same offset). For each page of a formatted slab, `class_slot(min(class, cap))`, with
/// `cap` the allocator's `class_cap`; all `cap`'s slot in a large header.
///
/// Written only by the thread formatting a slab, for that slab's pages, while no block of
/// the slab is live (before any is handed out), and read only for a live block by a
/// thread that received it after that (the hand-off orders the read after the write);
/// different slabs' entries are different memory locations. Plain `u16`s behind
/// `UnsafeCell`: the reader is the cache's free path, which loads the entry by address.
#[repr(transparent)]
pub struct PageClassMap(std::cell::UnsafeCell<[u16; PAGES_PER_REGION]>);

impl PageClassMap {
    /// Every entry `slot` (a fresh large header).
    pub fn filled(slot: u16) -> Self {
        PageClassMap(std::cell::UnsafeCell::new([slot; PAGES_PER_REGION]))
    }

    /// Set the entries of pages `first..first + pages` to `slot`.
    ///
    /// # Safety
    /// The caller formats the slab of those pages (see the type's doc): no block of it is
    /// live and no other thread writes these entries.
    pub unsafe fn set(&self, first: usize, pages: usize, slot: u16) {
        debug_assert!(first + pages <= PAGES_PER_REGION);
        let entries = self.0.get().cast::<u16>();
        for page in first..first + pages {
            // SAFETY: `page < PAGES_PER_REGION`; the caller's contract excludes other
            // accesses to these entries.
            unsafe { entries.add(page).write(slot) };
        }
    }
}

/// Pages per region; page 0 is the `RegionHeader`.
pub const PAGES_PER_REGION: usize = 128;

/// `Regions::slab_of` for the region at `base` with pages of `1 << page_shift`.
///
/// # Safety
/// As for `slab_of`; `base` is `addr`'s region.
#[inline(always)]
pub(crate) unsafe fn slab_at<'a>(base: usize, addr: usize, page_shift: u32) -> &'a Slab {
    // SAFETY: the region base holds its header; the page map entry of a carved slab's page
    // was stored before the slab was formatted (see `RegionHeader::page_map`).
    unsafe {
        let header = &*(base as *const RegionHeader);
        let page = (addr - base) >> page_shift;
        debug_assert!(page < PAGES_PER_REGION);
        // Unchecked: the block lies in its region, which is `PAGES_PER_REGION` pages (the
        // bounds check would cost the free path two instructions).
        let first = header.page_map.get_unchecked(page).load(Ordering::Relaxed) as usize - 1;
        &*((base + (first << page_shift)) as *const Slab)
    }
}

/// The smallest page (of the smallest region, 1 MiB).
pub const MIN_PAGE_BYTES: usize = 8 * 1024;

/// One region: `segment_bytes` of address space from the OS, aligned to its size, carved
/// into slabs of whole pages.
#[derive(Debug)]
pub struct Region {
    chunk: Chunk,
    bump: SlabBump,
    /// Bytes from the region's base counted in the budget: a high-water mark, only
    /// raised (by carvers, CAS) until `reset`/`Drop`.
    committed_end: AtomicUsize,
    /// `committed_end` at mapping time (the header page, the initial size, or everything
    /// with huge pages); `reset(true)` gives back what lies above it.
    mapped_committed_bytes: usize,
    /// The region mapped at creation (`initial_size_bytes`): kept by `reset(true)`.
    initial: bool,
    /// Link in `Regions::list`.
    list_link: UnsafeCell<*mut Region>,
}

// SAFETY: `list_link` is the region's one link field and only `IntrusiveStack` touches it.
unsafe impl Linked for Region {
    fn link(&self) -> &UnsafeCell<*mut Region> {
        &self.list_link
    }
}

/// The regions of one allocator. Reserved bytes count what is committed, not address
/// space: a region's header page (or its initial size) when mapped, then each carved page
/// the first time the region's carving passes it (see `Region::committed_end`); with huge
/// pages the whole region at once.
///
/// Invariants: every region ever mapped and not yet unmapped is on `list` (pushed before it
/// can become `current`); `current` is null or on `list`; regions are unmapped only under
/// `&mut self` (`reset`, `Drop`).
pub struct Regions {
    list: IntrusiveStack<Region>,
    current: AtomicPtr<Region>,
    budget: ByteBudget,
    /// A power of two: the size and alignment of every region (and large mappings).
    segment_bytes: usize,
    page_shift: u32,
    huge_pages: HugePages,
    stats: Arc<StatsCounters>,
    pool_name: Arc<str>,
}

impl Regions {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pool_name: Arc<str>,
        segment_bytes: usize,
        max_size_bytes: Option<usize>,
        huge_pages: HugePages,
        stats: Arc<StatsCounters>,
    ) -> Self {
        debug_assert!(segment_bytes.is_power_of_two());
        Regions {
            list: IntrusiveStack::new(),
            current: AtomicPtr::new(ptr::null_mut()),
            budget: ByteBudget::new(max_size_bytes),
            segment_bytes,
            page_shift: (segment_bytes / PAGES_PER_REGION).trailing_zeros(),
            huge_pages,
            stats,
            pool_name,
        }
    }

    pub fn budget(&self) -> &ByteBudget {
        &self.budget
    }

    pub fn pool_name(&self) -> &str {
        &self.pool_name
    }

    pub fn stats(&self) -> &StatsCounters {
        &self.stats
    }

    pub fn page_shift(&self) -> u32 {
        self.page_shift
    }

    /// Map the initial regions, counting `bytes` (rounded up to pages) as committed, and
    /// make the first current.
    pub fn map_initial(&self, bytes: usize) -> Result<(), PoolError> {
        let mut left = bytes.next_multiple_of(1 << self.page_shift);
        let mut first = None;
        while left > 0 {
            let commit = left.min(self.segment_bytes);
            let region = self.map_region(commit, true)?;
            first.get_or_insert(region);
            left -= commit;
        }
        if let Some(region) = first {
            self.current.store(region.as_ptr(), Ordering::Release);
        }
        Ok(())
    }

    /// A fresh slab of `pages` pages, exclusively the caller's, its pages entered in the
    /// region's page map.
    pub fn carve_slab(&self, pages: usize) -> Result<NonNull<u8>, PoolError> {
        let bytes = pages << self.page_shift;
        loop {
            let current = self.current.load(Ordering::Acquire);
            if let Some(region) = NonNull::new(current) {
                // SAFETY: regions on the list (and `current` is one) stay mapped and their
                // records alive until `&mut self` methods run.
                let region = unsafe { region.as_ref() };
                if let Some(offset) = region.bump.carve(bytes) {
                    self.commit_to(region, offset + bytes)?;
                    let first = offset >> self.page_shift;
                    // SAFETY: the region base holds its initialised header.
                    let header = unsafe { &*(region.chunk.addr() as *const RegionHeader) };
                    for entry in &header.page_map[first..first + pages] {
                        entry.store(first as u8 + 1, Ordering::Relaxed);
                    }
                    // SAFETY: `offset + bytes <= len`, so the slab is inside the chunk.
                    return Ok(unsafe { region.chunk.ptr.add(offset) });
                }
            }
            // The current region is exhausted: use any listed region with room (a region
            // kept by `reset`, or one a racing thread mapped), else map a new one. Either
            // way, only try to swing `current`; losing the race is fine, the loop retries.
            let next = match self.find_region_with_room(bytes) {
                Some(region) => region,
                None => self.map_region(1 << self.page_shift, false)?,
            };
            let _ = self.current.compare_exchange(
                current,
                next.as_ptr(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// Count the region's bytes up to `end` as committed (within the budget).
    fn commit_to(&self, region: &Region, end: usize) -> Result<(), PoolError> {
        let mut committed = region.committed_end.load(Ordering::Relaxed);
        while end > committed {
            let grow = end - committed;
            self.budget
                .try_reserve(grow)
                .map_err(|available| self.oom_with(grow, available))?;
            // Relaxed: the mark orders no memory; the CAS only decides who counts a byte.
            match region.committed_end.compare_exchange(
                committed,
                end,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.stats.on_reserve(grow);
                    return Ok(());
                }
                Err(actual) => {
                    self.budget.release(grow);
                    committed = actual;
                }
            }
        }
        Ok(())
    }

    fn find_region_with_room(&self, bytes: usize) -> Option<NonNull<Region>> {
        let mut node = self.list.head();
        while let Some(region) = NonNull::new(node) {
            // SAFETY: listed regions stay alive while `&self` is held (type invariant).
            if unsafe { region.as_ref() }.bump.has_room(bytes) {
                return Some(region);
            }
            // SAFETY: `region` was reached from the list head and is alive.
            node = unsafe { IntrusiveStack::next(region) };
        }
        None
    }

    /// Map a region with its first `commit_bytes` (at least the header page; everything
    /// with huge pages) counted, write its header and put it on the list.
    fn map_region(&self, commit_bytes: usize, initial: bool) -> Result<NonNull<Region>, PoolError> {
        let segment = self.segment_bytes;
        let page = 1 << self.page_shift;
        let commit = if self.huge_pages == HugePages::Off {
            commit_bytes.clamp(page, segment)
        } else {
            segment
        };
        self.budget
            .try_reserve(commit)
            .map_err(|available| self.oom_with(commit, available))?;
        let chunk = match OsChunks::new(self.huge_pages).alloc_chunk(segment, segment) {
            Some(chunk) if chunk.len == segment => chunk,
            other => {
                if let Some(chunk) = other {
                    // SAFETY: just mapped by this source; nothing uses it.
                    unsafe { OsChunks::new(self.huge_pages).free_chunk(chunk) };
                }
                self.budget.release(commit);
                return Err(self.oom_with(segment, 0));
            }
        };
        self.stats.on_reserve(commit);
        // SAFETY: page 0 of a fresh mapping (zeroed: every page-map entry reads 0), aligned
        // to the segment size, large enough for the header (const assertion above).
        unsafe {
            let header = chunk.addr() as *mut RegionHeader;
            (*header).span.kind.store(SPAN_REGION, Ordering::Relaxed);
        }
        let region = Box::new(Region {
            bump: SlabBump::new(page, segment),
            chunk,
            committed_end: AtomicUsize::new(commit),
            mapped_committed_bytes: commit,
            initial,
            list_link: UnsafeCell::new(ptr::null_mut()),
        });
        let region = NonNull::from(Box::leak(region));
        // SAFETY: the record is leaked (freed only by `&mut self` methods after it is taken
        // off the list) and on no stack yet.
        unsafe { self.list.push(region) };
        Ok(region)
    }

    /// Unmap a region and release what it counted.
    ///
    /// # Safety
    /// The region is off the list and no byte of it is used; the record is not used after.
    unsafe fn unmap_region(&self, region: NonNull<Region>) {
        // SAFETY: caller's contract; the record was leaked from a `Box` by `map_region`.
        unsafe {
            let record = Box::from_raw(region.as_ptr());
            let committed = record.committed_end.load(Ordering::Relaxed);
            // Regions are unmapped only by `reset` and `Drop`: the chunk may serve the
            // next pool.
            OsChunks::new(self.huge_pages).retire_chunk(record.chunk);
            self.budget.release(committed);
            self.stats.on_release(committed);
        }
    }

    /// The slab holding `addr` (a live block of a slab of this allocator).
    ///
    /// # Safety
    /// `addr` is inside a carved slab of one of our regions.
    #[inline]
    pub unsafe fn slab_of<'a>(&self, addr: usize) -> &'a Slab {
        // SAFETY: forwarded contract.
        unsafe { slab_at(addr & !(self.segment_bytes - 1), addr, self.page_shift) }
    }

    /// Enter a slab's class slot (`PageClassMap`) for its `pages` pages, starting at `base`.
    ///
    /// # Safety
    /// `base` is a carved slab of one of our regions that the caller is formatting (no
    /// block of it is live, nobody else writes its entries).
    pub unsafe fn set_page_class(&self, base: usize, pages: usize, slot: u16) {
        let region = base & !(self.segment_bytes - 1);
        // SAFETY: the region base holds its header; the caller's contract is `set`'s.
        unsafe {
            let header = &*(region as *const RegionHeader);
            header
                .page_class
                .set((base - region) >> self.page_shift, pages, slot);
        }
    }

    /// Reserve and map `len` bytes aligned to `align` (used for regions and large objects).
    pub fn map_chunk(&self, len: usize, align: usize) -> Result<Chunk, PoolError> {
        self.budget
            .try_reserve(len)
            .map_err(|available| self.oom_with(len, available))?;
        let Some(chunk) = OsChunks::new(self.huge_pages).alloc_chunk(len, align) else {
            self.budget.release(len);
            return Err(self.oom_with(len, 0));
        };
        // The source may round up (pages, huge pages): the extra must fit the budget too.
        if chunk.len > len {
            if let Err(available) = self.budget.try_reserve(chunk.len - len) {
                self.budget.release(len);
                // SAFETY: the chunk was just mapped by this source and nothing uses it.
                unsafe { OsChunks::new(self.huge_pages).free_chunk(chunk) };
                return Err(self.oom_with(len, available));
            }
        }
        self.stats.on_reserve(chunk.len);
        Ok(chunk)
    }

    /// Unmap a chunk from `map_chunk` and release its budget.
    ///
    /// # Safety
    /// `chunk` came from `map_chunk` of this `Regions`, unchanged, and no byte of it is used.
    pub unsafe fn unmap_chunk(&self, chunk: Chunk) {
        // SAFETY: forwarded from the caller; `OsChunks` holds no per-source state that
        // `free_chunk` depends on (it is a plain `munmap`).
        unsafe { OsChunks::new(self.huge_pages).free_chunk(chunk) };
        self.budget.release(chunk.len);
        self.stats.on_release(chunk.len);
    }

    fn oom_with(&self, requested_bytes: usize, available_bytes: usize) -> PoolError {
        PoolError::oom(
            &self.pool_name,
            requested_bytes,
            available_bytes,
            self.budget.limit_bytes(),
        )
    }

    /// The base of the carved slab holding `addr`, if `addr` is inside one; reads only
    /// region records and page maps, never slab memory.
    pub fn carved_slab_of(&self, addr: usize) -> Option<usize> {
        let mut node = self.list.head();
        while let Some(region) = NonNull::new(node) {
            // SAFETY: listed regions stay alive while `&self` is held (type invariant).
            let r = unsafe { region.as_ref() };
            let base = r.chunk.addr();
            if addr >= base && addr - base < r.bump.carved_bytes() {
                // SAFETY: the region base holds its header (atomics only are read).
                let header = unsafe { &*(base as *const RegionHeader) };
                let entry =
                    header.page_map[(addr - base) >> self.page_shift].load(Ordering::Relaxed);
                return (entry != 0).then(|| base + ((entry as usize - 1) << self.page_shift));
            }
            // SAFETY: `region` was reached from the list head and is alive.
            node = unsafe { IntrusiveStack::next(region) };
        }
        None
    }

    /// Forget every slab. With `return_chunks`, unmap every region but the initial ones,
    /// and give the initial ones' pages above their initial size back to the OS.
    pub fn reset(&mut self, return_chunks: bool) {
        let mut node = self.list.replace(ptr::null_mut());
        let mut kept: Vec<NonNull<Region>> = Vec::new();
        while let Some(region) = NonNull::new(node) {
            // SAFETY: `&mut self`: nobody else can reach the list; the node is alive.
            node = unsafe { IntrusiveStack::next(region) };
            // SAFETY: as above; the record was leaked from a `Box` by `map_region`.
            let record = unsafe { &mut *region.as_ptr() };
            if return_chunks && !record.initial {
                // SAFETY: every slab is dead after a reset (the caller's contract on
                // `reset`), and the record is off the list.
                unsafe { self.unmap_region(region) };
                continue;
            }
            record.bump.reset();
            // Every page-map entry goes back to "not carved".
            // SAFETY: the region base holds its header; exclusive access.
            let header = unsafe { &*(record.chunk.addr() as *const RegionHeader) };
            for entry in &header.page_map {
                entry.store(0, Ordering::Relaxed);
            }
            let committed = record.committed_end.load(Ordering::Relaxed);
            let keep = record.mapped_committed_bytes;
            if return_chunks && committed > keep {
                // SAFETY: inside the region, unused after the reset.
                let done = unsafe {
                    OsChunks::new(self.huge_pages)
                        .decommit(record.chunk.addr() + keep, committed - keep)
                };
                if done {
                    record.committed_end.store(keep, Ordering::Relaxed);
                    self.budget.release(committed - keep);
                    self.stats.on_release(committed - keep);
                }
            }
            kept.push(region);
        }
        // Re-push oldest first so the list keeps its order (newest on top).
        for region in kept.iter().rev() {
            // SAFETY: alive, and off every stack since the `replace` above.
            unsafe { self.list.push(*region) };
        }
        let current = kept
            .iter()
            // SAFETY: kept records are alive.
            .find(|r| unsafe { r.as_ref() }.initial)
            .or(kept.first())
            .map_or(ptr::null_mut(), |r| r.as_ptr());
        self.current.store(current, Ordering::Release);
    }
}

impl Drop for Regions {
    fn drop(&mut self) {
        let mut node = self.list.replace(ptr::null_mut());
        while let Some(region) = NonNull::new(node) {
            // SAFETY: `&mut self` in drop: the list is ours alone and every slab is dead
            // (the allocator is being dropped).
            unsafe {
                node = IntrusiveStack::next(region);
                self.unmap_region(region);
            }
        }
    }
}
