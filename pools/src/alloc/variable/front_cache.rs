//! The front cache: bounded LIFO stacks of recently freed small blocks, one per block size,
//! in front of the TLSF lists.
//!
//! ```text
//!  bins[need >> GRANULE_LOG2]   top ──► [CACHED 48 B | link] ──► [CACHED 48 B | link] ──► null
//!                                        header      payload
//! ```
//!
//! Freeing a block of at most `MAX_BLOCK_BYTES` pushes it on the stack of its exact size
//! (one header write, one link write); allocating pops from the stack of the exact block
//! size the request needs. Neither touches a neighbour, a free list or a bitmap. To the
//! TLSF core a cached block is a used block: it does not coalesce, and its neighbours see
//! it as used. The price is memory that cannot merge while cached, hence the bounds:
//! `BLOCKS_PER_BIN` blocks a size and `max_bytes` in all.
//!
//! The cache never makes the allocator grow or fail: when the free lists cannot serve a
//! request, the cache is flushed (its blocks freed to the lists, coalescing) before a new
//! chunk is asked for. Each flushed block was pushed once, so flushing is amortised O(1).
//!
//! `ReturnPolicy::WhenEmpty`: only blocks of the initial chunk (which is never returned)
//! are cached, so a cached block never keeps a grown chunk alive: grown chunks free their
//! blocks straight to the lists and go back the moment they are empty, as without the
//! cache. The choice costs the cache nothing but blocks of grown chunks.

use super::block::{payload_of, BlockHdr, CACHED};
use super::mapping::GRANULE_LOG2;
use super::Tlsf;
use std::ptr;

/// Largest block (bytes, header included) the cache holds: requests of up to 2 KiB less
/// the header.
pub(super) const MAX_BLOCK_BYTES: usize = 2048;
/// One stack per block size that is a multiple of the granule, up to `MAX_BLOCK_BYTES`.
const BIN_COUNT: usize = (MAX_BLOCK_BYTES >> GRANULE_LOG2) + 1;
/// Blocks one stack holds at most.
pub(super) const BLOCKS_PER_BIN: u32 = 32;
/// Bytes (block sizes, headers included) the enabled cache holds at most.
pub(super) const ENABLED_MAX_BYTES: usize = 256 * 1024;

/// One stack of cached blocks of a single size.
#[derive(Clone, Copy)]
pub(super) struct Bin {
    /// The most recently cached block; null when the stack is empty. Each block's next
    /// link is the first word of its payload.
    pub top: *mut BlockHdr,
    pub count: u32,
}

pub(super) struct FrontCache {
    /// Invariant: `bins[b]` is a null-terminated stack of exactly `bins[b].count <=
    /// BLOCKS_PER_BIN` distinct blocks of this allocator, each of exactly
    /// `b << GRANULE_LOG2` bytes, flagged `CACHED` and not `FREE`, lying in the cacheable
    /// range. Every block flagged `CACHED` is in exactly one stack.
    pub bins: [Bin; BIN_COUNT],
    /// Invariant: the sum of the sizes of the cached blocks, at most `max_bytes`.
    pub cached_bytes: usize,
    /// `ENABLED_MAX_BYTES`, or 0 when the cache is disabled (nothing is pushed).
    pub max_bytes: usize,
    /// Blocks whose header lies in `[cacheable_start, cacheable_start + cacheable_len)`
    /// may be cached: everything, or under `ReturnPolicy::WhenEmpty` the initial chunk.
    pub cacheable_start: usize,
    pub cacheable_len: usize,
}

impl FrontCache {
    /// An empty, enabled cache for blocks whose header lies in the given range.
    pub(super) fn new(cacheable_start: usize, cacheable_len: usize) -> Self {
        FrontCache {
            bins: [Bin {
                top: ptr::null_mut(),
                count: 0,
            }; BIN_COUNT],
            cached_bytes: 0,
            max_bytes: ENABLED_MAX_BYTES,
            cacheable_start,
            cacheable_len,
        }
    }

