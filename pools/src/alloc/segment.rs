//! Segments: the chunk layer under the fixed-size and size-classed allocators.
//!
//! Upstream chunks are aligned to, and cut into, segments of `segment_bytes` (a power of
//! two). Every segment starts with a [`SegmentHeader`], so the header of any block is found
//! in O(1) by masking its address; no per-block header exists.
//!
//! ```text
//! chunk (aligned to segment_bytes, len = n * segment_bytes)
//! +-----------------------------+-----------------------------+---
//! | hdr(+chunk fields) | blocks | hdr | blocks of another class | ...
//! +-----------------------------+-----------------------------+---
//! ^ segment 0                   ^ segment 1
//!
//! large object, align < segment_bytes:        large object, align >= segment_bytes:
//! | hdr | pad | block ................ |       | pad | hdr | pad | block ........ |
//! ^ chunk base, segment-aligned                ^ base      ^ block - segment_bytes
//! ```
//!
//! [`header_of`](SegmentHeap::header_of) computes `(block - 1) & !(segment_bytes - 1)`:
//! for a block not on a segment boundary that is its segment's start; a block on a
//! segment boundary can only be a large object aligned to at least `segment_bytes`, whose
//! header sits exactly one segment below it.
//!
//! The heap never uses the Rust global heap after construction: its lists are intrusive
//! (through the headers), so a pool on it can serve as the global allocator.

use crate::alloc::{Chunk, Upstream};
use crate::error::PoolError;
use std::mem::size_of;
use std::ptr::{null_mut, NonNull};

/// `SegmentHeader::magic` of every initialised header; checked by debug assertions.
const SEGMENT_MAGIC: u32 = 0x5E67_4E47;
/// `SegmentHeader::owner` of a segment in the free-segment list.
pub(crate) const OWNER_FREE: u32 = u32::MAX;
/// `SegmentHeader::owner` of a large object's header.
pub(crate) const OWNER_LARGE: u32 = u32::MAX - 1;

/// Smallest segment: large enough that the header and bitmap are a small fraction.
pub const MIN_SEGMENT_BYTES: usize = 64 * 1024;

/// Alignment cap for blocks inside segments: blocks are laid out from a page-aligned
/// offset at most, so a 32 KiB class does not waste 32 KiB on its header.
pub const MAX_IN_SEGMENT_ALIGN: usize = 4096;

/// Bytes before the block of a large object aligned below `segment_bytes`.
const LARGE_HEADER_BYTES: usize = 128;

/// The header at the start of every segment (and in front of every large object).
#[repr(C)]
pub(crate) struct SegmentHeader {
    magic: u32,
    /// `OWNER_FREE`, `OWNER_LARGE`, or the index of the class owning the blocks.
    pub(crate) owner: u32,
    /// Block layout of the owning class (meaningless while free).
    pub(crate) block_stride_bytes: usize,
    pub(crate) first_block_offset: usize,
    pub(crate) block_capacity: usize,
    /// Live blocks of this segment; maintained only by classes that track (see
    /// `FixedClass::tracks_segments`).
    pub(crate) live_blocks: usize,
    /// Next segment in the heap's free-segment list while `owner == OWNER_FREE`.
    next_free: *mut SegmentHeader,
    /// Base of the chunk this segment (or large object) lives in.
    chunk_base: usize,
    /// Chunk fields, valid in segment 0 of a chunk and in large-object headers:
    /// chunk length in bytes, list links, and (segment chunks) free segments of the chunk.
    chunk_len: usize,
    next_chunk: *mut SegmentHeader,
    prev_chunk: *mut SegmentHeader,
    free_segments_in_chunk: usize,
    /// Large objects: the block's address. Segment chunks: 1 for the initial chunk.
    aux: usize,
    // Followed (segments owned by a class) by `ceil(capacity / 64)` u64 words of
    // live-block bitmap, maintained only by checked classes.
}

const HEADER_BYTES: usize = size_of::<SegmentHeader>();
const _: () = assert!(HEADER_BYTES <= LARGE_HEADER_BYTES);

impl SegmentHeader {
    /// The live-block bitmap words following the header.
    fn bitmap(&mut self) -> *mut u64 {
        // SAFETY: the header is followed by the bitmap area inside the same segment
        // (`class_layout` reserves it); offsetting by one header stays in bounds.
        unsafe { (self as *mut SegmentHeader).add(1).cast::<u64>() }
    }

