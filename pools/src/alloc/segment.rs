//! Segments, pages and spans: the memory layer under the fixed-size and size-classed
//! allocators (mimalloc-style).
//!
//! A *segment* is `segment_bytes` of address space (a power of two, aligned to itself) cut
//! into [`PAGES_PER_SEGMENT`] pages. Page 0 holds the [`SegmentHeader`]: the free-page and
//! committed-page bitmaps, a *page map* (for every page of a span, the span's first page)
//! and one [`SpanHeader`] per possible span start. A *span* is a run of pages owned by one
//! size class; its blocks start at its first byte. A class with three live blocks costs
//! one span (one page for every class up to a page), not a whole segment.
//!
//! ```text
//! segment (segment_bytes, aligned to segment_bytes; 128 pages of segment_bytes / 128)
//! +----------------------------+--------+--------+-----------------+--------+------
//! | page 0: SegmentHeader      | span   | span   | span (3 pages)  | free   | ...
//! |  free/committed bitmaps    | cls 4  | cls 9  | class 27        | page   |
//! |  first_page[128] page map -+-> 1    | 2      | 3    3    3    |        |
//! |  spans[128]: SpanHeader    | blocks | blocks | blocks ...  [bm]|        |
//! +----------------------------+--------+--------+-----------------+--------+------
//!                                                     [bm] = live bitmap (checked only)
//! large object, align < segment_bytes:        large object, align >= segment_bytes:
//! | LargeHeader | pad | block ......... |     | pad | LargeHeader | pad | block ..... |
//! ^ chunk base, segment-aligned               ^ base   ^ block - segment_bytes
//! ```
//!
//! [`header_of`](SegmentHeap::header_of) is O(1): `base = block & !(segment_bytes - 1)`.
//! A block never starts at a page segment's base (page 0 is the header), so `block ==
//! base` means a large object aligned to at least `segment_bytes`, whose header sits one
//! segment below. Otherwise the first word at `base` tells a page segment (then
//! `spans[first_page[(block - base) / page_bytes]]`) from a large object's header.
//! The thread cache's free fast path needs only the class, and no branch: each header
//! also keeps a page-class map at the same offset (a large object's all `class_cap`), read
//! at `(block - 1) & !(segment_bytes - 1)` ([`SegmentGeometry::slot_of`]). Its entries are
//! the classes' slots (`class_slot`): where the class's magazine lies in a thread cache's
//! rack, so the free adds the entry to the rack's address as it is.
//!
//! Taking a span looks for the lowest run of free pages in the segment last used, then in
//! the others (a few shifts of a 128-bit map per segment; this is the refill slow path,
//! paid once per span of blocks), and maps a new segment only when none has room.
//!
//! Reserved bytes count what is committed, not the address space: a segment is mapped
//! without being counted, and each page is counted when a span first takes it (the pages
//! of `initial_size_bytes` are counted at creation; with huge pages every page at once,
//! as the kernel backs them whole). A page stays counted until its segment is unmapped,
//! or, under `ReturnPolicy::WhenEmpty`, until its span empties and the page is handed
//! back with `MADV_DONTNEED` (`reset(true)` does the same for every page beyond the
//! initial ones). So `reserved_bytes` is an upper bound of the memory touched.
//!
//! The heap never uses the Rust global heap after construction: its lists are intrusive
//! (through the headers), so a pool on it can serve as the global allocator.

use crate::alloc::{large_cache_limit, large_reuse_fits, Chunk, Upstream};
use crate::error::PoolError;
use std::mem::size_of;
use std::ptr::{addr_of, addr_of_mut, null_mut, NonNull};

/// `SegmentHeader::magic`: the first word of every page segment.
const SEGMENT_MAGIC: u32 = 0x5E67_4E47;
/// `SpanHeader::magic` of every span in use and of every large object's header.
const SPAN_MAGIC: u32 = 0x5A4E_4D47;
/// `SpanHeader::owner` of a large object's header.
pub(crate) const OWNER_LARGE: u32 = u32::MAX - 1;

/// Pages per segment; page 0 is the header. The page bitmaps are one `u128` each.
pub const PAGES_PER_SEGMENT: usize = 128;
/// Every page but page 0.
const ALL_SPAN_PAGES: u128 = !1;

/// Smallest segment (8 KiB pages).
pub const MIN_SEGMENT_BYTES: usize = 1024 * 1024;

/// Alignment cap for blocks inside spans: a power-of-two class is naturally aligned up to
/// this; larger alignments take the large-object path.
pub const MAX_IN_SEGMENT_ALIGN: usize = 4096;

/// Bytes before the block of a large object aligned below `segment_bytes`.
const LARGE_HEADER_BYTES: usize = 384;

/// `page_class` entry of a segment's header page (which holds no block).
pub(crate) const NO_CLASS: u16 = u16::MAX;

/// The page-class map's unit: a class's entry is `(class + 1) * CLASS_SLOT_BYTES`
/// (`class_slot`), the byte offset of its magazine in a thread cache's rack (a 64-byte
/// head, then one 64-byte magazine per class: `thread_cache/rack.rs`).
pub(crate) const CLASS_SLOT_BYTES: usize = 64;

/// The largest class cap whose slot fits a map entry (and the default cap).
pub(crate) const MAX_CLASS_CAP: u16 = (u16::MAX as usize / CLASS_SLOT_BYTES - 1) as u16;

/// The page-class map's entry for `class` (at most `MAX_CLASS_CAP`).
#[inline(always)]
pub(crate) const fn class_slot(class: u16) -> u16 {
    (class + 1) * CLASS_SLOT_BYTES as u16
}

