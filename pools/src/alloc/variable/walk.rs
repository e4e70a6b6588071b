//! Walking the heap: the checked pointer lookup behind `block_state` and the invariant
//! checker `check_invariants`. Both only read headers inside known chunks, validating
//! each size before following it, so a corrupted or foreign pointer cannot lead them
//! outside the allocator's memory.

use super::block::{payload_of, BlockHdr, FreeBlockHdr, HDR_BYTES, PREV_FREE};
use super::chunks::ChunkRecord;
use super::front_cache::{bin_limit, FrontCache, ENABLED_MAX_BYTES};
use super::mapping::{list_of, FL_COUNT, SL_COUNT};
use super::Tlsf;
use crate::alloc::BlockState;
use std::collections::HashMap;

/// Blocks found by the walk: header address -> size in bytes.
type BlockSizes = HashMap<usize, usize>;

impl Tlsf {
    /// The record of the chunk containing `addr`.
    fn chunk_containing(&self, addr: usize) -> Option<&ChunkRecord> {
        let after = self.chunks.partition_point(|c| c.chunk.addr() <= addr);
        let record = self.chunks.get(after.checked_sub(1)?)?;
        record.chunk.contains(addr).then_some(record)
    }

    /// What `addr` is: walks the blocks of its chunk (O(blocks in the chunk)).
    pub(super) fn lookup(&self, addr: usize) -> BlockState {
        let Some(record) = self.chunk_containing(addr) else {
            return BlockState::Foreign;
        };
        let sentinel = record.sentinel.as_ptr() as usize;
        let mut block = record.first_block.as_ptr();
        while (block as usize) < sentinel {
            // SAFETY: `first_block <= block < sentinel`, both a multiple of the granularity
            // apart, so the header `[block, block + HDR_BYTES)` lies inside the chunk.
            let header = unsafe { block.read() };
            let size = header.size();
            if size < self.min_block_bytes
                || !size.is_multiple_of(self.granularity_bytes)
                || size > sentinel - block as usize
            {
                // A corrupted tag: stop rather than follow it out of the chunk.
                return BlockState::NotLive;
            }
            let payload = payload_of(block) as usize;
            if payload == addr {
                // A cached block was freed by its owner: not live (so a second free of it
                // is caught in checked mode).
                return if header.is_free() || self.front_cache.holds(block, size) {
                    BlockState::NotLive
                } else {
                    BlockState::Live(size - HDR_BYTES)
                };
            }
            if payload > addr {
                return BlockState::NotLive;
            }
            block = block.wrapping_byte_add(size);
        }
        BlockState::NotLive
    }

    /// Walk every chunk and every free list and check every invariant written on the
    /// fields: boundary tags consistent, blocks tiling each chunk, no two adjacent free
    /// blocks, each free block in the right list exactly once, bitmaps matching list
    /// emptiness, each cached block in the front cache stack of its size exactly once and
    /// within the cache's bounds, counts and reserved bytes matching. The error says what
    /// is wrong where.
    pub fn check_invariants(&self) -> Result<(), String> {
        let (free_blocks, used_blocks) = self.check_chunks()?;
        self.check_lists(&free_blocks)?;
        self.check_front_cache(used_blocks)?;
        let chunk_bytes: usize = self.chunks.iter().map(|c| c.chunk.len).sum();
        if chunk_bytes != self.upstream.reserved_bytes() {
            return Err(format!(
                "chunks hold {chunk_bytes} bytes but the upstream reserved {}",
                self.upstream.reserved_bytes()
            ));
        }
        Ok(())
    }

