//! Variable-size allocator: two-level segregated fit (TLSF) with boundary tags.
//!
//! - [`Tlsf`] (this file): the type, its invariants and the `Strategy` operations.
//! - `block`: block headers (boundary tags) and their flags.
//! - `mapping`: block size -> (first level, second level) free list.
//! - `free_lists`: linking, unlinking, the O(1) bitmap search and the fit policies.
//! - `front_cache`: bounded per-size stacks of recently freed small blocks in front of
//!   the lists (the O(1) fast path of small allocations and frees).
//! - `chunks`: chunks from the upstream: adding, returning, resetting.
//! - `walk`: the checked pointer lookup (`block_state`) and the heap walker
//!   (`check_invariants`).
#![deny(unsafe_op_in_unsafe_fn)]

mod block;
pub(crate) use self::block::{free_hint_and_usable, usable_bytes_unlocked};
mod chunks;
mod free_lists;
mod front_cache;
mod mapping;
mod walk;

use self::block::{
    header_at, hint_bits, payload_of, size_of_word, BlockHdr, FreeBlockHdr, FREE, FREE_HDR_BYTES,
    HDR_BYTES, MAX_BLOCK_BYTES, PREV_FREE,
};
use self::chunks::ChunkRecord;
use self::front_cache::FrontCache;
use self::mapping::{FL_COUNT, GRANULE_BYTES, SL_COUNT};
use super::{BlockState, Strategy, Upstream};
use crate::config::{FitPolicy, PoolConfig, ReturnPolicy};
use crate::error::PoolError;
use std::ptr::{self, NonNull};

/// Largest request served (bytes): far beyond any real chunk, and low enough that size
/// arithmetic (header, alignment slack, list rounding) cannot overflow and that every
/// block it needs stays below `MAX_BLOCK_BYTES` (the size word's top bits are the free
/// hint's).
#[cfg(target_pointer_width = "64")]
const MAX_REQUEST_BYTES: usize = 1 << 46;
#[cfg(not(target_pointer_width = "64"))]
const MAX_REQUEST_BYTES: usize = 1 << (usize::BITS - 4);
const _: () = assert!(MAX_REQUEST_BYTES + 2 * MAX_ALIGN_BYTES < MAX_BLOCK_BYTES / 2);
/// Largest alignment served (bytes), as `PoolConfig::validate` allows for the pool.
const MAX_ALIGN_BYTES: usize = 1 << 30;
/// Alignment asked of the upstream for every chunk: a page, so chunks start clean.
const CHUNK_ALIGN_BYTES: usize = 4096;