/// A span's description (in its segment's header), or the first part of a large object's
/// header. Invariant: while `owner` is a class index, `[span_base, span_base +
/// block_capacity * block_stride_bytes)` are the span's blocks, all inside the span.
#[repr(C)]
pub(crate) struct SpanHeader {
    magic: u32,
    /// `OWNER_LARGE`, or the index of the class owning the blocks.
    pub(crate) owner: u32,
    pub(crate) block_stride_bytes: usize,
    pub(crate) block_capacity: usize,
    /// Live blocks of this span; maintained only by classes that track (see
    /// `FixedClass::tracks_spans`).
    pub(crate) live_blocks: usize,
    /// Address of block 0 (the span's first page).
    pub(crate) span_base: usize,
    /// Offset from `span_base` of the live bitmap (`ceil(capacity / 64)` words after the
    /// blocks); 0 when the class keeps none.
    bitmap_offset: usize,
    span_pages: usize,
}

/// A large object's header, at its chunk's segment-aligned base (or one segment below an
/// over-aligned block).
#[repr(C)]
struct LargeHeader {
    span: SpanHeader,
    chunk_base: usize,
    chunk_len: usize,
    block_addr: usize,
    /// All the slot of the heap's `class_cap`, at the offset of
    /// `SegmentHeader::page_class`, so that `SegmentGeometry::slot_of` reads "no class"
    /// here without first telling a large object from a segment.
    page_class: [u16; PAGES_PER_SEGMENT],
    /// The large-object list (doubly linked).
    next: *mut LargeHeader,
    prev: *mut LargeHeader,
}

/// Page 0 of every segment.
#[repr(C)]
struct SegmentHeader {
    magic: u32,
    /// Mapped at creation for `initial_size_bytes`: kept by `reset(true)`.
    initial: bool,
    /// Bit `p` set iff page `p` is in no span. Bit 0 is never set.
    free_pages: u128,
    /// Bit `p` set iff page `p` is counted in the upstream's reserved bytes. Bit 0 is
    /// always set (the header is touched).
    committed_pages: u128,
    /// The pages counted when the segment was mapped; `reset(true)` gives the others back.
    initial_committed_pages: u128,
    /// All segments, doubly linked.
    next: *mut SegmentHeader,
    prev: *mut SegmentHeader,
    /// For every page `p` of a span: the slot (`class_slot`) of the class owning the
    /// span, capped at the heap's `class_cap`. Written by `take_span` before any block of
    /// the span is handed out; `NO_CLASS` for page 0; meaningless for free pages. At the
    /// same offset as `LargeHeader::page_class`.
    page_class: [u16; PAGES_PER_SEGMENT],
    /// For every page `p` of a span: the span's first page. Meaningless for free pages.
    first_page: [u8; PAGES_PER_SEGMENT],
    /// `spans[p]` describes the span starting at page `p`.
    spans: [SpanHeader; PAGES_PER_SEGMENT],
}

const _: () = assert!(size_of::<SegmentHeader>() <= MIN_SEGMENT_BYTES / PAGES_PER_SEGMENT);
const _: () = assert!(size_of::<LargeHeader>() <= LARGE_HEADER_BYTES);
/// Where `slot_of` reads the page-class map, in a segment's header and a large object's
/// (and in the lock-free allocator's region and large headers, which keep one there too).
pub(crate) const PAGE_CLASS_OFFSET: usize = std::mem::offset_of!(SegmentHeader, page_class);
const _: () = assert!(PAGE_CLASS_OFFSET == std::mem::offset_of!(LargeHeader, page_class));

impl SpanHeader {
    /// The live-block bitmap words.
    fn bitmap(&mut self) -> *mut u64 {
        debug_assert!(self.bitmap_offset != 0);
        (self.span_base + self.bitmap_offset) as *mut u64
    }

    /// Set (`live`) or clear the bitmap bit of block `index`; returns the old bit.
    ///
    /// # Safety
    /// `self` is a span owned by a checked class and `index < block_capacity`.
    pub(crate) unsafe fn swap_live_bit(&mut self, index: usize, live: bool) -> bool {
        debug_assert!(index < self.block_capacity);
        // SAFETY: index < capacity, and the bitmap holds ceil(capacity / 64) words inside
        // the span (`class_layout` leaves room for it after the blocks).
        let word = unsafe { &mut *self.bitmap().add(index / 64) };
        let bit = 1u64 << (index % 64);
        let old = *word & bit != 0;
        if live {
            *word |= bit;
        } else {
            *word &= !bit;
        }
        old
    }

    /// # Safety
    /// As for `swap_live_bit`.
    unsafe fn live_bit(&mut self, index: usize) -> bool {
        // SAFETY: forwarded contract: index < capacity, bitmap is in bounds.
        unsafe { *self.bitmap().add(index / 64) & (1u64 << (index % 64)) != 0 }
    }

    /// Index of the block at `addr` if `addr` is exactly a block start of this span.
    pub(crate) fn block_index(&self, addr: usize) -> Option<usize> {
        let offset = addr.checked_sub(self.span_base)?;
        let index = offset / self.block_stride_bytes;
        (offset % self.block_stride_bytes == 0 && index < self.block_capacity).then_some(index)
    }
}

/// Where an address lies, for checked lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Region {
    /// Not in any chunk of this heap.
    Foreign,
    /// In a segment but not inside a class-owned block area (the header page, a free
    /// page, the unusable tail of a span).
    Unowned,
    /// Inside the block area of a class-owned span.
    Span(NonNull<SpanHeader>),
    /// Inside a large object's chunk: the header and the usable bytes from the block.
    Large {
        block_addr: usize,
        usable_bytes: usize,
    },
}

/// Per-class layout of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClassLayout {
    pub(crate) block_stride_bytes: usize,
    pub(crate) block_capacity: usize,
    /// Alignment every block has: `min(lowest bit of stride, 4 KiB)`.
    pub(crate) block_align: usize,
    pub(crate) span_pages: usize,
    /// Offset of the live bitmap from the span base; 0 without one.
    bitmap_offset: usize,
}