    /// Checks every chunk's tiling and tags; returns the free blocks and the used blocks
    /// (cached ones included) found (address -> size).
    fn check_chunks(&self) -> Result<(BlockSizes, BlockSizes), String> {
        let mut free_blocks = HashMap::new();
        let mut used_blocks = HashMap::new();
        for (i, record) in self.chunks.iter().enumerate() {
            let base = record.chunk.addr();
            let end = base + record.chunk.len;
            if i > 0 && self.chunks[i - 1].chunk.addr() + self.chunks[i - 1].chunk.len > base {
                return Err(format!("chunk {base:#x} overlaps or is out of order"));
            }
            let first = record.first_block.as_ptr() as usize;
            let sentinel = record.sentinel.as_ptr() as usize;
            let expected_first =
                (base + HDR_BYTES).next_multiple_of(self.granularity_bytes) - HDR_BYTES;
            if first != expected_first || first >= sentinel || sentinel + HDR_BYTES > end {
                return Err(format!(
                    "chunk {base:#x}+{}: first block {first:#x}, sentinel {sentinel:#x} misplaced",
                    record.chunk.len
                ));
            }
            let mut prev: *mut BlockHdr = std::ptr::null_mut();
            let mut prev_free = false;
            let mut block = record.first_block.as_ptr();
            let mut tiled_bytes = 0usize;
            while (block as usize) < sentinel {
                let at = block as usize;
                // SAFETY: `first <= at < sentinel` and sizes were checked to keep `at` on
                // the granularity, so the header lies inside the chunk.
                let header = unsafe { block.read() };
                let size = header.size();
                if size < self.min_block_bytes
                    || !size.is_multiple_of(self.granularity_bytes)
                    || size > sentinel - at
                {
                    return Err(format!("block {at:#x}: bad size {size} (chunk {base:#x})"));
                }
                if header.is_sentinel() {
                    return Err(format!("block {at:#x}: sentinel flag inside the chunk"));
                }
                if header.prev_phys != prev {
                    return Err(format!(
                        "block {at:#x}: prev_phys {:p}, expected {prev:p}",
                        header.prev_phys
                    ));
                }
                if header.is_prev_free() != prev_free {
                    return Err(format!(
                        "block {at:#x}: PREV_FREE flag disagrees with {prev:p}"
                    ));
                }
                if !header.is_free() {
                    used_blocks.insert(at, size);
                }
                if header.is_free() {
                    if prev_free {
                        return Err(format!("blocks {prev:p} and {at:#x}: adjacent free blocks"));
                    }
                    free_blocks.insert(at, size);
                }
                prev_free = header.is_free();
                prev = block;
                tiled_bytes += size;
                block = block.wrapping_byte_add(size);
            }
            if block as usize != sentinel || tiled_bytes != sentinel - first {
                return Err(format!(
                    "chunk {base:#x}: blocks do not end at the sentinel"
                ));
            }
            // SAFETY: the sentinel header lies inside the chunk (checked above).
            let closing = unsafe { block.read() };
            let expected_word = super::block::SENTINEL | if prev_free { PREV_FREE } else { 0 };
            if closing.word() != expected_word || closing.prev_phys != prev {
                return Err(format!(
                    "chunk {base:#x}: sentinel {sentinel:#x} has word {:#x}, prev {:p}",
                    closing.word(),
                    closing.prev_phys
                ));
            }
            if end - (sentinel + HDR_BYTES) >= self.granularity_bytes {
                return Err(format!(
                    "chunk {base:#x}: {} bytes unused at the end",
                    end - sentinel
                ));
            }
        }
        Ok((free_blocks, used_blocks))
    }