/// A TLSF allocator over chunks taken from an [`Upstream`].
///
/// Free blocks sit in segregated lists indexed by a first level (the power of two of the
/// size) and a second level (one of 32 equal slices of that power of two). Two bitmaps
/// record which lists are non-empty, so finding a list that holds a big enough block is
/// two `trailing_zeros` and allocation and free are O(1).
///
/// ```text
///  fl_bitmap     bit fl set iff sl_bitmaps[fl] != 0
///  ┌─┬─┬─┬─┬──
///  │0│1│1│0│..     sl_bitmaps[fl]    bit sl set iff free_lists[fl][sl] is non-empty
///  └─┴┬┴┬┴─┴──
///     │ │   ┌─┬─┬─┬─┬──
///     │ └──►│0│0│0│1│..   free_lists[2][3] ──► [free 1120 B] ⇄ [free 1136 B] ──► null
///     │     └─┴─┴─┴─┴──
///     │     ┌─┬──┬─┬──
///     └────►│0│..│1│..   free_lists[1][7] ──► [free 624 B] ──► null
///           └─┴──┴─┴──
///
///  one chunk: blocks tile it from the first block to the sentinel
///  ┌─────┬───────────┬────────────┬──────────┬─────┬──────────┬──────┐
///  │ pad │ used 96 B │ free 624 B │ used 48 B│ ... │ sentinel │ tail │
///  └─────┴───────────┴────────────┴──────────┴─────┴──────────┴──────┘
///          ◄──────── prev_phys ─┘  ◄─ prev_phys ─┘
///  every block:  [size | FREE | PREV_FREE | SENTINEL][prev_phys] payload...
///  a free block: [size | FREE | PREV_FREE          ][prev_phys][next_free][prev_free]
/// ```
///
/// Boundary tags (the size word, the `PREV_FREE` flag and `prev_phys`) let a free merge
/// with both physical neighbours in O(1). Each chunk ends in a sentinel block that is
/// never free, and a chunk's first block has no previous block, so blocks of different
/// chunks never merge. Alignment above the granularity is served by taking a block with
/// enough slack and splitting the leading gap off as a free block.
///
/// In front of the lists sits a bounded front cache (`front_cache`): a small block that is
/// freed is pushed on a stack of blocks of its exact size, and a request needing a block
/// of that size pops it, both O(1) without touching neighbours, lists, bitmaps or the
/// block's header. Cached blocks count as used to the TLSF core; `flush_cache` frees them to the lists, and a
/// request the lists cannot serve flushes the cache before the allocator grows.
/// `set_front_cache(false)` turns it off.
///
/// Fit policies (`PoolConfig::fit`), for a request needing a block of `need` bytes:
/// - `BestFit`: when `need` is the smallest size of its list (always in the exact levels 0
///   and 1), the head of the first non-empty list from there on (all its blocks fit, and
///   below 1 KiB they are all of size `need`). Otherwise scan (at most
///   `BEST_FIT_SCAN_LIMIT` blocks of) the list `need` maps to for the smallest block that
///   fits, stopping at an exact fit; failing that, TLSF good fit: the head of the first
///   non-empty list whose every block fits.
/// - `FirstFit`: the head of the list `need` maps to if it fits (no rounding up), else
///   the head of the first non-empty list whose every block fits. Strictly O(1).
pub struct Tlsf {
    upstream: Upstream,
    fit: FitPolicy,
    /// `ReturnPolicy::WhenEmpty`: a grown chunk whose blocks are all free goes back to the
    /// upstream at once.
    release_empty_chunks: bool,
    /// A power of two, at least `GRANULE_BYTES` and the configured alignment.
    /// Invariant: every block size and every payload address is a multiple of it.
    granularity_bytes: usize,
    /// `FREE_HDR_BYTES` rounded up to `granularity_bytes`.
    /// Invariant: every block (except sentinels) is at least this large, so any block can
    /// become free in place and any split-off remainder can hold its free-list links.
    min_block_bytes: usize,
    /// Invariant: bit `fl` is set iff `sl_bitmaps[fl] != 0`.
    fl_bitmap: u64,
    /// Invariant: bit `sl` of `sl_bitmaps[fl]` is set iff `free_lists[fl][sl]` is non-null.
    sl_bitmaps: [u32; FL_COUNT],
    /// Invariant: `free_lists[fl][sl]` heads a null-terminated doubly linked list (via
    /// `next_free` / `prev_free`) of exactly the free blocks, in any of `chunks`, whose size
    /// maps to `(fl, sl)` (`mapping::list_of`). Every free block is in its list once.
    free_lists: [[*mut FreeBlockHdr; SL_COUNT]; FL_COUNT],
    /// Invariant: the number of blocks in all of `free_lists`.
    free_block_count: usize,
    /// Invariant: sorted by address and non-overlapping; exactly the chunks taken from
    /// `upstream` and not yet released; blocks tile each one from `first_block` to
    /// `sentinel`, and no two physically adjacent blocks are both free.
    chunks: Vec<ChunkRecord>,
    /// Recently freed small blocks, used as far as the fields above are concerned
    /// (invariants on `FrontCache`).
    front_cache: FrontCache,
    /// `free_hints[u / 16]`: the free hint (`block::free_hint_and_usable`) that
    /// `allocate_batch` writes into blocks of `u` usable bytes: the slot of the thread
    /// cache's class of exactly that size (`set_free_hints`). Empty: no hints.
    free_hints: Box<[u16]>,
}

// SAFETY: the raw pointers all point into chunks this `Tlsf` owns exclusively (the
// upstream hands each chunk to one strategy); nothing is tied to the creating thread.
unsafe impl Send for Tlsf {}

