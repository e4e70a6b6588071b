//! Allocator strategies: the plugin point of `CpuPool`.
//!
//! A [`Strategy`] is a single-threaded core (`&mut self`, like talc's and rlsf's cores);
//! `CpuPool` wraps it in the sync mode the config asks for. Strategies get their memory
//! in chunks from an [`Upstream`], which applies the growth policy and the size limit and
//! keeps the reserved-bytes statistics; where chunks come from is a [`ChunkSource`]
//! (mmap for CPU pools, see `crate::os`).
//!
//! The lock-free allocator is not a `Strategy`: it is shared (`&self`) by design and lives
//! in [`lockfree`].

use crate::error::PoolError;
use crate::stats::StatsCounters;
use std::ptr::NonNull;
use std::sync::Arc;

pub mod fixed;
pub mod lockfree;
pub mod segment;
pub mod size_class;
pub mod size_classed;
pub mod variable;

/// A contiguous piece of upstream memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub ptr: NonNull<u8>,
    pub len: usize,
}

// SAFETY: a `Chunk` is an address range; ownership of the bytes is managed by whoever
// holds it, not by thread identity.
unsafe impl Send for Chunk {}

impl Chunk {
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    pub fn contains(&self, addr: usize) -> bool {
        addr >= self.addr() && addr < self.addr() + self.len
    }
}

/// Whether a cached large-object mapping of `len` bytes may serve a request of `want`
/// bytes (header included), in a heap of `segment_bytes` segments: it holds the request,
/// and what it holds beyond it is at most the request itself and at most a quarter of it
/// or a segment, whichever is more. Up to a few segments the cache serves anything up to
/// twice the request; past that the bytes a reuse leaves unused stay below 25%, so that a
/// program whose large objects change size does not hold half its memory unused.
#[inline]
pub(crate) fn large_reuse_fits(len: usize, want: usize, segment_bytes: usize) -> bool {
    len >= want && len / 2 <= want && len - want <= (want / 4).max(segment_bytes)
}

/// The most bytes of freed large-object mappings a heap keeps for reuse while
/// `live_bytes` of large objects are live: `floor_bytes` (a few segments, for programs
/// whose large objects are few and small) or a quarter of the live large bytes, whichever
/// is more. A program that allocates and frees large buffers in a steady state keeps
/// reusing them (each new one otherwise costs an `mmap`, the alignment trim's two
/// `munmap`s and a page fault per page written, and its free an `munmap`), while the held
/// bytes stay a fixed fraction of what the program itself holds.
#[inline]
pub(crate) fn large_cache_limit(live_bytes: usize, floor_bytes: usize) -> usize {
    floor_bytes.max(live_bytes / 4)
}

/// Where chunks come from: the OS (`os::OsChunks`) or, in tests, anything else.
pub trait ChunkSource: Send {
    /// A chunk of at least `min_bytes` bytes aligned to at least `align` (a power of two;
    /// sources may round both up, to pages for example). `None` when the source is
    /// exhausted. A source under the segment heap (the fixed-size and size-classed
    /// strategies) must hand out chunks that read as zeros, as fresh anonymous mappings
    /// do (`OsChunks` zeroes the chunks it recycles): the heap reads a segment's page map
    /// before writing it. TLSF writes every word it reads.
    fn alloc_chunk(&mut self, min_bytes: usize, align: usize) -> Option<Chunk>;

    /// Give a chunk back.
    ///
    /// # Safety
    /// `chunk` was returned by `alloc_chunk` of this source, unchanged, and no byte of it
    /// is used any more.
    unsafe fn free_chunk(&mut self, chunk: Chunk);

    /// Give a chunk back as its pool is dropped or reset: a source may keep it for the
    /// next pool (`OsChunks` recycles it, zeroed). The default is `free_chunk`.
    ///
    /// # Safety
    /// As for [`free_chunk`](Self::free_chunk).
    unsafe fn retire_chunk(&mut self, chunk: Chunk) {
        // SAFETY: forwarded contract.
        unsafe { self.free_chunk(chunk) }
    }

