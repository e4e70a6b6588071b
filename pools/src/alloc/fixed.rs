//! The fixed-size allocator: uniform blocks in spans, an intrusive free list, O(1).
//!
//! ```text
//! free_head -> [blk] -> [blk] -> [blk] -> null      (next pointer in each free block's
//!                                                     first word)
//! span:  | blk | blk | ... | blk | ... never handed out ... | [live bitmap] |
//!                               ^ bump_next            ^ bump_end
//! ```
//!
//! Allocation pops the free list, else carves the next never-used block of the current
//! span (so a fresh span is not touched before use), else takes a span (a few pages) from
//! the [`SegmentHeap`]. Freeing pushes. Neither touches the span header unless the class
//! tracks spans (checked mode: a live bitmap; return-when-empty: live counts).

use crate::alloc::segment::{ClassLayout, Region, SegmentHeap, SpanHeader, MIN_SEGMENT_BYTES};
use crate::alloc::{BlockState, Strategy, Upstream};
use crate::config::{HugePages, PoolConfig, ReturnPolicy};
use crate::error::PoolError;
use std::ptr::{null_mut, NonNull};

/// A free block: its first word links to the next free block of the class.
struct FreeBlock {
    next: *mut FreeBlock,
}

/// One block size's free list and bump region; the memory is in a `SegmentHeap` passed to
/// every call, so the size-classed allocator can share one heap among its classes.
pub(crate) struct FixedClass {
    /// Written into the headers of this class's spans.
    owner: u32,
    layout: ClassLayout,
    /// Invariant: every node is a free (not live) block of a span owned by this class,
    /// and each free block is in the list at most once.
    free_head: *mut FreeBlock,
    /// Never-used blocks of `bump_span`: `[bump_next, bump_end)`, a multiple of the
    /// stride long; empty when `bump_span` is null.
    bump_next: usize,
    bump_end: usize,
    bump_span: *mut SpanHeader,
    /// Keep `live_blocks` of each span, and return a span to the heap when it empties.
    return_empty_spans: bool,
    /// Keep the live bitmap of each span (exact `block_state`, double-free detection).
    checked: bool,
}

// SAFETY: the raw pointers point into the segment heap the class is used with, which moves
// between threads together with the class (both are owned by one allocator).
unsafe impl Send for FixedClass {}

impl FixedClass {
    pub(crate) fn new(owner: u32, layout: ClassLayout, return_empty: bool, checked: bool) -> Self {
        FixedClass {
            owner,
            layout,
            free_head: null_mut(),
            bump_next: 0,
            bump_end: 0,
            bump_span: null_mut(),
            return_empty_spans: return_empty,
            checked,
        }
    }

    #[inline]
    pub(crate) fn block_stride_bytes(&self) -> usize {
        self.layout.block_stride_bytes
    }

    #[inline]
    pub(crate) fn block_align(&self) -> usize {
        self.layout.block_align
    }

    #[inline]
    fn tracks_spans(&self) -> bool {
        self.return_empty_spans || self.checked
    }

    #[inline]
    pub(crate) fn allocate(&mut self, heap: &mut SegmentHeap) -> Result<NonNull<u8>, PoolError> {
        let block = if let Some(block) = NonNull::new(self.free_head) {
            // SAFETY: free-list nodes are free blocks of our spans (invariant), at least
            // 8 bytes and 8-aligned, holding the next link in their first word.
            self.free_head = unsafe { (*block.as_ptr()).next };
            block.cast::<u8>()
        } else if self.bump_next < self.bump_end {
            let block = self.bump_next;
            self.bump_next += self.layout.block_stride_bytes;
            // SAFETY: the bump region lies inside a span, which is never at address 0.
            unsafe { NonNull::new_unchecked(block as *mut u8) }
        } else {
            return self.allocate_from_new_span(heap);
        };
        if self.tracks_spans() {
            // SAFETY: block was handed out just now from one of our spans.
            unsafe { self.on_block_allocated(heap, block) };
        }
        Ok(block)
    }

    #[cold]
    fn allocate_from_new_span(&mut self, heap: &mut SegmentHeap) -> Result<NonNull<u8>, PoolError> {
        let seg = heap.take_span(self.owner, &self.layout)?;
        // SAFETY: the header was just initialised by `take_span`.
        let first = unsafe { seg.as_ref() }.span_base;
        self.bump_span = seg.as_ptr();
        self.bump_next = first;
        self.bump_end = first + self.layout.block_capacity * self.layout.block_stride_bytes;
        self.allocate(heap)
    }