impl Tlsf {
    /// A TLSF allocator drawing chunks from `upstream`. Uses `config.fit`,
    /// `config.alignment` (the least alignment of every block), `config.return_policy`
    /// (`WhenEmpty` returns a grown chunk as soon as it is entirely free) and
    /// `config.initial_size_bytes` (taken at once as the first chunk when non-zero; that
    /// chunk is kept by `reset`).
    pub fn new(upstream: Upstream, config: &PoolConfig) -> Result<Tlsf, PoolError> {
        if !config.alignment.is_power_of_two() || config.alignment > MAX_ALIGN_BYTES {
            return Err(PoolError::invalid_op(
                upstream.pool_name(),
                format!(
                    "alignment {} must be a power of two of at most {MAX_ALIGN_BYTES} bytes",
                    config.alignment
                ),
            ));
        }
        let granularity_bytes = config.alignment.max(GRANULE_BYTES);
        let release_empty_chunks = config.return_policy == ReturnPolicy::WhenEmpty;
        let mut tlsf = Tlsf {
            upstream,
            fit: config.fit,
            release_empty_chunks,
            granularity_bytes,
            min_block_bytes: FREE_HDR_BYTES.next_multiple_of(granularity_bytes),
            fl_bitmap: 0,
            sl_bitmaps: [0; FL_COUNT],
            free_lists: [[ptr::null_mut(); SL_COUNT]; FL_COUNT],
            free_block_count: 0,
            chunks: Vec::new(),
            // Every block may be cached; under `WhenEmpty` those of the initial chunk only
            // (set below), so that the cache never keeps a returnable chunk alive.
            front_cache: FrontCache::new(0, if release_empty_chunks { 0 } else { usize::MAX }),
            free_hints: Box::new([]),
        };
        if config.initial_size_bytes > 0 {
            let bytes = config
                .initial_size_bytes
                .max(tlsf.min_block_bytes + tlsf.chunk_overhead_bytes());
            let chunk = tlsf.upstream.alloc_exact(bytes, tlsf.chunk_align_bytes())?;
            if release_empty_chunks {
                tlsf.front_cache.cacheable_start = chunk.addr();
                tlsf.front_cache.cacheable_len = chunk.len;
            }
            let block = tlsf.add_chunk(chunk, true);
            // SAFETY: `add_chunk` returned the chunk's only block, free and in no list.
            unsafe { tlsf.link(block, (*block).size()) };
        }
        Ok(tlsf)
    }

    /// Free blocks now, not counting cached ones (after freeing everything and
    /// `flush_cache`: exactly one per chunk).
    pub fn free_block_count(&self) -> usize {
        self.free_block_count
    }

    /// Chunks held from the upstream now.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Bytes every block size and payload address is a multiple of.
    pub fn granularity_bytes(&self) -> usize {
        self.granularity_bytes
    }

    /// The free hints `allocate_batch` writes: `hints[u / 16]` for blocks of `u` usable
    /// bytes (a thread cache's `exact_slot_of_granule` table). The pool's cache trusts a
    /// hint only after checking it against the block's size, so any value is safe for
    /// the allocator; the cache relies on every hint being one of this table's entries.
    pub(crate) fn set_free_hints(&mut self, hints: &[u16]) {
        self.free_hints = hints.into();
    }

    /// The hint bits for blocks of `usable` bytes (0: none).
    #[inline]
    fn hint_bits_for(&self, usable: usize) -> usize {
        hint_bits(self.free_hints.get(usable / 16).copied().unwrap_or(0))
    }

    /// Bytes of the smallest block that can hold `size` payload bytes.
    #[inline(always)]
    fn block_bytes_for(&self, size: usize) -> usize {
        ((size + HDR_BYTES + self.granularity_bytes - 1) & !(self.granularity_bytes - 1))
            .max(self.min_block_bytes)
    }

    /// Turn the free, unlinked `block` into a used block of `need` bytes, splitting off
    /// the rest as a free block when it is big enough to be one.
    ///
    /// # Safety
    /// `block` is a free block of this allocator, in no free list, at least `need` bytes;
    /// `need` is a multiple of `granularity_bytes` and at least `min_block_bytes`.
    #[inline(always)]
    unsafe fn carve(&mut self, block: *mut BlockHdr, need: usize) -> NonNull<u8> {
        // SAFETY: `block` is a live header of our chunks (caller); `block + size` is its
        // physical successor (a block or the sentinel) and `block + need` lies inside it.
        unsafe {
            let size = (*block).size();
            debug_assert!((*block).is_free() && size >= need);
            // The block was free, so its predecessor is used: `PREV_FREE` is clear.
            let next = header_at(block, size);
            let rest = size - need;
            if rest >= self.min_block_bytes {
                let remainder = header_at(block, need);
                (*remainder).set_word(rest | FREE);
                (*remainder).prev_phys = block;
                // `next` keeps `PREV_FREE`: its predecessor is still a free block.
                (*next).prev_phys = remainder;
                self.link(remainder, rest);
                (*block).set_word(need | ((*block).word() & PREV_FREE));
            } else {
                (*next).clear_prev_free();
                (*block).set_word(size | ((*block).word() & PREV_FREE));
            }
            NonNull::new_unchecked(payload_of(block))
        }
    }