/// The two shifts [`SegmentHeap::header_of`] needs, copied out of a heap so that a live
/// block's usable size can be read without the heap and its lock (the thread cache's free
/// path, `thread_cache::BlockSizer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentGeometry {
    segment_shift: u32,
    page_shift: u32,
    /// `!(segment_bytes - 1)`: `slot_of` masks with it directly.
    segment_mask: usize,
    /// The heap's `class_cap`.
    class_cap: u16,
    /// The map is a lock-free allocator's (`lockfree::LockFreeAllocator::geometry`), not a
    /// segment heap's: only the debug check of `slot_of` reads its spans differently.
    lock_free: bool,
}

impl SegmentGeometry {
    /// The heap's `class_cap` when this was taken: `slot_of` answers at most its slot.
    pub(crate) fn class_cap(self) -> u16 {
        self.class_cap
    }

    /// The geometry of a lock-free allocator's regions (`segment_bytes` each, pages of
    /// `1 << page_shift`), whose region and large headers keep a page-class map capped at
    /// `class_cap` at `PAGE_CLASS_OFFSET`, as segments do.
    pub(crate) fn lock_free(segment_bytes: usize, page_shift: u32, class_cap: u16) -> Self {
        debug_assert!(segment_bytes.is_power_of_two());
        debug_assert_eq!(segment_bytes >> page_shift, PAGES_PER_SEGMENT);
        SegmentGeometry {
            segment_shift: segment_bytes.trailing_zeros(),
            page_shift,
            segment_mask: !(segment_bytes - 1),
            class_cap,
            lock_free: true,
        }
    }

    /// `!(segment_bytes - 1)`.
    pub(crate) fn segment_mask(self) -> usize {
        self.segment_mask
    }

    /// The slot (`class_slot`) of the class owning a live block's span, capped at the
    /// heap's `class_cap` (which a large object also reads): `usable_bytes_and_owner`
    /// without the size, for the thread cache's free fast path (a large object goes to
    /// the slow path, which asks the heap). At most `class_slot(class_cap)`, always.
    ///
    /// No branch: `base` is the block's address less one, masked. A block inside a
    /// segment never starts at the segment's base (page 0 is the header), so that is its
    /// segment; a large object's block lies after its header in the same segment-aligned
    /// chunk, or starts one segment after its header when it is over-aligned: either way
    /// `base` is the header. Both headers keep the page-class map at the same offset
    /// (`PAGE_CLASS_OFFSET`), a large object's all `class_cap`'s slot.
    ///
    /// # Safety
    /// As for `usable_bytes`.
    #[inline(always)]
    pub(crate) unsafe fn slot_of(self, block: NonNull<u8>) -> u16 {
        let addr = block.as_ptr() as usize;
        let base = (addr - 1) & self.segment_mask;
        let page = (addr >> self.page_shift) & (PAGES_PER_SEGMENT - 1);
        // SAFETY: `base` starts the header of the block's segment or large object (see
        // above; the caller's contract: a live block of such a heap, whose allocation
        // happens-before this call). The entry read is `page < PAGES_PER_SEGMENT` of
        // the map at `PAGE_CLASS_OFFSET`, written before the block was handed out and not
        // written while it is live (`take_span` writes only the pages of the span it
        // takes, which hold no live block); a large object's entries are all `class_cap`'s.
        let slot = unsafe {
            *(base as *const u8)
                .add(PAGE_CLASS_OFFSET)
                .cast::<u16>()
                .add(page)
        };
        #[cfg(debug_assertions)]
        if self.lock_free {
            // SAFETY: forwarded contract.
            let expected = unsafe {
                crate::alloc::lockfree::expected_slot(block, self.segment_mask, self.class_cap)
            };
            debug_assert_eq!(slot, expected, "page-class map disagrees with the slab");
        } else {
            // SAFETY: forwarded contract.
            let (_, owner) = unsafe { self.usable_bytes_and_owner(block) };
            let cap = self.class_cap;
            let expected = if owner == OWNER_LARGE {
                cap
            } else {
                u16::try_from(owner).map_or(cap, |c| c.min(cap))
            };
            debug_assert_eq!(
                slot,
                class_slot(expected),
                "page-class map disagrees with the span"
            );
        }
        slot
    }

    /// Usable bytes of a live block, read the way `header_of` finds its header, and
    /// whether it is a class block (`false`: a large object).
    ///
    /// Reads only words that nobody writes while the block is live: the segment's magic,
    /// the page-map entry of the block's own page and the span header's `owner` and
    /// `block_stride_bytes` (written by `take_span` before any block of the span is handed
    /// out), or a large header's `chunk_base`, `chunk_len` and `block_addr` (written
    /// before the object is handed out). Other words of those headers (`live_blocks`, the
    /// list links, other pages' entries) may be written meanwhile by a thread holding the
    /// heap; they are different memory locations, and these reads go through raw pointers
    /// to the fields alone, never a reference to a whole header.
    ///
    /// # Safety
    /// `block` is a live block handed out by a `SegmentHeap` with this geometry, whose
    /// allocation happens-before this call.
    #[inline]
    pub(crate) unsafe fn usable_bytes(self, block: NonNull<u8>) -> (usize, bool) {
        // SAFETY: forwarded contract.
        let (usable, owner) = unsafe { self.usable_bytes_and_owner(block) };
        (usable, owner != OWNER_LARGE)
    }

