//! The size-classed allocator: one fixed-size class per entry of the size-class table,
//! sharing one segment heap, plus a large-object path.
//!
//! ```text
//! request (size, align) --class_of--> classes[c] --free list / bump / new segment
//!                       \-- size > max_class or align > 4 KiB --> large object (own chunk)
//! free(ptr) --segment page map--> span header.owner --> classes[owner] or large
//! ```
//!
//! Each class takes spans of a few pages from the shared segments (see `segment`): a span
//! is the fewest pages (1 to 16) that waste at most an eighth of it, so a sparsely used
//! class costs one small span (8 KiB for every class up to 8 KiB with the default table),
//! never a whole segment. Segments are `8 * max_class_bytes` (at least 1 MiB) of address
//! space, counted as reserved page by page as spans take them. Blocks of a class are
//! aligned to `min(lowest bit of the class size, 4 KiB)`; a request aligned beyond its
//! class moves up to the power-of-two class (`SizeClassTable::aligned_class_of`), beyond
//! 4 KiB to the large path.

use crate::alloc::fixed::{segment_bytes_for, with_request, FixedClass};
use crate::alloc::segment::{Region, SegmentHeap, MAX_IN_SEGMENT_ALIGN, OWNER_LARGE};
use crate::alloc::size_class::SizeClassTable;
use crate::alloc::{BlockState, Strategy, Upstream};
use crate::config::{HugePages, PoolConfig, ReturnPolicy};
use crate::error::PoolError;
use crate::stats::StatsCounters;
use std::ptr::NonNull;
use std::sync::Arc;

pub struct SizeClassedAllocator {
    heap: SegmentHeap,
    table: SizeClassTable,
    /// `classes[c]` serves blocks of `table.class_size(c)` bytes; its segments carry owner
    /// `c` in their headers.
    classes: Vec<FixedClass>,
    stats: Arc<StatsCounters>,
}

impl SizeClassedAllocator {
    pub fn new(upstream: Upstream, config: &PoolConfig) -> Result<Self, PoolError> {
        let table = SizeClassTable::new(&config.size_classes);
        let stats = Arc::clone(upstream.stats());
        let return_empty = config.return_policy == ReturnPolicy::WhenEmpty;
        let heap = SegmentHeap::new(
            upstream,
            segment_bytes_for(table.max_class_bytes()),
            config.initial_size_bytes,
            return_empty,
            config.huge_pages == HugePages::Off,
        )?;
        let classes = (0..table.class_count())
            .map(|c| {
                FixedClass::new(
                    c as u32,
                    heap.class_layout(table.class_size(c), config.debug.check_pointers),
                    return_empty,
                    config.debug.check_pointers,
                )
            })
            .collect();
        Ok(SizeClassedAllocator {
            heap,
            table,
            classes,
            stats,
        })
    }

    pub fn table(&self) -> &SizeClassTable {
        &self.table
    }

    pub fn segment_bytes(&self) -> usize {
        self.heap.segment_bytes()
    }

    /// What the thread cache needs to read a live block's usable size without this
    /// allocator (see `SegmentGeometry::usable_bytes`).
    pub(crate) fn geometry(&self) -> crate::alloc::segment::SegmentGeometry {
        self.heap.geometry()
    }

    /// `SegmentHeap::set_class_cap`, before the first allocation.
    pub(crate) fn set_class_cap(&mut self, cap: u16) {
        self.heap.set_class_cap(cap);
    }
}

impl Strategy for SizeClassedAllocator {
    fn name(&self) -> &'static str {
        "size-classed"
    }

    #[inline]
    fn allocate(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, PoolError> {
        if align <= MAX_IN_SEGMENT_ALIGN {
            if let Some(class) = self.table.aligned_class_of(size, align) {
                debug_assert!(self.classes[class].block_align() >= align);
                return self.classes[class]
                    .allocate(&mut self.heap)
                    .map_err(|e| with_request(e, size));
            }
        }
        let block = self
            .heap
            .alloc_large(size, align)
            .map_err(|e| with_request(e, size))?;
        self.stats.on_large_object();
        Ok(block)
    }

    fn allocate_batch(
        &mut self,
        size: usize,
        align: usize,
        usable: usize,
        out: &mut [*mut u8],
    ) -> usize {
        let class = if align <= MAX_IN_SEGMENT_ALIGN {
            self.table.aligned_class_of(size, align)
        } else {
            None
        };
        let Some(class) = class.filter(|&c| self.classes[c].block_stride_bytes() == usable) else {
            return super::allocate_each(self, size, align, usable, out);
        };
        let class = &mut self.classes[class];
        for (taken, slot) in out.iter_mut().enumerate() {
            match class.allocate(&mut self.heap) {
                Ok(block) => *slot = block.as_ptr(),
                Err(_) => return taken,
            }
        }
        out.len()
    }

    #[inline]
    unsafe fn deallocate(&mut self, ptr: NonNull<u8>) -> usize {
        // SAFETY: ptr is a live block of ours (caller's contract), so its header is ours.
        let header = unsafe { self.heap.header_of(ptr) };
        // SAFETY: the header is initialised.
        let owner = unsafe { header.as_ref().owner };
        if owner == OWNER_LARGE {
            // SAFETY: the live large object at ptr is not used any more (caller).
            unsafe { self.heap.free_large(header) }
        } else {
            let class = &mut self.classes[owner as usize];
            let usable = class.block_stride_bytes();
            // SAFETY: ptr is a live block of class `owner` (its segment says so).
            unsafe { class.deallocate(&mut self.heap, ptr) };
            usable
        }
    }

    #[inline]
    unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: ptr is a live block of ours (caller's contract).
        let header = unsafe { self.heap.header_of(ptr) };
        // SAFETY: the header is initialised; a large header describes a live object.
        unsafe {
            if header.as_ref().owner == OWNER_LARGE {
                self.heap.large_usable_bytes(header)
            } else {
                header.as_ref().block_stride_bytes
            }
        }
    }

    /// In place while the block stays less than twice the new size (shrinking further
    /// would strand memory in a too-large block).
    unsafe fn resize_in_place(&mut self, ptr: NonNull<u8>, new_size: usize) -> bool {
        // SAFETY: forwarded contract: ptr is a live block of ours.
        let usable = unsafe { self.usable_size(ptr) };
        new_size <= usable && new_size.saturating_mul(2) > usable
    }

    fn block_state(&self, ptr: NonNull<u8>) -> BlockState {
        let addr = ptr.as_ptr() as usize;
        match self.heap.region_of(addr) {
            Region::Foreign => BlockState::Foreign,
            Region::Unowned => BlockState::NotLive,
            Region::Large {
                block_addr,
                usable_bytes,
            } => {
                if addr == block_addr {
                    BlockState::Live(usable_bytes)
                } else {
                    BlockState::NotLive
                }
            }
            Region::Span(seg) => {
                // SAFETY: region_of returns class-owned segments only.
                let owner = unsafe { seg.as_ref().owner } as usize;
                match self.classes.get(owner) {
                    Some(class) => class.block_state_in(&self.heap, seg, addr),
                    None => BlockState::NotLive,
                }
            }
        }
    }

    fn reset(&mut self, return_chunks: bool) {
        for class in &mut self.classes {
            class.reset();
        }
        self.heap.reset(return_chunks);
    }

    fn reserved_bytes(&self) -> usize {
        self.heap.reserved_bytes()
    }
}