    /// `carve` for a block still in its free list `list`. When the remainder maps to the
    /// same list (the common case of splitting a large block) it takes the block's place
    /// in the list, which saves an unlink, a link and their bitmap updates.
    ///
    /// # Safety
    /// `block` is a free block of this allocator in list `list`, at least `need` bytes;
    /// `need` is a multiple of `granularity_bytes` and at least `min_block_bytes`.
    #[inline(always)]
    unsafe fn carve_linked(
        &mut self,
        block: *mut BlockHdr,
        list: (usize, usize),
        need: usize,
    ) -> NonNull<u8> {
        // SAFETY: as in `carve`: `block + need` and `block + size` lie in the block's chunk;
        // the remainder's header (at `block + need`, `need >= min_block_bytes`) does not
        // overlap `block`'s list links, which `replace_in_list` / `unlink_from` read.
        unsafe {
            let size = (*block).size();
            let rest = size - need;
            if rest < self.min_block_bytes {
                self.unlink_from(block, list);
                return self.carve(block, need);
            }
            let remainder = header_at(block, need);
            (*remainder).set_word(rest | FREE);
            (*remainder).prev_phys = block;
            // The successor keeps `PREV_FREE`: its predecessor is still a free block.
            (*header_at(block, size)).prev_phys = remainder;
            let rest_list = mapping::list_of(rest);
            if rest_list == list {
                self.replace_in_list(block, remainder, list);
            } else {
                self.unlink_from(block, list);
                self.link_to(remainder, rest_list);
            }
            // A listed block is free, so its predecessor is used: `PREV_FREE` is clear.
            (*block).set_word(need);
            NonNull::new_unchecked(payload_of(block))
        }
    }

    /// Split as many `need`-byte blocks off the front of the free `block` as `out` takes
    /// and the block holds, in one `carve_linked`, and write their payloads to `out`:
    /// the blocks (and the remainder left in the lists) that as many `allocate`s of `need`
    /// bytes in a row would carve from it, since each would find the remainder again.
    /// Returns how many were written and whether all of them are exactly `need` bytes;
    /// a last block that absorbed a remainder too small to be free is given back instead
    /// (as `allocate_each` gives back a block of another usable size).
    ///
    /// # Safety
    /// `block` is a free block of this allocator in list `list`, at least `need` bytes;
    /// `need` is a multiple of `granularity_bytes` and at least `min_block_bytes`.
    unsafe fn carve_run(
        &mut self,
        block: *mut BlockHdr,
        list: (usize, usize),
        need: usize,
        hint: usize,
        out: &mut [*mut u8],
    ) -> (usize, bool) {
        // SAFETY: the caller's contract: `block` is a free block of ours of at least `need`
        // bytes; `count * need` is at most its size, so the run `carve_linked` carves is
        // at least that long and every header written below lies inside it, except the
        // last, `header_at(prev, last_bytes)`: the run's physical successor (a block or
        // the sentinel) in the same chunk.
        unsafe {
            let count = out.len().min((*block).size() / need);
            let first = self.carve_linked(block, list, count * need).as_ptr();
            let first = first.sub(HDR_BYTES).cast::<BlockHdr>();
            // `carve_linked` wrote the run's header and made the run's successor (the
            // remainder, or the block after it) point back at the run.
            let total = (*first).size();
            let flags = (*first).word() & PREV_FREE;
            let mut prev = first;
            (*first).set_word(need | flags | hint);
            out[0] = payload_of(first);
            for slot in out.iter_mut().take(count).skip(1) {
                let hdr = header_at(prev, need);
                // Its predecessor is used: `PREV_FREE` clear.
                (*hdr).set_word(need | hint);
                (*hdr).prev_phys = prev;
                *slot = payload_of(hdr);
                prev = hdr;
            }
            let last_bytes = total - (count - 1) * need;
            let last_hint = if last_bytes == need { hint } else { 0 };
            (*prev).set_word(last_bytes | ((*prev).word() & PREV_FREE) | last_hint);
            (*header_at(prev, last_bytes)).prev_phys = prev;
            if last_bytes == need {
                return (count, true);
            }
            // The last block absorbed a remainder too small to be a block: not the class's
            // size. Back to the allocator (the cache or the lists), as a used block.
            self.deallocate(NonNull::new_unchecked(payload_of(prev)));
            (count - 1, false)
        }
    }