    /// `usable_bytes`, with the owner of the block's span (`OWNER_LARGE` for a large
    /// object) instead of the flag.
    ///
    /// # Safety
    /// As for `usable_bytes`.
    #[inline]
    pub(crate) unsafe fn usable_bytes_and_owner(self, block: NonNull<u8>) -> (usize, u32) {
        debug_assert!(
            !self.lock_free,
            "a lock-free allocator's block has no span header"
        );
        let addr = block.as_ptr() as usize;
        let segment_bytes = 1usize << self.segment_shift;
        let base = addr & !(segment_bytes - 1);
        // SAFETY: as in `header_of` (caller's contract: a live block of such a heap); only
        // the fields named in the doc are read, each through its own raw place.
        unsafe {
            let header = if addr == base {
                (addr - segment_bytes) as *const SpanHeader
            } else if *(base as *const u32) == SEGMENT_MAGIC {
                let segment = base as *const SegmentHeader;
                let page = (addr - base) >> self.page_shift;
                debug_assert!(page < PAGES_PER_SEGMENT);
                // Raw offsets instead of indexing: `page < PAGES_PER_SEGMENT` (the block is
                // inside the segment, which is `PAGES_PER_SEGMENT` pages), and a page-map
                // entry is the index of a span's first page, so also below it; the bounds
                // checks would only cost the free path four instructions.
                let first = *addr_of!((*segment).first_page).cast::<u8>().add(page) as usize;
                debug_assert!(first < PAGES_PER_SEGMENT);
                let span = addr_of!((*segment).spans).cast::<SpanHeader>().add(first);
                let owner = *addr_of!((*span).owner);
                if owner != OWNER_LARGE {
                    return (*addr_of!((*span).block_stride_bytes), owner);
                }
                span
            } else {
                base as *const SpanHeader
            };
            let large = header.cast::<LargeHeader>();
            let usable = *addr_of!((*large).chunk_base) + *addr_of!((*large).chunk_len)
                - *addr_of!((*large).block_addr);
            (usable, OWNER_LARGE)
        }
    }
}

/// Segment and span management over an `Upstream`. Not thread-safe (`&mut self`).
pub struct SegmentHeap {
    upstream: Upstream,
    segment_shift: u32,
    page_shift: u32,
    /// Every mapped segment (doubly linked through `next`/`prev`); each is aligned to
    /// `segment_bytes` and has an initialised header.
    segments: *mut SegmentHeader,
    /// Null or a listed segment: where the next span is looked for first.
    current: *mut SegmentHeader,
    /// Large objects, doubly linked through their headers.
    large: *mut LargeHeader,
    /// What the page-class map says at most (`set_class_cap`): a span's entries are the
    /// slot of `min(owner, class_cap)`, a large object's all `class_cap`'s. At most
    /// `MAX_CLASS_CAP` (the default).
    class_cap: u16,
    /// Give an emptied span's pages back (`MADV_DONTNEED`), and unmap a segment as soon as
    /// all its pages are free (except initial segments).
    return_when_empty: bool,
    /// Count pages as they are first used (normal pages); otherwise whole segments.
    lazy_commit: bool,
    /// Chunks of freed large objects kept for the next large allocations (not with
    /// `return_when_empty` nor under a size limit): a large object costs an `mmap` and
    /// two `munmap`s (the alignment trim) to make and one `munmap` to free, where a reuse
    /// costs nothing. At most `LARGE_CACHE_CHUNKS` chunks and `large_cache_limit` bytes
    /// (a segment, or a quarter of the live large objects' bytes); a chunk serves a
    /// request that `large_reuse_fits`. Released by `reset(true)` and on drop. Still
    /// counted as reserved (they are held). A fixed array: the heap may serve the
    /// process's global allocator, so it never allocates.
    large_cache: [Option<Chunk>; LARGE_CACHE_CHUNKS],
    /// When each cached chunk came in (`large_cache_clock` then): the oldest goes first
    /// when a newer one needs room.
    large_cache_age: [u64; LARGE_CACHE_CHUNKS],
    large_cache_clock: u64,
    /// Bytes of the chunks of the live large objects (the cache's limit follows them).
    large_live_bytes: usize,
}

/// Most freed large-object chunks a heap keeps (see `SegmentHeap::large_cache`).
const LARGE_CACHE_CHUNKS: usize = 32;

// SAFETY: the raw pointers all point into chunks this heap owns exclusively; moving the
// heap to another thread moves that ownership with it.
unsafe impl Send for SegmentHeap {}

impl SegmentHeap {
    /// A heap with segments of `segment_bytes` (a power of two, at least
    /// `MIN_SEGMENT_BYTES`), counting `initial_bytes` (rounded up to pages, plus the header
    /// pages) as reserved at once. `lazy_commit` counts other pages when first used (see
    /// the module doc); pass `false` for huge pages.
    pub fn new(
        upstream: Upstream,
        segment_bytes: usize,
        initial_bytes: usize,
        return_when_empty: bool,
        lazy_commit: bool,
    ) -> Result<Self, PoolError> {
        assert!(segment_bytes.is_power_of_two() && segment_bytes >= MIN_SEGMENT_BYTES);
        let mut heap = SegmentHeap {
            upstream,
            segment_shift: segment_bytes.trailing_zeros(),
            page_shift: (segment_bytes / PAGES_PER_SEGMENT).trailing_zeros(),
            segments: null_mut(),
            current: null_mut(),
            large: null_mut(),
            return_when_empty,
            lazy_commit,
            large_cache: [None; LARGE_CACHE_CHUNKS],
            large_cache_age: [0; LARGE_CACHE_CHUNKS],
            large_cache_clock: 0,
            large_live_bytes: 0,
            class_cap: MAX_CLASS_CAP,
        };
        let mut pages_left = initial_bytes.div_ceil(heap.page_bytes());
        while pages_left > 0 {
            let pages = pages_left.min(PAGES_PER_SEGMENT);
            heap.map_segment(pages, true)?;
            pages_left -= pages;
        }
        heap.current = heap.segments;
        Ok(heap)
    }

    #[inline]
    pub fn segment_bytes(&self) -> usize {
        1 << self.segment_shift
    }

