//! The public pool API: `MemoryPool`, implemented by `CpuPool` and `GpuPool`.

use crate::config::{MemoryType, PoolConfig};
use crate::error::PoolError;
use crate::stats::MemoryStats;
use std::ptr::NonNull;

/// Options of one allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocFlags {
    /// Alignment in bytes (a power of two); 0 means the pool's configured alignment.
    pub align: usize,
    /// Zero the block's bytes before returning it.
    pub zeroed: bool,
}

impl AllocFlags {
    pub const DEFAULT: AllocFlags = AllocFlags {
        align: 0,
        zeroed: false,
    };

    pub fn aligned(align: usize) -> Self {
        AllocFlags {
            align,
            zeroed: false,
        }
    }

    pub fn zeroed() -> Self {
        AllocFlags {
            align: 0,
            zeroed: true,
        }
    }
}

impl Default for AllocFlags {
    fn default() -> Self {
        AllocFlags::DEFAULT
    }
}

/// A memory pool. Implementations are thread-safe. `SyncMode::SingleThreaded` asks for
/// one thread at a time: with the thread cache (the default) other threads are served
/// anyway; with it off, a second thread inside the pool at once is detected and answered
/// with `InvalidOperation`.
///
/// Pointers are addresses in the pool's memory type: host pointers for host pools,
/// device addresses (not dereferenceable on the host) for device pools.
///
/// # Two ways to give memory back
/// Allocating is always safe. Giving a block back comes in two forms, as in `GlobalAlloc`,
/// `allocator_api2` and the TLSF crates:
/// - [`deallocate`](Self::deallocate), [`reallocate`](Self::reallocate) and
///   [`usable_size`](Self::usable_size) are `unsafe fn`: the caller promises the pointer is a
///   live block of this pool. They are the fast path: no lookup decides whether the pointer
///   is ours.
/// - [`deallocate_checked`](Self::deallocate_checked),
///   [`reallocate_checked`](Self::reallocate_checked) and
///   [`usable_size_checked`](Self::usable_size_checked) are safe for any pointer: a double
///   free, a foreign pointer or an interior pointer is `PoolError::InvalidPointer`. A pool
///   that cannot verify pointers (a CPU pool built without `debug.check_pointers`) answers
///   them with `PoolError::InvalidOperation` and touches nothing.
///
/// Why not always check: verifying ownership needs a lookup per free (a locked map, or a
/// walk of the block's chunk), which costs more than the whole allocate+free pair of the
/// fast path; `docs/safety.md` has the figures.
///
/// ```
/// use pools::{CpuPool, MemoryPool, PoolConfig, PoolError};
/// let pool = CpuPool::new("example", PoolConfig::default_cpu()).unwrap();
/// let p = pool.allocate(48).unwrap();
/// // SAFETY: p is a live block of this pool, freed once.
/// unsafe { pool.deallocate(p) }.unwrap();
///
/// let checked = CpuPool::new("checked", PoolConfig::debug_cpu()).unwrap();
/// let q = checked.allocate(48).unwrap();
/// checked.deallocate_checked(q).unwrap();
/// // A double free is an error value, not undefined behaviour.
/// assert!(matches!(checked.deallocate_checked(q), Err(PoolError::InvalidPointer { .. })));
/// # drop(checked); // debug_cpu's leak report has nothing to say
/// ```
///
/// Freeing without `unsafe` does not compile:
/// ```compile_fail,E0133
/// use pools::{CpuPool, MemoryPool, PoolConfig};
/// let pool = CpuPool::new("example", PoolConfig::default_cpu()).unwrap();
/// let p = pool.allocate(48).unwrap();
/// pool.deallocate(p).unwrap();
/// ```
///
/// Nor does resetting through the trait:
/// ```compile_fail,E0133
/// use pools::{CpuPool, MemoryPool, PoolConfig};
/// let pool = CpuPool::new("example", PoolConfig::default_cpu()).unwrap();
/// MemoryPool::reset(&pool).unwrap();
/// ```
pub trait MemoryPool: Send + Sync {
    /// A block of at least `size` bytes, aligned to the pool's alignment. `CpuPool`
    /// serves `size == 0` as 1 byte: a distinct block, as C's `malloc(0)`.
    fn allocate(&self, size: usize) -> Result<NonNull<u8>, PoolError> {
        self.allocate_with(size, AllocFlags::DEFAULT)
    }

    /// A block of at least `size` bytes with the given alignment and zeroing.
    fn allocate_with(&self, size: usize, flags: AllocFlags) -> Result<NonNull<u8>, PoolError>;

    /// `allocate_with(size, AllocFlags::aligned(align))` without the error's detail:
    /// `None` on failure (the statistics still count it). For hot loops and adapters that
    /// have nowhere to report an error (`GlobalAlloc`, `allocator_api2`): a `PoolError`
    /// is returned through memory and must be dropped, an `Option` comes back in a
    /// register, so pools can make this entry point's fast path keep no register at all
    /// (`CpuPool` does).
    #[inline]
    fn allocate_or_none(&self, size: usize, align: usize) -> Option<NonNull<u8>> {
        self.allocate_with(size, AllocFlags::aligned(align)).ok()
    }