    /// A free, unlinked block of at least `need_bytes`: from the free lists, else from a
    /// new chunk. `request_bytes` is what the caller asked for (for the error).
    #[inline(always)]
    fn take_block(
        &mut self,
        need_bytes: usize,
        request_bytes: usize,
    ) -> Result<*mut BlockHdr, PoolError> {
        match self.take_fitting(need_bytes) {
            Some(block) => Ok(block),
            None => self.take_block_after_miss(need_bytes, request_bytes),
        }
    }

    /// The free lists hold no block of `need_bytes`: flush the front cache (its blocks may
    /// coalesce into one) and look again, then grow. The cache never makes the allocator
    /// grow or fail where it would not without it.
    #[cold]
    fn take_block_after_miss(
        &mut self,
        need_bytes: usize,
        request_bytes: usize,
    ) -> Result<*mut BlockHdr, PoolError> {
        if self.flush_cache_counting() != 0 {
            if let Some(block) = self.take_fitting(need_bytes) {
                return Ok(block);
            }
        }
        self.grow_for(need_bytes, request_bytes)
    }

    #[cold]
    fn allocate_aligned(
        &mut self,
        size: usize,
        need: usize,
        align: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        // A leading gap is 0 or at least `min_block_bytes` (it becomes a free block); its
        // worst case is `align - granularity` rounded past `min_block_bytes`.
        let slack = align + self.min_block_bytes - self.granularity_bytes;
        let block = self.take_block(need + slack, size)?;
        let payload = payload_of(block) as usize;
        let mut gap = payload.wrapping_neg() & (align - 1);
        if gap != 0 && gap < self.min_block_bytes {
            gap += align;
        }
        if gap == 0 {
            // SAFETY: `block` is free, unlinked and at least `need + slack >= need` bytes.
            return Ok(unsafe { self.carve(block, need) });
        }
        // SAFETY: `block` is free and unlinked with `size >= need + slack >= need + gap`,
        // so `block + gap` and the split below stay inside it; `gap` is a multiple of the
        // granularity (payloads and `align` are) and at least `min_block_bytes`.
        unsafe {
            let size_bytes = (*block).size();
            let aligned = header_at(block, gap);
            (*aligned).set_word((size_bytes - gap) | FREE | PREV_FREE);
            (*aligned).prev_phys = block;
            (*header_at(block, size_bytes)).prev_phys = aligned;
            // The gap keeps `block`'s flags: free, with a used predecessor.
            (*block).set_word(gap | FREE);
            self.link(block, gap);
            Ok(self.carve(aligned, need))
        }
    }

