//! The front cache: bounded LIFO stacks of recently freed small blocks, one per block size,
//! in front of the TLSF lists.
//!
//! ```text
//!  bins[need >> GRANULE_LOG2]   top ──► [used 48 B | link] ──► [used 48 B | link] ──► null
//!                                        header      payload
//! ```
//!
//! Freeing a block of at most `MAX_BLOCK_BYTES` pushes it on the stack of its exact size
//! (one link write); allocating pops from the stack of the exact block size the request
//! needs. Neither writes a header, a neighbour, a free list or a bitmap: a cached block
//! keeps the header of a used block, and only its stack records that it is cached (so the
//! checked lookup `block_state` scans that one stack, at most `BLOCKS_PER_BIN` blocks, to
//! report it not live; not writing the header keeps the hot path free of a
//! store-to-load dependency between a free and the next allocation). To the
//! TLSF core a cached block is a used block: it does not coalesce, and its neighbours see
//! it as used. The price is memory that cannot merge while cached, hence a static bound per
//! size: a bin of `b`-byte blocks holds at most `bin_limit(b) = clamp(BIN_BUDGET_BYTES / b,
//! 1, BLOCKS_PER_BIN)` blocks: 32 blocks of every size up to 2 KiB, 15 to 31 of the sizes
//! up to `MAX_BLOCK_BYTES` (4 KiB of payload, the thread cache's largest class by
//! default), so at most `BIN_BUDGET_BYTES` (64 KiB) a size. The bound needs no byte
//! counter on the hot path: push compares one count with one limit. Over all 256 sizes
//! the cache could hold `ENABLED_MAX_BYTES` (about 12 MiB), but only sizes a program
//! frees fill, a few dozen in practice.
//!
//! The depth is for the thread caches in front (`CpuPool`'s default). A thread whose
//! magazine of a class is full gives half of it back here, and a thread whose magazine is
//! empty takes a batch, both in blocks of the class's exact size: with deep bins those
//! are pointer moves, not splits and coalescing (issue 13: a churn of 1,024 blocks of
//! 16 B - 4 KiB went from 12.1 to 9.2 ns a step when the bins went from 2 KiB to 64 KiB
//! a size; `docs/performance.md`).
//!
//! The cache never makes the allocator grow or fail, so its depth costs no reserved
//! memory: when the free lists cannot serve a request, the cache is flushed (its blocks
//! freed to the lists, coalescing) before a new chunk is asked for. Each flushed block was
//! pushed once, so flushing is amortised O(1); one flush is at most every bin's blocks.
//!
//! `ReturnPolicy::WhenEmpty`: only blocks of the initial chunk (which is never returned)
//! are cached, so a cached block never keeps a grown chunk alive: grown chunks free their
//! blocks straight to the lists and go back the moment they are empty, as without the
//! cache. The choice costs the cache nothing but blocks of grown chunks.

use super::block::{payload_of, BlockHdr, FREE_HDR_BYTES, HDR_BYTES};
use super::mapping::GRANULE_LOG2;
use super::Tlsf;
use std::ptr;

/// Largest block (bytes, header included) the cache holds: requests of up to 4 KiB, the
/// default thread cache's largest class.
pub(super) const MAX_BLOCK_BYTES: usize = 4096 + HDR_BYTES;
/// One stack per block size that is a multiple of the granule, up to `MAX_BLOCK_BYTES`.
const BIN_COUNT: usize = (MAX_BLOCK_BYTES >> GRANULE_LOG2) + 1;
/// Blocks one stack holds at most (the stacks of blocks of up to 2 KiB).
pub(super) const BLOCKS_PER_BIN: u32 = 32;
/// Bytes (block sizes, headers included) one stack holds at most.
pub(super) const BIN_BUDGET_BYTES: usize = 64 * 1024;
/// Bytes (block sizes, headers included) the enabled cache holds at most: every stack
/// full to its limit (about 12 MiB; reached only by a program that frees blocks of all
/// 256 sizes and allocates none of them again).
pub(super) const ENABLED_MAX_BYTES: usize = enabled_max_bytes();
const _: () = assert!(ENABLED_MAX_BYTES <= 16 * 1024 * 1024);

const fn enabled_max_bytes() -> usize {
    let mut total = 0;
    let mut index = 0;
    while index < BIN_COUNT {
        let block_bytes = index << GRANULE_LOG2;
        total += bin_limit(block_bytes) as usize * block_bytes;
        index += 1;
    }
    total
}

/// Blocks the stack of `block_bytes`-byte blocks holds at most when the cache is on:
/// `clamp(BIN_BUDGET_BYTES / block_bytes, 1, BLOCKS_PER_BIN)`, so that
/// `bin_limit(b) * b <= BIN_BUDGET_BYTES` for every `b <= MAX_BLOCK_BYTES` (the clamp to 1
/// never binds: `MAX_BLOCK_BYTES <= BIN_BUDGET_BYTES`); 0 for sizes below
/// `FREE_HDR_BYTES`, which no block has.
pub(super) const fn bin_limit(block_bytes: usize) -> u32 {
    if block_bytes < FREE_HDR_BYTES {
        return 0;
    }
    let limit = BIN_BUDGET_BYTES / block_bytes;
    if limit < 1 {
        1
    } else if limit > BLOCKS_PER_BIN as usize {
        BLOCKS_PER_BIN
    } else {
        limit as u32
    }
}

/// One stack of cached blocks of a single size.
#[derive(Clone, Copy)]
pub(super) struct Bin {
    /// The most recently cached block; null when the stack is empty. Each block's next
    /// link is the first word of its payload.
    pub top: *mut BlockHdr,
    pub count: u32,
    /// `bin_limit` of the bin's block size, or 0 while the cache is disabled.
    pub limit: u32,
}

