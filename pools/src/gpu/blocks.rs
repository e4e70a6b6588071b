//! The per-stream free blocks of a `GpuPool`, on the host: the `FreeBlocks` interface and
//! the block types both strategies share.
//!
//! Device memory cannot hold in-band headers (the host cannot read it cheaply, and a pool
//! must not touch bytes the program owns), so every byte of metadata lives here.

use super::StreamId;

/// A block of device address space inside one chunk (one upstream allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub addr: u64,
    pub len: u64,
    /// Start address of the chunk the block belongs to. Blocks of different chunks never
    /// coalesce, even when their address ranges touch.
    pub chunk: u64,
}

/// A free range as reported by [`GpuPool::free_extents`](super::GpuPool::free_extents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeExtent {
    pub addr: u64,
    pub len: u64,
    /// The chunk (upstream allocation) it lies in.
    pub chunk: u64,
    /// The stream whose free list holds it.
    pub stream: StreamId,
}

/// Free blocks kept per stream. A block freed on stream `S` is in `S`'s list: `S` may reuse
/// it at once (its later work is ordered after the free); another stream may take it only
/// after waiting on `S`'s event, which the pool arranges before calling `take` on a list
/// that is not the allocating stream's.
pub trait FreeBlocks: Send {
    /// Short strategy name for reports.
    fn name(&self) -> &'static str;

    /// Whether the strategy serves `len` bytes at `align` from its blocks (the fixed-size
    /// strategy sends larger requests to the pool's large-object path).
    fn serves(&self, len: u64, align: u64) -> bool;

    /// The bytes a request of `len` occupies (the fixed block size, or `len`).
    fn block_len(&self, len: u64) -> u64;

    /// Take a block of at least `len` bytes aligned to `align` from `stream`'s list; the
    /// unused parts of the free block stay in that list.
    fn take(&mut self, stream: StreamId, len: u64, align: u64) -> Option<Block>;

    /// Streams other than `stream` whose lists are not empty, in ascending order.
    fn other_streams(&self, stream: StreamId) -> Vec<StreamId>;

    /// Move every block of `from`'s list into `to`'s, coalescing.
    fn merge(&mut self, from: StreamId, to: StreamId);

    /// Add a new chunk `[addr, addr + len)` to `stream`'s list.
    fn add_chunk(&mut self, stream: StreamId, addr: u64, len: u64);

    /// Return a block freed on `stream`. True when its whole chunk (`chunk_len` bytes) is
    /// now free in this one list, so that the pool may give the chunk back.
    fn give_back(&mut self, stream: StreamId, block: Block, chunk_len: u64) -> bool;

    /// Forget the free space of a chunk that is entirely free (before returning it).
    fn remove_chunk(&mut self, chunk: u64);

    /// Forget every free block (the pool re-adds the chunks it keeps).
    fn clear(&mut self);

    /// Every free extent, sorted by address. The variable strategy reports its blocks as
    /// they are; the fixed-size strategy reports runs of adjacent free blocks of one chunk
    /// and one stream as one extent (its blocks never merge, by design).
    fn free_extents(&self) -> Vec<FreeExtent>;

    /// Whether free and live blocks tile every chunk exactly (true for the variable
    /// strategy; the fixed one leaves a tail shorter than a block unused).
    fn tiles_chunks_exactly(&self) -> bool;
}

/// `x` rounded up to a multiple of `align` (a power of two); `None` on overflow.
#[inline]
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}