    /// Give a block back.
    ///
    /// # Safety
    /// `ptr` must be a live block of this pool: returned by `allocate`, `allocate_with` or
    /// `reallocate` of this pool, and neither freed, reallocated nor invalidated by `reset`
    /// since. With `debug.check_pointers` on, pools report a violation as
    /// `PoolError::InvalidPointer` instead of undefined behaviour, but only the `_checked`
    /// variants promise that.
    unsafe fn deallocate(&self, ptr: NonNull<u8>) -> Result<(), PoolError>;

    /// [`deallocate`](Self::deallocate) with the size the block was allocated with (or last
    /// reallocated to), as Rust's `GlobalAlloc::dealloc` and C++'s sized `delete` know it:
    /// a pool may use it to find the block's size class without waiting for the block's
    /// own header. `size` is only a hint: any other value is not undefined behaviour, and
    /// the pool then frees the block as `deallocate` does. The default ignores it.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate) (`size` is unconstrained).
    #[inline]
    unsafe fn deallocate_sized(&self, ptr: NonNull<u8>, size: usize) -> Result<(), PoolError> {
        let _ = size;
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.deallocate(ptr) }
    }

    /// `deallocate` without the error's detail: `false` where it reported one. See
    /// [`allocate_or_none`](Self::allocate_or_none).
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate).
    #[inline]
    unsafe fn deallocate_or_false(&self, ptr: NonNull<u8>) -> bool {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.deallocate(ptr) }.is_ok()
    }

    /// Resize a block, keeping the first `min(old, new)` bytes. The default allocates,
    /// copies and frees; strategies override it to grow or shrink in place. On error the
    /// old block is still live.
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate): `ptr` is a live block of this pool. On
    /// success it is no longer live (the returned pointer is).
    unsafe fn reallocate(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Result<NonNull<u8>, PoolError> {
        // SAFETY: the caller's contract: ptr is a live block of this pool.
        let old_size = unsafe { self.usable_size(ptr)? };
        let new = self.allocate(new_size)?;
        if self.memory_type() == MemoryType::Host {
            // SAFETY: both blocks are live host blocks of this pool, at least
            // `min(old_size, new_size)` bytes long, and distinct (`new` was just handed out).
            unsafe {
                std::ptr::copy_nonoverlapping(ptr.as_ptr(), new.as_ptr(), old_size.min(new_size))
            };
        }
        // SAFETY: ptr is live (caller's contract) and distinct from `new`.
        unsafe { self.deallocate(ptr)? };
        Ok(new)
    }

    /// `reallocate` without the error's detail: `None` where it reported one (the old
    /// block is then still live). See [`allocate_or_none`](Self::allocate_or_none).
    ///
    /// # Safety
    /// As for [`reallocate`](Self::reallocate).
    #[inline]
    unsafe fn reallocate_or_none(&self, ptr: NonNull<u8>, new_size: usize) -> Option<NonNull<u8>> {
        // SAFETY: the caller's contract, forwarded.
        unsafe { self.reallocate(ptr, new_size) }.ok()
    }

    /// Bytes usable at `ptr` (at least what was asked for).
    ///
    /// # Safety
    /// As for [`deallocate`](Self::deallocate): `ptr` is a live block of this pool.
    unsafe fn usable_size(&self, ptr: NonNull<u8>) -> Result<usize, PoolError>;

    /// [`deallocate`](Self::deallocate) for any pointer: a pointer that is not a live block
    /// of this pool is `InvalidPointer`, and a pool that cannot verify pointers answers
    /// `InvalidOperation`; neither changes the pool.
    fn deallocate_checked(&self, ptr: NonNull<u8>) -> Result<(), PoolError>;

    /// [`reallocate`](Self::reallocate) for any pointer, checked as
    /// [`deallocate_checked`](Self::deallocate_checked) is.
    fn reallocate_checked(
        &self,
        ptr: NonNull<u8>,
        new_size: usize,
    ) -> Result<NonNull<u8>, PoolError>;

    /// [`usable_size`](Self::usable_size) for any pointer, checked as
    /// [`deallocate_checked`](Self::deallocate_checked) is.
    fn usable_size_checked(&self, ptr: NonNull<u8>) -> Result<usize, PoolError>;

    /// Release every block at once. Chunks are kept or returned per `return_policy`.
    ///
    /// # Safety
    /// No block handed out before the call is used afterwards: not read or written (host
    /// pools), not freed, not reallocated. Collections that allocate from the pool (through
    /// its `Allocator` implementation) must be gone. No other thread is inside a call on this
    /// pool while it runs (a reset empties every thread's cache of the pool). `CpuPool::reset(&mut self)` is the safe
    /// form: the exclusive borrow proves that no allocator handle is alive.
    unsafe fn reset(&self) -> Result<(), PoolError>;

    fn stats(&self) -> MemoryStats;

    fn memory_type(&self) -> MemoryType;

    fn name(&self) -> &str;

    fn config(&self) -> &PoolConfig;
}