    /// Give the physical memory behind `[addr, addr + len)` back while keeping the range
    /// mapped (it reads as zeros when touched again). Returns whether the source did; the
    /// default cannot, and callers then keep counting the bytes as reserved.
    ///
    /// # Safety
    /// The range lies inside a chunk of this source and no byte of it is in use.
    unsafe fn decommit(&mut self, _addr: usize, _len: usize) -> bool {
        false
    }
}

/// Chunk growth policy and limit in front of a `ChunkSource`.
///
/// Chunk `k` (0-based, after the initial one) is at least
/// `chunk_size_bytes * growth_factor^k`, never more than the bytes left under
/// `max_size_bytes`, and always at least the request that caused it.
pub struct Upstream {
    source: Box<dyn ChunkSource>,
    pool_name: Arc<str>,
    chunk_size_bytes: usize,
    growth_factor: f64,
    max_size_bytes: Option<usize>,
    /// Invariant: equals the sum of `len` over the chunks handed out and not yet returned.
    reserved_bytes: usize,
    chunks_grown: u32,
    stats: Arc<StatsCounters>,
    /// Chunks given back now go to `ChunkSource::retire_chunk` (the owner is being
    /// dropped or reset), else to `free_chunk`.
    retiring: bool,
}

impl Upstream {
    pub fn new(
        source: Box<dyn ChunkSource>,
        pool_name: Arc<str>,
        chunk_size_bytes: usize,
        growth_factor: f64,
        max_size_bytes: Option<usize>,
        stats: Arc<StatsCounters>,
    ) -> Self {
        Upstream {
            source,
            pool_name,
            chunk_size_bytes,
            growth_factor,
            max_size_bytes,
            reserved_bytes: 0,
            chunks_grown: 0,
            retiring: false,
            stats,
        }
    }

    pub fn pool_name(&self) -> &str {
        &self.pool_name
    }

    pub fn reserved_bytes(&self) -> usize {
        self.reserved_bytes
    }

    pub fn stats(&self) -> &Arc<StatsCounters> {
        &self.stats
    }

    /// Bytes still available under the limit (`usize::MAX` when unlimited).
    /// Whether the pool has a size limit (`max_size_bytes`).
    pub fn is_limited(&self) -> bool {
        self.max_size_bytes.is_some()
    }

    pub fn available_bytes(&self) -> usize {
        self.max_size_bytes
            .map_or(usize::MAX, |max| max.saturating_sub(self.reserved_bytes))
    }

    /// The next growth chunk's size for a request needing `min_bytes` of chunk space.
    pub fn next_chunk_bytes(&self, min_bytes: usize) -> usize {
        let grown =
            self.chunk_size_bytes as f64 * self.growth_factor.powi(self.chunks_grown as i32);
        let want = (grown.min(usize::MAX as f64 / 2.0) as usize).max(min_bytes);
        match self.max_size_bytes {
            Some(_) => want.min(self.available_bytes()).max(min_bytes),
            None => want,
        }
    }

    /// A chunk of exactly-or-more `bytes` (no growth policy applied), within the limit.
    pub fn alloc_exact(&mut self, bytes: usize, align: usize) -> Result<Chunk, PoolError> {
        if bytes > self.available_bytes() {
            return Err(PoolError::oom(
                &self.pool_name,
                bytes,
                self.available_bytes(),
                self.max_size_bytes.unwrap_or(usize::MAX),
            ));
        }
        let chunk = self.source.alloc_chunk(bytes, align).ok_or_else(|| {
            PoolError::oom(
                &self.pool_name,
                bytes,
                0,
                self.max_size_bytes.unwrap_or(usize::MAX),
            )
        })?;
        if chunk.len > self.available_bytes() {
            // The source rounded up past the limit: give it back and report.
            // SAFETY: the chunk was just returned by this source and nothing uses it.
            unsafe { self.source.free_chunk(chunk) };
            return Err(PoolError::oom(
                &self.pool_name,
                bytes,
                self.available_bytes(),
                self.max_size_bytes.unwrap_or(usize::MAX),
            ));
        }
        self.reserved_bytes += chunk.len;
        self.stats.on_reserve(chunk.len);
        Ok(chunk)
    }