    /// A cached block of exactly `block_bytes` (a multiple of the granularity), no longer
    /// flagged `CACHED`; `None` when that stack is empty or the size is not cached.
    #[inline(always)]
    pub(super) fn pop(&mut self, block_bytes: usize) -> Option<*mut BlockHdr> {
        // Sizes past `MAX_BLOCK_BYTES` have no bin: the bounds check is the size check.
        let bin = self.bins.get_mut(block_bytes >> GRANULE_LOG2)?;
        let block = bin.top;
        if block.is_null() {
            return None;
        }
        // SAFETY: `block` is a cached block of ours (invariant of `bins`): its header is
        // valid and its payload, at least one word, holds the next link.
        unsafe {
            bin.top = payload_of(block).cast::<*mut BlockHdr>().read();
            (*block).size_and_flags &= !CACHED;
        }
        bin.count -= 1;
        self.cached_bytes -= block_bytes;
        Some(block)
    }

    /// Cache `block` if its size has a bin with room, the byte bound allows it and it lies
    /// in the cacheable range; `false` leaves it untouched.
    ///
    /// # Safety
    /// `block` is a used block of this allocator, of `size_bytes` bytes, that its owner
    /// has just given back (not free, not cached).
    #[inline(always)]
    pub(super) unsafe fn push(&mut self, block: *mut BlockHdr, size_bytes: usize) -> bool {
        let Some(bin) = self.bins.get_mut(size_bytes >> GRANULE_LOG2) else {
            return false;
        };
        if bin.count >= BLOCKS_PER_BIN
            || self.cached_bytes + size_bytes > self.max_bytes
            || (block as usize).wrapping_sub(self.cacheable_start) >= self.cacheable_len
        {
            return false;
        }
        // SAFETY: `block` is a used block of ours nobody else uses now (caller); its
        // payload is at least `min_block_bytes - HDR_BYTES >= 16` bytes, aligned to the
        // granularity, so the link word fits and is aligned.
        unsafe {
            payload_of(block).cast::<*mut BlockHdr>().write(bin.top);
            (*block).size_and_flags |= CACHED;
        }
        bin.top = block;
        bin.count += 1;
        self.cached_bytes += size_bytes;
        true
    }

    /// Forget every cached block (for a reset, which lays out every chunk anew).
    pub(super) fn clear(&mut self) {
        for bin in self.bins.iter_mut() {
            bin.top = ptr::null_mut();
            bin.count = 0;
        }
        self.cached_bytes = 0;
    }

    /// Bytes of the blocks in bin `index`.
    pub(super) fn bin_block_bytes(index: usize) -> usize {
        index << GRANULE_LOG2
    }
}

impl Tlsf {
    /// Free every cached block to the TLSF lists, coalescing with its neighbours. After
    /// freeing every live block and flushing, each chunk is one free block again.
    pub fn flush_cache(&mut self) {
        for index in 0..BIN_COUNT {
            let block_bytes = FrontCache::bin_block_bytes(index);
            while let Some(block) = self.front_cache.pop(block_bytes) {
                // SAFETY: a block popped from the cache is a used block of ours that no
                // one uses (its owner freed it before it was cached).
                unsafe { self.free_to_lists(block) };
            }
        }
        debug_assert_eq!(self.front_cache.cached_bytes, 0);
    }

    /// Turn the front cache on (the default) or off; turning it off flushes it. With the
    /// cache off every free coalesces at once, as in plain TLSF.
    pub fn set_front_cache(&mut self, enabled: bool) {
        if enabled {
            self.front_cache.max_bytes = ENABLED_MAX_BYTES;
        } else {
            self.flush_cache();
            self.front_cache.max_bytes = 0;
        }
    }

    /// Blocks held by the front cache now.
    pub fn cached_block_count(&self) -> usize {
        self.front_cache
            .bins
            .iter()
            .map(|bin| bin.count as usize)
            .sum()
    }

    /// Bytes (block sizes, headers included) held by the front cache now; never more
    /// than 256 KiB.
    pub fn cached_bytes(&self) -> usize {
        self.front_cache.cached_bytes
    }
}