    /// Set (`live`) or clear the bitmap bit of block `index`; returns the old bit.
    ///
    /// # Safety
    /// `self` is a segment owned by a class and `index < block_capacity`.
    pub(crate) unsafe fn swap_live_bit(&mut self, index: usize, live: bool) -> bool {
        debug_assert!(index < self.block_capacity);
        // SAFETY: index < capacity, and the bitmap holds ceil(capacity / 64) words.
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

    /// Index of the block at `addr` if `addr` is exactly a block start of this segment.
    pub(crate) fn block_index(&self, addr: usize) -> Option<usize> {
        let seg = self as *const SegmentHeader as usize;
        let offset = addr.checked_sub(seg + self.first_block_offset)?;
        let index = offset / self.block_stride_bytes;
        (offset % self.block_stride_bytes == 0 && index < self.block_capacity).then_some(index)
    }
}

/// Where an address lies, for checked lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Region {
    /// Not in any chunk of this heap.
    Foreign,
    /// In a segment chunk but not inside a class-owned block area (a header, a free
    /// segment, the unusable tail).
    Unowned,
    /// Inside the block area of a class-owned segment.
    Segment(NonNull<SegmentHeader>),
    /// Inside a large object's chunk: the header and the usable bytes from the block.
    Large {
        block_addr: usize,
        usable_bytes: usize,
    },
}

/// Per-class layout inside a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClassLayout {
    pub(crate) block_stride_bytes: usize,
    pub(crate) first_block_offset: usize,
    pub(crate) block_capacity: usize,
    /// Alignment every block of the class has: `min(lowest bit of stride, 4 KiB)`.
    pub(crate) block_align: usize,
}

/// Segment list management over an `Upstream`. Not thread-safe (`&mut self`).
pub struct SegmentHeap {
    upstream: Upstream,
    segment_shift: u32,
    /// Segment chunks, linked through segment 0's `next_chunk`/`prev_chunk`. Invariant:
    /// each is aligned to `segment_bytes`, and each of its `chunk_len >> segment_shift`
    /// segments has an initialised header.
    chunks: *mut SegmentHeader,
    /// Segments with `owner == OWNER_FREE`, linked through `next_free`; exactly those.
    free_segments: *mut SegmentHeader,
    /// Large objects, doubly linked through their headers' chunk links.
    large: *mut SegmentHeader,
    /// Return a chunk to the upstream as soon as all its segments are free (except the
    /// initial chunk).
    return_when_empty: bool,
}

// SAFETY: the raw pointers all point into chunks this heap owns exclusively; moving the
// heap to another thread moves that ownership with it.
unsafe impl Send for SegmentHeap {}

impl SegmentHeap {
    /// A heap with segments of `segment_bytes` (a power of two, at least
    /// `MIN_SEGMENT_BYTES`), reserving `initial_bytes` (rounded up to segments) at once.
    pub fn new(
        upstream: Upstream,
        segment_bytes: usize,
        initial_bytes: usize,
        return_when_empty: bool,
    ) -> Result<Self, PoolError> {
        assert!(segment_bytes.is_power_of_two() && segment_bytes >= MIN_SEGMENT_BYTES);
        let mut heap = SegmentHeap {
            upstream,
            segment_shift: segment_bytes.trailing_zeros(),
            chunks: null_mut(),
            free_segments: null_mut(),
            large: null_mut(),
            return_when_empty,
        };
        if initial_bytes > 0 {
            let bytes = round_up(initial_bytes, segment_bytes);
            let chunk = heap.upstream.alloc_exact(bytes, segment_bytes)?;
            heap.add_chunk(chunk, true)?;
        }
        Ok(heap)
    }