    /// A growth chunk able to hold `min_bytes`, sized by the growth policy.
    pub fn grow(&mut self, min_bytes: usize, align: usize) -> Result<Chunk, PoolError> {
        let bytes = self.next_chunk_bytes(min_bytes);
        let chunk = self.alloc_exact(bytes, align)?;
        self.chunks_grown += 1;
        Ok(chunk)
    }

    /// Return a chunk to the source.
    ///
    /// # Safety
    /// `chunk` came from this upstream and no byte of it is used any more.
    pub unsafe fn release(&mut self, chunk: Chunk) {
        self.reserved_bytes -= chunk.len;
        self.stats.on_release(chunk.len);
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.give_back(chunk) };
    }

    /// `free_chunk`, or `retire_chunk` while the owner is being dropped or reset.
    ///
    /// # Safety
    /// As for `ChunkSource::free_chunk`.
    unsafe fn give_back(&mut self, chunk: Chunk) {
        // SAFETY: forwarded contract.
        unsafe {
            if self.retiring {
                self.source.retire_chunk(chunk);
            } else {
                self.source.free_chunk(chunk);
            }
        }
    }

    /// While on, chunks given back are the ones of a pool being dropped or reset: the
    /// source may keep them for the next pool (`ChunkSource::retire_chunk`).
    pub fn set_retiring(&mut self, on: bool) {
        self.retiring = on;
    }

    /// Address space for a segment whose pages are committed later, one by one, with
    /// [`commit`](Self::commit): the chunk is not counted as reserved (the caller counts
    /// what it commits). Fails only when the source fails.
    pub fn map_uncommitted(&mut self, bytes: usize, align: usize) -> Result<Chunk, PoolError> {
        self.source.alloc_chunk(bytes, align).ok_or_else(|| {
            PoolError::oom(
                &self.pool_name,
                bytes,
                0,
                self.max_size_bytes.unwrap_or(usize::MAX),
            )
        })
    }

    /// Count `bytes` of a `map_uncommitted` chunk as reserved (the caller is about to
    /// touch them), within the limit.
    pub fn commit(&mut self, bytes: usize) -> Result<(), PoolError> {
        if bytes > self.available_bytes() {
            return Err(PoolError::oom(
                &self.pool_name,
                bytes,
                self.available_bytes(),
                self.max_size_bytes.unwrap_or(usize::MAX),
            ));
        }
        self.reserved_bytes += bytes;
        self.stats.on_reserve(bytes);
        Ok(())
    }

    /// Give the memory of committed, unused bytes back to the source; they stop counting
    /// as reserved if the source could (`ChunkSource::decommit`). Returns whether it did.
    ///
    /// # Safety
    /// The range lies in a `map_uncommitted` chunk of this upstream, was committed, and
    /// no byte of it is in use.
    pub unsafe fn decommit(&mut self, addr: usize, bytes: usize) -> bool {
        // SAFETY: forwarded from the caller's contract.
        let done = unsafe { self.source.decommit(addr, bytes) };
        if done {
            self.reserved_bytes -= bytes;
            self.stats.on_release(bytes);
        }
        done
    }

    /// Unmap a `map_uncommitted` chunk of which `committed_bytes` are counted.
    ///
    /// # Safety
    /// `chunk` came from `map_uncommitted` of this upstream, unchanged, exactly
    /// `committed_bytes` of it are counted, and no byte of it is used any more.
    pub unsafe fn unmap_uncommitted(&mut self, chunk: Chunk, committed_bytes: usize) {
        self.reserved_bytes -= committed_bytes;
        self.stats.on_release(committed_bytes);
        // SAFETY: forwarded from the caller's contract.
        unsafe { self.give_back(chunk) };
    }

    /// Forget the growth history (after `reset()` returned the grown chunks).
    pub fn reset_growth(&mut self) {
        self.chunks_grown = 0;
    }
}

/// What a strategy answers when asked about a pointer in checked mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// The start of a live block with this many usable bytes.
    Live(usize),
    /// Inside this strategy's memory but not the start of a live block (freed, or interior).
    NotLive,
    /// Not in this strategy's memory at all.
    Foreign,
}