pub(super) struct FrontCache {
    /// Invariant: `bins[b]` is a null-terminated stack of exactly `bins[b].count <=
    /// bins[b].limit <= bin_limit(b << GRANULE_LOG2)` distinct blocks of this allocator
    /// (so the cache holds at most `ENABLED_MAX_BYTES`), each of exactly
    /// `b << GRANULE_LOG2` bytes, used (not `FREE`) as far as headers go, freed by its
    /// owner, lying in the cacheable range; no block is in two stacks.
    pub bins: [Bin; BIN_COUNT],
    /// Whether the cache is on. Invariant: when off, every bin is empty with limit 0 (so
    /// nothing is pushed); when on, every bin's limit is its `bin_limit`.
    pub enabled: bool,
    /// Blocks whose header lies in `[cacheable_start, cacheable_start + cacheable_len)`
    /// may be cached: everything, or under `ReturnPolicy::WhenEmpty` the initial chunk.
    pub cacheable_start: usize,
    pub cacheable_len: usize,
}

impl FrontCache {
    /// An empty, enabled cache for blocks whose header lies in the given range.
    pub(super) fn new(cacheable_start: usize, cacheable_len: usize) -> Self {
        let mut cache = FrontCache {
            bins: [Bin {
                top: ptr::null_mut(),
                count: 0,
                limit: 0,
            }; BIN_COUNT],
            enabled: false,
            cacheable_start,
            cacheable_len,
        };
        cache.set_limits(true);
        cache
    }

    /// Set every bin's limit for the cache on or off. The bins must be empty when turning
    /// it off.
    fn set_limits(&mut self, enabled: bool) {
        for (index, bin) in self.bins.iter_mut().enumerate() {
            debug_assert!(enabled || bin.count == 0);
            bin.limit = if enabled {
                bin_limit(Self::bin_block_bytes(index))
            } else {
                0
            };
        }
        self.enabled = enabled;
    }

    /// A cached block of exactly `block_bytes` (a multiple of the granularity), taken off
    /// its stack; `None` when that stack is empty or the size is not cached.
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
        bin.top = unsafe { payload_of(block).cast::<*mut BlockHdr>().read() };
        bin.count -= 1;
        Some(block)
    }

    /// Cache `block` if its size has a bin with room (below its limit) and it lies in the
    /// cacheable range; `false` leaves it untouched.
    ///
    /// # Safety
    /// `block` is a used block of this allocator, of `size_bytes` bytes, that its owner
    /// has just given back (not free, not cached).
    #[inline(always)]
    pub(super) unsafe fn push(&mut self, block: *mut BlockHdr, size_bytes: usize) -> bool {
        let Some(bin) = self.bins.get_mut(size_bytes >> GRANULE_LOG2) else {
            return false;
        };
        if bin.count >= bin.limit
            || (block as usize).wrapping_sub(self.cacheable_start) >= self.cacheable_len
        {
            return false;
        }
        // SAFETY: `block` is a used block of ours nobody else uses now (caller); its
        // payload is at least `min_block_bytes - HDR_BYTES >= 16` bytes, aligned to the
        // granularity, so the link word fits and is aligned.
        unsafe { payload_of(block).cast::<*mut BlockHdr>().write(bin.top) };
        bin.top = block;
        bin.count += 1;
        true
    }

    /// Whether `block`, a block of `size_bytes` bytes, is in the cache: a walk of the one
    /// stack of that size (at most `BLOCKS_PER_BIN` links). For checks, not the hot path.
    pub(super) fn holds(&self, block: *mut BlockHdr, size_bytes: usize) -> bool {
        let Some(bin) = self.bins.get(size_bytes >> GRANULE_LOG2) else {
            return false;
        };
        let mut node = bin.top;
        for _ in 0..bin.count {
            if node == block {
                return true;
            }
            // SAFETY: `node` is a cached block of ours (invariant of `bins`, which holds
            // `count` linked blocks): its payload holds the next link.
            node = unsafe { payload_of(node).cast::<*mut BlockHdr>().read() };
        }
        false
    }

    /// Forget every cached block (for a reset, which lays out every chunk anew).
    pub(super) fn clear(&mut self) {
        for bin in self.bins.iter_mut() {
            bin.top = ptr::null_mut();
            bin.count = 0;
        }
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
        self.flush_cache_counting();
    }

    /// `flush_cache`, returning how many blocks it freed.
    pub(super) fn flush_cache_counting(&mut self) -> usize {
        let mut flushed = 0;
        for index in 0..BIN_COUNT {
            let block_bytes = FrontCache::bin_block_bytes(index);
            while let Some(block) = self.front_cache.pop(block_bytes) {
                // SAFETY: a block popped from the cache is a used block of ours that no
                // one uses (its owner freed it before it was cached).
                unsafe { self.free_to_lists(block) };
                flushed += 1;
            }
        }
        debug_assert_eq!(self.cached_block_count(), 0);
        flushed
    }

    /// Turn the front cache on (the default) or off; turning it off flushes it. With the
    /// cache off every free coalesces at once, as in plain TLSF.
    pub fn set_front_cache(&mut self, enabled: bool) {
        if !enabled {
            self.flush_cache();
        }
        self.front_cache.set_limits(enabled);
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
    /// than `ENABLED_MAX_BYTES` (64 KiB per block size). O(sizes): computed from the
    /// per-size counts, so the hot path keeps no byte counter.
    pub fn cached_bytes(&self) -> usize {
        self.front_cache
            .bins
            .iter()
            .enumerate()
            .map(|(index, bin)| bin.count as usize * FrontCache::bin_block_bytes(index))
            .sum()
    }
}