    #[inline]
    pub fn segment_bytes(&self) -> usize {
        1 << self.segment_shift
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub fn reserved_bytes(&self) -> usize {
        self.upstream.reserved_bytes()
    }

    /// The layout of blocks of `stride` bytes (a multiple of 8, at most a quarter segment).
    pub(crate) fn class_layout(&self, block_stride_bytes: usize) -> ClassLayout {
        let segment = self.segment_bytes();
        debug_assert!(block_stride_bytes >= 8 && block_stride_bytes <= segment / 4);
        let block_align =
            (block_stride_bytes & block_stride_bytes.wrapping_neg()).min(MAX_IN_SEGMENT_ALIGN);
        let bitmap_bytes = (segment / block_stride_bytes).div_ceil(64) * 8;
        let first_block_offset = round_up(HEADER_BYTES + bitmap_bytes, block_align);
        ClassLayout {
            block_stride_bytes,
            first_block_offset,
            block_capacity: (segment - first_block_offset) / block_stride_bytes,
            block_align,
        }
    }

    /// The header governing a block this heap handed out.
    ///
    /// # Safety
    /// `block` is a block handed out by a class of this heap or by `alloc_large`, not yet
    /// given back (then the header lies in one of our chunks, see the module doc).
    #[inline]
    pub(crate) unsafe fn header_of(&self, block: NonNull<u8>) -> NonNull<SegmentHeader> {
        let addr = (block.as_ptr() as usize - 1) & !(self.segment_bytes() - 1);
        // SAFETY: addr is the header address inside our chunk (caller's contract), which
        // is non-null because chunks never start at address 0.
        let header = unsafe { NonNull::new_unchecked(addr as *mut SegmentHeader) };
        // SAFETY: the header is initialised memory of ours (caller's contract).
        debug_assert_eq!(unsafe { header.as_ref() }.magic, SEGMENT_MAGIC);
        header
    }

    /// Carve `chunk` into free segments and link it.
    fn add_chunk(&mut self, chunk: Chunk, initial: bool) -> Result<(), PoolError> {
        let segment = self.segment_bytes();
        let count = chunk.len >> self.segment_shift;
        if count == 0 || chunk.addr() & (segment - 1) != 0 {
            // SAFETY: the chunk came from our upstream just now and holds nothing.
            unsafe { self.upstream.release(chunk) };
            return Err(PoolError::invalid_op(
                self.upstream.pool_name(),
                format!(
                    "chunk source returned a chunk not aligned to the {segment}-byte segment size"
                ),
            ));
        }
        for i in (0..count).rev() {
            let seg = (chunk.addr() + i * segment) as *mut SegmentHeader;
            // SAFETY: seg is the start of segment i of a chunk we own exclusively, aligned
            // to the segment size (>= align_of header) and large enough for a header.
            unsafe {
                seg.write(SegmentHeader {
                    magic: SEGMENT_MAGIC,
                    owner: OWNER_FREE,
                    block_stride_bytes: 0,
                    first_block_offset: 0,
                    block_capacity: 0,
                    live_blocks: 0,
                    next_free: self.free_segments,
                    chunk_base: chunk.addr(),
                    chunk_len: 0,
                    next_chunk: null_mut(),
                    prev_chunk: null_mut(),
                    free_segments_in_chunk: 0,
                    aux: 0,
                })
            };
            self.free_segments = seg;
        }
        let head = chunk.addr() as *mut SegmentHeader;
        // SAFETY: head is segment 0's header, initialised above; the old list head (if
        // any) is segment 0 of another chunk of ours.
        unsafe {
            (*head).chunk_len = chunk.len;
            (*head).free_segments_in_chunk = count;
            (*head).aux = usize::from(initial);
            (*head).next_chunk = self.chunks;
            if !self.chunks.is_null() {
                (*self.chunks).prev_chunk = head;
            }
        }
        self.chunks = head;
        Ok(())
    }

    /// A segment for a class, from the free list or a new growth chunk. The header is set
    /// to `layout` with an all-clear bitmap and no live blocks.
    pub(crate) fn take_segment(
        &mut self,
        owner: u32,
        layout: &ClassLayout,
    ) -> Result<NonNull<SegmentHeader>, PoolError> {
        if self.free_segments.is_null() {
            self.grow()?;
        }
        let seg = self.free_segments;
        // SAFETY: seg is a free segment of one of our chunks (list invariant); its chunk's
        // segment 0 holds the chunk fields; the bitmap words fit before the first block
        // (`class_layout`).
        unsafe {
            self.free_segments = (*seg).next_free;
            let chunk_head = (*seg).chunk_base as *mut SegmentHeader;
            (*chunk_head).free_segments_in_chunk -= 1;
            (*seg).owner = owner;
            (*seg).block_stride_bytes = layout.block_stride_bytes;
            (*seg).first_block_offset = layout.first_block_offset;
            (*seg).block_capacity = layout.block_capacity;
            (*seg).live_blocks = 0;
            (*seg).next_free = null_mut();
            (*seg)
                .bitmap()
                .write_bytes(0, layout.block_capacity.div_ceil(64));
            Ok(NonNull::new_unchecked(seg))
        }
    }

    /// Take a growth chunk from the upstream: the growth policy's size rounded up to whole
    /// segments, capped by what is left under the limit.
    fn grow(&mut self) -> Result<(), PoolError> {
        let segment = self.segment_bytes();
        let mut bytes = round_up(self.upstream.next_chunk_bytes(segment), segment);
        let available = self.upstream.available_bytes() & !(segment - 1);
        if bytes > available && available >= segment {
            bytes = available;
        }
        let chunk = self.upstream.grow(bytes, segment)?;
        self.add_chunk(chunk, false)
    }

    /// Give a class's segment back (its blocks must no longer be in any free list).
    ///
    /// # Safety
    /// `seg` is a class-owned segment of this heap with no live blocks, and no pointer
    /// into its blocks is used any more.
    pub(crate) unsafe fn return_segment(&mut self, seg: NonNull<SegmentHeader>) {
        let seg = seg.as_ptr();
        // SAFETY: seg is one of our segments (caller); its chunk's segment 0 is ours.
        let chunk_head = unsafe {
            (*seg).owner = OWNER_FREE;
            (*seg).next_free = self.free_segments;
            self.free_segments = seg;
            let chunk_head = (*seg).chunk_base as *mut SegmentHeader;
            (*chunk_head).free_segments_in_chunk += 1;
            chunk_head
        };
        // SAFETY: chunk_head is segment 0 of a chunk in our list.
        let (free, len, initial) = unsafe {
            (
                (*chunk_head).free_segments_in_chunk,
                (*chunk_head).chunk_len,
                (*chunk_head).aux == 1,
            )
        };
        if self.return_when_empty && !initial && free == len >> self.segment_shift {
            // SAFETY: every segment of the chunk is free, so nothing uses it.
            unsafe { self.release_chunk(chunk_head) };
        }
    }

    /// Unlink an entirely free segment chunk from both lists and return it upstream.
    ///
    /// # Safety
    /// `head` is segment 0 of a chunk in our list whose segments are all free and unused.
    unsafe fn release_chunk(&mut self, head: *mut SegmentHeader) {
        // SAFETY: all list nodes are headers in our chunks (list invariants); the chunk's
        // segments are free and unused (caller), so unmapping it after unlinking is sound.
        unsafe {
            let base = head as usize;
            let len = (*head).chunk_len;
            let mut link: *mut *mut SegmentHeader = &mut self.free_segments;
            while !(*link).is_null() {
                let seg = *link;
                if (seg as usize) >= base && (seg as usize) < base + len {
                    *link = (*seg).next_free;
                } else {
                    link = &mut (*seg).next_free;
                }
            }
            unlink(&mut self.chunks, head);
            self.upstream.release(Chunk {
                ptr: NonNull::new_unchecked(head.cast()),
                len,
            });
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
        let chunk = self.upstream.alloc_exact(bytes, align.max(segment))?;
        let block_addr = chunk.addr() + block_offset;
        let header = (chunk.addr() + header_offset) as *mut SegmentHeader;
        // SAFETY: the header lies in the fresh chunk, segment-aligned (chunk base and
        // header_offset are segment multiples), before the block.
        unsafe {
            header.write(SegmentHeader {
                magic: SEGMENT_MAGIC,
                owner: OWNER_LARGE,
                block_stride_bytes: 0,
                first_block_offset: 0,
                block_capacity: 0,
                live_blocks: 1,
                next_free: null_mut(),
                chunk_base: chunk.addr(),
                chunk_len: chunk.len,
                next_chunk: self.large,
                prev_chunk: null_mut(),
                free_segments_in_chunk: 0,
                aux: block_addr,
            });
            if !self.large.is_null() {
                (*self.large).prev_chunk = header;
            }
        }
        self.large = header;
        debug_assert_eq!((block_addr - 1) & !(segment - 1), header as usize);
        // SAFETY: block_addr is inside a chunk, hence non-null.
        Ok(unsafe { NonNull::new_unchecked(block_addr as *mut u8) })
    }

    /// Usable bytes of a large object whose header is `header`.
    ///
    /// # Safety
    /// `header` is the header of a live large object of this heap.
    pub(crate) unsafe fn large_usable_bytes(&self, header: NonNull<SegmentHeader>) -> usize {
        // SAFETY: caller's contract; the header is initialised.
        let h = unsafe { header.as_ref() };
        h.chunk_base + h.chunk_len - h.aux
    }

    /// Free a large object; returns its usable bytes.
    ///
    /// # Safety
    /// `header` is the header of a live large object of this heap, whose bytes are no
    /// longer used.
    pub(crate) unsafe fn free_large(&mut self, header: NonNull<SegmentHeader>) -> usize {
        // SAFETY: caller's contract; the header is in our large list.
        unsafe {
            let usable = self.large_usable_bytes(header);
            let h = header.as_ptr();
            unlink(&mut self.large, h);
            let chunk = Chunk {
                ptr: NonNull::new_unchecked((*h).chunk_base as *mut u8),
                len: (*h).chunk_len,
            };
            self.upstream.release(chunk);
            usable
        }
    }

    /// Where `addr` lies, without reading outside our chunks: O(chunks + large objects).
    pub(crate) fn region_of(&self, addr: usize) -> Region {
        let segment = self.segment_bytes();
        let mut node = self.chunks;
        while !node.is_null() {
            // SAFETY: list nodes are segment-0 headers of our chunks.
            let (base, len, next) =
                unsafe { (node as usize, (*node).chunk_len, (*node).next_chunk) };
            if addr >= base && addr < base + len {
                let seg_addr = addr & !(segment - 1);
                if seg_addr + segment > base + ((len >> self.segment_shift) << self.segment_shift) {
                    return Region::Unowned;
                }
                let seg = seg_addr as *mut SegmentHeader;
                // SAFETY: seg_addr is the start of a whole segment inside this chunk,
                // whose header is initialised (chunk invariant).
                let owner = unsafe { (*seg).owner };
                if owner == OWNER_FREE || addr < seg_addr + HEADER_BYTES {
                    return Region::Unowned;
                }
                // SAFETY: seg is non-null (inside a chunk).
                return Region::Segment(unsafe { NonNull::new_unchecked(seg) });
            }
            node = next;
        }
        let mut node = self.large;
        while !node.is_null() {
            // SAFETY: list nodes are headers of our live large objects.
            let h = unsafe { &*node };
            if addr >= h.chunk_base && addr < h.chunk_base + h.chunk_len {
                return Region::Large {
                    block_addr: h.aux,
                    usable_bytes: h.chunk_base + h.chunk_len - h.aux,
                };
            }
            node = h.next_chunk;
        }
        Region::Foreign
    }

    /// Whether block `index` of a class-owned segment is marked live in its bitmap.
    ///
    /// # Safety
    /// `seg` is a class-owned segment of this heap and `index < block_capacity`.
    pub(crate) unsafe fn is_marked_live(&self, seg: NonNull<SegmentHeader>, index: usize) -> bool {
        // SAFETY: forwarded contract.
        unsafe { (*seg.as_ptr()).live_bit(index) }
    }

    /// Free every large object and every segment. With `return_chunks`, return every chunk
    /// except the initial one and forget the growth history.
    pub fn reset(&mut self, return_chunks: bool) {
        while !self.large.is_null() {
            // SAFETY: list nodes are live large objects; reset invalidates every block.
            unsafe { self.free_large(NonNull::new_unchecked(self.large)) };
        }
        self.free_segments = null_mut();
        let mut node = self.chunks;
        while !node.is_null() {
            // SAFETY: node is segment 0 of a chunk of ours; after reset nothing uses any
            // block, so a non-initial chunk can be returned; the others are re-carved.
            unsafe {
                let next = (*node).next_chunk;
                let len = (*node).chunk_len;
                let initial = (*node).aux == 1;
                if return_chunks && !initial {
                    unlink(&mut self.chunks, node);
                    self.upstream.release(Chunk {
                        ptr: NonNull::new_unchecked(node.cast()),
                        len,
                    });
                } else {
                    let count = len >> self.segment_shift;
                    for i in (0..count).rev() {
                        let seg = (node as usize + (i << self.segment_shift)) as *mut SegmentHeader;
                        (*seg).owner = OWNER_FREE;
                        (*seg).next_free = self.free_segments;
                        self.free_segments = seg;
                    }
                    (*node).free_segments_in_chunk = count;
                }
                node = next;
            }
        }
        if return_chunks {
            self.upstream.reset_growth();
        }
    }
}

impl Drop for SegmentHeap {
    fn drop(&mut self) {
        self.reset(true);
        while !self.chunks.is_null() {
            let head = self.chunks;
            // SAFETY: after reset every segment is free and the pool is going away.
            unsafe {
                let len = (*head).chunk_len;
                unlink(&mut self.chunks, head);
                self.upstream.release(Chunk {
                    ptr: NonNull::new_unchecked(head.cast()),
                    len,
                });
            }
        }
    }
}

/// Remove `node` from the doubly linked list (through `next_chunk`/`prev_chunk`) at `head`.
///
/// # Safety
/// `node` is in the list and every node of it is a valid header.
unsafe fn unlink(head: &mut *mut SegmentHeader, node: *mut SegmentHeader) {
    // SAFETY: caller's contract: node and its neighbours are valid headers.
    unsafe {
        let prev = (*node).prev_chunk;
        let next = (*node).next_chunk;
        if prev.is_null() {
            *head = next;
        } else {
            (*prev).next_chunk = next;
        }
        if !next.is_null() {
            (*next).prev_chunk = prev;
        }
        (*node).prev_chunk = null_mut();
        (*node).next_chunk = null_mut();
    }
}

#[inline]
pub(crate) fn round_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}