    /// # Safety
    /// `block` is a block of this class just handed out.
    unsafe fn on_block_allocated(&mut self, heap: &SegmentHeap, block: NonNull<u8>) {
        // SAFETY: block is ours, so its header is one of our class's span headers.
        let seg = unsafe { &mut *heap.header_of(block).as_ptr() };
        seg.live_blocks += 1;
        if self.checked {
            let index = seg.block_index(block.as_ptr() as usize);
            debug_assert!(index.is_some());
            if let Some(index) = index {
                // SAFETY: index < capacity (block_index checked it).
                unsafe { seg.swap_live_bit(index, true) };
            }
        }
    }

    /// Give a block back.
    ///
    /// # Safety
    /// `block` was handed out by this class with `heap` and is not freed since.
    #[inline]
    pub(crate) unsafe fn deallocate(&mut self, heap: &mut SegmentHeap, block: NonNull<u8>) {
        if self.tracks_spans() {
            // SAFETY: forwarded contract.
            let returned = unsafe { self.on_block_freed(heap, block) };
            if returned {
                return;
            }
        }
        let node = block.cast::<FreeBlock>().as_ptr();
        // SAFETY: the block is ours, free from now on, at least 8 bytes and 8-aligned.
        unsafe {
            node.write(FreeBlock {
                next: self.free_head,
            })
        };
        self.free_head = node;
    }

    /// Bookkeeping of a freed block; returns true when its span emptied and went back
    /// to the heap (then the block must not be pushed).
    ///
    /// # Safety
    /// As for `deallocate`.
    #[cold]
    unsafe fn on_block_freed(&mut self, heap: &mut SegmentHeap, block: NonNull<u8>) -> bool {
        // SAFETY: block is ours, so its header is one of our class's span headers.
        let seg_ptr = unsafe { heap.header_of(block) };
        // SAFETY: as above; no other reference to the header is alive.
        let seg = unsafe { &mut *seg_ptr.as_ptr() };
        if self.checked {
            if let Some(index) = seg.block_index(block.as_ptr() as usize) {
                // SAFETY: index < capacity.
                unsafe { seg.swap_live_bit(index, false) };
            }
        }
        seg.live_blocks -= 1;
        if self.return_empty_spans && seg.live_blocks == 0 && seg_ptr.as_ptr() != self.bump_span {
            self.purge_span(seg_ptr.as_ptr());
            // SAFETY: the span has no live blocks and none of its blocks is in our free
            // list any more.
            unsafe { heap.return_span(seg_ptr) };
            return true;
        }
        false
    }

    /// Unlink every free block of `seg` from the free list: O(free blocks of the class),
    /// paid only when a span empties under `ReturnPolicy::WhenEmpty`.
    fn purge_span(&mut self, seg: *mut SpanHeader) {
        // SAFETY: seg is a span header of this class (caller), initialised.
        let start = unsafe { (*seg).span_base };
        let end = start + self.layout.block_capacity * self.layout.block_stride_bytes;
        let mut link: *mut *mut FreeBlock = &mut self.free_head;
        // SAFETY: every node is a free block of ours (list invariant); link always points
        // at either `free_head` or a live node's `next` field.
        unsafe {
            while !(*link).is_null() {
                let node = *link;
                if (node as usize) >= start && (node as usize) < end {
                    *link = (*node).next;
                } else {
                    link = &mut (*node).next;
                }
            }
        }
    }

    /// Forget every block (the heap is reset alongside).
    pub(crate) fn reset(&mut self) {
        self.free_head = null_mut();
        self.bump_span = null_mut();
        self.bump_next = 0;
        self.bump_end = 0;
    }

    /// Checked state of `addr` inside a span of this class.
    pub(crate) fn block_state_in(
        &self,
        heap: &SegmentHeap,
        seg: NonNull<SpanHeader>,
        addr: usize,
    ) -> BlockState {
        // SAFETY: `region_of` returned this class-owned segment, its header is initialised.
        let header = unsafe { seg.as_ref() };
        let Some(index) = header.block_index(addr) else {
            return BlockState::NotLive;
        };
        let live = if self.checked {
            // SAFETY: index < capacity.
            unsafe { heap.is_marked_live(seg, index) }
        } else {
            // Without the bitmap only never-carved blocks are known to be free.
            !(seg.as_ptr() == self.bump_span && addr >= self.bump_next)
        };
        if live {
            BlockState::Live(self.layout.block_stride_bytes)
        } else {
            BlockState::NotLive
        }
    }
}

/// Segment size for blocks of up to `stride` bytes: at least 8 blocks per segment, so the
/// largest block spans at most 16 of its 128 pages.
pub(crate) fn segment_bytes_for(largest_stride_bytes: usize) -> usize {
    (largest_stride_bytes.next_power_of_two() * 8).max(MIN_SEGMENT_BYTES)
}

