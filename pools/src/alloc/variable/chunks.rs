//! Chunks from the upstream: laying out a new chunk, growing, returning chunks, reset.

use super::block::{header_at, BlockHdr, FREE, HDR_BYTES, MAX_BLOCK_BYTES, PREV_FREE, SENTINEL};
use super::Tlsf;
use crate::alloc::Chunk;
use crate::error::PoolError;
use std::ptr::{self, NonNull};

/// One chunk held from the upstream and where its blocks lie.
pub(super) struct ChunkRecord {
    pub chunk: Chunk,
    /// The first block's header: the chunk start plus the padding that puts payloads on
    /// the granularity. Invariant: `prev_phys` of this block is null.
    pub first_block: NonNull<BlockHdr>,
    /// The sentinel: a zero-size, never-free block after the last block.
    /// Invariant: `first_block < sentinel` and `sentinel + HDR_BYTES <= chunk end`.
    pub sentinel: NonNull<BlockHdr>,
    /// The chunk taken at creation (`initial_size_bytes`), kept by `reset`.
    pub is_initial: bool,
}

impl Tlsf {
    /// Alignment asked of the upstream: a page, or the granularity when that is larger.
    pub(super) fn chunk_align_bytes(&self) -> usize {
        self.granularity_bytes.max(super::CHUNK_ALIGN_BYTES)
    }

    /// Bytes of a chunk not available to blocks: the leading pad and the sentinel's
    /// header (together one granule of the granularity) plus a length that is not a
    /// multiple of the granularity (under one more).
    pub(super) fn chunk_overhead_bytes(&self) -> usize {
        2 * self.granularity_bytes
    }

    /// Record `chunk` and lay it out as one free block closed by a sentinel. Returns the
    /// block, marked free and in no list.
    pub(super) fn add_chunk(&mut self, chunk: Chunk, is_initial: bool) -> *mut BlockHdr {
        let base = chunk.addr();
        let first_addr = (base + HDR_BYTES).next_multiple_of(self.granularity_bytes) - HDR_BYTES;
        let pad_bytes = first_addr - base;
        assert!(
            chunk.len >= pad_bytes + HDR_BYTES + self.min_block_bytes,
            "chunk source returned {} bytes, less than asked",
            chunk.len
        );
        // A chunk larger than a block can be (`MAX_BLOCK_BYTES`, a quarter of a petabyte)
        // leaves its tail unused.
        let block_bytes = (chunk.len - pad_bytes - HDR_BYTES).min(MAX_BLOCK_BYTES)
            & !(self.granularity_bytes - 1);
        // SAFETY: `pad_bytes + block_bytes + HDR_BYTES <= chunk.len`: both headers lie in
        // the chunk, and offsets inside one allocation of non-null memory are non-null.
        let (first_block, sentinel) = unsafe {
            let first = chunk.ptr.as_ptr().add(pad_bytes).cast::<BlockHdr>();
            (
                NonNull::new_unchecked(first),
                NonNull::new_unchecked(header_at(first, block_bytes)),
            )
        };
        let record = ChunkRecord {
            chunk,
            first_block,
            sentinel,
            is_initial,
        };
        // SAFETY: the record's headers lie inside its chunk, which nothing else uses.
        let block = unsafe { Self::lay_out(&record) };
        let at = self.chunks.partition_point(|c| c.chunk.addr() < base);
        self.chunks.insert(at, record);
        block
    }

    /// Write one free block spanning the chunk and its sentinel; returns the block.
    ///
    /// # Safety
    /// `record` describes a chunk of this allocator none of whose blocks is in use or in
    /// a free list.
    unsafe fn lay_out(record: &ChunkRecord) -> *mut BlockHdr {
        let first = record.first_block.as_ptr();
        let sentinel = record.sentinel.as_ptr();
        let block_bytes = sentinel as usize - first as usize;
        // SAFETY: both headers lie inside the chunk (`ChunkRecord` invariant) and no one
        // else reads or writes them (caller).
        unsafe {
            (*first).set_word(block_bytes | FREE);
            (*first).prev_phys = ptr::null_mut();
            (*sentinel).set_word(SENTINEL | PREV_FREE);
            (*sentinel).prev_phys = first;
        }
        first
    }

