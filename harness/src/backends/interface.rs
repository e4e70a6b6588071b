//! The backend trait: one allocator under test.
//!
//! The engine is generic over `B: Backend` (monomorphised per backend) so that no virtual
//! call sits between the replay loop and the allocator. Addresses are `usize`: host
//! pointers for CPU backends, device addresses for GPU backends; 0 is "no block".

use std::fmt;

/// Where an allocation's bytes live, which decides whether the engine may touch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressSpace {
    Host,
    /// Device (or simulated) addresses: never dereferenced by the engine.
    Device,
}

/// Why a backend cannot run here (reported as `skipped`, with this reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An allocator under test. One instance serves one run; all workers share it.
pub trait Backend: Send + Sync {
    /// A block of `size` bytes aligned to `align` (0 = the backend's default), on `stream`
    /// (a dense stream index; 0 for CPU traces). Returns 0 when the allocation fails.
    /// `align` is 0 or a power of two: a compiled trace can hold no other
    /// (`CompiledOp::align`), and backends may rely on it.
    fn alloc(&self, size: usize, align: usize, stream: u16) -> usize;

    /// `alloc` as a pointer (null on failure): what the counts tier's shim calls
    /// (`counts::counted_op_alloc`). A backend whose `alloc` is an inlined fast path with
    /// out-of-line slow paths overrides it to return its pointer unconverted: converting
    /// a pointer chosen among several paths to an integer keeps LLVM from making the
    /// slow paths tail calls, which costs the shim a stack adjustment on every call.
    #[inline(always)]
    fn alloc_ptr(&self, size: usize, align: usize, stream: u16) -> *mut u8 {
        self.alloc(size, align, stream) as *mut u8
    }

    /// Free a block returned by `alloc`/`realloc` of this backend. `size` is its requested size.
    ///
    /// # Safety
    /// `addr` is a live block of this backend (returned by `alloc`/`realloc`, not freed or
    /// reallocated since), `size` its requested size; 0 is ignored. The engine guarantees
    /// this by construction: each slot's address is freed once, by the op that ends it.
    unsafe fn free(&self, addr: usize, size: usize, stream: u16);

    /// Resize a block (`addr` may be 0: from nothing). Returns 0 on failure, in which case
    /// the old block is still live (C `realloc` semantics).
    ///
    /// # Safety
    /// `addr` is 0 or a live block of this backend of `old_size` requested bytes, as for
    /// [`free`](Self::free); on success it is no longer live.
    unsafe fn realloc(
        &self,
        addr: usize,
        old_size: usize,
        new_size: usize,
        align: usize,
        stream: u16,
    ) -> usize;

    /// `realloc` as a pointer (null on failure), for the counts tier's shim, as
    /// [`alloc_ptr`](Self::alloc_ptr) is for `alloc`.
    ///
    /// # Safety
    /// As for [`realloc`](Self::realloc).
    #[inline(always)]
    unsafe fn realloc_ptr(
        &self,
        addr: usize,
        old_size: usize,
        new_size: usize,
        align: usize,
        stream: u16,
    ) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.realloc(addr, old_size, new_size, align, stream) as *mut u8 }
    }

    /// `Host` promises that a block returned by `alloc`/`realloc` is readable and writable
    /// for its requested size until it is freed: the engine writes to it (`--touch`).
    fn address_space(&self) -> AddressSpace {
        AddressSpace::Host
    }

    /// Bytes this backend holds from its upstream now, if it can tell.
    fn reserved_bytes(&self) -> Option<u64> {
        None
    }

    /// Highest `reserved_bytes` since this backend was created, if it keeps track
    /// (catches peaks between the engine's samples).
    fn peak_reserved_bytes(&self) -> Option<u64> {
        None
    }

    /// Called by every worker once its ops are done (GPU backends synchronise streams).
    fn finish(&self) {}
}