/// `Strategy::allocate_batch` one `allocate` at a time (its default).
pub(crate) fn allocate_each<S: Strategy + ?Sized>(
    strategy: &mut S,
    size: usize,
    align: usize,
    usable: usize,
    out: &mut [*mut u8],
) -> usize {
    for (taken, slot) in out.iter_mut().enumerate() {
        let Ok(block) = strategy.allocate(size, align) else {
            return taken;
        };
        // SAFETY: `block` was just handed out by this strategy.
        if unsafe { strategy.usable_size(block) } != usable {
            // SAFETY: as above, and nobody else knows it.
            unsafe { strategy.deallocate(block) };
            return taken;
        }
        *slot = block.as_ptr();
    }
    out.len()
}

/// A single-threaded allocator core. Implement it to plug your own allocator into a
/// `CpuPool` (`CpuPool::with_strategy`).
///
/// Sizes passed in are non-zero; alignments are powers of two no smaller than the pool's
/// configured alignment.
pub trait Strategy: Send {
    /// Short name for reports (`fixed-size`, `variable-size`, ...).
    fn name(&self) -> &'static str;

    /// A block of at least `size` bytes aligned to `align`. Errors are `OutOfMemory`
    /// (with the numbers) or `InvalidOperation` (a size the strategy cannot serve).
    fn allocate(&mut self, size: usize, align: usize) -> Result<NonNull<u8>, PoolError>;

    /// Give a block back; returns its usable size.
    ///
    /// # Safety
    /// `ptr` was returned by `allocate`/`reallocate` of this strategy and not freed since.
    unsafe fn deallocate(&mut self, ptr: NonNull<u8>) -> usize;

    /// Up to `out.len()` blocks of exactly `usable` usable bytes, for requests of `size`
    /// bytes at `align` (a thread cache's refill), written to the front of `out`; returns
    /// how many. Stops early, keeping what it has, at the first failure or at a block of
    /// another usable size (given back). The default calls `allocate` per block;
    /// strategies override it to take a run of blocks with one class lookup.
    fn allocate_batch(
        &mut self,
        size: usize,
        align: usize,
        usable: usize,
        out: &mut [*mut u8],
    ) -> usize {
        allocate_each(self, size, align, usable, out)
    }

    /// Usable bytes of a live block.
    ///
    /// # Safety
    /// `ptr` is a live block of this strategy.
    unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize;

    /// Grow or shrink a block in place when the strategy can; `false` leaves it unchanged.
    ///
    /// # Safety
    /// `ptr` is a live block of this strategy.
    unsafe fn resize_in_place(&mut self, _ptr: NonNull<u8>, _new_size: usize) -> bool {
        false
    }

    /// Checked lookup of a pointer, without trusting it (used by debug checks). It must
    /// never read memory outside this strategy's chunks.
    fn block_state(&self, ptr: NonNull<u8>) -> BlockState;

    /// Release every block. With `return_chunks`, give every chunk except the initial one
    /// back to the upstream.
    fn reset(&mut self, return_chunks: bool);

    /// Bytes held from the upstream now.
    fn reserved_bytes(&self) -> usize;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn large_reuse_takes_up_to_twice_within_a_segment_and_a_quarter_beyond() {
        let segment = 4 * MIB;
        // Small large objects: anything from the request to twice it.
        assert!(large_reuse_fits(MIB, MIB, segment));
        assert!(large_reuse_fits(2 * MIB, MIB, segment));
        assert!(!large_reuse_fits(2 * MIB + 4096, MIB, segment));
        assert!(!large_reuse_fits(MIB - 1, MIB, segment));
        // Big ones: at most a quarter (or a segment) unused.
        assert!(large_reuse_fits(160 * MIB, 128 * MIB, segment));
        assert!(!large_reuse_fits(160 * MIB + 4096, 128 * MIB, segment));
        assert!(large_reuse_fits(12 * MIB, 8 * MIB, segment));
        assert!(!large_reuse_fits(12 * MIB + 4096, 8 * MIB, segment));
    }

    #[test]
    fn large_cache_limit_follows_the_live_bytes_above_its_floor() {
        assert_eq!(large_cache_limit(0, 8 * MIB), 8 * MIB);
        assert_eq!(large_cache_limit(16 * MIB, 8 * MIB), 8 * MIB);
        assert_eq!(large_cache_limit(1024 * MIB, 8 * MIB), 256 * MIB);
    }
}