    /// Checks the free lists and bitmaps against the free blocks found in the chunks.
    fn check_lists(&self, free_blocks: &HashMap<usize, usize>) -> Result<(), String> {
        let mut listed = 0usize;
        for fl in 0..FL_COUNT {
            let level_bit = self.fl_bitmap & (1 << fl) != 0;
            if level_bit != (self.sl_bitmaps[fl] != 0) {
                return Err(format!(
                    "fl_bitmap bit {fl} disagrees with sl_bitmaps[{fl}]"
                ));
            }
            for sl in 0..SL_COUNT {
                let head = self.free_lists[fl][sl];
                if (self.sl_bitmaps[fl] & (1 << sl) == 0) != head.is_null() {
                    return Err(format!("sl_bitmaps[{fl}] bit {sl} disagrees with its list"));
                }
                let mut prev: *mut FreeBlockHdr = std::ptr::null_mut();
                let mut node = head;
                while !node.is_null() {
                    let at = node as usize;
                    // Only follow links to blocks the chunk walk found free.
                    let Some(&size) = free_blocks.get(&at) else {
                        return Err(format!("list ({fl}, {sl}) holds {at:#x}, not a free block"));
                    };
                    if list_of(size) != (fl, sl) {
                        return Err(format!(
                            "free block {at:#x} of {size} bytes is in list ({fl}, {sl}), belongs in {:?}",
                            list_of(size)
                        ));
                    }
                    // SAFETY: `node` is a free block inside a chunk (found by the walk).
                    let links = unsafe { node.read() };
                    if links.prev_free != prev {
                        return Err(format!("free block {at:#x}: prev_free link broken"));
                    }
                    listed += 1;
                    if listed > free_blocks.len() {
                        return Err(format!("list ({fl}, {sl}) loops or repeats a block"));
                    }
                    prev = node;
                    node = links.next_free;
                }
            }
        }
        if self.fl_bitmap.checked_shr(FL_COUNT as u32).unwrap_or(0) != 0 {
            return Err(format!(
                "fl_bitmap {:#x} has bits past the last level",
                self.fl_bitmap
            ));
        }
        if listed != free_blocks.len() || listed != self.free_block_count {
            return Err(format!(
                "{} free blocks in chunks, {listed} in lists, free_block_count {}",
                free_blocks.len(),
                self.free_block_count
            ));
        }
        Ok(())
    }

    /// Checks the front cache stacks against the used blocks found in the chunks (consumed:
    /// each cached block is ticked off as its stack is walked, so none is in two stacks).
    fn check_front_cache(&self, mut used_blocks: BlockSizes) -> Result<(), String> {
        let cache = &self.front_cache;
        let mut total_bytes = 0usize;
        for (index, bin) in cache.bins.iter().enumerate() {
            let bin_bytes = FrontCache::bin_block_bytes(index);
            let expected_limit = if cache.enabled {
                bin_limit(bin_bytes)
            } else {
                0
            };
            if bin.limit != expected_limit || bin.count > bin.limit {
                return Err(format!(
                    "front cache bin of {bin_bytes} bytes holds {} blocks, limit {} \
                     (expected {expected_limit})",
                    bin.count, bin.limit
                ));
            }
            let mut node = bin.top;
            let mut walked = 0u32;
            while !node.is_null() {
                let at = node as usize;
                // Only follow links of blocks the chunk walk found used (not yet seen).
                let Some(size) = used_blocks.remove(&at) else {
                    return Err(format!(
                        "front cache bin of {bin_bytes} bytes holds {at:#x}: not a used \
                         block, or in a stack twice"
                    ));
                };
                if size != bin_bytes {
                    return Err(format!(
                        "cached block {at:#x} of {size} bytes in the bin of {bin_bytes} bytes"
                    ));
                }
                if at.wrapping_sub(cache.cacheable_start) >= cache.cacheable_len {
                    return Err(format!("cached block {at:#x} outside the cacheable range"));
                }
                walked += 1;
                total_bytes += size;
                // SAFETY: `node` is a cached block inside a chunk (found by the walk), at
                // least `min_block_bytes`, so its payload holds the link word.
                node = unsafe { payload_of(node).cast::<*mut BlockHdr>().read() };
            }
            if walked != bin.count {
                return Err(format!(
                    "front cache bin of {bin_bytes} bytes: count {}, {walked} blocks linked",
                    bin.count
                ));
            }
        }
        if total_bytes != self.cached_bytes() || total_bytes > ENABLED_MAX_BYTES {
            return Err(format!(
                "front cache holds {total_bytes} bytes, counted {}, limit {ENABLED_MAX_BYTES}",
                self.cached_bytes()
            ));
        }
        Ok(())
    }
}