    #[inline]
    pub fn page_bytes(&self) -> usize {
        1 << self.page_shift
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub(crate) fn geometry(&self) -> SegmentGeometry {
        SegmentGeometry {
            segment_shift: self.segment_shift,
            page_shift: self.page_shift,
            segment_mask: !((1usize << self.segment_shift) - 1),
            class_cap: self.class_cap,
            lock_free: false,
        }
    }

    /// Cap the page-class map at `cap` (at most `MAX_CLASS_CAP`): a span whose owner is
    /// `cap` or more, and every large object, read as `cap`'s slot
    /// (`SegmentGeometry::slot_of`), so that a reader with `cap + 1` slots uses them with
    /// no bounds check. Before any span or large object is taken (the entries are written
    /// when they are).
    pub(crate) fn set_class_cap(&mut self, cap: u16) {
        assert!(
            cap <= MAX_CLASS_CAP,
            "class cap {cap} beyond {MAX_CLASS_CAP}"
        );
        assert!(
            self.large.is_null() && self.all_segments_empty(),
            "the class cap is set before any block is handed out"
        );
        self.class_cap = cap;
    }

    /// Whether no segment has a span.
    fn all_segments_empty(&self) -> bool {
        let mut node = self.segments;
        while !node.is_null() {
            // SAFETY: list nodes are headers of our segments.
            let (free, next) = unsafe { ((*node).free_pages, (*node).next) };
            if free != ALL_SPAN_PAGES {
                return false;
            }
            node = next;
        }
        true
    }

    pub fn reserved_bytes(&self) -> usize {
        self.upstream.reserved_bytes()
    }

    /// The span layout for blocks of `stride` bytes (a multiple of 8, at most an eighth of
    /// a segment): the fewest pages that waste at most an eighth of the span (else the
    /// least wasteful of up to 16 pages), with a live bitmap after the blocks if `checked`.
    pub(crate) fn class_layout(&self, block_stride_bytes: usize, checked: bool) -> ClassLayout {
        let stride = block_stride_bytes;
        debug_assert!(stride >= 8 && stride <= self.segment_bytes() / 8);
        let layout = |pages: usize| {
            let span = pages << self.page_shift;
            let mut capacity = span / stride;
            let bitmap_bytes = |c: usize| if checked { c.div_ceil(64) * 8 } else { 0 };
            while capacity > 0 && round_up(capacity * stride, 8) + bitmap_bytes(capacity) > span {
                capacity -= 1;
            }
            ClassLayout {
                block_stride_bytes: stride,
                block_capacity: capacity,
                block_align: (stride & stride.wrapping_neg()).min(MAX_IN_SEGMENT_ALIGN),
                span_pages: pages,
                bitmap_offset: if checked {
                    round_up(capacity * stride, 8)
                } else {
                    0
                },
            }
        };
        let waste = |l: &ClassLayout| {
            ((l.span_pages << self.page_shift) - l.block_capacity * stride) as f64
                / (l.span_pages << self.page_shift) as f64
        };
        let max_pages = 16.min(PAGES_PER_SEGMENT - 1);
        let candidates = (1..=max_pages).map(layout).filter(|l| l.block_capacity > 0);
        if let Some(l) = candidates.clone().find(|l| waste(l) <= 0.125) {
            return l;
        }
        candidates
            .min_by(|a, b| waste(a).total_cmp(&waste(b)))
            .expect("a block of at most an eighth of a segment fits in 16 pages")
    }

    /// The span (or large-object) header governing a block this heap handed out.
    ///
    /// # Safety
    /// `block` is a block handed out by a class of this heap or by `alloc_large`, not yet
    /// given back (then the header lies in one of our chunks, see the module doc).
    #[inline]
    pub(crate) unsafe fn header_of(&self, block: NonNull<u8>) -> NonNull<SpanHeader> {
        let addr = block.as_ptr() as usize;
        let base = addr & !(self.segment_bytes() - 1);
        // SAFETY: unless `addr == base`, base is the start of the segment or large chunk
        // holding the block (caller's contract); both begin with an initialised u32.
        let header = if addr == base {
            (addr - self.segment_bytes()) as *mut SpanHeader
        } else if unsafe { *(base as *const u32) } == SEGMENT_MAGIC {
            let segment = base as *mut SegmentHeader;
            let page = (addr - base) >> self.page_shift;
            // SAFETY: a page segment's header; `page` < 128, and the page belongs to the
            // block's span, so its map entry names the span's first page.
            unsafe {
                let first = (*segment).first_page[page] as usize;
                addr_of_mut!((*segment).spans[first])
            }
        } else {
            base as *mut SpanHeader
        };
        // SAFETY: inside our chunk, hence non-null.
        let header = unsafe { NonNull::new_unchecked(header) };
        // SAFETY: the header is initialised memory of ours (caller's contract).
        debug_assert_eq!(unsafe { header.as_ref() }.magic, SPAN_MAGIC);
        header
    }

    /// Map a segment with pages `0..commit_pages` counted (all of them without lazy
    /// commit), and link it.
    fn map_segment(
        &mut self,
        commit_pages: usize,
        initial: bool,
    ) -> Result<*mut SegmentHeader, PoolError> {
        let segment = self.segment_bytes();
        let commit_pages = if self.lazy_commit {
            commit_pages.clamp(1, PAGES_PER_SEGMENT)
        } else {
            PAGES_PER_SEGMENT
        };
        let chunk = self.upstream.map_uncommitted(segment, segment)?;
        if chunk.len != segment || chunk.addr() & (segment - 1) != 0 {
            // SAFETY: fresh from our upstream, holds nothing, nothing counted.
            unsafe { self.upstream.unmap_uncommitted(chunk, 0) };
            return Err(PoolError::invalid_op(
                self.upstream.pool_name(),
                format!(
                    "chunk source returned a chunk not aligned to the {segment}-byte segment size"
                ),
            ));
        }
        if let Err(e) = self.upstream.commit(commit_pages << self.page_shift) {
            // SAFETY: as above.
            unsafe { self.upstream.unmap_uncommitted(chunk, 0) };
            return Err(e);
        }
        let header = chunk.addr() as *mut SegmentHeader;
        let committed = if commit_pages == PAGES_PER_SEGMENT {
            u128::MAX
        } else {
            (1u128 << commit_pages) - 1
        };
        // SAFETY: page 0 of a fresh mapping we own exclusively, aligned and large enough
        // for the header (const assertion above). Fresh anonymous memory is zero, which
        // is a valid (unused) SpanHeader array; the fields are written one by one so the
        // 7 KiB array is not copied.
        unsafe {
            addr_of_mut!((*header).magic).write(SEGMENT_MAGIC);
            addr_of_mut!((*header).initial).write(initial);
            // Page 0 (the header) holds no block; the others are written when taken.
            addr_of_mut!((*header).page_class)
                .cast::<u16>()
                .write(NO_CLASS);
            addr_of_mut!((*header).free_pages).write(ALL_SPAN_PAGES);
            addr_of_mut!((*header).committed_pages).write(committed);
            addr_of_mut!((*header).initial_committed_pages).write(committed);
            addr_of_mut!((*header).prev).write(null_mut());
            addr_of_mut!((*header).next).write(self.segments);
            if !self.segments.is_null() {
                (*self.segments).prev = header;
            }
        }
        self.segments = header;
        Ok(header)
    }

    /// A span for a class, from the lowest free run of pages of a segment, or from a new
    /// segment. Its header is set to `layout` with an all-clear bitmap and no live blocks.
    pub(crate) fn take_span(
        &mut self,
        owner: u32,
        layout: &ClassLayout,
    ) -> Result<NonNull<SpanHeader>, PoolError> {
        let pages = layout.span_pages;
        let (segment, first, fresh) = match self.find_free_run(pages) {
            Some((segment, first)) => (segment, first, false),
            None => {
                let segment = self.map_segment(1, false)?;
                (segment, 1, true)
            }
        };
        let mask = run_mask(first, pages);
        // SAFETY: segment is one of our segments (list invariant); `mask` covers free
        // pages `first..first + pages` inside it (find_free_run / fresh segment).
        unsafe {
            let uncommitted = mask & !(*segment).committed_pages;
            if uncommitted != 0 {
                let committed = self
                    .upstream
                    .commit((uncommitted.count_ones() as usize) << self.page_shift);
                if let Err(e) = committed {
                    if fresh {
                        // A segment mapped for this span and left unused would stay
                        // listed forever (only `return_span` releases segments): every
                        // failing request at the limit would map another one.
                        self.release_segment(segment);
                    }
                    return Err(e);
                }
                (*segment).committed_pages |= uncommitted;
            }
            self.current = segment;
            (*segment).free_pages &= !mask;
            let base = segment as usize + (first << self.page_shift);
            let map = &mut (*segment).first_page;
            for entry in &mut map[first..first + pages] {
                *entry = first as u8;
            }
            let class = u16::try_from(owner).map_or(self.class_cap, |c| c.min(self.class_cap));
            let slots = &mut (*segment).page_class;
            for entry in &mut slots[first..first + pages] {
                *entry = class_slot(class);
            }
            let span = addr_of_mut!((*segment).spans[first]);
            span.write(SpanHeader {
                magic: SPAN_MAGIC,
                owner,
                block_stride_bytes: layout.block_stride_bytes,
                block_capacity: layout.block_capacity,
                live_blocks: 0,
                span_base: base,
                bitmap_offset: layout.bitmap_offset,
                span_pages: pages,
            });
            if layout.bitmap_offset != 0 {
                (*span)
                    .bitmap()
                    .write_bytes(0, layout.block_capacity.div_ceil(64));
            }
            Ok(NonNull::new_unchecked(span))
        }
    }

    /// The lowest run of `pages` free pages: in `current` first, then in any segment.
    fn find_free_run(&self, pages: usize) -> Option<(*mut SegmentHeader, usize)> {
        if let Some(current) = NonNull::new(self.current) {
            // SAFETY: current is a listed segment (field invariant).
            if let Some(first) = lowest_run(unsafe { current.as_ref() }.free_pages, pages) {
                return Some((current.as_ptr(), first));
            }
        }
        let mut node = self.segments;
        while !node.is_null() {
            // SAFETY: list nodes are headers of our segments.
            let (free, next) = unsafe { ((*node).free_pages, (*node).next) };
            if let Some(first) = lowest_run(free, pages) {
                return Some((node, first));
            }
            node = next;
        }
        None
    }

    /// Give a class's span back (its blocks must no longer be in any free list).
    ///
    /// # Safety
    /// `span` is a class-owned span of this heap with no live blocks, and no pointer into
    /// its blocks is used any more.
    pub(crate) unsafe fn return_span(&mut self, span: NonNull<SpanHeader>) {
        let segment = (span.as_ptr() as usize & !(self.segment_bytes() - 1)) as *mut SegmentHeader;
        // SAFETY: the span header lives in its segment's page 0 (caller: a span of ours).
        unsafe {
            let (base, pages) = (span.as_ref().span_base, span.as_ref().span_pages);
            let first = (base - segment as usize) >> self.page_shift;
            let mask = run_mask(first, pages);
            (*segment).free_pages |= mask;
            if !self.return_when_empty {
                return;
            }
            if (*segment).free_pages == ALL_SPAN_PAGES && !(*segment).initial {
                self.release_segment(segment);
                return;
            }
            // The initial pages stay counted: the config asked for them.
            let grown = mask & (*segment).committed_pages & !(*segment).initial_committed_pages;
            self.decommit_pages(segment, grown);
        }
    }

    /// Give the committed pages of `pages` back to the OS, one run at a time, and stop
    /// counting those the source could decommit.
    ///
    /// # Safety
    /// `segment` is ours and no byte of `pages` (committed, outside page 0) is in use.
    unsafe fn decommit_pages(&mut self, segment: *mut SegmentHeader, pages: u128) {
        let mut left = pages;
        while left != 0 {
            let first = left.trailing_zeros() as usize;
            let len = (!(left >> first)).trailing_zeros() as usize;
            let run = run_mask(first, len);
            left &= !run;
            let addr = segment as usize + (first << self.page_shift);
            // SAFETY: committed pages of our segment, unused (caller).
            if unsafe { self.upstream.decommit(addr, len << self.page_shift) } {
                // SAFETY: as above.
                unsafe { (*segment).committed_pages &= !run };
            }
        }
    }

    /// Unlink a segment and unmap it.
    ///
    /// # Safety
    /// `segment` is listed and none of its pages is used any more.
    unsafe fn release_segment(&mut self, segment: *mut SegmentHeader) {
        // SAFETY: caller's contract; list nodes are valid headers.
        unsafe {
            let (prev, next) = ((*segment).prev, (*segment).next);
            if prev.is_null() {
                self.segments = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            if self.current == segment {
                self.current = self.segments;
            }
            let committed = ((*segment).committed_pages.count_ones() as usize) << self.page_shift;
            self.upstream.unmap_uncommitted(
                Chunk {
                    ptr: NonNull::new_unchecked(segment.cast()),
                    len: self.segment_bytes(),
                },
                committed,
            );
        }
    }

    /// A large object: its own chunk with a header placed so that `header_of` finds it.
    pub(crate) fn alloc_large(
        &mut self,
        size_bytes: usize,
        align: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        let segment = self.segment_bytes();
        let align = align.max(16);
        let (block_offset, header_offset) = if align < segment {
            (round_up(LARGE_HEADER_BYTES, align), 0)
        } else {
            (align, align - segment)
        };
        let too_big = || {
            PoolError::oom(
                self.upstream.pool_name(),
                size_bytes,
                self.upstream.available_bytes(),
                usize::MAX,
            )
        };
        let bytes = block_offset.checked_add(size_bytes).ok_or_else(too_big)?;
        let chunk = match self.take_cached_chunk(bytes, align) {
            Some(chunk) => chunk,
            None => match self.upstream.alloc_exact(bytes, align.max(segment)) {
                Ok(chunk) => chunk,
                // Cached chunks must not make the pool fail where it would not without
                // them: give them back and ask once more.
                Err(_) if self.large_cache.iter().any(Option::is_some) => {
                    self.release_large_cache();
                    self.upstream.alloc_exact(bytes, align.max(segment))?
                }
                Err(e) => return Err(e),
            },
        };
        let block_addr = chunk.addr() + block_offset;
        let header = (chunk.addr() + header_offset) as *mut LargeHeader;
        // SAFETY: the header lies in the fresh chunk, segment-aligned (chunk base and
        // header_offset are segment multiples), before the block.
        unsafe {
            header.write(LargeHeader {
                span: SpanHeader {
                    magic: SPAN_MAGIC,
                    owner: OWNER_LARGE,
                    block_stride_bytes: 0,
                    block_capacity: 0,
                    live_blocks: 1,
                    span_base: block_addr,
                    bitmap_offset: 0,
                    span_pages: 0,
                },
                chunk_base: chunk.addr(),
                chunk_len: chunk.len,
                block_addr,
                page_class: [class_slot(self.class_cap); PAGES_PER_SEGMENT],
                next: self.large,
                prev: null_mut(),
            });
            if !self.large.is_null() {
                (*self.large).prev = header;
            }
        }
        self.large = header;
        self.large_live_bytes += chunk.len;
        // SAFETY: block_addr is inside a chunk, hence non-null.
        let block = unsafe { NonNull::new_unchecked(block_addr as *mut u8) };
        // SAFETY: the header was just written.
        debug_assert_eq!(unsafe { self.header_of(block) }.as_ptr(), header.cast());
        Ok(block)
    }

    /// Usable bytes of a large object whose header is `header`.
    ///
    /// # Safety
    /// `header` is the header (from `header_of`, owner `OWNER_LARGE`) of a live large
    /// object of this heap.
    pub(crate) unsafe fn large_usable_bytes(&self, header: NonNull<SpanHeader>) -> usize {
        // SAFETY: caller's contract: a large header begins with this span header.
        let h = unsafe { header.cast::<LargeHeader>().as_ref() };
        h.chunk_base + h.chunk_len - h.block_addr
    }

    /// Free a large object; returns its usable bytes.
    ///
    /// # Safety
    /// As for `large_usable_bytes`, and the object's bytes are no longer used.
    pub(crate) unsafe fn free_large(&mut self, header: NonNull<SpanHeader>) -> usize {
        // SAFETY: caller's contract; the header is in our large list.
        unsafe {
            let usable = self.large_usable_bytes(header);
            let h = header.cast::<LargeHeader>().as_ptr();
            let (prev, next) = ((*h).prev, (*h).next);
            if prev.is_null() {
                self.large = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            let chunk = Chunk {
                ptr: NonNull::new_unchecked((*h).chunk_base as *mut u8),
                len: (*h).chunk_len,
            };
            self.large_live_bytes -= chunk.len;
            self.cache_or_release(chunk);
            usable
        }
    }

    /// A cached chunk for a large object of `bytes` (block offset included) at `align`:
    /// the smallest that holds it within `large_reuse_fits`'s bounds (a bigger one would
    /// hold memory the object does not use). Chunks are segment-aligned, so only
    /// alignments below a segment are served.
    fn take_cached_chunk(&mut self, bytes: usize, align: usize) -> Option<Chunk> {
        if align >= self.segment_bytes() {
            return None;
        }
        let best = self
            .large_cache
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|c| (i, c.len)))
            .filter(|&(_, len)| large_reuse_fits(len, bytes, self.segment_bytes()))
            .min_by_key(|&(_, len)| len)
            .map(|(i, _)| i)?;
        self.large_cache[best].take()
    }

    /// A freed large object's chunk: into the cache, the oldest cached chunks given back
    /// to make room, unless the chunk alone exceeds the cache's bounds (then it goes back
    /// to the upstream).
    fn cache_or_release(&mut self, chunk: Chunk) {
        let limit = large_cache_limit(self.large_live_bytes, self.segment_bytes());
        // Under a size limit a cached chunk would count against it and could make a
        // later segment fail where it would not without the cache: none kept then.
        if self.return_when_empty || self.upstream.is_limited() || chunk.len > limit {
            // SAFETY: the chunk came from this upstream and its object is freed.
            unsafe { self.upstream.release(chunk) };
            return;
        }
        // The newest freed chunk is the likeliest to be asked for again (a program's
        // next iteration allocates what its last one freed): the oldest cached chunks
        // make room for it.
        self.large_cache_clock += 1;
        loop {
            let cached: usize = self.large_cache.iter().flatten().map(|c| c.len).sum();
            let free_slot = self.large_cache.iter().position(Option::is_none);
            if let Some(slot) = free_slot.filter(|_| cached + chunk.len <= limit) {
                self.large_cache[slot] = Some(chunk);
                self.large_cache_age[slot] = self.large_cache_clock;
                return;
            }
            // Not empty (an empty cache has a free slot and room: `chunk.len <= limit`).
            let oldest = (0..LARGE_CACHE_CHUNKS)
                .filter(|&slot| self.large_cache[slot].is_some())
                .min_by_key(|&slot| self.large_cache_age[slot])
                .expect("a full cache holds a chunk");
            if let Some(evicted) = self.large_cache[oldest].take() {
                // SAFETY: cached chunks came from this upstream and hold no live object.
                unsafe { self.upstream.release(evicted) };
            }
        }
    }

    /// Give every cached large-object chunk back to the upstream.
    fn release_large_cache(&mut self) {
        for slot in 0..LARGE_CACHE_CHUNKS {
            if let Some(chunk) = self.large_cache[slot].take() {
                // SAFETY: cached chunks came from this upstream and hold no live object.
                unsafe { self.upstream.release(chunk) };
            }
        }
    }

    /// Where `addr` lies, without reading outside our chunks: O(segments + large objects).
    pub(crate) fn region_of(&self, addr: usize) -> Region {
        let mut node = self.segments;
        while !node.is_null() {
            let base = node as usize;
            // SAFETY: list nodes are headers of our segments.
            let header = unsafe { &mut *node };
            if addr >= base && addr < base + self.segment_bytes() {
                let page = (addr - base) >> self.page_shift;
                if page == 0 || header.free_pages & (1u128 << page) != 0 {
                    return Region::Unowned;
                }
                let span = &mut header.spans[header.first_page[page] as usize];
                if addr >= span.span_base + span.block_capacity * span.block_stride_bytes {
                    return Region::Unowned;
                }
                return Region::Span(NonNull::from(span));
            }
            node = header.next;
        }
        let mut node = self.large;
        while !node.is_null() {
            // SAFETY: list nodes are headers of our live large objects.
            let h = unsafe { &*node };
            if addr >= h.chunk_base && addr < h.chunk_base + h.chunk_len {
                return Region::Large {
                    block_addr: h.block_addr,
                    usable_bytes: h.chunk_base + h.chunk_len - h.block_addr,
                };
            }
            node = h.next;
        }
        Region::Foreign
    }

    /// Whether block `index` of a class-owned span is marked live in its bitmap.
    ///
    /// # Safety
    /// `span` is a span of a checked class of this heap and `index < block_capacity`.
    pub(crate) unsafe fn is_marked_live(&self, span: NonNull<SpanHeader>, index: usize) -> bool {
        // SAFETY: forwarded contract.
        unsafe { (*span.as_ptr()).live_bit(index) }
    }

    /// Free every large object and every span. With `return_chunks`, unmap every segment
    /// but the initial ones.
    pub fn reset(&mut self, return_chunks: bool) {
        self.upstream.set_retiring(true);
        self.reset_retiring(return_chunks);
        self.upstream.set_retiring(false);
    }

    fn reset_retiring(&mut self, return_chunks: bool) {
        while !self.large.is_null() {
            // SAFETY: list nodes are live large objects; reset invalidates every block.
            unsafe { self.free_large(NonNull::new_unchecked(self.large.cast())) };
        }
        if return_chunks {
            self.release_large_cache();
        }
        let mut node = self.segments;
        while !node.is_null() {
            // SAFETY: node is one of our segments; after reset nothing uses any block.
            unsafe {
                let next = (*node).next;
                if return_chunks && !(*node).initial {
                    self.release_segment(node);
                } else {
                    (*node).free_pages = ALL_SPAN_PAGES;
                    let grown = (*node).committed_pages & !(*node).initial_committed_pages;
                    if return_chunks && grown != 0 {
                        self.decommit_pages(node, grown);
                    }
                }
                node = next;
            }
        }
        self.current = self.segments;
    }
}

impl Drop for SegmentHeap {
    fn drop(&mut self) {
        self.reset(true);
        self.upstream.set_retiring(true);
        while !self.segments.is_null() {
            // SAFETY: after reset every page is free and the pool is going away.
            unsafe { self.release_segment(self.segments) };
        }
    }
}

/// Bits `first..first + pages` (with `first + pages <= 128`).
#[inline]
fn run_mask(first: usize, pages: usize) -> u128 {
    let run = if pages >= 128 {
        u128::MAX
    } else {
        (1u128 << pages) - 1
    };
    run << first
}

/// The lowest `first` with bits `first..first + pages` all set in `free`.
#[inline]
fn lowest_run(free: u128, pages: usize) -> Option<usize> {
    let mut starts = free;
    for shift in 1..pages {
        starts &= free >> shift;
        if starts == 0 {
            return None;
        }
    }
    (starts != 0).then(|| starts.trailing_zeros() as usize)
}

#[inline]
pub(crate) fn round_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_run_finds_the_first_fit() {
        assert_eq!(lowest_run(ALL_SPAN_PAGES, 1), Some(1));
        assert_eq!(lowest_run(ALL_SPAN_PAGES, 127), Some(1));
        assert_eq!(lowest_run(ALL_SPAN_PAGES, 128), None);
        assert_eq!(lowest_run(0b1101_1010, 2), Some(3));
        assert_eq!(lowest_run(0b1101_1010, 3), None);
        assert_eq!(run_mask(3, 2), 0b11000);
    }
}
