//! Large objects: requests above the largest slab class (or aligned beyond what slabs
//! give) get a mapping of their own, aligned to the region size, with a header at its base
//! so the same `ptr & !(segment_bytes - 1)` that finds a region header finds it (the first
//! word tells them apart).
//!
//! Live large objects are registered in a slot table (a push-only list of slot blocks;
//! slots are claimed with a CAS and cleared with a store), so `block_state` can recognise
//! one without reading memory that might be unmapped, and `reset`/`Drop` can free them all.

use super::region::{PageClassMap, Regions, PAGE_CLASS_PAD};
use super::slab::{SpanKind, SPAN_LARGE};
use super::stack::{IntrusiveStack, Linked};
use crate::alloc::fixed::with_request;
use crate::alloc::{large_cache_limit, large_reuse_fits, Chunk};
use crate::error::PoolError;
use crate::sync::{AtomicUsize, Ordering, UnsafeCell};
use std::mem::size_of;
use std::ptr::{self, NonNull};

/// Bytes before the block in a large mapping when the alignment asks for less (the
/// header, page-class map included).
const LARGE_HEADER_BYTES: usize = 512;
const SLOTS_PER_BLOCK: usize = 64;
/// A slot being filled in (claimed, block address not yet published).
const CLAIMED: usize = 1;

#[repr(C)]
struct LargeHeader {
    span: SpanKind,
    _pad: [u8; PAGE_CLASS_PAD],
    /// All the class cap's slot: a thread cache's free path reads "no class" here
    /// (`PageClassMap`), at the offset of the region header's map.
    page_class: PageClassMap,
    chunk: Chunk,
    usable_bytes: usize,
    slot: *const LargeSlot,
}

#[cfg(not(loom))]
const _: () = assert!(
    std::mem::offset_of!(LargeHeader, page_class) == crate::alloc::segment::PAGE_CLASS_OFFSET
);

/// Invariant: `block` is 0 (free), `CLAIMED`, or the address of a live large block whose
/// usable size is `usable_bytes` (stored before `block` is published with Release).
struct LargeSlot {
    block: AtomicUsize,
    usable_bytes: AtomicUsize,
}

struct SlotBlock {
    slots: [LargeSlot; SLOTS_PER_BLOCK],
    link: UnsafeCell<*mut SlotBlock>,
}

// SAFETY: `link` is the slot block's only stack link and only the table uses it.
unsafe impl Linked for SlotBlock {
    fn link(&self) -> &UnsafeCell<*mut SlotBlock> {
        &self.link
    }
}

impl SlotBlock {
    fn new() -> Box<SlotBlock> {
        Box::new(SlotBlock {
            slots: std::array::from_fn(|_| LargeSlot {
                block: AtomicUsize::new(0),
                usable_bytes: AtomicUsize::new(0),
            }),
            link: UnsafeCell::new(ptr::null_mut()),
        })
    }
}

/// Freed mappings kept for reuse (see `LargeObjects::cache`).
const CACHE_SLOTS: usize = 32;
/// The page size the cache's length encoding counts in.
const CACHE_PAGE_BYTES: usize = 4096;

/// The large objects of one allocator.
pub struct LargeObjects {
    /// Push-only while the allocator lives; freed in `Drop`.
    table: IntrusiveStack<SlotBlock>,
    /// Mappings of freed large objects, kept for the next ones: a large object otherwise
    /// costs an `mmap` and two `munmap`s (the alignment trim) to make and one `munmap` to
    /// free. Each slot is 0 or a mapping's base (segment-aligned) plus its length in
    /// 4 KiB pages (below `segment_bytes` pages, so the count fits below the alignment):
    /// one word, taken with a compare-exchange, so two threads never take the same
    /// mapping. At most `large_cache_limit` bytes in all (`cached_bytes`: two segments,
    /// or a quarter of `live_bytes`); a mapping serves a request that `large_reuse_fits`.
    /// Still counted as reserved. Nothing is cached under a size limit
    /// (`max_size_bytes`).
    cache: [AtomicUsize; CACHE_SLOTS],
    cached_bytes: AtomicUsize,
    /// Where the next freed mapping goes (modulo `CACHE_SLOTS`): the slots form a ring,
    /// oldest mapping next.
    cursor: AtomicUsize,
    /// Bytes of the mappings of the live large objects.
    live_bytes: AtomicUsize,
}