    /// A request that is too large, badly aligned or aligned above the granularity.
    #[cold]
    #[inline(never)]
    fn allocate_unusual(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, PoolError> {
        if size > MAX_REQUEST_BYTES || !align.is_power_of_two() || align > MAX_ALIGN_BYTES {
            return Err(self.bad_request(size, align));
        }
        let need = self.block_bytes_for(size);
        self.allocate_aligned(size, need, align)
    }

    /// A block of `need` bytes (serving a request of `size` bytes at the granularity) from
    /// the free lists, else from a new chunk. Out of line: the front cache's pop in
    /// `allocate` should not drag all of this into every caller.
    #[inline(never)]
    fn allocate_from_lists(&mut self, size: usize, need: usize) -> Result<NonNull<u8>, PoolError> {
        match self.find_fitting(need) {
            // SAFETY: `find_fitting` returns a free block of at least `need` bytes in `list`.
            Some((block, list)) => Ok(unsafe { self.carve_linked(block, list, need) }),
            None => {
                let block = self.take_block_after_miss(need, size)?;
                // SAFETY: it returns a free, unlinked block of at least `need` bytes.
                Ok(unsafe { self.carve(block, need) })
            }
        }
    }

    /// Free a block to the lists, merging it with its free physical neighbours (and, under
    /// `ReturnPolicy::WhenEmpty`, returning its chunk when that leaves it empty).
    ///
    /// Kept out of line so that `deallocate`, the front cache's push in front of this,
    /// stays small enough to inline (measured: inlining it made cached pairs slower and
    /// saved little here).
    ///
    /// # Safety
    /// `block` is a used block of this allocator (not free, not cached) that nobody uses.
    #[inline(never)]
    unsafe fn free_to_lists(&mut self, block: *mut BlockHdr) {
        // SAFETY: `block` is a used block of ours (caller), so its physical neighbours are
        // valid headers in the same chunk (boundary tags).
        unsafe {
            let size = (*block).size();
            let next = header_at(block, size);
            let next_word = (*next).word();
            let next_free_bytes = if next_word & FREE != 0 {
                size_of_word(next_word)
            } else {
                0
            };
            let (prev, prev_free_bytes) = if (*block).is_prev_free() {
                let prev = (*block).prev_phys;
                (prev, (*prev).size())
            } else {
                (ptr::null_mut(), 0)
            };
            let merged_bytes = prev_free_bytes + size + next_free_bytes;
            let merged = if prev.is_null() { block } else { prev };
            let after = header_at(merged, merged_bytes);
            // The merged block's predecessor is used (no two adjacent free blocks).
            (*merged).set_word(merged_bytes | FREE);
            (*after).prev_phys = merged;
            (*after).set_prev_free();
            if self.release_empty_chunks && (*merged).prev_phys.is_null() && (*after).is_sentinel()
            {
                if next_free_bytes != 0 {
                    self.unlink(next, next_free_bytes);
                }
                if !prev.is_null() {
                    self.unlink(prev, prev_free_bytes);
                }
                self.release_empty_chunk(merged);
                return;
            }
            let merged_list = mapping::list_of(merged_bytes);
            // Where a free neighbour's list is the merged block's list, the merged block
            // keeps its place there: no unlink, link or bitmap update.
            let mut placed = false;
            if !prev.is_null() {
                if mapping::list_of(prev_free_bytes) == merged_list {
                    placed = true;
                } else {
                    self.unlink(prev, prev_free_bytes);
                }
            }
            if next_free_bytes != 0 {
                let next_list = mapping::list_of(next_free_bytes);
                if !placed && next_list == merged_list {
                    self.replace_in_list(next, merged, merged_list);
                    placed = true;
                } else {
                    self.unlink_from(next, next_list);
                }
            }
            if !placed {
                self.link(merged, merged_bytes);
            }
        }
    }
}

impl Strategy for Tlsf {
    fn name(&self) -> &'static str {
        "variable-size"
    }

    /// The hot path (a front cache hit) inlines into the caller: one range check on the
    /// request, the rounding, and the pop; everything else is out of line.
    #[inline(always)]
    fn allocate(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, PoolError> {
        // `align` a power of two not above the granularity (so not above `MAX_ALIGN_BYTES`):
        // served at the granularity. With a constant `align` this folds away.
        if size <= MAX_REQUEST_BYTES && align.is_power_of_two() && align <= self.granularity_bytes {
            let need = self.block_bytes_for(size);
            if let Some(block) = self.front_cache.pop(need) {
                // SAFETY: a cached block is a block of ours, so its payload is non-null; it
                // is `need` bytes and its payload on the granularity, so it serves the request.
                return Ok(unsafe { NonNull::new_unchecked(payload_of(block)) });
            }
            return self.allocate_from_lists(size, need);
        }
        self.allocate_unusual(size, align)
    }

    /// A refill's blocks (the thread cache's): front-cache hits first, then runs split
    /// off the best-fitting free block in one carve each (`carve_run`) instead of one
    /// search and one carve per block; the blocks are the ones that many `allocate`s in
    /// a row would give.
    fn allocate_batch(
        &mut self,
        size: usize,
        align: usize,
        usable: usize,
        out: &mut [*mut u8],
    ) -> usize {
        let plain =
            size <= MAX_REQUEST_BYTES && align.is_power_of_two() && align <= self.granularity_bytes;
        if !plain || self.block_bytes_for(size) != usable + HDR_BYTES {
            return super::allocate_each(self, size, align, usable, out);
        }
        let need = usable + HDR_BYTES;
        // Front-cache blocks keep the hint they were last handed out with (their words
        // are not rewritten): a block cached at this size, so this hint, or none.
        let hint = self.hint_bits_for(usable);
        let mut taken = 0;
        while taken < out.len() {
            if let Some(block) = self.front_cache.pop(need) {
                out[taken] = payload_of(block);
                taken += 1;
                continue;
            }
            let Some((block, list)) = self.find_fitting(need) else {
                // Nothing fits: one block at a time, which flushes the front cache and
                // grows exactly as an allocation would.
                let rest = &mut out[taken..];
                let each = super::allocate_each(self, size, align, usable, rest);
                for &payload in &rest[..each] {
                    // SAFETY: blocks just handed out by `allocate` (each of `usable`
                    // bytes): a header precedes each payload, and `&mut self` makes
                    // this the word's only writer.
                    unsafe { (*payload.sub(HDR_BYTES).cast::<BlockHdr>()).set_hint_bits(hint) };
                }
                return taken + each;
            };
            // SAFETY: `find_fitting` returns a free block of at least `need` bytes in
            // `list`; `need` is a block size (`block_bytes_for`).
            let (carved, whole) =
                unsafe { self.carve_run(block, list, need, hint, &mut out[taken..]) };
            taken += carved;
            if !whole {
                break;
            }
        }
        taken
    }

    #[inline]
    unsafe fn deallocate(&mut self, ptr: NonNull<u8>) -> usize {
        // SAFETY: `ptr` is a live payload of ours (caller), so its header precedes it.
        unsafe {
            let block = ptr.as_ptr().sub(HDR_BYTES).cast::<BlockHdr>();
            let size = (*block).size();
            debug_assert!(
                !(*block).is_free() && !self.front_cache.holds(block, size),
                "double free of {ptr:p}"
            );
            if !self.front_cache.push(block, size) {
                self.free_to_lists(block);
            }
            size - HDR_BYTES
        }
    }

    #[inline]
    unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: `ptr` is a live payload of ours (caller): its header precedes it.
        unsafe { (*ptr.as_ptr().sub(HDR_BYTES).cast::<BlockHdr>()).size() - HDR_BYTES }
    }