    /// A new chunk from the upstream holding a free block of at least `need_bytes`;
    /// returns that block, unlinked. Out of memory reports `request_bytes`.
    #[cold]
    pub(super) fn grow_for(
        &mut self,
        need_bytes: usize,
        request_bytes: usize,
    ) -> Result<*mut BlockHdr, PoolError> {
        let chunk_bytes = need_bytes + self.chunk_overhead_bytes();
        let chunk = self
            .upstream
            .grow(chunk_bytes, self.chunk_align_bytes())
            .map_err(|err| match err {
                PoolError::OutOfMemory {
                    pool,
                    available_bytes,
                    limit_bytes,
                    ..
                } => PoolError::OutOfMemory {
                    pool,
                    requested_bytes: request_bytes,
                    available_bytes,
                    limit_bytes,
                },
                other => other,
            })?;
        let block = self.add_chunk(chunk, false);
        // SAFETY: `block` was just laid out as the chunk's only block.
        debug_assert!(unsafe { (*block).size() } >= need_bytes);
        Ok(block)
    }

    /// Give back the chunk whose only block is the free, unlinked `block` (a chunk's first
    /// block followed by its sentinel) unless it is the initial chunk, which is kept (and
    /// its block linked).
    ///
    /// # Safety
    /// `block` is the free, unlinked, chunk-spanning block of one of this allocator's
    /// chunks, and no byte of that chunk is in use.
    #[cold]
    pub(super) unsafe fn release_empty_chunk(&mut self, block: *mut BlockHdr) {
        let addr = block as usize;
        let at = self.chunks.partition_point(|c| c.chunk.addr() <= addr) - 1;
        debug_assert!(self.chunks[at].first_block.as_ptr() == block);
        if self.chunks[at].is_initial {
            // SAFETY: free and unlinked (caller).
            unsafe { self.link(block, (*block).size()) };
            return;
        }
        let record = self.chunks.remove(at);
        // SAFETY: the chunk came from `upstream` and its one block is free (caller).
        unsafe { self.upstream.release(record.chunk) };
    }

    /// Release every block; with `return_chunks` give every chunk but the initial one
    /// back to the upstream.
    pub(super) fn reset_chunks(&mut self, return_chunks: bool) {
        self.upstream.set_retiring(true);
        self.reset_chunks_retiring(return_chunks);
        self.upstream.set_retiring(false);
    }

    fn reset_chunks_retiring(&mut self, return_chunks: bool) {
        if return_chunks {
            let mut kept = Vec::with_capacity(1);
            for record in std::mem::take(&mut self.chunks) {
                if record.is_initial {
                    kept.push(record);
                } else {
                    // SAFETY: `reset` ends every block's life (the `Strategy::reset`
                    // contract), so no byte of the chunk is in use.
                    unsafe { self.upstream.release(record.chunk) };
                }
            }
            self.chunks = kept;
            self.upstream.reset_growth();
        }
        // Laying out every chunk anew ends the cached blocks too.
        self.front_cache.clear();
        self.fl_bitmap = 0;
        self.sl_bitmaps.fill(0);
        for lists in self.free_lists.iter_mut() {
            lists.fill(ptr::null_mut());
        }
        self.free_block_count = 0;
        for at in 0..self.chunks.len() {
            // SAFETY: after a reset no block is in use, and the lists were just emptied.
            unsafe {
                let block = Self::lay_out(&self.chunks[at]);
                self.link(block, (*block).size());
            }
        }
    }
}

impl Drop for Tlsf {
    fn drop(&mut self) {
        self.upstream.set_retiring(true);
        for record in std::mem::take(&mut self.chunks) {
            // SAFETY: the allocator is going away, and with it every block it handed out
            // (a pool's blocks do not outlive the pool).
            unsafe { self.upstream.release(record.chunk) };
        }
    }
}