/// Uniform blocks of `config.block_size_bytes` (rounded up to the configured alignment and
/// to at least 8 bytes, the free-list link). Requests larger than the block, or aligned
/// beyond what a block's address guarantees, are `InvalidOperation`.
///
/// `block_state` is exact when built with `debug.check_pointers` (a live bitmap per
/// segment); otherwise it can only tell block starts that were handed out at least once.
pub struct FixedSizeAllocator {
    heap: SegmentHeap,
    class: FixedClass,
    /// The block size the config asked for (the stride may be larger).
    block_size_bytes: usize,
}

impl FixedSizeAllocator {
    pub fn new(upstream: Upstream, config: &PoolConfig) -> Result<Self, PoolError> {
        let block_size_bytes = config.block_size_bytes;
        let stride = block_size_bytes
            .max(8)
            .checked_next_multiple_of(config.alignment.max(8))
            .filter(|&s| s <= 1 << 30)
            .ok_or_else(|| {
                PoolError::invalid_op(
                    upstream.pool_name(),
                    format!("block_size_bytes {block_size_bytes} is too large (limit 1 GiB)"),
                )
            })?;
        let heap = SegmentHeap::new(
            upstream,
            segment_bytes_for(stride),
            config.initial_size_bytes,
            config.return_policy == ReturnPolicy::WhenEmpty,
            config.huge_pages == HugePages::Off,
        )?;
        let layout = heap.class_layout(stride, config.debug.check_pointers);
        let class = FixedClass::new(
            0,
            layout,
            config.return_policy == ReturnPolicy::WhenEmpty,
            config.debug.check_pointers,
        );
        Ok(FixedSizeAllocator {
            heap,
            class,
            block_size_bytes,
        })
    }

    /// Bytes of each block handed out (the usable size).
    pub fn block_stride_bytes(&self) -> usize {
        self.class.block_stride_bytes()
    }

    /// Alignment every block has.
    pub fn block_align(&self) -> usize {
        self.class.block_align()
    }

    pub fn segment_bytes(&self) -> usize {
        self.heap.segment_bytes()
    }

    /// What the thread cache needs to find a live block's class (always 0: the one class
    /// is span owner 0) without this allocator (see `SegmentGeometry::slot_of`).
    pub(crate) fn geometry(&self) -> crate::alloc::segment::SegmentGeometry {
        self.heap.geometry()
    }

    /// `SegmentHeap::set_class_cap`, before the first allocation.
    pub(crate) fn set_class_cap(&mut self, cap: u16) {
        self.heap.set_class_cap(cap);
    }
}

impl Strategy for FixedSizeAllocator {
    fn name(&self) -> &'static str {
        "fixed-size"
    }

    #[inline]
    fn allocate(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, PoolError> {
        if size > self.class.block_stride_bytes() || align > self.class.block_align() {
            return Err(PoolError::invalid_op(
                self.heap.upstream().pool_name(),
                format!(
                    "fixed-size pool serves blocks of {} bytes aligned to {}; request of {size} bytes aligned to {align} does not fit",
                    self.block_size_bytes,
                    self.class.block_align()
                ),
            ));
        }
        self.class
            .allocate(&mut self.heap)
            .map_err(|e| with_request(e, size))
    }

    #[inline]
    unsafe fn deallocate(&mut self, ptr: NonNull<u8>) -> usize {
        // SAFETY: forwarded contract: ptr is a live block of this allocator.
        unsafe { self.class.deallocate(&mut self.heap, ptr) };
        self.class.block_stride_bytes()
    }

    #[inline]
    unsafe fn usable_size(&self, _ptr: NonNull<u8>) -> usize {
        self.class.block_stride_bytes()
    }

    unsafe fn resize_in_place(&mut self, _ptr: NonNull<u8>, new_size: usize) -> bool {
        new_size <= self.class.block_stride_bytes()
    }

    fn block_state(&self, ptr: NonNull<u8>) -> BlockState {
        match self.heap.region_of(ptr.as_ptr() as usize) {
            Region::Foreign => BlockState::Foreign,
            Region::Unowned | Region::Large { .. } => BlockState::NotLive,
            Region::Span(seg) => self
                .class
                .block_state_in(&self.heap, seg, ptr.as_ptr() as usize),
        }
    }

    fn reset(&mut self, return_chunks: bool) {
        self.class.reset();
        self.heap.reset(return_chunks);
    }

    fn reserved_bytes(&self) -> usize {
        self.heap.reserved_bytes()
    }
}

/// An upstream OOM names the chunk it could not get; the caller wants its own request.
pub(crate) fn with_request(error: PoolError, size_bytes: usize) -> PoolError {
    match error {
        PoolError::OutOfMemory {
            pool,
            available_bytes,
            limit_bytes,
            ..
        } => PoolError::OutOfMemory {
            pool,
            requested_bytes: size_bytes,
            available_bytes,
            limit_bytes,
        },
        other => other,
    }
}