    unsafe fn resize_in_place(&mut self, ptr: NonNull<u8>, new_size: usize) -> bool {
        if new_size > MAX_REQUEST_BYTES {
            return false;
        }
        let need = self.block_bytes_for(new_size);
        // SAFETY: `ptr` is a live payload of ours (caller): its header and physical
        // successor are valid; every split point below lies inside the blocks involved.
        unsafe {
            let block = ptr.as_ptr().sub(HDR_BYTES).cast::<BlockHdr>();
            let size = (*block).size();
            let own_flags = (*block).word() & PREV_FREE;
            let next = header_at(block, size);
            let next_word = (*next).word();
            let next_free_bytes = if next_word & FREE != 0 {
                size_of_word(next_word)
            } else {
                0
            };
            if need > size + next_free_bytes {
                return false;
            }
            if need == size {
                return true;
            }
            let spare = size + next_free_bytes - need;
            if next_free_bytes == 0 && spare < self.min_block_bytes {
                // Shrinking by less than a block: nothing can be given back.
                return true;
            }
            if next_free_bytes != 0 {
                self.unlink(next, next_free_bytes);
            }
            let after = header_at(block, size + next_free_bytes);
            if spare >= self.min_block_bytes {
                let tail = header_at(block, need);
                (*tail).set_word(spare | FREE);
                (*tail).prev_phys = block;
                (*after).prev_phys = tail;
                (*after).set_prev_free();
                self.link(tail, spare);
                (*block).set_word(need | own_flags);
            } else {
                // Growing into all of the free successor (the spare is too small to be a block).
                (*after).prev_phys = block;
                (*after).clear_prev_free();
                (*block).set_word((size + next_free_bytes) | own_flags);
            }
            true
        }
    }

    fn block_state(&self, ptr: NonNull<u8>) -> BlockState {
        self.lookup(ptr.as_ptr() as usize)
    }

    fn reset(&mut self, return_chunks: bool) {
        self.reset_chunks(return_chunks);
    }

    fn reserved_bytes(&self) -> usize {
        self.upstream.reserved_bytes()
    }
}

impl Tlsf {
    #[cold]
    fn bad_request(&self, size: usize, align: usize) -> PoolError {
        let pool = self.upstream.pool_name();
        if !align.is_power_of_two() || align > MAX_ALIGN_BYTES {
            PoolError::invalid_op(
                pool,
                format!(
                    "alignment {align} must be a power of two of at most {MAX_ALIGN_BYTES} bytes"
                ),
            )
        } else {
            PoolError::oom(
                pool,
                size,
                self.upstream.available_bytes().min(MAX_REQUEST_BYTES),
                MAX_REQUEST_BYTES,
            )
        }
    }
}