impl LargeObjects {
    pub fn new() -> Self {
        LargeObjects {
            table: IntrusiveStack::new(),
            cache: std::array::from_fn(|_| AtomicUsize::new(0)),
            cached_bytes: AtomicUsize::new(0),
            cursor: AtomicUsize::new(0),
            live_bytes: AtomicUsize::new(0),
        }
    }

    /// Bytes of the mappings in the cache now.
    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes.load(Ordering::Relaxed)
    }

    /// A cached mapping that `large_reuse_fits` `want` bytes, if one is there (the first
    /// found: the slots are few and a program's large sizes seldom many).
    fn take_cached(&self, want: usize, segment_bytes: usize) -> Option<Chunk> {
        if self.cached_bytes.load(Ordering::Relaxed) == 0 {
            return None;
        }
        for slot in &self.cache {
            let word = slot.load(Ordering::Relaxed);
            if word == 0 {
                continue;
            }
            let len = (word & (segment_bytes - 1)) * CACHE_PAGE_BYTES;
            if !large_reuse_fits(len, want, segment_bytes) {
                continue;
            }
            // Acquire: pairs with the Release that cached it (the mapping's last user's
            // writes happen-before the new user's).
            if slot
                .compare_exchange(word, 0, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                self.cached_bytes.fetch_sub(len, Ordering::Relaxed);
                let base = word & !(segment_bytes - 1);
                // SAFETY: a cached word holds a mapping's (non-zero, aligned) base.
                let ptr = unsafe { NonNull::new_unchecked(base as *mut u8) };
                return Some(Chunk { ptr, len });
            }
        }
        None
    }

    /// Keep a dead mapping for reuse, in the slot after the last one filled (a ring:
    /// that slot holds the oldest mapping, which is unmapped to make room, as are the
    /// next oldest while the cache is over its byte limit). The newest freed mapping is
    /// the likeliest to be asked for again: a program's next iteration allocates what its
    /// last one freed. `false` when the mapping alone exceeds the limit or does not fit
    /// the encoding (then the caller unmaps it).
    fn put_cached(&self, regions: &Regions, chunk: Chunk, segment_bytes: usize) -> bool {
        let base = chunk.ptr.as_ptr() as usize;
        let pages = chunk.len / CACHE_PAGE_BYTES;
        if pages >= segment_bytes
            || !chunk.len.is_multiple_of(CACHE_PAGE_BYTES)
            || base & (segment_bytes - 1) != 0
        {
            return false;
        }
        let limit = large_cache_limit(self.live_bytes.load(Ordering::Relaxed), 2 * segment_bytes);
        if chunk.len > limit {
            return false;
        }
        let at = self.cursor.fetch_add(1, Ordering::Relaxed) % CACHE_SLOTS;
        self.cached_bytes.fetch_add(chunk.len, Ordering::Relaxed);
        // Release: this thread's last writes to the mapping happen-before its reuse;
        // Acquire: the evicted mapping's last writes happen-before its unmap.
        let evicted = self.cache[at].swap(base | pages, Ordering::AcqRel);
        self.evict(regions, evicted, segment_bytes);
        for step in 1..CACHE_SLOTS {
            if self.cached_bytes.load(Ordering::Relaxed) <= limit {
                break;
            }
            let word = self.cache[(at + step) % CACHE_SLOTS].swap(0, Ordering::Acquire);
            self.evict(regions, word, segment_bytes);
        }
        true
    }

    /// Unmap the mapping of a cache word taken out of its slot (nothing for 0).
    fn evict(&self, regions: &Regions, word: usize, segment_bytes: usize) {
        if word == 0 {
            return;
        }
        let len = (word & (segment_bytes - 1)) * CACHE_PAGE_BYTES;
        self.cached_bytes.fetch_sub(len, Ordering::Relaxed);
        let chunk = Chunk {
            // SAFETY: a cached word holds a mapping's (non-zero) base.
            ptr: unsafe { NonNull::new_unchecked((word & !(segment_bytes - 1)) as *mut u8) },
            len,
        };
        // SAFETY: a cached mapping came from `regions.map_chunk` and holds no live object;
        // taking its word out of the slot made it this call's alone.
        unsafe { regions.unmap_chunk(chunk) };
    }

    /// Unmap every cached mapping.
    fn release_cache(&self, regions: &Regions, segment_bytes: usize) {
        for slot in &self.cache {
            self.evict(regions, slot.swap(0, Ordering::Acquire), segment_bytes);
        }
    }

    /// A block of `size` bytes aligned to `align` (at most `segment_bytes / 2`).
    pub fn allocate(
        &self,
        regions: &Regions,
        segment_bytes: usize,
        size: usize,
        align: usize,
        no_class_slot: u16,
    ) -> Result<NonNull<u8>, PoolError> {
        debug_assert!(align <= segment_bytes / 2);
        let offset = LARGE_HEADER_BYTES.max(align);
        let want = size.checked_add(offset).ok_or_else(|| {
            PoolError::oom(regions.pool_name(), size, 0, regions.budget().limit_bytes())
        })?;
        let mapped = match self.take_cached(want, segment_bytes) {
            Some(chunk) => Ok(chunk),
            None => regions.map_chunk(want, segment_bytes).or_else(|e| {
                // Cached mappings must not make the pool fail where it would not without
                // them: give them back and ask once more.
                if self.cached_bytes.load(Ordering::Relaxed) == 0 {
                    return Err(e);
                }
                self.release_cache(regions, segment_bytes);
                regions.map_chunk(want, segment_bytes)
            }),
        };
        // Report the caller's request, not the mapping size.
        let chunk = mapped.map_err(|e| with_request(e, size))?;
        let usable_bytes = chunk.len - offset;
        self.live_bytes.fetch_add(chunk.len, Ordering::Relaxed);
        let slot = self.claim_slot();
        // SAFETY: the chunk is a fresh mapping of `chunk.len >= offset + size` bytes,
        // segment-aligned; the header fits before `offset`.
        let block = unsafe {
            chunk.ptr.as_ptr().cast::<LargeHeader>().write(LargeHeader {
                span: SpanKind {
                    kind: AtomicUsize::new(SPAN_LARGE),
                },
                _pad: [0; PAGE_CLASS_PAD],
                page_class: PageClassMap::filled(no_class_slot),
                chunk,
                usable_bytes,
                slot,
            });
            chunk.ptr.add(offset)
        };
        // SAFETY: slots live as long as the table (freed only in `Drop`).
        let slot = unsafe { &*slot };
        slot.usable_bytes.store(usable_bytes, Ordering::Relaxed);
        slot.block.store(block.as_ptr() as usize, Ordering::Release);
        regions.stats().on_large_object();
        Ok(block)
    }

    fn claim_slot(&self) -> *const LargeSlot {
        let mut node = self.table.head();
        while let Some(slot_block) = NonNull::new(node) {
            // SAFETY: slot blocks on the table live until `Drop`.
            let slot_block = unsafe { slot_block.as_ref() };
            for slot in &slot_block.slots {
                if slot.block.load(Ordering::Relaxed) == 0
                    && slot
                        .block
                        .compare_exchange(0, CLAIMED, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    return slot;
                }
            }
            // SAFETY: reached from the head; alive.
            node = unsafe { IntrusiveStack::next(NonNull::from(slot_block)) };
        }
        let fresh = SlotBlock::new();
        fresh.slots[0].block.store(CLAIMED, Ordering::Relaxed);
        let fresh = NonNull::from(Box::leak(fresh));
        // SAFETY: leaked until `Drop`; on no stack yet.
        unsafe { self.table.push(fresh) };
        // SAFETY: as above.
        unsafe { &fresh.as_ref().slots[0] }
    }

    /// The header of the large object whose block starts at `block`.
    ///
    /// # Safety
    /// `block` is a live large block of this allocator.
    #[inline(always)]
    unsafe fn header<'a>(block: NonNull<u8>, segment_bytes: usize) -> &'a LargeHeader {
        // SAFETY: large blocks start within the first `segment_bytes / 2` of their mapping,
        // whose base is segment-aligned and holds the header (contract).
        unsafe { &*((block.as_ptr() as usize & !(segment_bytes - 1)) as *const LargeHeader) }
    }

    /// # Safety
    /// `block` is a live large block of this allocator.
    #[inline(always)]
    pub unsafe fn usable_size(block: NonNull<u8>, segment_bytes: usize) -> usize {
        // SAFETY: forwarded.
        unsafe { Self::header(block, segment_bytes) }.usable_bytes
    }

    /// Free a large object (its mapping cached or unmapped); returns its usable size.
    ///
    /// # Safety
    /// `block` is a live large block of this allocator, not used after this call.
    pub unsafe fn free(
        &self,
        regions: &Regions,
        block: NonNull<u8>,
        segment_bytes: usize,
    ) -> usize {
        // SAFETY: forwarded.
        unsafe { self.unmap(regions, block, segment_bytes, true) }
    }

    /// Checked free: unmap the large object starting at `addr` if one is live, deciding
    /// by a compare-exchange on its slot, so of two racing frees exactly one wins. Reads
    /// nothing but the slot table unless it wins.
    pub fn free_checked(
        &self,
        regions: &Regions,
        addr: usize,
        segment_bytes: usize,
    ) -> Option<usize> {
        let slot = self.slot_of(addr)?;
        slot.block
            .compare_exchange(addr, 0, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        let block = NonNull::new(addr as *mut u8)?;
        // SAFETY: the slot held `addr`, so it was a live large block; winning the CAS made
        // this call its one freer.
        Some(unsafe { self.unmap(regions, block, segment_bytes, false) })
    }

    /// # Safety
    /// `block` is a live large block of this allocator whose freeing is this caller's;
    /// `clear_slot` unless the caller already cleared it.
    unsafe fn unmap(
        &self,
        regions: &Regions,
        block: NonNull<u8>,
        segment_bytes: usize,
        clear_slot: bool,
    ) -> usize {
        // SAFETY: forwarded; the header is read before the unmap.
        let (chunk, usable, slot) = unsafe {
            let header = Self::header(block, segment_bytes);
            (header.chunk, header.usable_bytes, &*header.slot)
        };
        if clear_slot {
            slot.block.store(0, Ordering::Release);
        }
        self.live_bytes.fetch_sub(chunk.len, Ordering::Relaxed);
        // Under a size limit a cached mapping would count against it and could make a
        // later region fail where it would not without the cache: none kept then.
        let unlimited = regions.budget().limit_bytes() == usize::MAX;
        if !(unlimited && self.put_cached(regions, chunk, segment_bytes)) {
            // SAFETY: the mapping came from `regions.map_chunk` and its one block is dead.
            unsafe { regions.unmap_chunk(chunk) };
        }
        usable
    }

    fn slot_of(&self, addr: usize) -> Option<&LargeSlot> {
        let mut node = self.table.head();
        while let Some(slot_block) = NonNull::new(node) {
            // SAFETY: slot blocks on the table live until `Drop`.
            let slot_block = unsafe { slot_block.as_ref() };
            if let Some(slot) = slot_block
                .slots
                .iter()
                .find(|slot| slot.block.load(Ordering::Acquire) == addr)
            {
                return Some(slot);
            }
            // SAFETY: reached from the head; alive.
            node = unsafe { IntrusiveStack::next(NonNull::from(slot_block)) };
        }
        None
    }

    /// The usable size of the live large block starting at `addr`, if there is one.
    /// Reads only the slot table.
    pub fn find(&self, addr: usize) -> Option<usize> {
        let slot = self.slot_of(addr)?;
        let usable = slot.usable_bytes.load(Ordering::Relaxed);
        // The slot may have been freed and reused meanwhile: trust `usable` only if the
        // slot still holds `addr`.
        (slot.block.load(Ordering::Acquire) == addr).then_some(usable)
    }

    /// Unmap every live large object and every cached mapping (under exclusive access:
    /// `reset`, `Drop`).
    pub fn free_all(&mut self, regions: &Regions, segment_bytes: usize) {
        let mut node = self.table.head();
        while let Some(slot_block) = NonNull::new(node) {
            // SAFETY: `&mut self`: nobody else uses the table; slot blocks are alive.
            let slot_block = unsafe { slot_block.as_ref() };
            for slot in &slot_block.slots {
                if let Some(block) = NonNull::new(slot.block.load(Ordering::Acquire) as *mut u8) {
                    // SAFETY: a published slot holds a live large block (invariant; no
                    // CLAIMED slot survives an `allocate` call and we are exclusive).
                    unsafe { self.free(regions, block, segment_bytes) };
                }
            }
            // SAFETY: reached from the head; alive.
            node = unsafe { IntrusiveStack::next(NonNull::from(slot_block)) };
        }
        self.release_cache(regions, segment_bytes);
    }
}

impl Drop for LargeObjects {
    fn drop(&mut self) {
        let mut node = self.table.replace(ptr::null_mut());
        while let Some(slot_block) = NonNull::new(node) {
            // SAFETY: `&mut self`; every slot block was leaked from a `Box` by `claim_slot`.
            unsafe {
                node = IntrusiveStack::next(slot_block);
                drop(Box::from_raw(slot_block.as_ptr()));
            }
        }
    }
}

const _: () = assert!(size_of::<LargeHeader>() <= LARGE_HEADER_BYTES);