impl std::fmt::Debug for Tlsf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tlsf")
            .field("pool", &self.upstream.pool_name())
            .field("fit", &self.fit)
            .field("granularity_bytes", &self.granularity_bytes)
            .field("chunks", &self.chunks.len())
            .field("free_blocks", &self.free_block_count)
            .field("cached_blocks", &self.cached_block_count())
            .field("cached_bytes", &self.cached_bytes())
            .field("reserved_bytes", &self.upstream.reserved_bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::block::free_hint_and_usable;
    use super::*;
    use crate::os::OsChunks;
    use crate::stats::StatsCounters;
    use std::sync::Arc;

    fn tlsf(config: &PoolConfig) -> Tlsf {
        let upstream = Upstream::new(
            Box::new(OsChunks::new(config.huge_pages)),
            Arc::from("hints"),
            config.chunk_size_bytes,
            config.growth_factor,
            config.max_size_bytes,
            Arc::new(StatsCounters::new()),
        );
        Tlsf::new(upstream, config).expect("tlsf")
    }

    /// The hint and usable bytes of a payload.
    fn hint_of(payload: *mut u8) -> (usize, usize) {
        // SAFETY: a live block of the test's allocator.
        unsafe { free_hint_and_usable(NonNull::new(payload).expect("non-null")) }
    }

    #[test]
    fn refill_blocks_carry_their_size_hint_and_rewrites_of_the_size_clear_it() {
        let config = PoolConfig::default_cpu();
        let mut tlsf = tlsf(&config);
        // Distinct hints per size: entry g for blocks of g * 16 usable bytes.
        let hints: Vec<u16> = (0..=256u16).map(|g| 3 * g + 7).collect();
        tlsf.set_free_hints(&hints);
        let expected = |usable: usize| usize::from(hints[usable / 16]);
        for usable in [16, 48, 160, 1024, 4096] {
            // Carved in a run (`carve_run`): every block named.
            let mut out = [ptr::null_mut(); 8];
            assert_eq!(tlsf.allocate_batch(usable, 16, usable, &mut out), 8);
            for &p in &out {
                assert_eq!(hint_of(p), (expected(usable), usable), "carved, {usable} B");
            }
            // Through the front cache and back: the word, hint included, is kept.
            // SAFETY: live blocks of `tlsf`, freed once.
            unsafe { tlsf.deallocate(NonNull::new(out[0]).expect("non-null")) };
            let mut again = [ptr::null_mut(); 1];
            assert_eq!(tlsf.allocate_batch(usable, 16, usable, &mut again), 1);
            assert_eq!(hint_of(again[0]), (expected(usable), usable), "recycled");
            out[0] = again[0];
            // The run's last block borders the free remainder: it grows into it, and its
            // word is rewritten with no hint.
            let last = NonNull::new(out[7]).expect("non-null");
            // SAFETY: a live block of `tlsf`.
            assert!(unsafe { tlsf.resize_in_place(last, usable + 64) });
            assert_eq!(hint_of(out[7]), (0, usable + 64), "resized in place");
            // A plain allocation carves with no hint.
            let plain = tlsf.allocate(usable, 16).expect("allocate").as_ptr();
            let (hint, got) = hint_of(plain);
            assert!(hint == 0 || (got == usable && hint == expected(usable)));
            for p in out.into_iter().chain([plain]) {
                // SAFETY: live blocks of `tlsf`, freed once.
                unsafe { tlsf.deallocate(NonNull::new(p).expect("non-null")) };
            }
        }
        // Sizes past the table get no hint.
        let mut out = [ptr::null_mut(); 2];
        assert_eq!(tlsf.allocate_batch(8192, 16, 8192, &mut out), 2);
        assert!(out.iter().all(|&p| hint_of(p) == (0, 8192)));
    }

    #[test]
    fn requests_past_the_largest_block_fail_cleanly() {
        let mut tlsf = tlsf(&PoolConfig::default_cpu());
        for size in [MAX_REQUEST_BYTES + 1, MAX_BLOCK_BYTES, usize::MAX / 2] {
            assert!(
                matches!(tlsf.allocate(size, 16), Err(PoolError::OutOfMemory { .. })),
                "{size}"
            );
        }
        // The allocator still serves.
        assert!(tlsf.allocate(64, 16).is_ok());
    }
}
